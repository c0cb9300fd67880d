//! `tscmerge report` on the foreign trace.dat corpus (../shared/corpus:
//! real files written by other people's machines and trace-cmd versions)
//! against the output trace-cmd 3.1.6 gave for each (`expected/NAME.report.zst`,
//! made with zlib support and libtraceevent 1.7.1's plugins).
//!
//! Per file: the same events (count of event lines) and at least the share
//! of identical lines in `FLOORS`, lines aligned as `diff` aligns them
//! (one misplaced line costs one line), lines where trace-cmd itself failed
//! (`[FAILED TO PARSE]`) left out, as ../shared/tools/compare_report.py
//! counts them. The floors only rise: each is what the reader reaches
//! today, and 100 where it prints every line as trace-cmd does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (file, minimum % of identical lines).
const FLOORS: &[(&str, f64)] = &[
    ("arm32-v6-biglittle.dat", 100.0),
    ("arm64-v6-rtapp.dat", 100.0),
    ("armv7-v6-rpi.dat", 100.0),
    ("i686-v6-function.dat", 100.0),
    ("i686-v6-function_graph.dat", 100.0),
    ("i686-v6-sched.dat", 100.0),
    ("vmx-guest-v7zlib-time_shift.dat", 100.0),
    ("vmx-host-v7zlib-guest-option.dat", 100.0),
    ("x86_64-v6-empty-cpu-data.dat", 100.0),
    ("x86_64-v7zstd-perfclock-kernel_stack.dat", 100.0),
];

fn corpus() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if d.join("files").is_dir() {
        Some(d)
    } else {
        eprintln!("SKIPPED: no {} (the foreign trace.dat corpus); the corpus comparison did not run", d.display());
        None
    }
}

/// A line that reports an event: `comm-pid [cpu] time: name:`.
fn is_event_line(l: &str) -> bool {
    let Some(rb) = l.find("] ") else { return false };
    l[..rb].rfind('[').is_some_and(|lb| l[lb + 1..rb].bytes().all(|c| c.is_ascii_digit()) && rb > lb + 1)
        && l[rb + 1..].trim_start().split(':').next().is_some_and(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit() || c == b'.'))
}

/// (identical, counted) lines of `ours` against `theirs`, aligned by a diff.
fn identical_aligned(ours: &str, theirs: &str) -> (usize, usize) {
    let e: Vec<&str> = theirs.lines().collect();
    let g: Vec<&str> = ours.lines().collect();
    let bad = |l: &str| l.contains("[FAILED TO PARSE]") || l.contains("ARG TYPE NOT FIELD");
    // Patience first matches the lines unique on both sides, as a human
    // reads the diff; Myers is quadratic on the 300,000-line files.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ops = similar::capture_diff_slices_deadline(similar::Algorithm::Patience, &e, &g, Some(deadline));
    let mut same = 0;
    for op in ops {
        if let similar::DiffOp::Equal { old_index, len, .. } = op {
            same += e[old_index..old_index + len].iter().filter(|l| !bad(l)).count();
        }
    }
    (same, e.iter().filter(|l| !bad(l)).count())
}

#[test]
fn foreign_files_report_as_trace_cmd() {
    let Some(dir) = corpus() else { return };
    let mut failures = Vec::new();
    for &(name, floor) in FLOORS {
        let file = dir.join("files").join(name);
        let exp = dir.join("expected").join(format!("{name}.report.zst"));
        if !file.exists() || !exp.exists() {
            eprintln!("SKIPPED: {} or its expected output is missing", file.display());
            continue;
        }
        let expected = String::from_utf8_lossy(&zstd::decode_all(std::fs::File::open(&exp).unwrap()).unwrap()).into_owned();
        let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).arg("report").arg(&file).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let ours = String::from_utf8_lossy(&out.stdout).into_owned();
        let (ne, ng) = (expected.lines().filter(|l| is_event_line(l)).count(), ours.lines().filter(|l| is_event_line(l)).count());
        let (same, total) = identical_aligned(&ours, &expected);
        let pct = 100.0 * same as f64 / total.max(1) as f64;
        eprintln!("{name:44} {pct:7.2}% identical ({same}/{total} lines), events {ne}/{ng}");
        if ne != ng {
            failures.push(format!("{name}: {ng} event lines, trace-cmd {ne}"));
        }
        if pct < floor {
            failures.push(format!("{name}: {pct:.2}% identical lines, below {floor}%"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
