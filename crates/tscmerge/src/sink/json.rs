//! One JSON object per event (`--json`), for scripts: machine, cpu, ts
//! (host TSC), ns (host time in nanoseconds, when the host file's TSC2NSEC
//! or `--tsc-khz` gives it), guest_ts, placed (for a guest event whose guest
//! time fitted several offset periods: `run_windows` or `rule`, the latter
//! ambiguous), pid, tgid, comm, event, body (and lost counts).

use std::io::Write;

use serde::Serialize;

use crate::event::{EventView, Payload};
use crate::merge::Sink;
use crate::{Error, Result};

#[derive(Serialize)]
struct JsonEvent<'a> {
    machine: &'a str,
    cpu: u32,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guest_ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placed: Option<crate::clock::How>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm: Option<&'a str>,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost: Option<Option<u64>>,
}

pub struct JsonSink<W: Write> {
    out: W,
    machines: Vec<String>,
    body: Vec<u8>,
    path: String,
    clock: Option<super::HostNs>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, machines: Vec<String>, path: &str) -> Self {
        JsonSink { out, machines, body: Vec::new(), path: path.to_string(), clock: None }
    }

    /// Adds `ns`, host time in nanoseconds, to every object.
    pub fn with_ns(mut self, clock: Option<super::HostNs>) -> Self {
        self.clock = clock;
        self
    }
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for JsonSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        let m = self.machines.get(machine).map(String::as_str).unwrap_or("?");
        self.body.clear();
        let mut j = JsonEvent {
            machine: m,
            cpu: ev.cpu,
            ts: ev.ts,
            ns: self.clock.map(|c| c.ns(ev.ts)),
            guest_ts: ev.orig_ts,
            placed: (ev.placed != crate::clock::How::Only).then_some(ev.placed),
            pid: None,
            tgid: None,
            comm: None,
            event: "lost_events",
            body: None,
            lost: None,
        };
        match ev.payload {
            Payload::Lost { count } => j.lost = Some(count),
            Payload::Event(r) => {
                r.body.render(ftrace::printfmt::Style::TraceCmd, &mut self.body);
                j.pid = Some(r.pid);
                j.tgid = r.tgid;
                j.comm = Some(r.comm);
                j.event = r.name;
                j.body = Some(std::str::from_utf8(&self.body).unwrap_or("<invalid utf-8>"));
            }
        }
        let io = |source| Error::Io { path: self.path.clone().into(), source };
        serde_json::to_writer(&mut self.out, &j).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)
    }
}
