//! The streaming k-way merge over per-CPU cursors of every machine.
//!
//! ```text
//!  host cpu0 ─┐
//!  host cpu1 ─┤   BinaryHeap of (ts, cursor#)    ┌─> sink(machine, event)
//!  guest0 c0 ─┼─> pop min ──────────────────────┤
//!  guest0 c1 ─┘   advance that cursor, push back └─ (one entry per cursor)
//! ```
//!
//! Memory is one heap entry per cursor: it grows with CPUs and buffers, never
//! with events. Ties on the timestamp go to the lower cursor number; cursors
//! are numbered host first, then guests in the order given, each by buffer and
//! CPU, so the output is deterministic. Within a cursor the order is the
//! input's, so lost-event records stay where the kernel put them.
//!
//! With two threads ([`merge_threads`]) the heap runs on the caller's thread
//! and the sink on another: events cross in batches (binary records as their
//! bytes), and the sink's thread resolves and renders them in output order.
//! Memory stays bounded: a few batches in flight.

mod parallel;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::event::{Cursor, EventView};
use crate::source::meta::Meta;
use crate::Result;

/// A cursor and the machine it belongs to (index into the caller's list).
pub struct Input<'a> {
    pub machine: usize,
    pub cursor: Box<dyn Cursor + 'a>,
    /// Decodes the cursor's binary records (`Detached::Raw`); `None` for
    /// cursors that hand out views only.
    pub meta: Option<&'a Meta>,
}

/// Receives merged events in order. `Send`: the two-thread merge runs the
/// sink on its own thread.
pub trait Sink: Send {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()>;
    /// Called once after the last event: sinks that hold data back (open
    /// bundles, spooled pages, a closing bracket) write it here.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    /// `Some(style)` when the sink only ever renders bodies in `style` and
    /// reads nothing else of a binary record: the two-thread merge then
    /// resolves and renders events on the merge's thread, in order (learned
    /// comms included), and hands the sink text.
    fn body_style(&self) -> Option<ftrace::printfmt::Style> {
        None
    }
}

/// Counts per input of what went in and out (`--stats`).
#[derive(Clone, Debug, Default)]
pub struct MergeStats {
    pub per_input: Vec<u64>,
    pub total: u64,
}

/// Runs the merge to the end, feeding `sink`.
pub fn merge(mut inputs: Vec<Input<'_>>, sink: &mut dyn Sink) -> Result<MergeStats> {
    // Borrowed where the cursor built it: moving the view out is a memcpy.
    let stats = drive(&mut inputs, |_, input| match &input.cursor.current() {
        Some(ev) => sink.event(input.machine, ev).map(|()| true),
        None => Ok(false),
    })?;
    sink.finish()?;
    Ok(stats)
}

/// [`merge`] on `threads` threads: 1 runs it on the caller's thread, 2 or
/// more run the sink on a second thread (the pipeline has two stages).
pub fn merge_threads(inputs: Vec<Input<'_>>, sink: &mut dyn Sink, threads: usize) -> Result<MergeStats> {
    if threads < 2 {
        return merge(inputs, sink);
    }
    parallel::merge(inputs, sink)
}

/// The heap: calls `emit` with each input whose current event is the
/// earliest (and its number), then advances it. `emit` says whether it used an event.
fn drive(inputs: &mut [Input<'_>], mut emit: impl FnMut(usize, &Input<'_>) -> Result<bool>) -> Result<MergeStats> {
    let mut heap = BinaryHeap::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        if let Some(ts) = input.cursor.ts() {
            heap.push(Reverse((ts, i)));
        }
    }
    let mut stats = MergeStats { per_input: vec![0; inputs.len()], total: 0 };
    // The top entry is replaced in place while its cursor stays the smallest
    // (runs of one CPU are common): one sift instead of a pop and a push.
    while let Some(mut top) = heap.peek_mut() {
        let Reverse((_, i)) = *top;
        let input = &mut inputs[i];
        if emit(i, input)? {
            stats.per_input[i] += 1;
            stats.total += 1;
        }
        input.cursor.advance()?;
        match input.cursor.ts() {
            Some(ts) => *top = Reverse((ts, i)),
            None => {
                std::collections::binary_heap::PeekMut::pop(top);
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Body, Payload, Record};

    /// A cursor over owned (ts, cpu, body) triples, for tests.
    pub struct VecCursor {
        pub events: Vec<(u64, u32, String)>,
        pub pos: usize,
    }

    impl Cursor for VecCursor {
        fn current(&self) -> Option<EventView<'_>> {
            let (ts, cpu, body) = self.events.get(self.pos)?;
            Some(EventView {
                ts: *ts,
                orig_ts: None,
                placed: Default::default(),
                cpu: *cpu,
                payload: Payload::Event(Record {
                    pid: 1,
                    tgid: None,
                    comm: "t",
                    system: "test",
                    name: "ev",
                    body: Body::Text(body),
                }),
            })
        }
        fn advance(&mut self) -> Result<()> {
            self.pos += 1;
            Ok(())
        }
    }

    struct Collect(Vec<(usize, u64, String)>);
    impl Sink for Collect {
        fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
            let mut b = Vec::new();
            if let Payload::Event(r) = ev.payload {
                r.body.render(ftrace::printfmt::Style::TraceCmd, &mut b);
            }
            self.0.push((machine, ev.ts, String::from_utf8(b).unwrap()));
            Ok(())
        }
    }

    #[test]
    fn merges_in_order_ties_by_input() {
        let a = VecCursor { events: vec![(1, 0, "a1".into()), (5, 0, "a5".into()), (5, 0, "a5b".into())], pos: 0 };
        let b = VecCursor { events: vec![(0, 1, "b0".into()), (5, 1, "b5".into()), (9, 1, "b9".into())], pos: 0 };
        let mut sink = Collect(Vec::new());
        let stats = merge(
            vec![Input { machine: 0, cursor: Box::new(a), meta: None }, Input { machine: 1, cursor: Box::new(b), meta: None }],
            &mut sink,
        )
        .unwrap();
        let order: Vec<&str> = sink.0.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(order, ["b0", "a1", "a5", "a5b", "b5", "b9"]);
        assert_eq!(stats.per_input, vec![3, 3]);
    }
}
