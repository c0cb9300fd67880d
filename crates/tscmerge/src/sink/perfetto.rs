//! Perfetto protobuf output (`--format perfetto`): a `Trace` written as a
//! stream of `TracePacket`s (field 1 of `Trace`, so concatenated packets are
//! a valid trace), for ui.perfetto.dev and trace_processor.
//!
//! - Each machine is a Perfetto machine: the host's packets carry no
//!   `machine_id`, guest *i* (1-based, `Plan::machines` order) carries
//!   `machine_id = i`; a `SystemInfo` packet per machine gives its name
//!   (`SystemInfo.machine_name`), and the vCPU slice tracks carry the guest
//!   name in their own names too.
//! - Events go into per-(machine, CPU) `FtraceEventBundle`s of at most
//!   [`BUNDLE_EVENTS`] events (memory is bounded by CPUs × that). Within a
//!   bundle events are in merge order; bundles of different CPUs interleave
//!   in the file as they fill, which the trace processor's sorter expects.
//! - `sched_switch` and `sched_waking` are typed (ftrace/sched.proto), from
//!   the binary record's fields or from the text's `key=value` pairs; every
//!   other event is a `GenericFtraceEvent` with its fields (free text with
//!   no pairs becomes one `body` field).
//! - vCPU run windows, host `kvm_entry` → `kvm_exit` of one vCPU thread, are
//!   slices (`TrackEvent` begin/end) on a track per thread named
//!   `<guest> vCPU N` (`vm? vCPU N` for a thread no guest is tied to).
//!
//! Timestamps are nanoseconds on the host timeline: host TSC × 10⁶ / kHz.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use prost::Message;

use super::perfetto_proto as pb;
use super::{field_int, field_str, for_each_field, tsc_to_ns, FieldVal};
use crate::event::{Body, EventView, Payload, Record};
use crate::merge::Sink;
use crate::{Error, Result};

/// Events per bundle before it is written out.
pub const BUNDLE_EVENTS: usize = 1000;

/// Sequence id of the track-event packets (descriptors and slices).
const TRACK_SEQ: u32 = 1000;

/// A host thread that runs a guest's vCPU (from the offset timeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuThread {
    pub pid: i32,
    pub guest: String,
    pub vcpu: u32,
}

/// One vCPU run window: a vCPU thread between `kvm_entry` and `kvm_exit`.
#[derive(Clone, Debug)]
pub struct RunWindow {
    pub pid: i32,
    pub label: Arc<str>,
    /// Host TSC of the entry and of the exit.
    pub start: u64,
    pub end: u64,
}

/// Pairs host `kvm_entry` / `kvm_exit` events of each vCPU thread
/// (arch/x86/kvm/trace.h: both run in the vCPU thread, so `common_pid`
/// names the vCPU). Memory: one entry per thread.
pub struct RunWindows {
    known: HashMap<i32, (String, u32)>,
    labels: HashMap<i32, Arc<str>>,
    open: HashMap<i32, u64>,
}

/// The vCPU number of a kvm_entry/kvm_exit: the `vcpu_id` field of a binary
/// record; text prints `vcpu N, rip ...` / `vcpu N reason ...`.
fn vcpu_of(r: &Record<'_>) -> Option<u32> {
    match r.body {
        Body::Raw { .. } => field_int(r, "vcpu_id").map(|v| v as u32),
        Body::Text(_) | Body::Rendered(_) => {
            let rest = r.body.text()?.strip_prefix("vcpu ")?;
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            rest[..end].parse().ok()
        }
    }
}

impl RunWindows {
    pub fn new(vcpus: Vec<VcpuThread>) -> Self {
        RunWindows { known: vcpus.into_iter().map(|v| (v.pid, (v.guest, v.vcpu))).collect(), labels: HashMap::new(), open: HashMap::new() }
    }

    /// Feeds one host event; returns the window a `kvm_exit` closes.
    pub fn observe(&mut self, ev: &EventView<'_>) -> Option<RunWindow> {
        let Payload::Event(r) = ev.payload else { return None };
        match r.name {
            "kvm_entry" => {
                self.open.insert(r.pid, ev.ts);
                if !self.labels.contains_key(&r.pid) {
                    let label = match self.known.get(&r.pid) {
                        Some((g, v)) => format!("{g} vCPU {v}"),
                        None => match vcpu_of(&r) {
                            Some(v) => format!("vm? vCPU {v}"),
                            None => format!("vm? vCPU thread {}", r.pid),
                        },
                    };
                    self.labels.insert(r.pid, label.into());
                }
                None
            }
            "kvm_exit" => {
                let start = self.open.remove(&r.pid)?;
                let label = self.labels.get(&r.pid)?.clone();
                Some(RunWindow { pid: r.pid, label, start, end: ev.ts })
            }
            _ => None,
        }
    }
}

