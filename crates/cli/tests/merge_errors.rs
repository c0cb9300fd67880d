//! Bad input to `tscmerge merge` gives a clear error and exit status 2.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn synth(dir: &Path) {
    let (code, _, err) = tscmerge(&["synth", "-o", dir.to_str().unwrap(), "--vms", "1,2", "--windows", "40"]);
    assert_eq!(code, 0, "{err}");
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-errors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn no_offsets_in_host() {
    let d = tmp("nooff");
    synth(&d);
    let g = format!("vm0={}", s(&d.join("guest-vm0.txt")));
    let (code, _, err) = tscmerge(&["merge", s(&d.join("host.txt")), "--guest", &g]);
    assert_eq!(code, 2);
    assert!(err.contains("hold no kvm_write_tsc_offset event") && err.contains("--tsc-offset"), "{err}");
}

#[test]
fn unknown_guest_and_pid() {
    let d = tmp("unknown");
    synth(&d);
    let host = [s(&d.join("host.txt")).to_string(), s(&d.join("host-tsc_offset.txt")).to_string()];
    let g = format!("vm0={},pid=999999", s(&d.join("guest-vm0.txt")));
    let (code, _, err) = tscmerge(&["merge", &host[0], &host[1], "--guest", &g]);
    assert_eq!(code, 2);
    assert!(err.contains("no VM has pid 999999") && err.contains("vm0: pid 2000"), "{err}");
    let g = format!("vm0={}", s(&d.join("guest-vm0.txt")));
    let (code, _, err) = tscmerge(&["merge", &host[0], &host[1], "--guest", &g, "--vcpu-map", "nosuch:0=1"]);
    assert_eq!(code, 2);
    assert!(err.contains("no --guest defines"), "{err}");
    let (code, _, err) = tscmerge(&["merge", &host[0], "--guest", &format!("vm0={}", s(&d.join("missing.txt")))]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn wrong_clock_is_refused_by_name() {
    let d = tmp("clock");
    synth(&d);
    // The same guest, as a `local`-clock recording would print it: sec.usec.
    let text = std::fs::read_to_string(d.join("guest-vm0.txt")).unwrap();
    let local: String = text
        .lines()
        .map(|l| match l.find("]  ").or_else(|| l.find("] ")) {
            Some(_) if !l.starts_with('#') => {
                let (head, rest) = l.split_at(l.find(". ").unwrap() + 2);
                let (ts, tail) = rest.split_once(':').unwrap();
                let ts: u64 = ts.trim().parse().unwrap();
                format!("{head}{}.{:06}:{tail}\n", ts / 1_000_000, ts % 1_000_000)
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(d.join("guest-local.txt"), local).unwrap();
    let g = format!("vm0={}", s(&d.join("guest-local.txt")));
    let (code, _, err) = tscmerge(&["merge", s(&d.join("host.txt")), s(&d.join("host-tsc_offset.txt")), "--guest", &g]);
    assert_eq!(code, 2);
    assert!(err.contains("guest-local.txt") && err.contains("nanosecond clock") && err.contains("x86-tsc"), "{err}");
}

#[test]
fn guest_events_before_the_first_offset() {
    let d = tmp("late");
    synth(&d);
    // Drop vm1's two creation writes: the offset instance "started after the
    // guest booted", so only later writes (guest TSC writes) are known.
    let text = std::fs::read_to_string(d.join("host-tsc_offset.txt")).unwrap();
    let mut dropped = 0;
    let late: String = text
        .lines()
        .filter(|l| {
            let vm1 = l.contains("(   2100)");
            if vm1 && l.contains("kvm_write_tsc_offset") && dropped < 2 {
                dropped += 1;
                return false;
            }
            true
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("late-offsets.txt"), late).unwrap();
    let g = format!("vm1={},pid=2100", s(&d.join("guest-vm1.txt")));
    let (code, _, err) = tscmerge(&["merge", s(&d.join("host.txt")), s(&d.join("late-offsets.txt")), "--guest", &g]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("guest vm1") && (err.contains("before the first offset write") || err.contains("no TSC offset is known")),
        "{err}"
    );
    assert!(err.contains("--tsc-offset"), "{err}");
}

/// A corrupt host trace.dat (bytes of a compressed chunk overwritten) is
/// reported as what it is, naming the host file, not as a guest matching
/// problem ("guest vm0: no VM of the host recording has run windows ...").
#[test]
fn corrupt_host_is_named_not_blamed_on_the_guest() {
    let d = tmp("corrupt-host");
    let (code, _, err) = tscmerge(&["synth", "-o", s(&d), "--vms", "1,2", "--windows", "400", "--format", "dat"]);
    assert_eq!(code, 0, "{err}");
    let mut host = std::fs::read(d.join("host.dat")).unwrap();
    let at = host.len() * 3 / 4;
    for b in &mut host[at..at + 256] {
        *b ^= 0x5a;
    }
    let bad = d.join("bad-host.dat");
    std::fs::write(&bad, &host).unwrap();
    let g0 = format!("vm0={}", s(&d.join("guest-vm0.dat")));
    let g1 = format!("vm1={}", s(&d.join("guest-vm1.dat")));
    let (code, _, err) = tscmerge(&["merge", s(&bad), "--guest", &g0, "--guest", &g1]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad-host.dat: byte "), "{err}");
    assert!(!err.contains("no VM of the host recording") && !err.contains("guest vm"), "{err}");
    // Unnamed guests (named after their files later) are not 'the same name twice'.
    let (code, _, err) = tscmerge(&["merge", s(&d.join("host.dat")), "--guest", s(&d.join("guest-vm0.dat")), "--guest", s(&d.join("guest-vm1.dat"))]);
    assert_eq!(code, 0, "{err}");
}
