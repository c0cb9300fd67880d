//! `tscmerge explain` against synth's ground truth (`synth --host-story`:
//! exits with reasons, halts, preemptions by named host tasks; the model's
//! own totals in truth-states.tsv): every vCPU's cycles per state and its
//! exits per reason and guest task, and the host IRQs on its CPU (over the
//! recording and inside the stalls), to the cycle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn tscmerge(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    assert!(out.status.success(), "tscmerge {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-explain-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

type States = BTreeMap<(String, u64), BTreeMap<String, u64>>;
type Exits = BTreeMap<(String, u64), BTreeMap<(String, String), u64>>;
type Totals = BTreeMap<(String, u64), BTreeMap<String, (u64, u64)>>;

fn truth(text: &str) -> (States, Exits, Totals) {
    let (mut states, mut exits, mut totals) = (States::new(), Exits::new(), Totals::new());
    for l in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let key = (f[0].to_string(), f[1].parse().unwrap());
        let cycles: u64 = f[6].parse().unwrap();
        if f[2] == "irq" || f[2] == "stall-irq" {
            continue; // irq_truth
        } else if f[2] == "state" {
            states.entry(key).or_default().insert(f[3].to_string(), cycles);
        } else if f[2] == "stall" {
            states.entry((format!("stall {}", key.0), key.1)).or_default().insert(f[3].to_string(), cycles);
        } else {
            let count: u64 = f[5].parse().unwrap();
            exits.entry(key.clone()).or_default().insert((f[3].to_string(), f[4].to_string()), count);
            let t = totals.entry(key).or_default().entry(f[3].to_string()).or_default();
            t.0 += count;
            t.1 += cycles;
        }
    }
    (states, exits, totals)
}

fn explained(doc: &Value) -> (States, Exits, Totals) {
    let (mut states, mut exits, mut totals) = (States::new(), Exits::new(), Totals::new());
    for v in doc["vcpus"].as_array().unwrap() {
        let key = (v["machine"].as_str().unwrap().to_string(), v["vcpu"].as_u64().unwrap());
        for s in v["states"].as_array().unwrap() {
            let name = match (s["state"].as_str().unwrap(), s["detail"].as_str()) {
                ("preempted", Some(d)) => format!("preempted by {d}"),
                (st, Some(d)) => format!("{st} {d}"),
                (st, None) => st.to_string(),
            };
            states.entry(key.clone()).or_default().insert(name, s["cycles"].as_u64().unwrap());
        }
        for e in v["exits"].as_array().unwrap() {
            let r = e["reason"].as_str().unwrap().to_string();
            for t in e["guest_tasks"].as_array().unwrap() {
                exits.entry(key.clone()).or_default().insert((r.clone(), t[0].as_str().unwrap().to_string()), t[1].as_u64().unwrap());
            }
            let s = &e["summary"];
            totals.entry(key.clone()).or_default().insert(r, (s["count"].as_u64().unwrap(), s["total"].as_u64().unwrap()));
        }
        assert_eq!(v["total"], doc["length"]);
    }
    for k in doc["stalls"].as_array().unwrap() {
        assert_eq!(k["kind"], "tscmerge-marker..sched_switch");
        for s in k["sums"].as_array().unwrap() {
            let key = (format!("stall {}", s["machine"].as_str().unwrap()), s["cpu"].as_u64().unwrap());
            let b = states.entry(key).or_default();
            let mut sum = 0;
            for x in s["breakdown"].as_array().unwrap() {
                b.insert(x[0].as_str().unwrap().to_string(), x[1].as_u64().unwrap());
                sum += x[1].as_u64().unwrap();
            }
            assert_eq!(sum, s["cycles"].as_u64().unwrap(), "a stall's states sum to its length");
        }
    }
    (states, exits, totals)
}

/// (kind prefix + machine, vCPU) → handler label → (entries, cycles).
type Irqs = BTreeMap<(String, u64), BTreeMap<String, (u64, u64)>>;

fn irq_truth(text: &str) -> Irqs {
    let mut out = Irqs::new();
    for l in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let who = match f[2] {
            "irq" => f[0].to_string(),
            "stall-irq" => format!("stall {}", f[0]),
            _ => continue,
        };
        out.entry((who, f[1].parse().unwrap())).or_default().insert(f[3].to_string(), (f[5].parse().unwrap(), f[6].parse().unwrap()));
    }
    out
}

fn irqs_of(v: &Value) -> BTreeMap<String, (u64, u64)> {
    let label = |t: &Value| format!("{} {} {}", t["kind"].as_str().unwrap(), t["number"], t["name"].as_str().unwrap());
    v.as_array().unwrap().iter().map(|t| (label(t), (t["count"].as_u64().unwrap(), t["cycles"].as_u64().unwrap()))).collect()
}

