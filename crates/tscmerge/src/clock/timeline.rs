//! The offset timeline: every `kvm_write_tsc_offset` the host recorded,
//! grouped into VMs and vCPUs, as periods during which one offset held.
//!
//! Grouping into VMs (a VM is one VMM process):
//! 1. Each write comes from a vCPU thread (FACTS: the tracepoint runs in the
//!    vCPU thread), so all writes of one pid belong to one (VM, vCPU).
//! 2. When the data has the thread's tgid (tracefs tgid column, trace.dat
//!    tgid data, or the recorder's process list), threads with the same tgid
//!    are one VM.
//! 3. Otherwise: a write with `prev == 0` from a thread not seen before is a
//!    vCPU creation (x86.c `kvm_arch_vcpu_postcreate` → `kvm_synchronize_tsc`
//!    starts from offset 0). A creation of vCPU 0 opens a new VM; a creation
//!    of vCPU k > 0 joins the most recently opened VM that lacks vCPU k. A
//!    thread whose first write is not a creation starts a VM of its own, and
//!    the timeline says so as an anomaly.

use std::collections::BTreeMap;

use serde::Serialize;

use super::convert::{Conversion, Scaling};
use crate::time::{HostTsc, VcpuId};

/// One `kvm_write_tsc_offset` event as read from a host buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OffsetWrite {
    pub ts: HostTsc,
    pub host_cpu: u32,
    /// The vCPU thread that wrote the offset.
    pub pid: i32,
    /// Its process (the VMM) when the data has it.
    pub tgid: Option<i32>,
    pub vcpu: VcpuId,
    pub prev: u64,
    pub next: u64,
}

/// Where a period's offset came from (the precedence between them is
/// [`super::sources`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A `kvm_write_tsc_offset` event.
    #[default]
    Tracepoint,
    /// A sample of trace-cmd's TIME_SHIFT option (guest file).
    TimeShift,
    /// A KVM debugfs `tsc-offset` snapshot.
    Debugfs,
    /// `--tsc-offset`.
    Given,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Tracepoint => "tracepoint",
            Origin::TimeShift => "TIME_SHIFT",
            Origin::Debugfs => "debugfs",
            Origin::Given => "--tsc-offset",
        }
    }
}

/// The offset in force from `start` until the next period's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    /// Host TSC of the write; `None` for an offset given by the user that
    /// holds from the beginning of time.
    pub start: Option<HostTsc>,
    pub offset: u64,
    /// The offset the write replaced, as the event reported it.
    pub prev: u64,
    /// The thread that wrote it (`None` for offsets from elsewhere).
    pub pid: Option<i32>,
    pub origin: Origin,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VcpuTimeline {
    pub pid: Option<i32>,
    pub periods: Vec<Period>,
    pub scaling: Option<Scaling>,
}

impl VcpuTimeline {
    pub fn conversion(&self, period: usize) -> Option<Conversion> {
        self.periods.get(period).map(|p| Conversion::new(p.offset, self.scaling))
    }
}

/// What a host's trace-cmd GUEST option says of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestOption {
    /// May be empty (trace-cmd writes the name it was given).
    pub name: String,
    /// Equals the guest recording's TRACEID.
    pub trace_id: u64,
    /// vCPU → the host thread running it.
    pub vcpu_pids: BTreeMap<u32, i32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Vm {
    /// `vm0`, `vm1`, ... in order of first appearance.
    pub index: usize,
    /// The VMM process when known.
    pub tgid: Option<i32>,
    pub vcpus: BTreeMap<VcpuId, VcpuTimeline>,
    pub first_write: HostTsc,
    /// The host's trace-cmd GUEST option for this VM, when it has one.
    pub guest_option: Option<GuestOption>,
}

impl Vm {
    pub fn name(&self) -> String {
        format!("vm{}", self.index)
    }
    /// Every thread that wrote an offset for this VM.
    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.vcpus.values().filter_map(|v| v.pid)
    }
    pub fn has_pid(&self, pid: i32) -> bool {
        self.tgid == Some(pid) || self.pids().any(|p| p == pid)
    }
}

