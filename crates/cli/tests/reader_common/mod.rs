//! Shared by the reader tests: running the built `tscmerge` and `trace-cmd`,
//! parsing report lines, and building trace.dat files with our writer from
//! real format files (tests/data/README.md).
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ftrace::write::{Compression, Header, OptionData, PageBuilder, TraceDatWriter};
use ftrace::Endian;

pub const BIN: &str = env!("CARGO_BIN_EXE_tscmerge");
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
pub const TWO_BUFFERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ftrace/tests/data/two_buffers.v7zstd.dat");

/// A fresh scratch directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reader").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(DATA).join(name)).unwrap_or_else(|e| panic!("{DATA}/{name}: {e}"))
}

/// Whether trace-cmd is here; says so loudly when not.
pub fn trace_cmd(what: &str) -> bool {
    // `trace-cmd --version` exits 255 in 3.1.6: look at what it prints.
    let ok = Command::new("trace-cmd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("trace-cmd version"))
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: trace-cmd not installed; {what} did not run");
    }
    ok
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// stdout of a successful run.
pub fn stdout(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

pub fn tscmerge(args: &[&str]) -> String {
    stdout(Command::new(BIN).args(args))
}

pub fn trace_cmd_report(file: &Path, extra: &[&str]) -> String {
    stdout(Command::new("trace-cmd").arg("report").args(extra).arg("-i").arg(file))
}

/// `trace-cmd convert` of `src` into `dst` with `args`.
pub fn convert(src: &Path, dst: &Path, args: &[&str]) {
    let o = run(Command::new("trace-cmd").arg("convert").args(args).arg("-i").arg(src).arg("-o").arg(dst));
    assert!(o.status.success(), "trace-cmd convert {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// One event line of a report: buffer label, CPU, timestamp, event name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub buffer: String,
    pub cpu: u32,
    pub ts: u64,
    pub event: String,
}

/// Parses `[buffer: ]comm-pid [cpu] ts: event: body` lines (trace-cmd pads
/// the timestamp; wide ones touch the `]`). Other lines are skipped.
pub fn parse_report(out: &str) -> Vec<Key> {
    let mut v = Vec::new();
    for line in out.lines() {
        // The CPU is the first `[digits]` followed by a timestamp and ':'.
        let mut found = None;
        let mut i = 0;
        while let Some(off) = line[i..].find('[') {
            let lb = i + off;
            let Some(rb) = line[lb..].find(']').map(|r| lb + r) else { break };
            let cpu = &line[lb + 1..rb];
            let rest = line[rb + 1..].trim_start();
            let ts_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            if !cpu.is_empty() && cpu.bytes().all(|c| c.is_ascii_digit()) && ts_len > 0 && rest.as_bytes().get(ts_len) == Some(&b':') {
                found = Some((lb, cpu.parse().unwrap(), rest[..ts_len].parse().unwrap(), rest[ts_len + 1..].trim_start()));
                break;
            }
            i = lb + 1;
        }
        let Some((lb, cpu, ts, rest)) = found else { continue };
        let event = rest.split(':').next().unwrap_or("").trim().to_string();
        let head = &line[..lb];
        let buffer = match head.trim_start().split_once(": ") {
            Some((b, _)) => b.trim().to_string(),
            None => String::new(),
        };
        v.push(Key { buffer, cpu, ts, event });
    }
    v
}

/// (identical lines, compared lines): line i against line i, over the
/// longer of the two outputs.
pub fn identical_lines(ours: &str, theirs: &str) -> (usize, usize) {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    (same, a.len().max(b.len()))
}

/// The first differing lines, for failure messages.
pub fn first_diffs(ours: &str, theirs: &str, n: usize) -> String {
    let mut s = String::new();
    for (i, (x, y)) in ours.lines().zip(theirs.lines()).enumerate().filter(|(_, (x, y))| x != y).take(n) {
        s.push_str(&format!("line {}:\n  ours:     {x}\n  trace-cmd:{y}\n", i + 1));
    }
    s
}

// ---- building trace.dat files with our writer ----

/// Format ids on this machine (tests/data/*.format).
pub const FUNCTION_ID: u16 = 1;
pub const SCHED_SWITCH_ID: u16 = 372;
pub const KVM_TSC_ID: u16 = 83;
pub const FUNCGRAPH_ENTRY_ID: u16 = 11;
pub const FUNCGRAPH_EXIT_ID: u16 = 10;

pub struct Formats {
    pub header_page: Vec<u8>,
    pub header_event: Vec<u8>,
    pub function: Vec<u8>,
    pub sched_switch: Vec<u8>,
    pub kvm_tsc: Vec<u8>,
    pub kallsyms: Vec<u8>,
    pub funcgraph_entry: Vec<u8>,
    pub funcgraph_exit: Vec<u8>,
}

impl Formats {
    pub fn load() -> Formats {
        let f = Formats {
            header_page: data("header_page"),
            header_event: data("header_event"),
            function: data("ftrace_function.format"),
            sched_switch: data("sched_sched_switch.format"),
            kvm_tsc: data("kvm_kvm_write_tsc_offset.format"),
            kallsyms: data("kallsyms.excerpt"),
            funcgraph_entry: data("ftrace_funcgraph_entry.format"),
            funcgraph_exit: data("ftrace_funcgraph_exit.format"),
        };
        let ids = [
            (&f.function, FUNCTION_ID),
            (&f.sched_switch, SCHED_SWITCH_ID),
            (&f.kvm_tsc, KVM_TSC_ID),
            (&f.funcgraph_entry, FUNCGRAPH_ENTRY_ID),
            (&f.funcgraph_exit, FUNCGRAPH_EXIT_ID),
        ];
        for (text, id) in ids {
            assert!(String::from_utf8_lossy(text).contains(&format!("\nID: {id}\n")), "format ids changed: regenerate tests/data");
        }
        f
    }

    pub fn header(&self) -> Header<'_> {
        Header {
            endian: Endian::Little,
            long_size: 8,
            page_size: 4096,
            header_page: &self.header_page,
            header_event: &self.header_event,
            ftrace_formats: vec![&self.function, &self.funcgraph_entry, &self.funcgraph_exit],
            event_formats: vec![("sched", &self.sched_switch), ("kvm", &self.kvm_tsc)],
            kallsyms: Some(&self.kallsyms),
            printk: None,
            cmdlines: CMDLINES,
        }
    }
}

pub const CMDLINES: &[u8] = b"4242 worker\n4343 qemu-vcpu0\n4344 qemu-vcpu1\n";

pub fn common(ty: u16, pid: i32) -> Vec<u8> {
    let mut r = ty.to_le_bytes().to_vec();
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(&pid.to_le_bytes());
    r
}

fn comm16(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

pub fn function(pid: i32, ip: u64, parent: u64) -> Vec<u8> {
    let mut r = common(FUNCTION_ID, pid);
    r.extend_from_slice(&ip.to_le_bytes());
    r.extend_from_slice(&parent.to_le_bytes());
    r
}

pub fn sched_switch(prev: i32, prev_state: i64, next: i32) -> Vec<u8> {
    let name = |p: i32| match p {
        4242 => "worker",
        4343 => "qemu-vcpu0",
        4344 => "qemu-vcpu1",
        _ => "swapper/0",
    };
    let mut r = common(SCHED_SWITCH_ID, prev);
    r.extend_from_slice(&comm16(name(prev)));
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
    r.extend_from_slice(&prev_state.to_le_bytes());
    r.extend_from_slice(&comm16(name(next)));
    r.extend_from_slice(&next.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
    r
}

pub fn kvm_tsc(pid: i32, vcpu: u32, prev: u64, next: u64) -> Vec<u8> {
    let mut r = common(KVM_TSC_ID, pid);
    r.extend_from_slice(&vcpu.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&next.to_le_bytes());
    r
}

pub fn funcgraph_entry(pid: i32, func: u64, depth: u32) -> Vec<u8> {
    let mut r = common(FUNCGRAPH_ENTRY_ID, pid);
    r.extend_from_slice(&func.to_le_bytes());
    r.extend_from_slice(&depth.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r
}

pub fn funcgraph_exit(pid: i32, func: u64, depth: u32, calltime: u64, rettime: u64) -> Vec<u8> {
    let mut r = common(FUNCGRAPH_EXIT_ID, pid);
    r.extend_from_slice(&func.to_le_bytes());
    r.extend_from_slice(&depth.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&calltime.to_le_bytes());
    r.extend_from_slice(&rettime.to_le_bytes());
    r
}

/// Events of one CPU of one buffer, in time order.
pub struct CpuData {
    pub buffer: &'static str,
    pub cpu: u32,
    pub events: Vec<(u64, Vec<u8>)>,
}

/// Writes a trace.dat (buffers in order of first appearance in `data`,
/// the top level "" first when present) and returns its bytes.
pub fn write_dat(f: &Formats, version: u32, comp: Compression, cpus: u32, data: &[CpuData]) -> Vec<u8> {
    let paged: Vec<CpuPages> = data
        .iter()
        .map(|d| {
            let mut pb = PageBuilder::default();
            let pages = ftrace::write::pack_events(&mut pb, d.events.iter().map(|(ts, r)| (*ts, r.as_slice()))).unwrap();
            CpuPages { buffer: d.buffer, cpu: d.cpu, pages }
        })
        .collect();
    write_dat_pages(f, version, comp, cpus, &paged)
}

/// Pages of one CPU of one buffer, built by the caller (lost-events marks...).
pub struct CpuPages {
    pub buffer: &'static str,
    pub cpu: u32,
    pub pages: Vec<Vec<u8>>,
}

/// [`write_dat`] from ready pages.
pub fn write_dat_pages(f: &Formats, version: u32, comp: Compression, cpus: u32, data: &[CpuPages]) -> Vec<u8> {
    let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), version, comp, &f.header()).unwrap();
    w.add_option(OptionData::Uname("Linux reader-test 6.18 x86_64".into())).unwrap();
    w.add_option(OptionData::Version("tscmerge reader tests".into())).unwrap();
    let mut names: Vec<&str> = Vec::new();
    for d in data {
        if !names.contains(&d.buffer) {
            names.push(d.buffer);
        }
    }
    names.sort_by_key(|n| !n.is_empty());
    let ids: Vec<_> = names.iter().map(|n| w.add_buffer(n, "x86-tsc", cpus).unwrap()).collect();
    for (n, id) in names.iter().zip(&ids) {
        for d in data.iter().filter(|d| d.buffer == *n) {
            w.write_cpu_pages(*id, d.cpu, d.pages.iter().map(|p| p.as_slice())).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// A v7 file (`comp`) whose buffer lists `cpus` CPUs that all point at CPU 0's
/// data: one chunk inflating to `pages` empty pages.
pub fn cpus_sharing_one_chunk(f: &Formats, comp: Compression, cpus: u32, pages: usize) -> Vec<u8> {
    let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, comp, &f.header()).unwrap();
    w.set_chunk_pages(pages);
    let id = w.add_buffer("", "x86-tsc", cpus).unwrap();
    let empty = vec![0u8; 4096];
    w.write_cpu_pages(id, 0, std::iter::repeat_n(empty.as_slice(), pages)).unwrap();
    for cpu in 1..cpus {
        w.write_cpu_pages(id, cpu, std::iter::once(empty.as_slice())).unwrap();
    }
    let mut bytes = w.finish().unwrap().into_inner();
    let dat = ftrace::tracedat::TraceDat::parse(&bytes).unwrap();
    let table: Vec<(u32, u64, u64)> = dat.buffers()[0].cpus.iter().map(|c| (c.cpu, c.offset.0, c.size)).collect();
    drop(dat);
    // The CPU table entries (u32 cpu, u64 offset, u64 size), found by value.
    let (_, off0, size0) = table[0];
    for &(cpu, off, size) in &table[1..] {
        let mut entry = cpu.to_le_bytes().to_vec();
        entry.extend(off.to_le_bytes());
        entry.extend(size.to_le_bytes());
        let at = bytes.windows(entry.len()).position(|w| w == entry.as_slice()).expect("CPU table entry");
        bytes[at + 4..at + 12].copy_from_slice(&off0.to_le_bytes());
        bytes[at + 12..at + 20].copy_from_slice(&size0.to_le_bytes());
    }
    bytes
}
