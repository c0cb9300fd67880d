//! `-o` outputs are safe against a planted link, leave no temporary file
//! after an error or a signal, and never replace an input (issue 20, item 3).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tscmerge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-outputs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn synth(dir: &Path, windows: &str, format: &str) {
    let (code, err) = tscmerge(&["synth", "-o", s(dir), "--vms", "1,2", "--windows", windows, "--format", format]);
    assert_eq!(code, 0, "{err}");
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Runs `tscmerge ARGS` from a shell that first plants a symbolic link to
/// `target` at `DEST.tmp<pid>` (the name the temporary output used to have;
/// `exec` keeps the shell's pid).
fn run_with_planted_link(target: &Path, dest: &Path, args: &[&str]) {
    let mut c = Command::new("sh");
    c.arg("-c").arg("t=$1; d=$2; b=$3; shift 3; ln -s \"$t\" \"$d.tmp$$\" && exec \"$b\" \"$@\"");
    c.arg("sh").arg(target).arg(dest).arg(env!("CARGO_BIN_EXE_tscmerge")).args(args);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn planted_link_at_the_old_temporary_name_is_not_followed() {
    let d = tmp("link");
    synth(&d, "20", "both");
    let victim = d.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let dest = d.join("report.txt");
    run_with_planted_link(&victim, &dest, &["report", s(&d.join("host.txt")), "-o", s(&dest)]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(std::fs::read_to_string(&dest).unwrap().contains("kvm_entry"));

    let dest = d.join("merged.dat");
    let g = format!("vm0={}", s(&d.join("guest-vm0.dat")));
    run_with_planted_link(&victim, &dest, &["merge", s(&d.join("host.dat")), "--guest", &g, "--format", "dat", "-o", s(&dest)]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(std::fs::metadata(&dest).unwrap().is_file());
}

#[test]
fn failed_output_to_a_directory_leaves_no_temporary() {
    let d = tmp("dir");
    synth(&d, "20", "dat");
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let before = names(&d);
    let g = format!("vm0={}", s(&d.join("guest-vm0.dat")));
    let (code, err) = tscmerge(&["merge", s(&d.join("host.dat")), "--guest", &g, "--format", "dat", "-o", s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(s(&out)) && err.contains("directory"), "{err}");
    assert_eq!(names(&d), before);
    assert!(names(&out).is_empty());
    let (code, err) = tscmerge(&["report", s(&d.join("host.dat")), "-o", s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(names(&d), before);
}

/// Starts a long `report -o`, waits for its temporary file to hold bytes,
/// sends `sig`; the process dies of that signal and leaves nothing behind.
fn signal_mid_write(sig: i32, name: &str) {
    let d = tmp(name);
    let input = d.join("in");
    std::fs::create_dir(&input).unwrap();
    synth(&input, "20000", "text");
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tscmerge"))
        .args(["report", s(&input.join("host.txt")), "-o", s(&out_dir.join("report.txt"))])
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let growing = std::fs::read_dir(&out_dir).unwrap().any(|e| e.unwrap().metadata().unwrap().len() > 0);
        if growing {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no output appeared");
        if let Some(st) = child.try_wait().unwrap() {
            panic!("finished before the signal: {st}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(sig), "{st}");
    assert!(names(&out_dir).is_empty(), "left behind: {:?}", names(&out_dir));
}

#[test]
fn sigterm_mid_write_leaves_no_temporary() {
    signal_mid_write(libc::SIGTERM, "term");
}

#[test]
fn sigint_mid_write_leaves_no_temporary() {
    signal_mid_write(libc::SIGINT, "int");
}

#[test]
fn output_naming_an_input_is_refused() {
    let d = tmp("same");
    synth(&d, "20", "text");
    let host = d.join("host.txt");
    let before = std::fs::read(&host).unwrap();
    let (code, err) = tscmerge(&["report", s(&host), "-o", s(&host)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-o") && err.contains("same file"), "{err}");
    // Another name for a guest file: refused by device and inode.
    let link = d.join("alias.txt");
    std::os::unix::fs::symlink(d.join("guest-vm0.txt"), &link).unwrap();
    let guest_before = std::fs::read(d.join("guest-vm0.txt")).unwrap();
    let g = format!("vm0={}", s(&d.join("guest-vm0.txt")));
    let (code, err) = tscmerge(&["merge", s(&host), s(&d.join("host-tsc_offset.txt")), "--guest", &g, "-o", s(&link)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("alias.txt") && err.contains("guest-vm0.txt"), "{err}");
    assert_eq!(std::fs::read(&host).unwrap(), before);
    assert_eq!(std::fs::read(d.join("guest-vm0.txt")).unwrap(), guest_before);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}