/// Something odd about the writes, reported by `tscmerge offsets` and used by
/// `check`'s diagnoses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// `prev` of a write differs from the `next` of the vCPU's previous write:
    /// a write was lost (buffer overwrite) or the offset changed without an
    /// event (seen on PVM hosts, where the tracepoint's offsets are not applied).
    PrevMismatch { vm: usize, vcpu: VcpuId, ts: HostTsc, expected_prev: u64, prev: u64 },
    /// The first write seen for a thread was not a creation (`prev != 0`):
    /// the recording started after the VM was created.
    NoCreation { vm: usize, vcpu: VcpuId, ts: HostTsc, prev: u64 },
    /// Writes out of time order in one vCPU's stream.
    OutOfOrder { vm: usize, vcpu: VcpuId, ts: HostTsc },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct OffsetTimeline {
    pub vms: Vec<Vm>,
    pub anomalies: Vec<Anomaly>,
}

impl OffsetTimeline {
    /// Builds the timeline from writes in any order (they are sorted by host
    /// time first; several host buffers may each hold some).
    pub fn build(mut writes: Vec<OffsetWrite>) -> OffsetTimeline {
        writes.sort_by_key(|w| (w.ts, w.host_cpu, w.pid));
        let mut tl = OffsetTimeline::default();
        // pid → VM index, decided at the thread's first write.
        let mut vm_of_pid: BTreeMap<i32, usize> = BTreeMap::new();
        for w in writes {
            let vm = match vm_of_pid.get(&w.pid) {
                Some(&vm) => vm,
                None => {
                    let vm = tl.place_new_thread(&w);
                    vm_of_pid.insert(w.pid, vm);
                    vm
                }
            };
            tl.push(vm, &w);
        }
        tl
    }

    fn open_vm(&mut self, tgid: Option<i32>, ts: HostTsc) -> usize {
        let index = self.vms.len();
        self.vms.push(Vm { index, tgid, vcpus: BTreeMap::new(), first_write: ts, guest_option: None });
        index
    }

    /// Chooses the VM of a thread seen for the first time (rules 2 and 3 above).
    fn place_new_thread(&mut self, w: &OffsetWrite) -> usize {
        if let Some(tgid) = w.tgid {
            return match self.vms.iter().position(|vm| vm.tgid == Some(tgid)) {
                Some(vm) => vm,
                None => self.open_vm(Some(tgid), w.ts),
            };
        }
        let creation = w.prev == 0;
        if creation && w.vcpu.0 != 0 {
            if let Some(vm) = self.vms.iter().rposition(|vm| vm.tgid.is_none() && !vm.vcpus.contains_key(&w.vcpu)) {
                return vm;
            }
        }
        self.open_vm(None, w.ts)
    }

    fn push(&mut self, vm: usize, w: &OffsetWrite) {
        let v = self.vms[vm].vcpus.entry(w.vcpu).or_default();
        v.pid.get_or_insert(w.pid);
        let anomaly = match v.periods.last() {
            None if w.prev != 0 => Some(Anomaly::NoCreation { vm, vcpu: w.vcpu, ts: w.ts, prev: w.prev }),
            Some(last) if last.start.is_some_and(|s| s > w.ts) => Some(Anomaly::OutOfOrder { vm, vcpu: w.vcpu, ts: w.ts }),
            Some(last) if last.offset != w.prev => {
                Some(Anomaly::PrevMismatch { vm, vcpu: w.vcpu, ts: w.ts, expected_prev: last.offset, prev: w.prev })
            }
            _ => None,
        };
        v.periods.push(Period { start: Some(w.ts), offset: w.next, prev: w.prev, pid: Some(w.pid), origin: Origin::Tracepoint });
        self.anomalies.extend(anomaly);
    }

