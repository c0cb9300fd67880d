//! The host's side of a vCPU's exits, for `explain`'s ground truth
//! (`tscmerge synth --host-story`): after an HLT exit the vCPU thread sleeps
//! (switched out `S` to the idle task), is woken by an interrupt on its CPU
//! (`sched_waking` from the idle task) and waits until the idle task gives
//! the CPU back; after every [`PREEMPT_EVERY`]th other exit a named host
//! task preempts it (switched out `R+`) and runs until it sleeps.
//!
//! Host interrupts on the vCPU's CPU: after every third exit a hard IRQ
//! (`irq_handler_entry`/`exit`), after the next a softirq (every other one
//! with a hard IRQ over it), as an external-interrupt exit has them; a hard
//! IRQ wakes the halted thread while it sleeps (in the idle task: not the
//! vCPU's); the first exit brings a handler exit whose entry came before
//! (ignored), and the last leaves a softirq running at the end.
//!
//! Each happening here says which state the vCPU enters with it
//! ([`state_after`]), so [`truth`] adds the states up from the model itself,
//! not from the trace: the totals `explain` must find, to the cycle.

use std::collections::BTreeMap;

use super::model::{Happening, Rng, SynthConfig, SynthEvent, VcpuEntity};

/// Every this many non-HLT exits a host task preempts the vCPU.
pub const PREEMPT_EVERY: u64 = 4;

/// The host tasks that preempt vCPUs: (pid, comm); the comm of a pid on `cpu`.
pub fn story_comm(pid: i32, cpu: u32) -> String {
    match pid {
        0 => format!("swapper/{cpu}"),
        700 => "stress-ng".to_string(),
        p => format!("kworker/{cpu}:{}", p - 800),
    }
}

/// One vCPU's story generator, with its own random stream (the entity's
/// own stream, and so its exits, stay as without a story).
#[derive(Clone, Debug)]
pub struct HostStory {
    rng: Rng,
    exits: u64,
    /// Every exit, HLT too.
    all_exits: u64,
}

/// The hard IRQs of the story: (number, `irq_handler_entry` name).
pub const STORY_IRQS: [(i64, &str); 2] = [(33, "nvme0q3"), (41, "virtio0-input.0")];
/// Softirq vectors of the story: TIMER, NET_RX, RCU, SCHED.
pub const STORY_SOFTIRQS: [i64; 4] = [1, 3, 9, 7];

/// The name of the story's hard IRQ `num`.
pub fn irq_name(num: i64) -> &'static str {
    STORY_IRQS.iter().find(|i| i.0 == num).map_or("?", |i| i.1)
}

/// How explain names a handler: `irq 33 nvme0q3`, `softirq 3 NET_RX`.
pub fn irq_label(soft: bool, num: i64) -> String {
    if soft {
        let name = crate::event::softirq_name(num).unwrap_or("?");
        format!("softirq {num} {name}")
    } else {
        format!("irq {num} {}", irq_name(num))
    }
}

impl HostStory {
    pub fn new(cfg: &SynthConfig, vm: usize, vcpu: u32) -> HostStory {
        HostStory { rng: Rng::new(cfg.seed ^ 0x5707_0000 ^ ((vm as u64) << 20) ^ vcpu as u64), exits: 0, all_exits: 0 }
    }

