//! `tscmerge synth --format trace-cmd`: the modelled recording as a
//! trace-cmd 3.x host-guest pair (`trace-cmd record ... -A GUEST`), laid out
//! as trace-cmd writes it:
//!
//! - `host.dat`: one buffer (kvm_entry, kvm_exit, kvm_cpuid, sched_switch;
//!   no kvm_write_tsc_offset: the VMs were running before trace-cmd
//!   started), options TRACEID, one GUEST per VM (name `vmN`, the guest's
//!   trace id, vCPU → host thread; lib/trace-cmd/trace-output.c
//!   `tracecmd_write_guest_option` layout) and TSC2NSEC;
//! - `guest-vmN.dat`: options TRACEID, TIME_SHIFT (peer trace id = the
//!   host's, flags 0, per vCPU samples of the model's true offsets: guest
//!   time, the KVM offset negated, ratio and fraction bits as
//!   trace-timesync-kvm.c sends them — ratio 1 and 0 bits when unscaled)
//!   and TSC2NSEC;
//! - `truth.tsv`, as the other synth outputs.
//!
//! Sampling follows what trace-cmd does (start and end only, its default
//! `--tsync-interval`) or samples at every offset change (a sample taken
//! right after each write, as a short interval would come close to).

use std::io;
use std::path::Path;

use ftrace::write::{hostguest, Compression, OptionData, PageBuilder, TraceDatWriter, TsyncSample};

use super::dat::{header, host_cmdlines, host_cpu_stream, host_record, write_cpu, write_guests, write_truth, Formats, KVM_CPUID, KVM_ENTRY, KVM_EXIT, SCHED_SWITCH};
use super::model::{Happening, SynthConfig, SynthEvent, VcpuEntity};
use super::{write_atomically, SynthSummary};
use crate::clock::Conversion;

/// Which TIME_SHIFT samples the guests get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// At each vCPU's first and last guest event (trace-cmd's default):
    /// exact only while the offset does not change in between.
    StartEnd,
    /// Start and end, right after every offset write, and at every
    /// `every`-th guest event (0: none of those).
    Changes { every: u64 },
    /// A TIME_SHIFT option with no samples (bad input, for tests).
    Empty,
}

#[derive(Clone, Copy, Debug)]
pub struct PairConfig {
    pub sampling: Sampling,
    /// Added to every host thread the GUEST options name (0; non-zero
    /// makes a map of threads the host never saw, for tests).
    pub guest_pid_shift: i32,
    /// The first vCPU whose thread `guest_pid_shift` moves (0: all).
    pub shift_from_vcpu: u32,
    /// Mixed into the trace ids, so that pairs written with different
    /// values do not match each other.
    pub session: u64,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig { sampling: Sampling::Changes { every: 0 }, guest_pid_shift: 0, shift_from_vcpu: 0, session: 0 }
    }
}

/// The host's TRACEID.
pub fn host_trace_id(cfg: &SynthConfig, pair: &PairConfig) -> u64 {
    0x7ace_c0de_0000_0000 ^ cfg.seed.wrapping_mul(0x9e37_79b9) ^ pair.session.rotate_left(17)
}

/// VM `vm`'s TRACEID (its GUEST option names the same).
pub fn guest_trace_id(cfg: &SynthConfig, pair: &PairConfig, vm: usize) -> u64 {
    host_trace_id(cfg, pair).wrapping_add(0x1_0000 * (vm as u64 + 1))
}

