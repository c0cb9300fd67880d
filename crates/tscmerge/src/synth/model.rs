//! The model behind `tscmerge synth`: a KVM host running VMs whose vCPU
//! threads enter and leave the guest, write TSC offsets at creation and when
//! the guest writes its TSC (rises and falls, at different times per vCPU),
//! optionally with TSC scaling, next to background host activity.
//!
//! Every entity (a vCPU thread, a busy host CPU) is a deterministic generator
//! seeded from (seed, vm, vcpu), independent of the others, producing its
//! events in true time order. An output is a k-way merge of the entities'
//! events it needs; each output re-runs the generators, so memory stays
//! O(entities) for traces of any size.

use crate::clock::{Conversion, Scaling};
use crate::time::HostTsc;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// vCPU count of each VM.
    pub vms: Vec<u32>,
    /// Host CPUs with background activity only; vCPU threads get one each after them.
    pub background_cpus: u32,
    /// Run windows (kvm_entry..kvm_exit) per vCPU.
    pub windows: u64,
    /// Guest events per window (the last one is a marker).
    pub events_per_window: u32,
    /// Every this many windows a vCPU's guest writes its TSC (0: never).
    pub tsc_write_every: u64,
    /// TSC scaling applied to every vCPU.
    pub scaling: Option<Scaling>,
    /// Host TSC when the recording starts.
    pub start: u64,
    /// TSC frequency, for the TSC2NSEC-like note in outputs.
    pub tsc_khz: u64,
    /// The host's side of exits: halts and preemptions of the vCPU threads
    /// ([`super::story`]), for `explain`'s ground truth.
    pub host_story: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            vms: vec![1, 2],
            background_cpus: 2,
            windows: 50,
            events_per_window: 4,
            tsc_write_every: 17,
            scaling: None,
            start: 1_000_000_000_000,
            tsc_khz: 2_000_000,
            host_story: false,
        }
    }
}

impl SynthConfig {
    pub fn vcpu_count(&self) -> u32 {
        self.vms.iter().sum()
    }
    pub fn host_cpus(&self) -> u32 {
        self.background_cpus + self.vcpu_count()
    }
    /// The VMM process id of VM `vm`.
    pub fn vmm_pid(&self, vm: usize) -> i32 {
        2000 + 100 * vm as i32
    }
    /// The host thread of a vCPU.
    pub fn vcpu_tid(&self, vm: usize, vcpu: u32) -> i32 {
        self.vmm_pid(vm) + 1 + vcpu as i32
    }
    /// The host CPU a vCPU thread runs on.
    pub fn vcpu_host_cpu(&self, vm: usize, vcpu: u32) -> u32 {
        self.background_cpus + self.vms[..vm].iter().sum::<u32>() + vcpu
    }
    /// Host TSC at which VM `vm` is created.
    pub fn vm_created(&self, vm: usize) -> u64 {
        self.start + 20_000_000 * vm as u64 + 1_000_000
    }
}

fn creation_offset(cfg: &SynthConfig, vm: usize) -> u64 {
    Conversion::new(0, cfg.scaling).to_guest(HostTsc(cfg.vm_created(vm))).0.wrapping_neg()
}

/// splitmix64: small, fast, and good enough for a model.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// What happened, on which side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happening {
    /// Host: the vCPU thread enters the guest.
    KvmEntry,
    /// Host: the guest exits; `reason` as VMX names it.
    KvmExit { reason: &'static str },
    /// Host: CPUID emulated for the exit just before.
    KvmCpuid { leaf: u32 },
    /// Host, offset instance: kvm_write_tsc_offset.
    WriteTscOffset { prev: u64, next: u64 },
    /// Guest: a context switch inside the guest.
    GuestSwitch { prev_pid: i32, next_pid: i32 },
    /// Guest: a trace_marker write right before an exit (`seq` counts them per vCPU).
    GuestMarker { seq: u64 },
    /// Host background: a context switch on a host CPU.
    HostSwitch { prev_pid: i32, next_pid: i32 },
    /// Host ([`super::story`]): the vCPU thread is switched out, runnable
    /// (preempted by `next_pid`) or asleep (to the idle task, pid 0).
    VcpuOut { runnable: bool, next_pid: i32 },
    /// Host: `waker_pid` wakes the sleeping vCPU thread on its CPU.
    VcpuWaking { waker_pid: i32 },
    /// Host: the vCPU thread is switched back in; `prev_pid` goes to sleep
    /// (or, the idle task, stays runnable).
    VcpuIn { prev_pid: i32 },
}

