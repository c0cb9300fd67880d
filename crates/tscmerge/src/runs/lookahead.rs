//! The host read ahead of the merge, for run windows.
//!
//! A guest event whose guest time fits several offset periods
//! ([`crate::clock::VcpuClock`]) has one candidate host time per period; the
//! one inside a run window of its vCPU's thread is where it happened. Those
//! candidates can lie after the merge's position, so the windows come from a
//! second, independent pass over the host inputs that runs only as far as
//! the latest question asked of it (nothing is read while no event is in
//! doubt).
//!
//! Memory: windows are kept per thread of interest from the lowest host time
//! any of that thread's guest CPUs can still ask about (each guest CPU's
//! events are in true time order, so it never asks below the host time of
//! its last placed event: its *floor*) up to where the pass has read — the
//! lookahead, never the trace. At most [`MAX_STORED_WINDOWS`] are kept; a
//! window that finds no room leaves a hole, and questions in a hole (or
//! where the host lost events) get no answer: the event is then placed by
//! the rule and counted as ambiguous, never guessed.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use serde::Serialize;

use super::{opens, switch_pids, WindowKind};
use crate::event::{Cursor, Detached, Payload};
use crate::source::meta::Meta;
use ftrace::format::Events;

/// Windows kept at once, over all threads (16 bytes each).
pub const MAX_STORED_WINDOWS: usize = 1 << 20;

/// What the pass did, for `--stats`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LookaheadStats {
    /// Host events read by the pass.
    pub host_events_read: u64,
    /// Most windows held at once.
    pub windows_held_max: usize,
    /// Windows not kept for lack of room.
    pub windows_dropped: u64,
    /// Host lost-events marks met (their span answers nothing).
    pub lost_marks: u64,
    /// The pass stopped on this read error (the merge meets it too).
    pub error: Option<String>,
}

#[derive(Default)]
struct Track {
    /// Entry or emulation window open since.
    open: Option<(WindowKind, u64)>,
    on_cpu: Option<u64>,
    /// When each kind was first seen for this thread.
    first_seen: [Option<u64>; 3],
    closed: [VecDeque<(u64, u64)>; 3],
    floors: Vec<Rc<Cell<u64>>>,
    /// Host times whose windows may be missing: `[from, to]`.
    hole: Option<(u64, u64)>,
    /// The thread's first host event, and whether it opened a window
    /// (else one may have been open when the recording began).
    first_event: Option<(u64, bool)>,
    /// Its first sched_switch, and whether that put it on a CPU.
    first_switch: Option<(u64, bool)>,
}

impl Track {
    /// The lowest time a reader of this thread can still ask about (0
    /// before any registered: guest CPUs register as their cursors are
    /// made, and the first of them may read ahead before the others).
    fn floor(&self) -> u64 {
        self.floors.iter().map(|f| f.get()).min().unwrap_or(0)
    }

    /// Drops windows that end at or below every reader's floor.
    fn evict(&mut self) -> usize {
        let floor = self.floor();
        let mut n = 0;
        for q in &mut self.closed {
            while q.front().is_some_and(|w| w.1 <= floor) {
                q.pop_front();
                n += 1;
            }
        }
        n
    }

    fn widen_hole(&mut self, from: u64, to: u64) {
        self.hole = Some(match self.hole {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
    }

    fn seen(&mut self, kind: WindowKind, ts: u64) {
        self.first_seen[kind.index()].get_or_insert(ts);
    }
}

/// The threads of interest (one per vCPU of the guests in doubt), sorted
/// by pid: looked up once per host event, a binary search beats hashing.
#[derive(Default)]
struct Threads(Vec<(i32, Track)>);

impl Threads {
    fn new(pids: impl IntoIterator<Item = i32>) -> Threads {
        let mut t = Threads::default();
        for p in pids {
            t.entry_or_default(p);
        }
        t
    }
    #[inline]
    fn get_mut(&mut self, pid: &i32) -> Option<&mut Track> {
        let i = self.0.binary_search_by_key(pid, |e| e.0).ok()?;
        Some(&mut self.0[i].1)
    }
    fn get(&self, pid: &i32) -> Option<&Track> {
        let i = self.0.binary_search_by_key(pid, |e| e.0).ok()?;
        Some(&self.0[i].1)
    }
    fn entry_or_default(&mut self, pid: i32) -> &mut Track {
        let i = match self.0.binary_search_by_key(&pid, |e| e.0) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (pid, Track::default()));
                i
            }
        };
        &mut self.0[i].1
    }
    fn values_mut(&mut self) -> impl Iterator<Item = &mut Track> {
        self.0.iter_mut().map(|(_, t)| t)
    }
}

