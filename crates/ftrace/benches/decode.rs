//! Decode and render throughput on a trace.dat written at bench time with
//! `ftrace::write` (real format files from tests/data/write): 1M events on
//! two CPUs, sched_switch with a kvm_write_tsc_offset every 100th.
//!
//! - `decode`: events/s through `TraceDat::cpu_events` (page walk, no fields);
//! - `render_tracecmd`: the same plus the body in trace-cmd's style.
//!
//! `TSCMERGE_BENCH_WRITE=PATH cargo bench -p ftrace --bench decode` only
//! writes the file (bench/report_vs_tracecmd.sh compares with trace-cmd).

use std::io::Cursor;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftrace::format::{EventFormat, Events};
use ftrace::printfmt::{RenderCtx, Style};
use ftrace::ring::RingEvent;
use ftrace::tracedat::TraceDat;
use ftrace::write::{Compression, Header, PageBuilder, TraceDatWriter};
use ftrace::Endian;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/write");
const EVENTS: u64 = 1_000_000;
const SCHED_SWITCH_ID: u16 = 372;
const KVM_TSC_ID: u16 = 83;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(DATA).join(name)).unwrap()
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
    r.extend_from_slice(&comm("worker"));
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
    r.extend_from_slice(&1i64.to_le_bytes());
    r.extend_from_slice(&comm("qemu-vcpu0"));
    r.extend_from_slice(&next.to_le_bytes());
    r.extend_from_slice(&120i32.to_le_bytes());
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

/// The bench file: v7, uncompressed (what trace-cmd reads fastest too).
fn make_file() -> Vec<u8> {
    let (hp, he, ss, kt, pr) =
        (read("header_page"), read("header_event"), read("sched_switch.format"), read("kvm_write_tsc_offset.format"), read("print.format"));
    let header = Header {
        endian: Endian::Little,
        long_size: 8,
        page_size: 4096,
        header_page: &hp,
        header_event: &he,
        ftrace_formats: vec![&pr],
        event_formats: vec![("sched", &ss), ("kvm", &kt)],
        kallsyms: None,
        printk: None,
        cmdlines: b"4242 worker\n4343 qemu-vcpu0\n",
    };
    let mut w = TraceDatWriter::new(Cursor::new(Vec::new()), 7, Compression::None, &header).unwrap();
    let top = w.add_buffer("", "x86-tsc", 2).unwrap();
    let (ss_rec, kvm_rec) = (sched_switch(4242, 4343), kvm_tsc(0, 0, 18446743876406744092));
    for cpu in 0..2u32 {
        w.start_cpu(top, cpu).unwrap();
        let mut pb = PageBuilder::default();
        let mut ts = 1_000_000_000 + cpu as u64;
        for i in 0..EVENTS / 2 {
            ts += 1000 + i % 17;
            let rec = if i % 100 == 99 { &kvm_rec } else { &ss_rec };
            let mut out = Ok(());
            pb.push(ts, rec, |p| {
                out = w.write_page(p);
                Ok(())
            })
            .unwrap();
            out.unwrap();
        }
        let mut out = Ok(());
        pb.flush(|p| {
            out = w.write_page(p);
            Ok(())
        })
        .unwrap();
        out.unwrap();
        w.end_cpu().unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn decode_all(dat: &TraceDat<'_>) -> u64 {
    let mut n = 0;
    for ci in 0..dat.buffers()[0].cpus.len() {
        let mut ev = dat.cpu_events(0, ci).unwrap();
        while let Some(r) = ev.next_event().unwrap() {
            if let RingEvent::Event { data, .. } = r {
                std::hint::black_box(data);
                n += 1;
            }
        }
    }
    n
}

fn render_all(dat: &TraceDat<'_>, events: &Events, out: &mut Vec<u8>) -> u64 {
    let mut bytes = 0;
    for ci in 0..dat.buffers()[0].cpus.len() {
        let mut ev = dat.cpu_events(0, ci).unwrap();
        let ctx = RenderCtx { endian: dat.endian(), long_size: dat.long_size(), cpu: ev.cpu(), kallsyms: None, printk: None, state: None, plugins: true };
        while let Some(r) = ev.next_event().unwrap() {
            if let RingEvent::Event { data, .. } = r {
                if let Some(f) = events.of_record(data, dat.endian()) {
                    out.clear();
                    f.render(data, &ctx, Style::TraceCmd, out);
                    bytes += out.len() as u64;
                }
            }
        }
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let file = make_file();
    if let Ok(path) = std::env::var("TSCMERGE_BENCH_WRITE") {
        std::fs::write(&path, &file).unwrap();
        eprintln!("wrote {path}: {} bytes, {EVENTS} events", file.len());
        std::process::exit(0);
    }
    let dat = TraceDat::parse(&file).unwrap();
    let mut events = Events::new();
    for (system, text) in dat.ftrace_formats().chain(dat.event_formats()) {
        events.add(EventFormat::parse(system, text).unwrap());
    }
    assert_eq!(decode_all(&dat), EVENTS);

    let mut g = c.benchmark_group("trace.dat 1M events");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.bench_function("decode", |b| b.iter(|| decode_all(&dat)));
    let mut out = Vec::with_capacity(256);
    g.bench_function("render_tracecmd", |b| b.iter(|| render_all(&dat, &events, &mut out)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
