//! Host interrupt handlers per host CPU, for `explain`'s breakdowns: which
//! hard IRQ (`irq:irq_handler_entry`/`irq_handler_exit`, fields `irq`,
//! `name` / `irq`, `ret`) or softirq (`irq:softirq_entry`/`softirq_exit`,
//! field `vec`) runs on each CPU, from include/trace/events/irq.h.
//!
//! Cycles are exclusive: a hard IRQ that interrupts a softirq (softirqs run
//! with interrupts enabled, kernel/softirq.c `handle_softirqs`) takes its
//! cycles from the softirq. Each handler, its count (one per entry) and its
//! cycles belong to the owner its entry names: the vCPU thread it
//! interrupted (the entry event's task), if any.
//!
//! Recordings are untrusted and cut at both ends:
//! - an exit without its entry (the handler began before the recording, or
//!   the entry was lost) is ignored ([`Tracker::unmatched_exits`]);
//! - softirqs do not nest (one `handle_softirqs` per CPU at a time) and run
//!   after hard IRQ handlers return (from `irq_exit`): a softirq entry while
//!   handlers are open means their exits were lost; they are closed there
//!   ([`Tracker::lost_exits`]); so is an open handler of the same IRQ when
//!   that IRQ enters again (a line does not nest with itself,
//!   `IRQD_IRQ_INPROGRESS`, kernel/irq/chip.c);
//! - hard IRQs of other lines nest: mainline runs handlers with interrupts
//!   off (since 2.6.35), but interrupt pipelines do not (Dovetail/Xenomai:
//!   an out-of-band timer inside an in-band handler, as in the corpus's
//!   Xenomai guest). At most [`MAX_DEPTH`] handlers per CPU are kept; a
//!   deeper entry drops the outermost (a lost exit): no per-event storage;
//! - an exit of a handler under the innermost closes those above it (their
//!   exits were lost);
//! - a handler open at the end is cut there (by the caller's `ts`).

use std::collections::HashMap;

use serde::Serialize;

use crate::event::{field_int, field_str, softirq_name, Record};

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

/// Open handlers kept per CPU: a softirq and three hard IRQs over it.
pub const MAX_DEPTH: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    soft: bool,
    /// `irq` or `vec`, to pair the exit.
    num: i64,
    key: u32,
    /// Whose handler it is: the vCPU thread it interrupted, if any.
    owner: Option<usize>,
}

/// One host CPU: its open handlers, outermost first, and since when the
/// innermost has run.
#[derive(Clone, Debug, Default)]
struct Cpu {
    frames: [Option<Frame>; MAX_DEPTH],
    len: usize,
    since: u64,
}

impl Cpu {
    fn open(&self) -> impl DoubleEndedIterator<Item = (usize, Frame)> + '_ {
        self.frames
            .iter()
            .take(self.len)
            .enumerate()
            .filter_map(|(i, f)| Some((i, (*f)?)))
    }
    fn top(&self) -> Option<Frame> {
        self.open().next_back().map(|(_, f)| f)
    }
    fn depth(&self) -> u64 {
        self.len as u64
    }
    /// Closes frame `at` and those above it; returns how many.
    fn cut(&mut self, at: usize) -> u64 {
        let n = self.len.saturating_sub(at);
        for f in self.frames.iter_mut().skip(at) {
            *f = None;
        }
        self.len = self.len.min(at);
        n as u64
    }
    /// Pushes `f`, dropping the outermost when full; returns how many dropped.
    fn push(&mut self, f: Frame) -> u64 {
        let mut dropped = 0;
        if self.len >= MAX_DEPTH {
            self.frames.rotate_left(1);
            self.len = MAX_DEPTH - 1;
            dropped = 1;
        }
        if let Some(slot) = self.frames.get_mut(self.len) {
            *slot = Some(f);
            self.len += 1;
        }
        dropped
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

/// The handlers of every host CPU, the names of what ran, and per owner
/// (vCPU index) the sums credited so far.
#[derive(Clone, Debug, Default)]
pub(super) struct Tracker {
    cpus: HashMap<u32, Cpu>,
    keys: Vec<Key>,
    ids: HashMap<Key, u32>,
    sums: HashMap<usize, Sums>,
    pub events: u64,
    pub unmatched_exits: u64,
    pub lost_exits: u64,
    /// Handler events without their `irq`/`vec` field.
    pub unreadable: u64,
    /// Handlers still open at the end of the recording.
    pub open_at_end: u64,
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

    fn credit(&mut self, owner: Option<usize>, key: u32, count: u64, cycles: u64) {
        if let Some(o) = owner {
            if count > 0 || cycles > 0 {
                let e = self.sums.entry(o).or_default().entry(key).or_default();
                e.0 += count;
                e.1 += cycles;
            }
        }
    }

    /// Credits CPU `cpu`'s innermost handler up to `ts` to its owner.
    fn flush(&mut self, cpu: u32, ts: u64) {
        let Some(c) = self.cpus.get_mut(&cpu) else {
            return;
        };
        let (top, since) = (c.top(), c.since);
        c.since = since.max(ts);
        if let Some(f) = top {
            self.credit(f.owner, f.key, 0, ts.saturating_sub(since));
        }
    }

    /// What `owner` was credited, with its running handlers up to `ts`.
    pub fn sums_at(&self, owner: usize, ts: u64) -> Sums {
        let mut s = self.sums.get(&owner).cloned().unwrap_or_default();
        for c in self.cpus.values() {
            if let Some(f) = c.top().filter(|f| f.owner == Some(owner)) {
                s.entry(f.key).or_default().1 += ts.saturating_sub(c.since);
            }
        }
        s
    }

    /// What `owner` was credited (after [`Tracker::close`]: everything).
    pub fn sums_of(&self, owner: usize) -> Option<&Sums> {
        self.sums.get(&owner)
    }

    /// Applies one irq event on `cpu` at `ts`; `owner`: the vCPU thread
    /// the event names (the task the handler interrupted). `None` event: a
    /// handler event without its number, counted and ignored.
    pub fn event(&mut self, cpu: u32, ev: Option<&IrqEvent<'_>>, ts: u64, owner: Option<usize>) {
        self.events += 1;
        let Some(ev) = ev else {
            self.unreadable += 1;
            return;
        };
        self.flush(cpu, ts);
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
                // What this entry shows lost its exit (module doc).
                let lost = if soft {
                    Some(0)
                } else {
                    c.open()
                        .find(|(_, f)| !f.soft && f.num == num)
                        .map(|(i, _)| i)
                };
                if let Some(at) = lost {
                    self.lost_exits += c.cut(at);
                }
                self.lost_exits += c.push(Frame {
                    soft,
                    num,
                    key,
                    owner,
                });
                self.credit(owner, key, 1, 0);
            }
            IrqEvent::Exit { soft, num } => {
                let c = self.cpus.entry(cpu).or_default();
                let at = c
                    .open()
                    .rev()
                    .find(|(_, f)| f.soft == soft && f.num == num)
                    .map(|(i, _)| i);
                match at {
                    // Those above it lost their exits.
                    Some(at) => self.lost_exits += c.cut(at) - 1,
                    None => self.unmatched_exits += 1,
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
    pub fn close(&mut self, cpu: u32, ts: u64) {
        self.flush(cpu, ts);
        if let Some(c) = self.cpus.get_mut(&cpu) {
            self.open_at_end += c.cut(0);
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
                        let name =
                            softirq_name(*vec).map_or_else(|| format!("vec {vec}"), str::to_string);
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