/// One vCPU's samples from the model's ground truth.
fn samples(cfg: &SynthConfig, vm: usize, vcpu: u32, sampling: Sampling) -> Vec<TsyncSample> {
    let (ratio, frac) = match cfg.scaling {
        Some(s) => (s.ratio, s.frac_bits as u64),
        None => (1, 0),
    };
    let sample = |time: u64, offset: u64| TsyncSample { time, offset: (offset as i64).wrapping_neg(), scaling: ratio, fraction: frac };
    if sampling == Sampling::Empty {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut last_guest: Option<(u64, u64)> = None;
    let mut n = 0u64;
    for e in VcpuEntity::new(cfg, vm, vcpu) {
        match (&e.what, e.guest) {
            (Happening::WriteTscOffset { next, .. }, _) => {
                offset = *next;
                if matches!(sampling, Sampling::Changes { .. }) && last_guest.is_some() {
                    // The guest's marker right after the write, on the new offset.
                    out.push(sample(Conversion::new(offset, cfg.scaling).to_guest(e.host).0, offset));
                }
            }
            (_, Some(g)) => {
                let periodic = matches!(sampling, Sampling::Changes { every } if every > 0 && n % every == 0);
                if last_guest.is_none() || periodic {
                    out.push(sample(g, offset));
                }
                last_guest = Some((g, offset));
                n += 1;
            }
            _ => {}
        }
    }
    if let Some((g, o)) = last_guest {
        if out.last().map(|s| s.time) != Some(g) {
            out.push(sample(g, o));
        }
    }
    out
}

/// Writes `host.dat`, `guest-vmN.dat` and `truth.tsv` into `dir`.
pub fn write_tracecmd_pair(cfg: &SynthConfig, pair: &PairConfig, dir: &Path, compression: Compression) -> io::Result<SynthSummary> {
    std::fs::create_dir_all(dir)?;
    let fm = Formats::load()?;
    let ferr = io::Error::other;
    let mut sum = SynthSummary::default();
    let tsc2nsec = hostguest::tsc2nsec_from_khz(cfg.tsc_khz);
    let host_id = host_trace_id(cfg, pair);
    let version = OptionData::Version("3.1.6 (synthetic, tscmerge synth --format trace-cmd)".into());

    let cmd = host_cmdlines(cfg);
    let hdr = header(vec![("kvm", KVM_ENTRY), ("kvm", KVM_EXIT), ("kvm", KVM_CPUID), ("sched", SCHED_SWITCH)], cmd.as_bytes());
    write_atomically(&dir.join("host.dat"), |out| {
        let mut w = TraceDatWriter::new(out, 7, compression, &hdr).map_err(ferr)?;
        let cpus = cfg.host_cpus();
        let top = w.add_buffer("", "x86-tsc", cpus).map_err(ferr)?;
        w.add_option(version.clone()).map_err(ferr)?;
        w.add_option(OptionData::TraceId(host_id)).map_err(ferr)?;
        for (vm, &n) in cfg.vms.iter().enumerate() {
            w.add_option(hostguest::guest_option(
                &format!("vm{vm}"),
                guest_trace_id(cfg, pair, vm),
                (0..n).map(|v| (v, (cfg.vcpu_tid(vm, v) + if v >= pair.shift_from_vcpu { pair.guest_pid_shift } else { 0 }) as u32)),
            ))
            .map_err(ferr)?;
        }
        w.add_option(tsc2nsec.clone()).map_err(ferr)?;
        w.add_option(OptionData::CpuCount(cpus)).map_err(ferr)?;
        let mut pb = PageBuilder::default();
        let mut rec = |ev: &SynthEvent, out: &mut Vec<u8>| host_record(&fm, cfg, ev, out);
        for cpu in 0..cpus {
            let evs = host_cpu_stream(cfg, cpu).filter(|e| !e.is_offset_write());
            sum.host_events += write_cpu(&mut w, &mut pb, top, cpu, evs, |e| e.host.0, &mut rec)?;
        }
        w.finish().map_err(ferr)?;
        Ok(())
    })?;

    write_guests(cfg, dir, compression, &fm, &mut sum, |w, vm, vcpus| {
        w.add_option(version.clone()).map_err(ferr)?;
        w.add_option(OptionData::TraceId(guest_trace_id(cfg, pair, vm))).map_err(ferr)?;
        w.add_option(tsc2nsec.clone()).map_err(ferr)?;
        w.add_option(OptionData::TimeShift {
            peer_trace_id: host_id,
            flags: 0,
            cpus: (0..vcpus).map(|v| samples(cfg, vm, v, pair.sampling)).collect(),
        })
        .map_err(ferr)?;
        w.add_option(OptionData::CpuCount(vcpus)).map_err(ferr)
    })?;
    write_truth(cfg, dir)?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HostTsc;

    #[test]
    fn samples_follow_the_true_offsets() {
        let cfg = SynthConfig { vms: vec![1], windows: 60, tsc_write_every: 17, ..Default::default() };
        let s = samples(&cfg, 0, 0, Sampling::Changes { every: 0 });
        // Start, one after each of the 3 writes (windows 17, 34, 51), end.
        assert_eq!(s.len(), 5, "{s:?}");
        let end = samples(&cfg, 0, 0, Sampling::StartEnd);
        assert_eq!(end.len(), 2);
        assert_eq!(end[0], s[0]);
        // Stored negated: the guest's TSC started near 0 at creation.
        let created = HostTsc(cfg.vm_created(0));
        assert_eq!(end[0].offset as u64, created.0);
        assert!(samples(&cfg, 0, 0, Sampling::Empty).is_empty());
    }
}