/// Parses the `prev_state` text of sched_switch (`S`, `R+`, `D|K`...) into
/// the kernel's bits (include/trace/events/sched.h `__trace_sched_switch_state`:
/// the letters are TASK_REPORT bits, `+` is TASK_REPORT_MAX = 0x100 on 6.x).
pub(crate) fn prev_state_bits(s: &str) -> i64 {
    let mut v = 0;
    for c in s.chars() {
        v |= match c {
            'S' => 0x1,
            'D' => 0x2,
            'T' => 0x4,
            't' => 0x8,
            'X' => 0x10,
            'Z' => 0x20,
            'P' => 0x40,
            'I' => 0x80,
            '+' => 0x100,
            _ => 0,
        };
    }
    v
}

fn int32(r: &Record<'_>, k: &str) -> Option<i32> {
    field_int(r, k).map(|v| v as i32)
}

fn owned(r: &Record<'_>, k: &str) -> Option<String> {
    field_str(r, k).map(str::to_string)
}

/// Converts one record into a typed or generic ftrace event.
fn ftrace_event(r: &Record<'_>, ns: u64) -> pb::FtraceEvent {
    let mut e = pb::FtraceEvent { timestamp: Some(ns), pid: Some(r.pid as u32), ..Default::default() };
    match r.name {
        "sched_switch" => {
            let prev_state = match r.body {
                Body::Raw { .. } => field_int(r, "prev_state"),
                Body::Text(_) | Body::Rendered(_) => r.body.text().and_then(|t| ftrace::text::field(t, "prev_state")).map(prev_state_bits),
            };
            e.sched_switch = Some(pb::SchedSwitchFtraceEvent {
                prev_comm: owned(r, "prev_comm"),
                prev_pid: int32(r, "prev_pid"),
                prev_prio: int32(r, "prev_prio"),
                prev_state,
                next_comm: owned(r, "next_comm"),
                next_pid: int32(r, "next_pid"),
                next_prio: int32(r, "next_prio"),
            });
        }
        "sched_waking" => {
            e.sched_waking = Some(pb::SchedWakingFtraceEvent {
                comm: owned(r, "comm"),
                pid: int32(r, "pid"),
                prio: int32(r, "prio"),
                success: int32(r, "success"),
                target_cpu: int32(r, "target_cpu"),
            });
        }
        _ => {
            let mut g = pb::GenericFtraceEvent { event_name: Some(r.name.to_string()), field: Vec::new() };
            let n = for_each_field(r, |k, v| {
                let mut f = pb::GenericField { name: Some(k.to_string()), ..Default::default() };
                match v {
                    FieldVal::Int(i) => f.int_value = Some(i),
                    FieldVal::Uint(u) => f.uint_value = Some(u),
                    FieldVal::Str(s) => f.str_value = Some(s.to_string()),
                    FieldVal::Bytes(b) => f.str_value = Some(b.iter().map(|x| format!("{x:02x}")).collect()),
                }
                g.field.push(f);
            });
            if n == 0 {
                let mut body = Vec::new();
                r.body.render(ftrace::printfmt::Style::TraceCmd, &mut body);
                g.field.push(pb::GenericField {
                    name: Some("body".into()),
                    str_value: Some(String::from_utf8_lossy(&body).into_owned()),
                    ..Default::default()
                });
            }
            e.generic = Some(g);
        }
    }
    e
}

pub struct PerfettoSink<W: Write> {
    out: W,
    khz: u64,
    path: String,
    bundles: BTreeMap<(usize, u32), pb::FtraceEventBundle>,
    runs: RunWindows,
    tracks: HashMap<i32, u64>,
    track_seq_started: bool,
    buf: Vec<u8>,
    /// Packets written, by kind: (ftrace bundles, events in them, slices).
    pub counts: (u64, u64, u64),
}

fn machine_id(machine: usize) -> Option<u32> {
    (machine > 0).then_some(machine as u32)
}

