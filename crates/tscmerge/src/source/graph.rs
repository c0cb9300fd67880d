//! The function graph tracer's leaf calls as trace-cmd report shows them.
//!
//! trace-cmd 3.1.6 prints a `funcgraph_entry` by peeking at the next record
//! of its input (`tracecmd_peek_next_data`: the earliest of every CPU of that
//! buffer). When that record is the same pid's `funcgraph_exit` of the same
//! function, the call is a leaf: one line `  0.345 us   |  func();` at the
//! entry's time, and the exit is consumed, never printed
//! (lib/trace-cmd/trace-ftrace.c `fgraph_ent_handler`,
//! `get_return_for_leaf`). Otherwise the entry prints nested, `func() {`.
//!
//! [`GraphFold`] does that for one buffer: it merges the buffer's CPU
//! cursors itself (ties to the lower cursor, as the outer merge does, so
//! the order is unchanged) and, at each entry, looks one record ahead. Only
//! buffers that define `funcgraph_entry` go through it; memory is one held
//! entry and one exit record.

use ftrace::printfmt::GraphRole;

use crate::event::{Body, Cursor, Detached, EventView, Payload, Record};
use crate::source::meta::Meta;
use crate::Result;

/// An entry taken out of the stream with its body rendered.
struct Held<'m> {
    ts: u64,
    orig_ts: Option<u64>,
    placed: crate::clock::How,
    cpu: u32,
    pid: i32,
    tgid: Option<i32>,
    comm: String,
    system: &'m str,
    name: &'m str,
    body: Vec<u8>,
}

/// One buffer's CPU cursors merged, with leaf calls folded as trace-cmd does.
pub struct GraphFold<'m> {
    cpus: Vec<Box<dyn Cursor + 'm>>,
    meta: &'m Meta,
    /// The cursor holding the earliest event, when not at the end.
    min: Option<usize>,
    held: Option<Held<'m>>,
    /// Format ids of funcgraph_entry and funcgraph_exit: a binary record of
    /// any other id is passed on without building its view.
    graph_ids: [Option<u16>; 2],
}

impl<'m> GraphFold<'m> {
    pub fn new(cpus: Vec<Box<dyn Cursor + 'm>>, meta: &'m Meta) -> Result<Self> {
        let id = |name| meta.events.by_name("ftrace", name).map(|f| f.id);
        let graph_ids = [id("funcgraph_entry"), id("funcgraph_exit")];
        let mut g = GraphFold { cpus, meta, min: None, held: None, graph_ids };
        g.find_min();
        g.take_entry()?;
        Ok(g)
    }

    /// Whether `meta` defines the graph tracer's entry event.
    pub fn wanted(meta: &Meta) -> bool {
        meta.plugins && meta.events.by_name("ftrace", "funcgraph_entry").is_some()
    }

    fn find_min(&mut self) {
        let mut best: Option<(u64, usize)> = None;
        for (i, c) in self.cpus.iter().enumerate() {
            if let Some(ts) = c.ts() {
                if best.is_none_or(|(b, _)| ts < b) {
                    best = Some((ts, i));
                }
            }
        }
        self.min = best.map(|(_, i)| i);
    }

    fn step(&mut self) -> Result<()> {
        if let Some(i) = self.min {
            self.cpus[i].advance()?;
        }
        self.find_min();
        Ok(())
    }

    /// The graph role, function, pid and bytes of the earliest record.
    fn peek_graph(&self) -> Option<(GraphRole, u64, i32, &[u8], &ftrace::format::EventFormat)> {
        let cursor = &self.cpus[self.min?];
        // Most records are not the graph tracer's: their id says so
        // without the pid and comm lookups of a view.
        if let Detached::Raw { data, .. } = cursor.detached()? {
            let id = ftrace::format::Events::common_type(data, self.meta.endian)?;
            if !self.graph_ids.contains(&Some(id)) {
                return None;
            }
        }
        let ev = cursor.current()?;
        let Payload::Event(Record { pid, body: Body::Raw { format, data, ctx }, .. }) = ev.payload else { return None };
        let (role, func) = format.graph_func(data, ctx)?;
        Some((role, func, pid, data, format))
    }

    /// When the earliest record is a graph entry: takes it out, with the
    /// exit after it when that makes a leaf, and renders it.
    fn take_entry(&mut self) -> Result<()> {
        let meta = self.meta;
        let Some((GraphRole::Entry, func, pid, data, _)) = self.peek_graph() else { return Ok(()) };
        let entry = data.to_vec();
        let Some(i) = self.min else { return Ok(()) };
        let Some(ev) = self.cpus[i].current() else { return Ok(()) };
        let Payload::Event(r) = ev.payload else { return Ok(()) };
        let Some(id) = ftrace::format::Events::common_type(&entry, meta.endian) else { return Ok(()) };
        let Some(format) = meta.events.by_id(id) else { return Ok(()) };
        let mut held = Held {
            ts: ev.ts,
            orig_ts: ev.orig_ts,
            placed: ev.placed,
            cpu: ev.cpu,
            pid,
            tgid: r.tgid,
            comm: r.comm.to_string(),
            system: &format.system,
            name: &format.name,
            body: Vec::new(),
        };
        let ctx = meta.ctx(held.cpu);
        self.step()?;
        match self.peek_graph() {
            Some((GraphRole::Exit, xfunc, xpid, xdata, _)) if xpid == pid && xfunc == func => {
                let exit = xdata.to_vec();
                let exit_format = ftrace::format::Events::common_type(&exit, meta.endian).and_then(|id| meta.events.by_id(id));
                match exit_format {
                    Some(xf) => format.render_graph_leaf(&entry, &ctx, xf, &exit, &mut held.body),
                    None => format.render(&entry, &ctx, ftrace::printfmt::Style::TraceCmd, &mut held.body),
                }
                self.step()?;
            }
            _ => format.render(&entry, &ctx, ftrace::printfmt::Style::TraceCmd, &mut held.body),
        }
        self.held = Some(held);
        Ok(())
    }
}

impl Cursor for GraphFold<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        match &self.held {
            Some(h) => Some(EventView {
                ts: h.ts,
                orig_ts: h.orig_ts,
                placed: h.placed,
                cpu: h.cpu,
                payload: Payload::Event(Record {
                    pid: h.pid,
                    tgid: h.tgid,
                    comm: &h.comm,
                    system: h.system,
                    name: h.name,
                    body: Body::Rendered(&h.body),
                }),
            }),
            None => self.cpus[self.min?].current(),
        }
    }

    fn ts(&self) -> Option<u64> {
        match &self.held {
            Some(h) => Some(h.ts),
            None => self.cpus[self.min?].ts(),
        }
    }

    fn advance(&mut self) -> Result<()> {
        // A held entry was already stepped over.
        if self.held.take().is_none() {
            self.step()?;
        }
        self.take_entry()
    }
}
