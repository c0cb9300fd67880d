//! Which offset period a guest event belongs to.
//!
//! A guest CPU's events arrive in true time order (each guest CPU's ring
//! buffer is written in order, and a vCPU runs one thing at a time), so
//! their host times never decrease. Period `p` (offset `o_p`, from host
//! time `s_p` to `s_{p+1}`) *fits* an event with guest TSC `g` when `g`
//! converted with `o_p` lands in `[s_p, s_{p+1})` and not before the host
//! time of the CPU's previous event. Periods are tried forward from the
//! previous event's.
//!
//! One period fits almost always. After a fall of the offset (a lower
//! `o_p`) the guest TSC values `[s_p + o_p, s_p + o_{p-1})` occur on both
//! sides of the write, and an event there fits both periods: its guest time
//! alone cannot say where it happened. The host can: the vCPU's thread ran
//! its guest only inside its run windows ([`crate::runs`]). With that
//! evidence the period whose host time lies inside a window, all others
//! lying outside, is chosen (`How::RunWindows`); when several lie inside,
//! the earliest (the guest CPU goes on without skipping a period). Where no
//! evidence decides (no windows recorded, a hole, an unknown before an
//! inside one) **the rule** applies: the earliest fitting period inside a
//! window, else the earliest fitting period; the event is counted as
//! ambiguous (`How::Rule`). Without
//! windows the rule is right for the events before a fall and wrong for
//! events after a fall that show no backward step of the guest TSC (the
//! vCPU did not run between its last event and the write).
//!
//! Before the rule, the guest CPU's own later events are asked
//! ([`Order`]): they happened after this one, so a period that would put
//! this event after the latest time some later event can have is not its
//! period. Events just before a guest's own fall (it wrote IA32_TSC lower)
//! are decided so: the first event after the write reads a low guest time
//! that fits no host time as late as the new period would put them
//! (`How::GuestOrder`). Only periods after the earliest fit can be ruled
//! out this way; events after a fall the vCPU sat out stay ambiguous.
//!
//! When no period fits (data that contradicts itself: the guest TSC steps
//! back with no fall to explain it) the older walk decides: move on while
//! the event converted with the current period reaches the next write, or
//! the next write lowered the offset and the guest TSC stepped back.

use super::convert::Conversion;
use super::timeline::VcpuTimeline;
use crate::runs::Evidence;
use crate::time::{GuestTsc, HostTsc};

/// Why a guest event could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// No offset is known at all for this vCPU.
    NoOffset,
    /// The event converts to a host time before the vCPU's first known write.
    BeforeFirstOffset { guest: GuestTsc, host: HostTsc, first_write: HostTsc },
}

/// How an event's period was decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// One period fits (or no period fits and the walk decided).
    #[default]
    Only,
    /// Several fit; the host's run windows chose.
    RunWindows,
    /// Several fit; the guest CPU's later events left only the earliest.
    GuestOrder,
    /// Several fit and nothing decided: the rule, counted as ambiguous.
    Rule,
}

/// A converted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub host: HostTsc,
    pub period: usize,
    pub how: How,
}

/// Steps of a search at most between two periods whose range holds the
/// guest time (a period tried, a node of [`Spans`] visited), periods
/// holding it tried at most, and fitting periods judged: a timeline crafted
/// with many overlapping periods costs bounded time per event.
const MAX_TRIED: usize = 4096;
const MAX_FITTING: usize = 8;
/// How far after the first fitting period a second one makes an event
/// ambiguous (see [`VcpuClock::decide`]).
const NEAR: usize = 64;
/// Events a guest CPU's [`Order`] reads ahead of the one in doubt at most:
/// its memory (32 bytes an event at worst) and time stay bounded; what it
/// cannot rule out within them stays ambiguous.
const MAX_AHEAD: usize = 1 << 14;

/// The guest CPU's next event time (in its file order, the order the
/// placer is asked in), `None` at its end; lost-events marks are skipped.
pub type NextTs<'a> = Box<dyn FnMut() -> Option<u64> + 'a>;

