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
use crate::event::{Cursor, Payload};
use crate::source::meta::{Meta, PidCache};
use crate::source::AnyCursor;
use ftrace::format::Events;
use ftrace::printfmt::RenderCtx;
use ftrace::ring::RingEvent;

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
/// The pids apart from the tracks, so the search stays in one cache line or
/// two. Records read ahead carry their threads' indices; a thread added
/// later ([`Lookahead::evidence`]) moves indices, and `gen` says so.
#[derive(Default)]
struct Threads {
    pids: Vec<i32>,
    tracks: Vec<Track>,
    gen: u64,
}

impl Threads {
    fn new(pids: impl IntoIterator<Item = i32>) -> Threads {
        let mut t = Threads::default();
        for p in pids {
            t.entry_or_default(p);
        }
        t
    }
    #[inline]
    fn index(&self, pid: i32) -> Option<u32> {
        self.pids.binary_search(&pid).ok().map(|i| i as u32)
    }
    fn get(&self, pid: &i32) -> Option<&Track> {
        self.tracks.get(self.pids.binary_search(pid).ok()?)
    }
    fn get_mut(&mut self, pid: &i32) -> Option<&mut Track> {
        let i = self.pids.binary_search(pid).ok()?;
        self.tracks.get_mut(i)
    }
    fn entry_or_default(&mut self, pid: i32) -> &mut Track {
        let i = match self.pids.binary_search(&pid) {
            Ok(i) => i,
            Err(i) => {
                self.pids.insert(i, pid);
                self.tracks.insert(i, Track::default());
                self.gen += 1;
                i
            }
        };
        &mut self.tracks[i]
    }
    fn values_mut(&mut self) -> impl Iterator<Item = &mut Track> {
        self.tracks.iter_mut()
    }
}

/// One host record as the pass takes it, reduced to what windows need:
/// read from a binary record's type id and pid (and a sched_switch's pids)
/// when its page is loaded, so the page's bytes are walked once; its
/// threads resolved to indices into [`Threads`] then too.
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// Its time as its cursor gives it (a lost mark: the cursor's).
    ts: u64,
    what: What,
    /// Index of the tracked thread of `pid`, and of `switch`'s two
    /// ([`NONE`] when untracked).
    thread: u32,
    prev: u32,
    next: u32,
}

/// No tracked thread.
const NONE: u32 = u32::MAX;

impl Rec {
    fn new(ts: u64, what: What) -> Rec {
        Rec { ts, what, thread: NONE, prev: NONE, next: NONE }
    }

    fn resolve(&mut self, t: &Threads) {
        let ix = |p: i32| t.index(p).unwrap_or(NONE);
        (self.thread, self.prev, self.next) = match self.what {
            What::Event { pid, switch, .. } => {
                let (p, n) = switch.map_or((NONE, NONE), |(p, n)| (ix(p), ix(n)));
                (ix(pid), p, n)
            }
            _ => (NONE, NONE, NONE),
        };
    }

    /// Whether taking it changes a window (a pending hole aside).
    #[inline]
    fn matters(&self) -> bool {
        matches!(self.what, What::Lost) || (self.thread & self.prev & self.next) != NONE
    }
}

#[derive(Clone, Copy, Debug)]
enum What {
    /// A lost-events mark.
    Lost,
    /// An event of thread `pid`, opening a window of kind `opens`; a
    /// sched_switch `(prev_pid, next_pid)`.
    Event { pid: i32, opens: Option<WindowKind>, switch: Option<(i32, i32)> },
    /// A cursor with a time but no event (not met in practice).
    Nothing,
}

/// A cursor's state in the pass: its records read but not taken yet (the
/// rest of one page, or one record for cursors read record by record).
#[derive(Default)]
struct Feed<'a> {
    /// For the records that are built ([`binary`]).
    pids: PidCache<'a>,
    recs: Vec<Rec>,
    at: usize,
    /// [`Threads::gen`] when `recs` were resolved.
    gen: u64,
    /// The read error met after `recs`: taking it stops the pass, where a
    /// pass going record by record would have met it.
    error: Option<String>,
    /// Its last event's time, and the start of a lost span waiting for
    /// its next record to end it.
    last_ts: u64,
    lost_from: Option<u64>,
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

