//! What flows between stages: a borrowed view of one event, handed out by a
//! [`Cursor`] and valid until the cursor advances. Bodies stay undecoded
//! (`Body::Raw`) until a sink asks for them.

use ftrace::format::{EventFormat, FieldValue};
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
    /// Whether advancing it reads another input ahead (a guest cursor whose
    /// clock asks the host's run windows, [`crate::runs`]): work on the
    /// merge's thread that the two-thread merge balances.
    fn reads_ahead(&self) -> bool {
        false
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

// Field access for sinks and analyses: typed from the format for binary
// records, from `key=value` pairs for text.

/// One field of an event, as far as the source let us type it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldVal<'a> {
    Int(i64),
    Uint(u64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// Calls `f` with each non-common field of `r`: from the format for binary
/// records, from the `key=value` pairs of the text otherwise (decimal numbers
/// become integers, anything else stays a string). Returns how many fields.
pub fn for_each_field<'a>(r: &Record<'a>, mut f: impl FnMut(&'a str, FieldVal<'a>)) -> usize {
    let mut n = 0;
    match r.body {
        Body::Text(_) | Body::Rendered(_) => {
            for (k, v) in ftrace::text::fields(r.body.text().unwrap_or("")) {
                let val = if let Ok(u) = v.parse::<u64>() {
                    FieldVal::Uint(u)
                } else if let Ok(i) = v.parse::<i64>() {
                    FieldVal::Int(i)
                } else {
                    FieldVal::Str(v)
                };
                f(k, val);
                n += 1;
            }
        }
        Body::Raw { format, data, ctx } => {
            for fl in format.fields.iter().filter(|fl| !fl.is_common()) {
                let val = match fl.value(data, ctx.endian) {
                    Some(FieldValue::Signed(i)) => FieldVal::Int(i),
                    Some(FieldValue::Unsigned(u)) => FieldVal::Uint(u),
                    Some(FieldValue::Str(s)) => match std::str::from_utf8(s) {
                        Ok(s) => FieldVal::Str(s),
                        Err(_) => FieldVal::Bytes(s),
                    },
                    Some(FieldValue::Bytes(b)) => FieldVal::Bytes(b),
                    None => continue,
                };
                f(&fl.name, val);
                n += 1;
            }
        }
    }
    n
}

/// The integer value of field `key` of `r` (any width, sign kept as two's complement).
pub fn field_int(r: &Record<'_>, key: &str) -> Option<i64> {
    match r.body {
        Body::Text(_) | Body::Rendered(_) => ftrace::text::field(r.body.text()?, key)
            .and_then(|v| v.parse::<i64>().ok().or_else(|| v.parse::<u64>().ok().map(|u| u as i64))),
        Body::Raw { format, data, ctx } => match format.field(key)?.value(data, ctx.endian)? {
            FieldValue::Signed(i) => Some(i),
            FieldValue::Unsigned(u) => Some(u as i64),
            _ => None,
        },
    }
}

/// The string value of field `key` of `r` (binary: a char array; text: the value).
pub fn field_str<'a>(r: &Record<'a>, key: &str) -> Option<&'a str> {
    match r.body {
        Body::Text(_) | Body::Rendered(_) => ftrace::text::field(r.body.text()?, key),
        Body::Raw { format, data, ctx } => match format.field(key)?.value(data, ctx.endian)? {
            FieldValue::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        },
    }
}

/// The name of softirq vector `vec` as `irq:softirq_entry` prints it
/// (include/trace/events/irq.h `show_softirq_name`, the vectors of
/// include/linux/interrupt.h), `None` past them.
pub fn softirq_name(vec: i64) -> Option<&'static str> {
    const NAMES: [&str; 10] = ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];
    usize::try_from(vec).ok().and_then(|v| NAMES.get(v)).copied()
}

/// Parses the `prev_state` text of sched_switch (`S`, `R+`, `D|K`...) into
/// the kernel's bits (include/trace/events/sched.h `__trace_sched_switch_state`:
/// the letters are TASK_REPORT bits, `+` is TASK_REPORT_MAX = 0x100 on 6.x).
pub fn prev_state_bits(s: &str) -> i64 {
    let mut v = 0;
    for c in s.chars() {
        v |= match c {
            'S' => 0x1,
            'D' => 0x2,
            'T' => 0x4,
            't' => 0x8,
            'X' => 0x10,
            'Z' => 0x20,
            'P' => 0x40,
            'I' => 0x80,
            '+' => 0x100,
            _ => 0,
        };
    }
    v
}
