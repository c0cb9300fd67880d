//! Where each vCPU's time went, from the host's story in the merged stream
//! (`tscmerge explain`): an analysis [`Sink`] after the merge, beside the
//! output sinks.
//!
//! Every host cycle from the host recording's first event to its last is
//! given to exactly one state per vCPU thread, so each vCPU's totals sum to
//! the recording's length:
//!
//! ```text
//!            kvm_entry            kvm_exit(R)        kvm_userspace_exit(U)   next kvm event
//!   ... ──────────┬── guest ──────────┬── exit R ──────────┬── userspace U ──────┬── exit R ── kvm_entry
//!                 │                   │                    │                     │
//!   sched_switch out, prev_state R/R+ (or sched_waking of a sleeping thread) ... switch in:
//!                 preempted, by the task running on the CPU it waits for
//!   sched_switch out asleep after an HLT exit (KVM_EXIT_HLT in userspace) ... woken: halted
//! ```
//!
//! - *guest*: `kvm_entry` until the thread's next event (a vCPU in guest
//!   mode emits nothing; normally `kvm_exit`);
//! - *exit R*: from `kvm_exit` (reason R as trace-cmd's kvm plugin names
//!   it) until `kvm_entry`, in the kernel, including sleeps other than a
//!   halt; *userspace U*: from `kvm_userspace_exit` (reason U) until the
//!   thread's next `kvm` event (the VMM handled it and called KVM_RUN again);
//! - *preempted by T*: the thread runnable but off CPU — switched out with
//!   `prev_state` R or R+, or woken (`sched_waking`/`sched_wakeup`) while
//!   asleep — attributed to the task on the CPU it waits for (the
//!   `next_comm`/`next_pid` of that CPU's switches; `sched_migrate_task`
//!   moves the wait);
//! - *halted*: asleep after an HLT exit;
//! - *unknown*: before the thread's first telling event.
//!
//! Hosts that emulate guest code instead of entering it (PVM here, real-mode
//! guests: `kvm_emulate_insn`, no `kvm_entry`): each emulation is an exit of
//! reason `EMULATE` that lasts until the thread's next emulation; its
//! userspace exits are split out as above. There is no guest state: the
//! guest runs only inside the emulator.
//!
//! Exit-to-entry times (`kvm_exit` → the thread's next `kvm_entry`; on
//! emulating hosts emulation → next emulation) are kept per vCPU and
//! reason with the guest task that was running on that vCPU at the exit
//! (the guest's own `sched_switch` on the vCPU's guest CPU, in the merged
//! stream).
//!
//! Host IRQs and softirqs ([`irq`]) are a breakdown, not a state: each
//! handler's count and cycles go to the vCPU thread it interrupted on its
//! host CPU — the task its entry event names, which is the one running on
//! that CPU (what sched_switch would tell, and also where the host records
//! none) — per vCPU and per stall. They run in the host, so inside exits
//! (an interrupt in guest mode exits first).
//!
//! Memory: one state per vCPU thread and host CPU, one duration
//! summary ([`hist::Durations`], bounded) per vCPU and reason, and names
//! (reasons, tasks) capped at [`MAX_NAMES`]: it grows with threads, not events.

pub mod hist;
pub mod irq;
mod report;
pub mod stall;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::event::{field_int, field_str, prev_state_bits, Body, EventView, Payload, Record};
use crate::merge::Sink;
use crate::Result;

pub use hist::{Durations, Summary};
pub use irq::IrqTotal;
pub use stall::{Stall, StallReport, StallSpec, StallSum};
pub use report::write_text;

/// Distinct reasons and task names kept; later ones are counted as `other`.
pub const MAX_NAMES: usize = 4096;

/// A host thread known ahead to run a vCPU.
#[derive(Clone, Debug)]
pub struct KnownVcpu {
    pub pid: i32,
    pub machine: usize,
    pub vcpu: u32,
    /// The guest CPU this vCPU runs (the identity unless mapped).
    pub guest_cpu: u32,
}

/// What the analysis is told: machine names (index 0 the host) and the vCPU
/// threads the offset timeline or a GUEST option names. Threads that
/// run `kvm_entry`/`kvm_exit`/`kvm_emulate_insn` are vCPUs too when not named.
#[derive(Clone, Debug, Default)]
pub struct ExplainConfig {
    pub machines: Vec<String>,
    pub vcpus: Vec<KnownVcpu>,
    /// VMM process → guest machine, for threads found by their events.
    pub tgids: Vec<(i32, usize)>,
    /// Labels of VMs no guest recording was given for, by VMM process or
    /// vCPU thread (a GUEST option's name).
    pub labels: Vec<(i32, String)>,
    /// Named guest intervals to account for ([`stall`]).
    pub stalls: Vec<StallSpec>,
    /// Guest scheduling latencies above this many cycles are stalls too.
    pub sched_latency: Option<u64>,
}