/// The type ids of the events that make windows, in one input's formats.
#[derive(Clone, Copy, Debug)]
struct TypeIds {
    switch: Option<u16>,
    entry: Option<u16>,
    emulate: Option<u16>,
}

impl TypeIds {
    fn of(meta: &Meta) -> TypeIds {
        let id = |sys: &str, name: &str| meta.events.by_name(sys, name).map(|f| f.id);
        TypeIds { switch: id("sched", "sched_switch"), entry: id("kvm", "kvm_entry"), emulate: id("kvm", "kvm_emulate_insn") }
    }
}

/// Run windows of chosen host threads, read ahead on demand.
pub struct Lookahead<'a> {
    cursors: Vec<Box<dyn Cursor + 'a>>,
    /// Per cursor, what decodes its binary records, and the type id of
    /// `sched_switch` there: other records of untracked threads are
    /// passed over without being built.
    metas: Vec<Option<(&'a Meta, TypeIds)>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// Per cursor: its last event's time, and the start of a lost span
    /// waiting for the cursor's next event to end it.
    last_ts: Vec<u64>,
    lost_from: Vec<Option<u64>>,
    threads: Threads,
    held: usize,
    cap: usize,
    started: bool,
    failed: bool,
    /// The first host event's time: before it the host recorded nothing.
    first_ts: Option<u64>,
    pub stats: LookaheadStats,
    /// Where the stats go when the pass is dropped.
    report: Option<std::sync::Arc<std::sync::Mutex<Vec<LookaheadStats>>>>,
}

impl Drop for Lookahead<'_> {
    fn drop(&mut self) {
        if let Some(r) = &self.report {
            if let Ok(mut v) = r.lock() {
                v.push(std::mem::take(&mut self.stats));
            }
        }
    }
}

impl<'a> Lookahead<'a> {
    /// A pass over `cursors` (every host cursor, each in time order) keeping
    /// the windows of `threads`; `cap` windows at most.
    pub fn new(cursors: Vec<Box<dyn Cursor + 'a>>, threads: impl IntoIterator<Item = i32>, cap: usize) -> Self {
        let n = cursors.len();
        Lookahead {
            cursors,
            metas: vec![None; n],
            heap: BinaryHeap::with_capacity(n),
            last_ts: vec![0; n],
            lost_from: vec![None; n],
            threads: Threads::new(threads),
            held: 0,
            cap,
            started: false,
            failed: false,
            first_ts: None,
            stats: LookaheadStats::default(),
            report: None,
        }
    }

    /// Cursor `i`'s binary records are decoded by `meta`.
    pub fn with_metas(mut self, metas: Vec<Option<&'a Meta>>) -> Self {
        self.metas = metas.into_iter().map(|m| m.map(|m| (m, TypeIds::of(m)))).collect();
        self.metas.resize(self.cursors.len(), None);
        self
    }

    /// Hands the stats to `to` when the pass ends.
    pub fn report_to(mut self, to: std::sync::Arc<std::sync::Mutex<Vec<LookaheadStats>>>) -> Self {
        self.report = Some(to);
        self
    }

