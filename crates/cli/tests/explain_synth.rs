//! `tscmerge explain` against synth's ground truth (`synth --host-story`:
//! exits with reasons, halts, preemptions by named host tasks; the model's
//! own totals in truth-states.tsv): every vCPU's cycles per state and its
//! exits per reason and guest task, to the cycle.

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
        if f[2] == "state" {
            states.entry(key).or_default().insert(f[3].to_string(), cycles);
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
    (states, exits, totals)
}

#[test]
fn states_and_exits_equal_the_models_to_the_cycle() {
    let d = tmp("story");
    let ds = d.to_str().unwrap();
    tscmerge(&["synth", "-o", ds, "--host-story", "--vms", "1,2", "--windows", "80", "--seed", "3"]);
    let f = |n: &str| d.join(n).to_str().unwrap().to_string();
    let g0 = format!("vm0={}", f("guest-vm0.txt"));
    let g1 = format!("vm1={}", f("guest-vm1.txt"));
    let json = tscmerge(&["explain", &f("host.txt"), &f("host-tsc_offset.txt"), "--guest", &g0, "--guest", &g1, "--json"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    let truth_text = std::fs::read_to_string(d.join("truth-states.tsv")).unwrap();
    let (ts, te, tt) = truth(&truth_text);
    let (os, oe, ot) = explained(&doc);
    assert_eq!(os, ts, "cycles per state");
    assert_eq!(ot, tt, "exits and exit-to-entry cycles per reason");
    assert_eq!(oe, te, "exits per reason and guest task");
    // The story has every kind of state.
    let all: Vec<&String> = ts.values().flat_map(|m| m.keys()).collect();
    for want in ["guest", "halted", "exit HLT", "exit CPUID", "preempted by stress-ng-700", "unknown"] {
        assert!(all.iter().any(|s| *s == want), "no {want} in {all:?}");
    }
    assert!(all.iter().any(|s| s.starts_with("preempted by kworker/")) && all.iter().any(|s| s.starts_with("preempted by swapper/")));
    assert_eq!(doc["vcpus"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&d);
}
