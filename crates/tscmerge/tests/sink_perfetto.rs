//! The Perfetto sink against Perfetto's own protos, from the PyPI package
//! `perfetto` (`pip install perfetto protobuf`; it ships
//! perfetto/protos/perfetto/trace/perfetto_trace_pb2.py):
//! 1. every (message, field, number, type) we declare matches its descriptor;
//! 2. our output decodes with the Python classes and with our prost structs,
//!    with the events of the text merge per machine and CPU, in order, at
//!    the same times, plus a named machine per guest and vCPU run slices.
//!
//! Skips loudly without python3 or the package.

#[path = "sink_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::process::Command;

use prost::Message;
use tscmerge::merge::merge;
use tscmerge::sink::perfetto_proto::{self as pb, FIELDS};
use tscmerge::sink::{tsc_to_ns, PerfettoSink};
use util::*;

const KHZ: u64 = 2_100_000;

fn python(script: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ModuleNotFoundError") {
            return None;
        }
        panic!("python failed: {err}");
    }
    Some(String::from_utf8(out.stdout).unwrap())
}

const PB2: &str = "from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as m\n";

fn skip(what: &str) {
    eprintln!("SKIPPED: {what}: python3 with the perfetto and protobuf packages is needed (pip install perfetto protobuf)");
}

#[test]
fn field_numbers_match_perfettos_descriptor() {
    let script = format!(
        "{PB2}import sys
names = {{11: None, 14: None, 1: 'double', 2: 'float', 3: 'int64', 4: 'uint64', 5: 'int32', 8: 'bool', 9: 'string', 12: 'bytes', 13: 'uint32', 17: 'sint32', 18: 'sint64'}}
for line in sys.stdin.read().splitlines():
    msg, field = line.split()
    d = m.DESCRIPTOR.message_types_by_name[msg.split('.')[0]]
    for part in msg.split('.')[1:]:
        d = d.nested_types_by_name[part]
    f = d.fields_by_name.get(field)
    if f is None:
        print(msg, field, 'MISSING', '-'); continue
    t = f.message_type.name if f.message_type else (f.enum_type.name if f.enum_type else names.get(f.type, str(f.type)))
    print(msg, field, f.number, t)
"
    );
    let input: String = FIELDS.iter().map(|f| format!("{} {}\n", f.0, f.1)).collect();
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return skip("field numbers"),
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ModuleNotFoundError") {
            return skip("field numbers");
        }
        panic!("{err}");
    }
    let got: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    let want: Vec<String> = FIELDS.iter().map(|f| format!("{} {} {} {}", f.0, f.1, f.2, f.3)).collect();
    assert_eq!(got, want);
}

/// (machine, cpu) → [(ns, event name)] of the text merge.
fn reference(plan: &tscmerge::plan::Plan) -> BTreeMap<(u32, u32), Vec<(u64, String)>> {
    let machines = plan.machines();
    let mut m: BTreeMap<(u32, u32), Vec<(u64, String)>> = BTreeMap::new();
    for l in text_merge(plan) {
        let l = parse_line(&l).unwrap();
        let mi = machines.iter().position(|x| *x == l.machine).unwrap() as u32;
        m.entry((mi, l.cpu)).or_default().push((tsc_to_ns(l.ts, KHZ), l.name));
    }
    m
}

#[test]
fn output_decodes_with_perfettos_classes_and_ours() {
    let dir = tempdir("perfetto");
    let plan = plan(&dir);
    let want = reference(&plan);
    let path = dir.join("merged.pftrace");
    let mut sink = PerfettoSink::new(Vec::new(), &plan.machines(), tscmerge::sink::HostNs::Khz(KHZ), vcpu_threads(&plan), "mem").unwrap();
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let slices = sink.counts.2;
    let bytes = sink.into_inner();
    std::fs::write(&path, &bytes).unwrap();

    // Our structs.
    let trace = pb::Trace::decode(bytes.as_slice()).unwrap();
    let mut ours: BTreeMap<(u32, u32), Vec<(u64, String)>> = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut tracks = Vec::new();
    for p in &trace.packet {
        let m = p.machine_id.unwrap_or(0);
        if let Some(si) = &p.system_info {
            names.insert(m, si.machine_name.clone().unwrap());
        }
        if let Some(td) = &p.track_descriptor {
            tracks.push(td.name.clone().unwrap());
        }
        if let Some(b) = &p.ftrace_events {
            assert!(b.event.len() <= tscmerge::sink::perfetto::BUNDLE_EVENTS);
            for e in &b.event {
                let name = if e.sched_switch.is_some() {
                    "sched_switch".to_string()
                } else {
                    e.generic.as_ref().unwrap().event_name.clone().unwrap()
                };
                ours.entry((m, b.cpu.unwrap())).or_default().push((e.timestamp.unwrap(), name));
            }
        }
    }
    assert_eq!(ours, want, "prost decode: events per machine and CPU");
    assert_eq!(names.values().cloned().collect::<Vec<_>>(), plan.machines());
    assert!(slices > 10, "vCPU run windows as slices: {slices}");
    assert!(tracks.contains(&"vm0 vCPU 1".to_string()) && tracks.contains(&"vm1 vCPU 0".to_string()), "{tracks:?}");

    // Perfetto's generated classes.
    let script = format!(
        "{PB2}import sys
t = m.Trace()
t.ParseFromString(open(sys.argv[1], 'rb').read())
slices = 0
for p in t.packet:
    mid = p.machine_id if p.HasField('machine_id') else 0
    if p.HasField('system_info'):
        print('M', mid, p.system_info.machine_name)
    if p.HasField('track_event') and p.track_event.type == 1:
        slices += 1
    if p.HasField('ftrace_events'):
        b = p.ftrace_events
        for e in b.event:
            kind = e.WhichOneof('event')
            name = e.generic.event_name if kind == 'generic' else kind
            if kind == 'sched_switch':
                assert e.sched_switch.next_comm != ''
            print('E', mid, b.cpu, e.timestamp, name)
print('S', slices)
"
    );
    let Some(out) = python(&script, &[path.to_str().unwrap()]) else { return skip("decode with Perfetto's classes") };
    let mut theirs: BTreeMap<(u32, u32), Vec<(u64, String)>> = BTreeMap::new();
    let mut their_names = Vec::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        match f[0] {
            "E" => theirs.entry((f[1].parse().unwrap(), f[2].parse().unwrap())).or_default().push((f[3].parse().unwrap(), f[4].to_string())),
            "M" => their_names.push(f[2].to_string()),
            "S" => assert_eq!(f[1].parse::<u64>().unwrap(), slices),
            _ => panic!("{l}"),
        }
    }
    assert_eq!(theirs, want, "python decode: events per machine and CPU");
    assert_eq!(their_names, plan.machines());
}
