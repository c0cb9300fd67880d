//! Binary inputs page by page, for writers that can copy pages whole
//! (`merge --format dat`).
//!
//! A trace.dat output stores each CPU's ring-buffer pages; the events of a
//! page need not be decoded to be written again. What must change: each
//! record's `common_type` (the output numbers formats its own way) and, for a
//! guest, the times. Without TSC scaling and within one offset period the
//! host time is the guest time minus a constant (`host = guest - offset`,
//! mod 2^64), and every delta in the page stays the same: only the page's
//! base timestamp moves (kernel/trace/ring_buffer.c: a page's records hold
//! deltas from `buffer_data_page.time_stamp`). So a page is copied whole
//! when all its records have output ids, all its events share one shift and
//! it has no absolute-timestamp record (type 31 would need rewriting). Any
//! other page goes out in runs ([`PageSource::take_run`]): consecutive
//! records with one shift are copied as they stand, only the first one's
//! delta rewritten, so an offset change or another buffer's event due
//! inside the page costs one cut, not a re-encoding. Records without an
//! output id (text-rendered formats) are handed out event by event, like a
//! cursor, for the writer to re-encode.
//!
//! Each page is walked once on loading: every event is placed on the host
//! timeline (the vCPU's forward-only walk, clock/walk.rs) and its record
//! range kept, so memory is one page and its event list per source.

use std::cell::Cell;

use ftrace::format::EventFormat;
use ftrace::printfmt::RenderCtx;
use ftrace::ring::{Page, PageLayout, RingEvent};
use ftrace::tracedat::PageStream;
use ftrace::write::PageBuilder;
use ftrace::Endian;

use super::meta::{Meta, PidCache};
use super::ReleaseBehind;
use crate::clock::cursor::place_error;
use crate::clock::{Ambiguity, Tally, VcpuClock};
use crate::event::{EventView, Payload};
use crate::time::GuestTsc;
use crate::{Error, Result};

/// The one output page layout a page can be copied into: x86-64's.
const COPY_PAGE: usize = 4096;

/// A guest CPU's clock: its vCPU's walk, names for errors, and where its
/// counts of events that fitted several periods go when done.
pub struct GuestClock<'a> {
    pub clock: VcpuClock<'a>,
    pub guest: String,
    pub vcpu: u32,
    pub tally: Tally,
    pub counts: Ambiguity,
}

impl Drop for GuestClock<'_> {
    fn drop(&mut self) {
        self.counts.add_to(&self.tally, &self.guest, self.vcpu);
    }
}

enum Feed<'a> {
    Dat(PageStream<'a>),
    Raw { file: &'a [u8], next: usize },
}

/// One event of the loaded page.
#[derive(Clone, Copy)]
struct PageEvent {
    host: u64,
    guest: Option<u64>,
    /// Where its header starts (after any time extend), and its payload.
    header: u32,
    start: u32,
    end: u32,
    /// Its record needs only a new id, and no absolute timestamp record
    /// lies between it and the event before (see [`PageSource::take_run`]).
    routed: bool,
    absolute_before: bool,
}

impl PageEvent {
    /// Guest time − host time: one value across a run of copied records.
    fn shift(&self) -> u64 {
        self.guest.map_or(0, |g| g.wrapping_sub(self.host))
    }
}

/// Route of an input event id: not looked up yet, not copyable, or the output id.
const ROUTE_UNKNOWN: u32 = 0;
const ROUTE_NONE: u32 = u32::MAX;

/// The pages of one CPU of one buffer of a binary input.
pub struct PageSource<'a> {
    feed: Feed<'a>,
    layout: PageLayout,
    /// Pages of this input can be copied into the output's layout at all.
    copy_layout: bool,
    meta: &'a Meta,
    ctx: RenderCtx<'a>,
    pids: PidCache<'a>,
    /// The pid whose comm was last reported (`note_pid`).
    comm_pid: Cell<Option<i32>>,
    cpu: u32,
    clock: Option<GuestClock<'a>>,
    release: ReleaseBehind<'a>,
    path: &'a str,
    /// Output id + 1 per input event id (`ROUTE_*` otherwise).
    routes: Vec<u32>,
    page: Vec<u8>,
    events: Vec<PageEvent>,
    next: usize,
    /// Lost-events mark of the page (or of empty pages before it), until handed out.
    lost: Option<Option<u64>>,
    /// Whether the loaded page can be copied whole, and its shift (guest − host).
    whole: bool,
    /// A whole page that carries its own lost-events mark.
    marked: bool,
    shift: u64,
    max_host: u64,
    /// The last event's host time: a lost mark sorts right after it.
    last_host: u64,
    loaded: bool,
    done: bool,
}

