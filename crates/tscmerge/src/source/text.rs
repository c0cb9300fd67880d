//! Text inputs (tracefs `trace`/`trace_pipe`, `trace-cmd report`) as cursors.
//!
//! A text file is one stream already in time order across CPUs. Host files
//! are used as one cursor; guest files need one cursor per CPU (each vCPU
//! converts with its own offsets, which can reorder CPUs), so each per-CPU
//! cursor scans the mapped file and keeps its CPU's lines: N scans of a
//! mapping instead of buffering a file's worth of events.

use ftrace::text::{TextReader, TextRecord, TextTs};

use crate::event::{Body, Cursor, EventView, Payload, Record};
use crate::{Error, Result};

#[derive(Default)]
struct Current {
    ts: u64,
    cpu: u32,
    lost: Option<Option<u64>>,
    pid: i32,
    tgid: Option<i32>,
    comm: String,
    event: String,
    body: String,
}

/// Cursor over a text input, optionally restricted to one CPU.
pub struct TextCursor<'d> {
    reader: TextReader<&'d [u8]>,
    cpu: Option<u32>,
    cur: Current,
    valid: bool,
    /// The last timestamp seen, given to lost-event lines that have none.
    last_ts: u64,
    path: String,
    /// Drops the mapped pages this cursor has read (another CPU's cursor
    /// over the same file faults them back in if it is behind).
    release: super::ReleaseBehind<'d>,
    len: usize,
}

impl<'d> TextCursor<'d> {
    pub fn new(data: &'d [u8], map: Option<&'d memmap2::Mmap>, cpu: Option<u32>, path: &str) -> Result<Self> {
        let reader = TextReader::new(data).map_err(|e| e.in_file(path))?;
        let release = super::ReleaseBehind::new(map);
        let mut c = TextCursor { reader, cpu, cur: Current::default(), valid: false, last_ts: 0, path: path.to_string(), release, len: data.len() };
        c.advance()?;
        Ok(c)
    }
}

/// The timestamp as the merge uses it: cycles for counter clocks; a
/// `sec.usec` stamp is kept in ns (the caller refuses to merge those).
pub(crate) fn ts_value(ts: &TextTs) -> u64 {
    ts.as_count().or_else(|| ts.as_ns()).unwrap_or(0)
}

impl Cursor for TextCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        if !self.valid {
            return None;
        }
        let c = &self.cur;
        let payload = match c.lost {
            Some(count) => Payload::Lost { count },
            None => Payload::Event(Record {
                pid: c.pid,
                tgid: c.tgid,
                comm: &c.comm,
                system: "",
                name: &c.event,
                body: Body::Text(&c.body),
            }),
        };
        Some(EventView { ts: c.ts, orig_ts: None, placed: Default::default(), cpu: c.cpu, payload })
    }

    fn advance(&mut self) -> Result<()> {
        self.release.reached((self.len - self.reader.get_ref().len()) as u64);
        loop {
            let rec = self.reader.next_record().map_err(|e| Error::from(e.in_file(&self.path)))?;
            let Some(rec) = rec else {
                self.valid = false;
                self.release.reached_end();
                return Ok(());
            };
            let c = &mut self.cur;
            match rec {
                TextRecord::Event(l) => {
                    if self.cpu.is_some_and(|cpu| cpu != l.cpu) {
                        continue;
                    }
                    c.ts = ts_value(&l.ts);
                    self.last_ts = c.ts;
                    c.cpu = l.cpu;
                    c.lost = None;
                    c.pid = l.pid;
                    c.tgid = l.tgid;
                    c.comm.clear();
                    c.comm.push_str(l.comm);
                    c.event.clear();
                    c.event.push_str(l.event);
                    c.body.clear();
                    c.body.push_str(l.body);
                }
                TextRecord::Lost { cpu, count, .. } => {
                    if self.cpu.is_some_and(|want| want != cpu) {
                        continue;
                    }
                    c.ts = self.last_ts;
                    c.cpu = cpu;
                    c.lost = Some(count);
                }
                TextRecord::BufferStarted { .. } => continue,
            }
            self.valid = true;
            return Ok(());
        }
    }
}

/// What a first pass over a text input learns: its CPUs, whether its
/// timestamps are counter values, and its `kvm_write_tsc_offset` events.
#[derive(Debug, Default)]
pub struct TextScan {
    pub cpus: Vec<u32>,
    pub counter_ts: Option<bool>,
    pub events: u64,
    pub offset_writes: Vec<crate::clock::OffsetWrite>,
}

/// CPU numbers a text input may carry: below 8192, the largest NR_CPUS
/// Linux builds with (arch/x86/Kconfig NR_CPUS_RANGE_END with MAXSMP;
/// arch/powerpc "range 2 8192"). Text prints any number, so this is the
/// format's limit in practice; beyond it is an error, never a silent drop.
pub const MAX_TEXT_CPUS: u32 = 8192;

pub fn scan(data: &[u8], map: Option<&memmap2::Mmap>, path: &str) -> Result<TextScan> {
    let mut r = TextReader::new(data).map_err(|e| e.in_file(path))?;
    let mut release = super::ReleaseBehind::new(map);
    let mut s = TextScan::default();
    // One bit per possible CPU (1 KiB).
    let mut seen = [0u64; MAX_TEXT_CPUS as usize / 64];
    loop {
        release.reached((data.len() - r.get_ref().len()) as u64);
        let Some(rec) = r.next_record().map_err(|e| e.in_file(path))? else {
            release.reached_end();
            break;
        };
        let TextRecord::Event(l) = rec else { continue };
        s.events += 1;
        let cpu = l.cpu;
        let Some(word) = seen.get_mut(cpu as usize / 64) else {
            return Err(Error::Usage(format!(
                "{path}: line {}: CPU {cpu} is beyond {}, the most CPUs Linux builds with (NR_CPUS <= 8192)",
                r.line_number(),
                MAX_TEXT_CPUS - 1
            )));
        };
        *word |= 1 << (cpu % 64);
        s.counter_ts.get_or_insert(matches!(l.ts, TextTs::Count(_)));
        if l.event == "kvm_write_tsc_offset" {
            if let Some(w) = ftrace::text::parse_write_tsc_offset(l.body) {
                s.offset_writes.push(crate::clock::OffsetWrite {
                    ts: crate::HostTsc(ts_value(&l.ts)),
                    host_cpu: l.cpu,
                    pid: l.pid,
                    tgid: l.tgid,
                    vcpu: crate::VcpuId(w.vcpu),
                    prev: w.prev,
                    next: w.next,
                });
            }
        }
    }
    s.cpus = (0..MAX_TEXT_CPUS).filter(|&c| seen[c as usize / 64] & (1 << (c % 64)) != 0).collect();
    Ok(s)
}
