//! Where a vCPU's offsets come from, and which source wins where several
//! cover the same time. This is the one place the precedence is decided;
//! README and `--help` repeat it.
//!
//! Per vCPU, in order:
//! 1. **`kvm_write_tsc_offset`** (host recording): each write holds from its
//!    host timestamp on. With `--offsets auto` (the default), KVM debugfs
//!    `tsc-offset` snapshots replace them when they contradict them (a host
//!    that does not apply the offsets it reports: PVM, FACTS.md); with
//!    `--offsets debugfs` the snapshots are used in any case
//!    ([`super::debugfs`]).
//! 2. **TIME_SHIFT** (trace-cmd guest recording, [`time_shift_periods`]):
//!    before the first offset of 1, or everywhere when 1 has none. Where 1
//!    covers a sample's time, 1 wins; a sample that disagrees with it is
//!    kept in [`TimeShiftUse`] and said in one sentence.
//! 3. **`--tsc-offset`**: from the beginning of time until the first offset
//!    of 1 or 2, when neither covers the beginning.
//!
//! Scaling: `--tsc-scaling` (or a guest's own), else debugfs, else TIME_SHIFT.
//!
//! Each vCPU's host thread ([`Vm::vcpu_threads`]), in order: the GUEST
//! option's map, where the host recording holds an event of that thread;
//! else the one thread that wrote that vCPU's `kvm_write_tsc_offset` (and
//! no other vCPU's: a VMM that creates its vCPUs from one thread, as
//! Firecracker does, writes their first offsets from it); else, while the
//! check runs, the thread whose `kvm_entry` names the vCPU in its `vcpu`
//! field ([`crate::check`]). `--guest ...,pid=` and automatic matching
//! choose the VM, not the thread.
//!
//! TIME_SHIFT (trace-cmd lib/trace-cmd/trace-timesync-kvm.c): at each sample
//! the guest writes a marker and sends its raw trace time; the host answers
//! with `-tsc-offset` and the vCPU's `tsc-scaling-ratio` and fraction bits
//! from KVM debugfs (ratio 1 and 0 bits where KVM's ratio is its default).
//! So a sample is (guest time, −offset, ratio, frac) and its host time is
//! the exact inverse of `guest = ((host * ratio) >> frac) + offset`
//! ([`super::Conversion::to_host`]). trace-cmd itself applies
//! `((guest * ratio) >> frac) − offset`, the kernel's formula read backwards,
//! which is only right without scaling. Samples are ordered by their host
//! time, not by their guest time as trace-cmd sorts them: after a guest
//! writes its TSC backwards the guest times of later samples are smaller.

use std::collections::BTreeMap;

use ftrace::tracedat::{Guest, TimeShift, TimeShiftSample};
use serde::Serialize;

use super::convert::{Conversion, Scaling};
use super::timeline::{GuestOption, OffsetTimeline, Origin, Period, VcpuTimeline, Vm};
use crate::time::{GuestTsc, HostTsc, VcpuId};

/// One TIME_SHIFT sample as the timeline used it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SampleUse {
    pub guest: GuestTsc,
    /// The sample's guest time converted with its own offset.
    pub host: HostTsc,
    /// KVM's offset (the stored value negated), two's complement.
    pub offset: u64,
    /// The tracepoint's (or debugfs's) offset in force at `host`, when
    /// they cover it: they win there.
    pub covered_by: Option<u64>,
}

impl SampleUse {
    pub fn disagrees(&self) -> bool {
        self.covered_by.is_some_and(|o| o != self.offset)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TimeShiftVcpu {
    pub vcpu: u32,
    pub scaling: Option<Scaling>,
    /// By host time.
    pub samples: Vec<SampleUse>,
}

/// A guest's TIME_SHIFT option and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct TimeShiftUse {
    pub guest: String,
    pub vm: usize,
    /// The host recording's TRACEID, as the guest's option names it.
    pub peer_trace_id: u64,
    pub vcpus: Vec<TimeShiftVcpu>,
}

impl TimeShiftUse {
    /// `(vcpu, sample)` for every sample that another source covers and
    /// contradicts.
    pub fn disagreements(&self) -> impl Iterator<Item = (u32, &SampleUse)> + '_ {
        self.vcpus.iter().flat_map(|v| v.samples.iter().filter(|s| s.disagrees()).map(move |s| (v.vcpu, s)))
    }

