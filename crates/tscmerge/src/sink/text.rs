//! trace-cmd-report-style text with a machine column.
//!
//! Line layout after the machine column follows `trace-cmd report` 3.1.6
//! (tracecmd/trace-read.c, libtraceevent `tep_print_event`):
//! `%16s-%-5d [%03d] TS: NAME: BODY`, the event name and colon padded to 21.

use std::io::Write;

use ftrace::tracedat::time::TimeStyle;

use crate::event::{EventView, Payload};
use crate::merge::Sink;
use crate::{Error, Result};

/// How timestamps print.
#[derive(Clone, Copy, Debug)]
pub enum TsFormat {
    /// Host TSC cycles, as trace-cmd prints counter clocks.
    Cycles,
    /// Seconds with nanoseconds, from the TSC frequency in kHz.
    Secs { khz: u64 },
    /// As `trace-cmd report` prints a file's times (the time is already
    /// the file's report time, [`crate::clock::report`]).
    TraceCmd(ftrace::tracedat::time::TimeStyle),
    /// Host TSC converted by the host file's TSC2NSEC, printed as
    /// `trace-cmd report` prints such a file (` %5u.%06u`, microseconds
    /// rounded half up).
    Tsc2Nsec(super::HostNs),
}

/// Prints timestamps in a [`TsFormat`]. Cycles print as `{ts:>12}`, the
/// digits above the last eight kept as printed: merged times only go
/// forward, so those change once per 10^8 cycles at most.
struct TsPrinter {
    format: TsFormat,
    /// Per machine, where machines print differently (`report` of files
    /// with different clocks); others use `format`.
    per_machine: Vec<TsFormat>,
    /// The high digits' value and text (padding included).
    high: u64,
    high_text: Vec<u8>,
    /// The same for trace-cmd's `SECONDS.MICROSECONDS`: the seconds' value
    /// and text (` {secs:>5}.`), which change once a second of trace.
    secs: u64,
    secs_text: Vec<u8>,
}

impl TsPrinter {
    fn new(format: TsFormat) -> Self {
        TsPrinter { format, per_machine: Vec::new(), high: u64::MAX, high_text: Vec::new(), secs: u64::MAX, secs_text: Vec::new() }
    }

    fn write(&mut self, out: &mut Vec<u8>, machine: usize, ts: u64) {
        let format = self.per_machine.get(machine).copied().unwrap_or(self.format);
        match format {
            // `{ts:>12}` as `{high:>4}` and the last eight digits.
            TsFormat::Cycles if ts >= 100_000_000 => {
                let high = ts / 100_000_000;
                if self.high != high {
                    self.high = high;
                    self.high_text.clear();
                    put::dec(&mut self.high_text, high, 4, b' ');
                }
                put::bytes(out, &self.high_text);
                put::dec8(out, (ts % 100_000_000) as u32);
            }
            TsFormat::Cycles => put::dec(out, ts, 12, b' '),
            TsFormat::Secs { khz } => {
                // ns = cycles * 1e6 / kHz, in 128 bits so nothing overflows.
                let ns = (ts as u128 * 1_000_000 / khz.max(1) as u128) as u64;
                put::dec(out, ns / 1_000_000_000, 6, b' ');
                out.push(b'.');
                put::dec(out, ns % 1_000_000_000, 9, b'0');
            }
            TsFormat::TraceCmd(TimeStyle::Usecs) => self.usecs(out, ts),
            TsFormat::TraceCmd(style) => ftrace::tracedat::time::put_time(out, style, ts),
            TsFormat::Tsc2Nsec(clock) => self.usecs(out, clock.ns(ts)),
        }
    }

    /// `put_time(out, TimeStyle::Usecs, ns)`, the seconds from the cache.
    #[inline]
    fn usecs(&mut self, out: &mut Vec<u8>, ns: u64) {
        let us = ftrace::tracedat::time::round_us(ns);
        let secs = us / 1_000_000;
        if secs != self.secs {
            self.secs = secs;
            self.secs_text.clear();
            // As put_time writes them: " %5llu.".
            self.secs_text.push(b' ');
            put::dec(&mut self.secs_text, secs, 5, b' ');
            self.secs_text.push(b'.');
        }
        put::bytes(out, &self.secs_text);
        put::dec6(out, (us % 1_000_000) as u32);
    }
}

// Per-event formatting without `write!` or a libc call per piece: the fmt
// machinery and `memcpy` cost more than the rest of the line (callgrind,
// bench/README.md). `ftrace::put` does what a `format!` spec does, byte for byte.
use ftrace::put;

