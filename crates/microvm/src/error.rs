//! Errors of the micro-VM monitor.

/// What went wrong, with the VM/vCPU it happened on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/kvm` could not be opened: callers (tests, doctor) treat this as "no KVM here".
    #[error("cannot open /dev/kvm: {0}")]
    NoKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration is out of the supported range.
    #[error("invalid config: {0}")]
    Config(String),
    /// Guest memory could not be set up or read.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The vCPU exited for a reason the program never causes.
    #[error("vm{vm} vcpu{vcpu}: unexpected exit {reason} (after {reads} reads)")]
    UnexpectedExit {
        vm: usize,
        vcpu: u32,
        reason: String,
        reads: usize,
    },
    /// The guest's own record disagrees with what the VMM saw at the exits.
    #[error("vm{vm} vcpu{vcpu}: {what}")]
    Guest { vm: usize, vcpu: u32, what: String },
    /// A vCPU thread panicked or could not be spawned.
    #[error("vcpu thread: {0}")]
    Thread(String),
    /// Reading or writing a file (tracefs, debugfs, output).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    let what = what.into();
    move |source| Error::Kvm { what, source }
}