/// What the guest CPU's later events say (see the module comment).
///
/// The latest host time event `j` can have, `B_j`, is its latest fitting
/// period's host time at or before `B_{j+1}` (the events after it happened
/// later). An *anchor*, a later event with one fitting period at or after
/// the earliest it can be placed, has its `B` exactly; the events read
/// between the one in doubt and the anchor get theirs backwards from it,
/// once. A placement after `B` of the next event is ruled out.
struct Order<'a> {
    next: NextTs<'a>,
    /// Events placed so far: the index of the one in doubt.
    placed: u64,
    /// Index of the first event of `ahead` (of the next to read when empty).
    first: u64,
    ended: bool,
    /// Events read after the one being placed, in order.
    ahead: std::collections::VecDeque<Ahead>,
    /// How many of `ahead`, from the front, have their `latest` (an anchor
    /// ends them).
    anchored: usize,
    /// The earliest placement (period, host time) of the last event read:
    /// a lower bound of its true one, greedily from the one in doubt's.
    low: (usize, u64),
}

/// An event read ahead: guest time, earliest placement, and `B`
/// (`u64::MAX` until anchored, or when nothing bounds it).
#[derive(Clone, Copy, Debug)]
struct Ahead {
    guest: u64,
    low: (usize, u64),
    latest: u64,
}

impl std::fmt::Debug for Order<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Order").field("placed", &self.placed).field("first", &self.first).field("held", &self.ahead.len()).finish()
    }
}

/// Periods per block of [`Spans`].
const BLOCK: usize = 16;

/// The periods' guest ranges `[begin, end)` summed up per block of
/// [`BLOCK`] periods (lowest begin, highest end), and the blocks' as a
/// tree over ranges of blocks: the next block that may hold a guest time is
/// found without trying each period (thousands of periods after an unstable
/// TSC's loads; a later fall far below makes every one a maybe). A node
/// whose lowest begin lies above, or highest end at or below, the time
/// holds none. `low_from[b]`, the lowest begin from block `b` on, says at
/// once when no later period can fit. Memory: about 56 bytes per block,
/// not per period (a vCPU of an unstable host has a period per load).
#[derive(Debug)]
struct Spans {
    /// Leaves (blocks) from `size`; node `k`'s children are `2k`, `2k + 1`.
    size: usize,
    low: Vec<u64>,
    high: Vec<u64>,
    low_from: Vec<u64>,
}

/// A search of [`Spans::next`].
enum Next {
    At(usize),
    None,
    /// Spent [`MAX_TRIED`] steps (a timeline crafted so nodes prune
    /// nothing): as if the periods tried ran out.
    GaveUp,
}

/// Period `p`'s guest range `[begin, end)`: the guest TSC at its start
/// (`0` from the beginning of time, `u64::MAX` when it has no start) and at
/// the next period's start.
#[inline]
fn range(tl: &VcpuTimeline, p: usize) -> (u64, u64) {
    let Some(period) = tl.periods.get(p) else {
        return (u64::MAX, u64::MAX);
    };
    let conv = Conversion::new(period.offset, tl.scaling);
    let begin = match period.start {
        Some(s) => conv.to_guest(s).0,
        None if p == 0 => 0,
        None => u64::MAX,
    };
    let end = tl.periods.get(p + 1).and_then(|q| q.start).map_or(u64::MAX, |s| conv.to_guest(s).0);
    (begin, end)
}

impl VcpuTimeline {
    /// Whether some guest time fits two periods: a later period begins (in
    /// guest time) below where an earlier one ends, as after a fall.
    pub fn can_be_ambiguous(&self) -> bool {
        let mut ended = 0u64;
        for p in 0..self.periods.len() {
            let (b, e) = range(self, p);
            if p > 0 && b < ended {
                return true;
            }
            if b != u64::MAX {
                ended = ended.max(e);
            }
        }
        false
    }
}

impl Spans {
    fn new(n: usize, range: impl Fn(usize) -> (u64, u64)) -> Self {
        let blocks = n.div_ceil(BLOCK);
        let size = blocks.next_power_of_two();
        let mut low = vec![u64::MAX; 2 * size];
        let mut high = vec![0; 2 * size];
        for p in 0..n {
            let (b, e) = range(p);
            let k = size + p / BLOCK;
            low[k] = low[k].min(b);
            if b != u64::MAX {
                high[k] = high[k].max(e);
            }
        }
        for k in (1..size).rev() {
            low[k] = low[2 * k].min(low[2 * k + 1]);
            high[k] = high[2 * k].max(high[2 * k + 1]);
        }
        let mut low_from = vec![u64::MAX; blocks];
        let mut l = u64::MAX;
        for b in (0..blocks).rev() {
            l = l.min(low[size + b]);
            low_from[b] = l;
        }
        Spans { size, low, high, low_from }
    }