/// One generated event with its ground truth.
#[derive(Clone, Debug)]
pub struct SynthEvent {
    /// True host time.
    pub host: HostTsc,
    /// The guest's TSC for guest events.
    pub guest: Option<u64>,
    pub host_cpu: u32,
    /// Guest CPU (= vCPU index) for guest events, VM index for vCPU entities.
    pub vm: Option<usize>,
    pub vcpu: u32,
    pub what: Happening,
}

impl SynthEvent {
    pub fn is_guest(&self) -> bool {
        self.guest.is_some()
    }
    pub fn is_offset_write(&self) -> bool {
        matches!(self.what, Happening::WriteTscOffset { .. })
    }
}

/// A vCPU thread: creation write, then run windows with guest events,
/// exits, and now and then a guest TSC write that changes the offset.
#[derive(Clone, Debug)]
pub struct VcpuEntity {
    rng: Rng,
    vm: usize,
    vcpu: u32,
    host_cpu: u32,
    scaling: Option<Scaling>,
    offset: u64,
    /// The creation offset.
    base: u64,
    now: u64,
    window: u64,
    windows: u64,
    per_window: u32,
    write_every: u64,
    /// Events of the current window not yet handed out, in reverse order.
    pending: Vec<SynthEvent>,
    seq: u64,
    guest_pid: i32,
    created: bool,
    rise_next: bool,
    story: Option<super::story::HostStory>,
}

impl VcpuEntity {
    pub fn new(cfg: &SynthConfig, vm: usize, vcpu: u32) -> VcpuEntity {
        let created = cfg.vm_created(vm) + 1000 * vcpu as u64;
        VcpuEntity {
            rng: Rng::new(cfg.seed ^ ((vm as u64) << 32) ^ vcpu as u64),
            vm,
            vcpu,
            host_cpu: cfg.vcpu_host_cpu(vm, vcpu),
            scaling: cfg.scaling,
            // KVM synchronizes the vCPUs of a VM created together to the same
            // offset, the one that makes the guest TSC start near 0: with
            // scaling, minus the *scaled* host TSC (x86.c kvm_synchronize_tsc
            // → kvm_compute_l1_tsc_offset).
            offset: creation_offset(cfg, vm),
            base: creation_offset(cfg, vm),
            now: created,
            window: 0,
            windows: cfg.windows,
            per_window: cfg.events_per_window.max(1),
            write_every: cfg.tsc_write_every,
            pending: Vec::new(),
            seq: 0,
            guest_pid: 1,
            created: false,
            rise_next: true,
            story: cfg.host_story.then(|| super::story::HostStory::new(cfg, vm, vcpu)),
        }
    }

    fn ev(&self, host: u64, what: Happening) -> SynthEvent {
        SynthEvent { host: HostTsc(host), guest: None, host_cpu: self.host_cpu, vm: Some(self.vm), vcpu: self.vcpu, what }
    }

    fn guest_ev(&self, host: u64, what: Happening) -> SynthEvent {
        let g = Conversion::new(self.offset, self.scaling).to_guest(HostTsc(host));
        SynthEvent { guest: Some(g.0), ..self.ev(host, what) }
    }

