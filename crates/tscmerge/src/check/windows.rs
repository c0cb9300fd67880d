use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::event::{EventView, Payload};
use crate::merge::Sink;
use crate::clock::ThreadFrom;
use crate::Result;

pub use crate::runs::WindowKind;

/// An instruction that reads the TSC, as emulated on the host and as named
/// by the guest's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TscRead {
    /// `rdtsc` (0f 31).
    Rdtsc,
    /// `rdmsr` (0f 32): KVM's emulator fires `kvm_msr` right after reading
    /// the MSR (arch/x86/kvm/x86.c `emulator_get_msr_with_filter`), so that
    /// event closes the window a few hundred cycles after the read instead
    /// of at the next instruction. Until it arrives the window is only a
    /// candidate: it reads the TSC iff the thread's next host event is
    /// `kvm_msr` reading IA32_TSC (`msr_read 10 = VALUE`), and VALUE is what
    /// the guest got.
    Rdmsr,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    kind: WindowKind,
    start: u64,
    /// The window is the emulation of an instruction that reads the TSC.
    reads: Option<TscRead>,
}

/// A window that holds a guest event: its thread, its start, and once it
/// has closed on a `kvm_msr` read of IA32_TSC, (its end, the value read).
#[derive(Clone, Copy, Debug)]
struct Hold {
    pid: i32,
    start: u64,
    msr: Option<(u64, u64)>,
    kind: WindowKind,
}

/// A guest `rdmsr` read whose candidate windows are still open: only the
/// event that closes each says whether it read IA32_TSC, so the verdict
/// waits for it. One per read in flight, not per event.
struct Deferred {
    rule: bool,
    machine: usize,
    cpu: u32,
    ts: u64,
    guest_ts: Option<u64>,
    name: String,
    cands: Vec<i32>,
    known: bool,
    nearest: Option<u64>,
    /// Threads whose open rdmsr window holds the read, with its start.
    waiting: Vec<(i32, u64)>,
    /// Windows that closed on `kvm_msr` reading IA32_TSC.
    confirmed: Vec<Hold>,
    /// An event of a thread no window or sched_switch has named yet: its
    /// first sched_switch decides (runs/: on a CPU until its first switch
    /// away, off until its first switch in).
    first_switch: Option<i32>,
}

/// Cap on reads awaiting their windows' close: beyond it (a window that
/// never closes while reads keep coming) a read is judged outside at once.
const MAX_DEFERRED: usize = 4096;

#[derive(Clone, Debug, Default)]
struct Thread {
    open: Option<Open>,
    /// End of the last closed window.
    last_close: Option<u64>,
    windows: u64,
    /// The strongest exact kind (kvm_entry, else kvm_emulate_insn) seen.
    exact: Option<WindowKind>,
    /// Since when the thread is on a CPU (sched_switch), whether any
    /// sched_switch named it, and when it last left a CPU.
    on_cpu: Option<u64>,
    switched: bool,
    last_off: Option<u64>,
}

impl Thread {
    /// The kind of evidence that judges this thread's guest events, as
    /// runs/ ranks them ([`WindowKind::BY_STRENGTH`]): its exact windows
    /// once it has any, else its on-CPU intervals once a sched_switch named
    /// it. By what is seen so far: the check follows the merged stream.
    fn judge(&self) -> Option<WindowKind> {
        self.exact.or(self.switched.then_some(WindowKind::OnCpu))
    }
}

/// One guest event outside every window of its thread.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub machine: String,
    pub cpu: u32,
    pub ts: u64,
    pub guest_ts: Option<u64>,
    pub event: String,
    /// Cycles to the nearest window edge seen so far (the end of the
    /// thread's last window, or the start of the next when it came soon).
    pub distance: Option<u64>,
    /// The host thread's last event before it, as `name@ts`.
    pub host_before: Option<String>,
}

/// A guest `rdmsr` read whose value differs from the one the host's
/// `kvm_msr` recorded for the emulation that holds it: the guest trace and
/// the host recording disagree about that read.
#[derive(Clone, Debug, Serialize)]
pub struct ValueMismatch {
    pub machine: String,
    pub cpu: u32,
    /// Host time of the read.
    pub ts: u64,
    /// The value the guest trace reports (its TSC stamp).
    pub guest_value: u64,
    /// `kvm_msr`'s `data`.
    pub host_value: u64,
    /// The vCPU thread whose emulation held the read.
    pub thread: i32,
}

impl ValueMismatch {
    pub fn difference(&self) -> u64 {
        self.guest_value.abs_diff(self.host_value)
    }
}

/// Which host threads may run a guest machine's CPUs.
#[derive(Clone, Debug, Default)]
pub struct VmThreads {
    /// The VMM process: its threads are candidates.
    pub tgid: Option<i32>,
    /// Threads known to belong to the VM (offset writers).
    pub pids: Vec<i32>,
    /// Guest CPU → vCPU where not the identity.
    pub vcpu_of_cpu: BTreeMap<u32, u32>,
    /// vCPU → its host thread, as a trace-cmd GUEST option or the offset
    /// writes name it ([`crate::clock::Vm::vcpu_threads`]).
    pub vcpu_pids: BTreeMap<u32, (i32, ThreadFrom)>,
    /// vCPUs whose thread nothing above names (a GUEST thread the host never
    /// saw): a thread of no known VM whose kvm_entry names such a vCPU is
    /// taken as its thread when one machine alone lacks that vCPU.
    pub unresolved_vcpus: Vec<u32>,
}