    /// Whether block `b` may hold a period whose range holds `g`.
    #[inline]
    fn holds(&self, b: usize, g: u64) -> bool {
        let k = self.size + b;
        self.low.get(k).zip(self.high.get(k)).is_some_and(|(&l, &h)| l <= g && g < h)
    }

    /// The first block in `from..stop` that may hold `g`; each node
    /// visited is a step.
    fn next(&self, from: usize, stop: usize, g: u64, steps: &mut usize) -> Next {
        match self.find(1, 0, self.size, (from, stop), g, steps) {
            Some(b) => Next::At(b),
            None if *steps >= MAX_TRIED => Next::GaveUp,
            None => Next::None,
        }
    }

    fn find(&self, k: usize, lo: usize, hi: usize, (from, stop): (usize, usize), g: u64, steps: &mut usize) -> Option<usize> {
        if hi <= from || lo >= stop || *steps >= MAX_TRIED || self.low.get(k).is_none_or(|&l| l > g) || self.high.get(k).is_none_or(|&h| h <= g) {
            return None;
        }
        *steps += 1;
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = lo + (hi - lo) / 2;
        self.find(2 * k, lo, mid, (from, stop), g, steps).or_else(|| self.find(2 * k + 1, mid, hi, (from, stop), g, steps))
    }
}

/// The forward-only placer of one guest CPU.
#[derive(Debug)]
pub struct VcpuClock<'t> {
    tl: &'t VcpuTimeline,
    period: usize,
    conv: Option<Conversion>,
    last_guest: Option<GuestTsc>,
    last_host: Option<u64>,
    /// The current period's guest range ([`range`]), and the [`NEAR`]
    /// after it: every search and every `clear_until` looks there first,
    /// computed once each as the current period moves on.
    cur: (u64, u64),
    ahead: Vec<(u64, u64)>,
    spans: Spans,
    /// Guest TSC below which no period of the [`NEAR`] after the current
    /// one can fit an event at or after the last (the lowest `begin` of
    /// those whose `end` lies above the last event): up to it the current
    /// period is the only one (as `decide` counts fits).
    clear_until: u64,
    evidence: Option<Evidence<'t>>,
    order: Option<Order<'t>>,
}

impl<'t> VcpuClock<'t> {
    pub fn new(tl: &'t VcpuTimeline) -> Self {
        let spans = Spans::new(tl.periods.len(), |p| range(tl, p));
        let cur = range(tl, 0);
        let ahead = (1..tl.periods.len().min(1 + NEAR)).map(|p| range(tl, p)).collect();
        VcpuClock { tl, period: 0, conv: tl.conversion(0), last_guest: None, last_host: None, cur, ahead, spans, clear_until: 0, evidence: None, order: None }
    }

    /// [`VcpuTimeline::can_be_ambiguous`] of its timeline.
    pub fn can_be_ambiguous(&self) -> bool {
        self.tl.can_be_ambiguous()
    }

    /// This guest CPU has no more events: its thread's windows need not be
    /// kept for it.
    pub fn finish(&self) {
        if let Some(e) = &self.evidence {
            e.set_floor(u64::MAX);
        }
    }

    /// Decides ambiguous events by the run windows `evidence` shows.
    pub fn with_evidence(mut self, evidence: Evidence<'t>) -> Self {
        self.evidence = Some(evidence);
        self
    }

    /// Whether run windows decide its ambiguous events (a pass reads the
    /// host ahead for them).
    pub fn has_evidence(&self) -> bool {
        self.evidence.is_some()
    }

    /// Asks the guest CPU's later events (`next`, in the order events will
    /// be placed) before placing an ambiguous event by the rule.
    pub fn with_order(mut self, next: NextTs<'t>) -> Self {
        self.order = Some(Order { next, placed: 0, first: 0, ended: false, ahead: Default::default(), anchored: 0, low: (0, 0) });
        self
    }

    #[inline]
    pub fn place(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        let placed = self.place_inner(g);
        if let Some(o) = &mut self.order {
            o.placed += 1;
        }
        placed
    }

    #[inline]
    fn place_inner(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        if let (Some(conv), Some(last)) = (self.conv, self.last_guest) {
            let i = self.period;
            // At or after the previous event, inside the current period,
            // and below where any near later period begins: only this one
            // fits (as `decide` counts fits).
            if g >= last && g.0 >= self.cur.0 && g.0 < self.cur.1 && g.0 < self.clear_until {
                let host = conv.to_host(g);
                self.last_guest = Some(g);
                self.last_host = Some(host.0);
                if let Some(e) = &self.evidence {
                    e.set_floor(host.0);
                }
                return Ok(Placed { host, period: i, how: How::Only });
            }
        }
        self.decide(g)
    }

