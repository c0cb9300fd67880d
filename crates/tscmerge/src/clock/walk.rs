//! Which offset period a guest event belongs to.
//!
//! A guest CPU's events arrive in true time order (each guest CPU's ring
//! buffer is written in order). We walk that vCPU's periods forward only.
//!
//! **The rule.** With the event's guest TSC `g`, the current period `i` and the
//! next period `i+1` starting at host time `s` with offset `o'`:
//! move to period `i+1` when
//! 1. `g` converted with period `i` reaches `s` (the event is at or after the
//!    write, had the offset not changed; this is always the case after a rise,
//!    where the guest TSC jumps forward), or
//! 2. the offset fell (`o' < o` as signed values) and `g` is smaller than the
//!    previous event's guest TSC: the guest TSC stepped backward, which only
//!    the change explains.
//!
//! Repeat until neither holds (several writes can fall between two events).
//! After a fall, guest TSC values in `[s + o', s + o)` occur twice, once on
//! each side of the write; an event in that window that is not preceded by a
//! backward step stays in the older period. That choice is the only one the
//! guest's data allows; `tscmerge check` measures it against run windows.

use super::convert::Conversion;
use super::timeline::VcpuTimeline;
use crate::time::{GuestTsc, HostTsc};

/// Why a guest event could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// No offset is known at all for this vCPU.
    NoOffset,
    /// The event converts to a host time before the vCPU's first known write.
    BeforeFirstOffset { guest: GuestTsc, host: HostTsc, first_write: HostTsc },
}

/// A converted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub host: HostTsc,
    pub period: usize,
}

/// The forward-only walker of one guest CPU.
#[derive(Clone, Debug)]
pub struct VcpuClock<'t> {
    tl: &'t VcpuTimeline,
    period: usize,
    conv: Option<Conversion>,
    last_guest: Option<GuestTsc>,
    /// Host times `floor..recheck` an event may have to be placed in the
    /// current period without the walk (when its guest time does not step
    /// back): `recheck` is the next period's start (`u64::MAX` when none
    /// can be reached); `floor` is the first period's start while in it
    /// (earlier events are errors), else 0.
    floor: u64,
    recheck: u64,
}

impl<'t> VcpuClock<'t> {
    pub fn new(tl: &'t VcpuTimeline) -> Self {
        VcpuClock { tl, period: 0, conv: tl.conversion(0), last_guest: None, floor: 0, recheck: 0 }
    }

    #[inline]
    pub fn place(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        if let (Some(conv), Some(last)) = (self.conv, self.last_guest) {
            let host = conv.to_host(g);
            if g >= last && host.0 < self.recheck && host.0 >= self.floor {
                self.last_guest = Some(g);
                return Ok(Placed { host, period: self.period });
            }
        }
        self.walk(g)
    }

    fn walk(&mut self, g: GuestTsc) -> Result<Placed, PlaceError> {
        let mut conv = self.conv.ok_or(PlaceError::NoOffset)?;
        let mut stepped_back = self.last_guest.is_some_and(|last| g < last);
        while let Some(next) = self.tl.periods.get(self.period + 1) {
            let Some(start) = next.start else { break };
            let cur_offset = self.tl.periods[self.period].offset;
            let fell = (next.offset.wrapping_sub(cur_offset) as i64) < 0;
            let reached = conv.to_host(g) >= start;
            if reached || (fell && stepped_back) {
                if !reached {
                    stepped_back = false; // this write explains the step
                }
                self.period += 1;
                conv = Conversion::new(next.offset, self.tl.scaling);
            } else {
                break;
            }
        }
        self.conv = Some(conv);
        self.last_guest = Some(g);
        let host = conv.to_host(g);
        self.recheck = self.tl.periods.get(self.period + 1).map_or(u64::MAX, |next| next.start.map_or(u64::MAX, |s| s.0));
        self.floor = match self.tl.periods.first().and_then(|p| p.start) {
            Some(first) if self.period == 0 => first.0,
            _ => 0,
        };
        // In the first period, before its start: no offset applies yet.
        if host.0 < self.floor {
            return Err(PlaceError::BeforeFirstOffset { guest: g, host, first_write: HostTsc(self.floor) });
        }
        Ok(Placed { host, period: self.period })
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
        assert_eq!(c.place(GuestTsc(95)).unwrap(), Placed { host: HostTsc(95), period: 0 });
        // A later step backward moves it on.
        assert_eq!(c.place(GuestTsc(94)).unwrap(), Placed { host: HostTsc(104), period: 1 });
    }

    proptest::proptest! {
        /// The shortcut of `place` gives what the walk alone gives, for any
        /// timeline (rises, falls) and guest times (steps back included).
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
                proptest::prop_assert_eq!(fast.place(GuestTsc(g)), slow.walk(GuestTsc(g)));
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
