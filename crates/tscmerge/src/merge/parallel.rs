//! The two-thread merge: the heap and the cursors (page walks, guest clock
//! conversion) on the caller's thread, the sink (record resolution,
//! rendering, encoding, writing) on a second one.
//!
//! ```text
//!  cursors ─> heap ─> Batch { items, bytes } ──sync_channel(2)──> resolve ─> sink
//!                        ^──────────── empty batches back ───────────┘
//! ```
//!
//! A binary record crosses as a copy of its bytes (a compressed input's page
//! buffer is reused as its cursor advances) and is resolved by its input's
//! [`Meta`] on the sink's thread, in output order, so learned comms come out
//! as in the one-thread merge. A sink that only wants bodies as text
//! ([`Sink::body_style`]: the text sink) gets them rendered on the merge's
//! thread instead, also in order, which splits the work more evenly (unless
//! a guest cursor reads the host ahead for run windows on this thread, see
//! [`Cursor::reads_ahead`](crate::event::Cursor::reads_ahead)). Memory:
//! at most four batches of [`BATCH`] events.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use ftrace::format::Events;
use ftrace::printfmt::{RenderCtx, Style};

use super::{drive, Input, MergeStats, Sink};
use crate::event::{Body, Detached, EventView, Payload, Record};
use crate::source::meta::{Meta, PidCache};
use crate::Result;

/// Events per batch: large enough to amortise the hand-over, small enough
/// to stay in cache.
const BATCH: usize = 4096;

#[derive(Clone, Debug)]
enum Kind {
    Lost(Option<u64>),
    /// A binary record: `bytes[range]`, decoded by the input's `Meta`.
    Raw(Range<usize>),
    /// A record of a text input, its strings in `bytes`.
    Text { pid: i32, tgid: Option<i32>, comm: Range<usize>, system: Range<usize>, name: Range<usize>, body: Range<usize> },
    /// A binary record resolved and rendered ahead: format `id` of the
    /// input's `Meta`, the body's bytes in `bytes`.
    Rendered { pid: i32, tgid: Option<i32>, comm: Range<usize>, id: u16, body: Range<usize> },
    /// A binary record resolved ahead (pid, comm), its body left to render
    /// on the sink's thread: rendering it reads no state, and what it
    /// teaches the state was learned ahead.
    Resolved { pid: i32, tgid: Option<i32>, comm: Range<usize>, raw: Range<usize> },
}

#[derive(Clone, Debug)]
struct Item {
    machine: usize,
    input: usize,
    ts: u64,
    orig_ts: Option<u64>,
    placed: crate::clock::How,
    cpu: u32,
    kind: Kind,
}

#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
}

impl Batch {
    fn put(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }

    fn str(&self, r: &Range<usize>) -> &str {
        self.bytes.get(r.clone()).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }

    /// Copies the current event of `input` (number `index`); with `style`,
    /// resolved and its body rendered.
    fn push(&mut self, index: usize, input: &Input<'_>, style: Option<Style>) -> bool {
        let d = match style {
            Some(_) => input.cursor.current().map(Detached::View),
            None => input.cursor.detached(),
        };
        let Some(d) = d else { return false };
        let machine = input.machine;
        let item = match d {
            Detached::Raw { ts, orig_ts, placed, cpu, data } => {
                Item { machine, input: index, ts, orig_ts, placed, cpu, kind: Kind::Raw(self.put(data)) }
            }
            Detached::View(ev) => {
                let kind = match ev.payload {
                    Payload::Lost { count } => Kind::Lost(count),
                    // Bodies that do not read the plugins' state render on
                    // the sink's thread, which splits the work about evenly;
                    // what they teach the state (sched comms) is learned
                    // here, in order, as rendering them here would.
                    Payload::Event(r @ Record { body: Body::Raw { format, data, ctx }, .. })
                        if input.meta.is_some() && !format.render_reads_state() =>
                    {
                        if style == Some(Style::TraceCmd) {
                            format.learn(data, ctx);
                        }
                        let comm = self.put(r.comm.as_bytes());
                        Kind::Resolved { pid: r.pid, tgid: r.tgid, comm, raw: self.put(data) }
                    }
                    Payload::Event(r @ Record { body: Body::Raw { format, .. }, .. }) if input.meta.is_some() => {
                        let comm = self.put(r.comm.as_bytes());
                        let start = self.bytes.len();
                        r.body.render(style.unwrap_or(Style::TraceCmd), &mut self.bytes);
                        Kind::Rendered { pid: r.pid, tgid: r.tgid, comm, id: format.id, body: start..self.bytes.len() }
                    }
                    Payload::Event(r) => {
                        let comm = self.put(r.comm.as_bytes());
                        let system = self.put(r.system.as_bytes());
                        let name = self.put(r.name.as_bytes());
                        let start = self.bytes.len();
                        // Binary records come as Raw unless the sink asked
                        // for rendered bodies (`style`).
                        r.body.render(style.unwrap_or(Style::TraceCmd), &mut self.bytes);
                        Kind::Text { pid: r.pid, tgid: r.tgid, comm, system, name, body: start..self.bytes.len() }
                    }
                };
                Item { machine, input: index, ts: ev.ts, orig_ts: ev.orig_ts, placed: ev.placed, cpu: ev.cpu, kind }
            }
        };
        self.items.push(item);
        true
    }
}