    /// One sentence when samples disagree with the tracepoint, else `None`.
    pub fn disagreement_note(&self) -> Option<String> {
        let n = self.disagreements().count();
        let (vcpu, s) = self.disagreements().next()?;
        let covered: usize = self.vcpus.iter().map(|v| v.samples.iter().filter(|s| s.covered_by.is_some()).count()).sum();
        Some(format!(
            "guest {}: {n} of the {covered} TIME_SHIFT samples that kvm_write_tsc_offset also covers disagree with it (vCPU {vcpu} at host {}: TIME_SHIFT offset {}, tracepoint {}): the tracepoint's offsets are used there (tscmerge offsets HOST GUEST lists them)",
            self.guest,
            s.host.0,
            s.offset as i64,
            s.covered_by.unwrap_or_default() as i64
        ))
    }
}

/// One vCPU's TIME_SHIFT samples as offset periods: the first holds from the
/// beginning of time (as trace-cmd applies it to earlier events), each later
/// change from its sample's host time. Errors are one sentence, without the
/// guest's name.
pub fn time_shift_periods(samples: &[TimeShiftSample]) -> Result<(Vec<SampleUse>, Vec<Period>, Option<Scaling>), String> {
    let Some(first) = samples.first() else { return Err("no samples".into()) };
    let scaling_of = |s: &TimeShiftSample| -> Result<Scaling, String> {
        if s.scaling == 0 || s.frac_bits >= 64 {
            return Err(format!("a sample has scaling ratio {} with {} fraction bits, which no TSC runs at", s.scaling, s.frac_bits));
        }
        Ok(Scaling { ratio: s.scaling, frac_bits: s.frac_bits as u32 })
    };
    let scaling = scaling_of(first)?;
    let mut uses = Vec::with_capacity(samples.len());
    for s in samples {
        if scaling_of(s)? != scaling {
            return Err(format!(
                "the scaling changes between samples ({}:{} then {}:{}), which one vCPU's TSC cannot do while it runs",
                first.scaling, first.frac_bits, s.scaling, s.frac_bits
            ));
        }
        let offset = s.kvm_offset();
        let host = Conversion::new(offset, Some(scaling)).to_host(GuestTsc(s.time));
        uses.push(SampleUse { guest: GuestTsc(s.time), host, offset, covered_by: None });
    }
    uses.sort_by_key(|u| (u.host, u.guest));
    for w in uses.windows(2) {
        if (w[0].host == w[1].host || w[0].guest == w[1].guest) && w[0].offset != w[1].offset {
            return Err(format!(
                "contradictory samples: guest time {} with offset {} and guest time {} with offset {} fall at the same {} time",
                w[0].guest.0,
                w[0].offset as i64,
                w[1].guest.0,
                w[1].offset as i64,
                if w[0].host == w[1].host { "host" } else { "guest" }
            ));
        }
    }
    let mut periods: Vec<Period> = Vec::new();
    for u in &uses {
        match periods.last() {
            Some(p) if p.offset == u.offset => {}
            last => periods.push(Period {
                start: last.map(|_| u.host),
                offset: u.offset,
                prev: last.map_or(u.offset, |p| p.offset),
                pid: None,
                origin: Origin::TimeShift,
            }),
        }
    }
    Ok((uses, periods, Some(scaling).filter(|s| !s.is_identity())))
}

/// Where a vCPU's host thread was learnt (module comment, in precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadFrom {
    /// The host's trace-cmd GUEST option.
    GuestOption,
    /// The only thread that wrote the vCPU's offsets.
    OffsetWrites,
    /// `kvm_entry`'s `vcpu` field (found while checking).
    KvmEntry,
}

