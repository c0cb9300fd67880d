//! Events on high CPU numbers are kept, never dropped in silence; a CPU
//! number no Linux has is an error naming the line (issue 20, item 4).

use std::path::{Path, PathBuf};
use std::process::Command;

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-cpus-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `text` with the `nth` (1-based) event on CPU `from` moved to CPU `to`.
fn move_cpu(text: &str, from: &str, nth: usize, to: &str) -> String {
    let mut seen = 0;
    let mut out = String::new();
    for l in text.lines() {
        if !l.starts_with('#') && l.contains(from) {
            seen += 1;
            if seen == nth {
                out.push_str(&l.replacen(from, to, 1));
                out.push('\n');
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    assert!(seen >= nth);
    out
}

#[test]
fn guest_and_host_events_on_cpu_5000_are_kept() {
    let d = tmp("5000");
    let (code, _, err) = tscmerge(&["synth", "-o", s(&d), "--vms", "1,2", "--windows", "5"]);
    assert_eq!(code, 0, "{err}");
    let guest = std::fs::read_to_string(d.join("guest-vm0.txt")).unwrap();
    let total = guest.lines().filter(|l| l.contains("[000]") && !l.starts_with('#')).count();
    std::fs::write(d.join("g.txt"), move_cpu(&guest, "[000]", total, "[5000]")).unwrap();
    let g = format!("vm0={}", s(&d.join("g.txt")));
    let (code, out, err) = tscmerge(&["merge", s(&d.join("host.txt")), s(&d.join("host-tsc_offset.txt")), "--guest", &g, "--vcpu-map", "vm0:5000=0"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("of {total} events")), "{err}");
    assert_eq!(out.lines().filter(|l| l.contains("[5000]")).count(), 1, "{err}");

    // A host event on CPU 5000 reaches a trace.dat output.
    let host = std::fs::read_to_string(d.join("host.txt")).unwrap();
    std::fs::write(d.join("h.txt"), move_cpu(&host, "[001]", 3, "[5000]")).unwrap();
    let dat = d.join("out.dat");
    let (code, _, err) = tscmerge(&["merge", s(&d.join("h.txt")), s(&d.join("host-tsc_offset.txt")), "--format", "dat", "-o", s(&dat)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tscmerge(&["report", s(&dat)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains("[5000]")).count(), 1);
}

#[test]
fn cpu_beyond_linux_limit_is_an_error() {
    let d = tmp("9000");
    let (code, _, err) = tscmerge(&["synth", "-o", s(&d), "--windows", "5"]);
    assert_eq!(code, 0, "{err}");
    let host = std::fs::read_to_string(d.join("host.txt")).unwrap();
    std::fs::write(d.join("h.txt"), move_cpu(&host, "[001]", 1, "[9000]")).unwrap();
    let (code, _, err) = tscmerge(&["report", s(&d.join("h.txt"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("h.txt: line ") && err.contains("CPU 9000"), "{err}");
}