/// What the sink's thread keeps per input to resolve its records.
struct Resolver<'a> {
    meta: Option<&'a Meta>,
    ctx: Option<RenderCtx<'a>>,
    /// `ctx` without the plugins' state, for bodies whose learning the
    /// merge's thread did ([`Kind::Resolved`]).
    plain: Option<RenderCtx<'a>>,
    pids: PidCache<'a>,
}

impl<'a> Resolver<'a> {
    /// The input's tables and its rendering context (made at its first
    /// record: a cursor is one CPU); `None` for inputs without tables.
    fn ready(&mut self, cpu: u32) -> Option<(&'a Meta, &RenderCtx<'a>, &PidCache<'a>)> {
        let meta = self.meta?;
        let ctx = self.ctx.get_or_insert_with(|| meta.ctx(cpu));
        Some((meta, ctx, &self.pids))
    }

    /// As [`ready`](Self::ready), the context without state.
    fn ready_plain(&mut self, cpu: u32) -> Option<(&'a Meta, &RenderCtx<'a>)> {
        let meta = self.meta?;
        let ctx = self.plain.get_or_insert_with(|| RenderCtx { state: None, ..meta.ctx(cpu) });
        Some((meta, ctx))
    }
}

/// Feeds one batch to the sink.
fn deliver<'a>(batch: &Batch, res: &mut [Resolver<'a>], sink: &mut dyn Sink) -> Result<()> {
    for it in &batch.items {
        let payload = match &it.kind {
            Kind::Lost(count) => Payload::Lost { count: *count },
            Kind::Text { pid, tgid, comm, system, name, body } => Payload::Event(Record {
                pid: *pid,
                tgid: *tgid,
                comm: batch.str(comm),
                system: batch.str(system),
                name: batch.str(name),
                body: Body::Text(batch.str(body)),
            }),
            Kind::Rendered { pid, tgid, comm, id, body } => {
                let Some(f) = res.get(it.input).and_then(|r| r.meta).and_then(|m| m.events.by_id(*id)) else { continue };
                Payload::Event(Record {
                    pid: *pid,
                    tgid: *tgid,
                    comm: batch.str(comm),
                    system: &f.system,
                    name: &f.name,
                    body: Body::Rendered(batch.bytes.get(body.clone()).unwrap_or(&[])),
                })
            }
            Kind::Resolved { pid, tgid, comm, raw } => {
                let Some((meta, ctx)) = res.get_mut(it.input).and_then(|r| r.ready_plain(it.cpu)) else { continue };
                let data = batch.bytes.get(raw.clone()).unwrap_or(&[]);
                let Some(format) = Events::common_type(data, meta.endian).and_then(|id| meta.events.by_id(id)) else { continue };
                Payload::Event(Record {
                    pid: *pid,
                    tgid: *tgid,
                    comm: batch.str(comm),
                    system: &format.system,
                    name: &format.name,
                    body: Body::Raw { format, data, ctx },
                })
            }
            Kind::Raw(range) => {
                let Some((meta, ctx, pids)) = res.get_mut(it.input).and_then(|r| r.ready(it.cpu)) else { continue };
                let Some(data) = batch.bytes.get(range.clone()) else { continue };
                Payload::Event(meta.record(data, ctx, pids))
            }
        };
        sink.event(it.machine, &EventView { ts: it.ts, orig_ts: it.orig_ts, placed: it.placed, cpu: it.cpu, payload })?;
    }
    Ok(())
}

pub(super) fn merge(mut inputs: Vec<Input<'_>>, sink: &mut dyn Sink) -> Result<MergeStats> {
    let metas: Vec<Option<&Meta>> = inputs.iter().map(|i| i.meta).collect();
    // The run-window pass of a guest's clock reads the host a second time
    // on this thread: then the sink's thread resolves and renders every
    // body (the one-thread path, the same text), which evens the load
    // (issue #21, bench/README.md).
    let style = sink.body_style().filter(|_| !inputs.iter().any(|i| i.cursor.reads_ahead()));
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
        let failed = &failed;
        let consumer = s.spawn(move || -> Result<()> {
            let mut res: Vec<Resolver> = metas.into_iter().map(|meta| Resolver { meta, ctx: None, plain: None, pids: PidCache::default() }).collect();
            for mut batch in full_rx {
                deliver(&batch, &mut res, sink)?;
                batch.items.clear();
                batch.bytes.clear();
                // The producer may be gone; the batch is then simply freed.
                let _ = empty_tx.send(batch);
            }
            // An input failed: leave the sink unfinished, as the one-thread
            // merge does, so no partial output is completed.
            if failed.load(Ordering::Acquire) {
                return Ok(());
            }
            sink.finish()
        });

        let mut batch = Batch::default();
        let mut sent = true;
        let produced = drive(&mut inputs, |index, input| {
            let used = batch.push(index, input, style);
            if batch.items.len() >= BATCH {
                let next = empty_rx.try_recv().unwrap_or_default();
                // A closed channel means the sink failed: stop feeding it.
                if full_tx.send(std::mem::replace(&mut batch, next)).is_err() {
                    sent = false;
                    return Err(crate::Error::SinkStopped);
                }
            }
            Ok(used)
        });
        if produced.is_ok() && !batch.items.is_empty() {
            sent = full_tx.send(batch).is_ok();
        }
        if produced.is_err() && sent {
            failed.store(true, Ordering::Release);
        }
        drop(full_tx);
        let consumed = match consumer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // The sink's error explains a stop better than the producer's.
        consumed?;
        produced
    })
}
