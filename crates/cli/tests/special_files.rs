//! Side files and inputs that are not regular files (a link to /dev/zero, a
//! FIFO) are refused by type, at once, with a message naming them (issue 20,
//! item 1). Each run has a deadline: a hang or an endless read fails the
//! test instead of blocking it.

mod reader_common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ftrace::write::PageBuilder;
use reader_common::*;

/// Runs tscmerge with `args`; it must exit 2 within 20 s (killed
/// otherwise) and its stderr must contain each of `want`.
fn refused(args: &[&str], want: &[&str]) {
    let mut child = Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tscmerge {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: stderr lacks {w:?}: {err}");
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

/// A raw capture directory (record layout) with one CPU of events, whose
/// side files are all present.
fn raw_dir(dir: &Path) {
    let f = Formats::load();
    std::fs::create_dir_all(dir.join("inst")).unwrap();
    std::fs::create_dir_all(dir.join("events/sched/sched_switch")).unwrap();
    std::fs::write(dir.join("header_page"), &f.header_page).unwrap();
    std::fs::write(dir.join("meta.txt"), "endian=little\nlong_size=8\npage_size=4096\n").unwrap();
    std::fs::write(dir.join("saved_cmdlines"), "4242 a\n").unwrap();
    std::fs::write(dir.join("events/sched/sched_switch/format"), &f.sched_switch).unwrap();
    std::fs::write(dir.join("inst/trace_clock"), "local [x86-tsc]\n").unwrap();
    let mut pb = PageBuilder::default();
    let pages = ftrace::write::pack_events(&mut pb, (0..200u64).map(|i| (1000 + i, sched_switch(4242, 1, 4343))).collect::<Vec<_>>().iter().map(|(t, r)| (*t, r.as_slice()))).unwrap();
    std::fs::write(dir.join("inst/cpu0.raw"), pages.concat()).unwrap();
}

const SIDE_FILES: [&str; 5] = ["header_page", "meta.txt", "saved_cmdlines", "events/sched/sched_switch/format", "inst/trace_clock"];

#[test]
fn raw_dir_side_file_linked_to_dev_zero() {
    let base = tmpdir("special_zero");
    let good = base.join("good");
    raw_dir(&good);
    tscmerge(&["report", good.to_str().unwrap()]);
    for (i, side) in SIDE_FILES.iter().enumerate() {
        let d = base.join(format!("d{i}"));
        raw_dir(&d);
        std::fs::remove_file(d.join(side)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join(side)).unwrap();
        let name = Path::new(side).file_name().unwrap().to_str().unwrap();
        refused(&["report", d.to_str().unwrap()], &[name, "character device"]);
    }
}

#[test]
fn raw_dir_side_file_is_a_fifo() {
    let base = tmpdir("special_fifo");
    for (i, side) in SIDE_FILES.iter().enumerate() {
        let d = base.join(format!("d{i}"));
        raw_dir(&d);
        std::fs::remove_file(d.join(side)).unwrap();
        mkfifo(&d.join(side));
        let name = Path::new(side).file_name().unwrap().to_str().unwrap();
        refused(&["report", d.to_str().unwrap()], &[name, "FIFO"]);
    }
}

#[test]
fn main_input_fifo_or_device_named_as_such() {
    let d = tmpdir("special_main");
    let fifo = d.join("pipe.txt");
    mkfifo(&fifo);
    refused(&["report", fifo.to_str().unwrap()], &["pipe.txt", "is a FIFO"]);
    let zero = d.join("zero.dat");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    refused(&["info", zero.to_str().unwrap()], &["zero.dat", "character device"]);
}

#[test]
fn kvm_debugfs_special_files_refused() {
    let d = tmpdir("special_debugfs");
    let host = format!("{DATA}/host-tsc_offset.txt");
    let host = if Path::new(&host).exists() { host } else {
        // Any host recording will do: the snapshot is read before the inputs.
        let s = d.join("s");
        tscmerge(&["synth", "-o", s.to_str().unwrap(), "--windows", "5"]);
        s.join("host.txt").to_str().unwrap().to_string()
    };
    let zero = d.join("kvm_debugfs.txt");
    std::os::unix::fs::symlink("/dev/urandom", &zero).unwrap();
    refused(&["merge", &host, "--kvm-debugfs", zero.to_str().unwrap()], &["--kvm-debugfs", "kvm_debugfs.txt", "character device"]);
    let fifo = d.join("debugfs.fifo");
    mkfifo(&fifo);
    refused(&["check", &host, "--kvm-debugfs", fifo.to_str().unwrap()], &["--kvm-debugfs", "debugfs.fifo", "FIFO"]);
}
