use std::path::PathBuf;

/// Every error a parser in this crate can return. Each names where in the
/// input it happened (byte offset or line) and what was expected; callers
/// that know the file wrap it with [`Error::in_file`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data ended before a read of `needed` bytes at `offset`.
    #[error("byte {offset}: truncated: expected {needed} more bytes for {what}")]
    Truncated { offset: u64, needed: u64, what: &'static str },
    /// A value at `offset` is not what the format allows.
    #[error("byte {offset}: {what}")]
    Invalid { offset: u64, what: String },
    /// A text input (format file, tracefs text) is malformed at `line` (1-based).
    #[error("line {line}: {what}")]
    Line { line: u64, what: String },
    /// A compressed block could not be inflated.
    #[error("byte {offset}: {codec} decompression failed: {what}")]
    Decompress { offset: u64, codec: &'static str, what: String },
    /// A size the input declares does not fit in the memory budget
    /// ([`crate::budget`]).
    #[error("byte {offset}: {what} declares {want} bytes; with {others} bytes in use elsewhere that exceeds the {limit}-byte memory budget (tscmerge --max-memory raises it)")]
    Budget { offset: u64, what: &'static str, want: u64, others: u64, limit: u64 },
    /// Reading the underlying file failed.
    #[error("{what}: {source}")]
    Io { what: String, #[source] source: std::io::Error },
    /// An error inside a named file.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, #[source] source: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(offset: u64, what: impl Into<String>) -> Error {
        Error::Invalid { offset, what: what.into() }
    }

    pub fn line(line: u64, what: impl Into<String>) -> Error {
        Error::Line { line, what: what.into() }
    }

    /// Attaches the file name, once; an error already naming a file keeps it.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        match self {
            e @ Error::File { .. } => e,
            e => Error::File { path: path.into(), source: Box::new(e) },
        }
    }
}
