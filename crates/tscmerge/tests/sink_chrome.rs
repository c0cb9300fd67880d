//! The Chrome trace event sink: the output parses as JSON (serde_json and,
//! when present, Python's json) and holds one instant per merged event,
//! per machine (pid) and CPU (tid), in order, plus metadata and run windows.

#[path = "sink_util.rs"]
mod util;

use std::collections::BTreeMap;

use tscmerge::merge::merge;
use tscmerge::sink::{tsc_to_ns, ChromeSink};
use util::*;

const KHZ: u64 = 3_000_000;

#[test]
fn one_entry_per_event() {
    let dir = tempdir("chrome");
    let plan = plan(&dir);
    let machines = plan.machines();
    let mut want: BTreeMap<(u64, u64), Vec<(u64, String)>> = BTreeMap::new();
    let lines = text_merge(&plan);
    for l in &lines {
        let l = parse_line(l).unwrap();
        let m = machines.iter().position(|x| *x == l.machine).unwrap() as u64;
        let ns = tsc_to_ns(l.ts, KHZ);
        want.entry((m, l.cpu as u64)).or_default().push((ns, l.name));
    }
    let mut sink = ChromeSink::new(Vec::new(), machines.clone(), tscmerge::sink::HostNs::Khz(KHZ), vcpu_threads(&plan), "mem").unwrap();
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let (events, meta, runs) = sink.counts;
    let text = String::from_utf8(sink.into_inner()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["displayTimeUnit"], "ns");
    let entries = v["traceEvents"].as_array().unwrap();
    assert_eq!(entries.len() as u64, events + meta + runs);
    assert_eq!(events as usize, lines.len());
    let mut got: BTreeMap<(u64, u64), Vec<(u64, String)>> = BTreeMap::new();
    let mut procs = Vec::new();
    for e in entries {
        match e["ph"].as_str().unwrap() {
            "i" => {
                let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
                // µs with three decimals: back to ns (12 digits: exact in f64).
                let ts = (e["ts"].as_f64().unwrap() * 1000.0).round() as u64;
                got.entry(key).or_default().push((ts, e["name"].as_str().unwrap().to_string()));
            }
            "M" if e["name"] == "process_name" => procs.push(e["args"]["name"].as_str().unwrap().to_string()),
            "M" => {}
            "X" => assert!(e["dur"].as_f64().unwrap() > 0.0 && e["name"].as_str().unwrap().contains(" vCPU ")),
            p => panic!("unexpected ph {p}"),
        }
    }
    assert!(got == want, "instants per machine and CPU differ from the text merge");
    procs.sort();
    let mut m = machines.clone();
    m.sort();
    assert_eq!(procs, m);
    assert!(runs > 10);
    // sched_switch carries its fields as args.
    let sw = entries.iter().find(|e| e["name"] == "sched_switch").unwrap();
    assert!(sw["args"]["next_comm"].is_string() && sw["args"]["prev_pid"].is_u64(), "{sw}");

    if have("python3") {
        let p = dir.join("merged.json");
        std::fs::write(&p, &text).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-c", "import json,sys; d=json.load(open(sys.argv[1])); print(sum(1 for e in d['traceEvents'] if e['ph']=='i'))"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), events.to_string());
    } else {
        eprintln!("SKIPPED: python3 json cross-check (python3 absent)");
    }
}
