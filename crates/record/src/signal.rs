//! SIGINT/SIGTERM → a flag. The binary installs this, polls the flag in its
//! status loop, then calls `Recorder::stop`; the handler only stores to an
//! atomic, which is async-signal-safe.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Install handlers for SIGINT and SIGTERM that set the returned flag. No
/// SA_RESTART, so a blocking call in the main thread returns EINTR promptly.
pub fn install_stop_handlers() -> io::Result<&'static AtomicBool> {
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
    Ok(&STOP)
}

/// Whether SIGINT/SIGTERM arrived since the handlers were installed.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