    /// Fills `pending` with the next window (or the creation write).
    fn refill(&mut self) {
        let mut out = Vec::new();
        if !self.created {
            self.created = true;
            out.push(self.ev(self.now, Happening::WriteTscOffset { prev: 0, next: self.offset }));
        } else if self.window < self.windows {
            self.window += 1;
            let r = &mut self.rng;
            let mut t = self.now + r.range(2_000, 40_000);
            out.push(self.ev(t, Happening::KvmEntry));
            for i in 0..self.per_window {
                t += self.rng.range(300, 5_000);
                let what = if i + 1 == self.per_window {
                    self.seq += 1;
                    Happening::GuestMarker { seq: self.seq }
                } else {
                    let next = 1 + (self.rng.next() % 7) as i32;
                    let prev = std::mem::replace(&mut self.guest_pid, next);
                    Happening::GuestSwitch { prev_pid: prev, next_pid: next }
                };
                out.push(self.guest_ev(t, what));
            }
            t += self.rng.range(50, 400);
            let tsc_write = self.write_every > 0 && (self.window + 3 * self.vcpu as u64).is_multiple_of(self.write_every);
            let reason = if tsc_write { "MSR_WRITE" } else if self.window.is_multiple_of(3) { "HLT" } else { "CPUID" };
            out.push(self.ev(t, Happening::KvmExit { reason }));
            if reason == "CPUID" {
                t += self.rng.range(100, 300);
                out.push(self.ev(t, Happening::KvmCpuid { leaf: 0x4000_0000 | self.vcpu }));
            }
            if tsc_write {
                // Steps far larger than the gaps between guest events, so a
                // fall always shows as a backward step of the guest TSC.
                // Offsets alternate between the creation offset and a rise
                // above it, so the guest TSC never wraps below zero.
                let delta = self.rng.range(10_000_000, 5_000_000_000);
                let next = if self.rise_next { self.base.wrapping_add(delta) } else { self.base };
                self.rise_next = !self.rise_next;
                t += self.rng.range(200, 2_000);
                out.push(self.ev(t, Happening::WriteTscOffset { prev: self.offset, next }));
                self.offset = next;
            }
            if let Some(mut story) = self.story.take() {
                t = story.after_exit(&self.ev(t, Happening::KvmEntry), reason, t, &mut out);
                self.story = Some(story);
            }
            self.now = t;
        }
        out.reverse();
        self.pending = out;
    }
}

impl Iterator for VcpuEntity {
    type Item = SynthEvent;
    fn next(&mut self) -> Option<SynthEvent> {
        if self.pending.is_empty() {
            self.refill();
        }
        self.pending.pop()
    }
}

/// A host CPU with background context switches until `end`.
#[derive(Clone, Debug)]
pub struct HostNoise {
    rng: Rng,
    cpu: u32,
    now: u64,
    end: u64,
    pid: i32,
}

impl HostNoise {
    pub fn new(cfg: &SynthConfig, cpu: u32) -> HostNoise {
        // Long enough to cover the VMs' activity.
        let end = cfg.vm_created(cfg.vms.len()) + cfg.windows * 60_000;
        HostNoise { rng: Rng::new(cfg.seed.wrapping_mul(31) ^ 0xfeed ^ cpu as u64), cpu, now: cfg.start, end, pid: 0 }
    }
}

impl Iterator for HostNoise {
    type Item = SynthEvent;
    fn next(&mut self) -> Option<SynthEvent> {
        self.now += self.rng.range(20_000, 400_000);
        if self.now > self.end {
            return None;
        }
        let next = if self.pid == 0 { 100 + (self.rng.next() % 50) as i32 } else { 0 };
        let prev = std::mem::replace(&mut self.pid, next);
        Some(SynthEvent {
            host: HostTsc(self.now),
            guest: None,
            host_cpu: self.cpu,
            vm: None,
            vcpu: 0,
            what: Happening::HostSwitch { prev_pid: prev, next_pid: next },
        })
    }
}