impl<'a> PageSource<'a> {
    /// Over one CPU of a trace.dat buffer.
    pub(crate) fn dat(stream: PageStream<'a>, layout: PageLayout, meta: &'a Meta, release: ReleaseBehind<'a>, path: &'a str, clock: Option<GuestClock<'a>>) -> Self {
        let cpu = stream.cpu();
        Self::new(Feed::Dat(stream), layout, meta, cpu, release, path, clock)
    }

    /// Over one CPU file of a raw capture directory.
    pub(crate) fn raw(file: &'a [u8], layout: PageLayout, meta: &'a Meta, cpu: u32, release: ReleaseBehind<'a>, path: &'a str, clock: Option<GuestClock<'a>>) -> Self {
        Self::new(Feed::Raw { file, next: 0 }, layout, meta, cpu, release, path, clock)
    }

    fn new(feed: Feed<'a>, layout: PageLayout, meta: &'a Meta, cpu: u32, release: ReleaseBehind<'a>, path: &'a str, clock: Option<GuestClock<'a>>) -> Self {
        let copy_layout = layout.endian == Endian::Little
            && layout.commit_size == 8
            && layout.data_offset == 16
            && layout.page_size as usize == COPY_PAGE
            && meta.endian == Endian::Little
            && meta.long_size == 8;
        PageSource {
            feed,
            layout,
            copy_layout,
            meta,
            ctx: meta.ctx(cpu),
            pids: PidCache::default(),
            comm_pid: Cell::new(None),
            cpu,
            clock,
            release,
            path,
            routes: Vec::new(),
            page: Vec::with_capacity(COPY_PAGE),
            events: Vec::new(),
            next: 0,
            lost: None,
            whole: false,
            marked: false,
            shift: 0,
            max_host: 0,
            last_host: 0,
            loaded: false,
            done: false,
        }
    }

    /// Loads the first page (after that, pages load as the last one is used
    /// up). `route` gives the output id of an input format, `None` when its
    /// records must be re-encoded.
    pub fn start(&mut self, route: &mut dyn FnMut(&'a EventFormat, &RenderCtx<'a>) -> Option<u16>) -> Result<()> {
        if !self.loaded {
            self.loaded = true;
            self.load(route)?;
        }
        Ok(())
    }

    /// Host time of what comes next (a lost mark: the time before it).
    pub fn ts(&self) -> Option<u64> {
        if self.done {
            return None;
        }
        if self.lost.is_some() {
            return Some(self.last_host);
        }
        self.events.get(self.next).map(|e| e.host)
    }

    /// The latest host time of the loaded page when it can be copied whole
    /// now (nothing of it handed out yet).
    pub fn whole_page(&self) -> Option<u64> {
        (!self.done && self.whole && self.next == 0 && self.lost.is_none()).then_some(self.max_host)
    }

    /// Whether the page [`whole_page`](Self::whole_page) offers carries a
    /// lost-events mark (the merge counts such a mark as an event out).
    pub fn whole_page_marked(&self) -> bool {
        self.marked
    }

    /// The loaded page rewritten for the output (ids patched, base time on
    /// the host timeline), passed to `out`; [`next_page`](Self::next_page)
    /// then moves on. `comm` is called for each run of a pid, with its comm
    /// when known. Returns the number of events in the page.
    pub fn take_whole(&mut self, comm: &mut dyn FnMut(i32, &'a str), out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        for ev in &self.events {
            let (s, e) = (ev.start as usize, ev.end as usize);
            let Some(rec) = self.page.get(s..e) else { continue };
            let id = u16::from_le_bytes([rec[0], rec[1]]);
            let out_id = self.routes.get(id as usize).copied().unwrap_or(ROUTE_NONE);
            debug_assert!(out_id != ROUTE_UNKNOWN && out_id != ROUTE_NONE, "whole pages have every route");
            let new = (out_id.wrapping_sub(1) as u16).to_le_bytes();
            self.note_pid(rec, comm);
            self.page[s..s + 2].copy_from_slice(&new);
        }
        if self.shift != 0 {
            let ts = u64::from_le_bytes(self.page[..8].try_into().unwrap_or_default()).wrapping_sub(self.shift);
            self.page[..8].copy_from_slice(&ts.to_le_bytes());
        }
        out(&self.page)?;
        let n = self.events.len() as u64;
        self.next = self.events.len();
        self.last_host = self.events.last().map_or(self.last_host, |e| e.host);
        Ok(n)
    }