    /// The next period at or after `*from` (and before `limit`) that fits
    /// `g`, with its host time; `*from` moves past it.
    fn next_fit(&self, g: GuestTsc, from: &mut usize, limit: usize) -> Option<(usize, u64)> {
        self.next_fit_after(g, from, limit, (self.period, self.last_host))
    }

    /// [`next_fit`](Self::next_fit) for an event after one at `after`
    /// (period, host time; `None`: no event before).
    fn next_fit_after(&self, g: GuestTsc, from: &mut usize, limit: usize, after: (usize, Option<u64>)) -> Option<(usize, u64)> {
        let periods = &self.tl.periods;
        let stop = periods.len().min(limit);
        let (mut steps, mut held) = (0, 0);
        while *from < stop {
            if steps >= MAX_TRIED {
                return None; // as if the periods tried ran out
            }
            let p = match from.checked_sub(self.period + 1) {
                // The NEAR periods after the current one: their ranges are
                // at hand, a scan finds the next that holds g.
                Some(k) if k < self.ahead.len() => {
                    let end = self.ahead.len().min(stop - self.period - 1);
                    let hit = self.ahead.get(k..end).and_then(|a| a.iter().position(|&(b, e)| b <= g.0 && g.0 < e));
                    steps += hit.map_or(end - k, |i| i + 1);
                    match hit {
                        Some(i) => self.period + 1 + k + i,
                        None => {
                            *from = self.period + 1 + end;
                            continue;
                        }
                    }
                }
                // Farther, blocks of periods none of which holds g are
                // skipped whole (a skip past `stop` passes only periods
                // that cannot fit).
                _ => {
                    steps += 1;
                    let (p, b) = (*from, *from / BLOCK);
                    if self.spans.low_from.get(b).is_some_and(|&l| l > g.0) {
                        *from = periods.len();
                        return None; // no later period begins at or below g
                    }
                    if !self.spans.holds(b, g.0) {
                        match self.spans.next(b + 1, stop.div_ceil(BLOCK), g.0, &mut steps) {
                            Next::At(b) => *from = b * BLOCK,
                            Next::None => *from = stop,
                            Next::GaveUp => return None,
                        }
                        continue;
                    }
                    // The rest of the block, one step.
                    let block_end = ((b + 1) * BLOCK).min(stop);
                    match (p..block_end).find(|&q| {
                        let (begin, end) = self.range(q);
                        begin <= g.0 && g.0 < end
                    }) {
                        Some(q) => q,
                        None => {
                            *from = block_end;
                            continue;
                        }
                    }
                }
            };
            // A period whose range holds g: the steps count again from it,
            // up to MAX_TRIED such periods.
            steps = 0;
            held += 1;
            if held > MAX_TRIED {
                return None;
            }
            *from = p + 1;
            let host = Conversion::new(periods[p].offset, self.tl.scaling).to_host(g).0;
            let lo = periods[p].start.map_or(0, |s| s.0);
            let hi = periods.get(p + 1).and_then(|q| q.start).map_or(u64::MAX, |s| s.0);
            if host >= lo && host < hi && after.1.is_none_or(|l| host >= l) {
                return Some((p, host));
            }
        }
        None
    }