    /// Appends what follows an exit of `reason` at `t`, events like `tmpl`
    /// (the vCPU's), `last` after the vCPU's last window; returns the time
    /// of the last.
    pub fn after_exit(&mut self, tmpl: &SynthEvent, reason: &str, mut t: u64, last: bool, out: &mut Vec<SynthEvent>) -> u64 {
        let mut push = |t: u64, what: Happening| out.push(SynthEvent { host: crate::time::HostTsc(t), what, ..tmpl.clone() });
        let irq = |soft: bool, entry: bool, num: i64, idle: bool| Happening::HostIrq { soft, entry, num, idle };
        self.all_exits += 1;
        let n = self.all_exits;
        if n == 1 {
            // A handler that entered before the recording began.
            t += self.rng.range(20, 100);
            push(t, irq(false, false, STORY_IRQS[0].0, false));
        }
        let k = (n / 3) as usize;
        match n % 3 {
            0 => {
                let num = STORY_IRQS[k % 2].0;
                t += self.rng.range(50, 200);
                push(t, irq(false, true, num, false));
                t += self.rng.range(300, 3_000);
                push(t, irq(false, false, num, false));
            }
            1 => {
                let vec = STORY_SOFTIRQS[k % 4];
                t += self.rng.range(50, 200);
                push(t, irq(true, true, vec, false));
                if k % 2 == 1 {
                    // A hard IRQ over it (softirqs run with interrupts on).
                    let num = STORY_IRQS[1].0;
                    t += self.rng.range(100, 500);
                    push(t, irq(false, true, num, false));
                    t += self.rng.range(200, 1_000);
                    push(t, irq(false, false, num, false));
                }
                t += self.rng.range(200, 2_000);
                push(t, irq(true, false, vec, false));
            }
            _ => {}
        }
        if reason == "HLT" {
            t += self.rng.range(100, 500);
            push(t, Happening::VcpuOut { runnable: false, next_pid: 0 });
            // The interrupt that ends the halt, in the idle task.
            let num = STORY_IRQS[0].0;
            t += self.rng.range(5_000, 50_000);
            push(t, irq(false, true, num, true));
            t += self.rng.range(100, 400);
            push(t, Happening::VcpuWaking { waker_pid: 0 });
            t += self.rng.range(100, 400);
            push(t, irq(false, false, num, true));
            t += self.rng.range(200, 2_000);
            push(t, Happening::VcpuIn { prev_pid: 0 });
        } else {
            t = self.preempt(t, &mut push);
        }
        if last {
            // Still running when the recording ends.
            t += self.rng.range(100, 1_000);
            push(t, irq(true, true, STORY_SOFTIRQS[0], false));
        }
        t
    }

    /// Every [`PREEMPT_EVERY`]th non-HLT exit, a host task preempts the vCPU.
    fn preempt(&mut self, mut t: u64, push: &mut impl FnMut(u64, Happening)) -> u64 {
        self.exits += 1;
        if self.exits.is_multiple_of(PREEMPT_EVERY) {
            let p = if (self.exits / PREEMPT_EVERY).is_multiple_of(2) { 700 } else { 801 };
            t += self.rng.range(100, 500);
            push(t, Happening::VcpuOut { runnable: true, next_pid: p });
            t += self.rng.range(3_000, 30_000);
            push(t, Happening::VcpuIn { prev_pid: p });
        }
        t
    }
}

/// The state a vCPU enters with `what` (`None`: it stays), as `explain`
/// names states: `guest`, `exit REASON`, `preempted by COMM-PID`, `halted`.
pub fn state_after(what: &Happening, host_cpu: u32, last_exit: &str) -> Option<String> {
    Some(match what {
        Happening::KvmEntry => "guest".into(),
        Happening::KvmExit { reason } => format!("exit {reason}"),
        Happening::VcpuOut { runnable: false, .. } => "halted".into(),
        Happening::VcpuOut { runnable: true, next_pid } => format!("preempted by {}-{next_pid}", story_comm(*next_pid, host_cpu)),
        // Woken on its idle CPU: it waits for the idle task to yield.
        Happening::VcpuWaking { .. } => format!("preempted by {}-0", story_comm(0, host_cpu)),
        Happening::VcpuIn { .. } => format!("exit {last_exit}"),
        _ => return None,
    })
}

/// The stall [`truth`] accounts for: from each guest marker to the next
/// guest context switch on its CPU (`explain --stall`).
pub const STALL: &str = "tscmerge-marker..sched_switch";

/// Ground truth of one vCPU: cycles per state over `[start, end]` (the host
/// recording's first and last event), and per (exit reason, guest task at
/// the exit as `comm-pid`, `?` before the guest's first switch) the exits
/// followed by an entry and their exit-to-entry cycles; and the [`STALL`]
/// intervals: how many, and their cycles per state summed; and the host
/// IRQs on the vCPU's CPU while the thread ran there, per handler as
/// explain labels it ([`irq_label`]): (entries, exclusive cycles) over the
/// recording and inside the stalls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuTruth {
    pub states: BTreeMap<String, u64>,
    pub exits: BTreeMap<(String, String), (u64, u64)>,
    pub stalls: u64,
    pub stall_states: BTreeMap<String, u64>,
    pub irqs: IrqSums,
    pub stall_irqs: IrqSums,
}

/// Handler label → (entries, exclusive cycles).
pub type IrqSums = BTreeMap<String, (u64, u64)>;

