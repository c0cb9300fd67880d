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
//!   instruction; an `rdmsr` of IA32_TSC's window ends at the `kvm_msr` the
//!   emulator fires right after reading the TSC, ~200 cycles after the read.
//!
//! The merge is time-ordered and host events win ties, so a guest event is
//! inside iff its thread's window is open when the event arrives. The check
//! is a [`Sink`] that keeps one state per host thread and per guest CPU:
//! memory grows with threads and CPUs, not events.

mod windows;

pub use windows::{CheckConfig, CheckReport, CheckSink, GuestCpuReport, Violation, VmThreads, WindowKind};