fn irq_explained(doc: &Value) -> Irqs {
    let mut out = Irqs::new();
    for v in doc["vcpus"].as_array().unwrap() {
        let i = irqs_of(&v["host_irqs"]);
        if !i.is_empty() {
            out.insert((v["machine"].as_str().unwrap().to_string(), v["vcpu"].as_u64().unwrap()), i);
        }
    }
    for k in doc["stalls"].as_array().unwrap() {
        for s in k["sums"].as_array().unwrap() {
            let i = irqs_of(&s["irqs"]);
            if !i.is_empty() {
                out.insert((format!("stall {}", s["machine"].as_str().unwrap()), s["cpu"].as_u64().unwrap()), i);
            }
        }
    }
    out
}

#[test]
fn states_and_exits_equal_the_models_to_the_cycle() {
    let d = tmp("story");
    let ds = d.to_str().unwrap();
    tscmerge(&["synth", "-o", ds, "--host-story", "--vms", "1,2", "--windows", "80", "--seed", "3"]);
    let f = |n: &str| d.join(n).to_str().unwrap().to_string();
    let g0 = format!("vm0={}", f("guest-vm0.txt"));
    let g1 = format!("vm1={}", f("guest-vm1.txt"));
    let json = tscmerge(&["explain", &f("host.txt"), &f("host-tsc_offset.txt"), "--guest", &g0, "--guest", &g1, "--json", "--stall", tscmerge::synth::story::STALL]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    let truth_text = std::fs::read_to_string(d.join("truth-states.tsv")).unwrap();
    let (ts, te, tt) = truth(&truth_text);
    let (os, oe, ot) = explained(&doc);
    assert_eq!(os, ts, "cycles per state, and of the named stalls");
    assert!(ts.keys().any(|k| k.0.starts_with("stall ")), "the truth has stalls");
    assert_eq!(ot, tt, "exits and exit-to-entry cycles per reason");
    assert_eq!(oe, te, "exits per reason and guest task");
    // Host IRQs: per vCPU over the recording and inside the stalls.
    let ti = irq_truth(&truth_text);
    assert_eq!(irq_explained(&doc), ti, "host IRQs per vCPU and per stall");
    let labels: Vec<&String> = ti.values().flat_map(|m| m.keys()).collect();
    for want in ["irq 33 nvme0q3", "irq 41 virtio0-input.0", "softirq 1 TIMER", "softirq 3 NET_RX", "softirq 9 RCU"] {
        assert!(labels.iter().any(|s| *s == want), "no {want} in {labels:?}");
    }
    // Outside the stalls too (after the last exit, cut at the end), and some
    // on the vCPUs' CPUs while their threads slept (not theirs).
    assert!(ti.iter().any(|(k, m)| !k.0.starts_with("stall ") && m != &ti[&(format!("stall {}", k.0), k.1)]));
    let (n, t) = (|v: &Value| v.as_u64().unwrap(), &doc);
    assert_eq!((n(&t["irq_unmatched_exits"]), n(&t["irq_lost_exits"]), n(&t["irq_open_at_end"])), (3, 0, 3), "a stray exit at each vCPU's start, a softirq open at each one's end");
    let theirs: u64 = ti.iter().filter(|(k, _)| !k.0.starts_with("stall ")).flat_map(|(_, m)| m.values()).map(|v| v.0).sum();
    assert!(n(&t["irq_events"]) > 2 * theirs, "the idle task's handlers are in the recording: {} events", t["irq_events"]);
    // The story has every kind of state.
    let all: Vec<&String> = ts.values().flat_map(|m| m.keys()).collect();
    for want in ["guest", "halted", "exit HLT", "exit CPUID", "preempted by stress-ng-700", "unknown"] {
        assert!(all.iter().any(|s| *s == want), "no {want} in {all:?}");
    }
    assert!(all.iter().any(|s| s.starts_with("preempted by kworker/")) && all.iter().any(|s| s.starts_with("preempted by swapper/")));
    assert_eq!(doc["vcpus"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&d);
}

/// Per track name: cycles per slice name (the tracks' own sums), and the
/// last counter value, from the packets' decoded fields.
type Tracks = (BTreeMap<String, BTreeMap<String, u64>>, BTreeMap<String, i64>);

fn sum_tracks(packets: impl Iterator<Item = (Option<u64>, Option<(u64, String)>, Option<(i32, u64, Option<String>, Option<i64>)>)>) -> Tracks {
    let (mut names, mut open) = (BTreeMap::new(), BTreeMap::<u64, (u64, String)>::new());
    let (mut slices, mut counters): Tracks = Default::default();
    for (ts, desc, ev) in packets {
        if let Some((uuid, name)) = desc {
            names.insert(uuid, name);
        }
        let Some((ty, uuid, name, value)) = ev else { continue };
        let ts = ts.unwrap();
        let Some(track) = names.get(&uuid).cloned() else { continue };
        match ty {
            1 => assert!(open.insert(uuid, (ts, name.unwrap())).is_none(), "slices on {track} overlap"),
            2 => {
                let (t0, n) = open.remove(&uuid).unwrap();
                *slices.entry(track).or_default().entry(n).or_default() += ts - t0;
            }
            4 => {
                counters.insert(track, value.unwrap());
            }
            _ => {}
        }
    }
    assert!(open.is_empty());
    (slices, counters)
}

#[test]
fn perfetto_state_slices_tile_the_recording_and_equal_the_truth() {
    use prost::Message;
    use tscmerge::sink::perfetto_proto as pb;
    let d = tmp("perfetto");
    let ds = d.to_str().unwrap();
    tscmerge(&["synth", "-o", ds, "--host-story", "--vms", "1,2", "--windows", "60", "--seed", "5"]);
    let f = |n: &str| d.join(n).to_str().unwrap().to_string();
    let (g0, g1) = (format!("vm0={}", f("guest-vm0.txt")), format!("vm1={}", f("guest-vm1.txt")));
    let out = f("m.pftrace");
    // 1 GHz: nanoseconds are cycles, so slices compare with the truth exactly.
    let common = [f("host.txt"), f("host-tsc_offset.txt"), "--guest".into(), g0, "--guest".into(), g1, "--tsc-khz".into(), "1000000".into()];
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(common.iter().map(String::as_str));
    args.extend(["--format", "perfetto", "--vcpu-states", "-o", &out]);
    tscmerge(&args);
    let truth_text = std::fs::read_to_string(d.join("truth-states.tsv")).unwrap();
    let (mut ts, _, _) = truth(&truth_text);
    ts.retain(|k, _| !k.0.starts_with("stall "));
    let range = truth_text.lines().next().unwrap().strip_prefix("# host recording ").unwrap().split_once("..").unwrap();
    let length = range.1.parse::<u64>().unwrap() - range.0.parse::<u64>().unwrap();

    let check = |(slices, counters): &Tracks, who: &str| {
        assert_eq!(slices.keys().filter(|k| k.ends_with(" state")).count(), 3, "{who}: a state track per vCPU: {:?}", slices.keys());
        // Beside the run windows' tracks.
        assert!(slices.contains_key("vm1 vCPU 1"), "{who}: {:?}", slices.keys());
        for ((vm, vcpu), states) in &ts {
            let track = format!("{vm} vCPU {vcpu} state");
            let got = &slices[&track];
            assert_eq!(got.values().sum::<u64>(), length, "{who}: {track} tiles the recording");
            assert_eq!(got, states, "{who}: {track}");
            let steal: u64 = states.iter().filter(|(k, _)| k.starts_with("preempted")).map(|(_, v)| v).sum();
            assert_eq!(counters[&format!("{vm} vCPU {vcpu} steal")], steal as i64, "{who}: steal of {track}");
        }
    };

    // Our prost structs (their field numbers are checked against Perfetto's descriptor).
    let trace = pb::Trace::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let ours = sum_tracks(trace.packet.into_iter().map(|p| {
        let desc = p.track_descriptor.and_then(|d| Some((d.uuid?, d.name?)));
        let ev = p.track_event.and_then(|e| Some((e.r#type?, e.track_uuid?, e.name, e.counter_value)));
        (p.timestamp, desc, ev)
    }));
    check(&ours, "prost");

    // Perfetto's own generated classes.
    let script = "from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as m\nimport sys, json\nt = m.Trace()\nt.ParseFromString(open(sys.argv[1], 'rb').read())\nout = []\nfor p in t.packet:\n    d = [p.track_descriptor.uuid, p.track_descriptor.name] if p.HasField('track_descriptor') else None\n    e = [p.track_event.type, p.track_event.track_uuid, p.track_event.name if p.track_event.HasField('name') else None, p.track_event.counter_value if p.track_event.HasField('counter_value') else None] if p.HasField('track_event') else None\n    out.append([p.timestamp if p.HasField('timestamp') else None, d, e])\nprint(json.dumps(out))\n";
    let py = Command::new("python3").arg("-c").arg(script).arg(&out).output();
    match py {
        Ok(o) if o.status.success() => {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            let theirs = sum_tracks(v.as_array().unwrap().iter().map(|p| {
                let desc = p[1].as_array().map(|d| (d[0].as_u64().unwrap(), d[1].as_str().unwrap().to_string()));
                let ev = p[2].as_array().map(|e| (e[0].as_i64().unwrap() as i32, e[1].as_u64().unwrap(), e[2].as_str().map(str::to_string), e[3].as_i64()));
                (p[0].as_u64(), desc, ev)
            }));
            check(&theirs, "perfetto_trace_pb2");
        }
        other => eprintln!("SKIPPED: decoding with Perfetto's own classes (pip install perfetto protobuf): {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}