/// The vCPU thread's handlers: the softirq and the hard IRQ over it, and
/// since when the innermost runs; (entries, cycles) per handler so far.
#[derive(Clone, Debug, Default)]
struct Handlers {
    soft: Option<i64>,
    hard: Option<i64>,
    since: u64,
    sums: IrqSums,
}

impl Handlers {
    fn top(&self) -> Option<String> {
        match (self.hard, self.soft) {
            (Some(h), _) => Some(irq_label(false, h)),
            (None, Some(v)) => Some(irq_label(true, v)),
            (None, None) => None,
        }
    }
    /// The sums with the running handler's cycles up to `ts`.
    fn upto(&self, ts: u64) -> IrqSums {
        let mut s = self.sums.clone();
        if let Some(k) = self.top() {
            s.entry(k).or_default().1 += ts - self.since;
        }
        s
    }
    fn event(&mut self, ts: u64, soft: bool, entry: bool, num: i64) {
        self.sums = self.upto(ts);
        self.since = ts;
        let slot = if soft { &mut self.soft } else { &mut self.hard };
        if entry {
            *slot = Some(num);
            self.sums.entry(irq_label(soft, num)).or_default().0 += 1;
        } else if *slot == Some(num) {
            *slot = None;
        }
    }
}

/// Cycles per state up to `ts`: the closed ones and the current one.
fn upto(totals: &BTreeMap<String, u64>, state: &str, since: u64, ts: u64) -> BTreeMap<String, u64> {
    let mut t = totals.clone();
    *t.entry(state.to_string()).or_default() += ts - since;
    t
}

pub fn truth(cfg: &SynthConfig, vm: usize, vcpu: u32, start: u64, end: u64) -> VcpuTruth {
    let mut t = VcpuTruth::default();
    let (mut state, mut since) = ("unknown".to_string(), start);
    let mut last_exit = String::from("?");
    let mut open: Option<(String, String, u64)> = None;
    let mut task = String::from("?");
    // At the open stall's start: cycles per state, and the handlers' sums.
    let mut stall: Option<(BTreeMap<String, u64>, IrqSums)> = None;
    let mut h = Handlers::default();
    for e in VcpuEntity::new(cfg, vm, vcpu) {
        match e.what {
            Happening::GuestMarker { .. } if stall.is_none() => stall = Some((upto(&t.states, &state, since, e.host.0), h.upto(e.host.0))),
            Happening::GuestSwitch { .. } => {
                if let Some((then, then_irqs)) = stall.take() {
                    t.stalls += 1;
                    for (s, c) in upto(&t.states, &state, since, e.host.0) {
                        let d = c - then.get(&s).copied().unwrap_or(0);
                        if d > 0 {
                            *t.stall_states.entry(s).or_default() += d;
                        }
                    }
                    for (k, (n, c)) in h.upto(e.host.0) {
                        let (n0, c0) = then_irqs.get(&k).copied().unwrap_or_default();
                        if (n, c) != (n0, c0) {
                            let x = t.stall_irqs.entry(k).or_default();
                            x.0 += n - n0;
                            x.1 += c - c0;
                        }
                    }
                }
            }
            // The idle task's handlers are not the vCPU thread's.
            Happening::HostIrq { soft, entry, num, idle: false } => h.event(e.host.0, soft, entry, num),
            _ => {}
        }
        if let Happening::GuestSwitch { next_pid, .. } = e.what {
            task = format!("{}-{next_pid}", super::text::guest_comm(next_pid));
            continue;
        }
        if e.is_guest() {
            continue;
        }
        let ts = e.host.0;
        match &e.what {
            Happening::KvmExit { reason } => {
                last_exit = reason.to_string();
                open = Some((last_exit.clone(), task.clone(), ts));
            }
            Happening::KvmEntry => {
                if let Some((r, k, t0)) = open.take() {
                    let x = t.exits.entry((r, k)).or_default();
                    x.0 += 1;
                    x.1 += ts - t0;
                }
            }
            _ => {}
        }
        if let Some(s) = state_after(&e.what, e.host_cpu, &last_exit) {
            if s != state {
                *t.states.entry(std::mem::replace(&mut state, s)).or_default() += ts - since;
                since = ts;
            }
        }
    }
    *t.states.entry(state).or_default() += end - since;
    t.states.retain(|_, c| *c > 0);
    // A handler still running is cut at the end.
    t.irqs = h.upto(end);
    t
}
