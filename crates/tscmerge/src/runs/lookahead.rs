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
use std::collections::VecDeque;
use std::rc::Rc;

use serde::Serialize;

use super::{opens, switch_pids, WindowKind};
use crate::event::{Cursor, Payload};
use crate::source::meta::{Meta, PidCache};
use crate::source::AnyCursor;
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
    /// The [`Windows::read`] of this thread's last sweep below its floor,
    /// and that floor.
    swept: (u64, u64),
    /// Its sweep in this read will evict windows ([`Windows::unswept`]).
    must_sweep: bool,
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
        self.evict_below(self.floor())
    }

    fn evict_below(&mut self, floor: u64) -> usize {
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

    #[inline]
    fn seen(&mut self, kind: WindowKind, ts: u64) {
        self.first_seen[kind.index()].get_or_insert(ts);
    }
}

/// The threads of interest (one per vCPU of the guests in doubt), sorted
/// by pid. The pids apart from the tracks, so a search stays in one cache
/// line or two. Records read ahead carry their threads' indices; a thread
/// added later ([`Lookahead::evidence`]) moves indices, and `gen` says so.
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
    /// The index of `pid`'s thread, [`NONE`] if untracked: a scan while
    /// they are few (a few compares beat a search's branches).
    #[inline]
    fn index(&self, pid: i32) -> u32 {
        let i = if self.pids.len() <= 8 { self.pids.iter().position(|&p| p == pid) } else { self.pids.binary_search(&pid).ok() };
        i.and_then(|i| u32::try_from(i).ok()).filter(|&i| i != NONE).unwrap_or(NONE)
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
    /// The event's pid, and the index of its tracked thread ([`NONE`]
    /// when untracked).
    pid: i32,
    thread: u32,
    /// A sched_switch's pids: its index in [`Feed::switches`].
    sw: u32,
    what: What,
    /// Whether taking it changes a window (a pending hole aside): a lost
    /// mark, an event of a tracked thread, a switch off or onto one.
    matters: bool,
}

/// No tracked thread.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// A lost-events mark.
    Lost,
    /// An event, opening a window of this kind.
    Event(Option<WindowKind>),
    /// A sched_switch (which opens none).
    Switch,
    /// A cursor with a time but no event (not met in practice).
    Nothing,
}

/// A sched_switch's `(prev_pid, next_pid)` and their threads' indices.
#[derive(Clone, Copy, Debug)]
struct Switch {
    pids: (i32, i32),
    prev: u32,
    next: u32,
}

/// A cursor's state in the pass: its records read but not taken yet (the
/// rest of one page, or one record for cursors read record by record).
#[derive(Default)]
struct Feed<'a> {
    /// For the records that are built ([`binary`]).
    pids: PidCache<'a>,
    recs: Vec<Rec>,
    /// The pids of the switches among `recs`, in their order.
    switches: Vec<Switch>,
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
    /// The tracked threads the loaded page touches (as [`bit`]s), and its
    /// greatest time: see [`reach`].
    mask: u64,
    end_ts: u64,
    /// Its key in the heap; `None` once out of it.
    key: Option<u64>,
}

/// A tracked thread's bit in [`Feed::mask`] (threads 64 apart share one).
#[inline]
fn bit(thread: u32) -> u64 {
    if thread == NONE {
        0
    } else {
        1 << (thread % 64)
    }
}

impl Feed<'_> {
    /// Resolves the records not taken yet again: threads were added since
    /// they were read.
    fn resolve(&mut self, t: &Threads) {
        let (recs, switches) = (self.recs.get_mut(self.at..).unwrap_or_default(), &mut self.switches);
        let mut mask = 0;
        for r in recs {
            match r.what {
                What::Event(_) => {
                    r.thread = t.index(r.pid);
                    r.matters = r.thread != NONE;
                    mask |= bit(r.thread);
                }
                What::Switch => {
                    r.thread = t.index(r.pid);
                    r.matters = r.thread != NONE;
                    mask |= bit(r.thread);
                    if let Some(s) = switches.get_mut(r.sw as usize) {
                        (s.prev, s.next) = (t.index(s.pids.0), t.index(s.pids.1));
                        r.matters |= (s.prev & s.next) != NONE;
                        mask |= bit(s.prev) | bit(s.next);
                    }
                }
                What::Lost | What::Nothing => {}
            }
        }
        self.mask = mask;
        self.gen = t.gen;
    }
}

