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
            TsFormat::Cycles => {
                let _ = write!(out, "{ts:>12}");
            }
            TsFormat::Secs { khz } => {
                // ns = cycles * 1e6 / kHz, in 128 bits so nothing overflows.
                let ns = (ts as u128 * 1_000_000 / khz.max(1) as u128) as u64;
                let _ = write!(out, "{:>6}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
            }
        }
    }
}

pub struct TextSink<W: Write> {
    out: W,
    machines: Vec<String>,
    width: usize,
    ts: TsFormat,
    show_guest_ts: bool,
    line: Vec<u8>,
    path: String,
}

impl<W: Write> TextSink<W> {
    /// `machines[i]` names machine `i` (`host`, then the guests' names).
    /// `machines[i]` labels source `i`. Labels print right-aligned as
    /// `label: `; an empty label prints as blanks of the same width (as
    /// trace-cmd prints the top-level buffer next to instances); when every
    /// label is empty there is no column at all.
    pub fn new(out: W, machines: Vec<String>, ts: TsFormat, show_guest_ts: bool, path: &str) -> Self {
        let width = machines.iter().map(String::len).max().unwrap_or(0);
        TextSink { out, machines, width, ts, show_guest_ts, line: Vec::with_capacity(256), path: path.to_string() }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes a line as is (headers such as trace-cmd's `cpus=N`).
    pub fn raw_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}").map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }

    /// Formats one event into `line` (without the newline).
    pub fn format(&mut self, machine: usize, ev: &EventView<'_>) {
        let l = &mut self.line;
        l.clear();
        let m = self.machines.get(machine).map(String::as_str).unwrap_or("");
        if self.width > 0 {
            if m.is_empty() {
                l.extend(std::iter::repeat_n(b' ', self.width + 2));
            } else {
                let _ = write!(l, "{m:>w$}: ", w = self.width);
            }
        }
        match ev.payload {
            Payload::Lost { count } => {
                let _ = match count {
                    Some(n) => write!(l, "CPU:{} [{n} EVENTS DROPPED]", ev.cpu),
                    None => write!(l, "CPU:{} [EVENTS DROPPED]", ev.cpu),
                };
            }
            Payload::Event(r) => {
                let _ = write!(l, "{:>16}-{:<5} [{:03}]", r.comm, r.pid, ev.cpu);
                self.ts.write(l, ev.ts);
                if self.show_guest_ts {
                    match ev.orig_ts {
                        Some(g) => {
                            let _ = write!(l, " (guest {g:>12})");
                        }
                        None => l.extend_from_slice(b"               "),
                    }
                }
                let start = l.len();
                let _ = write!(l, ": {}:", r.name);
                let used = l.len() - start - 2;
                l.extend(std::iter::repeat_n(b' ', 21usize.saturating_sub(used) + 1));
                r.body.render(ftrace::printfmt::Style::TraceCmd, l);
            }
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        self.format(machine, ev);
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }
}
