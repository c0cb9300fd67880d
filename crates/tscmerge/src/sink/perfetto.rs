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
//! - A guest event whose guest time fitted several offset periods and that
//!   nothing decided (placed by the rule, clock/walk.rs) is also an instant
//!   on a track `<guest> ambiguous placements`, named after the event, so
//!   the UI shows where the merged order is a guess.
//!
//! - With [`PerfettoSink::vcpu_states`] (`merge --vcpu-states`), each vCPU's
//!   states as `explain` finds them ([`crate::explain`]: guest, exit by
//!   reason, userspace, preempted by whom, halted, unknown) are slices on a
//!   track `<guest> vCPU N state` that tile the host recording, and the
//!   time it spent preempted so far is a counter track `<guest> vCPU N
//!   steal` (ns), stepped at the end of each preemption.
//!
//! Timestamps are nanoseconds on the host timeline: host TSC × 10⁶ / kHz.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use prost::Message;

use super::perfetto_proto as pb;
use super::{field_int, field_str, for_each_field, prev_state_bits, FieldVal, HostNs};
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


/// Protobuf wire encoding straight into byte buffers, for the messages
/// written per event: prost's structs would allocate every string and
/// field name and size each nested message again at every level (its
/// `encoded_len` was a tenth of a run). Fields go out in tag order, as
/// prost writes the [`pb`] structs, so the bytes are the ones
/// `Message::encode` writes (tested against it).
mod wire {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

    pub fn uint(out: &mut Vec<u8>, tag: u32, v: u64) {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }

    /// `int32`: negative values are sign-extended to ten bytes.
    pub fn int32(out: &mut Vec<u8>, tag: u32, v: i32) {
        uint(out, tag, v as i64 as u64);
    }

    pub fn bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    /// Bytes of a length-delimited field of `len` bytes, key included.
    pub fn delimited_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    pub fn varint_len(tag: u32, v: u64) -> usize {
        key_len(tag) + encoded_len_varint(v)
    }

    fn key_len(tag: u32) -> usize {
        encoded_len_varint(u64::from(tag << 3))
    }

    /// The key and length of a length-delimited field whose bytes follow.
    pub fn delimited_head(out: &mut Vec<u8>, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    }
}

/// Scratch buffers for [`encode_event`], reused from event to event.
#[derive(Default)]
struct Scratch {
    event: Vec<u8>,
    sub: Vec<u8>,
    field: Vec<u8>,
    body: Vec<u8>,
    hex: String,
}