/// Where a refill puts a feed's records, their threads resolved as they
/// come.
struct Fill<'f> {
    recs: &'f mut Vec<Rec>,
    switches: &'f mut Vec<Switch>,
    threads: &'f Threads,
    /// The last pid resolved and its thread's index: a CPU runs one
    /// thread for several records in a row.
    last: (i32, u32),
    /// [`Feed::mask`] and [`Feed::end_ts`] of the records put.
    mask: u64,
    end_ts: u64,
}

impl Fill<'_> {
    #[inline]
    fn thread(&mut self, pid: i32) -> u32 {
        if pid != self.last.0 {
            self.last = (pid, self.threads.index(pid));
        }
        self.last.1
    }

    #[inline]
    fn event(&mut self, ts: u64, pid: i32, opens: Option<WindowKind>) {
        let thread = self.thread(pid);
        self.mask |= bit(thread);
        self.end_ts = self.end_ts.max(ts);
        self.recs.push(Rec { ts, pid, thread, sw: 0, what: What::Event(opens), matters: thread != NONE });
    }

    /// An event built as a cursor builds it: a sched_switch when it has
    /// the pids of one.
    fn built(&mut self, ts: u64, pid: i32, opens: Option<WindowKind>, switch: Option<(i32, i32)>) {
        let (Some(pids), Ok(sw)) = (switch, u32::try_from(self.switches.len())) else {
            return self.event(ts, pid, opens);
        };
        let thread = self.thread(pid);
        let (prev, next) = (self.threads.index(pids.0), self.threads.index(pids.1));
        self.switches.push(Switch { pids, prev, next });
        self.mask |= bit(thread) | bit(prev) | bit(next);
        self.end_ts = self.end_ts.max(ts);
        self.recs.push(Rec { ts, pid, thread, sw, what: What::Switch, matters: (thread & prev & next) != NONE });
    }

    fn other(&mut self, ts: u64, what: What) {
        self.end_ts = self.end_ts.max(ts);
        self.recs.push(Rec { ts, pid: 0, thread: NONE, sw: 0, what, matters: what == What::Lost });
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

    /// The window a record of type `id` opens (as [`opens`] by name).
    fn opens(&self, id: u16) -> Option<WindowKind> {
        if Some(id) == self.entry {
            Some(WindowKind::Entry)
        } else if Some(id) == self.emulate {
            Some(WindowKind::Emulation)
        } else {
            None
        }
    }
}

/// How the pass reads one input's binary records.
struct Decoder<'a> {
    meta: &'a Meta,
    ids: TypeIds,
    ctx: RenderCtx<'a>,
    /// Per type id, what a record is by its type alone (the low two bits:
    /// [`OTHER`], [`ENTRY`], [`EMULATE`], [`SLOW`]) and, above, where its
    /// 32-bit pid is, as [`Meta::record_pid`] reads it: one lookup per
    /// record. Shared by the cursors of an input.
    by_id: Rc<[u32]>,
}

const OTHER: u32 = 0;
const ENTRY: u32 = 1;
const EMULATE: u32 = 2;
/// Read by [`binary_slow`]: a sched_switch, a pid read otherwise, an id
/// the formats lack.
const SLOW: u32 = 3;

