//! `merge --format dat` writes each output CPU straight from its inputs,
//! copying pages whole where it can. It must hold the same events, at the
//! same host times, in the same per-CPU order, as the merge-fed writer
//! (`--check` takes that path): compared through `tscmerge report` and,
//! where installed, `trace-cmd report` (the oracle), on synthetic data whose
//! offsets rise and fall, with TSC scaling, and from text, trace.dat and
//! mixed inputs.

mod reader_common;

use std::path::Path;
use std::process::Command;

use reader_common::{tmpdir as tmp, trace_cmd};

fn run(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(reader_common::BIN).args(args).output().unwrap();
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tscmerge(args: &[&str]) -> Vec<u8> {
    let (ok, out, err) = run(args);
    assert!(ok, "tscmerge {args:?}: {err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `trace-cmd report` minus its header line (`cpus=N`: the page writer
/// declares every input CPU, the merge-fed one only CPUs with events).
fn tc_report(path: &Path) -> String {
    reader_common::trace_cmd_report(path, &[]).lines().filter(|l| !l.starts_with("cpus=")).collect::<Vec<_>>().join("\n")
}

/// Writes `merge ... --format dat` both ways and compares; returns the page
/// writer's "copied whole, built" counts.
fn both_ways(dir: &Path, inputs: &[String], tag: &str) -> (u64, u64) {
    let pages = dir.join(format!("{tag}-pages.dat"));
    let merged = dir.join(format!("{tag}-merged.dat"));
    let mut a: Vec<&str> = vec!["merge"];
    a.extend(inputs.iter().map(String::as_str));
    let mut p = a.clone();
    p.extend(["--format", "dat", "--stats", "-o", s(&pages)]);
    let (ok, _, err) = run(&p);
    assert!(ok, "{p:?}: {err}");
    let counts = err
        .lines()
        .find_map(|l| {
            let l = l.strip_prefix("tscmerge: ")?;
            let (c, rest) = l.split_once(" pages copied whole, ")?;
            Some((c.parse::<u64>().ok()?, rest.split(' ').next()?.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no page counts in: {err}"));
    let events = |e: &str| e.lines().find(|l| l.ends_with(" events out")).map(str::to_string);
    let mut m = a.clone();
    m.extend(["--format", "dat", "--check", "--stats", "-o", s(&merged)]);
    // --check may report violations (scaled synth): the output is written anyway.
    let (_, _, merr) = run(&m);
    assert!(merged.exists(), "{m:?}: {merr}");
    assert_eq!(events(&err), events(&merr), "events out differ");
    let mine = tscmerge(&["report", s(&pages)]);
    let theirs = tscmerge(&["report", s(&merged)]);
    assert!(mine.len() > 1000, "{tag}: report of {} bytes", mine.len());
    let strip = |b: &[u8]| String::from_utf8_lossy(b).lines().filter(|l| !l.starts_with("cpus=")).collect::<Vec<_>>().join("\n");
    assert!(strip(&mine) == strip(&theirs), "{tag}: tscmerge report of the two outputs differs");
    if trace_cmd("the trace-cmd comparison of the two dat writers") {
        assert!(tc_report(&pages) == tc_report(&merged), "{tag}: trace-cmd report of the two outputs differs");
    }
    counts
}

/// `merge` inputs for a synth directory: the host files named, then both
/// guests from their `guest-vmN.EXT` files, pinned to their VMM pids.
fn inputs(d: &Path, hosts: &[&str], ext: &str) -> Vec<String> {
    let mut v: Vec<String> = hosts.iter().map(|h| s(&d.join(h)).to_string()).collect();
    for (vm, pid) in [(0, 2001), (1, 2101)] {
        v.push("--guest".into());
        v.push(format!("vm{vm}={},pid={pid}", s(&d.join(format!("guest-vm{vm}.{ext}")))));
    }
    v
}

#[test]
fn pages_copied_or_built_hold_what_the_merge_writes() {
    let d = tmp("datpages-plain");
    // Guests write their TSC every 5 windows: offsets change often, so
    // pages straddle periods and the host's offset instance interleaves.
    tscmerge(&["synth", "-o", s(&d), "--windows", "3000", "--tsc-write-every", "5", "--format", "both"]);
    let (copied, built) = both_ways(&d, &inputs(&d, &["host.dat"], "dat"), "dat");
    assert!(copied > 10 && built > 0, "copied {copied}, built {built}");

    // Text guests beside a binary host, and all text.
    both_ways(&d, &inputs(&d, &["host.dat"], "txt"), "mixed");
    let (copied, _) = both_ways(&d, &inputs(&d, &["host.txt", "host-tsc_offset.txt"], "txt"), "text");
    assert_eq!(copied, 0, "text has no pages to copy");
}

#[test]
fn scaled_guests_are_built_not_copied() {
    let d = tmp("datpages-scaled");
    // With TSC scaling a page's deltas change: guest pages cannot be copied.
    tscmerge(&["synth", "-o", s(&d), "--windows", "1500", "--tsc-scaling", "3:1", "--format", "dat", "--compression", "none"]);
    let mut dat = inputs(&d, &["host.dat"], "dat");
    dat.extend(["--tsc-scaling".to_string(), "3:1".to_string()]);
    let (copied, built) = both_ways(&d, &dat, "scaled");
    assert!(built > 10, "copied {copied}, built {built}");

    // Without the scaling the times go back at each offset change: both
    // writers refuse, none writes a CPU whose times run backwards.
    dat.truncate(dat.len() - 2);
    for extra in [&[][..], &["--check"]] {
        let out = d.join("unscaled.dat");
        let mut a = vec!["merge"];
        a.extend(dat.iter().map(String::as_str));
        a.extend(["--format", "dat", "-o", s(&out)]);
        a.extend(extra);
        let (ok, _, err) = run(&a);
        assert!(!ok && err.contains("cannot go back in time"), "{a:?}: {err}");
        assert!(!out.exists(), "a refused output is not left behind");
    }
}

#[test]
fn guests_that_never_move_their_offset_are_copied_whole() {
    let d = tmp("datpages-steady");
    tscmerge(&["synth", "-o", s(&d), "--windows", "2000", "--tsc-write-every", "0", "--format", "dat"]);
    let (copied, built) = both_ways(&d, &inputs(&d, &["host.dat"], "dat"), "steady");
    assert!(copied > built, "copied {copied}, built {built}");
}

#[test]
fn a_real_recording_with_micro_vm_guests() {
    // Kernel-written pages (zstd, top level + tsc_offset instance) and the
    // micro-VMs' text traces, as README's first command merges them.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/microvm-record");
    let d = tmp("datpages-real");
    let inputs = vec![
        s(&ex.join("host.dat")).to_string(),
        "--guest".into(),
        format!("a={}", s(&ex.join("guest-vm0.txt"))),
        "--guest".into(),
        format!("b={}", s(&ex.join("guest-vm1.txt"))),
    ];
    let (copied, built) = both_ways(&d, &inputs, "real");
    assert!(copied > 0 && built > 0, "copied {copied}, built {built}");
}

#[test]
fn lost_event_marks_stay_on_their_page() {
    use ftrace::write::{Compression, PageBuilder, TraceDatWriter};
    // One CPU whose third and fifth pages follow lost events, beside a CPU
    // without loss; "events out" counts the marks as the merge does.
    let f = reader_common::Formats::load();
    let mut w = TraceDatWriter::new(std::io::Cursor::new(Vec::new()), 7, Compression::Zstd, &f.header()).unwrap();
    let top = w.add_buffer("", "x86-tsc", 2).unwrap();
    for cpu in 0..2u32 {
        let mut pb = PageBuilder::default();
        let mut pages = Vec::new();
        for i in 0..400u64 {
            let rec = reader_common::sched_switch(4242, 1, 4343);
            if !pb.try_push(1_000_000 + i * 1000 + cpu as u64, &rec).unwrap() {
                pages.push(pb.page().to_vec());
                pb.clear();
                if cpu == 0 && pages.len() == 2 {
                    pb.set_missed_events(Some(7));
                }
                if cpu == 0 && pages.len() == 4 {
                    pb.set_missed_events(None);
                }
                assert!(pb.try_push(1_000_000 + i * 1000 + cpu as u64, &rec).unwrap());
            }
        }
        pages.push(pb.page().to_vec());
        w.write_cpu_pages(top, cpu, pages.iter().map(|p| p.as_slice())).unwrap();
    }
    let d = tmp("datpages-lost");
    let input = d.join("lost.dat");
    std::fs::write(&input, w.finish().unwrap().into_inner()).unwrap();
    let (copied, _) = both_ways(&d, &[s(&input).to_string()], "lost");
    assert!(copied > 4, "copied {copied}");
    let report = String::from_utf8(tscmerge(&["report", s(&d.join("lost-pages.dat"))])).unwrap();
    // (Full pages leave no room to store the count: both marks print bare,
    // in the input as in the output.)
    assert_eq!(report.matches("CPU:0 [EVENTS DROPPED]").count(), 2, "{}", &report[..report.len().min(2000)]);
}

/// `--compression none|zlib|zstd`: the same events whatever the codec (one
/// thread or two), the file's own header naming it; only with `--format dat`.
#[test]
fn compression_is_the_users_choice() {
    let d = tmp("datpages-codec");
    tscmerge(&["synth", "-o", s(&d), "--windows", "600", "--format", "dat", "--compression", "none"]);
    let ins = inputs(&d, &["host.dat"], "dat");
    let mut reports = Vec::new();
    for codec in ["zstd", "none", "zlib"] {
        for j in ["1", "2"] {
            let out = d.join(format!("{codec}-j{j}.dat"));
            let mut a: Vec<&str> = vec!["merge"];
            a.extend(ins.iter().map(String::as_str));
            a.extend(["--format", "dat", "--compression", codec, "-j", j, "-o", s(&out)]);
            tscmerge(&a);
            let info = String::from_utf8(tscmerge(&["info", s(&out)])).unwrap();
            let want = if codec == "none" { "compression: none".to_string() } else { format!("compression: {codec}") };
            assert!(info.lines().any(|l| l.starts_with(&want)), "{codec}: {info}");
            reports.push((codec, tscmerge(&["report", s(&out)])));
        }
    }
    assert!(reports[0].1.len() > 1000);
    for (codec, r) in &reports {
        assert!(r == &reports[0].1, "{codec}: report differs from zstd's");
    }
    if trace_cmd("the trace-cmd reading of an uncompressed merge") {
        // Debian's trace-cmd reads zstd and none (it has no zlib).
        assert!(tc_report(&d.join("none-j1.dat")) == tc_report(&d.join("zstd-j1.dat")), "trace-cmd report: none and zstd differ");
    }
    let (ok, _, err) = run(&["merge", s(&d.join("host.dat")), "--compression", "none"]);
    assert!(!ok && err.contains("--compression applies to --format dat only"), "{err}");
}
