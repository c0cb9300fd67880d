//! Real-mode KVM micro-VMs whose TSC reads give exact host-side ground truth (issue 9).
//!
//! Not part of the merge pipeline: a test bench for it. [`run`] starts N VMs × M vCPUs, each
//! vCPU a host thread running a hand-assembled real-mode loop of `rdtsc` reads
//! ([`program`]); the report gives every read's value with the host thread id and VM fd that
//! identify it in a host recording. [`write_guest_trace`] renders the reads as the tracefs
//! text a guest kernel would have written, so tscmerge can merge them with the host's trace;
//! [`host`] reads a host recording of the run and checks each read against the host
//! events that bracket it.

pub mod error;
pub mod guest_trace;
pub mod host;
pub mod program;
pub mod vmm;

pub use error::{Error, Result};
pub use guest_trace::write_guest_trace;
pub use program::ReadInsn;
pub use vmm::{
    current_tid, run, Config, DebugfsTsc, GuestRead, Insn, RunReport, VcpuReport, VmReport,
    WrmsrPlan, DEFAULT_MARKER_LEAF, MSR_IA32_TSC, MSR_IA32_TSC_ADJUST,
};
