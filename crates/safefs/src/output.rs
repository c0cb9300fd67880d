//! Outputs written whole or not at all, and never through a planted link.

use std::fs::{File, Permissions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::cleanup::Registration;
use crate::error::{Error, Result};

/// An output file under construction. It is written under a random name in
/// the destination's directory, created with `O_CREAT|O_EXCL` (the `tempfile`
/// crate), which fails on any existing name, a symbolic link included (open(2):
/// "If O_CREAT and O_EXCL are set, ... symbolic links are not followed"), so a
/// link planted by another user is never written through. [`AtomicFile::commit`]
/// syncs it and renames it onto the destination; dropped before that (an error,
/// a panic), it is removed, and a signal removes it too (see
/// [`crate::install_cleanup_handlers`]).
pub struct AtomicFile {
    file: File,
    // Field order: the registration goes before the file is removed, so a
    // signal in between unlinks a name that no longer exists (harmless)
    // rather than a later file of the same name.
    reg: Registration,
    tmp: TempPath,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `dest`. An existing directory at `dest`
    /// is refused here, before any work.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        if dest.is_dir() {
            return Err(Error::OutputIsDirectory { dest: dest.to_path_buf() });
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(dest.file_name().unwrap_or_default());
        prefix.push(".");
        let named = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            // As File::create: 0666 less the umask (tempfile's default, 0600,
            // would make outputs unreadable to the group that reads them now).
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|source| Error::CreateTemp { dest: dest.to_path_buf(), dir: dir.to_path_buf(), source })?;
        let (file, tmp) = named.into_parts();
        let reg = Registration::new(&tmp);
        Ok(AtomicFile { file, reg, tmp, dest: dest.to_path_buf() })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Where the bytes go until [`AtomicFile::commit`].
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Syncs the file and renames it onto the destination. On failure the
    /// temporary file is removed and the error names both.
    pub fn commit(self) -> Result<()> {
        self.commit_inner(true)
    }

    /// As [`AtomicFile::commit`] without the fsync: for the many small side
    /// files of a directory that is itself only a step towards the output
    /// (`record`'s raw capture), where a sync each costs more than it saves.
    pub fn commit_unsynced(self) -> Result<()> {
        self.commit_inner(false)
    }

    fn commit_inner(self, sync: bool) -> Result<()> {
        let AtomicFile { file, reg, tmp, dest } = self;
        if sync {
            if let Err(source) = file.sync_all() {
                return Err(Error::Write { dest, tmp: tmp.to_path_buf(), source });
            }
        }
        drop(file);
        let tmp_name = tmp.to_path_buf();
        // The registration ends once the name is gone (renamed or removed).
        let r = tmp.persist(&dest);
        drop(reg);
        // On failure PathPersistError holds the TempPath, whose drop removes it.
        r.map_err(|e| {
            let source = if dest.is_dir() { io::Error::new(io::ErrorKind::IsADirectory, "it is a directory") } else { e.error };
            Error::Rename { dest, tmp: tmp_name, source }
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Refuses `dest` when it exists and is one of `inputs` (same device and
/// inode: another name, a hard link or a symbolic link to it count). A `dest`
/// that does not exist yet is no input. Inputs that cannot be examined are
/// left to the reader, which names them.
pub fn refuse_input_as_output<'a>(dest: &Path, inputs: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    let Ok(d) = std::fs::metadata(dest) else { return Ok(()) };
    for input in inputs {
        if let Ok(m) = std::fs::metadata(input) {
            if m.dev() == d.dev() && m.ino() == d.ino() {
                return Err(Error::OutputIsInput { dest: dest.to_path_buf(), input: input.to_path_buf() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("safefs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn commit_renames_and_leaves_nothing_else() {
        let d = dir("commit");
        let mut f = AtomicFile::create(&d.join("out")).unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(names(&d).len(), 1);
        assert!(f.tmp_path().starts_with(&d));
        f.commit().unwrap();
        assert_eq!(names(&d), ["out"]);
        assert_eq!(std::fs::read(d.join("out")).unwrap(), b"hello");
    }

    #[test]
    fn dropped_file_is_removed() {
        let d = dir("drop");
        let mut f = AtomicFile::create(&d.join("out")).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
    }

    #[test]
    fn failed_rename_removes_the_temporary_and_names_the_directory() {
        let d = dir("rename");
        let dest = d.join("out");
        let f = AtomicFile::create(&dest).unwrap();
        // The destination turns into a non-empty directory while we write.
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("x"), b"").unwrap();
        let e = f.commit().unwrap_err();
        assert!(matches!(e, Error::Rename { .. }), "{e}");
        assert!(e.to_string().contains(&*dest.to_string_lossy()) && e.to_string().contains("directory"), "{e}");
        assert_eq!(names(&d), ["out"]);
    }

    #[test]
    fn existing_directory_refused_up_front() {
        let d = dir("isdir");
        let e = AtomicFile::create(&d).err().unwrap();
        assert!(matches!(e, Error::OutputIsDirectory { .. }), "{e}");
    }

    #[test]
    fn input_as_output_by_inode() {
        let d = dir("inode");
        let a = d.join("a");
        std::fs::write(&a, b"x").unwrap();
        std::os::unix::fs::symlink(&a, d.join("link")).unwrap();
        let e = refuse_input_as_output(&d.join("link"), [a.as_path()]).unwrap_err();
        assert!(e.to_string().contains("link") && e.to_string().contains(&*a.to_string_lossy()), "{e}");
        assert!(refuse_input_as_output(&d.join("new"), [a.as_path()]).is_ok());
    }
}