impl<'a> Decoder<'a> {
    fn new(meta: &'a Meta, shared: Option<&Decoder<'a>>) -> Decoder<'a> {
        let ids = TypeIds::of(meta);
        let by_id = match shared {
            Some(d) => d.by_id.clone(),
            None => meta
                .pid_offsets()
                .enumerate()
                .map(|(id, at)| {
                    let class = match u16::try_from(id).ok().filter(|&id| Some(id) != ids.switch).map(|id| ids.opens(id)) {
                        None => SLOW,
                        Some(Some(WindowKind::Entry)) => ENTRY,
                        Some(Some(WindowKind::Emulation)) => EMULATE,
                        Some(_) => OTHER,
                    };
                    at.filter(|&at| at < 1 << 30).map_or(SLOW, |at| at << 2 | class)
                })
                .collect(),
        };
        Decoder { meta, ids, ctx: meta.ctx(0), by_id }
    }
}

/// Reads a binary record into `fill`: by its type id and pid alone, but
/// for a sched_switch (and a record of a type the formats lack), which is
/// built as a cursor would build it, for [`switch_pids`].
#[inline(always)]
fn binary<'m>(d: &Decoder<'m>, pids: &PidCache<'m>, fill: &mut Fill<'_>, ts: u64, r: RingEvent<'_>) {
    let RingEvent::Event { data, .. } = r else {
        return fill.other(ts, What::Lost);
    };
    if let Some(&id) = data.first_chunk::<2>() {
        let code = d.by_id.get(d.meta.endian.u16(id) as usize).copied().unwrap_or(SLOW);
        if code & 3 != SLOW {
            let pid = data.get((code >> 2) as usize..).and_then(|b| b.first_chunk::<4>()).map_or(-1, |&b| d.meta.endian.u32(b) as i32);
            let opens = match code & 3 {
                ENTRY => Some(WindowKind::Entry),
                EMULATE => Some(WindowKind::Emulation),
                _ => None,
            };
            return fill.event(ts, pid, opens);
        }
    }
    binary_slow(d, pids, fill, ts, data);
}

/// [`binary`] for the records its table does not say.
#[inline(never)]
fn binary_slow<'m>(d: &Decoder<'m>, pids: &PidCache<'m>, fill: &mut Fill<'_>, ts: u64, data: &[u8]) {
    let (meta, ids) = (d.meta, &d.ids);
    if let Some((id, pid)) = meta.record_type_pid(data) {
        if Some(id) != ids.switch {
            return fill.event(ts, pid, ids.opens(id));
        }
    }
    let r = meta.record(data, &d.ctx, pids);
    fill.built(ts, r.pid, opens(r.name), switch_pids(&r));
}

/// Records read at once from a cursor that is not read by pages.
const BATCH: usize = 256;

/// Reads cursor `c`'s next records into its feed `f`: the rest of a page
/// of a binary input (decoded by `dec`), up to [`BATCH`] records of any
/// other. Empty at the cursor's end.
fn refill<'a>(c: &mut AnyCursor<'a>, dec: Option<&Decoder<'a>>, f: &mut Feed<'a>, threads: &Threads) {
    f.recs.clear();
    f.switches.clear();
    f.at = 0;
    f.gen = threads.gen;
    let pids = &f.pids;
    let mut fill = Fill { recs: &mut f.recs, switches: &mut f.switches, threads, last: (0, threads.index(0)), mask: 0, end_ts: 0 };
    let res = match (c, dec) {
        (AnyCursor::Dat(c), Some(d)) => c.take_page(|ts, r| binary(d, pids, &mut fill, ts, r)),
        (AnyCursor::Raw(c), Some(d)) => c.take_page(|ts, r| binary(d, pids, &mut fill, ts, r)),
        (c, _) => (|| -> crate::Result<()> {
            for _ in 0..BATCH {
                let Some(ts) = c.ts() else { break };
                match c.current().map(|e| e.payload) {
                    None => fill.other(ts, What::Nothing),
                    Some(Payload::Lost { .. }) => fill.other(ts, What::Lost),
                    Some(Payload::Event(r)) => fill.built(ts, r.pid, opens(r.name), switch_pids(&r)),
                }
                c.advance()?;
            }
            Ok(())
        })(),
    };
    (f.mask, f.end_ts) = (fill.mask, fill.end_ts);
    if let Err(e) = res {
        f.error = Some(e.to_string());
    }
}