    /// Offsets the user gave (`--tsc-offset VCPU=OFFSET`) hold from the
    /// beginning of time until the first recorded write. Returns the
    /// source that already covers the beginning instead, if one does
    /// (the given offset is then not used).
    pub fn assume_initial_offset(&mut self, vm: usize, vcpu: VcpuId, offset: u64) -> Option<Origin> {
        let vm = self.vms.get_mut(vm)?;
        let v = vm.vcpus.entry(vcpu).or_default();
        if let Some(p) = v.periods.first().filter(|p| p.start.is_none()) {
            return Some(p.origin);
        }
        v.periods.insert(0, Period { start: None, offset, prev: offset, pid: None, origin: Origin::Given });
        None
    }

    pub fn set_scaling(&mut self, vm: usize, vcpu: Option<VcpuId>, scaling: Scaling) {
        if let Some(vm) = self.vms.get_mut(vm) {
            for (id, v) in vm.vcpus.iter_mut() {
                if vcpu.is_none_or(|x| x == *id) {
                    v.scaling = Some(scaling);
                }
            }
        }
    }

    /// The guest TSC rate the creation writes imply, per VM, when it is not
    /// the host's. KVM creates a vCPU with the offset that starts its TSC at 0,
    /// `-(scaled host TSC)` (x86.c `kvm_synchronize_tsc`), so a creation's
    /// `-next / ts` is the scaling ratio. `None` within 0.1% of 1.
    pub fn implied_scaling(&self) -> Vec<(usize, f64)> {
        self.vms
            .iter()
            .filter_map(|vm| {
                let p = vm.vcpus.values().flat_map(|v| v.periods.first()).find(|p| p.prev == 0 && p.pid.is_some())?;
                let ts = p.start?.0;
                if ts == 0 {
                    return None;
                }
                let r = p.offset.wrapping_neg() as f64 / ts as f64;
                ((r - 1.0).abs() > 1e-3 && r > 0.0 && r < 64.0).then_some((vm.index, r))
            })
            .collect()
    }

    pub fn vm_of_pid(&self, pid: i32) -> Option<usize> {
        self.vms.iter().position(|vm| vm.has_pid(pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ts: u64, pid: i32, vcpu: u32, prev: u64, next: u64) -> OffsetWrite {
        OffsetWrite { ts: HostTsc(ts), host_cpu: 0, pid, tgid: None, vcpu: VcpuId(vcpu), prev, next }
    }

    #[test]
    fn groups_by_creation_without_tgid() {
        let off_a = 100u64.wrapping_neg();
        let off_b = 500u64.wrapping_neg();
        let tl = OffsetTimeline::build(vec![
            w(100, 10, 0, 0, off_a),
            w(101, 11, 1, 0, off_a),
            w(500, 20, 0, 0, off_b),
            w(501, 21, 1, 0, off_b),
            w(900, 11, 1, off_a, 7),
        ]);
        assert_eq!(tl.vms.len(), 2);
        assert_eq!(tl.vms[0].pids().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(tl.vms[1].pids().collect::<Vec<_>>(), vec![20, 21]);
        assert_eq!(tl.vms[0].vcpus[&VcpuId(1)].periods.len(), 2);
        assert!(tl.anomalies.is_empty());
    }

    #[test]
    fn groups_by_tgid_and_flags_gaps() {
        let mut a = w(100, 10, 0, 0, 1);
        a.tgid = Some(9);
        let mut b = w(200, 11, 0, 0, 2);
        b.tgid = Some(8);
        let mut c = w(300, 10, 0, 5, 3); // prev 5, but the last next was 1
        c.tgid = Some(9);
        let tl = OffsetTimeline::build(vec![c, b, a]);
        assert_eq!(tl.vms.len(), 2);
        assert_eq!(tl.vms[0].tgid, Some(9));
        assert_eq!(
            tl.anomalies,
            vec![Anomaly::PrevMismatch { vm: 0, vcpu: VcpuId(0), ts: HostTsc(300), expected_prev: 1, prev: 5 }]
        );
    }
}
