//! Writes the seed corpora in fuzz/corpus/<target>/seed-* from the real
//! recordings in crates/ftrace/tests/data (kernel 6.18, trace-cmd 3.1.6; see
//! the README there) and small trace.dat files made with
//! `ftrace::write::TraceDatWriter` from those recordings' events.
//!
//! Run from fuzz/: `cargo run --example make_seeds`. Deterministic; the two
//! `tracedat/seed-tracecmd-*` copies are made from its output by trace-cmd
//! (commands in fuzz/README.md).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ftrace::ring::RingEvent;
use ftrace::tracedat::TraceDat;
use ftrace::write::{Compression, Header, OptionData, PageBuilder, TraceDatWriter, TsyncSample};
use ftrace::Endian;

const SYSTEMS: [&str; 8] = ["sched", "kvm", "ftrace", "irq", "timer", "workqueue", "kmem", "fuzz"];
const SEP: &[u8] = b"\n=====\n";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn data_dir() -> PathBuf {
    root().join("../crates/ftrace/tests/data")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// Real events of the sample: (cpu, ts, record), a few per event id.
fn real_events(dat: &TraceDat<'_>) -> Vec<(u32, u64, Vec<u8>)> {
    let mut v = Vec::new();
    let mut per_id = std::collections::HashMap::<u16, usize>::new();
    for (bi, b) in dat.buffers().iter().enumerate() {
        for ci in 0..b.cpus.len() {
            let mut ev = dat.cpu_events(bi, ci).unwrap();
            let cpu = ev.cpu();
            while let Some(e) = ev.next_event().unwrap() {
                if let RingEvent::Event { ts, data } = e {
                    let id = u16::from_le_bytes([data[0], data[1]]);
                    let n = per_id.entry(id).or_default();
                    if *n < 3 {
                        *n += 1;
                        v.push((cpu, ts, data.to_vec()));
                    }
                }
            }
        }
    }
    v.sort_by_key(|e| e.1);
    v
}

fn system_index(sys: &str) -> u8 {
    SYSTEMS.iter().position(|s| *s == sys).unwrap_or(7) as u8
}

fn main() {
    let sample = read(data_dir().join("two_buffers.v7zstd.dat"));
    let dat = TraceDat::parse(&sample).unwrap();
    let events = real_events(&dat);
    let formats: Vec<(String, Vec<u8>)> =
        dat.ftrace_formats().chain(dat.event_formats()).map(|(s, f)| (s.to_string(), f.to_vec())).collect();
    let id_of = |f: &[u8]| -> Option<u16> {
        let t = String::from_utf8_lossy(f);
        t.lines().find_map(|l| l.trim().strip_prefix("ID:").and_then(|v| v.trim().parse().ok()))
    };
    let kallsyms = read(data_dir().join("formats/kallsyms.excerpt"));
    let printk: Vec<u8> = dat
        .printk()
        .map(|p| p.split(|&b| b == b'\n').take(12).flat_map(|l| l.iter().copied().chain([b'\n'])).collect())
        .unwrap_or_default();

    // format_file: the checked-in format files, plus header files.
    for entry in std::fs::read_dir(data_dir().join("formats")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "README.md" || name.ends_with(".excerpt") {
            continue;
        }
        let sys = name.split('_').next().unwrap();
        let mut b = vec![system_index(sys)];
        b.extend(read(&p));
        write("format_file", &name, &b);
    }

    // printfmt: each real event's format with one of its real records; a few
    // with kallsyms and printk text.
    let mut seen = std::collections::HashSet::new();
    for (i, (cpu, _ts, rec)) in events.iter().enumerate() {
        let id = u16::from_le_bytes([rec[0], rec[1]]);
        if !seen.insert(id) {
            continue;
        }
        let Some((sys, f)) = formats.iter().find(|(_, f)| id_of(f) == Some(id)) else { continue };
        let name = String::from_utf8_lossy(f)
            .lines()
            .find_map(|l| l.strip_prefix("name: ").map(str::to_string))
            .unwrap_or_default();
        let mut b = vec![(system_index(sys) << 2) | ((*cpu as u8 & 7) << 5)];
        b.extend_from_slice(f);
        b.extend_from_slice(SEP);
        b.extend_from_slice(rec);
        if i % 3 == 0 {
            b.extend_from_slice(SEP);
            b.extend_from_slice(&kallsyms);
            b.extend_from_slice(SEP);
            b.extend_from_slice(&printk);
        }
        write("printfmt", &format!("{sys}_{name}"), &b);
    }
    // Formats exercising print-fmt features the sample's events lack.
    for name in ["ftrace_bprint", "ftrace_function", "kvm_kvm_exit", "timer_hrtimer_start", "ftrace_bputs"] {
        let f = read(data_dir().join(format!("formats/{name}.format")));
        let sys = name.split('_').next().unwrap();
        let mut b = vec![system_index(sys) << 2];
        b.extend_from_slice(&f);
        b.extend_from_slice(SEP);
        b.extend_from_slice(&[0x2a; 48]);
        b.extend_from_slice(SEP);
        b.extend_from_slice(&kallsyms);
        b.extend_from_slice(SEP);
        b.extend_from_slice(&printk);
        write("printfmt", &format!("synthetic_{name}"), &b);
    }

    // ring_page: real kernel pages (the sample's first page of each CPU)
    // and built pages in every byte order / long size, with lost events.
    for (bi, b) in dat.buffers().iter().enumerate() {
        for ci in 0..b.cpus.len().min(2) {
            let mut ps = dat.pages(bi, ci).unwrap();
            if let Some((_, page)) = ps.next_page().unwrap() {
                let mut s = vec![0u8];
                s.extend_from_slice(page);
                write("ring_page", &format!("real-buf{bi}-cpu{ci}"), &s);
            }
        }
    }
    let recs: Vec<&(u32, u64, Vec<u8>)> = events.iter().take(12).collect();
    for (endian, long, tag) in
        [(Endian::Little, 8u8, "le64"), (Endian::Big, 8, "be64"), (Endian::Little, 4, "le32"), (Endian::Big, 4, "be32")]
    {
        let mut pb = PageBuilder::new(endian, long, 512).unwrap();
        if long == 4 {
            pb.set_missed_events(Some(17));
        }
        let base = recs[0].1;
        for (k, (_, ts, rec)) in recs.iter().enumerate() {
            // One big gap forces a time-extend record.
            let ts = if k > 6 { ts - base + (1 << 40) } else { ts - base };
            if !pb.try_push(ts, rec).unwrap() {
                break;
            }
        }
        let sel = (endian == Endian::Big) as u8 | (((long == 4) as u8) << 1);
        let mut s = vec![sel];
        s.extend_from_slice(pb.page());
        write("ring_page", &format!("built-{tag}"), &s);
    }

    // tracedat: small files from our writer with the real formats and events.
    let fmt_of = |id: u16| formats.iter().find(|(_, f)| id_of(f) == Some(id));
    let mut used_ids: Vec<u16> = events.iter().map(|e| u16::from_le_bytes([e.2[0], e.2[1]])).collect();
    used_ids.sort();
    used_ids.dedup();
    let ev_formats: Vec<(&str, &[u8])> = used_ids
        .iter()
        .filter_map(|&id| fmt_of(id))
        .filter(|(s, _)| s != "ftrace")
        .map(|(s, f)| (s.as_str(), f.as_slice()))
        .collect();
    let ftrace_formats: Vec<&[u8]> =
        formats.iter().filter(|(s, _)| s == "ftrace").take(4).map(|(_, f)| f.as_slice()).collect();
    let cases = [
        ("v6-le", 6, Compression::None, Endian::Little, 8u8, 4096u32),
        ("v7-none-le", 7, Compression::None, Endian::Little, 8, 4096),
        ("v7-zstd-le", 7, Compression::Zstd, Endian::Little, 8, 4096),
        ("v7-zlib-le", 7, Compression::Zlib, Endian::Little, 8, 4096),
        ("v7-none-be32", 7, Compression::None, Endian::Big, 4, 1024),
        ("v6-be", 6, Compression::None, Endian::Big, 8, 1024),
    ];
    for (tag, version, comp, endian, long, page_size) in cases {
        let header = Header {
            endian,
            long_size: long,
            page_size,
            header_page: dat.header_page(),
            header_event: dat.header_event(),
            ftrace_formats: ftrace_formats.clone(),
            event_formats: ev_formats.clone(),
            kallsyms: Some(&kallsyms),
            printk: Some(&printk),
            cmdlines: b"4242 worker\n4343 vcpu0\n",
        };
        let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), version, comp, &header).unwrap();
        w.set_chunk_pages(2);
        w.add_option(OptionData::TraceClock("local global [x86-tsc]".into())).unwrap();
        w.add_option(OptionData::Uname("Linux fuzz 6.18.0 #1 SMP x86_64".into())).unwrap();
        w.add_option(OptionData::Version("3.1.6".into())).unwrap();
        w.add_option(OptionData::Date("0x1a2b".into())).unwrap();
        w.add_option(OptionData::TraceId(0x1122334455667788)).unwrap();
        w.add_option(OptionData::Tsc2Nsec { mult: 1234, shift: 20, offset: 99 }).unwrap();
        if version == 7 {
            w.add_option(OptionData::TimeShift {
                peer_trace_id: 7,
                flags: 1,
                cpus: vec![vec![
                    TsyncSample { time: 100, offset: -5000, scaling: 1, fraction: 0 },
                    TsyncSample { time: 200, offset: -5001, scaling: 1, fraction: 0 },
                ]],
            })
            .unwrap();
            w.add_option(OptionData::Guest { name: "guest0".into(), trace_id: 7, vcpus: vec![(0, 4343), (1, 4344)] })
                .unwrap();
            w.add_option(OptionData::CpuStat("CPU: 0\nentries: 3\noverrun: 0\n".into())).unwrap();
        }
        let top = w.add_buffer("", "x86-tsc", 2).unwrap();
        let inst = w.add_buffer("tsc_offset", "x86-tsc", 2).unwrap();
        for (buf, cpu_count) in [(top, 2u32), (inst, 1)] {
            for cpu in 0..cpu_count {
                let mut pb = PageBuilder::new(endian, long, page_size as usize).unwrap();
                let mut pages = Vec::new();
                for (c, ts, rec) in events.iter().filter(|e| e.0 % cpu_count == cpu).take(40) {
                    let _ = c;
                    let mut rec = rec.clone();
                    if endian == Endian::Big {
                        rec[0..2].reverse(); // common_type in the file's order
                        rec[4..8].reverse(); // common_pid
                    }
                    pb.push(*ts, &rec, |p| {
                        pages.push(p.to_vec());
                        Ok(())
                    })
                    .unwrap();
                    // Keep seeds small: at most two pages per CPU.
                    if pages.len() >= 2 {
                        break;
                    }
                }
                pb.flush(|p| {
                    pages.push(p.to_vec());
                    Ok(())
                })
                .unwrap();
                w.write_cpu_pages(buf, cpu, pages.iter().map(|p| p.as_slice())).unwrap();
            }
        }
        let out = w.finish().unwrap().into_inner();
        // Our own reader must accept every seed.
        TraceDat::parse(&out).unwrap();
        write("tracedat", tag, &out);
    }

    // text_line: the head of each checked-in text capture.
    for entry in std::fs::read_dir(data_dir().join("text")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".txt") {
            continue;
        }
        let t = read(&p);
        let head: Vec<u8> =
            t.split_inclusive(|&b| b == b'\n').take(40).flat_map(|l| l.iter().copied()).collect();
        write("text_line", &name, &head);
    }
    eprintln!("seeds written under {}", root().join("corpus").display());
}
