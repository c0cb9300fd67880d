//! The two-thread merge (`-j 2`) writes exactly what the one-thread merge
//! writes, in every output format and from every kind of input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tscmerge(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    assert!(out.status.success(), "tscmerge {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-threads-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `args` with `-j 1` and `-j 2` and compares stdout, or the file
/// given with `-o` (replaced by a per-run name).
fn same_both_ways(dir: &Path, args: &[&str], out_file: Option<&str>) -> usize {
    let mut outs = Vec::new();
    for j in ["1", "2"] {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["-j".into(), j.into()]);
        let path = out_file.map(|f| dir.join(format!("j{j}-{f}")));
        if let Some(p) = &path {
            a.extend(["-o".into(), s(p).into()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let stdout = tscmerge(&a);
        outs.push(match &path {
            Some(p) => std::fs::read(p).unwrap(),
            None => stdout,
        });
    }
    assert!(!outs[0].is_empty(), "{args:?}: empty output");
    assert!(outs[0] == outs[1], "{args:?}: -j 1 and -j 2 differ ({} vs {} bytes)", outs[0].len(), outs[1].len());
    outs[0].len()
}

#[test]
fn synth_merge_is_identical_on_one_and_two_threads() {
    let d = tmp("synth");
    // Enough events for many 4096-event batches, offsets changing throughout.
    tscmerge(&["synth", "-o", s(&d), "--vms", "1,2", "--windows", "3000", "--format", "both"]);
    let host = d.join("host.dat");
    let dat = ["merge", s(&host), "--guest"];
    let g0 = format!("vm0={},pid=2001", s(&d.join("guest-vm0.dat")));
    let g1 = format!("vm1={},pid=2101", s(&d.join("guest-vm1.dat")));
    let mut base: Vec<&str> = dat.to_vec();
    base.extend([g0.as_str(), "--guest", g1.as_str()]);
    let n = same_both_ways(&d, &base, None);
    assert!(n > 1_000_000, "text output of {n} bytes: too few events to cross batches");
    for extra in [&["--show-guest-ts"][..], &["--json"], &["--tsc-khz", "2000000"]] {
        let mut a = base.clone();
        a.extend(extra);
        same_both_ways(&d, &a, None);
    }
    for (fmt, file) in [("dat", "m.dat"), ("perfetto", "m.pftrace"), ("chrome", "m.json")] {
        let mut a = base.clone();
        a.extend(["--format", fmt, "--tsc-khz", "2000000"]);
        same_both_ways(&d, &a, Some(file));
    }
    // Text inputs (host in two files, as tracefs prints them).
    let t0 = format!("vm0={},pid=2001", s(&d.join("guest-vm0.txt")));
    let t1 = format!("vm1={},pid=2101", s(&d.join("guest-vm1.txt")));
    let host_txt = d.join("host.txt");
    let off_txt = d.join("host-tsc_offset.txt");
    same_both_ways(&d, &["merge", s(&host_txt), s(&off_txt), "--guest", &t0, "--guest", &t1], None);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn real_recordings_report_identically_on_one_and_two_threads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = tmp("real");
    // A kernel-written two-buffer trace.dat (zstd) and tscmerge record's own file.
    for f in ["crates/ftrace/tests/data/two_buffers.v7zstd.dat", "examples/microvm-record/host.dat"] {
        same_both_ways(&d, &["report", s(&root.join(f))], None);
    }
    let ex = root.join("examples/microvm-record");
    let g0 = format!("a={}", s(&ex.join("guest-vm0.txt")));
    let g1 = format!("b={}", s(&ex.join("guest-vm1.txt")));
    same_both_ways(&d, &["merge", s(&ex.join("host.dat")), "--guest", &g0, "--guest", &g1, "--show-guest-ts"], None);
    let _ = std::fs::remove_dir_all(&d);
}
