//! `merge --format trace-cmd -o DIR`: the inputs again, as the files of a
//! trace-cmd 3.x host-guest session (`trace-cmd record ... -A GUEST`), so
//! that `trace-cmd report -i DIR/HOST -i DIR/GUEST` and KernelShark merge
//! them by themselves with our offsets.
//!
//! Each file is its input's bytes unchanged with options appended
//! (`ftrace::write::append_options`, trace-cmd's own way):
//! - the host trace.dat: TRACEID (when it has none), one GUEST option per
//!   guest it does not name yet (the guest's trace id, each vCPU's host
//!   thread as `check` knows it), TSC2NSEC (when it has none and the
//!   frequency is known);
//! - each guest trace.dat, as `DIR/NAME.dat`: TRACEID (the one the host's
//!   GUEST option names), TIME_SHIFT from the offset timeline
//!   ([`tscmerge::clock::time_shift_samples`], peer = the host's trace id),
//!   and TSC2NSEC as the host's when it has none.
//!
//! Only trace.dat inputs can be carried: host text or raw inputs and guests
//! given as text are named in one note each and left out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ftrace::write::{hostguest, OptionData};
use tscmerge::plan::Plan;
use tscmerge::sink::HostNs;
use tscmerge::VcpuId;

/// What was written, for the user.
pub struct Written {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

fn write_appended(dat: &ftrace::tracedat::TraceDat<'_>, opts: &[OptionData], out: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    let same = |a: &Path| std::fs::canonicalize(a).ok().zip(std::fs::canonicalize(out).ok()).is_some_and(|(a, b)| a == b);
    if let Some(i) = inputs.iter().find(|i| same(i)) {
        bail!("{}: the output would replace the input {}: give another -o DIR", out.display(), i.display());
    }
    let mut f = safefs::AtomicFile::create(out)?;
    ftrace::write::append_options(dat, opts, &mut f).with_context(|| format!("writing {}", out.display()))?;
    f.commit()?;
    Ok(())
}

pub fn write(plan: &Plan, clock: Option<HostNs>, dir: &Path) -> anyhow::Result<Written> {
    let mut notes = Vec::new();
    let Some(host) = plan.hosts.iter().find(|h| h.tracedat().is_some()) else {
        bail!("--format trace-cmd carries the host's trace.dat over with trace-cmd's options added, but no host input is a trace.dat");
    };
    for h in plan.hosts.iter().filter(|h| !std::ptr::eq(*h, host)) {
        notes.push(format!("{}: only one host trace.dat is carried over ({}); this input is not in the trace-cmd files", h.name(), host.name()));
    }
    let hd = host.tracedat().expect("checked above");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let host_id = hd.trace_id().unwrap_or_else(hostguest::random_trace_id);
    let mut host_opts = Vec::new();
    if hd.trace_id().is_none() {
        host_opts.push(OptionData::TraceId(host_id));
    }
    let tsc2nsec = match clock {
        Some(HostNs::Tsc2Nsec { mult, shift, offset }) => Some(OptionData::Tsc2Nsec { mult, shift, offset }),
        Some(HostNs::Khz(khz)) => Some(hostguest::tsc2nsec_from_khz(khz)),
        None => None,
    };
    if hd.tsc2nsec().is_none() {
        host_opts.extend(tsc2nsec.clone());
    }
    let cfg = plan.check_config();
    let inputs: Vec<&Path> = plan.hosts.iter().chain(plan.guests.iter().flat_map(|g| g.inputs.iter())).map(|i| i.path.as_path()).collect();
    let mut files = Vec::new();
    for (gi, g) in plan.guests.iter().enumerate() {
        let gd = match g.inputs.as_slice() {
            [one] if one.tracedat().is_some() => one.tracedat().expect("checked"),
            _ => {
                notes.push(format!("guest {}: not one trace.dat input ({} files): no trace-cmd file for it", g.spec.name, g.inputs.len()));
                continue;
            }
        };
        let vm = &plan.timeline.vms[g.vm];
        let gid = gd.trace_id().or(vm.guest_option.as_ref().map(|o| o.trace_id)).unwrap_or_else(|| hostguest::derived_trace_id(&g.spec.name, host_id));
        if !hd.guests().any(|o| o.trace_id == gid) {
            let vcpus: Vec<(u32, u32)> = cfg.vms.get(&(gi + 1)).map(|v| v.vcpu_pids.iter().map(|(&vcpu, &(pid, _))| (vcpu, pid as u32)).collect()).unwrap_or_default();
            host_opts.push(hostguest::guest_option(&g.spec.name, gid, vcpus));
        }
        // TIME_SHIFT is indexed by the CPU of the guest's records
        // (trace-input.c timestamp_host_sync): one entry per guest CPU.
        let ncpus = g.inputs[0].buffers().iter().flat_map(|b| b.cpus.iter().map(|c| c + 1)).max().unwrap_or(0);
        let mut cpus = Vec::new();
        for cpu in 0..ncpus {
            let vcpu = g.spec.vcpu_map.get(&cpu).copied().unwrap_or(cpu);
            let Some(tl) = vm.vcpus.get(&VcpuId(vcpu)).filter(|t| !t.periods.is_empty()) else {
                bail!("guest {}: cpu {cpu} (vCPU {vcpu}) has no offset from any source: no TIME_SHIFT can be written for it", g.spec.name);
            };
            let (samples, disorder) = tscmerge::clock::time_shift_samples(tl, None);
            if disorder > 0 {
                notes.push(format!("guest {} cpu {cpu}: {disorder} of its offset changes lower the guest's TSC below an earlier change's: trace-cmd searches the samples by guest time and will place events near them in the wrong period", g.spec.name));
            }
            cpus.push(samples);
        }
        let mut opts = Vec::new();
        if gd.trace_id() != Some(gid) {
            opts.push(OptionData::TraceId(gid));
        }
        opts.push(OptionData::TimeShift { peer_trace_id: host_id, flags: 0, cpus });
        if gd.tsc2nsec().is_none() {
            opts.extend(tsc2nsec.clone());
        }
        let out = dir.join(format!("{}.dat", g.spec.name));
        write_appended(gd, &opts, &out, &inputs).with_context(|| format!("guest {}", g.spec.name))?;
        files.push(out);
    }
    let name = host.path.file_name().map_or_else(|| "host.dat".into(), |n| n.to_string_lossy().into_owned());
    let name = if files.iter().any(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == name)) { "host.dat".to_string() } else { name };
    let out = dir.join(name);
    write_appended(hd, &host_opts, &out, &inputs).context("the host file")?;
    files.insert(0, out);
    Ok(Written { files, notes })
}
