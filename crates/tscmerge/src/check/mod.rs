//! Proving a merge: every converted guest event must fall inside a window in
//! which its vCPU's host thread could have been running guest code.
//!
//! Windows come from the host's own events, in the merged stream:
//! - `kvm_entry` opens a window that the thread's next host event closes
//!   (normally `kvm_exit`; a vCPU thread in guest mode emits nothing, so any
//!   event of the thread means it has left the guest) — VMX/SVM hosts;
//! - `kvm_emulate_insn` opens a window until the thread's next host event:
//!   on hosts that emulate guest code (PVM here, real-mode guests) a guest
//!   instruction such as `rdtsc` executes between the two ("truth windows").
//!   A guest marker that reports a TSC read (`rdtsc seq=N` / `rdmsr seq=N`,
//!   written by the micro-VM monitor) fits only the emulation of that same
//!   instruction. An `rdmsr` emulation is a TSC-read window only when the
//!   thread's next host event is `kvm_msr` reading IA32_TSC (`msr_read 10`),
//!   fired ~200 cycles after the read; that event's value must equal the
//!   guest's (its TSC stamp), else the report counts a value mismatch.
//!
//! The merge is time-ordered and host events win ties, so a guest event is
//! inside iff its thread's window is open when the event arrives. The check
//! is a [`Sink`] that keeps one state per host thread and per guest CPU:
//! memory grows with threads and CPUs, not events (an `rdmsr` read waits,
//! alone, for its window's `kvm_msr`).

mod windows;

pub(crate) use windows::entry_vcpu;
pub use windows::{CheckConfig, CheckReport, CheckSink, GuestCpuReport, ValueMismatch, Violation, VmThreads, WindowKind};
