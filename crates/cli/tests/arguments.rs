//! Arguments that used to be accepted in silence are refused, each error
//! naming its option and value (issue 20, item 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn tscmerge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One small synthetic recording shared by the tests (two guests).
fn synth() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tscmerge-args-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (code, err) = tscmerge(&["synth", "-o", s(&d), "--vms", "1,2", "--windows", "10"]);
        assert_eq!(code, 0, "{err}");
        d
    })
}

/// `merge HOST HOST-OFFSETS EXTRA...` must exit 2 with each of `want` in stderr.
fn merge_refused(extra: &[String], want: &[&str]) {
    let d = synth();
    let mut args = vec!["merge".to_string(), s(&d.join("host.txt")).into(), s(&d.join("host-tsc_offset.txt")).into()];
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = tscmerge(&args);
    assert_eq!(code, 2, "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: stderr lacks {w:?}: {err}");
    }
}

fn guest(name: &str, vm: u32) -> String {
    format!("{name}={}", s(&synth().join(format!("guest-vm{vm}.txt"))))
}

#[test]
fn same_guest_name_twice() {
    merge_refused(&["--guest".into(), guest("vm0", 0), "--guest".into(), guest("vm0", 1)], &["--guest vm0", "twice"]);
}

#[test]
fn same_guest_file_twice() {
    let d = synth();
    let link = d.join("alias-vm0.txt");
    let _ = std::os::unix::fs::symlink(d.join("guest-vm0.txt"), &link);
    merge_refused(
        &["--guest".into(), guest("a", 0), "--guest".into(), format!("b={}", s(&link))],
        &["--guest b file", "alias-vm0.txt", "same file", "guest-vm0.txt"],
    );
    // A host given twice doubles every host event as well.
    merge_refused(&[s(&d.join("host.txt")).into()], &["host input", "same file"]);
}

#[test]
fn pid_twice() {
    merge_refused(&["--guest".into(), format!("{},pid=2000,pid=2100", guest("vm0", 0))], &["--guest", "pid= given twice"]);
}

#[test]
fn colliding_vcpu_maps() {
    let g = ["--guest".to_string(), guest("vm1", 1)];
    let with = |m: &[&str]| -> Vec<String> { g.iter().cloned().chain(m.iter().map(|x| x.to_string())).collect() };
    merge_refused(&with(&["--vcpu-map", "vm1:0=1,0=0"]), &["--vcpu-map", "guest CPU 0 is mapped twice"]);
    merge_refused(&with(&["--vcpu-map", "vm1:0=1,1=1"]), &["--vcpu-map", "vCPU 1 is given to two guest CPUs"]);
    merge_refused(&with(&["--vcpu-map", "vm1:0=1", "--vcpu-map", "vm1:1=0"]), &["--vcpu-map", "already has a --vcpu-map"]);
}

#[test]
fn tsc_khz_zero_refused_by_check() {
    let d = synth();
    let (code, err) = tscmerge(&["check", s(&d.join("host.txt")), s(&d.join("host-tsc_offset.txt")), "--guest", &guest("vm0", 0), "--tsc-khz", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tsc-khz") && err.contains("'0'"), "{err}");
}

#[test]
fn number_too_large_names_its_option() {
    merge_refused(&["--guest".into(), guest("vm1", 1), "--vcpu-map".into(), "vm1:0=99999999999".into()], &["--vcpu-map", "99999999999", "vCPU"]);
    merge_refused(&["--guest".into(), guest("vm0", 0), "--tsc-offset".into(), "99999999999=5".into()], &["--tsc-offset", "99999999999"]);
    merge_refused(&["--guest".into(), format!("{},pid=99999999999", guest("vm0", 0))], &["--guest", "pid \"99999999999\""]);
}

#[test]
fn tsc_offset_for_one_vcpu_twice() {
    merge_refused(&["--guest".into(), guest("vm0", 0), "--tsc-offset".into(), "0=5".into(), "--tsc-offset".into(), "0=6".into()], &["--tsc-offset", "vCPU 0 already has offset 5"]);
}
