//! The file-system edges of tscmerge, where a file name given on the command
//! line meets the operating system.
//!
//! - [`AtomicFile`]: an output written under an unguessable name created with
//!   `O_CREAT|O_EXCL` beside its destination, renamed into place only when
//!   complete, removed on every error path and, once
//!   [`install_cleanup_handlers`] ran, on SIGINT/SIGTERM/SIGHUP.
//! - [`refuse_input_as_output`]: an output that is one of the inputs (same
//!   device and inode) is refused before any work.
//! - [`read_capped`]: side files read whole only when they are regular files
//!   no larger than a cap; FIFOs, devices and sockets refused by type.
//!
//! - [`MapGuard`]: a mapped input truncated while read ends the process
//!   with an error naming the file and byte offset, not a bare SIGBUS.
//!
//! Linux/Unix only, as the rest of tscmerge.

mod cleanup;
mod error;
mod output;
mod read;
mod sigbus;

pub use cleanup::install_cleanup_handlers;
pub use error::{Error, Result};
pub use output::{refuse_input_as_output, AtomicFile};
pub use sigbus::{MapGuard, SIGBUS_EXIT};
pub use read::{read_capped, read_capped_opt, refuse_special_input, special_kind, SIDE_FILE_CAP};
