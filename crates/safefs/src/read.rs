//! Side files (a raw capture's header_page, meta.txt, format files, ...,
//! `--kvm-debugfs` snapshots) read whole, but only when they are what they
//! claim to be: a regular file of bounded size. `/dev/zero` or
//! `/dev/urandom` behind a name would otherwise be read until memory runs
//! out, and a FIFO would block the open forever (fifo(7)).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The default cap for a side file: well above the largest real one
/// (`/proc/kallsyms` of a distribution kernel, ~10-20 MB), well below
/// memory trouble.
pub const SIDE_FILE_CAP: u64 = 64 << 20;

/// First read size: some tracefs files answer only the first read(2) and
/// return 0 for any later offset (kernel/trace/trace_events.c
/// `show_header_page_file`, `show_header_event_file`: `if (*ppos) return 0`),
/// so they must come in one read; a 32-byte first probe would truncate them.
const FIRST_READ: usize = 64 * 1024;

/// What a non-regular file is, for messages; `None` for a regular file.
/// Directories are left to the caller (some inputs are directories).
pub fn special_kind(md: &Metadata) -> Option<&'static str> {
    let t = md.file_type();
    if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

fn refuse_special(path: &Path, md: &Metadata, what: &'static str) -> Result<()> {
    if let Some(kind) = special_kind(md) {
        return Err(Error::NotRegular { path: path.to_path_buf(), kind, what });
    }
    if md.is_dir() {
        return Err(Error::NotRegular { path: path.to_path_buf(), kind: "a directory", what });
    }
    Ok(())
}

/// Reads the regular file `path` (symbolic links followed) whole, refusing
/// FIFOs, devices, sockets and directories by type and anything larger than
/// `cap` bytes. Pseudo files (procfs, tracefs) are regular files that report
/// size 0: the cap is enforced on the bytes read, not on the reported size.
/// `what` says what the file is for, in messages ("side file of a raw capture").
pub fn read_capped(path: &Path, cap: u64, what: &'static str) -> Result<Vec<u8>> {
    let read_err = |source| Error::Read { path: path.to_path_buf(), source };
    // Refuse by type before opening: opening a device can act on it, and
    // opening a FIFO blocks until a writer comes.
    let md = std::fs::metadata(path).map_err(read_err)?;
    refuse_special(path, &md, what)?;
    // O_NONBLOCK: should the name become a FIFO between the stat and the
    // open, the open returns at once and the fstat below refuses it.
    let f: File = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(read_err)?;
    refuse_special(path, &f.metadata().map_err(read_err)?, what)?;
    if md.len() > cap {
        return Err(Error::TooBig { path: path.to_path_buf(), cap, what });
    }
    let mut v = Vec::with_capacity(FIRST_READ.min(usize::try_from(cap).unwrap_or(usize::MAX)).max(1));
    (&f).take(cap.saturating_add(1)).read_to_end(&mut v).map_err(read_err)?;
    if v.len() as u64 > cap {
        return Err(Error::TooBig { path: path.to_path_buf(), cap, what });
    }
    Ok(v)
}

/// [`read_capped`], with `Ok(None)` for a file that does not exist.
pub fn read_capped_opt(path: &Path, cap: u64, what: &'static str) -> Result<Option<Vec<u8>>> {
    match read_capped(path, cap, what) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuses a main input that is a FIFO, device or socket, with a message
/// that says what to do instead (inputs are mapped or read more than once,
/// so a stream cannot be one). Directories and regular files pass.
pub fn refuse_special_input(path: &Path, md: &Metadata) -> Result<()> {
    match special_kind(md) {
        Some(kind) => Err(Error::NotRegular { path: path.to_path_buf(), kind, what: "an input (inputs are read more than once: save a stream to a file first, e.g. `cat PIPE > FILE`)" }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("safefs-read-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn device_behind_a_link_is_refused_by_type() {
        let d = dir("dev");
        let p = d.join("header_page");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read_capped(&p, SIDE_FILE_CAP, "a side file").unwrap_err();
        assert!(e.to_string().contains("header_page") && e.to_string().contains("character device"), "{e}");
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = dir("fifo");
        let p = d.join("meta.txt");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_capped(&p, SIDE_FILE_CAP, "a side file").unwrap_err();
        assert!(e.to_string().contains("meta.txt") && e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn cap_is_enforced_on_bytes_read() {
        let d = dir("cap");
        let p = d.join("saved_cmdlines");
        std::fs::write(&p, vec![b'x'; 101]).unwrap();
        let e = read_capped(&p, 100, "a side file").unwrap_err();
        assert!(e.to_string().contains("saved_cmdlines") && e.to_string().contains("100 bytes"), "{e}");
        assert_eq!(read_capped(&p, 101, "a side file").unwrap().len(), 101);
        // A pseudo file reports size 0 and is still capped.
        assert!(matches!(read_capped(Path::new("/proc/self/maps"), 10, "a side file"), Err(Error::TooBig { .. })));
        assert!(read_capped_opt(&d.join("absent"), 1, "a side file").unwrap().is_none());
    }
}
