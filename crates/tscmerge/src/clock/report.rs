//! A file's events on the time `trace-cmd report` gives them
//! ([`ftrace::tracedat::time::ReportClock`]): TIME_SHIFT's guest→host
//! correction, TSC2NSEC or `--ts2secs`, the DATE and OFFSET options.
//! `report` merges on that time, as trace-cmd orders records by it.

use std::sync::Arc;

use ftrace::tracedat::time::ReportClock;

use crate::event::{Cursor, Detached, EventView};
use crate::Result;

/// One CPU's cursor with its times converted.
pub struct ReportTimeCursor<'a> {
    inner: Box<dyn Cursor + 'a>,
    clock: Arc<ReportClock>,
    cpu: u32,
    /// The current event's converted time; `None` at the end.
    ts: Option<u64>,
}

impl<'a> ReportTimeCursor<'a> {
    pub fn new(inner: Box<dyn Cursor + 'a>, clock: Arc<ReportClock>, cpu: u32) -> Self {
        let mut c = ReportTimeCursor { inner, clock, cpu, ts: None };
        c.convert();
        c
    }

    fn convert(&mut self) {
        self.ts = match self.inner.own_ts() {
            None => None,
            Some(Some(ts)) => Some(self.clock.convert(ts, self.cpu)),
            // A lost-events mark stays right after the event before it.
            Some(None) => Some(self.ts.unwrap_or(0)),
        };
    }
}

impl Cursor for ReportTimeCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        let mut ev = self.inner.current()?;
        ev.ts = self.ts?;
        Some(ev)
    }

    fn ts(&self) -> Option<u64> {
        self.ts
    }

    fn detached(&self) -> Option<Detached<'_>> {
        let ts = self.ts?;
        Some(match self.inner.detached()? {
            Detached::View(mut ev) => {
                ev.ts = ts;
                Detached::View(ev)
            }
            Detached::Raw { orig_ts, placed, cpu, data, .. } => Detached::Raw { ts, orig_ts, placed, cpu, data },
        })
    }

    fn advance(&mut self) -> Result<()> {
        self.inner.advance()?;
        self.convert();
        Ok(())
    }
}
