//! Kernel-written pages through the writer: records a few sched events in a
//! private tracefs instance (`instances/writer_test`, x86-tsc), reads
//! `per_cpu/cpuN/trace_pipe_raw` with O_NONBLOCK until EAGAIN, writes the
//! pages into v7 files (none and zstd), and checks that `trace-cmd report -t`
//! shows the same events (cpu, timestamp, name) as the instance's `trace` text.
//! The instance is removed afterwards. Skips loudly without tracefs/trace-cmd.

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ftrace::write::{Compression, Header, TraceDatWriter};
use ftrace::Endian;

const TRACEFS: &str = "/sys/kernel/tracing";
const INSTANCE: &str = "writer_test";
const EVENTS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_waking"];
/// O_NONBLOCK on x86, arm and riscv Linux (include/uapi/asm-generic/fcntl.h).
const O_NONBLOCK: i32 = 0o4000;
/// EAGAIN on Linux (include/uapi/asm-generic/errno-base.h).
const EAGAIN: i32 = 11;

/// Removes the instance even when the test fails.
struct Instance(PathBuf);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("tracing_on"), "0");
        for e in EVENTS {
            let _ = fs::write(self.0.join(format!("events/sched/{e}/enable")), "0");
        }
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

fn have_trace_cmd() -> bool {
    Command::new("trace-cmd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("trace-cmd version"))
        .unwrap_or(false)
}

/// (cpu, ts, event name) from tracefs `trace` text or `trace-cmd report -t`:
/// `comm-pid [cpu] [flags] ts: name: ...`.
fn parse_events(text: &str) -> Vec<(u32, u64, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(lb) = line.find(" [") else { continue };
        let Some(rb) = line[lb..].find(']') else {
            continue;
        };
        let Ok(cpu) = line[lb + 2..lb + rb].trim().parse::<u32>() else {
            continue;
        };
        let mut toks = line[lb + rb + 1..].split_whitespace().peekable();
        // tracefs prints a flags column (e.g. "d..2.") before the timestamp.
        if toks
            .peek()
            .is_some_and(|t| t.trim_end_matches(':').parse::<u64>().is_err())
        {
            toks.next();
        }
        let (Some(ts), Some(name)) = (toks.next(), toks.next()) else {
            continue;
        };
        let Ok(ts) = ts.trim_end_matches(':').parse::<u64>() else {
            continue;
        };
        out.push((cpu, ts, name.trim_end_matches(':').to_string()));
    }
    out.sort();
    out
}

fn read_raw(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let mut data = Vec::new();
    let mut page = vec![0u8; 4096];
    loop {
        match f.read(&mut page) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&page[..n]),
            Err(e) if e.raw_os_error() == Some(EAGAIN) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(data)
}

/// Reads a tracefs file with one large buffer: `events/header_page` and
/// `header_event` return EOF after a short first read (a 32-byte read gets 32
/// bytes, then 0), and `fs::read` starts with a 32-byte probe on 0-size files.
fn read_tracefs(path: &Path) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("{}: {e}", path.display()),
        }
        if n == buf.len() {
            buf.resize(n * 2, 0);
        }
    }
    buf.truncate(n);
    buf
}

#[test]
fn kernel_pages_reported_like_tracefs_text() {
    let inst_dir = Path::new(TRACEFS).join("instances").join(INSTANCE);
    if !Path::new(TRACEFS).join("instances").is_dir() || !have_trace_cmd() {
        eprintln!("SKIPPED: needs tracefs at {TRACEFS} and trace-cmd");
        return;
    }
    if inst_dir.exists() {
        let _ = fs::remove_dir(&inst_dir); // left over from an interrupted run
    }
    if let Err(e) = fs::create_dir(&inst_dir) {
        eprintln!("SKIPPED: cannot create {}: {e}", inst_dir.display());
        return;
    }
    let inst = Instance(inst_dir.clone());
    let w = |f: &str, v: &str| {
        fs::write(inst.0.join(f), v).unwrap_or_else(|e| panic!("writing {f}: {e}"))
    };
    w("tracing_on", "0");
    w("trace_clock", "x86-tsc");
    w("buffer_size_kb", "64");
    for e in EVENTS {
        w(&format!("events/sched/{e}/enable"), "1");
    }
    w("tracing_on", "1");
    // Activity: threads that sleep and wake, and a few short processes.
    let hs: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..20 {
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            })
        })
        .collect();
    for _ in 0..5 {
        let _ = Command::new("true").status();
    }
    hs.into_iter().for_each(|h| h.join().unwrap());
    w("tracing_on", "0");

    // The text first: reading trace_pipe_raw consumes the buffer.
    let text = fs::read_to_string(inst.0.join("trace")).unwrap();
    let expect = parse_events(&text);
    assert!(expect.len() >= 10, "too few events recorded:\n{text}");

    let ev_dir = Path::new(TRACEFS).join("events");
    let header_page = read_tracefs(&ev_dir.join("header_page"));
    let header_event = read_tracefs(&ev_dir.join("header_event"));
    assert!(header_page.len() > 100 && header_event.len() > 100);
    let formats: Vec<Vec<u8>> = EVENTS
        .iter()
        .map(|e| read_tracefs(&ev_dir.join(format!("sched/{e}/format"))))
        .collect();
    let cmdlines = read_tracefs(&Path::new(TRACEFS).join("saved_cmdlines"));
    let ncpu = fs::read_dir(inst.0.join("per_cpu")).unwrap().count() as u32;
    let mut raw = Vec::new();
    for cpu in 0..ncpu {
        raw.push(read_raw(&inst.0.join(format!("per_cpu/cpu{cpu}/trace_pipe_raw"))).unwrap());
    }
    drop(inst);
    assert!(
        raw.iter().all(|r| r.len() % 4096 == 0),
        "trace_pipe_raw gives whole pages"
    );
    let pages: Vec<usize> = raw.iter().map(|r| r.len() / 4096).collect();
    eprintln!(
        "{} events in the tracefs text; pages per cpu: {pages:?}",
        expect.len()
    );

    let header = Header {
        endian: Endian::NATIVE,
        long_size: std::mem::size_of::<usize>() as u8,
        page_size: 4096,
        header_page: &header_page,
        header_event: &header_event,
        ftrace_formats: vec![],
        event_formats: formats.iter().map(|f| ("sched", f.as_slice())).collect(),
        kallsyms: None,
        printk: None,
        cmdlines: &cmdlines,
    };
    for comp in [Compression::None, Compression::Zstd] {
        let mut wr = TraceDatWriter::new(Cursor::new(Vec::new()), 7, comp, &header).unwrap();
        wr.set_chunk_pages(2); // several chunks even for a small capture
        let top = wr.add_buffer("", "x86-tsc", ncpu).unwrap();
        for (cpu, data) in raw.iter().enumerate() {
            wr.write_cpu_data(top, cpu as u32, data.as_slice()).unwrap();
        }
        let bytes = wr.finish().unwrap().into_inner();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("write_real_pages");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("writer_test.{}.dat", comp.name()));
        fs::write(&path, &bytes).unwrap();
        let o = Command::new("trace-cmd")
            .args(["report", "-t", "-i"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = parse_events(&String::from_utf8_lossy(&o.stdout));
        assert_eq!(got.len(), expect.len(), "{comp:?}: event count");
        assert_eq!(got, expect, "{comp:?}: events differ from the tracefs text");
    }
}
