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
    /// KVM's other offset writes (arch/x86/kvm/x86.c), each opt-in.
    pub patterns: Patterns,
    /// Which run-window evidence the host recording keeps.
    pub run_windows: RunWindowEvents,
}

/// Offset writes as arch/x86/kvm/x86.c makes them, besides the creation
/// write and the guest's IA32_TSC writes (`tsc_write_every`). Each is
/// modelled from the vCPU thread, as the tracepoint fires there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns {
    /// A host-initiated write of 0 right after creation that keeps the
    /// matched offset (`kvm_synchronize_tsc` "matched": prev == next).
    pub host_zero: bool,
    /// Cycles by which every vCPU's offset falls once, that long after its
    /// creation and before the guest runs (a VMM writing the TSC at reset).
    pub late_fall: u64,
    /// Unstable host TSC: the thread leaves its CPU every few windows; at
    /// `vcpu_load` the offset falls so the guest TSC resumes where
    /// `vcpu_put` left it, and at the clock update (`tsc_catchup`) it rises
    /// back less a drift of this many cycles (5000-6000 in the model,
    /// 0: off).
    pub unstable_drift: u64,
    /// Every this many windows the guest writes IA32_TSC_ADJUST: the offset
    /// moves by the write's delta, up or down.
    pub tsc_adjust_every: u64,
    /// Every this many windows (the same for every vCPU) the host suspends
    /// and resumes: at its next `vcpu_load` each vCPU's offset rises by the
    /// time the host TSC lost.
    pub resume_every: u64,
    /// Every this many windows the VMM pauses the VM and restores each
    /// vCPU's offset (KVM_VCPU_TSC_OFFSET), up or down.
    pub restore_every: u64,
    /// vCPU threads come back on another host CPU after leaving theirs.
    pub migrate: bool,
}

impl Patterns {
    /// Every pattern at once.
    pub fn all() -> Patterns {
        Patterns { host_zero: true, late_fall: 150_000_000, unstable_drift: 5_000, tsc_adjust_every: 11, resume_every: 23, restore_every: 29, migrate: true }
    }

    /// `host-zero,late-fall[=CYCLES],unstable[=DRIFT],tsc-adjust[=EVERY],resume[=EVERY],restore[=EVERY],migrate`
    /// or `all`; a bare name takes [`Patterns::all`]'s value.
    pub fn parse(s: &str) -> Result<Patterns, String> {
        let all = Patterns::all();
        let mut p = Patterns::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v.parse::<u64>().map_err(|_| format!("{item}: expected NAME=NUMBER"))?)),
                None => (item, None),
            };
            match name {
                "all" => p = all.clone(),
                "host-zero" => p.host_zero = true,
                "late-fall" => p.late_fall = value.unwrap_or(all.late_fall),
                "unstable" => p.unstable_drift = value.unwrap_or(all.unstable_drift),
                "tsc-adjust" => p.tsc_adjust_every = value.unwrap_or(all.tsc_adjust_every),
                "resume" => p.resume_every = value.unwrap_or(all.resume_every),
                "restore" => p.restore_every = value.unwrap_or(all.restore_every),
                "migrate" => p.migrate = true,
                _ => return Err(format!("{name}: not a pattern (host-zero, late-fall, unstable, tsc-adjust, resume, restore, migrate, all)")),
            }
        }
        Ok(p)
    }
}

