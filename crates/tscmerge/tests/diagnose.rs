//! Each diagnosis is produced by a recording made to show it (synth; the
//! PVM one comes from the real micro-VM recording in crates/cli/tests).

use std::path::{Path, PathBuf};

use tscmerge::check::CheckSink;
use tscmerge::clock::Scaling;
use tscmerge::merge::merge;
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};
use tscmerge::synth::{write_text, SynthConfig};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-diag-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Rewrites the offset instance keeping the lines `keep` accepts (by index
/// among the kvm_write_tsc_offset lines).
fn filter_offsets(dir: &Path, keep: impl Fn(usize, &str) -> bool) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("host-tsc_offset.txt")).unwrap();
    let mut n = 0;
    let mut out = String::new();
    for l in text.lines() {
        if l.contains("kvm_write_tsc_offset:") {
            n += 1;
            if !keep(n - 1, l) {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    let p = dir.join("offsets-edited.txt");
    std::fs::write(&p, out).unwrap();
    p
}

fn plan(dir: &Path, offsets: &Path, cfg: &SynthConfig, scaling: Option<Scaling>) -> Plan {
    let guests = GuestSpec::from_synth(cfg, dir, "txt", true);
    Plan::new(MergeSpec { hosts: vec![dir.join("host.txt"), offsets.to_path_buf()], guests, scaling, ..Default::default() }).unwrap()
}

#[test]
fn overwritten_offsets_are_named() {
    let cfg = SynthConfig { seed: 5, vms: vec![2], windows: 60, tsc_write_every: 5, ..Default::default() };
    let dir = tempdir("lost");
    write_text(&cfg, &dir).unwrap();
    // Lose the 4th write (a guest TSC write, not a creation).
    let p = filter_offsets(&dir, |i, _| i != 3);
    let d = plan(&dir, &p, &cfg, None).diagnose(None);
    assert!(d.iter().any(|s| s.contains("writes were lost")), "{d:?}");
}

#[test]
fn late_offset_instance_is_named() {
    let cfg = SynthConfig { seed: 6, vms: vec![1], windows: 60, tsc_write_every: 5, ..Default::default() };
    let dir = tempdir("late");
    write_text(&cfg, &dir).unwrap();
    let p = filter_offsets(&dir, |_, l| !l.contains("prev=0 "));
    let plan = plan(&dir, &p, &cfg, None);
    let d = plan.diagnose(None);
    assert!(d.iter().any(|s| s.contains("started after the guest was created")), "{d:?}");
    // And the merge itself refuses with the fix.
    let err = plan.cursors().err().expect("events before the first known offset").to_string();
    assert!(err.contains("before the first offset write") && err.contains("--tsc-offset"), "{err}");
}

#[test]
fn tsc_scaling_not_given_is_named() {
    let scaling = Scaling { ratio: 3 << 46, frac_bits: 48 }; // 0.75
    let cfg = SynthConfig { seed: 7, vms: vec![2], windows: 40, scaling: Some(scaling), ..Default::default() };
    let dir = tempdir("scaling");
    write_text(&cfg, &dir).unwrap();
    let plan_without = plan(&dir, &dir.join("host-tsc_offset.txt"), &cfg, None);
    let mut sink = CheckSink::new(plan_without.check_config(), None);
    let r = match plan_without.cursors() {
        Ok(c) => {
            merge(c, &mut sink).unwrap();
            Some(sink.report())
        }
        Err(_) => None,
    };
    let d = plan_without.diagnose(r.as_ref());
    assert!(d.iter().any(|s| s.contains("0.7500x") && s.contains("--tsc-scaling")), "{d:?}");
    // Given, the same recording is silent and exact.
    let plan_with = plan(&dir, &dir.join("host-tsc_offset.txt"), &cfg, Some(scaling));
    let mut sink = CheckSink::new(plan_with.check_config(), None);
    merge(plan_with.cursors().unwrap(), &mut sink).unwrap();
    let r = sink.report();
    assert_eq!(r.inside, r.guest_events);
    assert!(plan_with.diagnose(Some(&r)).is_empty(), "{:?}", plan_with.diagnose(Some(&r)));
}

#[test]
fn nested_guest_is_named() {
    let cfg = SynthConfig { seed: 8, vms: vec![1], windows: 20, ..Default::default() };
    let dir = tempdir("nested");
    write_text(&cfg, &dir).unwrap();
    // The guest is itself a hypervisor: its trace holds an offset write of an L2 vCPU.
    let mut g = std::fs::read_to_string(dir.join("guest-vm0.txt")).unwrap();
    g.push_str("       CPU 0/KVM-900     [000] d..1. 999999999: kvm_write_tsc_offset: vcpu=0 prev=0 next=18446744073709000000\n");
    std::fs::write(dir.join("guest-vm0.txt"), g).unwrap();
    let d = plan(&dir, &dir.join("host-tsc_offset.txt"), &cfg, None).diagnose(None);
    assert!(d.iter().any(|s| s.contains("nested (L2)") && s.contains("guest vm0")), "{d:?}");
}

#[test]
fn swapped_vcpus_are_inferred() {
    let cfg = SynthConfig { seed: 9, vms: vec![2], windows: 60, tsc_write_every: 0, ..Default::default() };
    let dir = tempdir("swap");
    write_text(&cfg, &dir).unwrap();
    // The guest numbers its CPUs the other way round from KVM's vCPUs.
    let g = std::fs::read_to_string(dir.join("guest-vm0.txt")).unwrap();
    let swapped = g.replace("[000]", "[@@@]").replace("[001]", "[000]").replace("[@@@]", "[001]");
    std::fs::write(dir.join("guest-vm0.txt"), swapped).unwrap();
    let plan = plan(&dir, &dir.join("host-tsc_offset.txt"), &cfg, None);
    let mut sink = CheckSink::new(plan.check_config(), None);
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let r = sink.report();
    assert!(r.violations() > 0);
    let d = plan.diagnose(Some(&r));
    assert!(d.iter().any(|s| s.contains("--vcpu-map vm0:0=1")), "{d:?}");
    assert!(d.iter().any(|s| s.contains("--vcpu-map vm0:1=0")), "{d:?}");
    // With the map, the merge is exact again.
    let mut spec_guests = tscmerge::plan::GuestSpec::from_synth(&cfg, &dir, "txt", true);
    spec_guests[0].vcpu_map = [(0, 1), (1, 0)].into_iter().collect();
    let fixed = Plan::new(MergeSpec { hosts: vec![dir.join("host.txt"), dir.join("host-tsc_offset.txt")], guests: spec_guests, ..Default::default() }).unwrap();
    let mut sink = CheckSink::new(fixed.check_config(), None);
    merge(fixed.cursors().unwrap(), &mut sink).unwrap();
    let r = sink.report();
    assert_eq!(r.inside, r.guest_events);
}
