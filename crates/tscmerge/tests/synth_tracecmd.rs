//! trace-cmd host-guest pairs written from synth ground truth (host: GUEST
//! options and kvm_entry/kvm_exit, no offset writes; guests: TRACEID,
//! TIME_SHIFT, TSC2NSEC), merged with no flag at all: each guest found by
//! its trace id, named after its GUEST option, its offsets from TIME_SHIFT,
//! its vCPU threads from the GUEST map. Every guest event must land at its
//! true host TSC, and the check must find every one inside its vCPU
//! thread's run windows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ftrace::write::Compression;
use tscmerge::check::CheckSink;
use tscmerge::clock::{Origin, Scaling};
use tscmerge::merge::{merge, Sink};
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};
use tscmerge::synth::{write_tracecmd_pair, PairConfig, Sampling, SynthConfig};
use tscmerge::{EventView, Payload};

#[path = "truth_util.rs"]
mod truth_util;
use truth_util::truth;

#[derive(Default)]
struct Collect {
    per_cpu: BTreeMap<(usize, u32), Vec<u64>>,
}

impl Sink for Collect {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> tscmerge::Result<()> {
        if let Payload::Event(_) = ev.payload {
            self.per_cpu.entry((machine, ev.cpu)).or_default().push(ev.ts);
        }
        Ok(())
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-tracecmd-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the pair, merges it as `tscmerge merge host.dat --guest guest-vmN.dat`
/// would, and compares with the truth; returns the plan's notes.
fn run(name: &str, cfg: &SynthConfig, sampling: Sampling) -> Vec<String> {
    let dir = tempdir(name);
    let sum = write_tracecmd_pair(cfg, &PairConfig { sampling, ..Default::default() }, &dir, Compression::Zstd).unwrap();
    assert_eq!(sum.offset_writes, 0);
    // Given in reverse, unnamed: the trace ids, not the order, tie them.
    let guests = (0..cfg.vms.len()).rev().map(|vm| GuestSpec { files: vec![dir.join(format!("guest-vm{vm}.dat"))], ..Default::default() }).collect();
    let plan = Plan::new(MergeSpec { hosts: vec![dir.join("host.dat")], guests, ..Default::default() }).unwrap();
    assert!(plan.timeline.anomalies.is_empty());
    let mut machine_of = BTreeMap::new();
    for (gi, g) in plan.guests.iter().enumerate() {
        let vm: usize = g.spec.name.trim_start_matches("vm").parse().unwrap_or_else(|_| panic!("named {:?}", g.spec.name));
        assert_eq!(plan.timeline.vms[g.vm].guest_option.as_ref().unwrap().name, g.spec.name);
        assert!(g.reason.contains("trace id"), "{}", g.reason);
        for t in plan.timeline.vms[g.vm].vcpus.values() {
            assert!(t.periods.iter().all(|p| p.origin == Origin::TimeShift));
        }
        machine_of.insert(format!("vm{vm}"), gi + 1);
    }
    let mut sink = Collect::default();
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let scaling = cfg.scaling;
    let mut checked = 0u64;
    for ((vm, cpu), want) in truth(&dir) {
        let got = &sink.per_cpu[&(machine_of[&vm], cpu)];
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match scaling {
                // A slower guest's tick spans several host cycles: the first of them.
                Some(s) if (s.ratio as u128) < (1u128 << s.frac_bits) => {
                    let tick = ((1u128 << s.frac_bits) / s.ratio as u128 + 1) as u64;
                    assert!(g <= w && w - g < tick, "{name}: {vm} cpu {cpu} event #{i}: merged at {g}, truth {w}");
                }
                _ => assert_eq!(g, w, "{name}: {vm} cpu {cpu} event #{i}: merged at {g}, truth {w}"),
            }
        }
        checked += want.len() as u64;
    }
    assert_eq!(checked, sum.guest_events.iter().sum::<u64>());
    // The check: the GUEST map names every vCPU's thread; all inside.
    let mut cs = CheckSink::new(plan.check_config(), None);
    merge(plan.cursors().unwrap(), &mut cs).unwrap();
    let r = cs.report();
    assert_eq!((r.guest_events, r.inside), (checked, checked), "{name}: check");
    assert!(r.cpus.iter().all(|c| c.thread.is_some() && !c.inferred), "{name}: threads from the GUEST map");
    std::fs::remove_dir_all(&dir).ok();
    plan.notes.clone()
}

#[test]
fn constant_offsets_start_end_samples_one_and_four_vcpus() {
    let cfg = SynthConfig { seed: 3, vms: vec![1, 4], windows: 150, tsc_write_every: 0, ..Default::default() };
    assert!(run("const", &cfg, Sampling::StartEnd).is_empty());
}

#[test]
fn rising_and_falling_offsets_sampled_at_each_change() {
    for seed in 1..=3 {
        let cfg = SynthConfig { seed, vms: vec![1, 4], windows: 150, tsc_write_every: 7, ..Default::default() };
        run(&format!("changes{seed}"), &cfg, Sampling::Changes { every: 0 });
    }
}

#[test]
fn many_samples() {
    let cfg = SynthConfig { seed: 5, vms: vec![4], windows: 300, tsc_write_every: 11, ..Default::default() };
    run("many", &cfg, Sampling::Changes { every: 3 });
}

#[test]
fn scaling_from_time_shift() {
    // 1.5x (AMD, frac 32: exact) and 0.75x (Intel, frac 48: within a tick).
    for (i, s) in [Scaling { ratio: 3 << 31, frac_bits: 32 }, Scaling { ratio: 3 << 46, frac_bits: 48 }].into_iter().enumerate() {
        let cfg = SynthConfig { seed: 9, vms: vec![1, 4], windows: 100, tsc_write_every: 9, scaling: Some(s), ..Default::default() };
        run(&format!("scaled{i}"), &cfg, Sampling::Changes { every: 0 });
    }
}
