//! tracefs `trace`/`trace_pipe` text and `trace-cmd report` output → borrowed
//! records. This is a *source*: it turns text into (cpu, ts, event, body)
//! without interpreting the bodies, except for the few typed parsers in
//! [`fields`].
//!
//! Inputs, recognised by content ([`TextReader::kind`], [`sniff`]):
//! - tracefs `trace` with its `#` header, or `trace_pipe` without one; with or
//!   without irq-info flags (`d..2.`) and the TGID column; integer timestamps
//!   (counter clocks, x86-tsc) or `secs.usecs` (nanosecond clocks);
//! - `trace-cmd report` (3.x): `cpus=N` first, comm `%16s`, timestamp glued
//!   to `[cpu]`, event names padded to 20 columns, `-t` (9 fractional
//!   digits), `-l` (latency flags), `--ts-diff`, and several buffers (each
//!   line of an instance starts with `name: `, see [`TextLine::buffer`]).
//!
//! Not handled: tracefs latency-format (`options/latency-format`, relative
//! times), `options/context-info` off, raw/hex/bin output, trace-cmd's
//! `--debug` suffixes. Those lines are reported as errors with their number.
//!
//! ```
//! use ftrace::text::{parse_write_tsc_offset, TextReader, TextRecord};
//! let text = "# tracer: nop\n\
//!     python3-4617    [000] d..1. 669436235315: kvm_write_tsc_offset: vcpu=0 prev=0 next=18446743404273366793\n";
//! let mut r = TextReader::new(text.as_bytes())?;
//! while let Some(rec) = r.next_record()? {
//!     if let TextRecord::Event(l) = rec {
//!         let w = parse_write_tsc_offset(l.body).unwrap();
//!         assert_eq!((l.cpu, l.ts.as_count(), w.next as i64), (0, Some(669436235315), -669436184823));
//!     }
//! }
//! # Ok::<(), ftrace::Error>(())
//! ```

mod fields;
mod line;
mod reader;

pub use fields::{field, fields, parse_print, parse_write_tsc_offset, WriteTscOffset};
pub use line::{TextLine, TextRecord, TextTs};
pub use reader::{sniff, TextHeader, TextKind, TextReader, MAX_LINE};
