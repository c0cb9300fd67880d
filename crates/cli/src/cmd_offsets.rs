//! `tscmerge offsets HOST...`: the offset timeline per VM and vCPU.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::clock::Anomaly;
use tscmerge::plan::{GuestSpec, MergeSpec, OffsetSource, Plan};

#[derive(clap::Args)]
#[command(after_help = "A trace.dat with a TIME_SHIFT option (a trace-cmd guest recording) given among the files is taken
as a guest: its samples are listed beside the host's offsets, and the periods they fill are marked TIME_SHIFT.
Example: tscmerge offsets host.dat guest.dat")]
pub struct Args {
    /// Host recordings holding kvm_write_tsc_offset events or trace-cmd GUEST options; trace-cmd
    /// guest recordings (TIME_SHIFT) among them are recognised as guests.
    #[arg(required = true)]
    pub hosts: Vec<PathBuf>,
    /// A guest, as merge takes it: [NAME=]FILE[,FILE...][,pid=PID].
    #[arg(long = "guest", value_name = "[NAME=]FILE,...")]
    pub guests: Vec<String>,
    /// KVM debugfs snapshots to show beside the tracepoint (`kvm_debugfs.txt`).
    #[arg(long = "kvm-debugfs", value_name = "FILE")]
    pub kvm_debugfs: Vec<PathBuf>,
    /// Print the timeline as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let debugfs = crate::inputs::load_debugfs(&a.kvm_debugfs)?;
    let mut guests: Vec<GuestSpec> = a.guests.iter().map(|g| GuestSpec::parse(g)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let mut hosts = Vec::new();
    for p in a.hosts {
        let is_guest = tscmerge::source::Input::open(&p).ok().is_some_and(|i| i.tracedat().is_some_and(|d| d.time_shift().is_some()));
        if is_guest {
            guests.push(GuestSpec { files: vec![p], ..Default::default() });
        } else {
            hosts.push(p);
        }
    }
    if hosts.is_empty() {
        anyhow::bail!("no host recording given: every file holds a TIME_SHIFT option, as trace-cmd guest recordings do");
    }
    let plan = Plan::new(MergeSpec { hosts, guests, offsets: OffsetSource::Tracepoint, debugfs, ..Default::default() })?;
    // Written, not printed: a reader that goes away (`| head`) ends the
    // command quietly (main.rs), where `println!` would panic.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for n in &plan.notes {
        writeln!(out, "note: {n}")?;
    }
    let tl = &plan.timeline;
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(tl)?)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if tl.vms.is_empty() {
        writeln!(out, "no kvm_write_tsc_offset events in the host inputs")?;
    }
    for vm in &tl.vms {
        let guest = plan.guests.iter().find(|g| g.vm == vm.index).map(|g| format!(", guest {}", g.spec.name)).unwrap_or_default();
        match (&vm.guest_option, vm.tgid) {
            (Some(o), _) => writeln!(
                out,
                "{} (trace-cmd GUEST option {:?}, trace id {:#x}), {} vCPUs{guest}",
                vm.name(),
                o.name,
                o.trace_id,
                vm.vcpus.len()
            )?,
            (None, Some(t)) => writeln!(out, "{} (VMM pid {t}), {} vCPUs{guest}", vm.name(), vm.vcpus.len())?,
            (None, None) => writeln!(out, "{} (VMM pid unknown: grouped by creation order), {} vCPUs{guest}", vm.name(), vm.vcpus.len())?,
        }
        for (vcpu, t) in vm.vcpus.iter().filter(|(_, t)| t.periods.is_empty()) {
            writeln!(out, "  vcpu {} (thread {}): no offset from any source", vcpu.0, t.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()))?;
        }
        writeln!(out, "  {:>5} {:>8} {:>16} {:>21} {:>21} {:>15} {:>10}  note", "vcpu", "thread", "host_tsc", "prev", "next", "delta", "source")?;
        for (vcpu, t) in &vm.vcpus {
            let mut last: Option<u64> = None;
            for p in &t.periods {
                let start = match p.start {
                    Some(s) => s.0.to_string(),
                    None if p.origin == tscmerge::clock::Origin::Given => "(given)".into(),
                    None => "(start)".into(),
                };
                let delta = p.offset.wrapping_sub(p.prev) as i64;
                let note = match last {
                    None if p.origin != tscmerge::clock::Origin::Tracepoint => "holds from the beginning".to_string(),
                    None if p.prev != 0 && p.start.is_some() => "first write is not a creation (prev != 0)".to_string(),
                    None => "creation".to_string(),
                    Some(l) if l != p.prev => format!("BREAK: prev != previous next ({})", l as i64),
                    Some(_) => String::new(),
                };
                writeln!(
                    out,
                    "  {:>5} {:>8} {:>16} {:>21} {:>21} {:>15} {:>10}  {note}",
                    vcpu.0,
                    p.pid.or(t.pid).map(|p| p.to_string()).unwrap_or_default(),
                    start,
                    p.prev as i64,
                    p.offset as i64,
                    delta,
                    p.origin.name()
                )?;
                last = Some(p.offset);
            }
        }
    }
    for u in &plan.time_shifts {
        writeln!(
            out,
            "TIME_SHIFT of guest {} (vm{}, sampled against host trace id {:#x}), samples by host time:",
            u.guest, u.vm, u.peer_trace_id
        )?;
        writeln!(out, "  {:>5} {:>16} {:>16} {:>21} {:>21}  note", "vcpu", "guest_tsc", "host_tsc", "offset", "tracepoint")?;
        for v in &u.vcpus {
            for s in &v.samples {
                let note = match s.covered_by {
                    None => "used".to_string(),
                    Some(_) if s.disagrees() => "DISAGREE: the tracepoint's offset is used".to_string(),
                    Some(_) => "agrees with the tracepoint".to_string(),
                };
                writeln!(
                    out,
                    "  {:>5} {:>16} {:>16} {:>21} {:>21}  {note}",
                    v.vcpu,
                    s.guest.0,
                    s.host.0,
                    s.offset as i64,
                    s.covered_by.map(|o| (o as i64).to_string()).unwrap_or_else(|| "-".into())
                )?;
            }
            if let Some(sc) = v.scaling {
                writeln!(out, "  vcpu {}: scaling ratio {:#x}, {} fraction bits", v.vcpu, sc.ratio, sc.frac_bits)?;
            }
        }
    }
    if !plan.debugfs.is_empty() {
        writeln!(out, "KVM debugfs snapshots beside the tracepoint's offset in force at the same time:")?;
        writeln!(out, "  {:>16} {:>8} {:>10} {:>5} {:>21} {:>21}  note", "host_tsc", "reason", "vm_dir", "vcpu", "debugfs", "tracepoint")?;
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
            writeln!(
                out,
                "  {:>16} {:>8} {:>10} {:>5} {:>21} {:>21}  {note}",
                s.taken_at.0,
                s.reason,
                s.vm_dir,
                s.vcpu.0,
                s.offset as i64,
                tp.map(|t| (t as i64).to_string()).unwrap_or_else(|| "-".into())
            )?;
        }
        if disagree > 0 {
            writeln!(out, "{disagree} snapshots disagree with the tracepoint: this host does not apply the offsets kvm_write_tsc_offset reports; merge with --offsets auto (the default) or debugfs")?;
        }
    }
    let breaks = tl.anomalies.iter().filter(|a| matches!(a, Anomaly::PrevMismatch { .. })).count();
    if !tl.anomalies.is_empty() {
        writeln!(
            out,
            "{} anomalies ({breaks} prev/next breaks: a write was overwritten in the buffer, or the host changed the offset without the event)",
            tl.anomalies.len()
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