    /// Places an event the shortcut could not (module comment). Fitting
    /// periods are found lazily, nearest first: a second fit is looked for
    /// within [`NEAR`] periods of the first (a guest CPU that skipped more
    /// of its vCPU's offset periods without an event is not considered
    /// unless the nearer candidates are all outside the run windows).
    fn decide(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        self.conv.ok_or(PlaceError::NoOffset)?;
        let mut from = self.period;
        let Some(c0) = self.next_fit(g, &mut from, self.period + MAX_TRIED) else {
            return self.walk(g);
        };
        let near = self.next_fit(g, &mut from, c0.0 + 1 + NEAR);
        let ((period, host), how) = match (near, &self.evidence) {
            (None, _) => (c0, How::Only),
            (Some(_), None) => (c0, How::Rule),
            (Some(c1), Some(ev)) => match ev.inside_by(c0.1, c1.1) {
                // Exact windows (kvm_entry, kvm_emulate_insn): the earliest
                // inside. On-CPU intervals only when the next is outside.
                Some(true) if ev.exact() || ev.inside_by(c1.1, c1.1) == Some(false) => (c0, How::RunWindows),
                Some(true) => (c0, How::Rule),
                v0 => {
                    // The earliest later fit inside a window; decided when
                    // every earlier one is known to be outside.
                    let mut known = v0.is_some();
                    let mut fit = Some(c1);
                    let mut tried = 1;
                    let mut chosen = (c0, How::Rule);
                    while let Some(c) = fit {
                        match ev.inside_by(c.1, c.1) {
                            Some(true) => {
                                chosen = (c, if known { How::RunWindows } else { How::Rule });
                                break;
                            }
                            Some(false) => {}
                            None => known = false,
                        }
                        tried += 1;
                        if tried >= MAX_FITTING {
                            break;
                        }
                        fit = self.next_fit(g, &mut from, c.0 + 1 + MAX_TRIED);
                    }
                    chosen
                }
            },
        };
        let ((period, host), how) = match (how, near) {
            (How::Rule, Some(c1)) if self.rules_out(c0, c1.1) => (c0, How::GuestOrder),
            other => ((period, host), other.0),
        };
        self.commit(g, period, host);
        Ok(Placed { host: HostTsc(host), period, how })
    }

    /// Whether the guest CPU's later events rule out every placement of
    /// the event in doubt at or after host time `h1` (a later fit than
    /// `c0`, the earliest): the next event's `B` ([`Order`]) lies before
    /// `h1`. Reads ahead to an anchor, at most [`MAX_AHEAD`] events; without
    /// one (the CPU's events end first) nothing is ruled out.
    fn rules_out(&mut self, c0: (usize, u64), h1: u64) -> bool {
        let Some(mut o) = self.order.take() else {
            return false;
        };
        let i = o.placed;
        while o.first <= i && !o.ahead.is_empty() {
            o.ahead.pop_front();
            o.anchored = o.anchored.saturating_sub(1);
            o.first += 1;
        }
        if o.ahead.is_empty() {
            // Skip to the event after this one; greedy placements start
            // from this one's earliest.
            while o.first <= i && !o.ended {
                o.ended = (o.next)().is_none();
                o.first += 1;
            }
            o.low = c0;
        }
        while o.anchored == 0 && !o.ended && o.ahead.len() < MAX_AHEAD {
            let Some(t) = (o.next)() else {
                // The CPU's last event anchors too: nothing bounds it.
                o.ended = true;
                if let Some(a) = o.ahead.back_mut() {
                    a.latest = self.latest_fit_upto(GuestTsc(a.guest), a.low, u64::MAX);
                    self.anchor(&mut o);
                }
                break;
            };
            let (only, low) = self.fits_after(GuestTsc(t), o.low);
            o.low = low.unwrap_or(o.low);
            o.ahead.push_back(Ahead { guest: t, low: o.low, latest: u64::MAX });
            if let Some(h) = only {
                if let Some(a) = o.ahead.back_mut() {
                    a.latest = h;
                }
                self.anchor(&mut o);
            }
        }
        let out = o.anchored > 0 && o.ahead.front().is_some_and(|a| a.latest < h1);
        self.order = Some(o);
        out
    }

    /// The events read before the last one (an anchor, its `B` set) get
    /// their `B` backwards from it.
    fn anchor(&self, o: &mut Order<'_>) {
        let n = o.ahead.len();
        for k in (0..n.saturating_sub(1)).rev() {
            let a = o.ahead[k];
            o.ahead[k].latest = self.latest_fit_upto(GuestTsc(a.guest), a.low, o.ahead[k + 1].latest);
        }
        o.anchored = n;
    }

    /// The fits of a later event `g` whose earliest placement is at or
    /// after `low`: its only fit's host time when it has exactly one (an
    /// anchor), and its earliest fit.
    fn fits_after(&self, g: GuestTsc, low: (usize, u64)) -> (Option<u64>, Option<(usize, u64)>) {
        let mut from = low.0;
        let after = (low.0, Some(low.1));
        let Some(first) = self.next_fit_after(g, &mut from, usize::MAX, after) else {
            return (None, None);
        };
        let second = self.next_fit_after(g, &mut from, usize::MAX, after);
        // Stopped at the limit: a later fit may exist.
        let only = (second.is_none() && from >= self.tl.periods.len()).then_some(first.1);
        (only, Some(first))
    }