/// What the host recording keeps of the vCPU threads' run windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunWindowEvents {
    /// kvm_entry/kvm_exit and the threads' sched_switch.
    #[default]
    All,
    /// sched_switch only: on-CPU windows.
    Sched,
    /// Neither: no evidence for ambiguous events.
    None,
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
            patterns: Patterns::default(),
            run_windows: RunWindowEvents::All,
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
    /// Whether the host recording keeps this host-side event.
    pub fn keeps(&self, e: &SynthEvent) -> bool {
        let window = matches!(e.what, Happening::KvmEntry | Happening::KvmExit { .. } | Happening::KvmCpuid { .. });
        let vcpu_switch = e.vm.is_some() && matches!(e.what, Happening::HostSwitch { .. });
        match self.run_windows {
            RunWindowEvents::All => true,
            RunWindowEvents::Sched => !window,
            RunWindowEvents::None => !window && !vcpu_switch,
        }
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
    /// Host ([`super::story`]): an interrupt handler on the vCPU thread's
    /// CPU enters or exits, a hard IRQ (`num` its number) or a softirq
    /// (`num` its vector), in the vCPU thread or, while it sleeps, in the
    /// idle task (`idle`).
    HostIrq { soft: bool, entry: bool, num: i64, idle: bool },
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
    patterns: Patterns,
    /// The thread's home CPU and the one it migrates to.
    home_cpu: u32,
    away_cpu: u32,
    tid: i32,
    /// What IA32_TSC_ADJUST writes added to the offset so far (kept >= 0
    /// so the guest TSC never wraps below zero).
    adjusted: u64,
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
            patterns: cfg.patterns.clone(),
            home_cpu: cfg.vcpu_host_cpu(vm, vcpu),
            away_cpu: if cfg.background_cpus > 0 { cfg.vcpu_host_cpu(vm, vcpu) % cfg.background_cpus } else { cfg.vcpu_host_cpu(vm, vcpu) },
            tid: cfg.vcpu_tid(vm, vcpu),
            adjusted: 0,
        }
    }

    /// The guest TSC at host time `t` with the current offset.
    fn guest_at(&self, t: u64) -> u64 {
        Conversion::new(self.offset, self.scaling).to_guest(HostTsc(t)).0
    }

    /// A write of `next` at `t` (the tracepoint, from this vCPU's thread).
    fn write(&mut self, out: &mut Vec<SynthEvent>, t: u64, next: u64) {
        out.push(self.ev(t, Happening::WriteTscOffset { prev: self.offset, next }));
        self.offset = next;
    }

    /// The thread leaves its CPU after `now` and comes back (`vcpu_load`):
    /// the writes KVM makes there by the patterns due at this window.
    /// Returns the time the thread is back.
    fn leave_and_return(&mut self, out: &mut Vec<SynthEvent>, resume: bool, restore: bool) -> u64 {
        let me = self.tid;
        let mut t = self.now + self.rng.range(500, 3_000);
        out.push(self.ev(t, Happening::HostSwitch { prev_pid: me, next_pid: 0 }));
        let put = t;
        let put_guest = self.guest_at(put);
        t += if resume { self.rng.range(2_000_000, 20_000_000) } else { self.rng.range(20_000, 400_000) };
        if self.patterns.migrate {
            self.host_cpu = if self.host_cpu == self.home_cpu { self.away_cpu } else { self.home_cpu };
        }
        out.push(self.ev(t, Happening::HostSwitch { prev_pid: 0, next_pid: me }));
        if resume {
            // The host TSC went on while suspended here (a host whose TSC
            // stops would lose it): KVM adds what it lost to every offset
            // (x86.c kvm_arch_hardware_enable → adjust_tsc_offset_host).
            t += self.rng.range(300, 1_500);
            let lost = self.rng.range(1_000_000, 400_000_000);
            self.write(out, t, self.offset.wrapping_add(lost));
        }
        if restore {
            // KVM_VCPU_TSC_OFFSET from the VMM: any value; here the
            // current one moved up or down, never below the creation's.
            t += self.rng.range(300, 1_500);
            let delta = self.rng.range(1_000_000, 200_000_000);
            // Down only where the guest TSC stays well above zero.
            let room = self.guest_at(t) > delta.saturating_add(1_000_000_000);
            let next = if self.rng.next() & 1 == 0 || !room { self.offset.wrapping_add(delta) } else { self.offset.wrapping_sub(delta) };
            self.write(out, t, next);
        }
        if self.patterns.unstable_drift > 0 {
            // vcpu_load on an unstable TSC: the guest resumes at the TSC
            // value vcpu_put left (x86.c kvm_arch_vcpu_load, `tsc_catchup`
            // path), then the clock update catches up less the drift.
            t += self.rng.range(100, 400);
            let load = t;
            let fallen = put_guest.wrapping_sub(Conversion::new(0, self.scaling).to_guest(HostTsc(load)).0);
            let before = self.offset;
            self.write(out, load, fallen);
            t += self.rng.range(200, 1_000);
            let catch_up = before.wrapping_sub(self.patterns.unstable_drift + self.rng.range(0, 1_000));
            self.write(out, t, catch_up);
        }
        t
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
            if self.patterns.host_zero {
                // The VMM's host-initiated write of 0 at reset, matched to
                // the VM's offset: written again, unchanged.
                self.now += 500;
                self.write(&mut out, self.now, self.offset);
            }
            if self.patterns.late_fall > 0 {
                self.now += self.patterns.late_fall;
                let next = self.offset.wrapping_sub(self.patterns.late_fall);
                self.write(&mut out, self.now, next);
                // Keeps the guest TSC positive: the base is the lowest
                // offset the other patterns return to.
                self.base = next;
            }
        } else if self.window < self.windows {
            self.window += 1;
            let p = &self.patterns;
            let every = |n: u64, w: u64| n > 0 && w.is_multiple_of(n);
            let resume = every(p.resume_every, self.window);
            let restore = every(p.restore_every, self.window);
            let leave = resume || restore || (p.unstable_drift > 0 || p.migrate) && self.window.is_multiple_of(4);
            if leave {
                self.now = self.leave_and_return(&mut out, resume, restore);
            }
            if every(self.patterns.tsc_adjust_every, self.window + self.vcpu as u64) {
                // The guest's IA32_TSC_ADJUST write, inside an exit just
                // before this window (x86.c kvm_set_msr_common
                // MSR_IA32_TSC_ADJUST → adjust_tsc_offset_guest).
                let delta = self.rng.range(10_000, 50_000_000);
                let down = self.rng.next() & 1 == 0 && self.adjusted >= delta;
                let t = self.now + self.rng.range(200, 1_000);
                let next = if down { self.offset.wrapping_sub(delta) } else { self.offset.wrapping_add(delta) };
                self.adjusted = if down { self.adjusted - delta } else { self.adjusted + delta };
                self.write(&mut out, t, next);
                self.now = t;
            }
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
                let next = if self.rise_next { self.base.wrapping_add(delta).wrapping_add(self.adjusted) } else { self.base.wrapping_add(self.adjusted) };
                self.rise_next = !self.rise_next;
                t += self.rng.range(200, 2_000);
                out.push(self.ev(t, Happening::WriteTscOffset { prev: self.offset, next }));
                self.offset = next;
            }
            if let Some(mut story) = self.story.take() {
                let last = self.window == self.windows;
                t = story.after_exit(&self.ev(t, Happening::KvmEntry), reason, t, last, &mut out);
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
