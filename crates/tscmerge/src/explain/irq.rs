//! Host interrupt handlers per host CPU, for `explain`'s breakdowns: which
//! hard IRQ (`irq:irq_handler_entry`/`irq_handler_exit`, fields `irq`,
//! `name` / `irq`, `ret`) or softirq (`irq:softirq_entry`/`softirq_exit`,
//! field `vec`) runs on each CPU, from include/trace/events/irq.h.
//!
//! Cycles are exclusive: a hard IRQ that interrupts a softirq (softirqs run
//! with interrupts enabled, kernel/softirq.c `handle_softirqs`) takes its
//! cycles from the softirq. The explain module credits them, with a count
//! per handler entry, to the vCPU thread running on that CPU at the time.
//!
//! Recordings are untrusted and cut at both ends:
//! - an exit without its entry (the handler began before the recording, or
//!   the entry was lost) is ignored ([`Tracker::unmatched_exits`]);
//! - hard IRQ handlers do not nest (they run with interrupts disabled since
//!   Linux 2.6.35, IRQF_DISABLED gone), and neither do softirqs (one
//!   `handle_softirqs` per CPU at a time): an entry while a handler of its
//!   kind is open means that one's exit was lost; it is closed there
//!   ([`Tracker::lost_exits`]); so is a hard IRQ open when a softirq
//!   enters, as softirqs run after the handler returns. Each CPU holds at
//!   most one hard IRQ over at most one softirq: no per-event storage;
//! - a handler open at the end is cut there (by the caller's `ts`).

use std::collections::HashMap;

use serde::Serialize;

use crate::event::{field_int, field_str, Record};

/// Softirq names by vector (include/linux/interrupt.h, the `enum` that
/// irq.h's `show_softirq_name` prints).
pub const SOFTIRQ_NAMES: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// A handler as reported: a hard IRQ by number and name, a softirq by vector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Hard {
        irq: i64,
        name: String,
    },
    Soft {
        vec: i64,
    },
    /// Past [`super::MAX_NAMES`] distinct handlers.
    Other,
}

/// Count (handler entries) and exclusive cycles, per handler id.
pub(super) type Sums = HashMap<u32, (u64, u64)>;

/// (handler id, count, cycles) of an interval.
pub(super) type Deltas = Vec<(u32, u64, u64)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    /// `irq` or `vec`, to pair the exit.
    num: i64,
    key: u32,
}

/// One host CPU: its open softirq and the hard IRQ over it, and since when
/// the innermost has run.
#[derive(Clone, Debug, Default)]
struct Cpu {
    soft: Option<Frame>,
    hard: Option<Frame>,
    since: u64,
}

impl Cpu {
    fn top(&self) -> Option<Frame> {
        self.hard.or(self.soft)
    }
    fn depth(&self) -> u64 {
        self.soft.is_some() as u64 + self.hard.is_some() as u64
    }
}

/// What one irq event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum IrqEvent<'a> {
    Entry { soft: bool, num: i64, name: &'a str },
    Exit { soft: bool, num: i64 },
}

/// Whether `name` is one of the handler events read here.
pub(super) fn is_irq(name: &str) -> bool {
    matches!(
        name,
        "irq_handler_entry" | "irq_handler_exit" | "softirq_entry" | "softirq_exit"
    )
}

/// Reads an irq event (`None` for other events and for ones without their
/// number field). Text bodies: `irq=33 name=nvme0q3`, `irq=33 ret=handled`,
/// `vec=3 [action=NET_RX]` (irq.h's print fmts).
pub(super) fn read<'a>(r: &Record<'a>) -> Option<IrqEvent<'a>> {
    let (soft, entry) = match r.name {
        "irq_handler_entry" => (false, true),
        "irq_handler_exit" => (false, false),
        "softirq_entry" => (true, true),
        "softirq_exit" => (true, false),
        _ => return None,
    };
    let key = if soft { "vec" } else { "irq" };
    let num = field_int(r, key).or_else(|| {
        // The text parser extends `vec=3` over the `[action=NET_RX]` that follows.
        let v = field_str(r, key)?;
        v.split_ascii_whitespace().next()?.parse().ok()
    })?;
    Some(if entry {
        let name = if soft {
            ""
        } else {
            field_str(r, "name").unwrap_or("?")
        };
        IrqEvent::Entry { soft, num, name }
    } else {
        IrqEvent::Exit { soft, num }
    })
}

/// A handler's totals in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IrqTotal {
    /// `irq` (hard), `softirq`, or `other` (past the distinct handlers kept).
    pub kind: &'static str,
    /// The IRQ number or softirq vector.
    pub number: Option<i64>,
    /// The handler's name (`irq_handler_entry`'s `name`) or the vector's.
    pub name: String,
    /// Handler entries.
    pub count: u64,
    /// Exclusive cycles.
    pub cycles: u64,
}

/// The handlers of every host CPU, and the names of what ran.
#[derive(Clone, Debug, Default)]
pub(super) struct Tracker {
    cpus: HashMap<u32, Cpu>,
    keys: Vec<Key>,
    ids: HashMap<Key, u32>,
    pub events: u64,
    pub unmatched_exits: u64,
    pub lost_exits: u64,
    /// Handler events without their `irq`/`vec` field.
    pub unreadable: u64,
    /// Handlers still open at the end of the recording.
    pub open_at_end: u64,
}

fn credit(sums: Option<&mut Sums>, key: u32, count: u64, cycles: u64) {
    if let Some(s) = sums {
        if count > 0 || cycles > 0 {
            let e = s.entry(key).or_default();
            e.0 += count;
            e.1 += cycles;
        }
    }
}