/// What to check and how to map guest CPUs to host threads.
///
/// A guest CPU's thread is known exactly when the host traced `kvm_entry`
/// (its `vcpu` field names the vCPU a thread runs) or when `threads` pins it.
/// Otherwise every candidate thread of its VM is tried, and the thread whose
/// windows held most of its events is reported as inferred; run the check a
/// second time with that pin to measure it strictly.
#[derive(Clone, Debug, Default)]
pub struct CheckConfig {
    /// (machine, guest CPU) → host thread pins.
    pub threads: HashMap<(usize, u32), i32>,
    /// Machine → its VM's threads.
    pub vms: HashMap<usize, VmThreads>,
    /// Machine names, for messages.
    pub machines: Vec<String>,
    /// How many violations to keep for the report.
    pub keep_worst: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GuestCpuReport {
    pub machine: String,
    pub cpu: u32,
    pub thread: Option<i32>,
    /// Where `thread` came from (`None`: pinned, or inferred).
    pub thread_from: Option<ThreadFrom>,
    pub inferred: bool,
    pub events: u64,
    pub inside: u64,
    /// Per candidate thread, how many events its windows held.
    pub inside_by_thread: BTreeMap<i32, u64>,
    /// Events outside their known thread's windows, by the other thread of
    /// the VM whose window held them (evidence of a wrong CPU-to-vCPU map).
    pub fits_other: BTreeMap<i32, u64>,
    /// Guest events judged by each kind of window ([`WindowKind::name`]):
    /// kvm_entry..kvm_exit, else the thread's on-CPU intervals from
    /// sched_switch, else the emulation windows.
    pub judged_by: BTreeMap<&'static str, u64>,
    /// Margins of inside events: (event − window start), cycles (exact
    /// windows only: an on-CPU interval also holds the host's own work).
    pub after_start: Vec<u64>,
    /// (window end − event), cycles, filled as windows close.
    pub before_end: Vec<u64>,
    pub outside_max: u64,
    /// Events before the host's first event or after its last: outside the
    /// host's recording, so not judged.
    pub outside_recording: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub guest_events: u64,
    pub inside: u64,
    pub host_windows: u64,
    pub window_kinds: Vec<WindowKind>,
    pub cpus: Vec<GuestCpuReport>,
    pub worst: Vec<Violation>,
    /// Largest distance outside a window, cycles.
    pub max_distance: u64,
    /// Guest events whose converted time went backward on their CPU.
    pub non_monotonic: u64,
    /// Host thread → (machine, vCPU), from kvm_entry's vcpu field.
    pub thread_vcpu: BTreeMap<i32, (usize, u32)>,
    /// Guest `rdmsr` reads inside an emulation closed by `kvm_msr` reading
    /// IA32_TSC.
    pub rdmsr_reads: u64,
    /// Of those, reads whose guest value equals the `kvm_msr` data.
    pub rdmsr_values_equal: u64,
    /// Of those, reads whose guest value differs from every holding
    /// window's `kvm_msr` data (reads without a guest value are neither).
    pub value_mismatches: u64,
    /// The mismatch with the largest difference.
    pub worst_value_mismatch: Option<ValueMismatch>,
    /// Guest events placed before the host's first event: the guest's
    /// recording began before the host's. Not judged.
    pub before_host: u64,
    /// Guest events placed after the host's last event. Not judged.
    pub after_host: u64,
    /// Guest events whose guest time fitted several offset periods and
    /// that the host's run windows decided (clock/walk.rs).
    pub by_run_windows: u64,
    /// Those the guest CPU's later events decided.
    pub by_guest_order: u64,
    /// Those nothing decided, placed by the rule: ambiguous.
    pub ambiguous: u64,
    /// Of the ambiguous, those outside every window of their thread: the
    /// rule misplaced them. Counted apart from violations (the merge's
    /// data could not decide them; a violation is a contradiction).
    pub ambiguous_outside: u64,
}

impl CheckReport {
    /// Guest events outside every window of their vCPU while the host was
    /// recording.
    pub fn violations(&self) -> u64 {
        self.guest_events - self.inside - self.outside_recording() - self.ambiguous_outside
    }
    /// Guest events the host's recording could not judge (before it began,
    /// after it ended).
    pub fn outside_recording(&self) -> u64 {
        self.before_host + self.after_host
    }
    /// Guest events within the host's recording.
    pub fn judged(&self) -> u64 {
        self.guest_events - self.outside_recording()
    }
    /// Share of the judged events inside a window.
    pub fn fraction_inside(&self) -> f64 {
        if self.judged() == 0 { 0.0 } else { self.inside as f64 / self.judged() as f64 }
    }
}

/// Cap on the margin samples kept per guest CPU (for distributions).
const MAX_SAMPLES: usize = 1 << 16;

struct CpuState {
    report: GuestCpuReport,
    last_ts: Option<u64>,
    /// Inside events waiting for their window to close: (thread, ts).
    pending: Vec<(i32, u64)>,
    /// Outside events since the host event numbered `tail_gen`: when no host
    /// event follows them, they were after the host's recording ended.
    tail_gen: u64,
    tail: u64,
}

/// The check as a sink; forwards every event to `inner` when given.
pub struct CheckSink<'s> {
    cfg: CheckConfig,
    inner: Option<&'s mut dyn Sink>,
    threads: HashMap<i32, Thread>,
    /// Host thread → the guest machine whose VM it belongs to.
    thread_machine: HashMap<i32, Option<usize>>,
    /// Machine → candidate threads seen so far.
    candidates: HashMap<usize, Vec<i32>>,
    /// (machine, vCPU) → thread, from kvm_entry's vcpu field.
    vcpu_thread: HashMap<(usize, u32), i32>,
    last_host: HashMap<i32, (String, u64)>,
    scratch: Vec<u8>,
    cpus: BTreeMap<(usize, u32), CpuState>,
    deferred: Vec<Deferred>,
    /// How the guest event being judged was placed.
    placed: crate::clock::How,
    report: CheckReport,
    seq: u64,
    /// Host events seen, and the time of the first and last.
    host_events: u64,
    first_host: Option<u64>,
    last_host_ts: u64,
}

