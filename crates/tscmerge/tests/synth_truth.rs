//! Exact placement against `synth` ground truth: offsets that rise and fall
//! at different times on each vCPU of SMP guests, two VMs, with and without
//! TSC scaling. Every guest event's merged host TSC must equal the model's.

use std::collections::BTreeMap;


use tscmerge::clock::Scaling;
use tscmerge::merge::{merge, Sink};
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};
use tscmerge::synth::{write_text, SynthConfig};
use tscmerge::{EventView, Payload};

#[path = "truth_util.rs"]
mod truth_util;
use truth_util::truth;

/// Collects (machine, cpu) → host timestamps, and checks global order.
#[derive(Default)]
struct Collect {
    per_cpu: BTreeMap<(usize, u32), Vec<u64>>,
    last: u64,
    total: u64,
}

impl Sink for Collect {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> tscmerge::Result<()> {
        assert!(ev.ts >= self.last, "merge out of order: {} after {}", ev.ts, self.last);
        self.last = ev.ts;
        self.total += 1;
        if let Payload::Event(_) = ev.payload {
            self.per_cpu.entry((machine, ev.cpu)).or_default().push(ev.ts);
        }
        Ok(())
    }
}

fn run(cfg: &SynthConfig, scaling: Option<Scaling>) {
    let dir = tempdir(&format!("truth-{}-{}", cfg.seed, scaling.is_some()));
    let sum = write_text(cfg, &dir).unwrap();
    let guests = GuestSpec::from_synth(cfg, &dir, "txt", true);
    let spec = MergeSpec { hosts: vec![dir.join("host.txt"), dir.join("host-tsc_offset.txt")], guests, scaling, ..Default::default() };
    let plan = Plan::new(spec).unwrap();
    assert_eq!(plan.timeline.vms.len(), cfg.vms.len());
    assert!(plan.timeline.anomalies.is_empty(), "{:?}", plan.timeline.anomalies);
    let mut sink = Collect::default();
    let stats = merge(plan.cursors().unwrap(), &mut sink).unwrap();
    let guest_total: u64 = sum.guest_events.iter().sum();
    assert_eq!(stats.total, sum.host_events + sum.offset_writes + guest_total, "every input event exactly once");
    let truth = truth(&dir);
    let mut checked = 0;
    for ((vm, cpu), want) in &truth {
        let machine = 1 + vm.trim_start_matches("vm").parse::<usize>().unwrap();
        let got = &sink.per_cpu[&(machine, *cpu)];
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            match scaling {
                // A guest slower than the host ticks once per several host
                // cycles: the inverse gives the first host cycle of the
                // guest's tick, never later than the truth and within a tick.
                Some(s) if (s.ratio as u128) < (1u128 << s.frac_bits) => {
                    let tick = ((1u128 << s.frac_bits) / s.ratio as u128 + 1) as u64;
                    assert!(g <= w && w - g < tick, "{vm} cpu {cpu} event #{i}: merged at {g}, truth {w}");
                }
                _ => assert_eq!(g, w, "{vm} cpu {cpu} event #{i}: merged at {g}, truth {w}"),
            }
        }
        checked += want.len();
    }
    assert_eq!(checked as u64, guest_total);
    std::fs::remove_dir_all(&dir).ok();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn exact_placement_rising_and_falling_offsets() {
    for seed in 1..=5 {
        let cfg = SynthConfig { seed, vms: vec![1, 2, 4], windows: 120, tsc_write_every: 7, ..Default::default() };
        run(&cfg, None);
    }
}

#[test]
fn exact_placement_with_tsc_scaling() {
    // A guest TSC at 0.75 of the host's (frac 48, Intel) and at 1.5x (frac 32, AMD).
    for scaling in [Scaling { ratio: 3 << 46, frac_bits: 48 }, Scaling { ratio: 3 << 31, frac_bits: 32 }] {
        let cfg = SynthConfig { seed: 9, vms: vec![2], scaling: Some(scaling), ..Default::default() };
        run(&cfg, Some(scaling));
    }
}