impl ThreadFrom {
    pub fn name(self) -> &'static str {
        match self {
            ThreadFrom::GuestOption => "GUEST option",
            ThreadFrom::OffsetWrites => "offset writes",
            ThreadFrom::KvmEntry => "kvm_entry vcpu field",
        }
    }
}

impl Vm {
    /// Each vCPU's host thread where the GUEST option or the offset writes
    /// tell it (module comment); `seen(pid)` says whether the host
    /// recording holds an event of `pid` (a GUEST thread it never saw is
    /// passed over).
    pub fn vcpu_threads(&self, seen: impl Fn(i32) -> bool) -> BTreeMap<u32, (i32, ThreadFrom)> {
        // Writer thread → the vCPUs it wrote offsets for.
        let mut vcpus_of: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for (id, t) in &self.vcpus {
            for pid in t.periods.iter().filter(|p| p.origin == Origin::Tracepoint).filter_map(|p| p.pid) {
                let v = vcpus_of.entry(pid).or_default();
                if !v.contains(&id.0) {
                    v.push(id.0);
                }
            }
        }
        let mut out = BTreeMap::new();
        for (id, t) in &self.vcpus {
            if let Some(&pid) = self.guest_option.as_ref().and_then(|o| o.vcpu_pids.get(&id.0)).filter(|&&p| seen(p)) {
                out.insert(id.0, (pid, ThreadFrom::GuestOption));
                continue;
            }
            let mut own: Vec<i32> = t.periods.iter().filter(|p| p.origin == Origin::Tracepoint).filter_map(|p| p.pid).filter(|p| vcpus_of[p].len() == 1).collect();
            own.dedup();
            own.sort_unstable();
            own.dedup();
            if let [pid] = own[..] {
                out.insert(id.0, (pid, ThreadFrom::OffsetWrites));
            }
        }
        out
    }
}

impl OffsetTimeline {
    /// Adds what a host's GUEST option says: the VM whose offset writers
    /// are the option's vCPU threads, else a new VM with those threads and
    /// no offsets yet. Returns its index.
    pub fn add_guest_option(&mut self, g: &Guest) -> usize {
        let vcpu_pids: BTreeMap<u32, i32> = g.vcpus.iter().map(|&(v, p)| (v, p as i32)).collect();
        let vm = match self.vms.iter().position(|vm| vm.guest_option.is_none() && vcpu_pids.values().any(|&p| vm.has_pid(p))) {
            Some(vm) => vm,
            None => {
                let index = self.vms.len();
                self.vms.push(Vm { index, tgid: None, vcpus: BTreeMap::new(), first_write: HostTsc(0), guest_option: None });
                index
            }
        };
        let v = &mut self.vms[vm];
        for (&vcpu, &pid) in &vcpu_pids {
            v.vcpus.entry(VcpuId(vcpu)).or_insert_with(|| VcpuTimeline { pid: Some(pid), ..Default::default() });
        }
        v.guest_option = Some(GuestOption { name: g.name.clone(), trace_id: g.trace_id, vcpu_pids });
        vm
    }

    /// A new VM whose offsets will come from a guest's TIME_SHIFT alone.
    pub fn add_empty_vm(&mut self) -> usize {
        let index = self.vms.len();
        self.vms.push(Vm { index, tgid: None, vcpus: BTreeMap::new(), first_write: HostTsc(0), guest_option: None });
        index
    }