impl<'s> CheckSink<'s> {
    pub fn new(cfg: CheckConfig, inner: Option<&'s mut dyn Sink>) -> Self {
        CheckSink {
            cfg,
            inner,
            threads: HashMap::new(),
            thread_machine: HashMap::new(),
            candidates: HashMap::new(),
            vcpu_thread: HashMap::new(),
            last_host: HashMap::new(),
            scratch: Vec::new(),
            cpus: BTreeMap::new(),
            deferred: Vec::new(),
            placed: crate::clock::How::Only,
            report: CheckReport::default(),
            seq: 0,
            host_events: 0,
            first_host: None,
            last_host_ts: 0,
        }
    }

    /// The guest machine a host thread serves, decided at its first event.
    fn machine_of(&mut self, pid: i32, tgid: Option<i32>) -> Option<usize> {
        if let Some(&m) = self.thread_machine.get(&pid) {
            return m;
        }
        let m = self
            .cfg
            .vms
            .iter()
            .find(|(_, vm)| vm.pids.contains(&pid) || (tgid.is_some() && vm.tgid == tgid))
            .map(|(&m, _)| m);
        self.thread_machine.insert(pid, m);
        if let Some(m) = m {
            self.candidates.entry(m).or_default().push(pid);
        }
        m
    }

    /// A host event of thread `pid`; `msr_tsc` is the value when it is a
    /// `kvm_msr` read of IA32_TSC.
    #[allow(clippy::too_many_arguments)]
    fn host_event(&mut self, pid: i32, tgid: Option<i32>, name: &str, vcpu: Option<u32>, reads: Option<TscRead>, msr_tsc: Option<u64>, ts: u64) {
        let mut machine = self.machine_of(pid, tgid);
        if let (None, Some(v)) = (machine, vcpu) {
            let mut lacking = self.cfg.vms.iter().filter(|(_, vm)| vm.unresolved_vcpus.contains(&v)).map(|(&m, _)| m);
            if let (Some(m), None) = (lacking.next(), lacking.next()) {
                self.thread_machine.insert(pid, Some(m));
                self.candidates.entry(m).or_default().push(pid);
                machine = Some(m);
            }
        }
        if let (Some(m), Some(v)) = (machine, vcpu) {
            self.vcpu_thread.insert((m, v), pid);
        }
        let t = self.threads.entry(pid).or_default();
        let closed = t.open.take();
        if closed.is_some() {
            t.last_close = Some(ts);
        }
        if let Some(open) = closed {
            // Inside events of this thread now know their window's end.
            for st in self.cpus.values_mut() {
                st.pending.retain(|&(thread, ets)| {
                    if thread != pid {
                        return true;
                    }
                    if st.report.before_end.len() < MAX_SAMPLES {
                        st.report.before_end.push(ts.saturating_sub(ets));
                    }
                    false
                });
            }
            // An rdmsr emulation read the TSC iff this event is its kvm_msr
            // of IA32_TSC: reads waiting on it learn their verdict.
            let msr = if open.reads == Some(TscRead::Rdmsr) { msr_tsc } else { None };
            let mut i = 0;
            while i < self.deferred.len() {
                let d = &mut self.deferred[i];
                if let Some(k) = d.waiting.iter().position(|&(p, _)| p == pid) {
                    let (_, start) = d.waiting.swap_remove(k);
                    if let Some(v) = msr {
                        d.confirmed.push(Hold { pid, start, msr: Some((ts, v)), kind: open.kind });
                    }
                }
                if d.waiting.is_empty() && d.first_switch.is_none() {
                    let d = self.deferred.remove(i);
                    self.settle_deferred(d);
                } else {
                    i += 1;
                }
            }
        }
        // What opens a window is said once, for every judge (runs/).
        let kind = crate::runs::opens(name);
        if let Some(kind) = kind {
            let t = self.threads.entry(pid).or_default();
            t.open = Some(Open { kind, start: ts, reads });
            t.windows += 1;
            if t.exact != Some(WindowKind::Entry) {
                t.exact = Some(kind);
            }
            self.report.host_windows += 1;
            if !self.report.window_kinds.contains(&kind) {
                self.report.window_kinds.push(kind);
            }
        }
        if self.cfg.keep_worst > 0 {
            let e = self.last_host.entry(pid).or_insert_with(|| (String::new(), 0));
            e.0.clear();
            e.0.push_str(name);
            e.1 = ts;
        }
    }

