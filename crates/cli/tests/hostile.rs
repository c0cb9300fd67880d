//! The hostile-input suite (issue 20, item 7): inputs made at test time by
//! one small generator per class, each run through `tscmerge` (report, info,
//! or merge) with a deadline, its peak RSS measured by wait4(2). Classes:
//! truncations, byte flips, lying sizes (size fields of trace.dat sections,
//! compressed bodies, CPU tables and chunks overwritten), compression bombs
//! (tiny zstd/zlib files inflating to tens of MiB, sections referenced many
//! times, CPUs sharing a chunk), special files (FIFOs, /dev/zero, /dev/urandom,
//! /dev/null, sockets, directories as inputs, raw-capture side files and
//! --kvm-debugfs).
//!
//! Every run must end by itself (no hang), by exit 0, 1 or 2: never a panic
//! (101) or a signal, with peak RSS under 1 GB. `cargo test` runs
//! HOSTILE_COUNT inputs per class (8 by default); bench/hostile.sh runs
//! 1000 and prints the table. HOSTILE_SEED replays a run.

mod reader_common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ftrace::write::{option_id, Compression, OptionData, TraceDatWriter};
use reader_common::{Formats, BIN};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Peak RSS allowed for any input under 10 MB.
const RSS_LIMIT_KB: i64 = 1 << 20;
/// A run still going after this is a hang.
const DEADLINE: Duration = Duration::from_secs(30);

/// How a run ended.
#[derive(Default, Clone, Copy)]
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    hang: bool,
    rss_kb: i64,
}