/// `(key, cursor)` as one integer ordered as the pair, for the heap.
#[inline]
fn pack(key: u64, i: usize) -> u128 {
    (key as u128) << 64 | i as u128
}

/// A min-heap of [`pack`]ed keys, with what the pass asks of one: the
/// least, the least after it (one of the least's children), and the least
/// replaced by a new key in one sift.
#[derive(Default)]
struct Heap(Vec<u128>);

impl Heap {
    fn push(&mut self, e: u128) {
        let h = &mut self.0;
        let mut pos = h.len();
        h.push(e);
        while pos > 0 {
            let up = (pos - 1) / 2;
            match (h.get(up).copied(), h.get(pos).copied()) {
                (Some(a), Some(b)) if b < a => h.swap(up, pos),
                _ => break,
            }
            pos = up;
        }
    }

    #[inline]
    fn top(&self) -> Option<u128> {
        self.0.first().copied()
    }

    /// The least entry but the top ([`u128::MAX`] when none).
    #[inline]
    fn second(&self) -> u128 {
        let at = |i| self.0.get(i).copied().unwrap_or(u128::MAX);
        at(1).min(at(2))
    }

    /// Replaces the top by `e`.
    #[inline]
    fn replace_top(&mut self, e: u128) {
        let h = self.0.as_mut_slice();
        let mut pos = 0;
        loop {
            let c = 2 * pos + 1;
            let Some(&l) = h.get(c) else { break };
            let (c, m) = match h.get(c + 1) {
                Some(&r) if r < l => (c + 1, r),
                _ => (c, l),
            };
            if e <= m {
                break;
            }
            if let Some(p) = h.get_mut(pos) {
                *p = m;
            }
            pos = c;
        }
        if let Some(p) = h.get_mut(pos) {
            *p = e;
        }
    }

    fn pop(&mut self) {
        if let Some(last) = self.0.pop() {
            if !self.0.is_empty() {
                self.replace_top(last);
            }
        }
    }
}

/// How far cursor `i`'s run (its feed `f`) may go past the heap's order,
/// as a [`pack`]ed bound; `room`: windows that can still be stored.
///
/// Records of different cursors that touch different threads change
/// different windows, so their order matters to none, with three
/// exceptions that the caller rules out: a read error stops the pass where
/// it is met (none may wait after `f`'s page), a window dropped for room
/// depends on the count held when it closes (here no drop can happen: two
/// windows a record at most, for every record loaded), and so does the
/// greatest count held (the count goes only up in the records reordered:
/// none of their threads is to sweep windows in this read, `unswept`, the
/// caller's `f.mask` included). Holes from lost marks only widen. So
/// `f`'s records, all of threads in `f.mask`, go before those of another
/// cursor `j` while keyed below `j`'s key, or, when `j`'s loaded page
/// touches none of those threads nor one to sweep, below the key `j` has
/// at its page's end (its records after that page are keyed no lower).
fn reach<'x, 'a: 'x>(f: &Feed<'a>, others: impl Iterator<Item = (usize, &'x Feed<'a>)>, unswept: u64, room: usize) -> u128 {
    let mut bound = u128::MAX;
    let mut loaded = f.recs.len().saturating_sub(f.at);
    for (j, g) in others {
        let Some(k) = g.key else { continue };
        loaded += g.recs.len().saturating_sub(g.at);
        let k = if g.mask & (f.mask | unswept) == 0 { k.max(g.end_ts) } else { k };
        bound = bound.min(pack(k, j));
    }
    if loaded.saturating_mul(2) >= room {
        return 0;
    }
    bound
}

