//! trace.dat writer against trace-cmd 3.1.6: files written from PageBuilder
//! pages (real format files from this machine's tracefs, see
//! tests/data/write/README.md) must be reported by `trace-cmd report -t` with
//! exactly the events put in. zlib is checked structurally (Debian's trace-cmd
//! has no zlib): every block is inflated and compared with the `none` file.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use ftrace::write::{
    BufferId, Compression, Header, OptionData, PageBuilder, TraceDatWriter, TsyncSample,
};
use ftrace::Endian;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/write");
const SCHED_SWITCH_ID: u16 = 372;
const KVM_TSC_ID: u16 = 83;
const PRINT_ID: u16 = 5;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(DATA).join(name)).unwrap()
}

struct Formats {
    header_page: Vec<u8>,
    header_event: Vec<u8>,
    sched_switch: Vec<u8>,
    kvm_tsc: Vec<u8>,
    print: Vec<u8>,
}

fn formats() -> Formats {
    Formats {
        header_page: data("header_page"),
        header_event: data("header_event"),
        sched_switch: data("sched_switch.format"),
        kvm_tsc: data("kvm_write_tsc_offset.format"),
        print: data("print.format"),
    }
}

const CMDLINES: &[u8] = b"4242 worker\n4343 vcpu0\n";

fn header(f: &Formats) -> Header<'_> {
    Header {
        endian: Endian::Little,
        long_size: 8,
        page_size: 4096,
        header_page: &f.header_page,
        header_event: &f.header_event,
        ftrace_formats: vec![&f.print],
        event_formats: vec![("sched", &f.sched_switch), ("kvm", &f.kvm_tsc)],
        kallsyms: None,
        printk: None,
        cmdlines: CMDLINES,
    }
}

/// What we put in, and what trace-cmd must print.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    buffer: String,
    cpu: u32,
    ts: u64,
    name: String,
    /// Rendered fields, checked where given.
    text: Option<String>,
}