    /// Loads the next page after [`take_whole`](Self::take_whole).
    pub fn next_page(&mut self, route: &mut dyn FnMut(&'a EventFormat, &RenderCtx<'a>) -> Option<u16>) -> Result<()> {
        self.load(route)
    }

    /// Copies the records from the next event on into `pb` as they stand
    /// (ids patched), as long as their times keep one shift (so their deltas
    /// hold on the host timeline), they need only an output id and they are
    /// due no later than `limit`; only the first record's delta is rewritten
    /// (PageBuilder::try_push_run). Full pages go to `emit`. Returns the
    /// events copied and the last one's host time; 0 when the next event
    /// must be re-encoded (or a lost mark comes first). Stops at the end of
    /// the loaded page: [`refill`](Self::refill) then loads the next.
    pub fn take_run(
        &mut self,
        limit: u64,
        pb: &mut PageBuilder,
        comm: &mut dyn FnMut(i32, &'a str),
        emit: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let mut copied = 0u64;
        let mut last = self.last_host;
        while !self.done && self.lost.is_none() && self.copy_layout {
            let Some(first) = self.events.get(self.next).copied() else { break };
            if !first.routed || first.host > limit {
                break;
            }
            let shift = first.shift();
            // The run: same shift, routed, due, no absolute time to move;
            // and as much of it as the page being built holds.
            let room = pb.room().saturating_sub(if pb.needs_extend(first.host) { 8 } else { 0 });
            let mut end = self.next;
            for ev in &self.events[self.next..] {
                let same = ev.routed && ev.host <= limit && ev.shift() == shift && !(ev.absolute_before && shift != 0 && end > self.next);
                if !same || (ev.end - first.header) as usize > room {
                    break;
                }
                end += 1;
            }
            if end == self.next {
                if pb.is_empty() {
                    break;
                }
                emit(pb.page())?;
                pb.clear();
                continue;
            }
            let last_ev = self.events[end - 1];
            let run = self.page.get(first.header as usize..last_ev.end as usize).unwrap_or_default();
            let Some(out) = pb.try_push_run(first.host, last_ev.host, run, end - self.next)? else { break };
            // The ids are patched in the copy: the input page stays as read.
            for ev in &self.events[self.next..end] {
                let at = (ev.start - first.header) as usize;
                let Some(rec) = self.page.get(ev.start as usize..ev.end as usize) else { continue };
                let Some(id) = rec.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) else { continue };
                let new = self.routes.get(id as usize).copied().unwrap_or(ROUTE_NONE).wrapping_sub(1) as u16;
                self.note_pid(rec, comm);
                if let Some(b) = out.get_mut(at..at + 2) {
                    b.copy_from_slice(&new.to_le_bytes());
                }
            }
            copied += (end - self.next) as u64;
            last = last_ev.host;
            self.last_host = last;
            self.next = end;
        }
        Ok((copied, last))
    }

    /// Loads the next page when the loaded one is used up.
    pub fn refill(&mut self, route: &mut dyn FnMut(&'a EventFormat, &RenderCtx<'a>) -> Option<u16>) -> Result<()> {
        if !self.done && self.lost.is_none() && self.next >= self.events.len() {
            self.load(route)?;
        }
        Ok(())
    }

    /// Calls `comm` with the pid of a record and its comm when
    /// the pid differs from the last one reported (a CPU runs one task for
    /// many events).
    fn note_pid(&self, rec: &[u8], comm: &mut dyn FnMut(i32, &'a str)) {
        if let Some(pid) = self.meta.record_pid(rec) {
            if self.comm_pid.get() != Some(pid) {
                self.comm_pid.set(Some(pid));
                comm(pid, self.meta.comm(pid));
            }
        }
    }

    /// What comes next, event by event (the lost mark of a page first).
    pub fn current(&self) -> Option<EventView<'_>> {
        if self.done {
            return None;
        }
        if let Some(count) = self.lost {
            return Some(EventView { ts: self.last_host, orig_ts: None, placed: Default::default(), cpu: self.cpu, payload: Payload::Lost { count } });
        }
        let ev = self.events.get(self.next)?;
        let data = self.page.get(ev.start as usize..ev.end as usize)?;
        Some(EventView { ts: ev.host, orig_ts: ev.guest, placed: Default::default(), cpu: self.cpu, payload: Payload::Event(self.meta.record(data, &self.ctx, &self.pids)) })
    }

