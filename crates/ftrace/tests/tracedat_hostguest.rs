//! trace-cmd host-guest options (GUEST, TRACEID, TIME_SHIFT, TSC2NSEC) read
//! from the real files of ../shared/corpus (a VMX host recorded with
//! `trace-cmd record -A`, and a guest with its TIME_SHIFT; not one session).

use std::path::{Path, PathBuf};

use ftrace::tracedat::TraceDat;

fn corpus(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/files").join(name);
    if !p.exists() {
        eprintln!("SKIPPED: {} absent (the foreign trace.dat corpus); its host-guest options were not read", p.display());
        return None;
    }
    Some(p)
}

#[test]
fn real_host_guest_option() {
    let Some(p) = corpus("vmx-host-v7zlib-guest-option.dat") else { return };
    let bytes = std::fs::read(p).unwrap();
    let dat = TraceDat::parse(&bytes).unwrap();
    assert_eq!(dat.trace_id(), Some(0xe665d3d57368513c));
    let guests: Vec<_> = dat.guests().collect();
    assert_eq!(guests.len(), 1);
    assert_eq!((guests[0].name.as_str(), guests[0].trace_id), ("", 0x3671ee398de0de17));
    assert_eq!(guests[0].vcpu_pid(0), Some(483882));
    assert_eq!(dat.tsc2nsec(), Some((735842807, 31, 0)));
    assert!(dat.time_shift().is_none());
}

#[test]
fn real_guest_time_shift() {
    let Some(p) = corpus("vmx-guest-v7zlib-time_shift.dat") else { return };
    let bytes = std::fs::read(p).unwrap();
    let dat = TraceDat::parse(&bytes).unwrap();
    assert_eq!(dat.trace_id(), Some(0x7fb6bf52f57ad9af));
    assert_eq!(dat.guests().count(), 0);
    let ts = dat.time_shift().unwrap();
    assert_eq!((ts.peer_trace_id, ts.flags, ts.cpus.len()), (0x4616ddb9ca5aaca8, 0, 1));
    let s: Vec<_> = ts.cpus[0].samples().collect();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].time, s[0].offset, s[0].scaling, s[0].frac_bits), (1624387262158, 5545415653818, 1, 0));
    assert_eq!(s[0].kvm_offset() as i64, -5545415653818);
}