    /// A sched_switch from `prev` to `next`: the on-CPU intervals of
    /// runs/ ([`WindowKind::OnCpu`]), the evidence for threads without
    /// exact windows.
    fn switch(&mut self, prev: i32, next: i32, ts: u64) {
        // Events waiting for a thread's first switch: inside when it is a
        // switch away (the thread was on a CPU until now).
        for (pid, was_on) in [(prev, true), (next, false)] {
            if self.threads.get(&pid).is_some_and(|t| t.switched) || !self.deferred.iter().any(|d| d.first_switch == Some(pid)) {
                continue;
            }
            let (mine, rest): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred).into_iter().partition(|d| d.first_switch == Some(pid));
            self.deferred = rest;
            for mut d in mine {
                if was_on {
                    let start = self.first_host.unwrap_or(0);
                    d.confirmed.push(Hold { pid, start, msr: None, kind: WindowKind::OnCpu });
                }
                if let Some(st) = self.cpus.get_mut(&(d.machine, d.cpu)) {
                    *st.report.judged_by.entry(WindowKind::OnCpu.name()).or_default() += 1;
                }
                self.settle_deferred(d);
            }
        }
        let t = self.threads.entry(prev).or_default();
        t.switched = true;
        if t.on_cpu.take().is_some() {
            t.last_off = Some(ts);
        }
        let t = self.threads.entry(next).or_default();
        t.switched = true;
        t.on_cpu = Some(ts);
        // Counted as host windows for the VMs' threads alone (a host has
        // many other threads).
        if self.thread_machine.get(&next).copied().flatten().is_some() {
            self.report.host_windows += 1;
            if !self.report.window_kinds.contains(&WindowKind::OnCpu) {
                self.report.window_kinds.push(WindowKind::OnCpu);
            }
        }
    }

    fn guest_event(&mut self, machine: usize, cpu: u32, ts: u64, guest_ts: Option<u64>, name: &str, tsc_read: Option<TscRead>) {
        let vm = self.cfg.vms.get(&machine);
        let vcpu = vm.and_then(|vm| vm.vcpu_of_cpu.get(&cpu).copied()).unwrap_or(cpu);
        // The thread of the vCPU: pinned, else the GUEST option's or the
        // offset writer's, else the one whose kvm_entry names the vCPU.
        let known = match self.cfg.threads.get(&(machine, cpu)) {
            Some(&t) => Some((t, None)),
            None => vm
                .and_then(|vm| vm.vcpu_pids.get(&vcpu))
                .map(|&(t, from)| (t, Some(from)))
                .or_else(|| self.vcpu_thread.get(&(machine, vcpu)).map(|&t| (t, Some(ThreadFrom::KvmEntry)))),
        };
        let (known, from) = (known.map(|k| k.0), known.and_then(|k| k.1));
        let cands: Vec<i32> = match known {
            Some(t) => vec![t],
            None => self.candidates.get(&machine).cloned().unwrap_or_default(),
        };
        let mname = self.cfg.machines.get(machine).cloned().unwrap_or_default();
        let st = self.cpus.entry((machine, cpu)).or_insert_with(|| CpuState {
            report: GuestCpuReport { machine: mname, cpu, ..Default::default() },
            last_ts: None,
            pending: Vec::new(),
            tail_gen: 0,
            tail: 0,
        });
        if known.is_some() {
            st.report.thread = known;
            st.report.thread_from = from;
        }
        if st.last_ts.is_some_and(|l| ts < l) {
            self.report.non_monotonic += 1;
        }
        st.last_ts = Some(ts);
        st.report.events += 1;
        self.report.guest_events += 1;
        // A TSC read fits only the emulation of the same reading
        // instruction on its thread.
        let fits = |o: &Open| tsc_read.is_none() || o.reads == tsc_read;
        // Open windows that hold the event: the candidates', and with a known
        // thread the VM's other threads' too (for `fits_other`).
        let mut holds: Vec<Hold> = Vec::new();
        let mut nearest: Option<u64> = None;
        let others = if known.is_some() { self.candidates.get(&machine).map(Vec::as_slice).unwrap_or(&[]) } else { &[] };
        let mut judge = None;
        for &pid in cands.iter().chain(others) {
            let Some(t) = self.threads.get(&pid) else { continue };
            if holds.iter().any(|h| h.pid == pid) {
                continue;
            }
            let cand = cands.contains(&pid);
            if cand {
                judge = judge.or(t.judge());
            }
            // Exact windows, else on-CPU intervals (runs/ ranks them).
            let (hold, last) = match t.judge() {
                Some(WindowKind::OnCpu) => (t.on_cpu.map(|start| Hold { pid, start, msr: None, kind: WindowKind::OnCpu }), t.last_off),
                _ => (t.open.filter(fits).map(|o| Hold { pid, start: o.start, msr: None, kind: o.kind }), t.last_close),
            };
            match hold {
                Some(h) => holds.push(h),
                None if cand => {
                    if let Some(c) = last {
                        let d = ts.saturating_sub(c);
                        nearest = Some(nearest.map_or(d, |n| n.min(d)));
                    }
                }
                None => {}
            }
        }
        if let Some(st) = self.cpus.get_mut(&(machine, cpu)) {
            let kind = holds.iter().find(|h| cands.contains(&h.pid)).map(|h| h.kind).or(judge);
            if let Some(k) = kind {
                *st.report.judged_by.entry(k.name()).or_default() += 1;
            }
        }
        if let (&[pid], true, None) = (&cands[..], holds.is_empty(), judge) {
            let unswitched = self.threads.get(&pid).is_none_or(|t| !t.switched);
            if unswitched && self.first_host.is_some() && self.deferred.len() < MAX_DEFERRED {
                let rule = self.placed == crate::clock::How::Rule;
                let name = name.to_string();
                let d = Deferred { rule, machine, cpu, ts, guest_ts, name, cands, known: known.is_some(), nearest, waiting: Vec::new(), confirmed: Vec::new(), first_switch: Some(pid) };
                self.deferred.push(d);
                return;
            }
        }
        if tsc_read == Some(TscRead::Rdmsr) {
            // Candidate windows only: the verdict waits for their kvm_msr.
            // An on-CPU interval has none to wait for: it holds the read
            // as it holds any event.
            let (on_cpu, exact): (Vec<Hold>, Vec<Hold>) = holds.iter().partition(|h| h.kind == WindowKind::OnCpu);
            if !exact.is_empty() && self.deferred.len() < MAX_DEFERRED {
                self.deferred.push(Deferred {
                    rule: self.placed == crate::clock::How::Rule,
                    machine,
                    cpu,
                    ts,
                    guest_ts,
                    name: name.to_string(),
                    cands,
                    known: known.is_some(),
                    nearest,
                    waiting: exact.iter().map(|h| (h.pid, h.start)).collect(),
                    confirmed: on_cpu,
                    first_switch: None,
                });
                return;
            }
            holds = on_cpu;
        }
        let rule = self.placed == crate::clock::How::Rule;
        self.settle(rule, machine, cpu, ts, guest_ts, name, &cands, known.is_some(), nearest, &holds);
    }

    fn settle_deferred(&mut self, d: Deferred) {
        self.settle(d.rule, d.machine, d.cpu, d.ts, d.guest_ts, &d.name, &d.cands, d.known, d.nearest, &d.confirmed);
    }

    /// Counts a guest event as inside or outside, given the windows `holds`
    /// that held it (a window still open has no `msr`: its end is recorded
    /// when it closes).
    #[allow(clippy::too_many_arguments)]
    fn settle(&mut self, rule: bool, machine: usize, cpu: u32, ts: u64, guest_ts: Option<u64>, name: &str, cands: &[i32], known: bool, nearest: Option<u64>, holds: &[Hold]) {
        let Some(st) = self.cpus.get_mut(&(machine, cpu)) else { return };
        let mut inside = holds.iter().filter(|h| cands.contains(&h.pid)).peekable();
        if inside.peek().is_some() {
            let inside: Vec<Hold> = inside.copied().collect();
            for h in &inside {
                *st.report.inside_by_thread.entry(h.pid).or_default() += 1;
            }
            // Margins are measured when exactly one candidate's window holds
            // the event (always so when the thread is known).
            // (Not for an on-CPU interval: see `after_start`; nor would an
            // exact window's close ever settle its `pending`.)
            if let [h] = inside[..].iter().filter(|h| h.kind != WindowKind::OnCpu).collect::<Vec<_>>()[..] {
                if st.report.after_start.len() < MAX_SAMPLES {
                    st.report.after_start.push(ts.saturating_sub(h.start));
                }
                match h.msr {
                    Some((end, _)) if st.report.before_end.len() < MAX_SAMPLES => st.report.before_end.push(end.saturating_sub(ts)),
                    Some(_) => {}
                    None => st.pending.push((h.pid, ts)),
                }
            }
            st.report.inside += 1;
            self.report.inside += 1;
            // An rdmsr read: its value must be what the host's kvm_msr saw.
            let values: Vec<(i32, u64)> = inside.iter().filter_map(|h| Some((h.pid, h.msr?.1))).collect();
            if !values.is_empty() {
                self.report.rdmsr_reads += 1;
                if let Some(g) = guest_ts {
                    if values.iter().any(|&(_, v)| v == g) {
                        self.report.rdmsr_values_equal += 1;
                    } else {
                        self.report.value_mismatches += 1;
                        let (thread, host_value) = values[0];
                        let m = ValueMismatch { machine: st.report.machine.clone(), cpu, ts, guest_value: g, host_value, thread };
                        if self.report.worst_value_mismatch.as_ref().is_none_or(|w| m.difference() > w.difference()) {
                            self.report.worst_value_mismatch = Some(m);
                        }
                    }
                }
            }
            return;
        }
        // The merge is in time order: before any host event is before the
        // host's recording; outside events after the last host event are
        // counted out at the end (the tail).
        if self.first_host.is_none() {
            st.report.outside_recording += 1;
            self.report.before_host += 1;
            return;
        }
        if rule {
            self.report.ambiguous_outside += 1;
            return;
        }
        if st.tail_gen != self.host_events {
            (st.tail_gen, st.tail) = (self.host_events, 0);
        }
        st.tail += 1;
        if known {
            for h in holds {
                *st.report.fits_other.entry(h.pid).or_default() += 1;
            }
        }
        let d = nearest.unwrap_or(u64::MAX);
        st.report.outside_max = st.report.outside_max.max(d);
        if d != u64::MAX {
            self.report.max_distance = self.report.max_distance.max(d);
        }
        if self.cfg.keep_worst > 0 {
            let host_before = cands.first().and_then(|p| self.last_host.get(p)).map(|(n, t)| format!("{n}@{t}"));
            let v = Violation {
                machine: st.report.machine.clone(),
                cpu,
                ts,
                guest_ts,
                event: name.to_string(),
                distance: (d != u64::MAX).then_some(d),
                host_before,
            };
            let worst = &mut self.report.worst;
            worst.push(v);
            worst.sort_by_key(|v| std::cmp::Reverse(v.distance.unwrap_or(u64::MAX)));
            worst.truncate(self.cfg.keep_worst);
        }
    }

    /// Ends the check: infers threads where unknown and returns the report.
    pub fn report(mut self) -> CheckReport {
        // Reads whose windows never closed were never shown to read the TSC.
        for d in std::mem::take(&mut self.deferred) {
            self.settle_deferred(d);
        }
        for (&(m, v), &pid) in &self.vcpu_thread {
            self.report.thread_vcpu.insert(pid, (m, v));
        }
        for (_, st) in std::mem::take(&mut self.cpus) {
            let mut r = st.report;
            if st.tail_gen == self.host_events && st.tail > 0 {
                r.outside_recording += st.tail;
                self.report.after_host += st.tail;
            }
            if r.thread.is_none() {
                if let Some((&pid, _)) = r.inside_by_thread.iter().max_by_key(|(_, n)| **n) {
                    r.thread = Some(pid);
                    r.inferred = true;
                }
            }
            self.report.cpus.push(r);
        }
        let last = self.last_host_ts;
        self.report.worst.retain(|v| v.ts <= last);
        self.report
    }
}

