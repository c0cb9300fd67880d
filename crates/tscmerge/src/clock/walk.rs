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
//! lying outside, is chosen (`How::Evidence`). Where no evidence decides
//! (no windows recorded, both inside, a hole) **the rule** applies: the
//! earliest fitting period, and the event is counted as ambiguous
//! (`How::Rule`). The rule is right for the events before a fall; it is
//! wrong for events after a fall that show no backward step of the guest
//! TSC (the vCPU did not run between its last event and the write).
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

/// Periods tried per event at most, and fitting ones kept: a timeline
/// crafted with many overlapping periods costs bounded time per event.
const MAX_TRIED: usize = 4096;
const MAX_FITTING: usize = 8;

/// The forward-only placer of one guest CPU.
#[derive(Clone, Debug)]
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
    evidence: Option<Evidence<'t>>,
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
        VcpuClock { tl, period: 0, conv: tl.conversion(0), last_guest: None, last_host: None, begin, end, begin_after, evidence: None }
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

    #[inline]
    pub fn place(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        if let (Some(conv), Some(last)) = (self.conv, self.last_guest) {
            let i = self.period;
            // At or after the previous event, inside the current period,
            // and below where any later period begins: only this one fits.
            if g >= last && g.0 >= self.begin[i] && g.0 < self.end[i] && g.0 < self.begin_after[i] {
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

    fn decide(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        let conv = self.conv.ok_or(PlaceError::NoOffset)?;
        let _ = conv;
        let mut fitting: [(usize, u64); MAX_FITTING] = [(0, 0); MAX_FITTING];
        let mut n = 0;
        let periods = &self.tl.periods;
        let mut p = self.period;
        while p < periods.len() && p < self.period + MAX_TRIED && n < MAX_FITTING {
            if p > self.period && self.begin_after[p - 1] > g.0 {
                break; // no later period begins at or below g
            }
            if g.0 >= self.begin[p] && g.0 < self.end[p] {
                let host = Conversion::new(periods[p].offset, self.tl.scaling).to_host(g).0;
                let lo = periods[p].start.map_or(0, |s| s.0);
                let hi = periods.get(p + 1).and_then(|q| q.start).map_or(u64::MAX, |s| s.0);
                if host >= lo && host < hi && self.last_host.is_none_or(|l| host >= l) {
                    fitting[n] = (p, host);
                    n += 1;
                }
            }
            p += 1;
        }
        let chosen = match &fitting[..n] {
            [] => return self.walk(g),
            [one] => (*one, How::Only),
            several => match &self.evidence {
                Some(ev) => {
                    let hosts: Vec<u64> = several.iter().map(|&(_, h)| h).collect();
                    let verdicts = ev.inside_all(&hosts);
                    let inside: Vec<usize> = (0..several.len()).filter(|&k| verdicts[k] == Some(true)).collect();
                    let all_known = verdicts.iter().all(Option::is_some);
                    match inside[..] {
                        [k] if all_known => (several[k], How::RunWindows),
                        _ => (several[0], How::Rule),
                    }
                }
                None => (several[0], How::Rule),
            },
        };
        let ((period, host), how) = chosen;
        self.commit(g, period, host);
        Ok(Placed { host: HostTsc(host), period, how })
    }

    fn commit(&mut self, g: GuestTsc, period: usize, host: u64) {
        self.period = period;
        self.conv = self.tl.conversion(period);
        self.last_guest = Some(g);
        self.last_host = Some(host);
        if let Some(e) = &self.evidence {
            e.set_floor(host);
        }
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
        // Inside both (a window from 80 to 200 with no exit): the rule.
        let h = host(&[(80, "kvm_entry"), (300, "kvm_exit")]);
        let la = Rc::new(RefCell::new(Lookahead::new(vec![h], [7], 100)));
        let mut c = VcpuClock::new(&t).with_evidence(Lookahead::evidence(&la, 7));
        c.place(GuestTsc(90)).unwrap();
        assert_eq!(c.place(GuestTsc(95)).unwrap().how, How::Rule);
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
