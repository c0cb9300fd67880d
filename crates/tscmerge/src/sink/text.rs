//! trace-cmd-report-style text with a machine column.
//!
//! Line layout after the machine column follows `trace-cmd report` 3.1.6
//! (tracecmd/trace-read.c, libtraceevent `tep_print_event`):
//! `%16s-%-5d [%03d] TS: NAME: BODY`, the event name and colon padded to 21.

use std::io::Write;

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
}

impl TsFormat {
    pub fn write(&self, out: &mut Vec<u8>, ts: u64) {
        match *self {
            TsFormat::Cycles => put_u64(out, ts, 12, b' '),
            TsFormat::Secs { khz } => {
                // ns = cycles * 1e6 / kHz, in 128 bits so nothing overflows.
                let ns = (ts as u128 * 1_000_000 / khz.max(1) as u128) as u64;
                put_u64(out, ns / 1_000_000_000, 6, b' ');
                out.push(b'.');
                put_u64(out, ns % 1_000_000_000, 9, b'0');
            }
        }
    }
}

// Per-event formatting without `write!`: the fmt machinery costs more than
// the rest of the line (callgrind, bench/README.md). Each helper does what
// the `format!` spec in its comment does, byte for byte.

/// `{v:>width$}` (pad b' ') or `{v:0width$}` (pad b'0').
pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64, width: usize, pad: u8) {
    // Digits right-aligned in a padded buffer, two at a time: one copy out
    // instead of a fill and a copy (a line has three or four of these).
    const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut buf = [pad; 32];
    let mut i = buf.len();
    // Eight digits at a time with one 64-bit division, the pairs in 32 bits.
    while v >= 100_000_000 {
        let mut lo = (v % 100_000_000) as u32;
        v /= 100_000_000;
        for _ in 0..4 {
            let d = (lo % 100) as usize * 2;
            lo /= 100;
            i -= 2;
            buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
        }
    }
    let mut v = v as u32;
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    let digits = buf.len() - i;
    if width > buf.len() {
        out.resize(out.len() + width - digits, pad);
        out.extend_from_slice(&buf[i..]);
    } else {
        out.extend_from_slice(&buf[buf.len() - width.max(digits)..]);
    }
}

/// `{v:<width$}` for a signed value.
fn put_i32_left(out: &mut Vec<u8>, v: i32, width: usize) {
    let start = out.len();
    if v < 0 {
        out.push(b'-');
    }
    put_u64(out, v.unsigned_abs() as u64, 0, b' ');
    let n = out.len() - start;
    out.resize(out.len() + width.saturating_sub(n), b' ');
}

/// `{s:>width$}`: std pads by characters, not bytes.
fn put_str_right(out: &mut Vec<u8>, s: &str, width: usize) {
    let n = if s.is_ascii() { s.len() } else { s.chars().count() };
    out.resize(out.len() + width.saturating_sub(n), b' ');
    out.extend_from_slice(s.as_bytes());
}

pub struct TextSink<W: Write> {
    out: W,
    /// Each machine's column as printed, `label: ` right-aligned.
    columns: Vec<Vec<u8>>,
    width: usize,
    ts: TsFormat,
    show_guest_ts: bool,
    /// Lines are formatted straight into this buffer, which goes to `out`
    /// in [`FLUSH_AT`]-sized writes: no per-line copy into a writer.
    line: Vec<u8>,
    path: String,
    /// Line starts lately printed, by (machine, CPU) slot.
    prefixes: Vec<Prefix>,
}

/// The start of a line, `column comm-pid [cpu]`, as last printed for a
/// (machine, CPU): a CPU runs one task for many events in a row, so most
/// lines copy it whole instead of formatting four fields.
#[derive(Default)]
struct Prefix {
    machine: usize,
    cpu: u32,
    pid: i32,
    comm: Vec<u8>,
    bytes: Vec<u8>,
}

/// Slots of the prefix cache (direct-mapped on machine and CPU).
const PREFIX_SLOTS: usize = 64;

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
                        put_str_right(&mut c, m, width);
                        c.extend_from_slice(b": ");
                    }
                }
                c
            })
            .collect();
        // No slot matches before it is filled: machine usize::MAX is none.
        let prefixes = (0..PREFIX_SLOTS).map(|_| Prefix { machine: usize::MAX, ..Prefix::default() }).collect();
        TextSink { out, columns, width, ts, show_guest_ts, line: Vec::with_capacity(FLUSH_AT + 4096), path: path.to_string(), prefixes }
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
            Some(c) => l.extend_from_slice(c),
            // A machine without a name: blanks of the column's width.
            None if self.width > 0 => l.resize(l.len() + self.width + 2, b' '),
            None => {}
        };
        match ev.payload {
            Payload::Lost { count } => {
                column(l);
                l.extend_from_slice(b"CPU:");
                put_u64(l, ev.cpu as u64, 0, b' ');
                l.extend_from_slice(b" [");
                if let Some(n) = count {
                    put_u64(l, n, 0, b' ');
                    l.push(b' ');
                }
                l.extend_from_slice(b"EVENTS DROPPED]");
            }
            Payload::Event(r) => {
                let p = &mut self.prefixes[(machine.wrapping_mul(31) ^ ev.cpu as usize) % PREFIX_SLOTS];
                if !(p.machine == machine && p.cpu == ev.cpu && p.pid == r.pid && p.comm == r.comm.as_bytes()) {
                    p.bytes.clear();
                    column(&mut p.bytes);
                    put_str_right(&mut p.bytes, r.comm, 16);
                    p.bytes.push(b'-');
                    put_i32_left(&mut p.bytes, r.pid, 5);
                    p.bytes.extend_from_slice(b" [");
                    put_u64(&mut p.bytes, ev.cpu as u64, 3, b'0');
                    p.bytes.push(b']');
                    (p.machine, p.cpu, p.pid) = (machine, ev.cpu, r.pid);
                    p.comm.clear();
                    p.comm.extend_from_slice(r.comm.as_bytes());
                }
                l.extend_from_slice(&p.bytes);
                self.ts.write(l, ev.ts);
                if self.show_guest_ts {
                    match ev.orig_ts {
                        Some(g) => {
                            l.extend_from_slice(b" (guest ");
                            put_u64(l, g, 12, b' ');
                            l.push(b')');
                        }
                        None => l.extend_from_slice(b"               "),
                    }
                }
                let start = l.len();
                l.extend_from_slice(b": ");
                l.extend_from_slice(r.name.as_bytes());
                l.push(b':');
                let used = l.len() - start - 2;
                l.resize(l.len() + 21usize.saturating_sub(used) + 1, b' ');
                r.body.render(ftrace::printfmt::Style::TraceCmd, l);
            }
        }
    }
}

impl<W: Write + Send> Sink for TextSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
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
    use proptest::prelude::*;

    proptest! {
        /// The hand-written number formatting is `format!`'s, byte for byte.
        #[test]
        fn put_u64_is_format(v in any::<u64>(), small in 0u64..1000, width in 0usize..40) {
            for v in [v, small, 0, u64::MAX] {
                let mut a = b"x".to_vec();
                put_u64(&mut a, v, width, b' ');
                let want = format!("{v:>width$}");
                prop_assert_eq!(&a[1..], want.as_bytes());
                let mut z = Vec::new();
                put_u64(&mut z, v, width, b'0');
                prop_assert_eq!(z, format!("{v:0width$}").into_bytes());
            }
        }
    }
}
