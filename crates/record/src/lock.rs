//! The recorder's lock: `flock(2)` on a file holding the owner's pid, so a
//! second `tscmerge record` refuses clearly and a stale instance can be told
//! apart from a running recorder. The kernel drops the lock when the process
//! dies, so a crash never leaves it held.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where `tscmerge record` locks by default.
pub const DEFAULT_LOCK_PATH: &str = "/run/tscmerge-record.lock";

/// A held lock; released on drop (the file stays, holding a stale pid).
#[derive(Debug)]
pub struct RecordLock {
    file: File,
    path: PathBuf,
}

fn read_pid(f: &mut File) -> Option<i32> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("opening lock file", path, e))
}

fn try_flock(f: &File) -> std::io::Result<bool> {
    // SAFETY: valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl RecordLock {
    /// Take the lock or fail with [`Error::Locked`] naming the holder's pid.
    pub fn acquire(path: &Path) -> Result<RecordLock> {
        let mut file = open(path)?;
        if !try_flock(&file).map_err(|e| Error::io("locking", path, e))? {
            return Err(Error::Locked {
                path: path.to_path_buf(),
                pid: read_pid(&mut file),
            });
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"))
            .map_err(|e| Error::io("writing pid to lock file", path, e))?;
        Ok(RecordLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock at `path`, in words, for error messages about a
/// leftover instance.
pub fn describe_holder(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("no tscmerge record holds {} (absent), so a previous one crashed or another tool made it", path.display());
    };
    let pid = read_pid(&mut f);
    match try_flock(&f) {
        Ok(true) => format!(
            "no tscmerge record holds {}, so a previous one crashed or another tool made it",
            path.display()
        ),
        _ if pid == Some(std::process::id() as i32) => format!(
            "this process holds {}, so no other tscmerge record runs: a previous one crashed or another tool made it",
            path.display()
        ),
        _ => match pid {
            Some(p) => format!("another tscmerge record may be running (pid {p} holds {})", path.display()),
            None => format!("another tscmerge record may be running ({} is locked)", path.display()),
        },
    }
}

impl Drop for RecordLock {
    fn drop(&mut self) {
        // SAFETY: valid fd; closing would release it anyway, this makes it explicit.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_refuses_with_pid_and_release_works() {
        let p = std::env::temp_dir().join(format!("record_test_lock_{}", std::process::id()));
        let a = RecordLock::acquire(&p).unwrap();
        let e = RecordLock::acquire(&p).unwrap_err();
        let me = std::process::id() as i32;
        assert!(
            matches!(e, Error::Locked { pid: Some(x), .. } if x == me),
            "{e}"
        );
        assert!(describe_holder(&p).starts_with("this process holds"));
        drop(a);
        assert!(describe_holder(&p).starts_with("no tscmerge record holds"));
        let b = RecordLock::acquire(&p).unwrap();
        drop(b);
        std::fs::remove_file(&p).unwrap();
    }
}
