//! The safefs error type: every variant names the file it is about.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors at the file-system edge.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The output names an existing directory.
    #[error("output {} is a directory; expected a file name", .dest.display())]
    OutputIsDirectory {
        /// The destination as given.
        dest: PathBuf,
    },
    /// The output is one of the inputs (same device and inode).
    #[error("output {} is the input {} (same file); write to another name", .dest.display(), .input.display())]
    OutputIsInput {
        /// The destination as given.
        dest: PathBuf,
        /// The input it names.
        input: PathBuf,
    },
    /// The temporary file beside the destination could not be created.
    #[error("output {}: cannot create a temporary file in {}: {source}", .dest.display(), .dir.display())]
    CreateTemp {
        /// The destination as given.
        dest: PathBuf,
        /// The directory the temporary file was to be made in.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing, flushing or syncing the temporary file failed.
    #[error("output {} (written as {}): {source}", .dest.display(), .tmp.display())]
    Write {
        /// The destination.
        dest: PathBuf,
        /// The temporary file (removed).
        tmp: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Renaming the complete temporary file onto the destination failed.
    #[error("output {}: cannot rename the complete file {} onto it (removed): {source}", .dest.display(), .tmp.display())]
    Rename {
        /// The destination.
        dest: PathBuf,
        /// The temporary file (removed).
        tmp: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file that must be a regular file is something else.
    #[error("{} is {kind}, not a regular file; refused as {what}", .path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// "a FIFO (named pipe)", "a character device", ...
        kind: &'static str,
        /// What the file was to be.
        what: &'static str,
    },
    /// A file is larger than its cap.
    #[error("{}: more than {cap} bytes, the most read for {what}", .path.display())]
    TooBig {
        /// The path.
        path: PathBuf,
        /// The cap in bytes.
        cap: u64,
        /// What the file was to be.
        what: &'static str,
    },
    /// Reading a file failed.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An input could not be examined.
    #[error("{}: {source}", .path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl From<Error> for io::Error {
    /// For callers whose writers speak `io::Result`: the kind is kept where
    /// there is one, and the message names the file.
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::CreateTemp { source, .. } | Error::Write { source, .. } | Error::Rename { source, .. } | Error::Stat { source, .. } | Error::Read { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}
