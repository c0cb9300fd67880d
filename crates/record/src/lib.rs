//! `record`: the Linux recording engine behind `tscmerge record` (issue 4).
//!
//! Pipeline position: produces inputs. It writes a self-describing raw
//! directory ([`rawdir`]) that the `tscmerge` sources read and later convert
//! to trace.dat. Linux only; needs root for tracefs and debugfs.
//!
//! - [`tracefs`]: find or mount tracefs/debugfs; [`TracefsState`] snapshot/diff.
//! - [`instance`]: our own tracefs instances (clock, events, options), removed on drop.
//! - [`capture`]: per-CPU `trace_pipe_raw` → `cpuN.raw` threads (splice).
//! - [`kvm`]: KVM debugfs tsc-offset snapshots and `processes.txt`.
//! - [`tsc`]: TSC frequency (perf mmap page or /proc/cpuinfo).
//! - [`lock`], [`signal`]: one recorder at a time; SIGINT/SIGTERM → flag.
//! - [`todat`]: the raw directory → one trace.dat v7.
//! - [`recorder`]: [`Recorder::start`] / [`Recorder::stop`] tying it together.

pub mod capture;
mod error;
pub mod instance;
pub mod kvm;
pub mod leftovers;
pub mod lock;
pub mod rawdir;
pub mod recorder;
pub mod signal;
pub mod sys;
pub mod todat;
pub mod tracefs;
pub mod tsc;

pub use capture::{Capture, CpuCaptureEnd, CpuCounters};
pub use error::{Error, Result};
pub use instance::{CpuStats, EventName, Instance};
pub use kvm::{snapshot_kvm_debugfs, KvmSampler, KvmVcpuSnapshot, Processes};
pub use leftovers::{Journal, Leftovers};
pub use lock::{RecordLock, DEFAULT_LOCK_PATH};
pub use rawdir::Meta;
pub use recorder::{InstanceConfig, RecordConfig, RecordSummary, Recorder};
pub use tracefs::{Tracefs, TracefsState};
pub use tsc::{tsc_frequency, TscFreq, TscSource};