/// What a binary record is to the pass: by its type id and pid alone, but
/// for a sched_switch (and a record of a type the formats lack), which is
/// built as a cursor would build it, for [`switch_pids`].
#[inline]
fn binary<'m>(meta: &'m Meta, ids: &TypeIds, ctx: &RenderCtx<'m>, pids: &PidCache<'m>, r: RingEvent<'_>) -> What {
    let RingEvent::Event { data, .. } = r else {
        return What::Lost;
    };
    let id = Events::common_type(data, meta.endian);
    if let Some(pid) = meta.record_pid(data) {
        if id != ids.switch || id.is_none() {
            let opens = if id == ids.entry && id.is_some() {
                Some(WindowKind::Entry)
            } else if id == ids.emulate && id.is_some() {
                Some(WindowKind::Emulation)
            } else {
                None
            };
            return What::Event { pid, opens, switch: None };
        }
    }
    let r = meta.record(data, ctx, pids);
    What::Event { pid: r.pid, opens: opens(r.name), switch: switch_pids(&r) }
}

/// Run windows of chosen host threads, read ahead on demand.
///
/// The host cursors are merged by time with a heap, as the merge does. A
/// binary input's records are reduced to a [`Rec`] a page at a time (type
/// id and pid read from the bytes, nothing built), and a record that
/// changes no window (another thread's event: most host records once the
/// vCPU threads are few) is taken on its own cursor without going through
/// the heap, as long as it is due (at or before the time read to). Skipping
/// it reorders nothing that matters: it touches no window, and its
/// cursor's key in the heap keeps its time (keys are running maxima, see
/// [`read_through`](Self::read_through)).
pub struct Lookahead<'a> {
    cursors: Vec<AnyCursor<'a>>,
    /// Per cursor, what decodes its binary records, and the type ids of
    /// the events that make windows there.
    metas: Vec<Option<(&'a Meta, TypeIds, RenderCtx<'a>)>>,
    feeds: Vec<Feed<'a>>,
    /// `(key, cursor)` of every cursor with a record (or error) left.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
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
    pub fn new<C: Into<AnyCursor<'a>>>(cursors: Vec<C>, threads: impl IntoIterator<Item = i32>, cap: usize) -> Self {
        let cursors: Vec<AnyCursor<'a>> = cursors.into_iter().map(Into::into).collect();
        let n = cursors.len();
        Lookahead {
            cursors,
            metas: vec![None; n],
            feeds: (0..n).map(|_| Feed::default()).collect(),
            heap: BinaryHeap::with_capacity(n),
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
        self.metas = metas.into_iter().map(|m| m.map(|m| (m, TypeIds::of(m), m.ctx(0)))).collect();
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
    ///
    /// A cursor's key in the heap is the largest time met on it so far, its
    /// next record's included, not that record's own time: a heap of own
    /// times pops a record that goes back in time right after the one
    /// before it (it is pushed when that one is taken, below everything
    /// else); keyed by the running maximum, records come off the heap in
    /// that same order, whether or not the records between were skipped.
    /// Inputs are untrusted: their times need not be sorted.
    fn read_through(&mut self, h: u64) {
        if !self.started {
            self.started = true;
            for i in 0..self.cursors.len() {
                self.refill(i);
                let f = &self.feeds[i];
                if let Some(r) = f.recs.first() {
                    self.heap.push(Reverse((r.ts, i)));
                } else if f.error.is_some() {
                    self.heap.push(Reverse((0, i)));
                }
            }
        }
        while !self.failed {
            let Some(&Reverse((mut key, i))) = self.heap.peek() else {
                break;
            };
            if key > h {
                break;
            }
            // The cursor after it in the heap's order: cursor i's records
            // keyed below it are due next whatever the heap says, so they
            // are taken without touching it (a CPU's records come in runs).
            // (Entries are `Reverse`d: the smallest key is the largest entry.)
            let bound = self.heap.as_slice().iter().skip(1).take(2).max().map_or((u64::MAX, usize::MAX), |r| r.0);
            let next = loop {
                let f = &mut self.feeds[i];
                let Some(&rec) = f.recs.get(f.at) else {
                    self.stats.error = f.error.take();
                    self.failed = true;
                    return;
                };
                f.at += 1;
                self.take(i, rec);
                match self.next_due(i, key, h) {
                    Some(k) if k <= h && (k, i) < bound && self.feeds[i].error.is_none() => key = k,
                    next => break next,
                }
            };
            // The entry on top is still cursor i's: move it, one sift
            // instead of a pop and a push.
            match (next, self.heap.peek_mut()) {
                (Some(k), Some(mut top)) => top.0 = (k, i),
                (None, Some(top)) => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
                (None | Some(_), None) => break,
            }
        }
    }

    /// Cursor `i`'s key once its record at `key` is taken: that of its next
    /// record that matters or is not due by `h` (the due ones that change
    /// nothing are taken on the way), or of the read error after its last;
    /// `None` at its end.
    #[inline]
    fn next_due(&mut self, i: usize, mut key: u64, h: u64) -> Option<u64> {
        let gen = self.threads.gen;
        loop {
            let f = &mut self.feeds[i];
            if f.at >= f.recs.len() {
                if f.error.is_some() {
                    return Some(key);
                }
                self.refill(i);
                let f = &self.feeds[i];
                if f.recs.is_empty() {
                    return f.error.is_some().then_some(key);
                }
                continue;
            }
            if f.gen != gen {
                // Threads were added since these were read.
                let t = &self.threads;
                f.recs[f.at..].iter_mut().for_each(|r| r.resolve(t));
                f.gen = gen;
            }
            let rec = f.recs[f.at];
            key = key.max(rec.ts);
            if key > h || f.lost_from.is_some() || rec.matters() {
                return Some(key);
            }
            // Taken as `take` would: counted, and the time a lost mark
            // after it starts from.
            f.at += 1;
            self.stats.host_events_read += 1;
            if let What::Event { .. } = rec.what {
                f.last_ts = rec.ts;
            }
        }
    }

    /// Reads cursor `i`'s next records into its feed: the rest of a page of
    /// a binary input, one record of any other. Empty at the cursor's end.
    fn refill(&mut self, i: usize) {
        let f = &mut self.feeds[i];
        f.recs.clear();
        f.at = 0;
        f.gen = self.threads.gen;
        let (recs, pids, t) = (&mut f.recs, &f.pids, &self.threads);
        let mut push = |ts, what| {
            let mut r = Rec::new(ts, what);
            r.resolve(t);
            recs.push(r);
        };
        let res = match (&mut self.cursors[i], self.metas.get(i).copied().flatten()) {
            (AnyCursor::Dat(c), Some((m, ids, ctx))) => c.take_page(|ts, r| push(ts, binary(m, &ids, &ctx, pids, r))),
            (AnyCursor::Raw(c), Some((m, ids, ctx))) => c.take_page(|ts, r| push(ts, binary(m, &ids, &ctx, pids, r))),
            (c, _) => match c.ts() {
                None => Ok(()),
                Some(ts) => {
                    push(
                        ts,
                        match c.current().map(|e| e.payload) {
                            None => What::Nothing,
                            Some(Payload::Lost { .. }) => What::Lost,
                            Some(Payload::Event(r)) => What::Event { pid: r.pid, opens: opens(r.name), switch: switch_pids(&r) },
                        },
                    );
                    c.advance()
                }
            },
        };
        if let Err(e) = res {
            f.error = Some(e.to_string());
        }
    }

    /// Takes cursor `i`'s record `rec` into the windows.
    #[inline]
    fn take(&mut self, i: usize, rec: Rec) {
        let ts = rec.ts;
        self.stats.host_events_read += 1;
        self.first_ts.get_or_insert(ts);
        let f = &mut self.feeds[i];
        if let Some(from) = f.lost_from.take() {
            // Events were lost between `from` and this one on that CPU:
            // any thread's windows there are unknown.
            for t in self.threads.values_mut() {
                t.widen_hole(from, ts);
            }
        }
        match rec.what {
            What::Lost => {
                self.stats.lost_marks += 1;
                f.lost_from = Some(f.last_ts);
            }
            What::Event { opens, .. } => {
                f.last_ts = ts;
                if rec.matters() {
                    self.on_event(ts, rec.thread, opens, rec.prev, rec.next);
                }
            }
            What::Nothing => {}
        }
    }

    /// A host event at `ts` of thread `thread`, opening a window of kind
    /// `opens`; for a sched_switch, the threads it takes off (`prev`) and
    /// puts on (`next`) the CPU. Threads by index, [`NONE`] if untracked.
    fn on_event(&mut self, ts: u64, thread: u32, opens: Option<WindowKind>, prev: u32, next: u32) {
        if let Some(t) = self.threads.tracks.get_mut(thread as usize) {
            // Any event of the thread ends its open window.
            t.first_event.get_or_insert((ts, opens.is_some()));
            let closed = t.open.take();
            if let Some(kind) = opens {
                t.open = Some((kind, ts));
                t.seen(kind, ts);
            }
            if let Some((kind, start)) = closed {
                self.store(thread, kind, start, ts);
            }
        }
        let mut off = None;
        if let Some(t) = self.threads.tracks.get_mut(prev as usize) {
            t.seen(WindowKind::OnCpu, ts);
            t.first_switch.get_or_insert((ts, false));
            off = t.on_cpu.take();
        }
        if let Some(t) = self.threads.tracks.get_mut(next as usize) {
            t.seen(WindowKind::OnCpu, ts);
            t.first_switch.get_or_insert((ts, true));
            t.on_cpu = Some(ts);
        }
        if let Some(start) = off {
            self.store(prev, WindowKind::OnCpu, start, ts);
        }
    }

    fn store(&mut self, thread: u32, kind: WindowKind, start: u64, end: u64) {
        let Some(t) = self.threads.tracks.get_mut(thread as usize) else {
            return;
        };
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
