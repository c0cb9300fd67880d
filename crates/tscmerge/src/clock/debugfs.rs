//! The second source of offsets: KVM's debugfs (`kvm/<pid>-<fd>/vcpuN/tsc-offset`),
//! as `tscmerge record` samples it into `kvm_debugfs.txt` lines
//! (crates/record/src/kvm.rs documents the format):
//! `<taken_at_tsc> <reason> <vm_dir> <pid> <vcpu> <tsc_offset> <ratio|-> <frac|->`.
//!
//! debugfs shows the offset KVM applies; the tracepoint reports the offset
//! KVM was asked to write. On VMX/SVM they agree. On a PVM host they do not
//! (FACTS: the tracepoint says −T, debugfs 0, and the guest reads the host
//! TSC), and `--offsets auto` uses this disagreement to pick debugfs.

use std::collections::BTreeMap;

use serde::Serialize;

use super::convert::Scaling;
use super::timeline::{OffsetTimeline, Origin, Period};
use crate::time::{HostTsc, VcpuId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DebugfsSnapshot {
    pub taken_at: HostTsc,
    pub reason: String,
    pub vm_dir: String,
    /// The thread that created the VM (virt/kvm/kvm_main.c names the
    /// directory with `task_pid_nr(current)`).
    pub pid: i32,
    pub vcpu: VcpuId,
    /// `tsc-offset` as two's complement.
    pub offset: u64,
    pub scaling: Option<Scaling>,
}

/// Parses `kvm_debugfs.txt`; `#` lines and blank lines are skipped. Errors
/// name the line and what was expected.
pub fn parse_kvm_debugfs(text: &str) -> Result<Vec<DebugfsSnapshot>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| format!("line {}: {what} (expected `taken_at_tsc reason vm_dir pid vcpu tsc_offset ratio|- frac|-`)", i + 1);
        if f.len() != 8 {
            return Err(bad(&format!("{} fields", f.len())));
        }
        let num = |s: &str, what: &str| s.parse::<i128>().map_err(|_| bad(&format!("{what} {s:?} is not a number")));
        let scaling = match (f[6], f[7]) {
            ("-", _) | (_, "-") => None,
            (r, fb) => Some(Scaling { ratio: num(r, "ratio")? as u64, frac_bits: num(fb, "frac bits")? as u32 }),
        };
        out.push(DebugfsSnapshot {
            taken_at: HostTsc(num(f[0], "taken_at_tsc")? as u64),
            reason: f[1].to_string(),
            vm_dir: f[2].to_string(),
            pid: num(f[3], "pid")? as i32,
            vcpu: VcpuId(num(f[4], "vcpu")? as u32),
            offset: num(f[5], "tsc_offset")? as i64 as u64,
            scaling: scaling.filter(|s| !s.is_identity()),
        });
    }
    Ok(out)
}

/// A snapshot that contradicts the tracepoint's offset in force at its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub vm: usize,
    pub vcpu: VcpuId,
    pub at: HostTsc,
    pub tracepoint: u64,
    pub debugfs: u64,
}

impl OffsetTimeline {
    fn vm_of_snapshot(&self, s: &DebugfsSnapshot) -> Option<usize> {
        self.vms.iter().position(|vm| vm.has_pid(s.pid))
    }

    /// The tracepoint's offset in force for (vm, vcpu) at host time `at`.
    pub fn offset_at(&self, vm: usize, vcpu: VcpuId, at: HostTsc) -> Option<u64> {
        let t = self.vms.get(vm)?.vcpus.get(&vcpu)?;
        t.periods.iter().rev().find(|p| p.start.is_none_or(|s| s <= at)).map(|p| p.offset)
    }

    /// Every snapshot whose value differs from the tracepoint's at its time.
    pub fn compare_debugfs(&self, snaps: &[DebugfsSnapshot]) -> Vec<Disagreement> {
        snaps
            .iter()
            .filter_map(|s| {
                let vm = self.vm_of_snapshot(s)?;
                let tp = self.offset_at(vm, s.vcpu, s.taken_at)?;
                (tp != s.offset).then_some(Disagreement { vm, vcpu: s.vcpu, at: s.taken_at, tracepoint: tp, debugfs: s.offset })
            })
            .collect()
    }

    /// The same VMs with debugfs's offsets: the first snapshot's value holds
    /// from the beginning; a later value holds from the snapshot that first
    /// showed it (the change happened at some time before it, which debugfs
    /// cannot tell: sampling more often narrows it). Scaling comes along.
    pub fn with_debugfs(&self, snaps: &[DebugfsSnapshot]) -> OffsetTimeline {
        let mut tl = self.clone();
        let mut per: BTreeMap<(usize, VcpuId), Vec<&DebugfsSnapshot>> = BTreeMap::new();
        for s in snaps {
            if let Some(vm) = self.vm_of_snapshot(s) {
                per.entry((vm, s.vcpu)).or_default().push(s);
            }
        }
        for ((vm, vcpu), mut list) in per {
            list.sort_by_key(|s| s.taken_at);
            let t = tl.vms[vm].vcpus.entry(vcpu).or_default();
            t.periods.clear();
            for s in list {
                let prev = t.periods.last().map(|p| p.offset);
                if prev != Some(s.offset) {
                    let start = if prev.is_none() { None } else { Some(s.taken_at) };
                    t.periods.push(Period { start, offset: s.offset, prev: prev.unwrap_or(s.offset), pid: None, origin: Origin::Debugfs });
                }
                if s.scaling.is_some() {
                    t.scaling = s.scaling;
                }
            }
        }
        tl.anomalies.clear();
        tl
    }
}

#[cfg(test)]
mod tests {
    use super::super::timeline::OffsetWrite;
    use super::*;

    #[test]
    fn pvm_disagreement_and_debugfs_timeline() {
        let t = 1_000_000u64;
        let tl = OffsetTimeline::build(vec![OffsetWrite {
            ts: HostTsc(t),
            host_cpu: 0,
            pid: 77,
            tgid: Some(77),
            vcpu: VcpuId(0),
            prev: 0,
            next: t.wrapping_neg(),
        }]);
        let snaps = parse_kvm_debugfs("# comment\n1000500 new 77-12 77 0 0 - -\n2000000 end 77-12 77 0 0 - -\n").unwrap();
        let d = tl.compare_debugfs(&snaps);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].debugfs, 0);
        let dtl = tl.with_debugfs(&snaps);
        let p = &dtl.vms[0].vcpus[&VcpuId(0)].periods;
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].start, p[0].offset), (None, 0));
        assert!(parse_kvm_debugfs("1 new x 1 0 zz - -").unwrap_err().starts_with("line 1: tsc_offset"));
    }
}