/// The windows of the threads of interest, and what bounds them.
struct Windows {
    threads: Threads,
    held: usize,
    cap: usize,
    /// Counts the reads ([`Lookahead::read_through`]): the readers' floors
    /// stand still during one.
    read: u64,
    /// The threads (as [`bit`]s) whose sweep in this read is still to
    /// evict windows, and how many share each bit: the count of windows
    /// held goes down only when one of them next stores a window.
    unswept: u64,
    unswept_n: [u32; 64],
}

impl Windows {
    /// Events were lost between `from` and `to` on some CPU: any thread's
    /// windows there are unknown.
    fn lost(&mut self, from: u64, to: u64) {
        for t in self.threads.values_mut() {
            t.widen_hole(from, to);
        }
    }

    /// A host event at `ts` of thread `thread` (an index, [`NONE`] if
    /// untracked), opening a window of kind `opens`.
    #[inline]
    fn on_event(&mut self, stats: &mut LookaheadStats, ts: u64, thread: u32, opens: Option<WindowKind>) {
        if let Some(t) = self.threads.tracks.get_mut(thread as usize) {
            // Any event of the thread ends its open window.
            t.first_event.get_or_insert((ts, opens.is_some()));
            let closed = t.open.take();
            if let Some(kind) = opens {
                t.open = Some((kind, ts));
                t.seen(kind, ts);
            }
            if let Some((kind, start)) = closed {
                self.store(stats, thread, kind, start, ts);
            }
        }
    }

    /// A sched_switch at `ts` taking thread `prev` off the CPU and putting
    /// `next` on (indices, [`NONE`] if untracked).
    fn on_switch(&mut self, stats: &mut LookaheadStats, ts: u64, prev: u32, next: u32) {
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
            self.store(stats, prev, WindowKind::OnCpu, start, ts);
        }
    }

    fn store(&mut self, stats: &mut LookaheadStats, thread: u32, kind: WindowKind, start: u64, end: u64) {
        let Some(t) = self.threads.tracks.get_mut(thread as usize) else {
            return;
        };
        // Windows below the floor go, once per read: the floors stand
        // still during it, the windows left all end above it, and none
        // below it is stored after.
        if t.swept.0 != self.read {
            let floor = t.floor();
            t.swept = (self.read, floor);
            self.held -= t.evict_below(floor);
            if std::mem::take(&mut t.must_sweep) {
                let b = thread as usize % 64;
                if let Some(n) = self.unswept_n.get_mut(b) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.unswept &= !bit(thread);
                    }
                }
            }
        }
        if end <= t.swept.1 {
            return; // no reader of this thread can still ask about it
        }
        if self.held >= self.cap {
            t.widen_hole(start, end);
            stats.windows_dropped += 1;
            return;
        }
        t.closed[kind.index()].push_back((start, end));
        self.held += 1;
        stats.windows_held_max = stats.windows_held_max.max(self.held);
    }
}