    /// The latest host time at or before `bound` of a fit of `g` at or
    /// after `low`; `u64::MAX` (nothing bounds it) when none is, or when
    /// the periods tried ran out before a fit after `bound`.
    fn latest_fit_upto(&self, g: GuestTsc, low: (usize, u64), bound: u64) -> u64 {
        let mut from = low.0;
        let mut latest = None;
        for _ in 0..MAX_TRIED {
            let Some((_, h)) = self.next_fit_after(g, &mut from, usize::MAX, (low.0, Some(low.1))) else {
                break;
            };
            if h > bound {
                return latest.unwrap_or(u64::MAX);
            }
            latest = Some(h);
        }
        match latest {
            Some(h) if from >= self.tl.periods.len() => h,
            _ => u64::MAX,
        }
    }

    /// Period `p`'s guest range, from `ahead` when it is there.
    #[inline]
    fn range(&self, p: usize) -> (u64, u64) {
        match p.checked_sub(self.period) {
            Some(0) => self.cur,
            Some(k) => self.ahead.get(k - 1).copied().unwrap_or_else(|| range(self.tl, p)),
            None => range(self.tl, p),
        }
    }

    fn commit(&mut self, g: GuestTsc, period: usize, host: u64) {
        // Keep `ahead` on the NEAR periods after the new current one.
        match period.checked_sub(self.period) {
            Some(0) => {}
            Some(k) if k <= self.ahead.len() => {
                self.cur = self.ahead.get(k - 1).copied().unwrap_or_else(|| range(self.tl, period));
                self.ahead.drain(..k);
            }
            _ => {
                self.ahead.clear();
                self.cur = range(self.tl, period);
            }
        }
        let n = self.tl.periods.len().min(period + 1 + NEAR);
        while period + 1 + self.ahead.len() < n {
            let p = period + 1 + self.ahead.len();
            self.ahead.push(range(self.tl, p));
        }
        self.period = period;
        self.conv = self.tl.conversion(period);
        self.last_guest = Some(g);
        self.last_host = Some(host);
        if let Some(e) = &self.evidence {
            e.set_floor(host);
        }
        self.clear_until = self.clear_until(g.0);
    }

    /// The lowest `begin` of the [`NEAR`] periods after the current one
    /// whose `end` lies above `g` (later events of the shortcut are at or
    /// above g: periods ending at or below it can never fit them), or the
    /// current period's end if lower (the shortcut stops there anyway).
    fn clear_until(&self, g: u64) -> u64 {
        let low = self.cur.1;
        self.ahead.iter().filter(|r| r.1 > g).map(|r| r.0).fold(low, u64::min)
    }

    /// The walk for events no period fits (see the module's last paragraph).
    fn walk(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        let mut conv = self.conv.ok_or(PlaceError::NoOffset)?;
        let mut stepped_back = self.last_guest.is_some_and(|last| g < last);
        let mut period = self.period;
        while let Some(next) = self.tl.periods.get(period + 1) {
            let Some(start) = next.start else { break };
            let cur_offset = self.tl.periods[period].offset;
            let fell = (next.offset.wrapping_sub(cur_offset) as i64) < 0;
            let reached = conv.to_host(g) >= start;
            if reached || (fell && stepped_back) {
                if !reached {
                    stepped_back = false; // this write explains the step
                }
                period += 1;
                conv = Conversion::new(next.offset, self.tl.scaling);
            } else {
                break;
            }
        }
        let host = conv.to_host(g);
        // In the first period, before its start: no offset applies yet.
        if let Some(first) = self.tl.periods.first().and_then(|p| p.start).filter(|_| period == 0) {
            if host < first {
                return Err(PlaceError::BeforeFirstOffset { guest: g, host, first_write: first });
            }
        }
        self.commit(g, period, host.0);
        Ok(Placed { host, period, how: How::Only })
    }
}

#[cfg(test)]
mod tests {
    use super::super::timeline::Period;
    use super::*;

    fn tl(periods: &[(u64, i64)]) -> VcpuTimeline {
        VcpuTimeline {
            pid: Some(1),
            scaling: None,
            periods: periods
                .iter()
                .map(|&(s, o)| Period { start: Some(HostTsc(s)), offset: o as u64, prev: 0, pid: None, origin: Default::default() })
                .collect(),
        }
    }