    /// Moves past [`current`](Self::current).
    pub fn advance(&mut self, route: &mut dyn FnMut(&'a EventFormat, &RenderCtx<'a>) -> Option<u16>) -> Result<()> {
        if self.lost.take().is_some() {
            return Ok(());
        }
        if let Some(ev) = self.events.get(self.next) {
            self.last_host = ev.host;
            self.next += 1;
        }
        if self.next >= self.events.len() {
            self.load(route)?;
        }
        Ok(())
    }

    fn err(&self, e: ftrace::Error) -> Error {
        Error::Parse(e.in_file(self.path))
    }

    /// Reads pages until one holds an event (lost marks of empty pages carry
    /// over to it) or the data end.
    fn load(&mut self, route: &mut dyn FnMut(&'a EventFormat, &RenderCtx<'a>) -> Option<u16>) -> Result<()> {
        self.events.clear();
        self.next = 0;
        let mut carried = self.lost.take();
        loop {
            let (at, bytes) = match &mut self.feed {
                Feed::Dat(s) => match s.next_page().map_err(|e| Error::Parse(e.in_file(self.path)))? {
                    Some((at, b)) => (at.0, b),
                    None => break,
                },
                Feed::Raw { file, next } => {
                    if *next >= file.len() {
                        break;
                    }
                    let start = *next;
                    let end = start.saturating_add(self.layout.page_size as usize).min(file.len());
                    *next = end;
                    (start as u64, &file[start..end])
                }
            };
            self.release.reached(at);
            self.page.clear();
            self.page.extend_from_slice(bytes);
            let p = Page::parse(&self.layout, &self.page, at).map_err(|e| self.err(e))?;
            let page_lost = p.lost();
            let mut walk = p.events();
            let base = self.page.as_ptr() as usize;
            let mut whole = self.copy_layout && self.page.len() == COPY_PAGE && carried.is_none();
            let mut shift = None;
            let mut max_host = 0;
            while let Some(r) = walk.next() {
                let RingEvent::Event { ts, data } = r.map_err(|e| self.err(e))? else { continue };
                // `data` lies inside `self.page`: its range from the addresses.
                let start = data.as_ptr() as usize - base;
                let (host, guest) = match &mut self.clock {
                    None => (ts, None),
                    Some(c) => match c.clock.place(GuestTsc(ts)) {
                        Ok(p) => {
                            c.counts.count(p.how);
                            (p.host.0, Some(ts))
                        }
                        Err(e) => return Err(place_error(&c.guest, c.vcpu, e)),
                    },
                };
                // Every record's route is looked up (cached per id): pages
                // that cannot go whole still copy routed records one by one.
                let routed = self.copy_layout && data.len() >= 2 && {
                    let id = u16::from_le_bytes([data[0], data[1]]) as usize;
                    if self.routes.len() <= id {
                        self.routes.resize(id + 1, ROUTE_UNKNOWN);
                    }
                    if self.routes[id] == ROUTE_UNKNOWN {
                        self.routes[id] = match self.meta.events.by_id(id as u16).and_then(|f| route(f, &self.ctx)) {
                            Some(out) => out as u32 + 1,
                            None => ROUTE_NONE,
                        };
                    }
                    self.routes[id] != ROUTE_NONE
                };
                if whole {
                    let s = ts.wrapping_sub(host);
                    whole = routed && *shift.get_or_insert(s) == s;
                }
                max_host = max_host.max(host);
                let (header, absolute_before) = walk.last_header();
                let header = header + self.layout.data_offset as usize;
                self.events.push(PageEvent { host, guest, header: header as u32, start: start as u32, end: (start + data.len()) as u32, routed, absolute_before });
            }
            let shift = shift.unwrap_or(0);
            if shift != 0 && walk.saw_absolute() {
                whole = false;
            }
            if page_lost.is_some() {
                carried = page_lost;
            }
            if self.events.is_empty() {
                continue;
            }
            // A whole page carries its own lost mark.
            self.lost = if whole { None } else { carried };
            self.whole = whole;
            self.marked = whole && page_lost.is_some();
            self.shift = shift;
            self.max_host = max_host;
            return Ok(());
        }
        // The end: a lost mark with no event after it is dropped, as a
        // cursor's would be by a page writer with nothing left to mark.
        self.lost = None;
        self.done = true;
        Ok(())
    }
}