impl Sink for CheckSink<'_> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        self.seq += 1;
        if let Payload::Event(r) = ev.payload {
            if machine == 0 {
                self.host_events += 1;
                self.first_host.get_or_insert(ev.ts);
                self.last_host_ts = ev.ts;
                let vcpu = if r.name == "kvm_entry" { entry_vcpu(&r.body) } else { None };
                let reads = if r.name == "kvm_emulate_insn" { emulated_tsc_read(&r.body) } else { None };
                let msr_tsc = if r.name == "kvm_msr" { msr_tsc_read(&r.body) } else { None };
                self.host_event(r.pid, r.tgid, r.name, vcpu, reads, msr_tsc, ev.ts);
                if let Some((prev, next)) = crate::runs::switch_pids(&r) {
                    self.switch(prev, next, ev.ts);
                }
            } else {
                let tsc_read = if matches!(r.name, "tracing_mark_write" | "print") { tsc_read_of(&r.body, &mut self.scratch) } else { None };
                self.placed = ev.placed;
                match ev.placed {
                    crate::clock::How::Only => {}
                    crate::clock::How::RunWindows => self.report.by_run_windows += 1,
                    crate::clock::How::GuestOrder => self.report.by_guest_order += 1,
                    crate::clock::How::Rule => self.report.ambiguous += 1,
                }
                self.guest_event(machine, ev.cpu, ev.ts, ev.orig_ts, r.name, tsc_read);
            }
        }
        match self.inner.as_deref_mut() {
            Some(s) => s.event(machine, ev),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self.inner.as_deref_mut() {
            Some(s) => s.finish(),
            None => Ok(()),
        }
    }
}

