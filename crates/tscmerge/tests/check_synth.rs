//! The check against synth ground truth: a correct merge is 100% inside run
//! windows; offsets shifted by ±1000 cycles are always caught; automatic
//! matching finds each guest's VM without pins.

use std::path::{Path, PathBuf};

use tscmerge::check::CheckSink;
use tscmerge::merge::merge;
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};
use tscmerge::synth::{write_text, SynthConfig};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies the offset instance text with every offset moved by `delta`.
fn shift_offsets(src: &Path, dst: &Path, delta: i64) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        match line.find("kvm_write_tsc_offset: ") {
            Some(i) => {
                let (head, body) = line.split_at(i + "kvm_write_tsc_offset: ".len());
                let fields: Vec<String> = body
                    .split(' ')
                    .map(|f| match f.split_once('=') {
                        Some((k @ ("prev" | "next"), v)) if v != "0" => {
                            format!("{k}={}", v.parse::<u64>().unwrap().wrapping_add(delta as u64))
                        }
                        _ => f.to_string(),
                    })
                    .collect();
                out.push_str(head);
                out.push_str(&fields.join(" "));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    std::fs::write(dst, out).unwrap();
}

fn check(dir: &Path, offsets: &Path, cfg: &SynthConfig, pin: bool) -> (Plan, tscmerge::check::CheckReport) {
    let guests = GuestSpec::from_synth(cfg, dir, "txt", pin);
    let plan = Plan::new(MergeSpec { hosts: vec![dir.join("host.txt"), offsets.to_path_buf()], guests, ..Default::default() }).unwrap();
    let mut sink = CheckSink::new(plan.check_config(), None);
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let r = sink.report();
    (plan, r)
}

#[test]
fn correct_merge_is_fully_inside_and_matching_needs_no_pins() {
    let cfg = SynthConfig { seed: 3, vms: vec![2, 1, 2], windows: 80, ..Default::default() };
    let dir = tempdir("ok");
    write_text(&cfg, &dir).unwrap();
    let (plan, r) = check(&dir, &dir.join("host-tsc_offset.txt"), &cfg, false);
    for (i, g) in plan.guests.iter().enumerate() {
        assert_eq!(g.vm, i, "guest vm{i} matched to {}: {}", g.vm, g.reason);
    }
    assert!(r.guest_events > 0);
    assert_eq!(r.inside, r.guest_events);
    assert_eq!(r.non_monotonic, 0);
    assert!(r.cpus.iter().all(|c| c.thread.is_some() && !c.inferred), "kvm_entry names each vCPU's thread");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shifted_offsets_are_caught() {
    let cfg = SynthConfig { seed: 4, vms: vec![2], windows: 80, ..Default::default() };
    let dir = tempdir("shift");
    write_text(&cfg, &dir).unwrap();
    for delta in [1000i64, -1000, 1, -1] {
        let shifted = dir.join(format!("offsets{delta}.txt"));
        shift_offsets(&dir.join("host-tsc_offset.txt"), &shifted, delta);
        let (_, r) = check(&dir, &shifted, &cfg, true);
        if delta.abs() >= 1000 {
            assert!(r.violations() > 0, "a {delta}-cycle shift must be caught");
        } else {
            // ±1 cycle moves every guest event by one cycle; synth's events sit
            // ≥ 50 cycles inside their windows, so the check cannot see it.
            assert_eq!(r.violations(), 0, "a {delta}-cycle shift is below the windows' resolution");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A host that recorded only sched_switch of the vCPU threads (synth
/// `--run-windows sched`): the check judges each guest event by its thread's
/// on-CPU intervals, says so per CPU, and an event outside them is a
/// violation.
#[test]
fn on_cpu_intervals_judge_a_host_without_kvm_entry() {
    use tscmerge::synth::{Patterns, RunWindowEvents};
    let patterns = Patterns { unstable_drift: 5_000, ..Default::default() };
    let cfg = SynthConfig { seed: 5, vms: vec![1, 2], windows: 300, patterns, run_windows: RunWindowEvents::Sched, ..Default::default() };
    let dir = tempdir("oncpu");
    write_text(&cfg, &dir).unwrap();
    let (_, r) = check(&dir, &dir.join("host-tsc_offset.txt"), &cfg, true);
    assert!(r.guest_events > 0 && r.host_windows > 0);
    assert_eq!(r.window_kinds, vec![tscmerge::check::WindowKind::OnCpu]);
    assert_eq!(r.violations(), 0, "{:?}", r.worst);
    assert_eq!(r.inside + r.ambiguous_outside, r.guest_events);
    for c in &r.cpus {
        assert_eq!(c.judged_by.get("on_cpu"), Some(&c.events), "{c:?}");
        assert_eq!(c.judged_by.len(), 1);
    }
    // Every guest event moved 100 us later: the threads run ~50 us at a time
    // in this model, off their CPU ~165 us, so most land off it.
    let shifted = dir.join("offsets-shifted.txt");
    shift_offsets(&dir.join("host-tsc_offset.txt"), &shifted, -200_000);
    let (_, r) = check(&dir, &shifted, &cfg, true);
    assert!(r.violations() > 0, "guest events outside the on-CPU intervals are violations");
    assert!(r.inside > 0 && r.inside < r.guest_events);
    std::fs::remove_dir_all(&dir).ok();
}
