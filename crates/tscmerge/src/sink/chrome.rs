//! The Chrome trace event format (`--format chrome`): JSON that
//! chrome://tracing, Perfetto UI and speedscope open. Written as a stream,
//! one entry per line: `{"displayTimeUnit":"ns",...,"traceEvents":[` then the
//! entries, then `]}` in [`Sink::finish`]; memory does not grow with events.
//!
//! Mapping (Trace Event Format, "Instant Events" and "Metadata Events"):
//! - every merged event is one instant (`"ph":"i"`, thread scope) with
//!   `pid` = machine (0 host, then guests), `tid` = CPU, `args` = its fields;
//! - lost events are instants named `lost_events` with their count;
//! - each machine gets `process_name` metadata and each CPU `thread_name`
//!   (`CPU N`), when first seen;
//! - vCPU run windows (host `kvm_entry` → `kvm_exit` of one vCPU thread)
//!   are complete events (`"ph":"X"`, `"cat":"vcpu_run"`) on the host
//!   process, `tid` = the vCPU thread, named `<guest> vCPU N`. They are extra
//!   entries, on top of one entry per event.
//!
//! `ts` is in microseconds with nanosecond decimals, from the host TSC and
//! its frequency.

use std::collections::HashSet;
use std::io::Write;

use super::perfetto::{RunWindows, VcpuThread};
use super::{for_each_field, FieldVal, HostNs};
use crate::event::{EventView, Payload};
use crate::merge::Sink;
use crate::{Error, Result};

pub struct ChromeSink<W: Write> {
    out: W,
    machines: Vec<String>,
    clock: HostNs,
    path: String,
    first: bool,
    seen: HashSet<(usize, u32)>,
    seen_vcpu: HashSet<i32>,
    runs: RunWindows,
    line: Vec<u8>,
    /// Entries written, by kind: (events, metadata, run windows).
    pub counts: (u64, u64, u64),
}