    fn run(t: &VcpuTimeline, events_host: &[u64]) -> Vec<u64> {
        // Produce guest timestamps from true host times with the true period.
        let mut clock = VcpuClock::new(t);
        events_host
            .iter()
            .map(|&h| {
                let p = t.periods.iter().rposition(|p| p.start.unwrap().0 <= h).unwrap();
                let g = Conversion::new(t.periods[p].offset, None).to_guest(HostTsc(h));
                clock.place(g).unwrap().host.0
            })
            .collect()
    }

    #[test]
    fn rise_and_fall() {
        // Offset -1000 from 1000, rises by 500 at 2000, falls by 300 at 3000.
        let t = tl(&[(1000, -1000), (2000, -500), (3000, -800)]);
        let hosts = [1000, 1500, 1999, 2000, 2001, 2600, 2999, 3001, 3002, 3500, 9000];
        assert_eq!(run(&t, &hosts), hosts.to_vec());
    }

    #[test]
    fn fall_window_without_step_is_ambiguous_and_documented() {
        // Fall by 10 at 102: an event at host 105 reads guest 95+o, above the
        // previous read (90+o), so it stays in the old period (host 95).
        let t = tl(&[(0, 0), (102, -10)]);
        let mut c = VcpuClock::new(&t);
        assert_eq!(c.place(GuestTsc(90)).unwrap().host, HostTsc(90));
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(95), period: 0, how: How::Rule });
        // A later step backward moves it on: only the new period fits.
        assert_eq!(c.place(GuestTsc(94)).unwrap(), Placed { host: HostTsc(104), period: 1, how: How::Only });
    }

    /// A clock asking `later` (guest times) as the CPU's later events.
    fn with_later(t: &VcpuTimeline, later: Vec<u64>) -> VcpuClock<'_> {
        let mut it = later.into_iter();
        VcpuClock::new(t).with_order(Box::new(move || it.next()))
    }

    #[test]
    fn later_events_decide() {
        // The guest writes its TSC 10 lower at 102: guest 95 (host 95)
        // also fits the new period (host 105), but the next event reads
        // 93, which fits only host 103: 95 came before it.
        let t = tl(&[(0, 0), (102, -10)]);
        let mut c = with_later(&t, vec![90, 95, 93, 99]);
        assert_eq!(c.place(GuestTsc(90)).unwrap().how, How::Only);
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(95), period: 0, how: How::GuestOrder });
        assert_eq!(c.place(GuestTsc(93)).unwrap(), Placed { host: HostTsc(103), period: 1, how: How::Only });
        // The same event as the CPU's last: nothing after it tells.
        let mut c = with_later(&t, vec![90, 95]);
        c.place(GuestTsc(90)).unwrap();
        assert_eq!(c.place(GuestTsc(95)).unwrap().how, How::Rule);
        // A later event that fits both (96 after the fall is host 106, or
        // 96 before it): the CPU's last event bounds nothing: the rule.
        let mut c = with_later(&t, vec![90, 95, 96]);
        c.place(GuestTsc(90)).unwrap();
        assert_eq!(c.place(GuestTsc(95)).unwrap().how, How::Rule);
        // Backwards through several: 95, 96, 97 before the write, 92 after.
        let mut c = with_later(&t, vec![90, 95, 96, 97, 92]);
        c.place(GuestTsc(90)).unwrap();
        for (g, h) in [(95, 95), (96, 96), (97, 97), (92, 102)] {
            let p = c.place(GuestTsc(g)).unwrap();
            assert_eq!(p.host, HostTsc(h), "{g}");
            assert_ne!(p.how, How::Rule, "{g}");
        }
    }

    #[test]
    fn run_windows_decide() {
        use crate::runs::lookahead_tests::host;
        use crate::runs::Lookahead;
        use std::{cell::RefCell, rc::Rc};
        // Fall by 10 at 102 after the vCPU left the guest at 92 and before
        // it entered again at 103: guest 95 is host 105, not 95.
        let t = tl(&[(0, 0), (102, -10)]);
        let h = host(&[(80, "kvm_entry"), (92, "kvm_exit"), (102, "kvm_write_tsc_offset"), (103, "kvm_entry"), (200, "kvm_exit")]);
        let la = Rc::new(RefCell::new(Lookahead::new(vec![h], [7], 100)));
        let mut c = VcpuClock::new(&t).with_evidence(Lookahead::evidence(&la, 7));
        assert_eq!(c.place(GuestTsc(90)).unwrap(), Placed { host: HostTsc(90), period: 0, how: How::Only });
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(105), period: 1, how: How::RunWindows });
        assert_eq!(c.place(GuestTsc(96)).unwrap(), Placed { host: HostTsc(106), period: 1, how: How::Only });
        // Inside both (a window from 80 to 300): the earliest, the vCPU's
        // events going on without skipping a period.
        let h = host(&[(80, "kvm_entry"), (300, "kvm_exit")]);
        let la = Rc::new(RefCell::new(Lookahead::new(vec![h], [7], 100)));
        let mut c = VcpuClock::new(&t).with_evidence(Lookahead::evidence(&la, 7));
        c.place(GuestTsc(90)).unwrap();
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(95), period: 0, how: How::RunWindows });
        // Nothing seen of the thread: the rule.
        let h = host(&[(500, "kvm_exit")]);
        let la = Rc::new(RefCell::new(Lookahead::new(vec![h], [7], 100)));
        let mut c = VcpuClock::new(&t).with_evidence(Lookahead::evidence(&la, 7));
        c.place(GuestTsc(90)).unwrap();
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(95), period: 0, how: How::Rule });
    }

    proptest::proptest! {
        /// The shortcut of `place` gives what the full decision gives, for
        /// any timeline (rises, falls) and guest times (steps back included).
        #[test]
        fn shortcut_is_the_walk(
            steps in proptest::collection::vec((1u64..5000, -3000i64..3000), 1..8),
            mut gs in proptest::collection::vec(0u64..40_000, 1..200),
            sorted in proptest::bool::ANY,
        ) {
            if sorted {
                gs.sort_unstable();
            }
            let mut start = 1000u64;
            let periods: Vec<(u64, i64)> = steps.iter().map(|&(gap, off)| { start += gap; (start, off) }).collect();
            let t = tl(&periods);
            let mut fast = VcpuClock::new(&t);
            let mut slow = VcpuClock::new(&t);
            for g in gs {
                proptest::prop_assert_eq!(fast.place(GuestTsc(g)), slow.decide(GuestTsc(g)));
            }
        }
    }

    #[test]
    fn errors() {
        let t = tl(&[(1000, 0)]);
        let mut c = VcpuClock::new(&t);
        assert!(matches!(c.place(GuestTsc(10)), Err(PlaceError::BeforeFirstOffset { .. })));
        let empty = VcpuTimeline::default();
        assert_eq!(VcpuClock::new(&empty).place(GuestTsc(1)), Err(PlaceError::NoOffset));
    }

    /// The search through `ahead`, the blocks and their tree finds the
    /// period that trying every one in turn finds, on random timelines of
    /// rises and small and large falls (up to 3,000 periods: every branch,
    /// never the step budget), from random current periods.
    #[test]
    fn next_fit_finds_what_trying_each_finds() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        for _ in 0..30 {
            let n = 1 + rnd(3000) as usize;
            let (mut start, mut off) = (1_000u64, 0i64);
            let mut ps = Vec::with_capacity(n);
            for _ in 0..n {
                ps.push((start, off));
                start += 1 + rnd(1000);
                off += match rnd(4) {
                    0 => -(rnd(200_000) as i64),
                    1 => -(rnd(50) as i64),
                    2 => rnd(5000) as i64,
                    _ => 0,
                };
            }
            let t = tl(&ps);
            let mut c = VcpuClock::new(&t);
            let cur = rnd(n as u64) as usize;
            let (s, o) = ps[cur];
            c.commit(GuestTsc(s.wrapping_add(o as u64)), cur, s);
            for _ in 0..300 {
                let (s, o) = ps[rnd(n as u64) as usize];
                let g = GuestTsc(s.wrapping_add(o as u64).wrapping_add(rnd(3000)));
                let from0 = (cur + rnd(300) as usize).min(n);
                let last = rnd(2).checked_sub(1).map(|_| s);
                let want = (from0..n).find_map(|p| {
                    let (b, e) = range(&t, p);
                    let host = Conversion::new(t.periods[p].offset, None).to_host(g).0;
                    let hi = t.periods.get(p + 1).and_then(|q| q.start).map_or(u64::MAX, |s| s.0);
                    let fits = b <= g.0 && g.0 < e && host >= t.periods[p].start.unwrap().0 && host < hi && last.is_none_or(|l| host >= l);
                    fits.then_some((p, host))
                });
                let mut from = from0;
                assert_eq!(c.next_fit_after(g, &mut from, usize::MAX, (cur, last)), want, "g {g:?} from {from0} current {cur} of {n}");
                if want.is_none() {
                    assert!(from >= n, "a search that ends says so");
                }
            }
        }
    }
}
