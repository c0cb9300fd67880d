//! Temporary outputs removed when SIGINT, SIGTERM or SIGHUP ends the process.
//!
//! Drop handlers do not run when a signal's default action kills a process,
//! so the paths of live temporary files sit in a fixed table of slots that a
//! handler can walk without allocating or locking: it unlinks each (unlink(2)
//! is async-signal-safe, signal-safety(7)), and returns; the handler is
//! installed with SA_RESETHAND and re-raises its signal, which is blocked while
//! it runs, so the process then dies of that signal as it would have without
//! us (same exit status for the shell).
//!
//! A path is registered as a leaked `CString` pointer; unregistering swaps the
//! slot to null and frees the string only when no handler is running, so a
//! handler on another thread never reads freed memory.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Live temporary outputs at once; more are still removed on errors, only not
/// on a signal. tscmerge writes one output at a time (synth: a few).
const SLOTS: usize = 64;

static PATHS: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    unlink_all();
    // SAFETY: raise is async-signal-safe; SA_RESETHAND restored the default
    // action, and the signal stays blocked until this handler returns.
    unsafe { libc::raise(sig) };
}

/// Unlinks every registered temporary output; async-signal-safe. Called by
/// a handler that then ends the process (the count it raises stays up, so
/// no path is freed under it).
pub(crate) fn unlink_all() {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    for slot in &PATHS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p came from CString::into_raw and is not freed while
            // IN_HANDLER is non-zero (see Registration::drop).
            unsafe { libc::unlink(p) };
        }
    }
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP. Call once, early,
/// in the binary; a later handler for the same signal (e.g. `record`'s stop
/// flag) replaces this one, and that code then owns the clean-up.
pub fn install_cleanup_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler and an empty mask is
        // valid; on_signal only does async-signal-safe things.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A path in the table for as long as this lives.
pub(crate) struct Registration(Option<usize>);

impl Registration {
    /// Puts `path` in a free slot (none free: not removed on a signal).
    pub(crate) fn new(path: &Path) -> Registration {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return Registration(None) };
        let raw = c.into_raw();
        for (i, slot) in PATHS.iter().enumerate() {
            if slot.compare_exchange(ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return Registration(Some(i));
            }
        }
        // SAFETY: raw came from into_raw just above and was stored nowhere.
        drop(unsafe { CString::from_raw(raw) });
        Registration(None)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(i) = self.0 else { return };
        let raw = PATHS[i].swap(ptr::null_mut(), Ordering::SeqCst);
        // A handler that loaded the pointer before the swap is still using
        // it; it ends the process, so waiting for it never returns. No handler
        // running: nobody else can load the (now null) slot's old value.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        if !raw.is_null() {
            // SAFETY: raw came from CString::into_raw in Registration::new.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}