/// Appends `s` as a JSON string.
fn jstr(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends nanoseconds as microseconds with three decimals (exact, no float).
fn us(out: &mut Vec<u8>, ns: u64) {
    let _ = write!(out, "{}.{:03}", ns / 1000, ns % 1000);
}

impl<W: Write> ChromeSink<W> {
    /// `machines[i]` names machine `i`; `clock` turns host TSC into ns;
    /// `vcpus` names the vCPU threads the host ran (for run windows).
    pub fn new(mut out: W, machines: Vec<String>, clock: HostNs, vcpus: Vec<VcpuThread>, path: &str) -> Result<Self> {
        let io = |source| Error::Io { path: path.into(), source };
        writeln!(
            out,
            "{{\"displayTimeUnit\":\"ns\",\"otherData\":{{\"generator\":\"tscmerge\",\"clock\":\"host TSC\",{}}},\"traceEvents\":[",
            clock.describe_json()
        )
        .map_err(io)?;
        Ok(ChromeSink {
            out,
            machines,
            clock,
            path: path.to_string(),
            first: true,
            seen: HashSet::new(),
            seen_vcpu: HashSet::new(),
            runs: RunWindows::new(vcpus),
            line: Vec::with_capacity(512),
            counts: (0, 0, 0),
        })
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn sep(&mut self) {
        if !self.first {
            self.line.extend_from_slice(b",\n");
        }
        self.first = false;
    }

    fn meta(&mut self, what: &str, pid: usize, tid: Option<i64>, name: &str) {
        self.sep();
        let l = &mut self.line;
        let _ = write!(l, "{{\"name\":\"{what}\",\"ph\":\"M\",\"pid\":{pid}");
        if let Some(t) = tid {
            let _ = write!(l, ",\"tid\":{t}");
        }
        l.extend_from_slice(b",\"args\":{\"name\":");
        jstr(l, name);
        l.extend_from_slice(b"}}");
        self.counts.1 += 1;
    }

    fn flush_line(&mut self) -> Result<()> {
        let r = self.out.write_all(&self.line);
        self.line.clear();
        r.map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }
}

impl<W: Write + Send> Sink for ChromeSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        if self.seen.insert((machine, ev.cpu)) {
            if !self.seen.iter().any(|&(m, c)| m == machine && c != ev.cpu) {
                let name = self.machines.get(machine).cloned().unwrap_or_else(|| format!("machine {machine}"));
                self.meta("process_name", machine, None, &name);
            }
            self.meta("thread_name", machine, Some(ev.cpu as i64), &format!("CPU {}", ev.cpu));
        }
        let ns = self.clock.ns(ev.ts);
        self.sep();
        let l = &mut self.line;
        match ev.payload {
            Payload::Lost { count } => {
                l.extend_from_slice(b"{\"name\":\"lost_events\",\"cat\":\"ftrace\",\"ph\":\"i\",\"s\":\"t\",\"ts\":");
                us(l, ns);
                let _ = write!(l, ",\"pid\":{machine},\"tid\":{},\"args\":{{", ev.cpu);
                if let Some(n) = count {
                    let _ = write!(l, "\"count\":{n}");
                }
                l.extend_from_slice(b"}}");
            }
            Payload::Event(r) => {
                l.extend_from_slice(b"{\"name\":");
                jstr(l, r.name);
                l.extend_from_slice(b",\"cat\":");
                jstr(l, if r.system.is_empty() { "ftrace" } else { r.system });
                l.extend_from_slice(b",\"ph\":\"i\",\"s\":\"t\",\"ts\":");
                us(l, ns);
                let _ = write!(l, ",\"pid\":{machine},\"tid\":{},\"args\":{{\"common_pid\":{},\"common_comm\":", ev.cpu, r.pid);
                jstr(l, r.comm);
                if let Some(g) = ev.orig_ts {
                    let _ = write!(l, ",\"guest_ts\":{g}");
                }
                // A guest event whose guest time fitted several offset
                // periods: how its host time was chosen (clock/walk.rs).
                match ev.placed {
                    crate::clock::How::Only => {}
                    crate::clock::How::RunWindows => l.extend_from_slice(b",\"placed\":\"run_windows\""),
                    crate::clock::How::GuestOrder => l.extend_from_slice(b",\"placed\":\"guest_order\""),
                    crate::clock::How::Rule => l.extend_from_slice(b",\"placed\":\"rule (ambiguous)\""),
                }
                let n = for_each_field(&r, |k, v| {
                    l.push(b',');
                    jstr(l, k);
                    l.push(b':');
                    match v {
                        FieldVal::Int(i) => {
                            let _ = write!(l, "{i}");
                        }
                        FieldVal::Uint(u) => {
                            let _ = write!(l, "{u}");
                        }
                        FieldVal::Str(s) => jstr(l, s),
                        FieldVal::Bytes(b) => jstr(l, &b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                    }
                });
                if n == 0 {
                    // No key=value pairs (markers, free text): keep the text.
                    let mut body = Vec::new();
                    r.body.render(ftrace::printfmt::Style::TraceCmd, &mut body);
                    l.extend_from_slice(b",\"body\":");
                    jstr(l, &String::from_utf8_lossy(&body));
                }
                l.extend_from_slice(b"}}");
            }
        }
        self.counts.0 += 1;
        if machine == 0 {
            if let Some(w) = self.runs.observe(ev) {
                if self.seen_vcpu.insert(w.pid) {
                    let label = w.label.clone();
                    self.meta("thread_name", 0, Some(w.pid as i64), &label);
                }
                let start = self.clock.ns(w.start);
                let end = self.clock.ns(w.end);
                self.sep();
                let l = &mut self.line;
                l.extend_from_slice(b"{\"name\":");
                jstr(l, &w.label);
                l.extend_from_slice(b",\"cat\":\"vcpu_run\",\"ph\":\"X\",\"ts\":");
                us(l, start);
                l.extend_from_slice(b",\"dur\":");
                us(l, end - start);
                let _ = write!(l, ",\"pid\":0,\"tid\":{}}}", w.pid);
                self.counts.2 += 1;
            }
        }
        self.flush_line()
    }

    fn finish(&mut self) -> Result<()> {
        self.line.extend_from_slice(b"\n]}\n");
        self.flush_line()?;
        self.out.flush().map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }
}
