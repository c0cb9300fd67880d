//! Micro-benchmarks of the merge's hot paths, on synthetic data built here:
//! guest → host conversion, the per-vCPU period walk, the k-way merge over
//! N cursors, and text-sink formatting. `cargo bench -p tscmerge --bench merge`;
//! bench/README.md has the figures and the callgrind counts.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tscmerge::clock::{Conversion, Period, Scaling, VcpuClock, VcpuTimeline};
use tscmerge::merge::{merge, Input, Sink};
use tscmerge::sink::{TextSink, TsFormat};
use tscmerge::{Body, Cursor, EventView, GuestTsc, HostTsc, Payload, Record};

const N: u64 = 100_000;

fn conversion(c: &mut Criterion) {
    let mut g = c.benchmark_group("conversion");
    g.throughput(Throughput::Elements(N));
    let plain = Conversion::new((-197_302_807_524i64) as u64, None);
    let scaled = Conversion::new(12345, Some(Scaling { ratio: 0xc000_0000_0000, frac_bits: 48 }));
    g.bench_function("to_host_unscaled", |b| {
        b.iter(|| (0..N).fold(0u64, |a, i| a ^ plain.to_host(GuestTsc(black_box(i * 1000))).0))
    });
    g.bench_function("to_host_scaled", |b| {
        b.iter(|| (0..N).fold(0u64, |a, i| a ^ scaled.to_host(GuestTsc(black_box(i * 1000))).0))
    });
    // A vCPU whose offset changes every 1000 events (rises and falls).
    let periods = (0..N / 1000 + 1)
        .map(|k| Period { start: Some(HostTsc(k * 1_000_000)), offset: ((k % 3) as i64 * 700 - 1_000_000) as u64, prev: 0, pid: None, origin: Default::default() })
        .collect();
    let tl = VcpuTimeline { pid: Some(1), periods, scaling: None };
    let guest: Vec<GuestTsc> = (0..N)
        .map(|i| {
            let h = 1000 + i * 1000;
            let p = &tl.periods[(h / 1_000_000) as usize];
            GuestTsc(h.wrapping_add(p.offset))
        })
        .collect();
    g.bench_function("vcpu_clock_place", |b| {
        b.iter(|| {
            let mut clock = VcpuClock::new(&tl);
            guest.iter().fold(0u64, |a, &t| a ^ clock.place(t).map_or(0, |p| p.host.0))
        })
    });
    g.finish();
}

/// A cursor over timestamps `start, start + step, ...` with a fixed body.
struct Seq {
    ts: u64,
    step: u64,
    left: u64,
    cpu: u32,
}

impl Cursor for Seq {
    fn current(&self) -> Option<EventView<'_>> {
        (self.left > 0).then_some(EventView {
            ts: self.ts,
            orig_ts: None,
                placed: Default::default(),
            cpu: self.cpu,
            payload: Payload::Event(Record {
                pid: 4242,
                tgid: None,
                comm: "worker",
                system: "sched",
                name: "sched_switch",
                body: Body::Text("prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=b next_pid=2 next_prio=120"),
            }),
        })
    }
    fn ts(&self) -> Option<u64> {
        (self.left > 0).then_some(self.ts)
    }
    fn advance(&mut self) -> tscmerge::Result<()> {
        self.left = self.left.saturating_sub(1);
        self.ts += self.step;
        Ok(())
    }
}

struct Count(u64);
impl Sink for Count {
    fn event(&mut self, _: usize, ev: &EventView<'_>) -> tscmerge::Result<()> {
        self.0 ^= ev.ts;
        Ok(())
    }
}

fn cursors(k: u32) -> Vec<Input<'static>> {
    (0..k)
        .map(|i| Input { machine: i as usize % 3, meta: None, cursor: Box::new(Seq { ts: i as u64, step: 7 + i as u64, left: N / k as u64, cpu: i }) as Box<dyn Cursor> })
        .collect()
}

fn kway(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(N));
    for k in [2u32, 8, 32] {
        g.bench_function(format!("kway_{k}_cursors"), |b| {
            b.iter_batched(|| cursors(k), |inputs| merge(inputs, &mut Count(0)).unwrap(), criterion::BatchSize::LargeInput)
        });
    }
    g.finish();
}

fn text_sink(c: &mut Criterion) {
    let mut g = c.benchmark_group("text_sink");
    g.throughput(Throughput::Elements(N));
    let machines = vec!["host".to_string(), "vm0".to_string(), "vm1".to_string()];
    let mut out = Vec::with_capacity(200 * N as usize);
    g.bench_function("format_cycles", |b| {
        b.iter(|| {
            out.clear();
            let mut sink = TextSink::new(&mut out, machines.clone(), TsFormat::Cycles, true, "bench");
            merge(cursors(4), &mut sink).unwrap();
        })
    });
    g.bench_function("format_secs", |b| {
        b.iter(|| {
            out.clear();
            let mut sink = TextSink::new(&mut out, machines.clone(), TsFormat::Secs { khz: 2_000_000 }, false, "bench");
            merge(cursors(4), &mut sink).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, conversion, kway, text_sink);
criterion_main!(benches);