pub struct TextSink<W: Write> {
    out: W,
    /// Each machine's column as printed, `label: ` right-aligned.
    columns: Vec<Vec<u8>>,
    width: usize,
    ts: TsPrinter,
    show_guest_ts: bool,
    /// Lines are formatted straight into this buffer, which goes to `out`
    /// in [`FLUSH_AT`]-sized writes: no per-line copy into a writer.
    line: Vec<u8>,
    path: String,
    /// Line starts lately printed, by (machine, CPU, pid) slot.
    prefixes: Vec<Prefix>,
    /// Lost-events marks as `trace-cmd report` prints them
    /// ([`set_tracecmd_lost`](Self::set_tracecmd_lost)), and those waiting
    /// for their CPU's next event: (machine, CPU, count).
    tracecmd_lost: bool,
    pending_lost: Vec<(usize, u32, Option<u64>)>,
}

/// The start of a line, `column comm-pid [cpu]`, as last printed for a
/// (machine, CPU, pid): a CPU runs a few tasks in turn (a guest's vCPU
/// switches between them every few events), so most lines copy it whole
/// instead of formatting four fields.
#[derive(Default)]
struct Prefix {
    machine: usize,
    cpu: u32,
    pid: i32,
    comm: Vec<u8>,
    bytes: Vec<u8>,
}

/// `a == b` for comms (at most 16 bytes in the kernel, TASK_COMM_LEN):
/// overlapping 8-byte loads instead of a call to `bcmp` per line.
#[inline(always)]
fn same_comm(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let w4 = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        0 => true,
        // n = 1: byte 0 thrice; 2: 0, 1, 1; 3: 0, 1, 2.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        _ => a == b,
    }
}

/// Slots of the prefix cache (direct-mapped on machine, CPU and pid).
const PREFIX_SLOTS: usize = 1024;

/// Output buffer size: large writes, few syscalls.
const FLUSH_AT: usize = 1 << 20;

impl<W: Write> TextSink<W> {
    /// `machines[i]` names machine `i` (`host`, then the guests' names).
    /// `machines[i]` labels source `i`. Labels print right-aligned as
    /// `label: `; an empty label prints as blanks of the same width (as
    /// trace-cmd prints the top-level buffer next to instances); when every
    /// label is empty there is no column at all.
    pub fn new(out: W, machines: Vec<String>, ts: TsFormat, show_guest_ts: bool, path: &str) -> Self {
        let width = machines.iter().map(String::len).max().unwrap_or(0);
        let columns = machines
            .iter()
            .map(|m| {
                let mut c = Vec::new();
                if width > 0 {
                    if m.is_empty() {
                        c.resize(width + 2, b' ');
                    } else {
                        put::str_right(&mut c, m, width);
                        c.extend_from_slice(b": ");
                    }
                }
                c
            })
            .collect();
        // No slot matches before it is filled: machine usize::MAX is none.
        let prefixes = (0..PREFIX_SLOTS).map(|_| Prefix { machine: usize::MAX, ..Prefix::default() }).collect();
        TextSink {
            out,
            columns,
            width,
            ts: TsPrinter::new(ts),
            show_guest_ts,
            line: Vec::with_capacity(FLUSH_AT + 4096),
            path: path.to_string(),
            prefixes,
            tracecmd_lost: false,
            pending_lost: Vec::new(),
        }
    }

    /// The writer, after the buffered lines went to it; a write error there
    /// shows again when the caller flushes.
    pub fn into_inner(mut self) -> W {
        let _ = self.flush_buf();
        self.out
    }

    fn flush_buf(&mut self) -> Result<()> {
        let r = self.out.write_all(&self.line);
        self.line.clear();
        r.map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }

    /// Timestamps of machine `i` print as `formats[i]` (the rest as the
    /// sink's own format).
    pub fn set_machine_ts_formats(&mut self, formats: Vec<TsFormat>) {
        self.ts.per_machine = formats;
    }

    /// Lost-events marks print as trace-cmd 3.1.6 prints them
    /// (tracecmd/trace-read.c `trace_show_data`): not on a line of their
    /// own but as the start of the next record of that CPU, after its
    /// buffer's label, `CPU:1 [12 EVENTS DROPPED]` and a newline, the
    /// record's line following without the label; a count of 0 prints
    /// nothing, and a mark no record follows is not printed.
    pub fn set_tracecmd_lost(&mut self, on: bool) {
        self.tracecmd_lost = on;
    }

    /// Writes a line as is (headers such as trace-cmd's `cpus=N`).
    pub fn raw_line(&mut self, line: &str) -> Result<()> {
        self.line.extend_from_slice(line.as_bytes());
        self.line.push(b'\n');
        Ok(())
    }

