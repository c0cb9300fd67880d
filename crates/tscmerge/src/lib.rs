//! `tscmerge`: the domain. Data flows one way:
//!
//! ```text
//! source (open any input) → clock (offset timeline, guest→host) → merge (k-way) → sink
//! ```
//!
//! The `clock` module is the only place where guest and host time meet.

pub mod clock;
pub mod time;

pub use time::{Cpu, GuestTsc, HostTsc, VcpuId};
