//! Thin wrappers over the libc calls the recorder needs (mount, splice, poll,
//! flock, rdtsc), and tracefs-friendly file helpers.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The symbolic name of an errno (`EPERM`), or its number when unknown.
pub fn errno_name(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return e.to_string();
    };
    let s = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        _ => return format!("errno {n}"),
    };
    s.to_string()
}

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Mount a pseudo filesystem (`tracefs`, `debugfs`) with source `nodev`.
pub fn mount_pseudo(fstype: &str, target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    let ty = CString::new(fstype).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let src = c"nodev";
    // SAFETY: all pointers are valid NUL-terminated strings; data is NULL.
    let r = unsafe { libc::mount(src.as_ptr(), t.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `statfs(2)` f_type of a path.
pub fn fs_magic(p: &Path) -> io::Result<i64> {
    let c = cpath(p)?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, st is writable.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if r == 0 {
        Ok(st.f_type as i64)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// include/uapi/linux/magic.h
pub const TRACEFS_MAGIC: i64 = 0x7472_6163;
/// include/uapi/linux/magic.h
pub const DEBUGFS_MAGIC: i64 = 0x6462_6720;

/// Write a control file in one write(2), without O_TRUNC: tracefs parses each
/// write on its own, and O_TRUNC has side effects on some files (`set_event`, `trace`).
pub fn write_ctl(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening for write", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io("writing", path, e))
}

/// Read a whole (small, pseudo) file as text.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_bytes(path)?).map_err(|e| {
        Error::io(
            "reading",
            path,
            io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })
}

/// Read a whole (pseudo) file as bytes: a regular file of at most
/// [`safefs::SIDE_FILE_CAP`] bytes, read in one first read of 64 KiB (some
/// tracefs files answer only the first read(2)); FIFOs and devices refused.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    Ok(safefs::read_capped(path, safefs::SIDE_FILE_CAP, "a side file")?)
}

/// Current thread id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

/// The host TSC now (0 on other architectures).
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc is available on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// The MMU page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// `uname -srvm`.
pub fn uname() -> String {
    // SAFETY: zeroed utsname is a valid out-parameter.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let f = |a: &[libc::c_char]| {
        let b: Vec<u8> = a
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    format!(
        "{} {} {} {}",
        f(&u.sysname),
        f(&u.release),
        f(&u.version),
        f(&u.machine)
    )
}
