//! Where data goes: stdout, or a file written under an unguessable
//! temporary name ([`safefs::AtomicFile`]) and renamed into place only when
//! complete, so an interrupted run never leaves a file that looks whole, nor
//! a temporary file.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use safefs::AtomicFile;

pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<AtomicFile>),
}

impl Output {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Output> {
        Ok(match path {
            None => Output::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
            Some(dest) => Output::File(BufWriter::with_capacity(1 << 20, AtomicFile::create(dest)?)),
        })
    }

    pub fn name(&self) -> String {
        match self {
            Output::Stdout(_) => "<stdout>".into(),
            Output::File(w) => w.get_ref().dest().display().to_string(),
        }
    }

    /// Flushes and, for a file, renames it into place. Not reached (an
    /// error, a signal): the temporary file is removed.
    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Stdout(mut w) => Ok(w.flush()?),
            Output::File(w) => {
                let dest = w.get_ref().dest().to_path_buf();
                let f = w.into_inner().map_err(|e| anyhow::Error::new(e.into_error()).context(format!("writing {}", dest.display())))?;
                Ok(f.commit()?)
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.write_all(buf),
            Output::File(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(w) => w.flush(),
        }
    }
}

/// Refuses an `-o` that is one of a merge's inputs (host, guest or KVM
/// debugfs file), before any work.
pub fn refuse_input_as_output(dest: &Path, spec: &tscmerge::plan::MergeSpec, debugfs: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let inputs = spec.hosts.iter().chain(spec.guests.iter().flat_map(|g| g.files.iter())).chain(debugfs);
    Ok(safefs::refuse_input_as_output(dest, inputs.map(|p| p.as_path())).map_err(|e| anyhow::Error::new(e).context("-o"))?)
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
