//! A guest CPU's cursor seen on the host timeline: wraps the guest's own
//! cursor and places each event with that vCPU's [`VcpuClock`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::walk::{How, PlaceError, VcpuClock};
use crate::event::{Cursor, Detached, EventView};
use crate::time::GuestTsc;
use crate::{Error, Result};

pub struct GuestCursor<'a> {
    inner: Box<dyn Cursor + 'a>,
    clock: VcpuClock<'a>,
    guest: String,
    vcpu: u32,
    /// Host time of the current event; `None` at the end.
    host: Option<u64>,
    /// Period of the current event, for `check` and `--show-guest-ts`.
    period: usize,
    how: How,
    counts: Ambiguity,
    tally: Option<Tally>,
}

/// Guest events whose guest time fitted several offset periods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ambiguity {
    /// Decided by the host's run windows.
    pub by_run_windows: u64,
    /// Decided by the guest CPU's later events (clock/walk.rs `Order`).
    pub by_guest_order: u64,
    /// Placed by the rule: nothing decided (counted as ambiguous).
    pub by_rule: u64,
}

/// Per (guest, vCPU), what its cursors counted, added when each is dropped.
pub type Tally = Arc<Mutex<BTreeMap<(String, u32), Ambiguity>>>;

impl Ambiguity {
    /// Counts an event placed so.
    pub fn count(&mut self, how: How) {
        match how {
            How::Only => {}
            How::RunWindows => self.by_run_windows += 1,
            How::GuestOrder => self.by_guest_order += 1,
            How::Rule => self.by_rule += 1,
        }
    }

    /// Adds these counts to `tally`'s for (`guest`, `vcpu`).
    pub fn add_to(&self, tally: &Tally, guest: &str, vcpu: u32) {
        if *self == Ambiguity::default() {
            return;
        }
        if let Ok(mut m) = tally.lock() {
            let e = m.entry((guest.to_string(), vcpu)).or_default();
            e.by_run_windows += self.by_run_windows;
            e.by_guest_order += self.by_guest_order;
            e.by_rule += self.by_rule;
        }
    }
}

impl<'a> GuestCursor<'a> {
    pub fn new(inner: Box<dyn Cursor + 'a>, clock: VcpuClock<'a>, guest: &str, vcpu: u32) -> Result<Self> {
        let mut c = GuestCursor { inner, clock, guest: guest.to_string(), vcpu, host: None, period: 0, how: How::Only, counts: Ambiguity::default(), tally: None };
        c.place()?;
        Ok(c)
    }

    /// Adds this cursor's counts of ambiguous events to `tally` when done.
    pub fn with_tally(mut self, tally: Tally) -> Self {
        self.tally = Some(tally);
        self
    }

    pub fn ambiguity(&self) -> Ambiguity {
        self.counts
    }

    pub fn period(&self) -> usize {
        self.period
    }

    fn place(&mut self) -> Result<()> {
        let ts = match self.inner.own_ts() {
            None => {
                self.host = None;
                self.clock.finish();
                return Ok(());
            }
            Some(Some(ts)) => ts,
            // A lost-events record has no time of its own worth converting:
            // it stays right after the event before it.
            Some(None) => {
                self.host = Some(self.host.unwrap_or(0));
                self.how = How::Only;
                return Ok(());
            }
        };
        match self.clock.place(GuestTsc(ts)) {
            Ok(p) => {
                self.host = Some(p.host.0);
                self.period = p.period;
                self.how = p.how;
                self.counts.count(p.how);
                Ok(())
            }
            Err(e) => Err(place_error(&self.guest, self.vcpu, e)),
        }
    }
}

/// The error for a guest event that could not be placed.
pub(crate) fn place_error(guest: &str, vcpu: u32, e: PlaceError) -> Error {
    match e {
        PlaceError::NoOffset => Error::NoOffset { guest: guest.to_string(), vcpu },
        PlaceError::BeforeFirstOffset { guest: g, host, first_write } => Error::BeforeFirstOffset {
            guest: guest.to_string(),
            vcpu,
            guest_ts: g.0,
            host_ts: host.0,
            first_write: first_write.0,
        },
    }
}

impl Cursor for GuestCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        let mut ev = self.inner.current()?;
        ev.orig_ts = Some(ev.ts);
        ev.ts = self.host?;
        ev.placed = self.how;
        Some(ev)
    }

    fn ts(&self) -> Option<u64> {
        self.host
    }

    fn reads_ahead(&self) -> bool {
        self.clock.has_evidence()
    }

    fn detached(&self) -> Option<Detached<'_>> {
        let host = self.host?;
        Some(match self.inner.detached()? {
            Detached::View(mut ev) => {
                ev.orig_ts = Some(ev.ts);
                ev.ts = host;
                ev.placed = self.how;
                Detached::View(ev)
            }
            Detached::Raw { ts, cpu, data, .. } => Detached::Raw { ts: host, orig_ts: Some(ts), placed: self.how, cpu, data },
        })
    }

    fn advance(&mut self) -> Result<()> {
        self.inner.advance()?;
        self.place()
    }
}

impl Drop for GuestCursor<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.tally {
            self.counts.add_to(t, &self.guest, self.vcpu);
        }
    }
}
