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

/// Periods tried per search at most, and fitting ones judged: a timeline
/// crafted with many overlapping periods costs bounded time per event.
const MAX_TRIED: usize = 4096;
/// Periods after the current one tried one by one before [`RangeIndex`].
const SCAN: usize = 16;
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

/// The periods' guest ranges `[begin, end)` as a tree of (lowest begin,
/// highest end) over ranges of periods: the next period whose range holds
/// a guest time is found without trying each (thousands of periods after
/// an unstable TSC's loads; a later fall far below makes every one a
/// maybe). A node whose lowest begin lies above, or highest end at or
/// below, the time holds none.
#[derive(Debug)]
struct RangeIndex {
    /// Leaves from `size`; node `k`'s children are `2k`, `2k + 1`.
    size: usize,
    low: Vec<u64>,
    high: Vec<u64>,
}

/// A search of [`RangeIndex::next`].
enum Next {
    At(usize),
    None,
    /// Visited [`MAX_TRIED`] nodes (a timeline crafted so nodes prune
    /// nothing): as if the periods tried ran out.
    GaveUp,
}

impl RangeIndex {
    fn new(begin: &[u64], end: &[u64]) -> Self {
        let size = begin.len().next_power_of_two();
        let mut low = vec![u64::MAX; 2 * size];
        let mut high = vec![0; 2 * size];
        for (i, (&b, &e)) in begin.iter().zip(end).enumerate() {
            low[size + i] = b;
            high[size + i] = e;
        }
        for k in (1..size).rev() {
            low[k] = low[2 * k].min(low[2 * k + 1]);
            high[k] = high[2 * k].max(high[2 * k + 1]);
        }
        RangeIndex { size, low, high }
    }

    /// The first period in `from..stop` whose range holds `g`.
    fn next(&self, from: usize, stop: usize, g: u64) -> Next {
        let mut budget = MAX_TRIED;
        match self.find(1, 0, self.size, (from, stop), g, &mut budget) {
            Some(p) => Next::At(p),
            None if budget == 0 => Next::GaveUp,
            None => Next::None,
        }
    }

    fn find(&self, k: usize, lo: usize, hi: usize, (from, stop): (usize, usize), g: u64, budget: &mut usize) -> Option<usize> {
        if hi <= from || lo >= stop || *budget == 0 || self.low[k] > g || self.high[k] <= g {
            return None;
        }
        *budget -= 1;
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = lo + (hi - lo) / 2;
        self.find(2 * k, lo, mid, (from, stop), g, budget).or_else(|| self.find(2 * k + 1, mid, hi, (from, stop), g, budget))
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
    /// Per period, the guest TSC at its start (`0` from the beginning of
    /// time, `u64::MAX` when it has no start) and at its end.
    begin: Vec<u64>,
    end: Vec<u64>,
    /// `begin_after[i]`: the lowest `begin` of the periods after `i`; an
    /// event below it fits no later period.
    begin_after: Vec<u64>,
    /// Finds the periods whose guest range holds a guest time, past the
    /// [`SCAN`] nearest; built at the first such search.
    ranges: std::cell::OnceCell<RangeIndex>,
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
        let n = tl.periods.len();
        let mut begin = Vec::with_capacity(n);
        let mut end = Vec::with_capacity(n);
        for (i, p) in tl.periods.iter().enumerate() {
            let conv = Conversion::new(p.offset, tl.scaling);
            begin.push(match p.start {
                Some(s) => conv.to_guest(s).0,
                None if i == 0 => 0,
                None => u64::MAX,
            });
            end.push(match tl.periods.get(i + 1).and_then(|q| q.start) {
                Some(s) => conv.to_guest(s).0,
                None => u64::MAX,
            });
        }
        let mut begin_after = vec![u64::MAX; n];
        for i in (0..n.saturating_sub(1)).rev() {
            begin_after[i] = begin_after[i + 1].min(begin[i + 1]);
        }
        let ranges = std::cell::OnceCell::new();
        VcpuClock { tl, period: 0, conv: tl.conversion(0), last_guest: None, last_host: None, begin, end, begin_after, ranges, clear_until: 0, evidence: None, order: None }
    }

    /// Whether some guest time fits two periods: a later period begins (in
    /// guest time) below where an earlier one ends, as after a fall.
    pub fn can_be_ambiguous(&self) -> bool {
        let mut ended = 0u64;
        for (p, (&b, &e)) in self.begin.iter().zip(&self.end).enumerate() {
            if p > 0 && b < ended {
                return true;
            }
            if b != u64::MAX {
                ended = ended.max(e);
            }
        }
        false
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
            if g >= last && g.0 >= self.begin[i] && g.0 < self.end[i] && g.0 < self.clear_until {
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
        while *from < stop {
            let p = *from;
            if p > after.0 && self.begin_after[p - 1] > g.0 {
                *from = periods.len();
                return None; // no later period begins at or below g
            }
            // The nearest one by one (the fit is almost always the current
            // period or the next); farther, the index.
            let p = if p < after.0 + SCAN {
                *from += 1;
                if g.0 < self.begin[p] || g.0 >= self.end[p] {
                    continue;
                }
                p
            } else {
                match self.ranges.get_or_init(|| RangeIndex::new(&self.begin, &self.end)).next(p, stop, g.0) {
                    Next::At(p) => p,
                    Next::None => {
                        *from = stop;
                        return None;
                    }
                    Next::GaveUp => return None,
                }
            };
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

    fn commit(&mut self, g: GuestTsc, period: usize, host: u64) {
        self.period = period;
        self.conv = self.tl.conversion(period);
        self.last_guest = Some(g);
        self.last_host = Some(host);
        if let Some(e) = &self.evidence {
            e.set_floor(host);
        }
        // Later events of the shortcut are at or above g: near periods
        // ending at or below g can never fit them.
        let near = (period + 1..self.tl.periods.len().min(period + 1 + NEAR)).filter(|&j| self.end[j] > g.0);
        self.clear_until = near.map(|j| self.begin[j]).min().unwrap_or(u64::MAX);
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
}
