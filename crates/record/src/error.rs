//! The record crate's error type: every variant names the path it was about and,
//! where a person has to act, what to do.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the recording engine.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither tracefs location is mounted and mounting failed.
    #[error("tracefs is not mounted at {} and mounting it failed: {}; run as root or `mount -t tracefs nodev {}`", .primary.display(), .reason, .primary.display())]
    NoTracefs {
        /// `<root>/sys/kernel/tracing`.
        primary: PathBuf,
        /// Every attempt, e.g. `EPERM (mount tracefs at ...)`, joined with "; ".
        reason: String,
    },
    /// debugfs is not mounted and mounting failed.
    #[error("debugfs is not mounted at {} and mounting it failed: {}; run as root or `mount -t debugfs nodev {}`", .path.display(), .errno, .path.display())]
    NoDebugfs {
        /// `<root>/sys/kernel/debug`.
        path: PathBuf,
        /// errno name.
        errno: String,
    },
    /// The instance directory already exists.
    #[error("an instance named {name} exists: {holder}; remove it with `rmdir {}`", .path.display())]
    InstanceExists {
        /// Instance name.
        name: String,
        /// Its directory.
        path: PathBuf,
        /// Who may own it, from the lock file.
        holder: String,
    },
    /// The wanted trace clock is not offered by the kernel.
    #[error("trace clock {wanted:?} is not available in {}; available clocks: {available}", .path.display())]
    ClockUnavailable {
        /// Requested clock.
        wanted: String,
        /// The trace_clock file.
        path: PathBuf,
        /// Space-separated clocks the kernel offers.
        available: String,
    },
    /// The event does not exist in this kernel (or its module is not loaded).
    #[error("event {event} does not exist: no {} (is its module loaded? e.g. `modprobe kvm`)", .path.display())]
    NoSuchEvent {
        /// `system:name`.
        event: String,
        /// The directory looked for.
        path: PathBuf,
    },
    /// Another recorder holds the lock.
    #[error("another tscmerge record is running: {} is locked{}", .path.display(), match .pid { Some(p) => format!(" by pid {p}"), None => String::new() })]
    Locked {
        /// Lock file.
        path: PathBuf,
        /// Pid written in it, when readable.
        pid: Option<i32>,
    },
    /// A name given by the caller cannot be used (instance, event, clock).
    #[error("invalid {what} {value:?}: {why}")]
    BadName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The output directory is not usable.
    #[error("output directory {} {why}", .path.display())]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `Recorder::start` saw the interrupt flag and undid what it had done.
    #[error("interrupted while starting the recording (everything set up so far was removed)")]
    Interrupted,
    /// A capture thread panicked.
    #[error("the capture thread of {instance} cpu{cpu} panicked")]
    ThreadPanic {
        /// Instance name.
        instance: String,
        /// CPU.
        cpu: u32,
    },
    /// An OS call on a path failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What we were doing ("writing", "reading", "creating instance", ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a trace.dat failed (`todat`).
    #[error("writing trace.dat from {}: {source}", .path.display())]
    Write {
        /// The file being read or written.
        path: PathBuf,
        /// The writer's error.
        #[source]
        source: ftrace::Error,
    },
    /// At the file-system edge: an output that could not be created,
    /// written or renamed into place; a side file refused by type or size.
    #[error(transparent)]
    Fs(#[from] safefs::Error),
    /// A file we read had unexpected content.
    #[error("{}: line {line}: {what}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was expected.
        what: String,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
