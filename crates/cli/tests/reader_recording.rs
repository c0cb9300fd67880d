//! One real recording read three ways gives the same events.
//!
//! From our own tracefs instance `reader2_rec_<pid>` (removed at the end):
//! sched and irq events with the x86-tsc clock; then, with tracing off,
//! 1. the instance's `trace` file as text (reading it consumes nothing),
//! 2. every CPU's `trace_pipe_raw` drained into a raw capture directory
//!    (record crate layout: `<dir>/<instance>/cpuN.raw`, formats, tables),
//! 3. a trace.dat written by `ftrace::write` from those same pages.
//!
//! All three must give the same (cpu, ts, event, body) per CPU, bodies of the
//! binary forms rendered kernel-style (events chosen without `%p`, whose
//! kernel hash is unknowable). The trace.dat is also checked against
//! `trace-cmd report` line by line. Needs root and tracefs: skips loudly.

mod reader_common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ftrace::printfmt::Style;
use ftrace::write::{Compression, Header, OptionData, TraceDatWriter};
use ftrace::Endian;
use reader_common::*;
use tscmerge::source::Input;
use tscmerge::Payload;

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENTS: &[&str] = &[
    "sched:sched_switch",
    "sched:sched_waking",
    "sched:sched_wakeup",
    "irq:softirq_entry",
    "irq:softirq_exit",
    "irq:irq_handler_entry",
    "irq:irq_handler_exit",
];
/// O_NONBLOCK on Linux (asm-generic/fcntl.h; x86 and arm64 alike): an empty
/// trace_pipe_raw then says EAGAIN instead of waiting for data.
const O_NONBLOCK: i32 = 0o4000;

/// Our instance; tracing off and rmdir on drop, whatever happens.
struct Instance(PathBuf);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("tracing_on"), "0");
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

fn put(p: &Path, v: &str) {
    fs::write(p, v).unwrap_or_else(|e| panic!("writing {v:?} to {}: {e}", p.display()));
}

/// Copies a tracefs file. One big read: tracefs `header_page` and
/// `header_event` return nothing at a non-zero offset, so `fs::read` (whose
/// first read on a size-0 file is a 32-byte probe) would keep 32 bytes.
fn copy(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let mut b = Vec::with_capacity(1 << 20);
    fs::File::open(src).and_then(|mut f| f.read_to_end(&mut b)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    fs::write(dst, b).unwrap();
}

/// Drains one trace_pipe_raw page by page until EAGAIN or end.
fn drain(src: &Path, dst: &Path, page: usize) -> usize {
    let mut f = fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(src).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; page];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            // A read returns one whole page (trace.c tracing_buffers_read).
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                out.resize(out.len().div_ceil(page) * page, 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading {}: {e}", src.display()),
        }
    }
    fs::write(dst, &out).unwrap();
    out.len() / page
}

/// (ts, event, body) per CPU, bodies rendered kernel-style for binary inputs.
type PerCpu = BTreeMap<u32, Vec<(u64, String, String)>>;

fn events_of(path: &Path) -> PerCpu {
    let input = Input::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = PerCpu::new();
    let mut body = Vec::new();
    for b in 0..input.buffers().len() {
        for (_, mut c) in input.cursors(b, true).unwrap() {
            while let Some(ev) = c.current() {
                match ev.payload {
                    Payload::Event(r) => {
                        body.clear();
                        r.body.render(Style::Kernel, &mut body);
                        out.entry(ev.cpu).or_default().push((ev.ts, r.name.to_string(), String::from_utf8_lossy(&body).into_owned()));
                    }
                    Payload::Lost { count } => panic!("{}: events lost ({count:?}) on CPU {}: recording too long", path.display(), ev.cpu),
                }
                c.advance().unwrap();
            }
        }
    }
    out
}

