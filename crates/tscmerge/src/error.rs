use std::path::PathBuf;

/// Errors of the tscmerge domain. Messages are sentences a user can act on:
/// they name the input, the guest, the vCPU, and the fix where there is one.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ftrace::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// At the file-system edge: an output that could not be created,
    /// written or renamed into place; a side file refused by type or size.
    #[error(transparent)]
    Fs(#[from] safefs::Error),
    /// A buffer's clock is not one whose timestamps are TSC cycles.
    #[error("{input}: buffer {buffer:?} uses the '{clock}' trace clock; merging needs 'x86-tsc' on host and guests (echo x86-tsc > trace_clock before recording)")]
    WrongClock { input: String, buffer: String, clock: String },
    /// No `kvm_write_tsc_offset` for a guest's vCPU.
    #[error("guest {guest}: no TSC offset is known for vCPU {vcpu}: record the host's kvm:kvm_write_tsc_offset in its own instance before the guest boots, or pass --tsc-offset {vcpu}=OFFSET")]
    NoOffset { guest: String, vcpu: u32 },
    /// A guest event earlier than the first offset known for its vCPU.
    #[error("guest {guest}: an event on vCPU {vcpu} at guest TSC {guest_ts} converts to host TSC {host_ts}, before the first offset write recorded for that vCPU (host TSC {first_write}): the offset instance was probably started after the guest booted; record it before the guest boots, or pass --tsc-offset {vcpu}=OFFSET")]
    BeforeFirstOffset { guest: String, vcpu: u32, guest_ts: u64, host_ts: u64, first_write: u64 },
    /// The inputs cannot be merged as asked (unknown guest, ambiguous VM, no offsets...).
    #[error("{0}")]
    Usage(String),
    /// The sink's thread stopped early; its own error is the one reported.
    #[error("the output stage stopped")]
    SinkStopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
