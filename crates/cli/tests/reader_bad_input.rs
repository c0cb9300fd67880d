//! Bad input to `tscmerge report` / `info`: exit code 2, no panic, and a
//! message naming the file and the byte offset (binary) or line (text).

mod reader_common;

use std::path::Path;
use std::process::Command;

use ftrace::write::{Compression, PageBuilder};
use reader_common::*;

/// Runs `tscmerge <cmd> <path>`; asserts exit 2, no panic, and that stderr
/// names the file and contains each of `want`. Returns stderr.
fn fails(cmd: &str, path: &Path, want: &[&str]) -> String {
    let o = run(Command::new(BIN).arg(cmd).arg(path));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{cmd} {}: exit {:?}, stderr: {err}", path.display(), o.status);
    assert!(!err.contains("panicked"), "{err}");
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "stderr does not name {name}: {err}");
    for w in want {
        assert!(err.contains(w), "stderr lacks {w:?}: {err}");
    }
    err
}

fn small_dat(version: u32) -> Vec<u8> {
    let f = Formats::load();
    let events = (0..300u64).map(|i| (1000 + i * 77, sched_switch(4242, 1, 4343))).collect();
    write_dat(&f, version, Compression::None, 1, &[CpuData { buffer: "", cpu: 0, events }])
}

#[test]
fn truncated_trace_dat() {
    let dir = tmpdir("bad_truncated");
    for version in [6, 7] {
        let full = small_dat(version);
        // Sanity: the whole file reads.
        let whole = dir.join(format!("whole.v{version}.dat"));
        std::fs::write(&whole, &full).unwrap();
        tscmerge(&["report", whole.to_str().unwrap()]);
        for cut in [20, 300, full.len() / 2, full.len() - 5] {
            let p = dir.join(format!("cut{cut}.v{version}.dat"));
            std::fs::write(&p, &full[..cut]).unwrap();
            fails("report", &p, &["byte "]);
            fails("info", &p, &["byte "]);
        }
    }
}

#[test]
fn corrupt_page_in_trace_dat() {
    let dir = tmpdir("bad_page");
    let mut full = small_dat(6);
    // The second page's commit word, 8 bytes into it.
    let at = ftrace::tracedat::TraceDat::parse(&full).unwrap().buffers()[0].cpus[0].offset.0 as usize + 4096;
    full[at + 8..at + 16].copy_from_slice(&100_000u64.to_le_bytes());
    let p = dir.join("commit.dat");
    std::fs::write(&p, &full).unwrap();
    fails("report", &p, &[&format!("byte {}", at + 8), "commit"]);
}

#[test]
fn bad_text_line() {
    let dir = tmpdir("bad_text");
    let good = "# tracer: nop\n#\n          <idle>-0       [000] d.h2. 669023293889: irq_handler_entry: irq=1 name=a\n";
    let p = dir.join("bad.txt");
    std::fs::write(&p, format!("{good}{good}this is not a trace line\n{good}")).unwrap();
    fails("report", &p, &["line 7"]);
}

#[test]
fn empty_file() {
    let dir = tmpdir("bad_empty");
    let p = dir.join("empty.dat");
    std::fs::write(&p, b"").unwrap();
    fails("report", &p, &["empty"]);
    fails("info", &p, &["empty"]);
}

/// A raw directory in the record layout with one CPU of real-format events.
fn raw_dir(dir: &Path) -> Vec<u8> {
    let f = Formats::load();
    std::fs::create_dir_all(dir.join("inst")).unwrap();
    std::fs::create_dir_all(dir.join("events/sched/sched_switch")).unwrap();
    std::fs::write(dir.join("header_page"), &f.header_page).unwrap();
    std::fs::write(dir.join("events/sched/sched_switch/format"), &f.sched_switch).unwrap();
    std::fs::write(dir.join("inst/trace_clock"), "local [x86-tsc]\n").unwrap();
    let mut pb = PageBuilder::default();
    let pages = ftrace::write::pack_events(&mut pb, (0..200u64).map(|i| (1000 + i, sched_switch(4242, 1, 4343))).collect::<Vec<_>>().iter().map(|(t, r)| (*t, r.as_slice()))).unwrap();
    pages.concat()
}

#[test]
fn raw_directory_problems() {
    let dir = tmpdir("bad_raw");
    // Good first: it reads, with every event.
    let good = dir.join("good");
    let bytes = raw_dir(&good);
    std::fs::write(good.join("inst/cpu0.raw"), &bytes).unwrap();
    assert_eq!(parse_report(&tscmerge(&["report", good.to_str().unwrap()])).len(), 200);

    let nohp = dir.join("no_header_page");
    std::fs::write({
        raw_dir(&nohp);
        nohp.join("inst/cpu0.raw")
    }, &bytes)
    .unwrap();
    std::fs::remove_file(nohp.join("header_page")).unwrap();
    fails("report", &nohp, &["header_page"]);

    let nocpu = dir.join("no_cpu_files");
    raw_dir(&nocpu);
    fails("report", &nocpu, &["cpuN.raw"]);

    // Second page's commit beyond the page.
    let badc = dir.join("bad_commit");
    raw_dir(&badc);
    let mut b = bytes.clone();
    b[4096 + 8..4096 + 16].copy_from_slice(&5000u64.to_le_bytes());
    std::fs::write(badc.join("inst/cpu0.raw"), &b).unwrap();
    let err = fails("report", &badc, &["cpu0.raw", "byte 4104", "commit"]);
    assert!(err.contains("bad_commit"), "{err}");

    // Last page cut inside its records.
    let cut = dir.join("cut_page");
    raw_dir(&cut);
    std::fs::write(cut.join("inst/cpu0.raw"), &bytes[..4096 + 100]).unwrap();
    fails("report", &cut, &["cpu0.raw", "byte 4104"]);
}