impl<W: Write> PerfettoSink<W> {
    /// `machines[i]` names machine `i` (0 = host); `khz` is the host TSC
    /// frequency; `vcpus` the host threads known to run guest vCPUs.
    pub fn new(out: W, machines: &[String], khz: u64, vcpus: Vec<VcpuThread>, path: &str) -> Result<Self> {
        let mut s = PerfettoSink {
            out,
            khz,
            path: path.to_string(),
            bundles: BTreeMap::new(),
            runs: RunWindows::new(vcpus),
            tracks: HashMap::new(),
            track_seq_started: false,
            buf: Vec::with_capacity(1 << 16),
            counts: (0, 0, 0),
        };
        for (i, name) in machines.iter().enumerate() {
            s.packet(&pb::TracePacket {
                machine_id: machine_id(i),
                trusted_packet_sequence_id: Some(1 + i as u32),
                system_info: Some(pb::SystemInfo {
                    machine_name: Some(name.clone()),
                    utsname: Some(pb::Utsname { sysname: Some("Linux".into()), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            })?;
        }
        Ok(s)
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes one packet as `Trace.packet` (field 1, length-delimited).
    fn packet(&mut self, p: &pb::TracePacket) -> Result<()> {
        self.buf.clear();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        p.encode_length_delimited(&mut self.buf).expect("a Vec grows as needed");
        self.out.write_all(&self.buf).map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }

    fn flush_bundle(&mut self, key: (usize, u32)) -> Result<()> {
        if let Some(b) = self.bundles.remove(&key) {
            if b.event.is_empty() && b.lost_events != Some(true) {
                return Ok(());
            }
            self.counts.0 += 1;
            self.counts.1 += b.event.len() as u64;
            let p = pb::TracePacket {
                machine_id: machine_id(key.0),
                trusted_packet_sequence_id: Some(1 + key.0 as u32),
                ftrace_events: Some(b),
                ..Default::default()
            };
            self.packet(&p)?;
        }
        Ok(())
    }

    fn track_packet(&mut self, mut p: pb::TracePacket) -> Result<()> {
        p.trusted_packet_sequence_id = Some(TRACK_SEQ);
        if !self.track_seq_started {
            self.track_seq_started = true;
            p.first_packet_on_sequence = Some(true);
            p.sequence_flags = Some(pb::SEQ_INCREMENTAL_STATE_CLEARED);
        }
        self.packet(&p)
    }

    fn slice(&mut self, w: RunWindow) -> Result<()> {
        let uuid = match self.tracks.get(&w.pid) {
            Some(&u) => u,
            None => {
                // A fixed high tag keeps these apart from any uuid the trace
                // processor derives itself.
                let u = 0x7473_6d00_0000_0000 | (w.pid as u32 as u64);
                self.tracks.insert(w.pid, u);
                self.track_packet(pb::TracePacket {
                    track_descriptor: Some(pb::TrackDescriptor { uuid: Some(u), name: Some(w.label.to_string()), ..Default::default() }),
                    ..Default::default()
                })?;
                u
            }
        };
        for (ts, ty) in [(w.start, pb::TYPE_SLICE_BEGIN), (w.end, pb::TYPE_SLICE_END)] {
            let te = pb::TrackEvent {
                r#type: Some(ty),
                track_uuid: Some(uuid),
                name: (ty == pb::TYPE_SLICE_BEGIN).then(|| "run".to_string()),
                categories: Vec::new(),
            };
            self.track_packet(pb::TracePacket { timestamp: Some(tsc_to_ns(ts, self.khz)), track_event: Some(te), ..Default::default() })?;
        }
        self.counts.2 += 1;
        Ok(())
    }
}

impl<W: Write + Send> Sink for PerfettoSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        let key = (machine, ev.cpu);
        let ns = tsc_to_ns(ev.ts, self.khz);
        match ev.payload {
            Payload::Lost { .. } => {
                // The flag marks the bundle whose data follows a loss.
                self.flush_bundle(key)?;
                let b = self.bundles.entry(key).or_default();
                b.cpu = Some(ev.cpu);
                b.lost_events = Some(true);
            }
            Payload::Event(r) => {
                let e = ftrace_event(&r, ns);
                let b = self.bundles.entry(key).or_default();
                b.cpu = Some(ev.cpu);
                b.event.push(e);
                if b.event.len() >= BUNDLE_EVENTS {
                    self.flush_bundle(key)?;
                }
            }
        }
        if machine == 0 {
            if let Some(w) = self.runs.observe(ev) {
                self.slice(w)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let keys: Vec<_> = self.bundles.keys().copied().collect();
        for k in keys {
            self.flush_bundle(k)?;
        }
        self.out.flush().map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }
}
