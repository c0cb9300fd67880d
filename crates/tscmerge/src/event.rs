//! What flows between stages: a borrowed view of one event, handed out by a
//! [`Cursor`] and valid until the cursor advances. Bodies stay undecoded
//! (`Body::Raw`) until a sink asks for them.

use ftrace::format::EventFormat;
use ftrace::printfmt::{RenderCtx, Style};

/// The body of an event: text as the recorder rendered it, or the raw record
/// with the format that decodes it.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Text(&'a str),
    /// Rendered ahead, as the sink's [`crate::merge::Sink::body_style`] asked:
    /// the printer's bytes (a record's strings may hold any bytes).
    Rendered(&'a [u8]),
    Raw { format: &'a EventFormat, data: &'a [u8], ctx: &'a RenderCtx<'a> },
}

impl<'a> Body<'a> {
    /// The body as text when it is text (valid UTF-8 for a rendered one).
    pub fn text(&self) -> Option<&'a str> {
        match *self {
            Body::Text(s) => Some(s),
            Body::Rendered(b) => std::str::from_utf8(b).ok(),
            Body::Raw { .. } => None,
        }
    }

    /// Appends the body as `style` renders it; text bodies are as recorded.
    pub fn render(&self, style: Style, out: &mut Vec<u8>) {
        match *self {
            Body::Text(s) => ftrace::put::bytes(out, s.as_bytes()),
            Body::Rendered(b) => ftrace::put::bytes(out, b),
            Body::Raw { format, data, ctx } => format.render(data, ctx, style, out),
        }
    }
}

#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: &'a str,
    pub system: &'a str,
    pub name: &'a str,
    pub body: Body<'a>,
}

#[derive(Clone, Copy)]
pub enum Payload<'a> {
    Event(Record<'a>),
    /// The kernel dropped `count` events (unknown when `None`) on this CPU here.
    Lost { count: Option<u64> },
}

/// One event as the merge sees it.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    /// Timestamp on the merged (host) timeline.
    pub ts: u64,
    /// The source's own timestamp when it differs (a guest's TSC).
    pub orig_ts: Option<u64>,
    /// How a guest event's offset period was decided (clock/walk.rs):
    /// `Rule` marks an event its guest time left ambiguous and nothing in
    /// the host's run windows decided.
    pub placed: crate::clock::How,
    pub cpu: u32,
    pub payload: Payload<'a>,
}

/// A stream of events in time order: one CPU of one buffer of one input.
pub trait Cursor {
    /// The current event; `None` once the stream is exhausted.
    fn current(&self) -> Option<EventView<'_>>;
    /// The current event's timestamp alone: what the merge orders by. Cursors
    /// override it when building the whole view costs more (lookups of
    /// format, pid, comm).
    fn ts(&self) -> Option<u64> {
        self.current().map(|e| e.ts)
    }
    /// Moves to the next event.
    fn advance(&mut self) -> crate::Result<()>;
    /// The current event for the two-thread merge ([`crate::merge`]): a
    /// binary record is handed over undecoded, to be resolved on the sink's
    /// thread in output order. Cursors without binary records show the view.
    fn detached(&self) -> Option<Detached<'_>> {
        self.current().map(Detached::View)
    }
    /// The current record's own time without building it: `None` at the
    /// end, `Some(None)` for a lost-events mark (it has no time of its own),
    /// `Some(Some(ts))` for an event. A guest's cursor converts by it once
    /// per event.
    fn own_ts(&self) -> Option<Option<u64>> {
        Some(match self.detached()? {
            Detached::Raw { ts, .. } => Some(ts),
            Detached::View(EventView { payload: Payload::Lost { .. }, .. }) => None,
            Detached::View(ev) => Some(ev.ts),
        })
    }
}

/// An event on its way to the sink's thread. A binary record's comm is
/// resolved there, in order: trace-cmd learns comms from the sched events
/// rendered before it (plugin_sched_switch.c), so resolving ahead of the
/// sink would print different comms.
#[derive(Clone, Copy)]
pub enum Detached<'a> {
    View(EventView<'a>),
    Raw { ts: u64, orig_ts: Option<u64>, placed: crate::clock::How, cpu: u32, data: &'a [u8] },
}
