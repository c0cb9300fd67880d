//! trace.dat reader against trace-cmd: every event's (buffer, cpu, timestamp,
//! event name) must equal `trace-cmd report -t` for the same file.

use ftrace::ring::RingEvent;
use ftrace::tracedat::TraceDat;
use ftrace::Endian;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// `(buffer, cpu) -> [(ts, name)]` from our reader. Event names come from the
/// `name:`/`ID:` lines of the file's own formats.
fn ours(bytes: &[u8]) -> BTreeMap<(String, u32), Vec<(u64, String)>> {
    let t = TraceDat::parse(bytes).unwrap();
    let mut names = HashMap::new();
    for (_, f) in t.ftrace_formats().chain(t.event_formats()) {
        let text = String::from_utf8_lossy(f);
        let name = text.lines().find_map(|l| l.strip_prefix("name:")).map(|s| s.trim().to_string());
        let id = text.lines().find_map(|l| l.strip_prefix("ID:")).and_then(|s| s.trim().parse::<u16>().ok());
        if let (Some(n), Some(i)) = (name, id) {
            names.insert(i, n);
        }
    }
    let mut out = BTreeMap::new();
    for (bi, b) in t.buffers().iter().enumerate() {
        for (ci, c) in b.cpus.iter().enumerate() {
            let mut ev = t.cpu_events(bi, ci).unwrap();
            let v: &mut Vec<(u64, String)> = out.entry((b.name.clone(), c.cpu)).or_default();
            while let Some(e) = ev.next_event().unwrap() {
                if let RingEvent::Event { ts, data } = e {
                    let raw = [data[0], data[1]];
                    let id = match t.endian() {
                        Endian::Little => u16::from_le_bytes(raw),
                        Endian::Big => u16::from_be_bytes(raw),
                    };
                    v.push((ts, names.get(&id).cloned().unwrap_or_else(|| format!("id{id}"))));
                }
            }
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

/// Parses `trace-cmd report -t` lines: `[<buffer>:] comm-pid [CPU]TS: name: ...`.
fn theirs(path: &Path, buffers: &[String]) -> Option<BTreeMap<(String, u32), Vec<(u64, String)>>> {
    let out = match Command::new("trace-cmd").arg("report").arg("-t").arg(path).output() {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("trace-cmd report failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            eprintln!("SKIPPED: trace-cmd not installed; cannot compare {}", path.display());
            return None;
        }
    };
    let mut map: BTreeMap<(String, u32), Vec<(u64, String)>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let mut buf = String::new();
        for b in buffers.iter().filter(|b| !b.is_empty()) {
            if line.starts_with(&format!("{b}:")) {
                buf = b.clone();
            }
        }
        // Find "[ddd]digits:".
        let bytes = line.as_bytes();
        let mut found = None;
        for (i, _) in line.match_indices('[') {
            let rest = &line[i + 1..];
            let Some(close) = rest.find(']') else { continue };
            let cpu = &rest[..close];
            if cpu.is_empty() || !cpu.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let after = &rest[close + 1..];
            let Some(colon) = after.find(':') else { continue };
            let ts = after[..colon].trim();
            if ts.is_empty() || !ts.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let name = after[colon + 1..].trim_start();
            let name = &name[..name.find(':').unwrap_or(name.len())];
            found = Some((cpu.parse::<u32>().unwrap(), ts.parse::<u64>().unwrap(), name.to_string()));
            break;
        }
        let _ = bytes;
        if let Some((cpu, ts, name)) = found {
            map.entry((buf, cpu)).or_default().push((ts, name));
        }
    }
    Some(map)
}

fn compare(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let mine = ours(&bytes);
    let names: Vec<String> = TraceDat::parse(&bytes).unwrap().buffers().iter().map(|b| b.name.clone()).collect();
    let Some(oracle) = theirs(path, &names) else { return };
    assert_eq!(mine.keys().collect::<Vec<_>>(), oracle.keys().collect::<Vec<_>>(), "{}", path.display());
    let mut n = 0;
    for (k, v) in &oracle {
        let m = &mine[k];
        assert_eq!(m.len(), v.len(), "{}: event count for {k:?}", path.display());
        for (i, (a, b)) in m.iter().zip(v).enumerate() {
            assert_eq!(a, b, "{}: {k:?} event {i}", path.display());
        }
        n += v.len();
    }
    assert!(n > 100, "too few events compared: {n}");
    eprintln!("{}: {n} events equal trace-cmd report", path.display());
}

#[test]
fn v7zstd_matches_trace_cmd() {
    compare(&data_dir().join("two_buffers.v7zstd.dat"));
}

/// The other forms, made from the committed file by `trace-cmd convert`
/// (the same commands that made /work/samples' v7none and v6 files).
fn converted(args: &[&str], name: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tracedat_oracle_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let src = data_dir().join("two_buffers.v7zstd.dat");
    match Command::new("trace-cmd").arg("convert").args(args).arg("-i").arg(&src).arg("-o").arg(&out).output() {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => panic!("trace-cmd convert {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            eprintln!("SKIPPED: trace-cmd not installed; cannot make {name}");
            None
        }
    }
}

#[test]
fn v7none_matches_trace_cmd() {
    if let Some(p) = converted(&["--compression", "none"], "v7none.dat") {
        compare(&p);
    }
}

#[test]
fn v6_matches_trace_cmd() {
    if let Some(p) = converted(&["--file-version", "6"], "v6.dat") {
        compare(&p);
    }
}

#[test]
fn samples_match_trace_cmd() {
    let dir = Path::new("/work/samples");
    for f in ["two_buffers.v7zstd.dat", "two_buffers.v7none.dat", "two_buffers.v6.dat"] {
        let p = dir.join(f);
        if p.exists() {
            compare(&p);
        } else {
            eprintln!("SKIPPED: {} absent", p.display());
        }
    }
}

/// Metadata agree across the three forms, and with `trace-cmd dump`'s view
/// of the sample (buffers, clocks, CPU tables, section counts).
#[test]
fn metadata_agree_across_versions() {
    use ftrace::tracedat::{BufferKind, TraceOption};
    let z = std::fs::read(data_dir().join("two_buffers.v7zstd.dat")).unwrap();
    let tz = TraceDat::parse(&z).unwrap();
    assert_eq!(tz.version(), 7);
    assert_eq!(tz.compression().map(|c| c.0), Some("zstd"));
    assert_eq!((tz.long_size(), tz.page_size(), tz.endian()), (8, 4096, Endian::Little));
    let names: Vec<_> = tz.buffers().iter().map(|b| (b.name.as_str(), b.clock.as_deref(), b.cpus.len(), b.kind)).collect();
    assert_eq!(
        names,
        [("", Some("x86-tsc"), 2, BufferKind::Flyrecord), ("tsc_offset", Some("x86-tsc"), 1, BufferKind::Flyrecord)]
    );
    assert_eq!(tz.ftrace_formats().count(), 18);
    assert_eq!(tz.event_formats().map(|(s, _)| s).collect::<std::collections::BTreeSet<_>>().len(), 101);
    assert!(tz.kallsyms().unwrap().len() == 5413828);
    assert_eq!(tz.printk().unwrap().len(), 4316);
    assert_eq!(tz.cmdlines().len(), 702);
    assert_eq!(tz.header_page().len(), 205);
    assert!(tz.options().iter().any(|o| matches!(o, TraceOption::CpuCount(2))));
    assert!(tz.options().iter().any(|o| matches!(o, TraceOption::TraceId(0x8C68CB79AADC9182))));
    assert_eq!(tz.options().iter().filter(|o| matches!(o, TraceOption::CpuStat { .. })).count(), 5);
    assert_eq!(tz.sections().len(), 12);
    assert_eq!(tz.sections()[0].description.as_deref(), Some("headers"));
    let layout = tz.page_layout();
    assert_eq!((layout.commit_size, layout.data_offset, layout.page_size), (8, 16, 4096));

    for (args, name) in [(&["--compression", "none"][..], "m_v7none.dat"), (&["--file-version", "6"][..], "m_v6.dat")] {
        let Some(p) = converted(args, name) else { return };
        let b = std::fs::read(&p).unwrap();
        let t = TraceDat::parse(&b).unwrap();
        assert_eq!(t.header_page(), tz.header_page());
        assert_eq!(t.header_event(), tz.header_event());
        assert!(t.ftrace_formats().eq(tz.ftrace_formats()));
        assert!(t.event_formats().eq(tz.event_formats()));
        assert_eq!(t.kallsyms(), tz.kallsyms());
        assert_eq!(t.printk(), tz.printk());
        assert_eq!(t.cmdlines(), tz.cmdlines());
        let bs: Vec<_> = t.buffers().iter().map(|b| (b.name.as_str(), b.clock.as_deref(), b.kind)).collect();
        assert_eq!(bs, [("", Some("x86-tsc"), BufferKind::Flyrecord), ("tsc_offset", Some("x86-tsc"), BufferKind::Flyrecord)]);
    }
}
