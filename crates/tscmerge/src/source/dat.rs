//! trace.dat inputs: one cursor per buffer and CPU, records decoded lazily.

use ftrace::ring::RingEvent;
use ftrace::tracedat::{CpuEvents, TraceDat};

use super::meta::Meta;
use crate::event::{Cursor, Detached, EventView, Payload};
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

/// Builds the decoding tables of a trace.dat; with `threads` > 1 the
/// kallsyms table (a few MB of text: a third of the work here) is parsed on
/// a second thread meanwhile.
pub fn meta(dat: &TraceDat<'_>, threads: usize) -> Meta {
    if threads > 1 {
        if let Some(text) = dat.kallsyms() {
            return std::thread::scope(|s| {
                let k = s.spawn(|| ftrace::format::Kallsyms::parse(text));
                let mut m = tables(dat);
                // A panic there is a bug: shown as it would be on this thread.
                m.kallsyms = Some(k.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                m
            });
        }
    }
    let mut m = tables(dat);
    m.kallsyms = dat.kallsyms().map(ftrace::format::Kallsyms::parse);
    m
}

/// [`meta`] but the kallsyms.
fn tables(dat: &TraceDat<'_>) -> Meta {
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
    m.printk = dat.printk().map(ftrace::format::PrintkFormats::parse);
    m
}

/// Cursor over one CPU of one buffer. The current record is a view into
/// the page the walk is on (in the block the stream read, or the inflated
/// chunk): nothing is copied per record.
pub struct DatCursor<'d> {
    events: CpuEvents<'d>,
    meta: &'d Meta,
    ctx: ftrace::printfmt::RenderCtx<'d>,
    pids: super::meta::PidCache<'d>,
    cpu: u32,
    /// The last event's time: a lost-events marker sorts right after it.
    ts: u64,
    release: super::ReleaseBehind<'d>,
    path: &'d str,
}

impl<'d> DatCursor<'d> {
    pub(crate) fn new(events: CpuEvents<'d>, meta: &'d Meta, release: super::ReleaseBehind<'d>, path: &'d str) -> Result<Self> {
        let cpu = events.cpu();
        let mut c = DatCursor { events, meta, ctx: meta.ctx(cpu), pids: Default::default(), cpu, ts: 0, release, path };
        c.advance()?;
        Ok(c)
    }
}

impl DatCursor<'_> {
    /// Hands `f` the records of the current page from the current one on,
    /// each with the time [`Cursor::ts`] gives it (a lost mark: the event
    /// before), then moves to the next page's first record, as that many
    /// [`Cursor::advance`] calls would (errors included, after the records
    /// before them).
    pub(crate) fn take_page(&mut self, mut f: impl FnMut(u64, RingEvent<'_>)) -> Result<()> {
        let mut ts = self.ts;
        for r in self.events.rest_of_page() {
            if let RingEvent::Event { ts: t, .. } = r {
                ts = t;
            }
            f(ts, r);
        }
        self.ts = ts;
        self.release.reached(self.events.page_offset().0);
        self.events.advance_page().map_err(|e| Error::Parse(e.in_file(self.path)))?;
        if let Some(Some(ts)) = self.events.peek() {
            self.ts = ts;
        }
        Ok(())
    }
}

impl Cursor for DatCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        let payload = match self.events.current()? {
            RingEvent::Lost { count } => Payload::Lost { count },
            RingEvent::Event { data, .. } => Payload::Event(self.meta.record(data, &self.ctx, &self.pids)),
        };
        Some(EventView { ts: self.ts, orig_ts: None, placed: Default::default(), cpu: self.cpu, payload })
    }

    fn ts(&self) -> Option<u64> {
        self.events.peek().map(|_| self.ts)
    }

    fn own_ts(&self) -> Option<Option<u64>> {
        self.events.peek()
    }

    fn detached(&self) -> Option<Detached<'_>> {
        Some(match self.events.current()? {
            RingEvent::Lost { count } => {
                Detached::View(EventView { ts: self.ts, orig_ts: None, placed: Default::default(), cpu: self.cpu, payload: Payload::Lost { count } })
            }
            RingEvent::Event { data, .. } => Detached::Raw { ts: self.ts, orig_ts: None, placed: Default::default(), cpu: self.cpu, data },
        })
    }

    fn advance(&mut self) -> Result<()> {
        // The page being left is read: only the pages before it are released.
        self.release.reached(self.events.page_offset().0);
        self.events.advance().map_err(|e| Error::Parse(e.in_file(self.path)))?;
        if let Some(Some(ts)) = self.events.peek() {
            self.ts = ts;
        }
        Ok(())
    }
}