    /// Gives VM `vm` the offsets of a guest's TIME_SHIFT where nothing of
    /// higher precedence covers them (module comment). TIME_SHIFT CPU `i` is
    /// vCPU `i` (trace-timesync-kvm.c reads `vcpu<i>`'s debugfs files).
    /// Errors are one sentence, without the guest's name.
    pub fn apply_time_shift(&mut self, vm: usize, guest: &str, ts: &TimeShift) -> Result<TimeShiftUse, String> {
        if ts.sample_count() == 0 {
            return Err(format!("its TIME_SHIFT option holds no samples ({} vCPUs, 0 samples): trace-cmd's time sync did not run", ts.cpus.len()));
        }
        if ts.flags & TimeShift::FLAG_INTERPOLATE != 0 {
            // Offsets between samples interpolated: a clock-drift model (PTP
            // sync), not KVM's offsets, which hold until written.
            return Err(format!(
                "its TIME_SHIFT option asks for interpolation between samples (flags {:#x}), which the KVM protocol never does: not a KVM guest's offsets",
                ts.flags
            ));
        }
        let mut out = TimeShiftUse { guest: guest.to_string(), vm, peer_trace_id: ts.peer_trace_id, vcpus: Vec::new() };
        for (i, cpu) in ts.cpus.iter().enumerate() {
            let samples: Vec<TimeShiftSample> = cpu.samples().collect();
            if samples.is_empty() {
                continue;
            }
            let (mut uses, periods, scaling) = time_shift_periods(&samples).map_err(|e| format!("its TIME_SHIFT samples of vCPU {i}: {e}"))?;
            let id = VcpuId(i as u32);
            // What covers the vCPU already, and from when.
            let covered_from = self.vms[vm].vcpus.get(&id).and_then(|t| t.periods.first()).map(|p| p.start);
            for u in &mut uses {
                u.covered_by = match covered_from {
                    Some(None) => self.offset_at(vm, id, u.host),
                    Some(Some(from)) if u.host >= from => self.offset_at(vm, id, u.host),
                    _ => None,
                };
            }
            let t = self.vms[vm].vcpus.entry(id).or_default();
            match covered_from {
                None => t.periods = periods,
                Some(None) => {} // covered from the beginning: nothing to fill
                Some(Some(from)) => {
                    let before: Vec<Period> = periods.into_iter().filter(|p| p.start.is_none_or(|s| s < from)).collect();
                    t.periods.splice(0..0, before);
                }
            }
            if t.scaling.is_none() {
                t.scaling = scaling;
            }
            out.vcpus.push(TimeShiftVcpu { vcpu: i as u32, scaling, samples: uses });
        }
        Ok(out)
    }
}

/// The other way: one vCPU's offset periods as TIME_SHIFT samples that
/// trace-cmd applies as we do (trace-input.c `timestamp_host_sync`), for a
/// guest file we write. One sample per period at the guest time of its start
/// (0 for a period from the beginning), the offset stored negated, the
/// scaling as trace-timesync-kvm.c sends it (ratio 1 and 0 fraction bits
/// when unscaled); then the last period once more, at `end` (the vCPU's last
/// guest time, or one past the last start), because trace-cmd uses the
/// first of two samples for every time when there are two, and the
/// next-to-last sample past the last one. Exact without scaling; with
/// scaling trace-cmd computes `((guest * ratio) >> frac) - offset`, the
/// host→guest formula backwards, and is off as FACTS.md says. Guest times
/// that fall back (an offset lowered) cannot be searched by trace-cmd: the
/// second value is how many samples are out of order (0 when trace-cmd can
/// use them all).
pub fn time_shift_samples(tl: &VcpuTimeline, end: Option<GuestTsc>) -> (Vec<ftrace::write::TsyncSample>, usize) {
    let (ratio, frac) = tl.scaling.map_or((1, 0), |s| (s.ratio, u64::from(s.frac_bits)));
    let mut out: Vec<ftrace::write::TsyncSample> = Vec::with_capacity(tl.periods.len() + 1);
    for (i, p) in tl.periods.iter().enumerate() {
        let time = match (p.start, tl.conversion(i)) {
            (Some(h), Some(c)) => c.to_guest(h).0,
            _ => 0,
        };
        out.push(ftrace::write::TsyncSample { time, offset: (p.offset as i64).wrapping_neg(), scaling: ratio, fraction: frac });
    }
    let disorder = out.windows(2).filter(|w| w[1].time <= w[0].time).count();
    if let Some(&last) = out.last() {
        let time = end.map(|g| g.0).filter(|&g| g > last.time).unwrap_or(last.time.saturating_add(1));
        out.push(ftrace::write::TsyncSample { time, ..last });
    }
    (out, disorder)
}