fn common(ty: u16, pid: i32) -> Vec<u8> {
    let mut r = ty.to_le_bytes().to_vec();
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(&pid.to_le_bytes());
    r
}

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn sched_switch(prev: i32, next: i32) -> Vec<u8> {
    let mut r = common(SCHED_SWITCH_ID, prev);
    r.extend_from_slice(&comm(if prev == 4242 { "worker" } else { "other" }));
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
    r.extend_from_slice(&1i64.to_le_bytes());
    r.extend_from_slice(&comm("next"));
    r.extend_from_slice(&next.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
    assert_eq!(r.len(), 64);
    r
}

fn kvm_tsc(vcpu: u32, prev: u64, next: u64) -> Vec<u8> {
    let mut r = common(KVM_TSC_ID, 4343);
    r.extend_from_slice(&vcpu.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&next.to_le_bytes());
    r
}

fn print_ev(msg: &str) -> Vec<u8> {
    let mut r = common(PRINT_ID, 4242);
    r.extend_from_slice(&0u64.to_le_bytes());
    r.extend_from_slice(msg.as_bytes());
    r.push(0);
    r
}

/// Events per (buffer, cpu), in time order, with enough of them for many
/// pages and chunks, and gaps beyond 27 bits (time extends).
type CpuEvents = (String, u32, Vec<(u64, Vec<u8>, Ev)>);

fn make_events() -> Vec<CpuEvents> {
    let mut out = Vec::new();
    for cpu in 0..2u32 {
        let mut evs = Vec::new();
        let mut ts = 1_000_000_000u64 + cpu as u64 * 7;
        for i in 0..1500u64 {
            ts += if i % 97 == 0 {
                (1 << 27) + 12345 * i
            } else {
                1000 + i % 13
            };
            let (rec, name) = if cpu == 1 && i % 100 == 50 {
                (print_ev(&format!("hello {i}")), "print")
            } else {
                (sched_switch(4242, 4343), "sched_switch")
            };
            let ev = Ev {
                buffer: String::new(),
                cpu,
                ts,
                name: name.into(),
                text: None,
            };
            evs.push((ts, rec, ev));
        }
        out.push((String::new(), cpu, evs));
    }
    let mut evs = Vec::new();
    let big = 18446743876406744092u64;
    for (i, ts) in [1_000_000_500u64, 1_500_000_000, 9_000_000_000_000]
        .into_iter()
        .enumerate()
    {
        let (prev, next) = if i == 0 {
            (0, big)
        } else {
            (big, big - 1000 * i as u64)
        };
        let text = format!("vcpu={} prev={prev} next={next}", i % 2);
        let ev = Ev {
            buffer: "tsc_offset".into(),
            cpu: 0,
            ts,
            name: "kvm_write_tsc_offset".into(),
            text: Some(text),
        };
        evs.push((ts, kvm_tsc((i % 2) as u32, prev, next), ev));
    }
    out.push(("tsc_offset".into(), 0, evs));
    out
}

fn write_file(version: u32, comp: Compression) -> (Vec<u8>, Vec<Ev>) {
    write_file_as(version, comp, false)
}

/// `deferred`: metadata after the data (`TraceDatWriter::new_deferred`).
fn write_file_as(version: u32, comp: Compression, deferred: bool) -> (Vec<u8>, Vec<Ev>) {
    write_file_by(version, comp, deferred, None)
}

/// `chunks`: pages per chunk, and whether the pages are compressed outside
/// the writer (`ChunkCompressor`, `write_chunk`) instead of given one by one.
fn write_file_by(version: u32, comp: Compression, deferred: bool, chunks: Option<(usize, bool)>) -> (Vec<u8>, Vec<Ev>) {
    let f = formats();
    let h = header(&f);
    let mut w = if deferred {
        TraceDatWriter::new_deferred(Cursor::new(Vec::new()), comp, h.endian, h.long_size, h.page_size).unwrap()
    } else {
        TraceDatWriter::new(Cursor::new(Vec::new()), version, comp, &h).unwrap()
    };
    w.add_option(OptionData::Uname("Linux writer-test 6.18 x86_64".into()))
        .unwrap();
    w.add_option(OptionData::Version("tscmerge-test".into()))
        .unwrap();
    w.add_option(OptionData::TraceId(0x1234_5678_9abc_def0))
        .unwrap();
    w.add_option(OptionData::CpuStat("CPU: 0\nentries: 0\n".into()))
        .unwrap();
    let top = w.add_buffer("", "x86-tsc", 2).unwrap();
    let inst = w.add_buffer("tsc_offset", "x86-tsc", 2).unwrap();
    let mut expect = Vec::new();
    for (name, cpu, evs) in make_events() {
        let id: BufferId = if name.is_empty() { top } else { inst };
        let mut pb = PageBuilder::default();
        let pages =
            ftrace::write::pack_events(&mut pb, evs.iter().map(|(ts, r, _)| (*ts, r.as_slice())))
                .unwrap();
        if let Some((n, _)) = chunks {
            w.set_chunk_pages(n);
        }
        match chunks {
            None | Some((_, false)) => w.write_cpu_pages(id, cpu, pages.iter().map(|p| p.as_slice())).unwrap(),
            Some((n, true)) => {
                let mut zc = w.chunk_compressor().unwrap().expect("a compressed file");
                w.start_cpu(id, cpu).unwrap();
                for c in pages.chunks(n) {
                    let raw = c.concat();
                    let mut block = Vec::new();
                    zc.compress(&raw, &mut block).unwrap();
                    w.write_chunk(raw.len(), &block).unwrap();
                }
                w.end_cpu().unwrap();
            }
        }
        expect.extend(evs.into_iter().map(|e| e.2));
    }
    if version == 7 {
        // Options after the data land in a last options section.
        w.add_option(OptionData::CpuStat("CPU: 1\nentries: 0\n".into()))
            .unwrap();
    }
    let out = if deferred { w.finish_with_metadata(&h) } else { w.finish() };
    (out.unwrap().into_inner(), expect)
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("write_dat");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn trace_cmd() -> bool {
    // `trace-cmd --version` exits 255 in 3.1.6; look at what it prints.
    let ok = Command::new("trace-cmd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("trace-cmd version"))
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: trace-cmd not installed; the oracle comparison did not run");
    }
    ok
}

/// Parses `trace-cmd report -t` event lines: `comm-pid [cpu] ts: name: text`.
/// With instances, trace-cmd prefixes lines with the buffer name.
fn parse_report(out: &str) -> Vec<Ev> {
    let mut evs = Vec::new();
    for line in out.lines() {
        let Some(lb) = line.find(" [") else { continue };
        // trace-cmd pads the timestamp to a width; wide ones touch the "]".
        let Some(rb) = line[lb..].find(']') else {
            continue;
        };
        let cpu: u32 = match line[lb + 2..lb + rb].trim().parse() {
            Ok(c) => c,
            Err(_) => continue,
        };
        let rest = line[lb + rb + 1..].trim_start();
        let mut parts = rest.splitn(3, ": ");
        let (Some(ts), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(ts) = ts.trim().parse::<u64>() else {
            continue;
        };
        let text = parts.next().unwrap_or("").trim().to_string();
        // "buffer: comm-pid" when the file has instances.
        let head = &line[..lb];
        let buffer = match head.trim_start().split_once(": ") {
            Some((b, _)) => b.trim().to_string(),
            None => String::new(),
        };
        evs.push(Ev {
            buffer,
            cpu,
            ts,
            name: name.trim().to_string(),
            text: Some(text),
        });
    }
    evs
}

fn report(path: &Path) -> String {
    let o = Command::new("trace-cmd")
        .args(["report", "-t", "-i"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "trace-cmd report failed: {stderr}");
    assert!(
        !stderr.to_lowercase().contains("unknown") && !stderr.contains("ailed"),
        "trace-cmd complained: {stderr}"
    );
    String::from_utf8(o.stdout).unwrap()
}

fn check_against_report(version: u32, comp: Compression, file: &str) {
    check_against_report_as(version, comp, file, false)
}

fn check_against_report_as(version: u32, comp: Compression, file: &str, deferred: bool) {
    let (bytes, mut expect) = write_file_as(version, comp, deferred);
    let path = tmp(file);
    std::fs::write(&path, &bytes).unwrap();
    // Our reader first: every event back, wherever the metadata sits.
    let dat = ftrace::tracedat::TraceDat::parse(&bytes).unwrap();
    assert!(dat.event_formats().count() + dat.ftrace_formats().count() > 0);
    let mut n = 0;
    for (bi, b) in dat.buffers().iter().enumerate() {
        for ci in 0..b.cpus.len() {
            let mut ev = dat.cpu_events(bi, ci).unwrap();
            while let Some(r) = ev.next_event().unwrap() {
                n += matches!(r, ftrace::ring::RingEvent::Event { .. }) as usize;
            }
        }
    }
    assert_eq!(n, expect.len(), "events read back by ftrace::tracedat");
    if !trace_cmd() {
        return;
    }
    let out = report(&path);
    let mut got = parse_report(&out);
    assert_eq!(
        got.len(),
        expect.len(),
        "event count; report:\n{}",
        &out[..out.len().min(3000)]
    );
    let key = |e: &Ev| (e.buffer.clone(), e.cpu, e.ts, e.name.clone());
    got.sort_by_key(key);
    expect.sort_by_key(key);
    for (g, e) in got.iter().zip(&expect) {
        assert_eq!(key(g), key(e), "report line differs");
        if let Some(t) = &e.text {
            assert_eq!(g.text.as_deref(), Some(t.as_str()));
        }
        if e.name == "sched_switch" {
            let t = g.text.as_deref().unwrap();
            assert!(
                t.starts_with("worker:4242 [120] S ==> next:4343 [120]"),
                "{t}"
            );
        }
        if e.name == "print" {
            assert!(g.text.as_deref().unwrap().contains("hello "));
        }
    }
    // Buffers, clocks and CPUs as trace-cmd sees them.
    let o = Command::new("trace-cmd")
        .args(["dump", "--summary"])
        .arg(&path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    if version == 7 {
        assert!(
            s.contains("[buffer \"\", \"x86-tsc\" clock, 4096 page size, 2 cpus"),
            "{s}"
        );
        assert!(
            s.contains("[buffer \"tsc_offset\", \"x86-tsc\" clock, 4096 page size, 1 cpus"),
            "{s}"
        );
        assert!(s.contains(comp.name()), "{s}");
    }
}

#[test]
fn v6_reported_by_trace_cmd() {
    check_against_report(6, Compression::None, "two.v6.dat");
}

#[test]
fn v7_none_reported_by_trace_cmd() {
    check_against_report(7, Compression::None, "two.v7none.dat");
}

#[test]
fn v7_zstd_reported_by_trace_cmd() {
    check_against_report(7, Compression::Zstd, "two.v7zstd.dat");
}

#[test]
fn v7_metadata_last_reported_by_trace_cmd() {
    check_against_report_as(7, Compression::Zstd, "two.v7zstd-deferred.dat", true);
    check_against_report_as(7, Compression::None, "two.v7none-deferred.dat", true);
}

/// Chunks compressed outside the writer (on another thread, in `merge
/// --format dat -j 2`) make the same file as pages handed to it one by one.
#[test]
fn chunks_compressed_apart_write_the_same_file() {
    for comp in [Compression::Zstd, Compression::Zlib] {
        for n in [1, 2, 3] {
            let (by_pages, _) = write_file_by(7, comp, true, Some((n, false)));
            let (by_chunks, _) = write_file_by(7, comp, true, Some((n, true)));
            assert!(by_pages == by_chunks, "{comp:?}, {n} pages per chunk");
        }
    }
    // Not whole pages, or more than a chunk: refused.
    let f = formats();
    let h = header(&f);
    let mut w = TraceDatWriter::new_deferred(Cursor::new(Vec::new()), Compression::Zstd, h.endian, h.long_size, h.page_size).unwrap();
    let b = w.add_buffer("", "x86-tsc", 1).unwrap();
    w.start_cpu(b, 0).unwrap();
    assert!(w.write_chunk(100, &[0; 8]).is_err());
    assert!(w.write_chunk(w.chunk_bytes() + 4096, &[0; 8]).is_err());
}

#[test]
fn metadata_last_needs_its_own_finish() {
    let f = formats();
    let h = header(&f);
    let w = TraceDatWriter::new_deferred(Cursor::new(Vec::new()), Compression::Zstd, h.endian, h.long_size, h.page_size).unwrap();
    assert!(w.finish().is_err());
    let w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, Compression::Zstd, &h).unwrap();
    assert!(w.finish_with_metadata(&h).is_err());
}

// ---- structural checks (no trace-cmd needed) ----

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A v7 file's sections in file order: (id, flags, data start, data size).
fn sections(b: &[u8]) -> (String, Vec<(u16, u16, usize, usize)>) {
    assert_eq!(&b[..10], b"\x17\x08\x44tracing");
    assert_eq!(&b[10..12], b"7\0");
    let mut p = 18;
    let name_end = p + b[p..].iter().position(|&c| c == 0).unwrap();
    let codec = String::from_utf8(b[p..name_end].to_vec()).unwrap();
    p = name_end + 1;
    p += b[p..].iter().position(|&c| c == 0).unwrap() + 1;
    p += 8;
    let mut out = Vec::new();
    while p < b.len() {
        let (id, fl, size) = (le16(b, p), le16(b, p + 2), le64(b, p + 8) as usize);
        out.push((id, fl, p + 16, size));
        p += 16 + size;
    }
    assert_eq!(p, b.len(), "sections tile the file exactly");
    (codec, out)
}

/// Decompresses a v7 file's compressed sections and CPU chunks, and returns
/// the same bytes an uncompressed writer would have produced for each part:
/// (metadata sections' data, per-CPU page data).
fn inflate_parts(b: &[u8], inflate: &dyn Fn(&[u8]) -> Vec<u8>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (_, secs) = sections(b);
    let mut meta = Vec::new();
    let mut cpus = Vec::new();
    let compressed = secs.iter().any(|s| s.1 & 1 != 0);
    // BUFFER options give each CPU's data offset and size.
    let mut cpu_ranges = Vec::new();
    for &(id, fl, at, size) in &secs {
        if id == 0 {
            let mut p = at;
            loop {
                let (oid, len) = (le16(b, p), le32(b, p + 2) as usize);
                if oid == 0 {
                    break;
                }
                if oid == 3 {
                    let d = &b[p + 6..p + 6 + len];
                    let mut q = 8;
                    q += d[q..].iter().position(|&c| c == 0).unwrap() + 1;
                    q += d[q..].iter().position(|&c| c == 0).unwrap() + 1;
                    let n = le32(d, q + 4) as usize;
                    q += 8;
                    for _ in 0..n {
                        cpu_ranges.push((le64(d, q + 4) as usize, le64(d, q + 12) as usize));
                        q += 20;
                    }
                }
                p += 6 + len;
            }
        } else if id != 3 {
            assert_eq!(fl & 1 != 0, compressed, "section {id} compression flag");
            let data = &b[at..at + size];
            if fl & 1 != 0 {
                let (cs, us) = (le32(data, 0) as usize, le32(data, 4) as usize);
                assert_eq!(cs + 8, size);
                let u = inflate(&data[8..8 + cs]);
                assert_eq!(u.len(), us);
                meta.push(u);
            } else {
                meta.push(data.to_vec());
            }
        }
    }
    for (off, size) in cpu_ranges {
        assert_eq!(off % 4096, 0, "CPU data page-aligned");
        let d = &b[off..off + size];
        if !compressed {
            cpus.push(d.to_vec());
            continue;
        }
        let n = le32(d, 0) as usize;
        let mut p = 4;
        let mut pages = Vec::new();
        for _ in 0..n {
            let (cs, us) = (le32(d, p) as usize, le32(d, p + 4) as usize);
            assert_eq!(us % 4096, 0, "chunk holds whole pages");
            let u = inflate(&d[p + 8..p + 8 + cs]);
            assert_eq!(u.len(), us);
            pages.extend_from_slice(&u);
            p += 8 + cs;
        }
        assert_eq!(p, size, "chunks fill the CPU's recorded size");
        cpus.push(pages);
    }
    (meta, cpus)
}

fn zlib_inflate(z: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(z)
        .read_to_end(&mut out)
        .expect("valid zlib stream");
    out
}

fn zstd_inflate(z: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(z).expect("valid zstd frame")
}

#[test]
fn zlib_v7_inflates_to_the_uncompressed_file() {
    eprintln!("NOTE: Debian's trace-cmd 3.1.6 has no zlib; this zlib file is checked structurally, not by trace-cmd");
    let (plain, _) = write_file(7, Compression::None);
    let (z, _) = write_file(7, Compression::Zlib);
    std::fs::write(tmp("two.v7zlib.dat"), &z).unwrap();
    let (codec, _) = sections(&z);
    assert_eq!(codec, "zlib");
    let (pm, pc) = inflate_parts(&plain, &|_| unreachable!());
    let (zm, zc) = inflate_parts(&z, &zlib_inflate);
    // Metadata: identical except the strings section (same content too).
    assert_eq!(pm, zm);
    assert_eq!(pc, zc);
    assert_eq!(pc.len(), 3);
    assert!(pc.iter().all(|c| !c.is_empty() && c.len() % 4096 == 0));
}

#[test]
fn zstd_v7_inflates_to_the_uncompressed_file() {
    let (plain, _) = write_file(7, Compression::None);
    let (z, _) = write_file(7, Compression::Zstd);
    let (pm, pc) = inflate_parts(&plain, &|_| unreachable!());
    let (zm, zc) = inflate_parts(&z, &zstd_inflate);
    assert_eq!(pm, zm);
    assert_eq!(pc, zc);
}

#[test]
fn options_round_trip_bytes() {
    // TIME_SHIFT / GUEST encodings laid out as trace-input.c reads them.
    let f = formats();
    let mut w =
        TraceDatWriter::new(Cursor::new(Vec::new()), 7, Compression::None, &header(&f)).unwrap();
    w.add_option(OptionData::TimeShift {
        peer_trace_id: 7,
        flags: 1,
        cpus: vec![vec![TsyncSample {
            time: 10,
            offset: -5,
            scaling: 1,
            fraction: 0,
        }]],
    })
    .unwrap();
    w.add_option(OptionData::Guest {
        name: "g".into(),
        trace_id: 9,
        vcpus: vec![(0, 100)],
    })
    .unwrap();
    let b = w.finish().unwrap().into_inner();
    let hay = |needle: &[u8]| b.windows(needle.len()).any(|x| x == needle);
    let mut ts = vec![12u8, 0, 52, 0, 0, 0];
    ts.extend_from_slice(&7u64.to_le_bytes());
    ts.extend_from_slice(&1u32.to_le_bytes());
    ts.extend_from_slice(&1u32.to_le_bytes());
    ts.extend_from_slice(&1u32.to_le_bytes());
    for v in [10u64, (-5i64) as u64, 1, 0] {
        ts.extend_from_slice(&v.to_le_bytes());
    }
    assert!(hay(&ts));
    let mut g = vec![13u8, 0, 22, 0, 0, 0, b'g', 0];
    g.extend_from_slice(&9u64.to_le_bytes());
    g.extend_from_slice(&1u32.to_le_bytes());
    g.extend_from_slice(&0u32.to_le_bytes());
    g.extend_from_slice(&100u32.to_le_bytes());
    assert!(hay(&g));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let f = formats();
    let h = header(&f);
    assert!(TraceDatWriter::new(Cursor::new(Vec::new()), 5, Compression::None, &h).is_err());
    assert!(TraceDatWriter::new(Cursor::new(Vec::new()), 6, Compression::Zstd, &h).is_err());
    let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 6, Compression::None, &h).unwrap();
    w.add_buffer("inst", "local", 1).unwrap();
    assert!(
        w.add_buffer("", "local", 1).is_err(),
        "v6 top buffer must come first"
    );
    let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, Compression::None, &h).unwrap();
    let a = w.add_buffer("", "local", 1).unwrap();
    let b = w.add_buffer("b", "local", 1).unwrap();
    assert!(w.write_page(&[0; 4096]).is_err(), "no start_cpu");
    assert!(w.start_cpu(a, 1).is_err(), "cpu out of range");
    w.write_cpu_pages(b, 0, [&[0u8; 4096][..]]).unwrap();
    assert!(w.start_cpu(a, 0).is_err(), "buffers in order");
    assert!(
        w.write_cpu_pages(b, 0, [&[0u8; 4096][..]]).is_err(),
        "cpu twice"
    );
    w.start_cpu(b, 0).ok();
    assert!(w.write_page(&[0; 100]).is_err(), "short page");
}

/// What trace-cmd does with option ids it does not know (trace-input.c
/// `handle_options`: `tracecmd_warning("unknown option %d")`): `report` skips
/// them silently at its default log level, prints the warning only with
/// `--debug`, and `dump --options` lists them as "Unknown option".
#[test]
fn unknown_option_ids_are_skipped() {
    let f = formats();
    let mut w =
        TraceDatWriter::new(Cursor::new(Vec::new()), 7, Compression::None, &header(&f)).unwrap();
    w.add_option(OptionData::Raw {
        id: ftrace::write::option_id::PRIVATE_FIRST,
        data: b"tscmerge provenance\0".to_vec(),
    })
    .unwrap();
    let top = w.add_buffer("", "x86-tsc", 1).unwrap();
    let mut pb = PageBuilder::default();
    let rec = sched_switch(4242, 4343);
    let pages = ftrace::write::pack_events(&mut pb, [(5u64, rec.as_slice())]).unwrap();
    w.write_cpu_pages(top, 0, pages.iter().map(|p| p.as_slice()))
        .unwrap();
    let path = tmp("unknown_option.dat");
    std::fs::write(&path, w.finish().unwrap().into_inner()).unwrap();
    if !trace_cmd() {
        return;
    }
    let o = Command::new("trace-cmd")
        .args(["report", "-t", "-i"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("trace-cmd stderr: {stderr}");
    assert!(o.status.success());
    assert_eq!(parse_report(&String::from_utf8_lossy(&o.stdout)).len(), 1);
    assert!(!stderr.contains("unknown"), "{stderr}");
    let o = Command::new("trace-cmd")
        .args(["report", "--debug", "-i"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option 32512"));
    let o = Command::new("trace-cmd")
        .args(["dump", "--options"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("32512 20\t[Unknown option"));
}

/// Edge layouts trace-cmd must still read: v6 without a top buffer, v7 with
/// an empty buffer, a skipped buffer and a buffer whose only data is on CPU 1.
#[test]
fn sparse_buffers_reported_by_trace_cmd() {
    let f = formats();
    let rec = kvm_tsc(1, 0, 77);
    let mut pb = PageBuilder::default();
    let pages =
        ftrace::write::pack_events(&mut pb, [(4000u64, rec.as_slice()), (4500, rec.as_slice())])
            .unwrap();
    for version in [6, 7] {
        let mut w = TraceDatWriter::new(
            Cursor::new(Vec::new()),
            version,
            Compression::None,
            &header(&f),
        )
        .unwrap();
        let a = w.add_buffer("first", "x86-tsc", 2).unwrap();
        let _skipped = w.add_buffer("second", "x86-tsc", 2).unwrap();
        let c = w.add_buffer("third", "x86-tsc", 2).unwrap();
        w.start_cpu(a, 0).unwrap();
        w.end_cpu().unwrap(); // no pages: an empty CPU
        w.write_cpu_pages(c, 1, pages.iter().map(|p| p.as_slice()))
            .unwrap();
        let path = tmp(&format!("sparse.v{version}.dat"));
        std::fs::write(&path, w.finish().unwrap().into_inner()).unwrap();
        if !trace_cmd() {
            return;
        }
        let got = parse_report(&report(&path));
        let want: Vec<(String, u32, u64)> =
            vec![("third".into(), 1, 4000), ("third".into(), 1, 4500)];
        assert_eq!(
            got.iter()
                .map(|e| (e.buffer.clone(), e.cpu, e.ts))
                .collect::<Vec<_>>(),
            want,
            "v{version}"
        );
        assert_eq!(got[0].text.as_deref(), Some("vcpu=1 prev=0 next=77"));
    }
}

/// A big-endian file (pages and metadata in big-endian order, as a big-endian
/// host writes them) and lost-event markers, read by trace-cmd on this
/// little-endian machine.
#[test]
fn big_endian_and_missed_events_reported_by_trace_cmd() {
    let f = formats();
    let mut h = header(&f);
    h.endian = Endian::Big;
    let be_rec = |vcpu: u32, prev: u64, next: u64| {
        let mut r = KVM_TSC_ID.to_be_bytes().to_vec();
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(&4343i32.to_be_bytes());
        r.extend_from_slice(&vcpu.to_be_bytes());
        r.extend_from_slice(&[0; 4]);
        r.extend_from_slice(&prev.to_be_bytes());
        r.extend_from_slice(&next.to_be_bytes());
        r
    };
    let mut pb = PageBuilder::new(Endian::Big, 8, 4096).unwrap();
    let mut pages = Vec::new();
    let mut sink = |p: &[u8]| {
        pages.push(p.to_vec());
        Ok(())
    };
    pb.push(10, &be_rec(3, 1, 2), &mut sink).unwrap();
    pb.push(10 + (1 << 30), &be_rec(4, 2, 3), &mut sink).unwrap();
    pb.flush(&mut sink).unwrap();
    pb.set_missed_events(Some(5));
    pb.push(1 << 40, &be_rec(5, 3, 4), &mut sink).unwrap();
    pb.flush(&mut sink).unwrap();
    assert_eq!(pages.len(), 2);
    for comp in [Compression::None, Compression::Zstd] {
        let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, comp, &h).unwrap();
        let top = w.add_buffer("", "x86-tsc", 1).unwrap();
        w.write_cpu_pages(top, 0, pages.iter().map(|p| p.as_slice())).unwrap();
        let path = tmp(&format!("bigendian.{}.dat", comp.name()));
        std::fs::write(&path, w.finish().unwrap().into_inner()).unwrap();
        if !trace_cmd() {
            return;
        }
        let out = report(&path);
        let got = parse_report(&out);
        let ts: Vec<u64> = got.iter().map(|e| e.ts).collect();
        assert_eq!(ts, [10, 10 + (1 << 30), 1 << 40], "{out}");
        assert_eq!(got[1].text.as_deref(), Some("vcpu=4 prev=2 next=3"));
        assert!(out.contains("[5 EVENTS DROPPED]"), "{out}");
    }
}

/// Every page of `dat` as (file offset, bytes), read by `open`'s stream.
fn all_pages<'d>(dat: &ftrace::tracedat::TraceDat<'d>, open: &dyn Fn(ftrace::tracedat::PageStream<'d>) -> ftrace::tracedat::PageStream<'d>) -> ftrace::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for (bi, b) in dat.buffers().iter().enumerate() {
        for ci in 0..b.cpus.len() {
            let mut s = open(dat.pages(bi, ci)?);
            while let Some((at, p)) = s.next_page()? {
                out.push((at.0, p.to_vec()));
            }
        }
    }
    Ok(out)
}

#[test]
fn pages_read_with_pread_are_the_mapped_pages() {
    for (version, comp, file) in [(6, Compression::None, "pread-v6.dat"), (7, Compression::None, "pread-v7.dat"), (7, Compression::Zstd, "pread-v7zstd.dat")] {
        let (bytes, _) = write_file(version, comp);
        let path = tmp(file);
        std::fs::write(&path, &bytes).unwrap();
        let fd = std::fs::File::open(&path).unwrap();
        let dat = ftrace::tracedat::TraceDat::parse(&bytes).unwrap();
        let mapped = all_pages(&dat, &|s| s).unwrap();
        assert!(mapped.len() > 20, "{file}: {} pages", mapped.len());
        // Whole blocks, blocks cut inside the data, one page per read.
        for block in [ftrace::tracedat::READ_BLOCK, 3 * 4096 + 1, 1] {
            let read = all_pages(&dat, &|s| {
                let s = s.read_with_block(&fd, block);
                assert_eq!(s.borrows_mapping(), comp != Compression::None, "{file}: compressed chunks stay in the mapping");
                s
            })
            .unwrap();
            assert!(read == mapped, "{file}, block {block}: pages differ");
        }
        // The same events through the decoder.
        let count = |read: bool| -> usize {
            let mut n = 0;
            for (bi, b) in dat.buffers().iter().enumerate() {
                for ci in 0..b.cpus.len() {
                    let mut ev = dat.cpu_events(bi, ci).unwrap();
                    if read {
                        ev = ev.read_with(&fd);
                    }
                    while let Some(r) = ev.next_event().unwrap() {
                        n += matches!(r, ftrace::ring::RingEvent::Event { .. }) as usize;
                    }
                }
            }
            n
        };
        assert_eq!(count(true), count(false), "{file}");
        // A file cut short under the reader: an error naming the offset, no panic.
        if comp == Compression::None {
            let short = tmp(&format!("short-{file}"));
            std::fs::write(&short, &bytes[..bytes.len() - 5000]).unwrap();
            let fd = std::fs::File::open(&short).unwrap();
            let e = all_pages(&dat, &|s| s.read_with(&fd)).unwrap_err().to_string();
            assert!(e.contains("bytes of CPU data at byte"), "{e}");
        }
    }
}

/// Options appended to a finished v7 file (zstd and uncompressed): both
/// readers see the old options and the new ones, the later TRACEID winning,
/// and trace-cmd reports the same events as from the original; v6 refused.
#[test]
fn appended_options_read_back_by_both_readers() {
    use ftrace::tracedat::{TraceDat, TraceOption};
    for comp in [Compression::None, Compression::Zstd] {
        let (bytes, _) = write_file(7, comp);
        let dat = TraceDat::parse(&bytes).unwrap();
        let extra = [
            OptionData::TraceId(0xabc),
            OptionData::TimeShift { peer_trace_id: 0x77, flags: 0, cpus: vec![vec![TsyncSample { time: 5, offset: -9, scaling: 1, fraction: 0 }]; 2] },
        ];
        let mut out = Vec::new();
        ftrace::write::append_options(&dat, &extra, &mut out).unwrap();
        assert_eq!(&out[..bytes.len() - 1][..0x20], &bytes[..0x20]);
        let back = TraceDat::parse(&out).unwrap();
        assert_eq!(back.trace_id(), Some(0xabc), "the appended TRACEID wins");
        assert!(back.options().iter().any(|o| matches!(o, TraceOption::Uname(u) if u.contains("writer-test"))));
        let ts = back.time_shift().expect("TIME_SHIFT read back");
        assert_eq!((ts.peer_trace_id, ts.cpus.len(), ts.cpus[1].offsets[0]), (0x77, 2, -9));
        assert_eq!(back.buffers().len(), dat.buffers().len());
        // Twice: the chain continues from the appended section.
        let mut again = Vec::new();
        ftrace::write::append_options(&back, &[OptionData::TraceId(0xdef)], &mut again).unwrap();
        assert_eq!(TraceDat::parse(&again).unwrap().trace_id(), Some(0xdef));
        if !trace_cmd() {
            continue;
        }
        let (a, b) = (tmp(&format!("append-orig-{comp:?}.dat")), tmp(&format!("append-{comp:?}.dat")));
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &again).unwrap();
        // Same events; trace-cmd applied the appended TIME_SHIFT (one
        // sample per CPU, stored offset -9: ts - 9) to the top-level buffer
        // (its instance handles do not inherit the samples).
        let (mut before, mut after) = (parse_report(&report(&a)), parse_report(&report(&b)));
        assert_eq!(before.len(), after.len());
        assert!(before.len() > 100);
        for e in &mut after {
            e.ts += if e.buffer.is_empty() { 9 } else { 0 };
        }
        let key = |e: &Ev| (e.buffer.clone(), e.cpu, e.ts);
        before.sort_by_key(key);
        after.sort_by_key(key);
        for (x, y) in before.iter().zip(&after) {
            assert!(x.ts == y.ts && x.name == y.name && x.cpu == y.cpu && x.text == y.text, "{x:?} vs {y:?}");
        }
        let dump = Command::new("trace-cmd").args(["dump", "--options"]).arg(&b).output().unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.contains("[Option TimeShift, 88 bytes]") && dump.contains("0xDEF"), "{dump}");
    }
    let (v6, _) = write_file(6, Compression::None);
    let e = ftrace::write::append_options(&TraceDat::parse(&v6).unwrap(), &[OptionData::TraceId(1)], &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("version 7 only, this is version 6"), "{e}");
}
