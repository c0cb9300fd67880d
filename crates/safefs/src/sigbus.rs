//! A mapped input truncated while we read it: an error naming the file and
//! the byte, not a SIGBUS that kills the process without a word.
//!
//! Reading a page of a shared file mapping that now lies beyond the file's
//! end raises SIGBUS in the reading thread (mmap(2)). tscmerge reads its big
//! inputs in place, through mappings; another process may shrink one under
//! it. [`MapGuard`] registers a mapping's address range and file name in a
//! fixed table of slots that the SIGBUS handler can walk without allocating
//! or locking. The handler, for a fault inside a registered range, writes
//! `tscmerge: FILE: changed while being read: byte N is past the file's end
//! (now M bytes) ...` to stderr with write(2), removes the temporary outputs
//! ([`crate::install_cleanup_handlers`]'s table) and ends the process with
//! `_exit(2)`, the exit status of every other error. A fault elsewhere gets
//! the default action back and happens again: the process dies of SIGBUS as
//! it would have without us. Only async-signal-safe calls (write, stat,
//! unlink, _exit, sigaction; signal-safety(7)) are made.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings covered at once (a merge of hundreds of micro-VM traces maps
/// each); more are still read, only a truncation of them is a plain SIGBUS.
const SLOTS: usize = 8192;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    path: AtomicPtr<c_char>,
}

static SLOTS_TABLE: [Slot; SLOTS] =
    [const { Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0), path: AtomicPtr::new(ptr::null_mut()) } }; SLOTS];
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Exit status of a process ended by a truncated input: tscmerge's error status.
pub const SIGBUS_EXIT: i32 = 2;

fn write_all(mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: write(2) on fd 2 with a valid buffer; async-signal-safe.
        let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// `n` in decimal, into `buf`, without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS_TABLE {
        let p = slot.path.load(Ordering::SeqCst);
        if p.is_null() {
            continue;
        }
        let (start, len) = (slot.start.load(Ordering::SeqCst), slot.len.load(Ordering::SeqCst));
        if addr < start || addr - start >= len {
            continue;
        }
        // SAFETY: p came from CString::into_raw and is not freed while
        // IN_HANDLER is non-zero (MapGuard::drop); strlen is safe on it.
        let name = unsafe { std::slice::from_raw_parts(p as *const u8, libc::strlen(p)) };
        let mut b1 = [0u8; 20];
        let mut b2 = [0u8; 20];
        write_all(b"tscmerge: ");
        write_all(name);
        write_all(b": changed while being read: byte ");
        write_all(decimal((addr - start) as u64, &mut b1));
        write_all(b" is past the file's end");
        // SAFETY: stat(2) is async-signal-safe; st is a plain out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(p, &mut st) } == 0 {
            write_all(b" (now ");
            write_all(decimal(st.st_size as u64, &mut b2));
            write_all(b" bytes, ");
            write_all(decimal(len as u64, &mut b1));
            write_all(b" when opened)");
        }
        write_all(b": truncated by another process? Read a copy that nothing writes to\n");
        crate::cleanup::unlink_all();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(SIGBUS_EXIT) };
    }
    // Not one of ours: the default action, taken when the faulting access
    // runs again on return.
    // SAFETY: a zeroed sigaction with SIG_DFL is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

fn install() {
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler and an empty mask
    // is valid; on_sigbus only does async-signal-safe things.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, ptr::null_mut());
    }
}

/// A mapping of the file `path` at `start..start + len`, registered for as
/// long as this lives: a SIGBUS inside it ends the process with an error
/// naming the file and byte offset instead. The first guard installs the
/// handler. Keep the guard no longer than the mapping.
pub struct MapGuard(Option<usize>);

impl MapGuard {
    /// Registers `len` mapped bytes at `start` as the file `path`.
    pub fn new(start: *const u8, len: usize, path: &Path) -> MapGuard {
        INSTALL.call_once(install);
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return MapGuard(None) };
        let raw = c.into_raw();
        for (i, slot) in SLOTS_TABLE.iter().enumerate() {
            // Claim the slot by its path, then fill in the range: the handler
            // reads the range only after seeing a path, and a fault cannot be
            // in this mapping before `new` returns to the code that reads it.
            if slot.len.compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                slot.start.store(start as usize, Ordering::SeqCst);
                slot.len.store(len.max(1), Ordering::SeqCst);
                slot.path.store(raw, Ordering::SeqCst);
                return MapGuard(Some(i));
            }
        }
        // SAFETY: raw came from into_raw just above and was stored nowhere.
        drop(unsafe { CString::from_raw(raw) });
        MapGuard(None)
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        let Some(i) = self.0 else { return };
        let slot = &SLOTS_TABLE[i];
        let raw = slot.path.swap(ptr::null_mut(), Ordering::SeqCst);
        // A handler that loaded the pointer before the swap ends the process.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        slot.start.store(0, Ordering::SeqCst);
        slot.len.store(0, Ordering::SeqCst);
        if !raw.is_null() {
            // SAFETY: raw came from CString::into_raw in MapGuard::new.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_prints_numbers() {
        let mut b = [0u8; 20];
        assert_eq!(super::decimal(0, &mut b), b"0");
        assert_eq!(super::decimal(1234567, &mut b), b"1234567");
        assert_eq!(super::decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
