//! trace.dat inputs: one cursor per buffer and CPU, records decoded lazily.

use ftrace::format::EventFormat;
use ftrace::format::Events;
use ftrace::ring::RingEvent;
use ftrace::tracedat::{CpuEvents, TraceDat};

use super::meta::Meta;
use crate::event::{Body, Cursor, EventView, Payload, Record};
use crate::{Error, Result};

self_cell::self_cell!(
    /// A mapped trace.dat and its parsed view.
    pub struct DatFile {
        owner: memmap2::Mmap,
        #[covariant]
        dependent: TraceDat,
    }
);

pub fn parse(map: memmap2::Mmap, path: &str) -> Result<DatFile> {
    DatFile::try_new(map, |m| TraceDat::parse(m)).map_err(|e| Error::Parse(e.in_file(path)))
}

/// Builds the decoding tables of a trace.dat.
pub fn meta(dat: &TraceDat<'_>) -> Meta {
    let mut m = Meta::new(dat.endian(), dat.long_size());
    for (_, text) in dat.ftrace_formats() {
        m.add_format("ftrace", text);
    }
    for (system, text) in dat.event_formats() {
        m.add_format(system, text);
    }
    m.add_cmdlines(dat.cmdlines());
    for o in dat.options() {
        if let ftrace::tracedat::TraceOption::Unknown { id, data } = o {
            m.add_record_option(*id, data);
        }
    }
    m.kallsyms = dat.kallsyms().map(ftrace::format::Kallsyms::parse);
    m.printk = dat.printk().map(ftrace::format::PrintkFormats::parse);
    m
}

/// Cursor over one CPU of one buffer.
pub struct DatCursor<'d> {
    events: CpuEvents<'d>,
    meta: &'d Meta,
    ctx: ftrace::printfmt::RenderCtx<'d>,
    cpu: u32,
    ts: u64,
    data: Vec<u8>,
    lost: Option<Option<u64>>,
    valid: bool,
    path: &'d str,
}

impl<'d> DatCursor<'d> {
    pub fn new(events: CpuEvents<'d>, meta: &'d Meta, path: &'d str) -> Result<Self> {
        let cpu = events.cpu();
        let mut c = DatCursor { events, meta, ctx: meta.ctx(cpu), cpu, ts: 0, data: Vec::with_capacity(256), lost: None, valid: false, path };
        c.advance()?;
        Ok(c)
    }
}

/// The format for a record, or `None` for a record of an unknown type.
fn format_of<'m>(meta: &'m Meta, rec: &[u8]) -> Option<&'m EventFormat> {
    meta.events.by_id(Events::common_type(rec, meta.endian)?)
}

impl Cursor for DatCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        if !self.valid {
            return None;
        }
        let payload = match self.lost {
            Some(count) => Payload::Lost { count },
            None => match format_of(self.meta, &self.data) {
                Some(f) => {
                    let pid = self.meta.pid(f, &self.data);
                    Payload::Event(Record {
                        pid,
                        tgid: self.meta.tgids.get(&pid).copied(),
                        comm: self.meta.comm(pid),
                        system: &f.system,
                        name: &f.name,
                        body: Body::Raw { format: f, data: &self.data, ctx: &self.ctx },
                    })
                }
                None => Payload::Event(Record {
                    pid: -1,
                    tgid: None,
                    comm: "<...>",
                    system: "",
                    name: "unknown",
                    body: Body::Text("[record of unknown type]"),
                }),
            },
        };
        Some(EventView { ts: self.ts, orig_ts: None, cpu: self.cpu, payload })
    }

    fn advance(&mut self) -> Result<()> {
        match self.events.next_event().map_err(|e| Error::Parse(e.in_file(self.path)))? {
            None => self.valid = false,
            Some(RingEvent::Lost { count }) => {
                self.lost = Some(count);
                self.valid = true;
            }
            Some(RingEvent::Event { ts, data }) => {
                self.ts = ts;
                self.data.clear();
                self.data.extend_from_slice(data);
                self.lost = None;
                self.valid = true;
            }
        }
        Ok(())
    }
}
