//! The subset of Perfetto's trace protos that [`super::perfetto`] writes,
//! written by hand as prost messages (no protoc at build time).
//!
//! Numbers and types come from Perfetto's protos/perfetto/trace/**
//! (`trace.proto`, `trace_packet.proto`, `ftrace/ftrace_event_bundle.proto`,
//! `ftrace/ftrace_event.proto`, `ftrace/sched.proto`, `ftrace/generic.proto`,
//! `track_event/track_descriptor.proto`, `track_event/track_event.proto`,
//! `system_info.proto`). [`FIELDS`] lists every field declared here;
//! tests/sink_perfetto.rs compares it with the descriptor in the `perfetto`
//! Python package, and a unit test below checks that the structs encode as
//! [`FIELDS`] says. Oneof members of TracePacket and FtraceEvent are plain
//! optional fields here: the wire format is the same.

/// `(message, field, number, proto type)` of every field below.
pub const FIELDS: &[(&str, &str, u32, &str)] = &[
    ("Trace", "packet", 1, "TracePacket"),
    ("TracePacket", "timestamp", 8, "uint64"),
    ("TracePacket", "timestamp_clock_id", 58, "uint32"),
    ("TracePacket", "trusted_packet_sequence_id", 10, "uint32"),
    ("TracePacket", "sequence_flags", 13, "uint32"),
    ("TracePacket", "incremental_state_cleared", 41, "bool"),
    ("TracePacket", "first_packet_on_sequence", 87, "bool"),
    ("TracePacket", "machine_id", 98, "uint32"),
    ("TracePacket", "ftrace_events", 1, "FtraceEventBundle"),
    ("TracePacket", "track_event", 11, "TrackEvent"),
    ("TracePacket", "track_descriptor", 60, "TrackDescriptor"),
    ("TracePacket", "system_info", 45, "SystemInfo"),
    ("SystemInfo", "utsname", 1, "Utsname"),
    ("SystemInfo", "num_cpus", 8, "uint32"),
    ("SystemInfo", "machine_name", 17, "string"),
    ("Utsname", "sysname", 1, "string"),
    ("Utsname", "version", 2, "string"),
    ("Utsname", "release", 3, "string"),
    ("Utsname", "machine", 4, "string"),
    ("FtraceEventBundle", "cpu", 1, "uint32"),
    ("FtraceEventBundle", "event", 2, "FtraceEvent"),
    ("FtraceEventBundle", "lost_events", 3, "bool"),
    ("FtraceEvent", "timestamp", 1, "uint64"),
    ("FtraceEvent", "pid", 2, "uint32"),
    ("FtraceEvent", "sched_switch", 4, "SchedSwitchFtraceEvent"),
    ("FtraceEvent", "sched_waking", 20, "SchedWakingFtraceEvent"),
    ("FtraceEvent", "generic", 327, "GenericFtraceEvent"),
    ("SchedSwitchFtraceEvent", "prev_comm", 1, "string"),
    ("SchedSwitchFtraceEvent", "prev_pid", 2, "int32"),
    ("SchedSwitchFtraceEvent", "prev_prio", 3, "int32"),
    ("SchedSwitchFtraceEvent", "prev_state", 4, "int64"),
    ("SchedSwitchFtraceEvent", "next_comm", 5, "string"),
    ("SchedSwitchFtraceEvent", "next_pid", 6, "int32"),
    ("SchedSwitchFtraceEvent", "next_prio", 7, "int32"),
    ("SchedWakingFtraceEvent", "comm", 1, "string"),
    ("SchedWakingFtraceEvent", "pid", 2, "int32"),
    ("SchedWakingFtraceEvent", "prio", 3, "int32"),
    ("SchedWakingFtraceEvent", "success", 4, "int32"),
    ("SchedWakingFtraceEvent", "target_cpu", 5, "int32"),
    ("GenericFtraceEvent", "event_name", 1, "string"),
    ("GenericFtraceEvent", "field", 2, "Field"),
    ("GenericFtraceEvent.Field", "name", 1, "string"),
    ("GenericFtraceEvent.Field", "str_value", 3, "string"),
    ("GenericFtraceEvent.Field", "int_value", 4, "int64"),
    ("GenericFtraceEvent.Field", "uint_value", 5, "uint64"),
    ("TrackDescriptor", "uuid", 1, "uint64"),
    ("TrackDescriptor", "name", 2, "string"),
    ("TrackDescriptor", "parent_uuid", 5, "uint64"),
    ("TrackDescriptor", "process", 3, "ProcessDescriptor"),
    ("TrackDescriptor", "counter", 8, "CounterDescriptor"),
    ("CounterDescriptor", "unit", 3, "Unit"),
    ("ProcessDescriptor", "pid", 1, "int32"),
    ("ProcessDescriptor", "process_name", 6, "string"),
    ("TrackEvent", "type", 9, "Type"),
    ("TrackEvent", "track_uuid", 11, "uint64"),
    ("TrackEvent", "name", 23, "string"),
    ("TrackEvent", "categories", 22, "string"),
    ("TrackEvent", "counter_value", 30, "int64"),
];