    /// A guest CPU's view of thread `pid`'s windows.
    pub fn evidence(this: &Rc<RefCell<Self>>, pid: i32) -> Evidence<'a> {
        let floor = Rc::new(Cell::new(0));
        let mut la = this.borrow_mut();
        la.threads.entry_or_default(pid).floors.push(floor.clone());
        Evidence { la: this.clone(), pid, floor }
    }

    /// Reads every host event at or before `h`.
    fn read_through(&mut self, h: u64) {
        if !self.started {
            self.started = true;
            for (i, c) in self.cursors.iter().enumerate() {
                if let Some(ts) = c.ts() {
                    self.heap.push(Reverse((ts, i)));
                }
            }
        }
        while !self.failed {
            let Some(&Reverse((ts, i))) = self.heap.peek() else { break };
            if ts > h {
                break;
            }
            self.heap.pop();
            self.take(i, ts);
            if let Err(e) = self.cursors[i].advance() {
                self.stats.error = Some(e.to_string());
                self.failed = true;
                break;
            }
            if let Some(next) = self.cursors[i].ts() {
                self.heap.push(Reverse((next, i)));
            }
        }
    }

    /// Takes cursor `i`'s current event (at `ts`) into the windows.
    fn take(&mut self, i: usize, ts: u64) {
        // A binary record is classified by its type id alone; only a
        // sched_switch is built, for its pids.
        let fast = match (self.metas[i], self.cursors[i].detached()) {
            (Some((meta, ids)), Some(Detached::Raw { data, .. })) => {
                let id = Events::common_type(data, meta.endian);
                match meta.record_pid(data) {
                    Some(pid) if id != ids.switch || id.is_none() => {
                        let opens = if id == ids.entry && id.is_some() {
                            Some(WindowKind::Entry)
                        } else if id == ids.emulate && id.is_some() {
                            Some(WindowKind::Emulation)
                        } else {
                            None
                        };
                        Some((pid, opens))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        self.stats.host_events_read += 1;
        self.first_ts.get_or_insert(ts);
        if let Some(from) = self.lost_from[i].take() {
            // Events were lost between `from` and this one on that CPU:
            // any thread's windows there are unknown.
            for t in self.threads.values_mut() {
                t.widen_hole(from, ts);
            }
        }
        let (pid, opens, switch) = match fast {
            Some((pid, opens)) => (pid, opens, None),
            None => {
                let Some(ev) = self.cursors[i].current() else { return };
                match ev.payload {
                    Payload::Lost { .. } => {
                        self.stats.lost_marks += 1;
                        self.lost_from[i] = Some(self.last_ts[i]);
                        return;
                    }
                    Payload::Event(r) => (r.pid, opens(r.name), switch_pids(&r)),
                }
            }
        };
        self.last_ts[i] = ts;
        self.on_event(ts, pid, opens, switch);
    }

    /// A host event of thread `pid` at `ts`, opening a window of kind
    /// `opens`, or a sched_switch `(prev, next)`.
    fn on_event(&mut self, ts: u64, pid: i32, opens: Option<WindowKind>, switch: Option<(i32, i32)>) {
        let mut closed: [Option<(WindowKind, i32, u64, u64)>; 2] = [None, None];
        if let Some(t) = self.threads.get_mut(&pid) {
            // Any event of the thread ends its open window.
            t.first_event.get_or_insert((ts, opens.is_some()));
            if let Some((kind, start)) = t.open.take() {
                closed[0] = Some((kind, pid, start, ts));
            }
            if let Some(kind) = opens {
                t.open = Some((kind, ts));
                t.seen(kind, ts);
            }
        }
        if let Some((prev, next)) = switch {
            if let Some(t) = self.threads.get_mut(&prev) {
                t.seen(WindowKind::OnCpu, ts);
                t.first_switch.get_or_insert((ts, false));
                if let Some(start) = t.on_cpu.take() {
                    closed[1] = Some((WindowKind::OnCpu, prev, start, ts));
                }
            }
            if let Some(t) = self.threads.get_mut(&next) {
                t.seen(WindowKind::OnCpu, ts);
                t.first_switch.get_or_insert((ts, true));
                t.on_cpu = Some(ts);
            }
        }
        for (kind, pid, start, end) in closed.into_iter().flatten() {
            self.store(pid, kind, start, end);
        }
    }

    fn store(&mut self, pid: i32, kind: WindowKind, start: u64, end: u64) {
        let Some(t) = self.threads.get_mut(&pid) else { return };
        self.held -= t.evict();
        if end <= t.floor() {
            return; // no reader of this thread can still ask about it
        }
        if self.held >= self.cap {
            t.widen_hole(start, end);
            self.stats.windows_dropped += 1;
            return;
        }
        t.closed[kind.index()].push_back((start, end));
        self.held += 1;
        self.stats.windows_held_max = self.stats.windows_held_max.max(self.held);
    }

    /// Whether host time `h` lies inside a run window of thread `pid`, by
    /// the strongest kind of window seen for it by then; `None` when
    /// nothing says (no window of any kind seen, a hole, a read error).
    pub fn inside(&mut self, pid: i32, h: u64) -> Option<bool> {
        self.inside_upto(pid, h, h)
    }

    /// `h` judged by the strongest kind of window seen for `pid` by `upto`
    /// (read through `max(h, upto)`). Before the thread's first window of
    /// that kind, while the host was recording, the thread was outside
    /// (when that first event opened a window; else nothing says).
    fn inside_upto(&mut self, pid: i32, h: u64, upto: u64) -> Option<bool> {
        let last = upto.max(h);
        self.read_through(last);
        let (failed, first_ts) = (self.failed, self.first_ts);
        let t = self.threads.get_mut(&pid).filter(|_| !failed)?;
        self.held -= t.evict();
        let kind = WindowKind::BY_STRENGTH.into_iter().find(|k| t.first_seen[k.index()].is_some_and(|s| s <= last))?;
        t.judge(kind, h, first_ts)
    }
}

impl Track {
    fn judge(&self, kind: WindowKind, h: u64, first_ts: Option<u64>) -> Option<bool> {
        let t = self;
        if t.hole.is_some_and(|(a, b)| a <= h && h <= b) {
            return None;
        }
        let recording = first_ts.is_some_and(|r| r <= h);
        if t.first_seen[kind.index()].is_some_and(|f| h < f) {
            // Before the thread's first window of this kind.
            return match kind {
                // On CPU until its first switch away; off until its first
                // switch in.
                WindowKind::OnCpu => t.first_switch.filter(|_| recording).map(|(_, put_on)| !put_on),
                // After the thread's first event no window of this kind
                // opened; before it, only a first event that opened one
                // says none was open.
                _ => match t.first_event {
                    Some((f, _)) if h >= f => Some(false),
                    Some((_, true)) if recording => Some(false),
                    _ => None,
                },
            };
        }
        let open = match kind {
            WindowKind::OnCpu => t.on_cpu,
            _ => t.open.filter(|o| o.0 == kind).map(|o| o.1),
        };
        if open.is_some_and(|s| s <= h) {
            return Some(true);
        }
        let q = &t.closed[kind.index()];
        let i = q.partition_point(|w| w.0 <= h);
        Some(i > 0 && q[i - 1].1 > h)
    }
}

/// One guest CPU's handle on its vCPU thread's windows.
#[derive(Clone)]
pub struct Evidence<'a> {
    la: Rc<RefCell<Lookahead<'a>>>,
    pid: i32,
    floor: Rc<Cell<u64>>,
}

impl Evidence<'_> {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// See [`Lookahead::inside`].
    pub fn inside(&self, h: u64) -> Option<bool> {
        self.la.borrow_mut().inside(self.pid, h)
    }

    /// Whether `h` is inside, judged by the strongest kind of window seen
    /// by `h`, or, when none is seen by then, by `horizon` (≥ `h`): the
    /// pass reads only as far as it must.
    pub fn inside_by(&self, h: u64, horizon: u64) -> Option<bool> {
        let mut la = self.la.borrow_mut();
        la.read_through(h);
        let seen = la.threads.get(&self.pid).is_some_and(|t| t.first_seen.iter().flatten().any(|&s| s <= h));
        let upto = if seen { h } else { horizon.max(h) };
        la.inside_upto(self.pid, h, upto)
    }

    /// Whether the thread's windows seen so far are exact ones (kvm_entry
    /// or kvm_emulate_insn): on-CPU intervals also hold the host's own work
    /// on the thread (vcpu_load, exits), so "inside" one proves less.
    pub fn exact(&self) -> bool {
        let la = self.la.borrow();
        la.threads.get(&self.pid).is_some_and(|t| t.first_seen[WindowKind::Entry.index()].is_some() || t.first_seen[WindowKind::Emulation.index()].is_some())
    }

    /// This guest CPU's last event is at host time `h`: it will not ask
    /// about earlier times.
    #[inline]
    pub fn set_floor(&self, h: u64) {
        self.floor.set(h);
    }
}

impl std::fmt::Debug for Evidence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence").field("pid", &self.pid).field("floor", &self.floor.get()).finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A host cursor whose events all come from thread 7.
    pub(crate) fn host(events: &[(u64, &str)]) -> Box<dyn Cursor> {
        Box::new(Named { events: events.iter().map(|&(t, n)| (t, n.to_string())).collect(), pos: 0 })
    }

    struct Named {
        events: Vec<(u64, String)>,
        pos: usize,
    }

    impl Cursor for Named {
        fn current(&self) -> Option<crate::EventView<'_>> {
            let (ts, spec) = self.events.get(self.pos)?;
            // spec: "NAME" (pid 7) or "sched_switch BODY" (pid from BODY).
            let (name, body) = spec.split_once(' ').unwrap_or((spec.as_str(), ""));
            Some(crate::EventView {
                ts: *ts,
                orig_ts: None,
                placed: Default::default(),
                cpu: 0,
                payload: Payload::Event(crate::Record { pid: 7, tgid: None, comm: "t", system: "kvm", name, body: crate::Body::Text(body) }),
            })
        }
        fn advance(&mut self) -> crate::Result<()> {
            self.pos += 1;
            Ok(())
        }
    }

    #[test]
    fn entry_windows_answer_and_evict() {
        let c = host(&[(10, "kvm_entry"), (20, "kvm_exit"), (30, "kvm_entry"), (40, "kvm_exit"), (50, "kvm_entry")]);
        let la = Rc::new(RefCell::new(Lookahead::new(vec![c], [7], 100)));
        let ev = Lookahead::evidence(&la, 7);
        assert_eq!(ev.inside(5), None); // nothing seen yet
        assert_eq!(ev.inside(15), Some(true));
        assert_eq!(ev.inside(20), Some(false));
        assert_eq!(ev.inside(35), Some(true));
        assert_eq!(ev.inside(45), Some(false));
        assert_eq!(ev.inside(1000), Some(true)); // open since 50
        // Asked below the floor nothing is kept.
        ev.set_floor(41);
        assert_eq!(ev.inside(41), Some(false));
        assert_eq!(la.borrow().held, 0);
    }

    #[test]
    fn on_cpu_windows_and_cap_holes() {
        let sw = |p: i32, n: i32| format!("sched_switch prev_comm=a prev_pid={p} prev_prio=1 prev_state=S ==> next_comm=b next_pid={n} next_prio=1");
        let evs: Vec<(u64, String)> = vec![(10, sw(0, 7)), (20, sw(7, 0)), (30, sw(0, 7)), (40, sw(7, 0)), (50, sw(0, 7)), (60, sw(7, 0))];
        let refs: Vec<(u64, &str)> = evs.iter().map(|(t, s)| (*t, s.as_str())).collect();
        let la = Rc::new(RefCell::new(Lookahead::new(vec![host(&refs)], [7], 1)));
        let ev = Lookahead::evidence(&la, 7);
        assert_eq!(ev.inside(55), Some(true)); // on CPU since 50
        // Room for one window only: [10, 20) is kept, [30, 40) leaves a hole.
        assert_eq!(ev.inside(35), None);
        assert_eq!(ev.inside(15), Some(true));
        assert_eq!(ev.inside(25), Some(false));
        assert_eq!(la.borrow().stats.windows_dropped, 1);
    }
}