/// Appends one record as an `FtraceEventBundle.event` (field 2): typed for
/// sched_switch and sched_waking, else a `GenericFtraceEvent` with its
/// fields (free text with no pairs becomes one `body` field).
fn encode_event(r: &Record<'_>, ns: u64, s: &mut Scratch, out: &mut Vec<u8>) {
    let int32 = |out: &mut Vec<u8>, tag, k| {
        if let Some(v) = field_int(r, k) {
            wire::int32(out, tag, v as i32);
        }
    };
    let string = |out: &mut Vec<u8>, tag, k| {
        if let Some(v) = field_str(r, k) {
            wire::bytes(out, tag, v.as_bytes());
        }
    };
    s.event.clear();
    s.sub.clear();
    wire::uint(&mut s.event, 1, ns);
    wire::uint(&mut s.event, 2, u64::from(r.pid as u32));
    match r.name {
        "sched_switch" => {
            let prev_state = match r.body {
                Body::Raw { .. } => field_int(r, "prev_state"),
                Body::Text(_) | Body::Rendered(_) => r.body.text().and_then(|t| ftrace::text::field(t, "prev_state")).map(prev_state_bits),
            };
            string(&mut s.sub, 1, "prev_comm");
            int32(&mut s.sub, 2, "prev_pid");
            int32(&mut s.sub, 3, "prev_prio");
            if let Some(v) = prev_state {
                wire::uint(&mut s.sub, 4, v as u64);
            }
            string(&mut s.sub, 5, "next_comm");
            int32(&mut s.sub, 6, "next_pid");
            int32(&mut s.sub, 7, "next_prio");
            wire::bytes(&mut s.event, 4, &s.sub);
        }
        "sched_waking" => {
            string(&mut s.sub, 1, "comm");
            int32(&mut s.sub, 2, "pid");
            int32(&mut s.sub, 3, "prio");
            int32(&mut s.sub, 4, "success");
            int32(&mut s.sub, 5, "target_cpu");
            wire::bytes(&mut s.event, 20, &s.sub);
        }
        _ => {
            wire::bytes(&mut s.sub, 1, r.name.as_bytes());
            let (sub, field, hex) = (&mut s.sub, &mut s.field, &mut s.hex);
            let n = for_each_field(r, |k, v| {
                field.clear();
                wire::bytes(field, 1, k.as_bytes());
                match v {
                    FieldVal::Int(i) => wire::uint(field, 4, i as u64),
                    FieldVal::Uint(u) => wire::uint(field, 5, u),
                    FieldVal::Str(t) => wire::bytes(field, 3, t.as_bytes()),
                    FieldVal::Bytes(b) => {
                        hex.clear();
                        for x in b {
                            let _ = std::fmt::Write::write_fmt(hex, format_args!("{x:02x}"));
                        }
                        wire::bytes(field, 3, hex.as_bytes());
                    }
                }
                wire::bytes(sub, 2, field);
            });
            if n == 0 {
                s.body.clear();
                r.body.render(ftrace::printfmt::Style::TraceCmd, &mut s.body);
                s.field.clear();
                wire::bytes(&mut s.field, 1, b"body");
                wire::bytes(&mut s.field, 3, String::from_utf8_lossy(&s.body).as_bytes());
                wire::bytes(&mut s.sub, 2, &s.field);
            }
            wire::bytes(&mut s.event, 327, &s.sub);
        }
    }
    wire::bytes(out, 2, &s.event);
}

/// One (machine, CPU)'s events not yet written: the encoded
/// `FtraceEventBundle.event` fields, and whether the bundle follows a loss.
#[derive(Default)]
struct Bundle {
    cpu: u32,
    events: Vec<u8>,
    count: usize,
    lost: bool,
}

pub struct PerfettoSink<W: Write> {
    out: W,
    clock: HostNs,
    path: String,
    bundles: BTreeMap<(usize, u32), Bundle>,
    scratch: Scratch,
    runs: RunWindows,
    tracks: HashMap<i32, u64>,
    track_seq_started: bool,
    buf: Vec<u8>,
    /// Packets written, by kind: (ftrace bundles, events in them, slices).
    pub counts: (u64, u64, u64),
    machines: Vec<String>,
    /// Guest machine → its ambiguous-placements track.
    ambiguous_tracks: HashMap<usize, u64>,
    /// Instants written on those tracks.
    pub ambiguous_marks: u64,
    /// vCPU states, when asked ([`PerfettoSink::vcpu_states`]).
    states: Option<StateTracks>,
}

/// The explain state machine and, per vCPU (its index there), its state
/// and steal tracks and the steal so far (ns).
struct StateTracks {
    explainer: crate::explain::Explainer,
    tracks: HashMap<usize, (u64, u64, u64)>,
}

fn machine_id(machine: usize) -> Option<u32> {
    (machine > 0).then_some(machine as u32)
}

