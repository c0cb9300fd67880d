//! The stop handlers turn SIGINT and SIGTERM into the flag (own test binary,
//! so the handlers do not affect other tests).

use std::sync::atomic::Ordering;

#[test]
fn sigint_and_sigterm_set_the_flag() {
    let flag = record::signal::install_stop_handlers().unwrap();
    assert!(!flag.load(Ordering::SeqCst) && !record::signal::stop_requested());
    for sig in [libc::SIGINT, libc::SIGTERM] {
        flag.store(false, Ordering::SeqCst);
        // SAFETY: raising a signal whose handler we installed.
        assert_eq!(unsafe { libc::raise(sig) }, 0);
        assert!(flag.load(Ordering::SeqCst), "signal {sig}");
        assert!(record::signal::stop_requested());
    }
}