/// Run windows of chosen host threads, read ahead on demand.
///
/// The host cursors are merged by time with a heap, as the merge does. A
/// binary input's records are reduced to a [`Rec`] a page at a time (type
/// id and pid read from the bytes, nothing built). The cursor on top of
/// the heap gives its records until one is keyed after the next cursor's
/// key (a CPU's records come in runs), without touching the heap; and a
/// record that changes no window (another thread's event: most host
/// records once the vCPU threads are few) is taken on its own cursor, as
/// long as it is due (at or before the time read to), wherever the other
/// cursors are. Skipping it reorders nothing that matters: it touches no
/// window, and its cursor's key in the heap keeps its time (keys are
/// running maxima, see [`read_through`](Self::read_through)).
pub struct Lookahead<'a> {
    cursors: Vec<AnyCursor<'a>>,
    /// Per cursor, what decodes its binary records, and the type ids of
    /// the events that make windows there.
    metas: Vec<Option<Decoder<'a>>>,
    feeds: Vec<Feed<'a>>,
    /// [`pack`]`(key, cursor)` of every cursor with a record (or error)
    /// left.
    heap: Heap,
    win: Windows,
    started: bool,
    failed: bool,
    /// The first host event's time: before it the host recorded nothing.
    first_ts: Option<u64>,
    /// Runs may go past the heap's order ([`reach`]); tests turn it off to
    /// compare.
    run_ahead: bool,
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
            metas: (0..n).map(|_| None).collect(),
            feeds: (0..n).map(|_| Feed::default()).collect(),
            heap: Heap(Vec::with_capacity(n)),
            win: Windows { threads: Threads::new(threads), held: 0, cap, read: 0, unswept: 0, unswept_n: [0; 64] },
            started: false,
            failed: false,
            first_ts: None,
            run_ahead: true,
            stats: LookaheadStats::default(),
            report: None,
        }
    }

    /// Cursor `i`'s binary records are decoded by `meta`.
    pub fn with_metas(mut self, metas: Vec<Option<&'a Meta>>) -> Self {
        let mut decs: Vec<Option<Decoder<'a>>> = Vec::with_capacity(self.cursors.len());
        for i in 0..self.cursors.len() {
            // An input's cursors (next to each other) share its table.
            let d = metas.get(i).copied().flatten().map(|m| Decoder::new(m, decs.iter().rev().flatten().find(|d| std::ptr::eq(d.meta, m))));
            decs.push(d);
        }
        self.metas = decs;
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
        la.win.threads.entry_or_default(pid).floors.push(floor.clone());
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
            for (i, (c, f)) in self.cursors.iter_mut().zip(&mut self.feeds).enumerate() {
                refill(c, self.metas.get(i).and_then(Option::as_ref), f, &self.win.threads);
                f.key = f.recs.first().map(|r| r.ts).or(f.error.as_ref().map(|_| 0));
                if let Some(k) = f.key {
                    self.heap.push(pack(k, i));
                }
            }
        }
        let Lookahead { cursors, metas, feeds, heap, win, failed, first_ts, stats, run_ahead, .. } = self;
        if *failed {
            return;
        }
        win.read += 1;
        (win.unswept, win.unswept_n) = (0, [0; 64]);
        for (i, t) in win.threads.tracks.iter_mut().enumerate() {
            let floor = t.floor();
            t.must_sweep = t.closed.iter().any(|q| q.front().is_some_and(|w| w.1 <= floor));
            if t.must_sweep {
                if let Some(n) = win.unswept_n.get_mut(i % 64) {
                    *n = n.saturating_add(1);
                }
                win.unswept |= bit(i as u32);
            }
        }
        // Threads added since records were read: none are added during a read.
        for f in feeds.iter_mut().filter(|f| f.gen != win.threads.gen) {
            f.resolve(&win.threads);
        }
        let mut taken = 0;
        while let Some(top) = heap.top() {
            let (mut key, i) = ((top >> 64) as u64, top as u64 as usize);
            if key > h {
                break;
            }
            let n = feeds.len();
            let (before, rest) = feeds.split_at_mut(i.min(n));
            let Some((f, after)) = rest.split_first_mut() else {
                heap.pop();
                continue;
            };
            if first_ts.is_none() {
                *first_ts = f.recs.get(f.at).map(|r| r.ts);
            }
            // The cursor after it in the heap's order: cursor i's records
            // keyed below it are due next whatever the heap says, so they
            // are taken without touching it.
            let mut bound = heap.second();
            // Whether cursor i may still run ahead of the heap's order.
            let mut ahead = *run_ahead;
            // The record at `f.at` is the heap's least: taken whatever.
            let mut take = true;
            let next = loop {
                // The page's records, the feed's state in locals meanwhile.
                let (mut at, mut last_ts, mut lost_from) = (f.at, f.last_ts, f.lost_from);
                let mut stop = false;
                while let Some(&rec) = f.recs.get(at) {
                    if !take {
                        key = key.max(rec.ts);
                        if key > h {
                            stop = true;
                            break;
                        }
                        // Due, and it changes nothing: taken wherever the
                        // other cursors are.
                        if !rec.matters && lost_from.is_none() {
                            at += 1;
                            taken += 1;
                            if rec.what != What::Nothing {
                                last_ts = rec.ts;
                            }
                            continue;
                        }
                        if pack(key, i) >= bound {
                            if ahead && f.mask & win.unswept == 0 && f.error.is_none() {
                                let others = before.iter().enumerate().chain((i + 1..).zip(after.iter()));
                                bound = reach(f, others, win.unswept, win.cap.saturating_sub(win.held));
                            }
                            ahead = false;
                            if pack(key, i) >= bound {
                                stop = true;
                                break;
                            }
                        }
                    }
                    take = false;
                    at += 1;
                    taken += 1;
                    if let Some(from) = lost_from.take() {
                        win.lost(from, rec.ts);
                    }
                    match rec.what {
                        What::Event(opens) => {
                            last_ts = rec.ts;
                            if rec.matters {
                                win.on_event(stats, rec.ts, rec.thread, opens);
                            }
                        }
                        What::Lost => {
                            stats.lost_marks += 1;
                            lost_from = Some(last_ts);
                        }
                        What::Switch => {
                            last_ts = rec.ts;
                            if rec.matters {
                                win.on_event(stats, rec.ts, rec.thread, None);
                                if let Some(s) = f.switches.get(rec.sw as usize) {
                                    win.on_switch(stats, rec.ts, s.prev, s.next);
                                }
                            }
                        }
                        What::Nothing => {}
                    }
                }
                (f.at, f.last_ts, f.lost_from) = (at, last_ts, lost_from);
                if stop {
                    break Some(key);
                }
                if f.error.is_some() {
                    // Next is the read error after the page, keyed `key`:
                    // taken in the heap's order only.
                    if take || (key <= h && pack(key, i) < heap.second()) {
                        stats.error = f.error.take();
                        *failed = true;
                    }
                    break Some(key);
                }
                let Some(c) = cursors.get_mut(i) else { break None };
                refill(c, metas.get(i).and_then(Option::as_ref), f, &win.threads);
                if f.recs.is_empty() && f.error.is_none() {
                    break None;
                }
                // Running ahead held for the page left only.
                (bound, ahead) = (bound.min(heap.second()), false);
            };
            f.key = next;
            if *failed {
                break;
            }
            // The entry on top stays cursor i's: moved, one sift instead
            // of a pop and a push.
            match next {
                Some(k) => heap.replace_top(pack(k, i)),
                None => heap.pop(),
            }
        }
        stats.host_events_read += taken;
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
        let t = self.win.threads.get_mut(&pid).filter(|_| !failed)?;
        self.win.held -= t.evict();
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
        let seen = la.win.threads.get(&self.pid).is_some_and(|t| t.first_seen.iter().flatten().any(|&s| s <= h));
        let upto = if seen { h } else { horizon.max(h) };
        la.inside_upto(self.pid, h, upto)
    }

    /// Whether the thread's windows seen so far are exact ones (kvm_entry
    /// or kvm_emulate_insn): on-CPU intervals also hold the host's own work
    /// on the thread (vcpu_load, exits), so "inside" one proves less.
    pub fn exact(&self) -> bool {
        let la = self.la.borrow();
        la.win.threads.get(&self.pid).is_some_and(|t| t.first_seen[WindowKind::Entry.index()].is_some() || t.first_seen[WindowKind::Emulation.index()].is_some())
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

    /// A host cursor of `(ts, pid, spec)`: spec `LOST`, an event name, or
    /// `sched_switch BODY`; a read error after the record at `fail`.
    struct Evs {
        events: Vec<(u64, i32, String)>,
        pos: usize,
        fail: Option<usize>,
    }

    impl Cursor for Evs {
        fn current(&self) -> Option<crate::EventView<'_>> {
            let (ts, pid, spec) = self.events.get(self.pos)?;
            let (name, body) = spec.split_once(' ').unwrap_or((spec.as_str(), ""));
            let payload = match name {
                "LOST" => Payload::Lost { count: None },
                _ => Payload::Event(crate::Record { pid: *pid, tgid: None, comm: "t", system: "kvm", name, body: crate::Body::Text(body) }),
            };
            Some(crate::EventView { ts: *ts, orig_ts: None, placed: Default::default(), cpu: 0, payload })
        }
        fn advance(&mut self) -> crate::Result<()> {
            if self.fail == Some(self.pos) {
                return Err(crate::Error::Usage("bad page".into()));
            }
            self.pos += 1;
            Ok(())
        }
    }

    /// Pseudo-random host CPUs: each mostly runs its own vCPU thread
    /// (7, 8, 9), with migrations and switches between tracked threads (one
    /// in `mix` records), untracked threads, lost marks and times that step
    /// back.
    fn scenario(seed: u64, fail: bool, mix: u64) -> Vec<Box<dyn Cursor>> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut rnd = move |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        (0..3)
            .map(|c| {
                let mut ts = 1000 + rnd(50);
                let events: Vec<(u64, i32, String)> = (0..600)
                    .map(|_| {
                        ts = if rnd(40) == 0 { ts.saturating_sub(rnd(30)) } else { ts + 1 + rnd(20) };
                        let other = rnd(mix) == 0;
                        let pid = match rnd(20) {
                            0 => 100,
                            _ if other => 7 + rnd(3) as i32,
                            _ => 7 + c,
                        };
                        let spec = match rnd(24) {
                            0 if rnd(30) == 0 => "LOST".to_string(),
                            1..=3 => {
                                let p = |v| [0, 7, 8, 9, 100][v as usize];
                                let mut p = |_| if other { p(rnd(5)) } else { [0, 7 + c, 100][rnd(3) as usize] };
                                let (a, b) = (p(0), p(1));
                                format!("sched_switch prev_comm=a prev_pid={a} prev_prio=1 prev_state=S ==> next_comm=b next_pid={b} next_prio=1")
                            }
                            4 => "kvm_emulate_insn".to_string(),
                            5..=11 => "kvm_exit".to_string(),
                            12..=14 => "kvm_cpuid".to_string(),
                            _ => "kvm_entry".to_string(),
                        };
                        (ts, pid, spec)
                    })
                    .collect();
                let fail = (fail && c == 1).then_some(450);
                Box::new(Evs { events, pos: 0, fail }) as Box<dyn Cursor>
            })
            .collect()
    }

    /// Every answer, the stats and the windows held, asking as the merge
    /// does (floors rising, horizons ahead).
    fn answers((seed, fail, mix, cap): (u64, bool, u64, usize), run_ahead: bool) -> (Vec<Option<bool>>, String, usize) {
        let mut la = Lookahead::new(scenario(seed, fail, mix), [7, 8, 9], cap);
        la.run_ahead = run_ahead;
        let la = Rc::new(RefCell::new(la));
        let evs: Vec<Evidence> = [7, 8, 9].into_iter().map(|p| Lookahead::evidence(&la, p)).collect();
        let mut out = Vec::new();
        for (q, h) in (1000..8000u64).step_by(7).enumerate() {
            let ev = &evs[q % 3];
            out.push(ev.inside_by(h, h + (q as u64 % 5) * 40));
            out.push(ev.inside(h.saturating_sub(15)));
            if q % 4 == 0 {
                ev.set_floor(h.saturating_sub(60));
            }
        }
        let la = la.borrow();
        (out, format!("{:?} {:?}", la.stats, la.first_ts), la.win.held)
    }

    #[test]
    fn running_ahead_changes_nothing() {
        for seed in 0..12 {
            for (fail, cap) in [(false, 1 << 20), (false, 4), (true, 1 << 20), (true, 20)] {
                for mix in [5, 300, 1 << 40] {
                    let case = (seed, fail, mix, cap);
                    let exact = answers(case, false);
                    assert_eq!(answers(case, true), exact, "{case:?}");
                    assert!(exact.2 <= cap);
                }
            }
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
        assert_eq!(la.borrow().win.held, 0);
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
