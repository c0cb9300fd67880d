//! A guest CPU's cursor seen on the host timeline: wraps the guest's own
//! cursor and places each event with that vCPU's [`VcpuClock`].

use super::walk::{PlaceError, VcpuClock};
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
}

impl<'a> GuestCursor<'a> {
    pub fn new(inner: Box<dyn Cursor + 'a>, clock: VcpuClock<'a>, guest: &str, vcpu: u32) -> Result<Self> {
        let mut c = GuestCursor { inner, clock, guest: guest.to_string(), vcpu, host: None, period: 0 };
        c.place()?;
        Ok(c)
    }

    pub fn period(&self) -> usize {
        self.period
    }

    fn place(&mut self) -> Result<()> {
        let ts = match self.inner.own_ts() {
            None => {
                self.host = None;
                return Ok(());
            }
            Some(Some(ts)) => ts,
            // A lost-events record has no time of its own worth converting:
            // it stays right after the event before it.
            Some(None) => {
                self.host = Some(self.host.unwrap_or(0));
                return Ok(());
            }
        };
        match self.clock.place(GuestTsc(ts)) {
            Ok(p) => {
                self.host = Some(p.host.0);
                self.period = p.period;
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
        Some(ev)
    }

    fn ts(&self) -> Option<u64> {
        self.host
    }

    fn detached(&self) -> Option<Detached<'_>> {
        let host = self.host?;
        Some(match self.inner.detached()? {
            Detached::View(mut ev) => {
                ev.orig_ts = Some(ev.ts);
                ev.ts = host;
                Detached::View(ev)
            }
            Detached::Raw { ts, cpu, data, .. } => Detached::Raw { ts: host, orig_ts: Some(ts), cpu, data },
        })
    }

    fn advance(&mut self) -> Result<()> {
        self.inner.advance()?;
        self.place()
    }
}