impl Tracker {
    fn id(&mut self, k: Key) -> u32 {
        if let Some(&i) = self.ids.get(&k) {
            return i;
        }
        let k = if self.keys.len() >= super::MAX_NAMES {
            Key::Other
        } else {
            k
        };
        if let Some(&i) = self.ids.get(&k) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(k.clone());
        self.ids.insert(k, i);
        i
    }

    /// Credits CPU `cpu`'s running handler up to `ts` to `sums` (the vCPU
    /// thread on that CPU, if any): call before that thread changes.
    pub fn flush(&mut self, cpu: u32, ts: u64, sums: Option<&mut Sums>) {
        let Some(c) = self.cpus.get_mut(&cpu) else {
            return;
        };
        if let Some(f) = c.top() {
            credit(sums, f.key, 0, ts.saturating_sub(c.since));
        }
        c.since = c.since.max(ts);
    }

    /// The running handler of `cpu` and its cycles not yet credited at `ts`.
    pub fn partial(&self, cpu: u32, ts: u64) -> Option<(u32, u64)> {
        let c = self.cpus.get(&cpu)?;
        Some((c.top()?.key, ts.saturating_sub(c.since)))
    }

    /// Applies one irq event on `cpu` at `ts`, crediting `sums`.
    /// `None`: a handler event without its number, counted and ignored.
    pub fn event(
        &mut self,
        cpu: u32,
        ev: Option<&IrqEvent<'_>>,
        ts: u64,
        mut sums: Option<&mut Sums>,
    ) {
        self.events += 1;
        let Some(ev) = ev else {
            self.unreadable += 1;
            return;
        };
        self.flush(cpu, ts, sums.as_deref_mut());
        match *ev {
            IrqEvent::Entry { soft, num, name } => {
                let key = self.id(if soft {
                    Key::Soft { vec: num }
                } else {
                    Key::Hard {
                        irq: num,
                        name: name.to_string(),
                    }
                });
                let c = self.cpus.entry(cpu).or_default();
                c.since = c.since.max(ts);
                let frame = Some(Frame { num, key });
                if soft {
                    // Neither an open softirq nor a hard IRQ can be under a
                    // new softirq (softirqs run after the handler, from
                    // irq_exit, kernel/softirq.c): both lost their exits.
                    self.lost_exits += c.depth();
                    (c.soft, c.hard) = (frame, None);
                } else {
                    self.lost_exits += c.hard.is_some() as u64;
                    c.hard = frame;
                }
                credit(sums, key, 1, 0);
            }
            IrqEvent::Exit { soft, num } => {
                let c = self.cpus.entry(cpu).or_default();
                let open = if soft { c.soft } else { c.hard };
                if open.is_none_or(|f| f.num != num) {
                    self.unmatched_exits += 1;
                } else if soft {
                    // A hard IRQ still open over it lost its exit.
                    self.lost_exits += c.hard.is_some() as u64;
                    (c.soft, c.hard) = (None, None);
                } else {
                    c.hard = None;
                }
            }
        }
    }

    /// The CPUs with an open handler.
    pub fn busy_cpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .cpus
            .iter()
            .filter(|(_, c)| c.depth() > 0)
            .map(|(&k, _)| k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Closes `cpu`'s handlers at the end of the recording (`ts`).
    pub fn close(&mut self, cpu: u32, ts: u64, sums: Option<&mut Sums>) {
        self.flush(cpu, ts, sums);
        if let Some(c) = self.cpus.get_mut(&cpu) {
            self.open_at_end += c.depth();
            (c.soft, c.hard) = (None, None);
        }
    }

    /// Resolved totals, most cycles first.
    pub fn totals(&self, sums: impl IntoIterator<Item = (u32, u64, u64)>) -> Vec<IrqTotal> {
        let mut out: Vec<IrqTotal> = sums
            .into_iter()
            .filter(|&(_, n, c)| n > 0 || c > 0)
            .map(|(k, count, cycles)| {
                let (kind, number, name) = match self.keys.get(k as usize) {
                    Some(Key::Hard { irq, name }) => ("irq", Some(*irq), name.clone()),
                    Some(Key::Soft { vec }) => {
                        let name = usize::try_from(*vec)
                            .ok()
                            .and_then(|v| SOFTIRQ_NAMES.get(v))
                            .map_or_else(|| format!("vec {vec}"), |n| n.to_string());
                        ("softirq", Some(*vec), name)
                    }
                    Some(Key::Other) | None => ("other", None, "other".to_string()),
                };
                IrqTotal {
                    kind,
                    number,
                    name,
                    count,
                    cycles,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.cycles
                .cmp(&a.cycles)
                .then_with(|| (a.kind, a.number, &a.name).cmp(&(b.kind, b.number, &b.name)))
        });
        out
    }
}

/// `(id, count, cycles)` of `sums`.
pub(super) fn flat(sums: &Sums) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
    sums.iter().map(|(&k, &(n, c))| (k, n, c))
}

/// `now − then` per handler, handlers of no count and no cycles left out.
pub(super) fn diff(now: &Sums, then: &Sums) -> Deltas {
    let mut out: Deltas = now
        .iter()
        .map(|(&k, &(n, c))| {
            let (n0, c0) = then.get(&k).copied().unwrap_or((0, 0));
            (k, n.saturating_sub(n0), c.saturating_sub(c0))
        })
        .filter(|&(_, n, c)| n > 0 || c > 0)
        .collect();
    out.sort_unstable();
    out
}
