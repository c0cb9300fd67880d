//! Guest stalls and the host's account of them: for each guest interval the
//! user names — from a guest event to the next one on the same guest CPU
//! (`--stall FROM..TO`, each an event name or text in a marker), or a guest
//! task's scheduling latency (`sched_waking` → the `sched_switch` that runs
//! it) above a threshold — the cycles its vCPU spent in each host state
//! during the interval, and the host IRQs and softirqs on the host CPU the
//! vCPU thread ran on meanwhile ([`super::irq`]): the difference of the
//! vCPU's running totals at both ends.
//!
//! Memory: one open interval per (stall kind, guest CPU), one pending
//! wakeup per guest task (capped at [`MAX_PENDING`]), the [`KEEP`] longest
//! stalls of each kind, and per (kind, vCPU) a sum.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::irq::{Deltas, IrqTotal, Sums};
use super::State;

/// Wakeups awaiting their switch kept per guest; beyond it new ones are not tracked.
pub const MAX_PENDING: usize = 4096;
/// Longest stalls kept per kind for the report.
pub const KEEP: usize = 10;

/// A named interval: FROM..TO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallSpec {
    pub from: String,
    pub to: String,
}

impl StallSpec {
    /// `FROM..TO`; each side an event name (`sched_switch`) or text a guest
    /// marker contains.
    pub fn parse(s: &str) -> std::result::Result<StallSpec, String> {
        match s.split_once("..") {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(StallSpec { from: a.to_string(), to: b.to_string() }),
            _ => Err(format!("{s:?}: expected FROM..TO (event names or marker text), e.g. 'req start..req end'")),
        }
    }
    pub fn name(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }
}

/// A vCPU's cycles per state so far, and its host IRQs.
#[derive(Clone, Debug, Default)]
pub(super) struct Totals {
    pub states: HashMap<State, u64>,
    pub irqs: Sums,
}

/// An interval under way: since when, on which guest CPU, its vCPU and the
/// vCPU's totals then.
#[derive(Clone, Debug)]
pub(super) struct Open {
    pub start: u64,
    pub cpu: u32,
    pub vcpu: Option<usize>,
    pub then: Totals,
}

/// One stall, with its breakdown by host state (names resolved).
#[derive(Clone, Debug, Serialize)]
pub struct Stall {
    pub machine: String,
    pub cpu: u32,
    /// Host TSC of its start and end.
    pub start: u64,
    pub end: u64,
    /// The guest task (sched latency) or empty.
    pub task: String,
    /// The vCPU thread whose states these are.
    pub thread: Option<i32>,
    pub breakdown: Vec<(String, u64)>,
    /// Host IRQs and softirqs on the vCPU thread's host CPU while it ran
    /// there inside the stall: count and exclusive cycles, most cycles first.
    pub irqs: Vec<IrqTotal>,
}

/// Every stall of one kind on one vCPU, summed.
#[derive(Clone, Debug, Serialize)]
pub struct StallSum {
    pub machine: String,
    pub cpu: u32,
    pub thread: Option<i32>,
    pub count: u64,
    pub cycles: u64,
    pub breakdown: Vec<(String, u64)>,
    pub irqs: Vec<IrqTotal>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StallReport {
    /// `FROM..TO`, or `sched latency > N`.
    pub kind: String,
    pub count: u64,
    pub sums: Vec<StallSum>,
    /// The longest, longest first.
    pub longest: Vec<Stall>,
}

/// Raw stall (state ids) until the report resolves names.
#[derive(Clone, Debug)]
pub(super) struct RawStall {
    pub machine: usize,
    pub cpu: u32,
    pub start: u64,
    pub end: u64,
    pub task: Option<u32>,
    pub vcpu: Option<usize>,
    pub breakdown: Vec<(State, u64)>,
    pub irqs: Deltas,
}

/// The stalls of one kind on one guest CPU, summed.
#[derive(Clone, Debug, Default)]
pub(super) struct Sum {
    pub vcpu: Option<usize>,
    pub count: u64,
    pub cycles: u64,
    pub breakdown: BTreeMap<State, u64>,
    pub irqs: Sums,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Kind {
    pub count: u64,
    /// Per (machine, guest CPU).
    pub sums: BTreeMap<(usize, u32), Sum>,
    pub longest: Vec<RawStall>,
}

impl Kind {
    pub fn add(&mut self, s: RawStall) {
        self.count += 1;
        let e = self.sums.entry((s.machine, s.cpu)).or_insert_with(|| Sum { vcpu: s.vcpu, ..Sum::default() });
        e.count += 1;
        e.cycles += s.end.saturating_sub(s.start);
        for &(st, c) in &s.breakdown {
            *e.breakdown.entry(st).or_default() += c;
        }
        for &(k, n, c) in &s.irqs {
            let x = e.irqs.entry(k).or_default();
            x.0 += n;
            x.1 += c;
        }
        let len = |l: &RawStall| l.end.saturating_sub(l.start);
        if self.longest.len() < KEEP || self.longest.last().is_some_and(|l| len(l) < len(&s)) {
            let at = self.longest.partition_point(|l| len(l) >= len(&s));
            self.longest.insert(at, s);
            self.longest.truncate(KEEP);
        }
    }
}

/// `now − then` per state, states of no cycles left out, and per IRQ.
pub(super) fn diff(now: &Totals, then: &Totals) -> (Vec<(State, u64)>, Deltas) {
    let mut out: Vec<(State, u64)> =
        now.states.iter().map(|(&s, &c)| (s, c.saturating_sub(then.states.get(&s).copied().unwrap_or(0)))).filter(|&(_, c)| c > 0).collect();
    out.sort();
    (out, super::irq::diff(&now.irqs, &then.irqs))
}