    /// Appends one event's line (without the newline) to the buffer.
    fn format(&mut self, machine: usize, ev: &EventView<'_>) {
        let l = &mut self.line;
        let column = |l: &mut Vec<u8>| match self.columns.get(machine) {
            Some(c) => put::bytes(l, c),
            // A machine without a name: blanks of the column's width.
            None if self.width > 0 => put::fill(l, b' ', self.width + 2),
            None => {}
        };
        match ev.payload {
            Payload::Lost { count } => {
                column(l);
                l.extend_from_slice(b"CPU:");
                put::dec(l, ev.cpu as u64, 0, b' ');
                l.extend_from_slice(b" [");
                if let Some(n) = count {
                    put::dec(l, n, 0, b' ');
                    l.push(b' ');
                }
                l.extend_from_slice(b"EVENTS DROPPED]");
            }
            Payload::Event(r) => {
                let key = (machine as u64) << 48 ^ (ev.cpu as u64) << 32 ^ r.pid as u32 as u64;
                let p = &mut self.prefixes[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % PREFIX_SLOTS];
                if !(p.machine == machine && p.cpu == ev.cpu && p.pid == r.pid && same_comm(&p.comm, r.comm.as_bytes())) {
                    p.bytes.clear();
                    column(&mut p.bytes);
                    put::str_right(&mut p.bytes, r.comm, 16);
                    p.bytes.push(b'-');
                    put::dec_i64_left(&mut p.bytes, r.pid as i64, 5);
                    p.bytes.extend_from_slice(b" [");
                    put::dec(&mut p.bytes, ev.cpu as u64, 3, b'0');
                    p.bytes.push(b']');
                    (p.machine, p.cpu, p.pid) = (machine, ev.cpu, r.pid);
                    p.comm.clear();
                    p.comm.extend_from_slice(r.comm.as_bytes());
                }
                put::bytes(l, &p.bytes);
                self.ts.write(l, machine, ev.ts);
                if self.show_guest_ts {
                    match ev.orig_ts {
                        Some(g) => {
                            l.extend_from_slice(b" (guest ");
                            put::dec(l, g, 12, b' ');
                            l.push(b')');
                        }
                        None => l.extend_from_slice(b"               "),
                    }
                }
                l.extend_from_slice(b": ");
                put::bytes(l, r.name.as_bytes());
                l.push(b':');
                // The name and its colon padded to 21, then one blank.
                put::fill(l, b' ', 21usize.saturating_sub(r.name.len() + 1) + 1);
                r.body.render(ftrace::printfmt::Style::TraceCmd, l);
            }
        }
    }
}

impl<W: Write + Send> Sink for TextSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        if self.tracecmd_lost {
            if let Payload::Lost { count } = ev.payload {
                if count != Some(0) {
                    self.pending_lost.retain(|p| (p.0, p.1) != (machine, ev.cpu));
                    self.pending_lost.push((machine, ev.cpu, count));
                }
                return Ok(());
            }
            if !self.pending_lost.is_empty() {
                if let Some(i) = self.pending_lost.iter().position(|p| (p.0, p.1) == (machine, ev.cpu)) {
                    let (_, cpu, count) = self.pending_lost.swap_remove(i);
                    let start = self.line.len();
                    self.format(machine, ev);
                    let label = self.columns.get(machine).map_or(if self.width > 0 { self.width + 2 } else { 0 }, Vec::len);
                    let mut mark = Vec::with_capacity(40);
                    mark.extend_from_slice(b"CPU:");
                    put::dec(&mut mark, cpu as u64, 0, b' ');
                    mark.extend_from_slice(b" [");
                    if let Some(n) = count {
                        put::dec(&mut mark, n, 0, b' ');
                        mark.push(b' ');
                    }
                    mark.extend_from_slice(b"EVENTS DROPPED]\n");
                    let at = (start + label).min(self.line.len());
                    self.line.splice(at..at, mark);
                    self.line.push(b'\n');
                    return Ok(());
                }
            }
        }
        self.format(machine, ev);
        self.line.push(b'\n');
        if self.line.len() >= FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_buf()
    }

    fn body_style(&self) -> Option<ftrace::printfmt::Style> {
        Some(ftrace::printfmt::Style::TraceCmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Record};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_comm_is_eq(a in proptest::collection::vec(0u8..3, 0..20), b in proptest::collection::vec(0u8..3, 0..20)) {
            prop_assert_eq!(same_comm(&a, &b), a == b);
            prop_assert!(same_comm(&a, &a.clone()));
        }
    }

    /// Timestamps print as `{ts:>12}` whether the cached high digits are
    /// reused, renewed, or not used (below 10^8), going forward or not.
    #[test]
    fn cycles_print_as_format() {
        let stamps = [5, 99_999_999, 100_000_000, 100_000_001, 123_456_789_012, 123_456_789_999, 123_456_790_000, 100_000_000, 10u64.pow(15) + 7, u64::MAX, 42];
        let mut sink = TextSink::new(Vec::new(), vec!["host".into()], TsFormat::Cycles, false, "test");
        for (i, &ts) in stamps.iter().enumerate() {
            let r = Record { pid: i as i32, tgid: None, comm: "c", system: "s", name: "e", body: Body::Text("b") };
            sink.event(0, &EventView { ts, orig_ts: None, placed: Default::default(), cpu: 1, payload: Payload::Event(r) }).unwrap();
        }
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let want: String = stamps
            .iter()
            .enumerate()
            .map(|(i, ts)| format!("host: {:>16}-{:<5} [001]{ts:>12}: {:<21} b\n", "c", i, "e:"))
            .collect();
        assert_eq!(out, want);
    }
}