#[test]
fn text_raw_and_dat_of_one_recording_agree() {
    let inst_dir = Path::new(TRACEFS).join("instances");
    if !inst_dir.is_dir() {
        eprintln!("SKIPPED: no tracefs at {TRACEFS}; the three-form recording test did not run");
        return;
    }
    let name = format!("reader2_rec_{}", std::process::id());
    let idir = inst_dir.join(&name);
    if let Err(e) = fs::create_dir(&idir) {
        eprintln!("SKIPPED: cannot create tracefs instance {} ({e}); the three-form recording test did not run", idir.display());
        return;
    }
    let inst = Instance(idir.clone());
    let t = Path::new(TRACEFS);
    put(&idir.join("tracing_on"), "0");
    put(&idir.join("trace_clock"), "x86-tsc");
    put(&idir.join("options/record-tgid"), "1");
    for e in EVENTS {
        let (s, n) = e.split_once(':').unwrap();
        put(&idir.join(format!("events/{s}/{n}/enable")), "1");
    }
    put(&idir.join("tracing_on"), "1");
    for _ in 0..20 {
        std::process::Command::new("sleep").arg("0.005").status().unwrap();
    }
    put(&idir.join("tracing_on"), "0");

    let dir = tmpdir("recording");
    // 1. text, before anything consumes the buffer.
    let text = dir.join("trace.txt");
    copy(&idir.join("trace"), &text);
    // 2. raw directory.
    let raw = dir.join("raw");
    let page = 4096;
    for f in ["header_page", "header_event"] {
        copy(&t.join("events").join(f), &raw.join(f));
    }
    for e in EVENTS {
        let (s, n) = e.split_once(':').unwrap();
        let rel = format!("events/{s}/{n}/format");
        copy(&t.join(&rel), &raw.join(&rel));
    }
    for f in ["saved_cmdlines", "saved_tgids", "printk_formats"] {
        copy(&t.join(f), &raw.join(f));
    }
    copy(&idir.join("trace_clock"), &raw.join(&name).join("trace_clock"));
    let mut cpus: Vec<u32> = fs::read_dir(idir.join("per_cpu"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .collect();
    cpus.sort();
    let mut pages = 0;
    for &c in &cpus {
        pages += drain(&idir.join(format!("per_cpu/cpu{c}/trace_pipe_raw")), &raw.join(&name).join(format!("cpu{c}.raw")), page);
    }
    drop(inst);
    eprintln!("recorded {pages} pages on {} CPUs", cpus.len());

    // 3. trace.dat from the same pages.
    let rd = |p: &str| fs::read(raw.join(p)).unwrap();
    let (hp, he, cmd) = (rd("header_page"), rd("header_event"), rd("saved_cmdlines"));
    let formats: Vec<(String, Vec<u8>)> = EVENTS
        .iter()
        .map(|e| {
            let (s, n) = e.split_once(':').unwrap();
            (s.to_string(), rd(&format!("events/{s}/{n}/format")))
        })
        .collect();
    let header = Header {
        endian: Endian::Little,
        long_size: 8,
        page_size: page as u32,
        header_page: &hp,
        header_event: &he,
        ftrace_formats: vec![],
        event_formats: formats.iter().map(|(s, f)| (s.as_str(), f.as_slice())).collect(),
        kallsyms: None,
        printk: None,
        cmdlines: &cmd,
    };
    let dat = dir.join("recording.dat");
    let mut w = TraceDatWriter::new(fs::File::create(&dat).unwrap(), 7, Compression::None, &header).unwrap();
    w.add_option(OptionData::TraceClock("x86-tsc".into())).unwrap();
    let top = w.add_buffer("", "x86-tsc", cpus.iter().max().map_or(0, |m| m + 1)).unwrap();
    for &c in &cpus {
        w.write_cpu_data(top, c, fs::File::open(raw.join(&name).join(format!("cpu{c}.raw"))).unwrap()).unwrap();
    }
    w.finish().unwrap();

    let from_text = events_of(&text);
    let from_raw = events_of(&raw);
    let from_dat = events_of(&dat);
    let n: usize = from_raw.values().map(Vec::len).sum();
    eprintln!("{n} events; per CPU: {:?}", from_raw.iter().map(|(c, v)| (c, v.len())).collect::<Vec<_>>());
    assert!(n > 20, "too few events recorded ({n}) to say anything");
    assert_eq!(from_raw, from_dat, "raw directory and trace.dat differ");
    for (cpu, evs) in &from_text {
        let other = from_raw.get(cpu).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(evs.len(), other.len(), "CPU {cpu}: {} events in text, {} in raw pages", evs.len(), other.len());
        for (i, (a, b)) in evs.iter().zip(other).enumerate() {
            assert_eq!(a, b, "CPU {cpu} event #{i}: text vs raw pages");
        }
    }
    assert_eq!(from_text.keys().collect::<Vec<_>>(), from_raw.keys().collect::<Vec<_>>());

    // The raw directory's tgids reach kvm_write_tsc_offset decoding through
    // the same Meta; here, at least, `info` must see the instance and its clock.
    let info = tscmerge(&["info", raw.to_str().unwrap()]);
    assert!(info.contains(&format!("buffer \"{name}\": clock x86-tsc")), "{info}");

    if trace_cmd("the recorded trace.dat against trace-cmd report") {
        let ours = tscmerge(&["report", dat.to_str().unwrap()]);
        let theirs = trace_cmd_report(&dat, &[]);
        let (same, total) = identical_lines(&ours, &theirs);
        eprintln!("recorded trace.dat: {same}/{total} lines identical to trace-cmd report");
        assert_eq!(same, total, "{}", first_diffs(&ours, &theirs, 5));
        // The raw directory reports the same lines, labelled with its instance.
        let raw_report = tscmerge(&["report", raw.to_str().unwrap()]);
        let strip = format!("{name}: ");
        let unlabelled: Vec<&str> = raw_report.lines().map(|l| l.strip_prefix(&strip).unwrap_or(l)).collect();
        let dat_lines: Vec<&str> = ours.lines().skip(1).collect(); // "cpus=N" first
        assert_eq!(unlabelled.len(), dat_lines.len());
        let differ = unlabelled.iter().zip(&dat_lines).filter(|(a, b)| a.trim_start() != b.trim_start()).count();
        assert_eq!(differ, 0, "raw directory report differs from the trace.dat report on {differ} lines");
    }

    // `merge --format dat` over kernel-written pages (raw directory and
    // trace.dat) copies them whole and holds what the merge-fed writer
    // (`--check`) holds.
    for (what, src) in [("raw", &raw), ("dat", &dat)] {
        let pages = dir.join(format!("{what}-pages.dat"));
        let merged = dir.join(format!("{what}-merged.dat"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tscmerge"))
            .args(["merge", src.to_str().unwrap(), "--format", "dat", "--stats", "-o", pages.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(" pages copied whole, ") && !err.contains(": 0 pages copied whole"), "{what}: {err}");
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_tscmerge"))
            .args(["merge", src.to_str().unwrap(), "--format", "dat", "--check", "-o", merged.to_str().unwrap()])
            .output()
            .unwrap();
        let strip = |t: String| t.lines().filter(|l| !l.starts_with("cpus=")).map(str::to_string).collect::<Vec<_>>();
        let a = strip(tscmerge(&["report", pages.to_str().unwrap()]));
        let b = strip(tscmerge(&["report", merged.to_str().unwrap()]));
        assert!(a.len() > 20 && a == b, "{what}: merge --format dat differs from the merge-fed writer ({} vs {} lines)", a.len(), b.len());
    }
}