#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "58")]
    pub timestamp_clock_id: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(bool, optional, tag = "41")]
    pub incremental_state_cleared: Option<bool>,
    #[prost(bool, optional, tag = "87")]
    pub first_packet_on_sequence: Option<bool>,
    /// The machine the packet comes from; absent for the host (Perfetto's
    /// multi-machine tracing: `TracePacket.machine_id`).
    #[prost(uint32, optional, tag = "98")]
    pub machine_id: Option<u32>,
    #[prost(message, optional, tag = "1")]
    pub ftrace_events: Option<FtraceEventBundle>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
    #[prost(message, optional, tag = "45")]
    pub system_info: Option<SystemInfo>,
}

/// `TracePacket.sequence_flags` values (trace_packet.proto `SequenceFlags`).
pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
pub const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SystemInfo {
    #[prost(message, optional, tag = "1")]
    pub utsname: Option<Utsname>,
    #[prost(uint32, optional, tag = "8")]
    pub num_cpus: Option<u32>,
    #[prost(string, optional, tag = "17")]
    pub machine_name: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Utsname {
    #[prost(string, optional, tag = "1")]
    pub sysname: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub version: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub release: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub machine: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FtraceEventBundle {
    #[prost(uint32, optional, tag = "1")]
    pub cpu: Option<u32>,
    #[prost(message, repeated, tag = "2")]
    pub event: Vec<FtraceEvent>,
    #[prost(bool, optional, tag = "3")]
    pub lost_events: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FtraceEvent {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "2")]
    pub pid: Option<u32>,
    #[prost(message, optional, tag = "4")]
    pub sched_switch: Option<SchedSwitchFtraceEvent>,
    #[prost(message, optional, tag = "20")]
    pub sched_waking: Option<SchedWakingFtraceEvent>,
    #[prost(message, optional, tag = "327")]
    pub generic: Option<GenericFtraceEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SchedSwitchFtraceEvent {
    #[prost(string, optional, tag = "1")]
    pub prev_comm: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub prev_pid: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub prev_prio: Option<i32>,
    #[prost(int64, optional, tag = "4")]
    pub prev_state: Option<i64>,
    #[prost(string, optional, tag = "5")]
    pub next_comm: Option<String>,
    #[prost(int32, optional, tag = "6")]
    pub next_pid: Option<i32>,
    #[prost(int32, optional, tag = "7")]
    pub next_prio: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SchedWakingFtraceEvent {
    #[prost(string, optional, tag = "1")]
    pub comm: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub prio: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub success: Option<i32>,
    #[prost(int32, optional, tag = "5")]
    pub target_cpu: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GenericFtraceEvent {
    #[prost(string, optional, tag = "1")]
    pub event_name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    pub field: Vec<GenericField>,
}

/// `GenericFtraceEvent.Field`; the value is a oneof of the three.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GenericField {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub str_value: Option<String>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(uint64, optional, tag = "5")]
    pub uint_value: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    /// Makes the track a counter track.
    #[prost(message, optional, tag = "8")]
    pub counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CounterDescriptor {
    /// [`UNIT_TIME_NS`], ...
    #[prost(int32, optional, tag = "3")]
    pub unit: Option<i32>,
}

pub const UNIT_TIME_NS: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// `TrackEvent.Type` values.
pub const TYPE_SLICE_BEGIN: i32 = 1;
pub const TYPE_SLICE_END: i32 = 2;
pub const TYPE_INSTANT: i32 = 3;
pub const TYPE_COUNTER: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackEvent {
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
    /// The value of a `TYPE_COUNTER` event.
    #[prost(int64, optional, tag = "30")]
    pub counter_value: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::BTreeSet;

    /// Top-level (tag, wire type) pairs of an encoded message.
    fn tags(buf: &[u8]) -> BTreeSet<(u32, u8)> {
        let mut out = BTreeSet::new();
        let mut b = buf;
        while !b.is_empty() {
            let key = prost::encoding::decode_varint(&mut b).unwrap();
            let (tag, wt) = ((key >> 3) as u32, (key & 7) as u8);
            match wt {
                0 => {
                    prost::encoding::decode_varint(&mut b).unwrap();
                }
                2 => {
                    let n = prost::encoding::decode_varint(&mut b).unwrap() as usize;
                    b = &b[n..];
                }
                1 => b = &b[8..],
                5 => b = &b[4..],
                _ => panic!("wire type {wt}"),
            }
            out.insert((tag, wt));
        }
        out
    }

    fn wire(ty: &str) -> u8 {
        match ty {
            "uint64" | "uint32" | "int32" | "int64" | "bool" | "Type" | "Unit" => 0,
            _ => 2,
        }
    }

    fn expect(msg: &str) -> BTreeSet<(u32, u8)> {
        FIELDS.iter().filter(|f| f.0 == msg).map(|f| (f.2, wire(f.3))).collect()
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    /// Every struct, with every field set, encodes exactly the tags FIELDS lists.
    #[test]
    fn structs_match_field_table() {
        let field = GenericField { name: s("a"), str_value: s("b"), int_value: Some(-1), uint_value: Some(1) };
        let generic = GenericFtraceEvent { event_name: s("e"), field: vec![field.clone()] };
        let sw = SchedSwitchFtraceEvent {
            prev_comm: s("a"),
            prev_pid: Some(1),
            prev_prio: Some(2),
            prev_state: Some(3),
            next_comm: s("b"),
            next_pid: Some(4),
            next_prio: Some(5),
        };
        let wk = SchedWakingFtraceEvent { comm: s("c"), pid: Some(1), prio: Some(2), success: Some(1), target_cpu: Some(3) };
        let ev = FtraceEvent { timestamp: Some(1), pid: Some(2), sched_switch: Some(sw.clone()), sched_waking: Some(wk.clone()), generic: Some(generic.clone()) };
        let bundle = FtraceEventBundle { cpu: Some(1), event: vec![ev.clone()], lost_events: Some(true) };
        let proc_ = ProcessDescriptor { pid: Some(1), process_name: s("p") };
        let cd = CounterDescriptor { unit: Some(UNIT_TIME_NS) };
        let td = TrackDescriptor { uuid: Some(1), name: s("t"), parent_uuid: Some(2), process: Some(proc_.clone()), counter: Some(cd.clone()) };
        let te = TrackEvent { r#type: Some(1), track_uuid: Some(1), name: s("n"), categories: vec!["c".into()], counter_value: Some(-3) };
        let uts = Utsname { sysname: s("Linux"), version: s("v"), release: s("r"), machine: s("x86_64") };
        let si = SystemInfo { utsname: Some(uts.clone()), num_cpus: Some(2), machine_name: s("vm0") };
        let pkt = TracePacket {
            timestamp: Some(1),
            timestamp_clock_id: Some(6),
            trusted_packet_sequence_id: Some(1),
            sequence_flags: Some(1),
            incremental_state_cleared: Some(true),
            first_packet_on_sequence: Some(true),
            machine_id: Some(1),
            ftrace_events: Some(bundle.clone()),
            track_event: Some(te.clone()),
            track_descriptor: Some(td.clone()),
            system_info: Some(si.clone()),
        };
        let trace = Trace { packet: vec![pkt.clone()] };
        assert_eq!(tags(&field.encode_to_vec()), expect("GenericFtraceEvent.Field"));
        assert_eq!(tags(&generic.encode_to_vec()), expect("GenericFtraceEvent"));
        assert_eq!(tags(&sw.encode_to_vec()), expect("SchedSwitchFtraceEvent"));
        assert_eq!(tags(&wk.encode_to_vec()), expect("SchedWakingFtraceEvent"));
        assert_eq!(tags(&ev.encode_to_vec()), expect("FtraceEvent"));
        assert_eq!(tags(&bundle.encode_to_vec()), expect("FtraceEventBundle"));
        assert_eq!(tags(&proc_.encode_to_vec()), expect("ProcessDescriptor"));
        assert_eq!(tags(&td.encode_to_vec()), expect("TrackDescriptor"));
        assert_eq!(tags(&cd.encode_to_vec()), expect("CounterDescriptor"));
        assert_eq!(tags(&te.encode_to_vec()), expect("TrackEvent"));
        assert_eq!(tags(&uts.encode_to_vec()), expect("Utsname"));
        assert_eq!(tags(&si.encode_to_vec()), expect("SystemInfo"));
        assert_eq!(tags(&pkt.encode_to_vec()), expect("TracePacket"));
        assert_eq!(tags(&trace.encode_to_vec()), expect("Trace"));
    }
}