/// Interned names (exit reasons, tasks), capped.
#[derive(Clone, Debug, Default)]
struct Names {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let s = if self.list.len() >= MAX_NAMES { "other" } else { s };
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
    fn name(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("?", String::as_str)
    }
}

/// What a vCPU thread is doing, as far as its own events tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Unknown,
    Guest,
    Exit(u32),
    User(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    Running,
    /// Runnable, waiting for this CPU.
    Runnable(u32),
    Sleeping,
}

/// A vCPU's state at one host cycle (names by id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Unknown,
    Guest,
    Exit(u32),
    Userspace(u32),
    Preempted(u32),
    Halted,
}

/// One stretch of one vCPU in one state, for outputs that draw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index into [`Explainer::vcpu_labels`].
    pub vcpu: usize,
    pub start: u64,
    pub end: u64,
    pub state: State,
}

#[derive(Clone, Debug, Default)]
struct ExitStats {
    d: Durations,
    /// Guest task at the exit → exits.
    tasks: HashMap<u32, u64>,
}

#[derive(Clone, Debug)]
struct Vcpu {
    pid: i32,
    tgid: Option<i32>,
    comm: String,
    machine: Option<usize>,
    vcpu: Option<u32>,
    guest_cpu: Option<u32>,
    act: Act,
    sched: Sched,
    /// Task holding the CPU this thread waits for.
    preemptor: u32,
    state: State,
    since: u64,
    totals: HashMap<State, u64>,
    /// The exit in progress: reason, time, guest task.
    open_exit: Option<(u32, u64, Option<u32>)>,
    /// Has entered the guest (VMX/SVM): emulation is then part of an exit.
    entered: bool,
    exits: BTreeMap<u32, ExitStats>,
    /// Exits whose entry never came before the next exit.
    unpaired: u64,
    /// Events of the thread while in guest mode other than kvm_exit: an
    /// exit the recording lost.
    missed_exits: u64,
}

/// The state machine over the merged stream; [`ExplainSink`] feeds it.
pub struct Explainer {
    cfg: ExplainConfig,
    reasons: Names,
    tasks: Names,
    vcpus: Vec<Vcpu>,
    by_pid: HashMap<i32, usize>,
    /// Host CPU → the task it runs (from sched_switch).
    cpu_task: HashMap<u32, u32>,
    /// Interrupt handlers per host CPU, and what they took from each vCPU.
    irq: irq::Tracker,
    /// (guest machine, guest CPU) → the guest task it runs.
    guest_task: HashMap<(usize, u32), u32>,
    /// kvm_exit (exit_reason, isa) of binary records → reason id.
    raw_reasons: HashMap<(i64, i64), u32>,
    scratch: Vec<u8>,
    first: Option<u64>,
    last: u64,
    host_events: u64,
    lost_marks: u64,
    sched_switches: u64,
    wakeups: u64,
    guest_switches: u64,
    runnable: usize,
    emulate: u32,
    unknown_reason: u32,
    /// Closed segments, when the caller asked to see them.
    segments: Option<Vec<Segment>>,
    /// Per named stall kind, (machine, guest CPU) → its open interval:
    /// start, the vCPU's totals then.
    open_stalls: Vec<HashMap<(usize, u32), stall::Open>>,
    /// Named kinds, then sched latency last when asked.
    stall_kinds: Vec<stall::Kind>,
    /// (machine, guest task pid) → the wakeup, from when the task waits.
    wakeups_pending: HashMap<(usize, i64), stall::Open>,
}

/// Whether guest event `r` is what `pat` names: its name, or text in a
/// marker (`scratch` holds the rendered marker).
fn matches(scratch: &mut Vec<u8>, r: &Record<'_>, pat: &str) -> bool {
    if r.name == pat {
        return true;
    }
    if pat.is_empty() || !matches!(r.name, "print" | "tracing_mark_write" | "bputs" | "bprint") {
        return false;
    }
    scratch.clear();
    r.body.render(ftrace::printfmt::Style::Kernel, scratch);
    scratch.windows(pat.len()).any(|w| w == pat.as_bytes())
}

fn is_halt(name: &str) -> bool {
    name.eq_ignore_ascii_case("hlt") || name == "KVM_EXIT_HLT"
}

