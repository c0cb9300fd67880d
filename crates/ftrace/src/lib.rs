//! `ftrace`: pure bytes → borrowed views of ftrace data. No OS calls, so every
//! parser here can be fuzzed.
//!
//! Pipeline position: this crate is the *sources* stage. It knows nothing of
//! guests, hosts or merging; `tscmerge` builds on it.
//!
//! - [`bytes`]: the checked cursor every parser reads through, endianness.
//! - [`format`]: tracefs `format`, `header_page`, `header_event` files.
//! - [`printfmt`]: the `print fmt:` language, compiled once per event.
//! - [`ring`]: ring-buffer pages as the kernel writes them (`trace_pipe_raw`).
//! - [`tracedat`]: trace-cmd's `trace.dat`, versions 6 and 7.
//! - [`text`]: tracefs `trace`/`trace_pipe` text and `trace-cmd report` output.
//! - [`write`]: a trace.dat v6/v7 writer (none, zstd, zlib).
//! - [`put`]: appending the small pieces of rendered lines.

pub mod budget;
pub mod bytes;
mod error;
pub mod format;
pub mod pidmap;
pub mod printfmt;
pub mod put;
pub mod ring;
pub mod text;
pub mod tracedat;
pub mod write;

pub use bytes::{Endian, FileOffset, Reader};
pub use error::{Error, Result};
