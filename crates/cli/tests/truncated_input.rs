//! An input truncated by another process while tscmerge reads it: an error
//! naming the file and the byte (exit 2), never a bare SIGBUS (exit 135, no
//! message), for text, zstd and zlib trace.dat and raw capture inputs (issue
//! 20, item 2).
//!
//! Deterministic runs park `report` mid-file: its stdout is a pipe the test
//! stops reading after 64 KiB, so the process blocks in write(2) holding a
//! cursor in the middle of the mapped input; the test truncates the file and
//! only then drains the pipe. Timed runs truncate from another thread after
//! a varying delay (the process may finish first: exit 0 is then fine, a
//! signal never is).

mod reader_common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reader_common::*;

/// One synth set (text and dat, zstd or zlib), made once per test.
fn synth(dir: &Path, format: &str, compression: &str) {
    let out = Command::new(BIN)
        .args(["synth", "-o"])
        .arg(dir)
        .args(["--vms", "1", "--windows", "12000", "--format", format, "--compression", compression])
        .output()
        .unwrap();
    assert!(out.status.success(), "synth: {}", String::from_utf8_lossy(&out.stderr));
}

/// The outcome of `report FILE`, truncated to `keep` bytes once 64 KiB of
/// output came out (`delay` None) or after `delay` from another thread.
fn truncated_run(src: &Path, work: &Path, keep: u64, delay: Option<Duration>) -> (std::process::ExitStatus, String) {
    let copy = work.join(src.file_name().unwrap());
    std::fs::copy(src, &copy).unwrap();
    let mut child = Command::new(BIN).arg("report").arg(&copy).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    match delay {
        None => {
            let mut first = vec![0u8; 64 << 10];
            out.read_exact(&mut first).unwrap();
            std::fs::OpenOptions::new().write(true).open(&copy).unwrap().set_len(keep).unwrap();
        }
        Some(d) => {
            let c = copy.clone();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                std::fs::OpenOptions::new().write(true).open(&c).unwrap().set_len(keep).unwrap();
            });
        }
    }
    std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    let status = child.wait().unwrap();
    (status, errs.join().unwrap())
}

fn inputs(name: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = tmpdir(name);
    let (t, z, l) = (dir.join("text"), dir.join("zstd"), dir.join("zlib"));
    synth(&t, "text", "zstd");
    synth(&z, "dat", "zstd");
    synth(&l, "dat", "zlib");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    (work, vec![t.join("host.txt"), z.join("host.dat"), l.join("host.dat")])
}

#[test]
fn truncated_mid_read_is_an_error_naming_the_file() {
    let (work, files) = inputs("truncated-parked");
    for src in &files {
        let len = std::fs::metadata(src).unwrap().len();
        for keep in [0, 4096, 100_000, len / 2] {
            let (status, err) = truncated_run(src, &work, keep, None);
            let name = work.join(src.file_name().unwrap()).display().to_string();
            assert_eq!(status.signal(), None, "{} kept {keep}: killed by signal: {err}", src.display());
            assert_eq!(status.code(), Some(2), "{} kept {keep}: {status}: {err}", src.display());
            // Past the end: the fault's message. Within the file's last
            // page (zeros past the end, no fault): a parse error, which
            // names the file and byte as well.
            assert!(err.contains(&name) && err.contains("byte "), "{} kept {keep}: {err}", src.display());
            assert!(!err.contains("panicked"), "{err}");
            if keep % 4096 == 0 {
                assert!(err.contains("changed while being read"), "{} kept {keep}: {err}", src.display());
            }
        }
    }
}

#[test]
fn truncated_at_random_moments_never_kills_with_a_signal() {
    let (work, files) = inputs("truncated-timed");
    let mut errors = 0;
    for (i, src) in files.iter().enumerate() {
        for ms in [0u64, 3, 10, 30, 80] {
            let (status, err) = truncated_run(src, &work, 4096 * (i as u64 + 1) + 7, Some(Duration::from_millis(ms)));
            assert_eq!(status.signal(), None, "{} after {ms} ms: killed by signal: {err}", src.display());
            assert!(matches!(status.code(), Some(0 | 1 | 2)), "{} after {ms} ms: {status}: {err}", src.display());
            assert!(!err.contains("panicked"), "{err}");
            if status.code() != Some(0) {
                errors += 1;
                assert!(err.contains(&work.join(src.file_name().unwrap()).display().to_string()), "{err}");
            }
        }
    }
    eprintln!("{errors} of 15 runs saw the truncation");
}
