//! SIGINT/SIGTERM → a flag. The binary installs this, passes the flag to
//! `RecordConfig::interrupt` (so Ctrl-C during setup undoes it), polls it in
//! its status loop, then calls `Recorder::stop`. The handler only loads a
//! pointer that was set before installation and stores to an atomic, both
//! async-signal-safe.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_sig: libc::c_int) {
    if let Some(f) = FLAG.get() {
        f.store(true, Ordering::SeqCst);
    }
}

/// Install handlers for SIGINT and SIGTERM that set the returned flag (the
/// same flag on every call). No SA_RESTART, so a blocking call in the main
/// thread returns EINTR promptly.
pub fn install_stop_handlers() -> io::Result<Arc<AtomicBool>> {
    let flag = FLAG
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler and an empty mask is valid;
        // on_signal is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(flag)
}

/// Whether SIGINT/SIGTERM arrived since the handlers were installed.
pub fn stop_requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}