/// Runs `args` with stdout and stderr discarded (stderr kept in `err`),
/// polling wait4(2) until it ends or the deadline passes (then SIGKILL).
fn run(args: &[String], err: &Path) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(err).unwrap());
    // A pre_exec hook makes std fork(2) instead of posix_spawn (a vfork that
    // shares our memory): exec(2) keeps the old memory's peak in the
    // child's ru_maxrss, which would be this test's own peak (the bombs are
    // made here); a fork's copy starts at our current RSS, a few MB.
    // SAFETY: the hook does nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || Ok(()));
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let t0 = Instant::now();
    let mut hang = false;
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is valid; wait4 on our own child, which
        // the Child handle then never waits for.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let (code, signal) = if libc::WIFEXITED(status) { (Some(libc::WEXITSTATUS(status)), None) } else { (None, Some(libc::WTERMSIG(status))) };
            return Outcome { code: if hang { None } else { code }, signal: if hang { None } else { signal }, hang, rss_kb: ru.ru_maxrss };
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if !hang && t0.elapsed() > DEADLINE {
            hang = true;
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The seed files every mutation starts from, made once by `synth`.
struct Seeds {
    dats: Vec<Vec<u8>>,
    texts: Vec<Vec<u8>>,
    guest_txt: PathBuf,
    guest_dat: PathBuf,
}

fn seeds(dir: &Path) -> Seeds {
    let mut dats = Vec::new();
    let mut texts = Vec::new();
    let (mut guest_txt, mut guest_dat) = (PathBuf::new(), PathBuf::new());
    for comp in ["zstd", "zlib", "none"] {
        let d = dir.join(format!("seed-{comp}"));
        let out = Command::new(BIN)
            .args(["synth", "-o", d.to_str().unwrap(), "--format", "both", "--vms", "1,2", "--windows", "30", "--compression", comp])
            .output()
            .unwrap();
        assert!(out.status.success(), "synth: {}", String::from_utf8_lossy(&out.stderr));
        dats.push(std::fs::read(d.join("host.dat")).unwrap());
        dats.push(std::fs::read(d.join("guest-vm1.dat")).unwrap());
        if comp == "zstd" {
            texts.push(std::fs::read(d.join("host.txt")).unwrap());
            texts.push(std::fs::read(d.join("guest-vm1.txt")).unwrap());
            guest_txt = d.join("guest-vm0.txt");
            guest_dat = d.join("guest-vm0.dat");
        }
    }
    // A trace-cmd pair too: GUEST, TRACEID, TIME_SHIFT options.
    let d = dir.join("seed-tc");
    let out = Command::new(BIN).args(["synth", "-o", d.to_str().unwrap(), "--format", "trace-cmd", "--vms", "2", "--windows", "20"]).output().unwrap();
    assert!(out.status.success(), "synth: {}", String::from_utf8_lossy(&out.stderr));
    dats.push(std::fs::read(d.join("host.dat")).unwrap());
    dats.push(std::fs::read(d.join("guest-vm0.dat")).unwrap());
    Seeds { dats, texts, guest_txt, guest_dat }
}

/// One input: a file's bytes (or a path set up by the generator) and the
/// command to run on it.
struct Case {
    /// Written to the job's input path when Some.
    bytes: Option<Vec<u8>>,
    /// Arguments; `{IN}` is the input path.
    args: Vec<String>,
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// report, info, or a merge with a known-good guest, on the input.
fn command(rng: &mut Rng, s: &Seeds, text: bool) -> Vec<String> {
    match rng.below(4) {
        0 | 1 => args(&["report", "{IN}"]),
        2 => args(&["info", "{IN}"]),
        _ => {
            let g = if text { &s.guest_txt } else { &s.guest_dat };
            args(&["merge", "{IN}", "--guest", &format!("vm0={}", g.display())])
        }
    }
}

fn seed<'a>(rng: &mut Rng, s: &'a Seeds) -> (&'a [u8], bool) {
    if rng.below(4) == 0 {
        (rng.pick(&s.texts).as_slice(), true)
    } else {
        (rng.pick(&s.dats).as_slice(), false)
    }
}

fn truncation(rng: &mut Rng, s: &Seeds) -> Case {
    let (b, text) = seed(rng, s);
    // Half anywhere, half in the first 16 KiB (headers, sections).
    let len = if rng.below(2) == 0 { rng.below(b.len() as u64) } else { rng.below(16384.min(b.len() as u64)) } as usize;
    Case { bytes: Some(b[..len].to_vec()), args: command(rng, s, text) }
}

fn byte_flips(rng: &mut Rng, s: &Seeds) -> Case {
    let (b, text) = seed(rng, s);
    let mut b = b.to_vec();
    let n = 1 + rng.below(16);
    for _ in 0..n {
        let i = if rng.below(2) == 0 { rng.below(b.len() as u64) } else { rng.below(8192.min(b.len() as u64)) } as usize;
        if rng.below(3) == 0 {
            b[i] = rng.next() as u8;
        } else {
            b[i] ^= 1 << rng.below(8);
        }
    }
    Case { bytes: Some(b), args: command(rng, s, text) }
}

/// Offsets of size fields in a trace.dat: section sizes, compressed bodies'
/// two sizes, CPU table offsets and sizes, the first chunk headers.
fn size_fields(b: &[u8]) -> Vec<(usize, usize)> {
    let mut f = Vec::new();
    let Ok(dat) = ftrace::tracedat::TraceDat::parse(b) else { return f };
    for s in dat.sections() {
        let at = s.offset.0 as usize;
        f.push((at + 8, 8));
        if s.flags & 1 != 0 {
            f.push((at + 16, 4));
            f.push((at + 20, 4));
        }
    }
    for buf in dat.buffers() {
        for c in &buf.cpus {
            let mut entry = c.cpu.to_le_bytes().to_vec();
            entry.extend(c.offset.0.to_le_bytes());
            entry.extend(c.size.to_le_bytes());
            if let Some(at) = b.windows(entry.len()).position(|w| w == entry.as_slice()) {
                f.push((at + 4, 8));
                f.push((at + 12, 8));
            }
            let at = c.offset.0 as usize;
            for k in 0..4 {
                f.push((at + 4 * k, 4));
            }
        }
    }
    f.retain(|&(at, n)| at + n <= b.len());
    f
}

fn lying_sizes(rng: &mut Rng, s: &Seeds) -> Case {
    let b = rng.pick(&s.dats);
    let mut b = b.clone();
    let fields = size_fields(&b);
    let len = b.len() as u64;
    let values = [0u64, 1, 7, len - 1, len + 1, len * 2, 1 << 20, 64 << 20, 512 << 20, (1 << 31) - 1, 1 << 31, u32::MAX as u64, 1 << 40, u64::MAX / 2, u64::MAX];
    for _ in 0..1 + rng.below(3) {
        let (at, n) = if !fields.is_empty() && rng.below(4) != 0 {
            *rng.pick(&fields)
        } else {
            (rng.below(len.min(8192) - 8) as usize & !3, if rng.below(2) == 0 { 4 } else { 8 })
        };
        let v = *rng.pick(&values);
        b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }
    Case { bytes: Some(b), args: command(rng, s, false) }
}

fn bomb(rng: &mut Rng, s: &Seeds, f: &Formats) -> Case {
    let comp = if rng.below(2) == 0 { Compression::Zstd } else { Compression::Zlib };
    let mut bytes = match rng.below(3) {
        // One CPU of many empty pages in few chunks (up to 64 MiB inflated).
        0 => {
            let pages = 1usize << (8 + rng.below(7));
            let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, comp, &f.header()).unwrap();
            w.set_chunk_pages(pages.min(1 << (6 + rng.below(9))));
            let cpus = 1 + rng.below(8) as u32;
            let id = w.add_buffer("", "x86-tsc", cpus).unwrap();
            let empty = vec![0u8; 4096];
            for cpu in 0..cpus {
                w.write_cpu_pages(id, cpu, std::iter::repeat_n(empty.as_slice(), if cpu == 0 { pages } else { 1 })).unwrap();
            }
            w.finish().unwrap().into_inner()
        }
        // A big repetitive kallsyms section, referenced again by options.
        1 => {
            let line = b"ffffffff81000000 T _stext\n";
            let big: Vec<u8> = line.iter().copied().cycle().take((1usize << (20 + rng.below(7))).min(64 << 20)).collect();
            let mut h = f.header();
            h.kallsyms = Some(&big);
            let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, comp, &h).unwrap();
            let refs = rng.below(9);
            for _ in 0..refs {
                // An offset near the start: some land on the section, most on nothing.
                w.add_option(OptionData::Raw { id: option_id::KALLSYMS, data: (rng.below(4096)).to_le_bytes().to_vec() }).unwrap();
            }
            w.add_buffer("", "x86-tsc", 1).unwrap();
            w.finish().unwrap().into_inner()
        }
        // CPUs of one buffer all pointing at one big chunk.
        _ => {
            let pages = 1usize << (8 + rng.below(5));
            let cpus = 2 + rng.below(15) as u32;
            reader_common::cpus_sharing_one_chunk(&f, comp, cpus, pages)
        }
    };
    // A third of them also lie about a size.
    if rng.below(3) == 0 {
        let fields = size_fields(&bytes);
        if !fields.is_empty() {
            let (at, n) = *rng.pick(&fields);
            let v = *rng.pick(&[u32::MAX as u64, 512 << 20, 1 << 40]);
            bytes[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
    }
    let mut args = command(rng, s, false);
    if rng.below(4) == 0 {
        args.extend(["--max-memory".to_string(), "64M".to_string()]);
    }
    Case { bytes: Some(bytes), args }
}

const SIDE_FILES: &[&str] = &["meta.txt", "header_page", "header_event", "printk_formats", "kallsyms", "saved_cmdlines", "saved_tgids", "trace_clock", "cpu0.raw"];

/// Makes `path` a special file of kind `k`; returns whether a process must
/// keep it alive (a socket's listener is returned through `keep`).
fn make_special(k: u64, path: &Path, keep: &mut Vec<std::os::unix::net::UnixListener>) {
    let _ = std::fs::remove_file(path);
    match k {
        0 => {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo on a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        1 => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        2 => std::os::unix::fs::symlink("/dev/urandom", path).unwrap(),
        3 => std::os::unix::fs::symlink("/dev/null", path).unwrap(),
        4 => keep.push(std::os::unix::net::UnixListener::bind(path).unwrap()),
        _ => std::fs::create_dir_all(path).unwrap(),
    }
}

fn special(rng: &mut Rng, s: &Seeds, dir: &Path, keep: &mut Vec<std::os::unix::net::UnixListener>) -> Case {
    let kind = rng.below(6);
    let _ = std::fs::remove_dir_all(dir.join("sp"));
    std::fs::create_dir_all(dir.join("sp")).unwrap();
    match rng.below(3) {
        // The main input itself.
        0 => {
            let p = dir.join("sp/input");
            make_special(kind, &p, keep);
            let mut a = command(rng, s, true);
            a[1] = p.display().to_string();
            Case { bytes: None, args: a }
        }
        // A side file of a raw capture directory (the rest plausible).
        1 => {
            let raw = dir.join("sp/raw");
            std::fs::create_dir_all(&raw).unwrap();
            std::fs::write(raw.join("meta.txt"), "format=tscmerge-raw 1\npage_size=4096\nlong_size=8\nendian=little\n").unwrap();
            std::fs::write(raw.join("trace_clock"), "[x86-tsc]\n").unwrap();
            std::fs::write(raw.join("cpu0.raw"), vec![0u8; 4096]).unwrap();
            let name = rng.pick(SIDE_FILES);
            make_special(kind, &raw.join(name), keep);
            Case { bytes: None, args: args(&["report", raw.to_str().unwrap()]) }
        }
        // --kvm-debugfs.
        _ => {
            let p = dir.join("sp/kvm_debugfs.txt");
            make_special(kind, &p, keep);
            let host = dir.join("sp/host.dat");
            std::fs::write(&host, &s.dats[0]).unwrap();
            Case { bytes: None, args: args(&["merge", host.to_str().unwrap(), "--guest", &format!("vm0={}", s.guest_dat.display()), "--kvm-debugfs", p.to_str().unwrap()]) }
        }
    }
}

#[derive(Default)]
struct Row {
    runs: usize,
    ok: usize,
    errors: usize,
    panics: usize,
    signals: usize,
    hangs: usize,
    other: usize,
    max_rss_kb: i64,
    max_input: u64,
    secs: f64,
    failures: Vec<String>,
}

#[test]
fn hostile_inputs_never_panic_hang_or_blow_memory() {
    let count: usize = std::env::var("HOSTILE_COUNT").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("hostile: {count} inputs per class, seed {seed} (HOSTILE_SEED to replay)");
    let dir = reader_common::tmpdir("hostile");
    let s = seeds(&dir);
    let f = Formats::load();
    let classes = ["truncation", "byte flips", "lying sizes", "compression bombs", "special files"];
    let mut rows: Vec<Row> = classes.iter().map(|_| Row::default()).collect();
    let mut rng = Rng(seed);
    let input = dir.join("input");
    let err = dir.join("stderr");
    for (ci, class) in classes.iter().enumerate() {
        let t0 = Instant::now();
        for i in 0..count {
            let mut keep = Vec::new();
            let case = match ci {
                0 => truncation(&mut rng, &s),
                1 => byte_flips(&mut rng, &s),
                2 => lying_sizes(&mut rng, &s),
                3 => bomb(&mut rng, &s, &f),
                _ => special(&mut rng, &s, &dir, &mut keep),
            };
            let row = &mut rows[ci];
            if let Some(b) = &case.bytes {
                std::fs::write(&input, b).unwrap();
                row.max_input = row.max_input.max(b.len() as u64);
            }
            let a: Vec<String> = case.args.iter().map(|x| x.replace("{IN}", input.to_str().unwrap())).collect();
            let o = run(&a, &err);
            drop(keep);
            row.runs += 1;
            row.max_rss_kb = row.max_rss_kb.max(o.rss_kb);
            let bad = match (o.hang, o.signal, o.code) {
                (true, ..) => {
                    row.hangs += 1;
                    true
                }
                (_, Some(_), _) => {
                    row.signals += 1;
                    true
                }
                (_, _, Some(101)) => {
                    row.panics += 1;
                    true
                }
                (_, _, Some(0)) => {
                    row.ok += 1;
                    false
                }
                (_, _, Some(1 | 2)) => {
                    row.errors += 1;
                    false
                }
                _ => {
                    row.other += 1;
                    true
                }
            };
            if bad || o.rss_kb > RSS_LIMIT_KB {
                let keep_as = dir.join(format!("failure-{ci}-{i}"));
                if case.bytes.is_some() {
                    let _ = std::fs::copy(&input, &keep_as);
                }
                let e = std::fs::read_to_string(&err).unwrap_or_default();
                row.failures.push(format!(
                    "{class} #{i}: {a:?}: code {:?} signal {:?} hang {} rss {} KiB (input kept as {}): {}",
                    o.code,
                    o.signal,
                    o.hang,
                    o.rss_kb,
                    keep_as.display(),
                    e.lines().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
        rows[ci].secs = t0.elapsed().as_secs_f64();
    }
    eprintln!("| class | inputs | exit 0 | exit 1/2 (error) | panics (101) | signals | hangs (>{}s) | other | peak RSS | largest input | time |", DEADLINE.as_secs());
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, r) in classes.iter().zip(&rows) {
        eprintln!(
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {:.1} KB | {:.0} s |",
            r.runs,
            r.ok,
            r.errors,
            r.panics,
            r.signals,
            r.hangs,
            r.other,
            r.max_rss_kb as f64 * 1024.0 / 1e6,
            r.max_input as f64 / 1e3,
            r.secs
        );
    }
    let failures: Vec<&String> = rows.iter().flat_map(|r| &r.failures).collect();
    for f in failures.iter().take(20) {
        eprintln!("FAILURE {f}");
    }
    assert!(failures.is_empty(), "{} hostile inputs panicked, were killed by a signal, hung or passed {RSS_LIMIT_KB} KiB (seed {seed}); first: {}", failures.len(), failures[0]);
}