impl<W: Write> PerfettoSink<W> {
    /// `machines[i]` names machine `i` (0 = host); `clock` turns host TSC
    /// into nanoseconds; `vcpus` the host threads known to run guest vCPUs.
    pub fn new(out: W, machines: &[String], clock: HostNs, vcpus: Vec<VcpuThread>, path: &str) -> Result<Self> {
        let mut s = PerfettoSink {
            out,
            clock,
            path: path.to_string(),
            bundles: BTreeMap::new(),
            scratch: Scratch::default(),
            runs: RunWindows::new(vcpus),
            tracks: HashMap::new(),
            track_seq_started: false,
            buf: Vec::with_capacity(1 << 16),
            counts: (0, 0, 0),
            machines: machines.to_vec(),
            ambiguous_tracks: HashMap::new(),
            ambiguous_marks: 0,
            states: None,
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

    /// Writes the bundle of `key` as a `TracePacket` { `ftrace_events`,
    /// sequence id, machine id }, fields in tag order as prost writes them;
    /// the events go out from the bundle's buffer, not copied again.
    fn flush_bundle(&mut self, key: (usize, u32)) -> Result<()> {
        let Some(b) = self.bundles.remove(&key) else { return Ok(()) };
        if b.count == 0 && !b.lost {
            return Ok(());
        }
        self.counts.0 += 1;
        self.counts.1 += b.count as u64;
        let seq = 1 + key.0 as u64;
        let machine = machine_id(key.0);
        let lost_len = if b.lost { wire::varint_len(3, 1) } else { 0 };
        let bundle_len = wire::varint_len(1, u64::from(b.cpu)) + b.events.len() + lost_len;
        let packet_len = wire::varint_len(10, seq) + machine.map_or(0, |m| wire::varint_len(98, u64::from(m))) + wire::delimited_len(1, bundle_len);
        self.buf.clear();
        wire::delimited_head(&mut self.buf, 1, packet_len);
        wire::delimited_head(&mut self.buf, 1, bundle_len);
        wire::uint(&mut self.buf, 1, u64::from(b.cpu));
        let io = |source| Error::Io { path: self.path.clone().into(), source };
        self.out.write_all(&self.buf).map_err(io)?;
        self.out.write_all(&b.events).map_err(io)?;
        self.buf.clear();
        if b.lost {
            wire::uint(&mut self.buf, 3, 1);
        }
        wire::uint(&mut self.buf, 10, seq);
        if let Some(m) = machine {
            wire::uint(&mut self.buf, 98, u64::from(m));
        }
        self.out.write_all(&self.buf).map_err(io)?;
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

    /// An instant for a guest event placed by the rule (ambiguous).
    fn ambiguous_mark(&mut self, machine: usize, name: &str, ts: u64) -> Result<()> {
        let uuid = match self.ambiguous_tracks.get(&machine) {
            Some(&u) => u,
            None => {
                // Apart from the per-thread run-window tracks (pid below 2^32).
                let u = 0x7473_6d01_0000_0000 | machine as u64;
                self.ambiguous_tracks.insert(machine, u);
                let label = format!("{} ambiguous placements", self.machines.get(machine).map_or("?", String::as_str));
                self.track_packet(pb::TracePacket {
                    track_descriptor: Some(pb::TrackDescriptor { uuid: Some(u), name: Some(label), ..Default::default() }),
                    ..Default::default()
                })?;
                u
            }
        };
        let te = pb::TrackEvent { r#type: Some(pb::TYPE_INSTANT), track_uuid: Some(uuid), name: Some(format!("{name} (placed by the rule)")), ..Default::default() };
        self.track_packet(pb::TracePacket { timestamp: Some(self.clock.ns(ts)), track_event: Some(te), ..Default::default() })?;
        self.ambiguous_marks += 1;
        Ok(())
    }

    /// Adds each vCPU's state slices and steal counter (see the module doc).
    pub fn vcpu_states(&mut self, cfg: crate::explain::ExplainConfig) {
        let mut explainer = crate::explain::Explainer::new(cfg);
        explainer.keep_segments();
        self.states = Some(StateTracks { explainer, tracks: HashMap::new() });
    }

    /// Writes the state segments closed so far.
    fn state_slices(&mut self) -> Result<()> {
        let Some(mut st) = self.states.take() else { return Ok(()) };
        let r = self.write_segments(&mut st);
        self.states = Some(st);
        r
    }

    fn write_segments(&mut self, st: &mut StateTracks) -> Result<()> {
        for seg in st.explainer.take_segments() {
            let (uuid, steal_uuid, steal) = match st.tracks.get(&seg.vcpu) {
                Some(&t) => t,
                None => {
                    let label = st.explainer.vcpu_label(seg.vcpu);
                    let (u, c) = (0x7473_6e00_0000_0000 | seg.vcpu as u64, 0x7473_6f00_0000_0000 | seg.vcpu as u64);
                    self.track_packet(pb::TracePacket {
                        track_descriptor: Some(pb::TrackDescriptor { uuid: Some(u), name: Some(format!("{label} state")), ..Default::default() }),
                        ..Default::default()
                    })?;
                    self.track_packet(pb::TracePacket {
                        track_descriptor: Some(pb::TrackDescriptor {
                            uuid: Some(c),
                            name: Some(format!("{label} steal")),
                            counter: Some(pb::CounterDescriptor { unit: Some(pb::UNIT_TIME_NS) }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })?;
                    let counter = pb::TrackEvent { r#type: Some(pb::TYPE_COUNTER), track_uuid: Some(c), counter_value: Some(0), ..Default::default() };
                    self.track_packet(pb::TracePacket { timestamp: Some(self.clock.ns(seg.start)), track_event: Some(counter), ..Default::default() })?;
                    st.tracks.insert(seg.vcpu, (u, c, 0));
                    (u, c, 0)
                }
            };
            let (start, end) = (self.clock.ns(seg.start), self.clock.ns(seg.end));
            let name = match st.explainer.state_name(seg.state) {
                ("preempted", Some(d)) => format!("preempted by {d}"),
                (s, Some(d)) => format!("{s} {d}"),
                (s, None) => s.to_string(),
            };
            let begin = pb::TrackEvent { r#type: Some(pb::TYPE_SLICE_BEGIN), track_uuid: Some(uuid), name: Some(name), ..Default::default() };
            self.track_packet(pb::TracePacket { timestamp: Some(start), track_event: Some(begin), ..Default::default() })?;
            let finish = pb::TrackEvent { r#type: Some(pb::TYPE_SLICE_END), track_uuid: Some(uuid), ..Default::default() };
            self.track_packet(pb::TracePacket { timestamp: Some(end), track_event: Some(finish), ..Default::default() })?;
            self.counts.2 += 1;
            if let crate::explain::State::Preempted(_) = seg.state {
                let steal = steal + end.saturating_sub(start);
                let counter = pb::TrackEvent { r#type: Some(pb::TYPE_COUNTER), track_uuid: Some(steal_uuid), counter_value: Some(steal as i64), ..Default::default() };
                self.track_packet(pb::TracePacket { timestamp: Some(end), track_event: Some(counter), ..Default::default() })?;
                st.tracks.insert(seg.vcpu, (uuid, steal_uuid, steal));
            }
        }
        Ok(())
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
                ..Default::default()
            };
            self.track_packet(pb::TracePacket { timestamp: Some(self.clock.ns(ts)), track_event: Some(te), ..Default::default() })?;
        }
        self.counts.2 += 1;
        Ok(())
    }
}

impl<W: Write + Send> Sink for PerfettoSink<W> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        let key = (machine, ev.cpu);
        let ns = self.clock.ns(ev.ts);
        match ev.payload {
            Payload::Lost { .. } => {
                // The flag marks the bundle whose data follows a loss.
                self.flush_bundle(key)?;
                let b = self.bundles.entry(key).or_default();
                b.cpu = ev.cpu;
                b.lost = true;
            }
            Payload::Event(r) => {
                if ev.placed == crate::clock::How::Rule {
                    self.ambiguous_mark(machine, r.name, ev.ts)?;
                }
                let b = self.bundles.entry(key).or_default();
                b.cpu = ev.cpu;
                encode_event(&r, ns, &mut self.scratch, &mut b.events);
                b.count += 1;
                if b.count >= BUNDLE_EVENTS {
                    self.flush_bundle(key)?;
                }
            }
        }
        if machine == 0 {
            if let Some(w) = self.runs.observe(ev) {
                self.slice(w)?;
            }
        }
        if let Some(st) = self.states.as_mut() {
            st.explainer.event(machine, ev);
            self.state_slices()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(st) = self.states.as_mut() {
            st.explainer.finish();
            self.state_slices()?;
        }
        let keys: Vec<_> = self.bundles.keys().copied().collect();
        for k in keys {
            self.flush_bundle(k)?;
        }
        self.out.flush().map_err(|source| Error::Io { path: self.path.clone().into(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftrace::format::EventFormat;
    use ftrace::printfmt::RenderCtx;
    use ftrace::Endian;

    fn int32(r: &Record<'_>, k: &str) -> Option<i32> {
        field_int(r, k).map(|v| v as i32)
    }

    fn owned(r: &Record<'_>, k: &str) -> Option<String> {
        field_str(r, k).map(str::to_string)
    }

    /// The oracle: the event as prost structs, as the sink built them
    /// before it encoded straight to bytes.
    fn prost_event(r: &Record<'_>, ns: u64) -> pb::FtraceEvent {
        let mut e = pb::FtraceEvent { timestamp: Some(ns), pid: Some(r.pid as u32), ..Default::default() };
        match r.name {
            "sched_switch" => {
                let prev_state = match r.body {
                    Body::Raw { .. } => field_int(r, "prev_state"),
                    _ => r.body.text().and_then(|t| ftrace::text::field(t, "prev_state")).map(prev_state_bits),
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
                    g.field.push(pb::GenericField { name: Some("body".into()), str_value: Some(String::from_utf8_lossy(&body).into_owned()), ..Default::default() });
                }
                e.generic = Some(g);
            }
        }
        e
    }

    fn text(pid: i32, name: &'static str, body: &'static str) -> Record<'static> {
        Record { pid, tgid: None, comm: "c", system: "s", name, body: Body::Text(body) }
    }

    /// Every kind of event encodes to the bytes prost writes for it.
    #[test]
    fn events_encode_as_prost_does() {
        let switch = EventFormat::parse("sched", include_bytes!("../synth/formats/sched/sched_switch")).unwrap();
        let mut sw = vec![0u8; 64];
        sw[..2].copy_from_slice(&switch.id.to_le_bytes());
        sw[8..12].copy_from_slice(b"bash");
        sw[24..28].copy_from_slice(&(-3i32).to_le_bytes());
        sw[32..40].copy_from_slice(&0x101u64.to_le_bytes());
        sw[40..45].copy_from_slice(b"kwork");
        sw[56..60].copy_from_slice(&77i32.to_le_bytes());
        let arr = EventFormat::parse(
            "t",
            b"name: arr\nID: 9\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:unsigned char raw[4];\toffset:8;\tsize:4;\tsigned:0;\n\tfield:s64 v;\toffset:16;\tsize:8;\tsigned:1;\n\nprint fmt: \"v=%lld\", REC->v\n",
        )
        .unwrap();
        let mut ar = vec![0u8; 24];
        ar[..2].copy_from_slice(&9u16.to_le_bytes());
        ar[8..12].copy_from_slice(&[0xff, 0x00, 0x7f, 0x80]);
        ar[16..24].copy_from_slice(&(-9i64).to_le_bytes());
        let ctx = RenderCtx { endian: Endian::Little, long_size: 8, cpu: 0, kallsyms: None, printk: None, state: None, plugins: true };
        let raw = |format, data| Record { pid: 5, tgid: None, comm: "c", system: "s", name: "", body: Body::Raw { format, data, ctx: &ctx } };
        let records = [
            text(-1, "sched_switch", "prev_comm=bash prev_pid=4613 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=77 next_prio=-2"),
            text(7, "sched_waking", "comm=migration/1 pid=21 prio=0 target_cpu=001"),
            text(7, "kvm_write_tsc_offset", "vcpu=1 prev=-5 next=18446744073709551615 name=abc"),
            text(0, "print", "tracing_mark_write: no pairs here"),
            Record { name: "sched_switch", ..raw(&switch, &sw) },
            Record { name: "arr", ..raw(&arr, &ar) },
        ];
        let mut s = Scratch::default();
        for (i, r) in records.iter().enumerate() {
            let ns = 1 << (7 * i);
            let mut ours = Vec::new();
            encode_event(r, ns, &mut s, &mut ours);
            let mut want = Vec::new();
            prost::encoding::message::encode(2, &prost_event(r, ns), &mut want);
            assert_eq!(ours, want, "record {i} ({})", r.name);
        }
    }
}