/// The `vcpu` of a kvm_entry: field `vcpu_id` of a binary record, or the
/// `vcpu N,` its print format (arch/x86/kvm/trace.h) puts first in text.
pub(crate) fn entry_vcpu(body: &crate::event::Body<'_>) -> Option<u32> {
    match *body {
        crate::event::Body::Text(_) | crate::event::Body::Rendered(_) => {
            body.text()?.strip_prefix("vcpu ")?.split([',', ' ']).next()?.parse().ok()
        }
        crate::event::Body::Raw { format, data, ctx } => match format.field("vcpu_id")?.value(data, ctx.endian)? {
            ftrace::format::FieldValue::Unsigned(v) => u32::try_from(v).ok(),
            ftrace::format::FieldValue::Signed(v) => u32::try_from(v).ok(),
            _ => None,
        },
    }
}

/// IA32_TSC (Intel SDM vol. 4, MSR 10H).
const MSR_IA32_TSC: u64 = 0x10;

/// The value of a kvm_msr that reports a successful read of IA32_TSC:
/// fields `write` = 0, `ecx` = 0x10, no `exception` (`failed` on older
/// kernels), then `data`; in text its print format (arch/x86/kvm/trace.h)
/// `msr_read 10 = 0xVALUE`, with ` (#GP)` appended when the read faulted.
fn msr_tsc_read(body: &crate::event::Body<'_>) -> Option<u64> {
    match *body {
        crate::event::Body::Text(_) | crate::event::Body::Rendered(_) => {
            let (ecx, data) = body.text()?.strip_prefix("msr_read ")?.split_once(" = 0x")?;
            if u64::from_str_radix(ecx, 16).ok()? != MSR_IA32_TSC {
                return None;
            }
            let end = data.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(data.len());
            if !data[end..].trim().is_empty() {
                return None; // ` (#GP)`: the read faulted
            }
            u64::from_str_radix(&data[..end], 16).ok()
        }
        crate::event::Body::Raw { format, data, ctx } => {
            let uint = |name: &str| match format.field(name)?.value(data, ctx.endian)? {
                ftrace::format::FieldValue::Unsigned(v) => Some(v),
                ftrace::format::FieldValue::Signed(v) => Some(v as u64),
                _ => None,
            };
            let faulted = uint("exception").or_else(|| uint("failed")).unwrap_or(0) != 0;
            (uint("write")? == 0 && uint("ecx")? == MSR_IA32_TSC && !faulted).then_some(())?;
            uint("data")
        }
    }
}

/// Which TSC-reading instruction a kvm_emulate_insn emulated, if any:
/// `rdtsc` (0f 31) or `rdmsr` (0f 32: a TSC read only if its `kvm_msr`
/// says so, see [`TscRead::Rdmsr`]). Field `insn` of a binary record, or the hex bytes its print
/// format puts after `csbase:rip:` in text (`0:1004:0f 31 (real)`).
fn emulated_tsc_read(body: &crate::event::Body<'_>) -> Option<TscRead> {
    let (rdtsc, rdmsr) = match *body {
        crate::event::Body::Text(_) | crate::event::Body::Rendered(_) => {
            let b = body.text()?.splitn(3, ':').nth(2)?;
            (b.starts_with("0f 31"), b.starts_with("0f 32"))
        }
        crate::event::Body::Raw { format, data, .. } => {
            let b = format.field("insn").and_then(|f| f.raw(data))?;
            (b.starts_with(&[0x0f, 0x31]), b.starts_with(&[0x0f, 0x32]))
        }
    };
    match (rdtsc, rdmsr) {
        (true, _) => Some(TscRead::Rdtsc),
        (_, true) => Some(TscRead::Rdmsr),
        _ => None,
    }
}