/// The reason name of a rendered `kvm_exit` / `kvm_userspace_exit` body:
/// `reason NAME rip ...`, `reason UNKNOWN (N) ...`, `reason KVM_EXIT_IO (2)`.
fn reason_of(text: &str) -> Option<&str> {
    let rest = &text[text.find("reason ")? + 7..];
    if rest.starts_with("UNKNOWN (") {
        return rest.find(')').map(|i| &rest[..=i]);
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

impl Explainer {
    pub fn new(cfg: ExplainConfig) -> Self {
        let mut reasons = Names::default();
        let emulate = reasons.id("EMULATE");
        let unknown_reason = reasons.id("?");
        let (cfg_stalls, sched) = (cfg.stalls.len(), cfg.sched_latency.is_some());
        Explainer {
            cfg,
            reasons,
            tasks: Names::default(),
            vcpus: Vec::new(),
            by_pid: HashMap::new(),
            cpu_task: HashMap::new(),
            irq: irq::Tracker::default(),
            guest_task: HashMap::new(),
            raw_reasons: HashMap::new(),
            scratch: Vec::new(),
            first: None,
            last: 0,
            host_events: 0,
            lost_marks: 0,
            sched_switches: 0,
            wakeups: 0,
            guest_switches: 0,
            runnable: 0,
            emulate,
            unknown_reason,
            segments: None,
            open_stalls: vec![HashMap::new(); cfg_stalls],
            stall_kinds: vec![stall::Kind::default(); cfg_stalls + sched as usize],
            wakeups_pending: HashMap::new(),
        }
    }

    /// Keeps every closed state segment for [`Explainer::take_segments`].
    pub fn keep_segments(&mut self) {
        self.segments.get_or_insert_with(Vec::new);
    }

    /// The segments closed since the last call.
    pub fn take_segments(&mut self) -> Vec<Segment> {
        self.segments.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// `machine vCPU n` (or `thread PID`) of vCPU index `i`.
    pub fn vcpu_label(&self, i: usize) -> String {
        let Some(v) = self.vcpus.get(i) else { return String::new() };
        let m = self.machine_label(v);
        match v.vcpu {
            Some(n) => format!("{m} vCPU {n}"),
            None => format!("{m} vCPU thread {}", v.pid),
        }
    }

    /// The guest machine index of vCPU `i` when known.
    pub fn vcpu_machine(&self, i: usize) -> Option<usize> {
        self.vcpus.get(i)?.machine
    }

    fn machine_label(&self, v: &Vcpu) -> String {
        if let Some(m) = v.machine.and_then(|m| self.cfg.machines.get(m)) {
            return m.clone();
        }
        match self.cfg.labels.iter().find(|(p, _)| *p == v.pid).or_else(|| self.cfg.labels.iter().find(|(p, _)| Some(*p) == v.tgid)) {
            Some((_, l)) => l.clone(),
            None => "vm?".into(),
        }
    }

    /// A state's name and detail (`exit`, `EPT_VIOLATION`).
    pub fn state_name(&self, s: State) -> (&'static str, Option<&str>) {
        match s {
            State::Unknown => ("unknown", None),
            State::Guest => ("guest", None),
            State::Exit(r) => ("exit", Some(self.reasons.name(r))),
            State::Userspace(r) => ("userspace", Some(self.reasons.name(r))),
            State::Preempted(t) => ("preempted", Some(self.tasks.name(t))),
            State::Halted => ("halted", None),
        }
    }

    fn vcpu_of(&mut self, pid: i32, comm: &str, tgid: Option<i32>, discover: bool) -> Option<usize> {
        if let Some(&i) = self.by_pid.get(&pid) {
            if self.vcpus[i].comm.is_empty() && !comm.is_empty() {
                self.vcpus[i].comm = comm.to_string();
            }
            return Some(i);
        }
        let known = self.cfg.vcpus.iter().find(|k| k.pid == pid).cloned();
        if known.is_none() && !discover {
            return None;
        }
        let machine = known.as_ref().map(|k| k.machine).or_else(|| self.cfg.tgids.iter().find(|(t, _)| Some(*t) == tgid).map(|&(_, m)| m));
        let i = self.vcpus.len();
        self.vcpus.push(Vcpu {
            pid,
            tgid,
            comm: comm.to_string(),
            machine,
            vcpu: known.as_ref().map(|k| k.vcpu),
            guest_cpu: known.as_ref().map(|k| k.guest_cpu),
            act: Act::Unknown,
            sched: Sched::Running,
            preemptor: 0,
            state: State::Unknown,
            since: self.first.unwrap_or(0),
            totals: HashMap::new(),
            open_exit: None,
            entered: false,
            exits: BTreeMap::new(),
            unpaired: 0,
            missed_exits: 0,
        });
        self.by_pid.insert(pid, i);
        Some(i)
    }

    /// Moves vCPU `i` to the state its activity and scheduling say, at `ts`.
    fn settle(&mut self, i: usize, ts: u64) {
        let v = &self.vcpus[i];
        let halt = |r: u32| is_halt(self.reasons.name(r));
        let s = match (v.sched, v.act) {
            (Sched::Runnable(_), _) => State::Preempted(v.preemptor),
            (_, Act::Unknown) => State::Unknown,
            (Sched::Running, Act::Guest) => State::Guest,
            (Sched::Sleeping, Act::Exit(r) | Act::User(r)) if halt(r) => State::Halted,
            // Asleep "in guest mode" cannot be: an exit the recording lost.
            (Sched::Sleeping, Act::Guest) => State::Exit(self.unknown_reason),
            (_, Act::Exit(r)) => State::Exit(r),
            (_, Act::User(r)) => State::Userspace(r),
        };
        let v = &mut self.vcpus[i];
        if s == v.state {
            return;
        }
        let ts = ts.max(v.since);
        if ts > v.since {
            *v.totals.entry(v.state).or_default() += ts - v.since;
            if let Some(segs) = self.segments.as_mut() {
                segs.push(Segment { vcpu: i, start: v.since, end: ts, state: v.state });
            }
        }
        v.state = s;
        v.since = ts;
    }

    fn set_sched(&mut self, i: usize, s: Sched) {
        let was = matches!(self.vcpus[i].sched, Sched::Runnable(_));
        let now = matches!(s, Sched::Runnable(_));
        self.runnable = (self.runnable + now as usize).saturating_sub(was as usize);
        self.vcpus[i].sched = s;
    }

    fn task_id(&mut self, comm: &str, pid: i64) -> u32 {
        let mut b = std::mem::take(&mut self.scratch);
        b.clear();
        b.extend_from_slice(comm.as_bytes());
        b.push(b'-');
        ftrace::put::dec_i64(&mut b, pid);
        let id = self.tasks.id(std::str::from_utf8(&b).unwrap_or("?"));
        self.scratch = b;
        id
    }

    /// The reason id of a kvm_exit or kvm_userspace_exit.
    fn reason(&mut self, r: &Record<'_>) -> u32 {
        let key = match r.body {
            Body::Raw { .. } if r.name == "kvm_exit" => field_int(r, "exit_reason").map(|e| (e, field_int(r, "isa").unwrap_or(1))),
            _ => None,
        };
        if let Some(id) = key.and_then(|k| self.raw_reasons.get(&k)) {
            return *id;
        }
        let mut b = std::mem::take(&mut self.scratch);
        b.clear();
        r.body.render(ftrace::printfmt::Style::TraceCmd, &mut b);
        let id = match std::str::from_utf8(&b).ok().and_then(reason_of) {
            Some(n) => self.reasons.id(n),
            None => self.unknown_reason,
        };
        self.scratch = b;
        if let Some(k) = key {
            self.raw_reasons.insert(k, id);
        }
        id
    }

    fn close_exit(&mut self, i: usize, ts: u64) {
        if let Some((r, t0, task)) = self.vcpus[i].open_exit.take() {
            let e = self.vcpus[i].exits.entry(r).or_default();
            e.d.add(ts.saturating_sub(t0));
            *e.tasks.entry(task.unwrap_or(u32::MAX)).or_default() += 1;
        }
    }

    fn open_exit(&mut self, i: usize, r: u32, ts: u64) {
        let v = &self.vcpus[i];
        let task = v.machine.zip(v.guest_cpu.or(v.vcpu)).and_then(|k| self.guest_task.get(&k).copied());
        let v = &mut self.vcpus[i];
        if v.open_exit.is_some() {
            v.unpaired += 1;
        }
        v.open_exit = Some((r, ts, task));
    }

    /// The vCPU running guest CPU `cpu` of `machine`, when known.
    fn vcpu_of_guest_cpu(&self, machine: usize, cpu: u32) -> Option<usize> {
        self.vcpus.iter().position(|v| v.machine == Some(machine) && v.guest_cpu.or(v.vcpu) == Some(cpu))
    }

    /// vCPU `i`'s cycles per state and host IRQs on its CPU up to `ts`.
    fn totals_at(&self, i: Option<usize>, ts: u64) -> stall::Totals {
        let Some((i, v)) = i.and_then(|i| Some((i, self.vcpus.get(i)?))) else { return stall::Totals::default() };
        let mut t = stall::Totals { states: v.totals.clone(), irqs: self.irq.sums_at(i, ts) };
        if self.first.is_some() && ts > v.since {
            *t.states.entry(v.state).or_default() += ts - v.since;
        }
        t
    }

    fn guest_event(&mut self, machine: usize, cpu: u32, ts: u64, r: &Record<'_>) {
        let mut switched_in = None;
        if r.name == "sched_switch" {
            self.guest_switches += 1;
            let comm = field_str(r, "next_comm").unwrap_or("?");
            let pid = field_int(r, "next_pid").unwrap_or(-1);
            let id = self.task_id(comm, pid);
            self.guest_task.insert((machine, cpu), id);
            switched_in = Some((pid, id));
        }
        for k in 0..self.cfg.stalls.len() {
            if self.open_stalls[k].contains_key(&(machine, cpu)) {
                if matches(&mut self.scratch, r, &self.cfg.stalls[k].to) {
                    let Some(o) = self.open_stalls[k].remove(&(machine, cpu)) else { continue };
                    let (breakdown, irqs) = stall::diff(&self.totals_at(o.vcpu, ts), &o.then);
                    self.stall_kinds[k].add(stall::RawStall { machine, cpu, start: o.start, end: ts, task: None, vcpu: o.vcpu, breakdown, irqs });
                }
            } else if matches(&mut self.scratch, r, &self.cfg.stalls[k].from) {
                let vcpu = self.vcpu_of_guest_cpu(machine, cpu);
                let then = self.totals_at(vcpu, ts);
                self.open_stalls[k].insert((machine, cpu), stall::Open { start: ts, cpu, vcpu, then });
            }
        }
        let Some(limit) = self.cfg.sched_latency else { return };
        match (r.name, switched_in) {
            ("sched_waking", _) => {
                let Some(pid) = field_int(r, "pid") else { return };
                if self.wakeups_pending.len() >= stall::MAX_PENDING && !self.wakeups_pending.contains_key(&(machine, pid)) {
                    return;
                }
                let target = field_int(r, "target_cpu").map_or(cpu, |c| c as u32);
                let vcpu = self.vcpu_of_guest_cpu(machine, target);
                let then = self.totals_at(vcpu, ts);
                self.wakeups_pending.entry((machine, pid)).or_insert(stall::Open { start: ts, cpu: target, vcpu, then });
            }
            (_, Some((pid, task))) => {
                let Some(o) = self.wakeups_pending.remove(&(machine, pid)) else { return };
                if ts - o.start.min(ts) > limit {
                    let (breakdown, irqs) = stall::diff(&self.totals_at(o.vcpu, ts), &o.then);
                    if let Some(kind) = self.stall_kinds.last_mut() {
                        kind.add(stall::RawStall { machine, cpu: o.cpu, start: o.start, end: ts, task: Some(task), vcpu: o.vcpu, breakdown, irqs });
                    }
                }
            }
            _ => {}
        }
    }

    /// Feeds one event of the merged stream.
    pub fn event(&mut self, machine: usize, ev: &EventView<'_>) {
        if machine != 0 {
            if let Payload::Event(r) = ev.payload {
                self.guest_event(machine, ev.cpu, ev.ts, &r);
            }
            return;
        }
        let ts = ev.ts;
        if self.first.is_none() {
            self.first = Some(ts);
            for v in &mut self.vcpus {
                v.since = ts;
            }
        }
        // The merge is ordered; a source that is not cannot shrink the recording.
        self.last = self.last.max(ts);
        self.host_events += 1;
        let r = match ev.payload {
            Payload::Event(r) => r,
            Payload::Lost { .. } => {
                self.lost_marks += 1;
                return;
            }
        };
        match r.name {
            "sched_switch" => return self.switch(ev.cpu, &r, ts),
            "sched_waking" | "sched_wakeup" | "sched_wakeup_new" => return self.wakeup(&r, ts),
            "sched_migrate_task" => return self.migrate(&r, ts),
            _ => {}
        }
        if irq::is_irq(r.name) {
            // A handler's event names the task it interrupted, the one
            // current on that CPU: a vCPU thread on its host CPU, with or
            // without sched_switch in the recording. States do not change
            // (a handler after an exit is part of that exit).
            let owner = self.vcpu_of(r.pid, r.comm, r.tgid, false);
            self.irq.event(ev.cpu, irq::read(&r).as_ref(), ts, owner);
            return;
        }
        // Threads that open run windows (crate::runs), or leave the guest, run vCPUs.
        let discover = crate::runs::opens(r.name).is_some() || r.name == "kvm_exit";
        let Some(i) = self.vcpu_of(r.pid, r.comm, r.tgid, discover) else { return };
        if self.vcpus[i].sched != Sched::Running {
            // Its own event: it runs (a switch in the recording lost).
            self.set_sched(i, Sched::Running);
        }
        let act = self.vcpus[i].act;
        match r.name {
            "kvm_entry" => {
                if act == Act::Guest {
                    self.vcpus[i].missed_exits += 1;
                }
                self.close_exit(i, ts);
                let v = &mut self.vcpus[i];
                v.entered = true;
                v.act = Act::Guest;
                if v.vcpu.is_none() {
                    v.vcpu = crate::check::entry_vcpu(&r.body);
                }
            }
            "kvm_exit" => {
                let reason = self.reason(&r);
                self.open_exit(i, reason, ts);
                self.vcpus[i].act = Act::Exit(reason);
            }
            "kvm_userspace_exit" => {
                let reason = self.reason(&r);
                self.vcpus[i].act = Act::User(reason);
            }
            "kvm_emulate_insn" if !self.vcpus[i].entered => {
                self.close_exit(i, ts);
                self.open_exit(i, self.emulate, ts);
                self.vcpus[i].act = Act::Exit(self.emulate);
            }
            _ => {
                let v = &mut self.vcpus[i];
                match act {
                    Act::Guest => {
                        v.missed_exits += 1;
                        v.act = Act::Exit(self.unknown_reason);
                    }
                    // Back in KVM_RUN: the exit goes on in the kernel.
                    Act::User(_) if r.system == "kvm" => {
                        v.act = Act::Exit(v.open_exit.map_or(self.unknown_reason, |e| e.0));
                    }
                    _ => {}
                }
            }
        }
        self.settle(i, ts);
    }

    fn switch(&mut self, cpu: u32, r: &Record<'_>, ts: u64) {
        self.sched_switches += 1;
        // Which thread leaves and which runs: the run-window module's reading.
        let Some((prev, next)) = crate::runs::switch_pids(r) else { return };
        let next_task = self.task_id(field_str(r, "next_comm").unwrap_or("?"), next.into());
        let state = match r.body {
            Body::Raw { .. } => field_int(r, "prev_state"),
            Body::Text(_) | Body::Rendered(_) => r.body.text().and_then(|t| ftrace::text::field(t, "prev_state")).map(prev_state_bits),
        };
        // TASK_RUNNING is 0; the preempted mark (TASK_REPORT_MAX, `+`) is
        // above the report bits (include/trace/events/sched.h).
        let runnable = state.is_some_and(|s| s & 0xff == 0);
        self.cpu_task.insert(cpu, next_task);
        if let Some(i) = self.vcpu_of(prev, "", None, false) {
            if runnable {
                self.set_sched(i, Sched::Runnable(cpu));
                self.vcpus[i].preemptor = next_task;
            } else {
                self.set_sched(i, Sched::Sleeping);
            }
            self.settle(i, ts);
        }
        if let Some(i) = self.vcpu_of(next, field_str(r, "next_comm").unwrap_or(""), None, false) {
            self.set_sched(i, Sched::Running);
            self.settle(i, ts);
        }
        if self.runnable > 0 {
            for i in 0..self.vcpus.len() {
                if self.vcpus[i].sched == Sched::Runnable(cpu) && self.vcpus[i].pid != prev {
                    self.vcpus[i].preemptor = next_task;
                    self.settle(i, ts);
                }
            }
        }
    }

    fn wakeup(&mut self, r: &Record<'_>, ts: u64) {
        self.wakeups += 1;
        let Some(pid) = field_int(r, "pid") else { return };
        let Some(i) = self.vcpu_of(pid as i32, "", None, false) else { return };
        if self.vcpus[i].sched != Sched::Sleeping {
            return;
        }
        let cpu = field_int(r, "target_cpu").map_or(u32::MAX, |c| c as u32);
        let unknown = self.tasks.id("?");
        self.vcpus[i].preemptor = self.cpu_task.get(&cpu).copied().unwrap_or(unknown);
        self.set_sched(i, Sched::Runnable(cpu));
        self.settle(i, ts);
    }

    fn migrate(&mut self, r: &Record<'_>, ts: u64) {
        let (Some(pid), Some(dest)) = (field_int(r, "pid"), field_int(r, "dest_cpu")) else { return };
        let Some(i) = self.vcpu_of(pid as i32, "", None, false) else { return };
        if let Sched::Runnable(_) = self.vcpus[i].sched {
            let unknown = self.tasks.id("?");
            self.vcpus[i].sched = Sched::Runnable(dest as u32);
            self.vcpus[i].preemptor = self.cpu_task.get(&(dest as u32)).copied().unwrap_or(unknown);
            self.settle(i, ts);
        }
    }

    /// Closes every vCPU's last state at the recording's last host event.
    pub fn finish(&mut self) {
        let end = self.last;
        // Handlers open at the end are cut there.
        for cpu in self.irq.busy_cpus() {
            self.irq.close(cpu, end);
        }
        for i in 0..self.vcpus.len() {
            let v = &mut self.vcpus[i];
            if end > v.since {
                *v.totals.entry(v.state).or_default() += end - v.since;
                if let Some(segs) = self.segments.as_mut() {
                    segs.push(Segment { vcpu: i, start: v.since, end, state: v.state });
                }
            }
            v.since = end.max(v.since);
        }
    }

    /// The report (call after [`Explainer::finish`]).
    pub fn report(&self) -> ExplainReport {
        let start = self.first.unwrap_or(0);
        let mut vcpus = Vec::new();
        let mut order: Vec<usize> = (0..self.vcpus.len()).collect();
        order.sort_by_key(|&i| {
            let v = &self.vcpus[i];
            (v.machine.unwrap_or(usize::MAX), self.machine_label(v), v.vcpu.unwrap_or(u32::MAX), v.pid)
        });
        for i in order {
            let v = &self.vcpus[i];
            let mut states: Vec<(State, u64)> = v.totals.iter().map(|(&s, &c)| (s, c)).collect();
            states.sort();
            let states = states
                .into_iter()
                .map(|(s, cycles)| {
                    let (state, detail) = self.state_name(s);
                    StateTotal { state, detail: detail.map(str::to_string), cycles }
                })
                .collect();
            let exits = v
                .exits
                .iter()
                .map(|(&r, e)| {
                    let mut tasks: Vec<(String, u64)> =
                        e.tasks.iter().map(|(&t, &n)| (if t == u32::MAX { "?".to_string() } else { self.tasks.name(t).to_string() }, n)).collect();
                    tasks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    ExitReport { reason: self.reasons.name(r).to_string(), summary: e.d.summary(), guest_tasks: tasks }
                })
                .collect();
            vcpus.push(VcpuReport {
                machine: self.machine_label(v),
                vcpu: v.vcpu,
                thread: v.pid,
                comm: v.comm.clone(),
                total: v.totals.values().sum(),
                states,
                exits,
                open_exit: v.open_exit.map(|(r, t, _)| (self.reasons.name(r).to_string(), t)),
                unpaired_exits: v.unpaired,
                missed_exits: v.missed_exits,
                emulating: !v.entered && v.exits.contains_key(&self.emulate),
                host_irqs: self.irq.sums_of(i).map(|s| self.irq.totals(irq::flat(s))).unwrap_or_default(),
            });
        }
        let stalls = self.stall_report();
        ExplainReport {
            stalls,
            start,
            end: self.last,
            length: self.last.saturating_sub(start),
            host_events: self.host_events,
            lost_marks: self.lost_marks,
            sched_switches: self.sched_switches,
            wakeups: self.wakeups,
            guest_switches: self.guest_switches,
            irq_events: self.irq.events,
            irq_unmatched_exits: self.irq.unmatched_exits + self.irq.unreadable,
            irq_lost_exits: self.irq.lost_exits,
            irq_open_at_end: self.irq.open_at_end,
            vcpus,
        }
    }
}

impl Explainer {
    fn state_label(&self, s: State) -> String {
        match self.state_name(s) {
            ("preempted", Some(d)) => format!("preempted by {d}"),
            (n, Some(d)) => format!("{n} {d}"),
            (n, None) => n.to_string(),
        }
    }

    fn stall_report(&self) -> Vec<StallReport> {
        let machine = |m: usize| self.cfg.machines.get(m).cloned().unwrap_or_default();
        let thread = |v: Option<usize>| v.and_then(|i| self.vcpus.get(i)).map(|v| v.pid);
        let named = |b: &mut dyn Iterator<Item = (State, u64)>| b.map(|(s, c)| (self.state_label(s), c)).collect::<Vec<_>>();
        self.stall_kinds
            .iter()
            .enumerate()
            .map(|(k, kind)| StallReport {
                kind: match self.cfg.stalls.get(k) {
                    Some(s) => s.name(),
                    None => format!("sched latency > {}", self.cfg.sched_latency.unwrap_or(0)),
                },
                count: kind.count,
                sums: kind
                    .sums
                    .iter()
                    .map(|(&(m, cpu), s)| StallSum {
                        machine: machine(m),
                        cpu,
                        thread: thread(s.vcpu),
                        count: s.count,
                        cycles: s.cycles,
                        breakdown: named(&mut s.breakdown.iter().map(|(&s, &c)| (s, c))),
                        irqs: self.irq.totals(irq::flat(&s.irqs)),
                    })
                    .collect(),
                longest: kind
                    .longest
                    .iter()
                    .map(|s| Stall {
                        machine: machine(s.machine),
                        cpu: s.cpu,
                        start: s.start,
                        end: s.end,
                        task: s.task.map(|t| self.tasks.name(t).to_string()).unwrap_or_default(),
                        thread: thread(s.vcpu),
                        breakdown: named(&mut s.breakdown.iter().copied()),
                        irqs: self.irq.totals(s.irqs.iter().copied()),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Cycles in one state.
#[derive(Clone, Debug, Serialize)]
pub struct StateTotal {
    /// `guest`, `exit`, `userspace`, `preempted`, `halted`, `unknown`.
    pub state: &'static str,
    /// The exit reason, or the preempting host task (`comm-pid`).
    pub detail: Option<String>,
    pub cycles: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExitReport {
    pub reason: String,
    /// Exit-to-entry cycles.
    pub summary: Summary,
    /// Guest task (`comm-pid`, `?` before the guest's first switch on that
    /// CPU or without a guest recording) → exits, most first.
    pub guest_tasks: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VcpuReport {
    pub machine: String,
    pub vcpu: Option<u32>,
    pub thread: i32,
    pub comm: String,
    /// Sum of `states`: the recording's length.
    pub total: u64,
    pub states: Vec<StateTotal>,
    pub exits: Vec<ExitReport>,
    /// An exit without its entry at the end: (reason, host TSC).
    pub open_exit: Option<(String, u64)>,
    pub unpaired_exits: u64,
    pub missed_exits: u64,
    /// Runs guest code by emulation (no kvm_entry): exits are emulations.
    pub emulating: bool,
    /// Host IRQs and softirqs on the thread's host CPU while it ran there
    /// (in the host: an interrupt in guest mode exits first): count and
    /// exclusive cycles, most cycles first. Part of the states' time, not a
    /// state.
    pub host_irqs: Vec<IrqTotal>,
}

impl VcpuReport {
    /// Cycles in states named `state` (all details).
    pub fn cycles(&self, state: &str) -> u64 {
        self.states.iter().filter(|s| s.state == state).map(|s| s.cycles).sum()
    }
    /// Cycles in `state` with `detail`.
    pub fn cycles_of(&self, state: &str, detail: &str) -> u64 {
        self.states.iter().filter(|s| s.state == state && s.detail.as_deref() == Some(detail)).map(|s| s.cycles).sum()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ExplainReport {
    /// Host TSC of the host recording's first and last event.
    pub start: u64,
    pub end: u64,
    pub length: u64,
    pub host_events: u64,
    /// Lost-events marks in the host recording (states across them may be wrong).
    pub lost_marks: u64,
    pub sched_switches: u64,
    pub wakeups: u64,
    pub guest_switches: u64,
    /// irq_handler_entry/exit and softirq_entry/exit events of the host.
    pub irq_events: u64,
    /// Handler exits without their entry and handler events without their
    /// number (ignored), entries whose exit never came (closed at the next
    /// entry of their kind), and handlers still open at the end (cut there).
    pub irq_unmatched_exits: u64,
    pub irq_lost_exits: u64,
    pub irq_open_at_end: u64,
    pub vcpus: Vec<VcpuReport>,
    /// Per stall kind asked for.
    pub stalls: Vec<StallReport>,
}

/// The analysis as a sink; forwards every event to `inner` when given.
pub struct ExplainSink<'s> {
    pub explainer: Explainer,
    inner: Option<&'s mut dyn Sink>,
}

impl<'s> ExplainSink<'s> {
    pub fn new(cfg: ExplainConfig, inner: Option<&'s mut dyn Sink>) -> Self {
        ExplainSink { explainer: Explainer::new(cfg), inner }
    }
}

impl Sink for ExplainSink<'_> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        self.explainer.event(machine, ev);
        match self.inner.as_deref_mut() {
            Some(s) => s.event(machine, ev),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.explainer.finish();
        match self.inner.as_deref_mut() {
            Some(s) => s.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
