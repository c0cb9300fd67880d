//! trace-cmd host-guest recordings through the binary: a synth pair in
//! trace-cmd's layout merges and checks with no flag; bad pairs give one
//! sentence and exit 2; the real (unmatched) files of ../shared/corpus are
//! read, refused by trace id, and merged when pinned.

use std::path::{Path, PathBuf};
use std::process::Command;

use ftrace::write::Compression;
use tscmerge::synth::{write_tracecmd_pair, PairConfig, Sampling, SynthConfig};

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-hostguest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pair(name: &str, pair: PairConfig) -> PathBuf {
    let d = tmp(name);
    let cfg = SynthConfig { seed: 4, vms: vec![1, 4], windows: 60, ..Default::default() };
    write_tracecmd_pair(&cfg, &pair, &d, Compression::Zstd).unwrap();
    d
}

#[test]
fn merge_and_check_need_no_flags() {
    let d = pair("ok", PairConfig::default());
    let (host, g0, g1) = (d.join("host.dat"), d.join("guest-vm0.dat"), d.join("guest-vm1.dat"));
    let (code, out, err) = tscmerge(&["merge", s(&host), "--guest", s(&g1), "--guest", s(&g0), "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("guest vm1 is vm1 (its trace id") && err.contains("guest vm0 is vm0"), "{err}");
    assert!(out.lines().any(|l| l.contains("vm1") && l.contains("tscmerge-marker")), "guest events in the merge");
    let (code, out, err) = tscmerge(&["check", s(&host), "--guest", s(&g0), "--guest", s(&g1)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("inside run windows (100.000%), 0 outside") && out.contains("vm1 cpu 3: thread 2104,"), "{out}");
    // NAME= still names it; offsets lists the TIME_SHIFT samples as used.
    let (code, _, err) = tscmerge(&["merge", s(&host), "--guest", &format!("mine={}", s(&g0)), "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("guest mine is vm0"), "{err}");
    let (code, out, err) = tscmerge(&["offsets", s(&host), s(&g1)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TIME_SHIFT of guest vm1") && out.contains("TIME_SHIFT  holds from the beginning") && !out.contains("DISAGREE"), "{out}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_pairs_are_one_sentence_and_exit_2() {
    // A guest of another session: its trace id matches no GUEST option.
    let a = pair("a", PairConfig::default());
    let b = pair("b", PairConfig { session: 1, ..Default::default() });
    let (code, _, err) = tscmerge(&["merge", s(&a.join("host.dat")), "--guest", s(&b.join("guest-vm0.dat"))]);
    assert_eq!(code, 2);
    assert!(err.contains("(TRACEID) matches no GUEST option of the host inputs") && err.lines().count() == 1, "{err}");
    // A TIME_SHIFT without samples.
    let e = pair("empty", PairConfig { sampling: Sampling::Empty, ..Default::default() });
    let (code, _, err) = tscmerge(&["check", s(&e.join("host.dat")), "--guest", s(&e.join("guest-vm1.dat"))]);
    assert_eq!(code, 2);
    assert!(err.contains("guest vm1: its TIME_SHIFT option holds no samples (4 vCPUs, 0 samples)") && err.lines().count() == 1, "{err}");
    // A GUEST map naming threads the host recording never saw.
    let t = pair("threads", PairConfig { guest_pid_shift: 50_000, ..Default::default() });
    let (code, _, err) = tscmerge(&["merge", s(&t.join("host.dat")), "--guest", s(&t.join("guest-vm0.dat"))]);
    assert_eq!(code, 2);
    assert!(err.contains("vCPU 0 → thread 52001") && err.contains("holds no event of any of them") && err.lines().count() == 1, "{err}");
    for d in [a, b, e, t] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// The real files: a VMX host with a GUEST option and a guest with TIME_SHIFT,
/// from two different sessions.
#[test]
fn real_unmatched_pair() {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/files");
    let (host, guest) = (c.join("vmx-host-v7zlib-guest-option.dat"), c.join("vmx-guest-v7zlib-time_shift.dat"));
    if !host.exists() || !guest.exists() {
        eprintln!("SKIPPED: {} or {} absent (the foreign trace.dat corpus): the real host-guest files were not merged", host.display(), guest.display());
        return;
    }
    let (code, _, err) = tscmerge(&["merge", s(&host), "--guest", s(&guest)]);
    assert_eq!(code, 2);
    assert!(err.contains("its trace id 0x7fb6bf52f57ad9af (TRACEID) matches no GUEST option of the host inputs, which name 0x3671ee398de0de17"), "{err}");
    // Pinned to the GUEST option's vCPU thread: merged with the TIME_SHIFT offset.
    let g = format!("{},pid=483882", s(&guest));
    let (code, out, err) = tscmerge(&["check", s(&host), "--guest", &g]);
    // The guest's recording ended ~14 hours of host TSC before the host's
    // began: every event is outside the host's recording, nothing is judged.
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("not from one trace-cmd session") && out.contains("cpu 0: thread 483882,"), "{out}");
    assert!(out.contains("226013 guest events fall outside the host's recording (226013 before its first event, 0 after its last)"), "{out}");
    assert!(out.contains("nothing could be checked"), "{out}");
}
