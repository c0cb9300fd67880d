//! Where data goes: stdout, or a file written under a temporary name and
//! renamed into place only when complete, so an interrupted run never leaves
//! a file that looks whole.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    File { w: BufWriter<File>, tmp: PathBuf, dest: PathBuf, done: bool },
}

impl Output {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Output> {
        Ok(match path {
            None => Output::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
            Some(dest) => {
                let mut name = dest.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".tmp{}", std::process::id()));
                let tmp = dest.with_file_name(name);
                let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                Output::File { w: BufWriter::with_capacity(1 << 20, f), tmp, dest: dest.to_path_buf(), done: false }
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Output::Stdout(_) => "<stdout>".into(),
            Output::File { dest, .. } => dest.display().to_string(),
        }
    }

    /// Flushes and, for a file, renames it into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        match &mut self {
            Output::Stdout(w) => Ok(w.flush()?),
            Output::File { w, tmp, dest, done } => {
                w.flush()?;
                w.get_ref().sync_all()?;
                std::fs::rename(&*tmp, &*dest).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
                *done = true;
                Ok(())
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::File { tmp, done: false, .. } = self {
            // Still here: finish() was not reached; leave no partial file.
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File { w, .. } => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.write_all(buf),
            Output::File { w, .. } => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File { w, .. } => w.flush(),
        }
    }
}

/// Whether an error chain ends in EPIPE (the reader went away).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<tscmerge::Error>()
                .is_some_and(|t| matches!(t, tscmerge::Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe))
    })
}

/// A trace.dat (v7) compression as the command line names it (`synth`,
/// `merge --format dat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    Zstd,
    Zlib,
    None,
}

impl From<Codec> for ftrace::write::Compression {
    fn from(c: Codec) -> Self {
        match c {
            Codec::Zstd => Self::Zstd,
            Codec::Zlib => Self::Zlib,
            Codec::None => Self::None,
        }
    }
}