#[cfg(test)]
mod tests {
    use super::super::timeline::OffsetWrite;
    use super::*;

    fn s(time: u64, kvm_offset: i64) -> TimeShiftSample {
        TimeShiftSample { time, offset: -kvm_offset, scaling: 1, frac_bits: 0 }
    }

    #[test]
    fn samples_become_periods_in_host_order() {
        // Offset -1000 from the start; by host 5500 the guest has set its
        // TSC back (offset -3000): the later sample has the smaller guest time.
        let (uses, periods, scaling) = time_shift_periods(&[s(100, -1000), s(4000, -1000), s(2500, -3000)]).unwrap();
        assert_eq!(scaling, None);
        assert_eq!(uses.iter().map(|u| u.host.0).collect::<Vec<_>>(), vec![1100, 5000, 5500]);
        assert_eq!(periods.len(), 2);
        assert_eq!((periods[0].start, periods[0].offset as i64), (None, -1000));
        assert_eq!((periods[1].start, periods[1].offset as i64, periods[1].origin), (Some(HostTsc(5500)), -3000, Origin::TimeShift));
    }

    #[test]
    fn bad_samples_are_one_sentence() {
        assert_eq!(time_shift_periods(&[]).unwrap_err(), "no samples");
        let e = time_shift_periods(&[s(100, -10), s(100, -20)]).unwrap_err();
        assert!(e.starts_with("contradictory samples: guest time 100"), "{e}");
        let mut a = s(100, 0);
        a.scaling = 0;
        assert!(time_shift_periods(&[a]).unwrap_err().contains("scaling ratio 0"));
        let mut b = s(200, 0);
        b.scaling = 3 << 46;
        b.frac_bits = 48;
        assert!(time_shift_periods(&[s(100, 0), b]).unwrap_err().contains("scaling changes"));
    }

    #[test]
    fn scaled_samples_use_the_exact_inverse() {
        // ratio 0.75: guest = host * 3/4 + offset.
        let sc = Scaling { ratio: 3 << 46, frac_bits: 48 };
        let off = 500u64.wrapping_neg();
        let host = 40_000u64;
        let g = Conversion::new(off, Some(sc)).to_guest(HostTsc(host));
        let sample = TimeShiftSample { time: g.0, offset: 500, scaling: sc.ratio, frac_bits: 48 };
        let (uses, _, scaling) = time_shift_periods(&[sample]).unwrap();
        assert_eq!((uses[0].host, scaling), (HostTsc(host), Some(sc)));
    }

    #[test]
    fn tracepoint_wins_where_it_covers() {
        let mut tl = OffsetTimeline::build(vec![OffsetWrite {
            ts: HostTsc(10_000),
            host_cpu: 0,
            pid: 7,
            tgid: None,
            vcpu: VcpuId(0),
            prev: 1000u64.wrapping_neg(),
            next: 2000u64.wrapping_neg(),
        }]);
        let ts = TimeShift {
            peer_trace_id: 1,
            flags: 0,
            cpus: vec![ftrace::tracedat::TimeShiftCpu {
                // Samples at host 1100 (offset -1000) and host 12000 with
                // offset -2500, where the tracepoint says -2000.
                times: vec![100, 9500],
                offsets: vec![1000, 2500],
                scalings: vec![1, 1],
                frac_bits: Some(vec![0, 0]),
            }],
        };
        let u = tl.apply_time_shift(0, "g", &ts).unwrap();
        let p = &tl.vms[0].vcpus[&VcpuId(0)].periods;
        assert_eq!(p.iter().map(|p| (p.start.map(|s| s.0), p.offset as i64, p.origin)).collect::<Vec<_>>(), vec![
            (None, -1000, Origin::TimeShift),
            (Some(10_000), -2000, Origin::Tracepoint)
        ]);
        assert_eq!(u.disagreements().count(), 1);
        let note = u.disagreement_note().unwrap();
        assert!(note.starts_with("guest g: 1 of the 1 TIME_SHIFT samples") && note.contains("TIME_SHIFT offset -2500, tracepoint -2000"), "{note}");
        let empty = TimeShift { peer_trace_id: 1, flags: 0, cpus: vec![Default::default()] };
        assert!(tl.apply_time_shift(0, "g", &empty).unwrap_err().contains("holds no samples"));
    }

