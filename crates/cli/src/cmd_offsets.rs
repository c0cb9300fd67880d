//! `tscmerge offsets HOST...`: the offset timeline per VM and vCPU.

use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::clock::Anomaly;
use tscmerge::plan::{MergeSpec, OffsetSource, Plan};

#[derive(clap::Args)]
pub struct Args {
    /// Host recordings holding kvm_write_tsc_offset events.
    #[arg(required = true)]
    pub hosts: Vec<PathBuf>,
    /// KVM debugfs snapshots to show beside the tracepoint (`kvm_debugfs.txt`).
    #[arg(long = "kvm-debugfs", value_name = "FILE")]
    pub kvm_debugfs: Vec<PathBuf>,
    /// Print the timeline as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let debugfs = crate::inputs::load_debugfs(&a.kvm_debugfs)?;
    let plan = Plan::new(MergeSpec { hosts: a.hosts, offsets: OffsetSource::Tracepoint, debugfs, ..Default::default() })?;
    let tl = &plan.timeline;
    if a.json {
        println!("{}", serde_json::to_string_pretty(tl)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tl.vms.is_empty() {
        println!("no kvm_write_tsc_offset events in the host inputs");
    }
    for vm in &tl.vms {
        match vm.tgid {
            Some(t) => println!("{} (VMM pid {t}), {} vCPUs", vm.name(), vm.vcpus.len()),
            None => println!("{} (VMM pid unknown: grouped by creation order), {} vCPUs", vm.name(), vm.vcpus.len()),
        }
        println!("  {:>5} {:>8} {:>16} {:>21} {:>21} {:>15}  note", "vcpu", "thread", "host_tsc", "prev", "next", "delta");
        for (vcpu, t) in &vm.vcpus {
            let mut last: Option<u64> = None;
            for p in &t.periods {
                let start = p.start.map(|s| s.0.to_string()).unwrap_or_else(|| "(given)".into());
                let delta = p.offset.wrapping_sub(p.prev) as i64;
                let note = match last {
                    None if p.prev != 0 && p.start.is_some() => "first write is not a creation (prev != 0)".to_string(),
                    None => "creation".to_string(),
                    Some(l) if l != p.prev => format!("BREAK: prev != previous next ({})", l as i64),
                    Some(_) => String::new(),
                };
                println!(
                    "  {:>5} {:>8} {:>16} {:>21} {:>21} {:>15}  {note}",
                    vcpu.0,
                    p.pid.map(|p| p.to_string()).unwrap_or_default(),
                    start,
                    p.prev as i64,
                    p.offset as i64,
                    delta
                );
                last = Some(p.offset);
            }
        }
    }
    if !plan.debugfs.is_empty() {
        println!("KVM debugfs snapshots beside the tracepoint's offset in force at the same time:");
        println!("  {:>16} {:>8} {:>10} {:>5} {:>21} {:>21}  note", "host_tsc", "reason", "vm_dir", "vcpu", "debugfs", "tracepoint");
        let mut disagree = 0;
        for s in &plan.debugfs {
            let vm = tl.vms.iter().position(|vm| vm.has_pid(s.pid));
            let tp = vm.and_then(|vm| tl.offset_at(vm, s.vcpu, s.taken_at));
            let note = match tp {
                Some(t) if t != s.offset => {
                    disagree += 1;
                    "DISAGREE"
                }
                Some(_) => "",
                None => "no tracepoint offset",
            };
            println!(
                "  {:>16} {:>8} {:>10} {:>5} {:>21} {:>21}  {note}",
                s.taken_at.0,
                s.reason,
                s.vm_dir,
                s.vcpu.0,
                s.offset as i64,
                tp.map(|t| (t as i64).to_string()).unwrap_or_else(|| "-".into())
            );
        }
        if disagree > 0 {
            println!("{disagree} snapshots disagree with the tracepoint: this host does not apply the offsets kvm_write_tsc_offset reports; merge with --offsets auto (the default) or debugfs");
        }
    }
    let breaks = tl.anomalies.iter().filter(|a| matches!(a, Anomaly::PrevMismatch { .. })).count();
    if !tl.anomalies.is_empty() {
        println!(
            "{} anomalies ({breaks} prev/next breaks: a write was overwritten in the buffer, or the host changed the offset without the event)",
            tl.anomalies.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