/// Whether a guest marker reports a TSC read, and by which instruction: the
/// micro-VM monitor writes `rdtsc seq=N next=INSN` (or `rdmsr seq=N …` for
/// `rdmsr` of IA32_TSC) for each value its guest read
/// (crates/microvm/src/guest_trace.rs). Such an event is checked against the
/// emulation window of that same instruction, not any window of its thread.
fn tsc_read_of(body: &crate::event::Body<'_>, scratch: &mut Vec<u8>) -> Option<TscRead> {
    scratch.clear();
    body.render(ftrace::printfmt::Style::Kernel, scratch);
    let text = scratch.as_slice();
    let kind = |t: &[u8]| {
        if t.starts_with(b"rdtsc seq=") {
            Some(TscRead::Rdtsc)
        } else if t.starts_with(b"rdmsr seq=") {
            Some(TscRead::Rdmsr)
        } else {
            None
        }
    };
    // tracefs text is the marker text itself; a print event renders as `ip: text`.
    kind(text).or_else(|| {
        let i = text.windows(2).position(|w| w == b": ")?;
        kind(&text[i + 2..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Record};

    fn ev<'a>(ts: u64, orig_ts: Option<u64>, pid: i32, name: &'a str, text: &'a str) -> EventView<'a> {
        let payload = Payload::Event(Record { pid, tgid: None, comm: "x", system: "kvm", name, body: Body::Text(text) });
        EventView { ts, orig_ts, placed: Default::default(), cpu: 0, payload }
    }

    const HOST: [(u64, &str, &str); 5] = [
        (100, "kvm_emulate_insn", "0:1018:0f 31 (real)"),
        (150, "kvm_emulate_insn", "0:101a:66 e7 e4 (real)"),
        (200, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
        (210, "kvm_msr", "msr_read 10 = 0xcd"),
        (300, "kvm_emulate_insn", "0:101a:66 e7 e4 (real)"),
    ];

    /// Host thread 9 runs `host` (by default: emulates rdtsc at 100, rdmsr
    /// at 200 with its kvm_msr at 210 reading 0xcd, then an out at 300);
    /// the guest (machine 1, CPU 0 pinned to 9) reports `reads` as (host
    /// ts, guest value, marker).
    fn run_on(host: &[(u64, &str, &str)], reads: &[(u64, u64, &str)]) -> CheckReport {
        let cfg = CheckConfig {
            threads: HashMap::from([((1, 0), 9)]),
            machines: vec!["host".into(), "g".into()],
            keep_worst: 4,
            ..Default::default()
        };
        let mut sink = CheckSink::new(cfg, None);
        let mut all: Vec<(u64, usize, Option<u64>, &str, &str)> = host.iter().map(|&(t, n, b)| (t, 0, None, n, b)).collect();
        all.extend(reads.iter().map(|&(t, g, m)| (t, 1, Some(g), "tracing_mark_write", m)));
        all.sort_by_key(|e| (e.0, e.1)); // host events win ties, as in the merge
        for (t, m, g, n, b) in all {
            sink.event(m, &ev(t, g, if m == 0 { 9 } else { 1 }, n, b)).unwrap();
        }
        sink.report()
    }

    fn run(reads: &[(u64, u64, &str)]) -> CheckReport {
        run_on(&HOST, reads)
    }

    #[test]
    fn a_read_fits_only_its_own_instruction() {
        let r = run(&[(120, 1, "rdtsc seq=0 next=out"), (205, 0xcd, "rdmsr seq=1 next=out")]);
        assert_eq!((r.guest_events, r.inside), (2, 2));
        assert_eq!(r.cpus[0].after_start, vec![20, 5]);
        assert_eq!(r.cpus[0].before_end, vec![30, 5], "the rdmsr window ends at kvm_msr");
        assert_eq!((r.rdmsr_reads, r.rdmsr_values_equal, r.value_mismatches), (1, 1, 0));
        // An rdmsr read in the rdtsc window, an rdtsc read in the rdmsr
        // window, an rdmsr read after its kvm_msr: all outside.
        let r = run(&[(120, 0xcd, "rdmsr seq=0 next=out"), (205, 2, "rdtsc seq=1 next=out"), (211, 0xcd, "rdmsr seq=2 next=out")]);
        assert_eq!(r.inside, 0);
        assert_eq!(r.rdmsr_reads, 0);
        // Other guest events fit any window of the thread; kvm_msr opens none.
        let r = run(&[(120, 1, "x"), (160, 2, "y"), (250, 3, "z"), (305, 4, "w")]);
        assert_eq!(r.inside, 3);
    }

    #[test]
    fn a_value_the_host_did_not_read_is_a_mismatch() {
        let r = run(&[(205, 0xce, "rdmsr seq=0 next=out")]);
        assert_eq!(r.inside, 1, "the read is in its window");
        assert_eq!((r.rdmsr_reads, r.rdmsr_values_equal, r.value_mismatches), (1, 0, 1));
        let w = r.worst_value_mismatch.unwrap();
        assert_eq!((w.ts, w.guest_value, w.host_value, w.thread, w.difference()), (205, 0xce, 0xcd, 9, 1));
        // The worst is the largest difference.
        let host = [
            (200, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (210, "kvm_msr", "msr_read 10 = 0x1000"),
            (300, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (310, "kvm_msr", "msr_read 10 = 0x2000"),
            (400, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (410, "kvm_msr", "msr_read 10 = 0x3000"),
        ];
        let r = run_on(&host, &[(205, 0x1001, "rdmsr seq=0"), (305, 0x2100, "rdmsr seq=1"), (405, 0x3000, "rdmsr seq=2")]);
        assert_eq!((r.inside, r.rdmsr_reads, r.rdmsr_values_equal, r.value_mismatches), (3, 3, 1, 2));
        assert_eq!(r.worst_value_mismatch.unwrap().host_value, 0x2000);
    }

    #[test]
    fn an_rdmsr_of_another_msr_is_no_tsc_window() {
        // rdmsr of IA32_APIC_BASE (0x1b), a write of IA32_TSC, a faulted
        // read of IA32_TSC, and an rdmsr whose next event is no kvm_msr: no
        // TSC-read windows, so the rdmsr reads in them are outside.
        let host = [
            (200, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (210, "kvm_msr", "msr_read 1b = 0xcd"),
            (300, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (310, "kvm_msr", "msr_write 10 = 0xcd"),
            (400, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (410, "kvm_msr", "msr_read 10 = 0xcd (#GP)"),
            (500, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (510, "kvm_pio", "pio_write at 0xe4 size 2 count 1 val 0x0"),
        ];
        let r = run_on(&host, &[(205, 0xcd, "rdmsr seq=0"), (305, 0xcd, "rdmsr seq=1"), (405, 0xcd, "rdmsr seq=2"), (505, 0xcd, "rdmsr seq=3")]);
        assert_eq!((r.guest_events, r.inside, r.rdmsr_reads, r.value_mismatches), (4, 0, 0, 0));
        assert_eq!(r.worst.len(), 4, "each is reported: {:?}", r.worst);
        // They are still emulation windows for other guest events.
        let r = run_on(&host, &[(205, 1, "x"), (305, 2, "y"), (405, 3, "z"), (505, 4, "w")]);
        assert_eq!(r.inside, 4);
        // A window still open at the end proves nothing.
        let r = run_on(&host[..1], &[(205, 0xcd, "rdmsr seq=0")]);
        assert_eq!((r.guest_events, r.inside), (1, 0));
    }

    #[test]
    fn recognises_reads() {
        let mut s = Vec::new();
        assert_eq!(tsc_read_of(&Body::Text("rdmsr seq=3 next=hlt"), &mut s), Some(TscRead::Rdmsr));
        assert_eq!(tsc_read_of(&Body::Text("tracing_mark_write: rdtsc seq=3 next=out"), &mut s), Some(TscRead::Rdtsc));
        assert_eq!(tsc_read_of(&Body::Text("rdmsrseq=3"), &mut s), None);
        assert_eq!(emulated_tsc_read(&Body::Text("0:1018:0f 32 (real)")), Some(TscRead::Rdmsr));
        assert_eq!(emulated_tsc_read(&Body::Text("0:1018:0f 30 (real)")), None);
        assert_eq!(msr_tsc_read(&Body::Text("msr_read 10 = 0x9eb7b0c4a1a")), Some(0x9eb7b0c4a1a));
        assert_eq!(msr_tsc_read(&Body::Text("msr_read 1b = 0xfee00900")), None);
        assert_eq!(msr_tsc_read(&Body::Text("msr_write 10 = 0x10000000000")), None);
        assert_eq!(msr_tsc_read(&Body::Text("msr_read 10 = 0x0 (#GP)")), None);
    }

    /// The raw record form, with the kernel's own kvm_msr format.
    #[test]
    fn msr_read_from_raw_fields() {
        let fmt = "name: kvm_msr\nID: 99\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:unsigned write;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:u32 ecx;\toffset:12;\tsize:4;\tsigned:0;\n\tfield:u64 data;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:u8 exception;\toffset:24;\tsize:1;\tsigned:0;\n\nprint fmt: \"msr_%s %x = 0x%llx%s\", REC->write ? \"write\" : \"read\", REC->ecx, REC->data, REC->exception ? \" (#GP)\" : \"\"\n";
        let format = ftrace::format::EventFormat::parse("kvm", fmt.as_bytes()).unwrap();
        let rec = |write: u32, ecx: u32, data: u64, exc: u8| {
            let mut r = vec![0u8; 32];
            r[8..12].copy_from_slice(&write.to_le_bytes());
            r[12..16].copy_from_slice(&ecx.to_le_bytes());
            r[16..24].copy_from_slice(&data.to_le_bytes());
            r[24] = exc;
            r
        };
        let ctx = ftrace::printfmt::RenderCtx { endian: ftrace::Endian::Little, long_size: 8, cpu: 0, kallsyms: None, printk: None, state: None, plugins: true };
        // The raw fields and the record's rendered text must agree.
        let mut text = Vec::new();
        for (r, want) in [
            (rec(0, 0x10, 0x1234_5678_9abc, 0), Some(0x1234_5678_9abc)),
            (rec(1, 0x10, 5, 0), None),
            (rec(0, 0x1b, 5, 0), None),
            (rec(0, 0x10, 5, 1), None),
        ] {
            let body = Body::Raw { format: &format, data: &r, ctx: &ctx };
            assert_eq!(msr_tsc_read(&body), want);
            text.clear();
            body.render(ftrace::printfmt::Style::Kernel, &mut text);
            let text = String::from_utf8(text.clone()).unwrap();
            assert_eq!(msr_tsc_read(&Body::Text(&text)), want, "{text}");
        }
    }
}