    #[test]
    fn vcpu_threads_in_precedence() {
        let w = |ts: u64, pid: i32, vcpu: u32, prev: u64| OffsetWrite { ts: HostTsc(ts), host_cpu: 0, pid, tgid: Some(1), vcpu: VcpuId(vcpu), prev, next: prev + 1 };
        // vCPUs 0-2 created by the VMM's main thread 1 (Firecracker); vCPU 0
        // then written by 10, vCPU 1 by 11 and 12 (ambiguous), vCPU 2 by
        // nobody else.
        let mut tl = OffsetTimeline::build(vec![w(1, 1, 0, 0), w(2, 1, 1, 0), w(3, 1, 2, 0), w(4, 10, 0, 1), w(5, 11, 1, 1), w(6, 12, 1, 2)]);
        let t = tl.vms[0].vcpu_threads(|_| true);
        assert_eq!(t, BTreeMap::from([(0, (10, ThreadFrom::OffsetWrites))]));
        // A GUEST option wins where the host saw its thread.
        tl.vms[0].guest_option = Some(GuestOption { name: "g".into(), trace_id: 1, vcpu_pids: BTreeMap::from([(0, 20), (1, 21)]) });
        let t = tl.vms[0].vcpu_threads(|p| p != 20);
        assert_eq!(t, BTreeMap::from([(0, (10, ThreadFrom::OffsetWrites)), (1, (21, ThreadFrom::GuestOption))]));
    }

    #[test]
    fn guest_option_joins_its_writers_vm_or_opens_one() {
        let mut tl = OffsetTimeline::build(vec![OffsetWrite { ts: HostTsc(1), host_cpu: 0, pid: 7, tgid: None, vcpu: VcpuId(0), prev: 0, next: 5 }]);
        let g = Guest { name: "a".into(), trace_id: 9, vcpus: vec![(0, 7), (1, 8)] };
        assert_eq!(tl.add_guest_option(&g), 0);
        assert_eq!(tl.vms[0].vcpus[&VcpuId(1)].pid, Some(8));
        let h = Guest { name: "b".into(), trace_id: 10, vcpus: vec![(0, 70)] };
        assert_eq!(tl.add_guest_option(&h), 1);
        assert_eq!(tl.vms[1].guest_option.as_ref().unwrap().vcpu_pids[&0], 70);
    }

    #[test]
    fn time_shift_samples_step_where_offsets_change() {
        let p = |start: Option<u64>, offset: u64| Period { start: start.map(HostTsc), offset, prev: 0, pid: None, origin: Origin::Tracepoint };
        let tl = VcpuTimeline { pid: None, periods: vec![p(Some(100), 1000), p(Some(5000), 2000)], scaling: None };
        let (s, disorder) = time_shift_samples(&tl, Some(GuestTsc(9000)));
        assert_eq!(disorder, 0);
        let t: Vec<(u64, i64)> = s.iter().map(|x| (x.time, x.offset)).collect();
        // Guest time of each start (host + offset), offsets negated, the last again at the end.
        assert_eq!(t, [(1100, -1000), (7000, -2000), (9000, -2000)]);
        // An offset lowered: the guest time of the second start (6000) is
        // before the first's (6000 vs 5000 + 1000 = 6000): out of order.
        let tl = VcpuTimeline { periods: vec![p(Some(5000), 1000), p(Some(6000), 0)], ..tl };
        let (s, disorder) = time_shift_samples(&tl, None);
        assert_eq!((disorder, s.len(), s[2].time), (1, 3, 6001));
        assert!(time_shift_samples(&VcpuTimeline::default(), None).0.is_empty());
    }
}
