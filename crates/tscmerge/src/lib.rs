//! `tscmerge`: the domain. Data flows one way:
//!
//! ```text
//! source (open any input) → clock (offset timeline, guest→host) → merge (k-way) → sink
//! ```
//!
//! The `clock` module is the only place where guest and host time meet;
//! `plan` wires a merge together from the user's inputs.

pub mod check;
pub mod clock;
mod error;
pub mod event;
pub mod explain;
pub mod merge;
pub mod plan;
pub mod runs;
pub mod sink;
pub mod source;
pub mod synth;
pub mod time;

pub use error::{Error, Result};
pub use event::{Body, Cursor, EventView, Payload, Record};
pub use time::{Cpu, GuestTsc, HostTsc, VcpuId};
