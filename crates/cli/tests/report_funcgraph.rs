//! The function graph tracer's events as `trace-cmd report` 3.1.6 shows
//! them (lib/trace-cmd/trace-ftrace.c): nested entries `func() {`, exits
//! `}` with the call's duration, and leaf calls, where an entry and the
//! next record of its buffer (any CPU) are the same pid's entry and exit of
//! one function, folded into one `func();` line. The function tracer is
//! refused on this machine, so the records are written with our writer from
//! this machine's real funcgraph formats; trace-cmd is the oracle.

mod reader_common;

use ftrace::write::Compression;
use reader_common::*;

/// kallsyms.excerpt's functions.
const IOCTL: u64 = 0xffffffff8127ca20;
const SLEEP: u64 = 0xffffffff8141fbf0;
const SCHEDULE: u64 = 0xffffffff821f94a0;

#[test]
fn graph_view_as_trace_cmd() {
    let f = Formats::load();
    let t0 = 1_000_000_000u64;
    // CPU 0: worker calls ioctl { sleep(); schedule { ... } } with a leaf,
    // a nested call whose exit comes after another CPU's record, durations
    // in every overhead class, a deep call, an unknown function, and an
    // entry followed by another pid's exit of the same function.
    let mut c0 = Vec::new();
    let mut c1 = Vec::new();
    let mut ts = t0;
    let at = |v: &mut Vec<(u64, Vec<u8>)>, ts: &mut u64, step: u64, r: Vec<u8>| {
        *ts += step;
        v.push((*ts, r));
    };
    at(&mut c0, &mut ts, 10, funcgraph_entry(4242, IOCTL, 0));
    for (i, d) in [345u64, 12_345, 123_456, 1_234_567, 1_234_567_890, 12_345_678_901].into_iter().enumerate() {
        at(&mut c0, &mut ts, 10, funcgraph_entry(4242, SLEEP, 1 + i as u32));
        at(&mut c0, &mut ts, 10, funcgraph_exit(4242, SLEEP, 1 + i as u32, 5_000, 5_000 + d));
    }
    at(&mut c0, &mut ts, 10, funcgraph_entry(4242, SCHEDULE, 1));
    // The next record is on CPU 1: not its exit, so `schedule() {`.
    at(&mut c1, &mut ts, 10, funcgraph_entry(4343, 0xdead_beef, 3));
    at(&mut c1, &mut ts, 10, funcgraph_exit(4343, 0xdead_beef, 3, 100, 200));
    at(&mut c0, &mut ts, 10, funcgraph_exit(4242, SCHEDULE, 1, 7, 70_007));
    // Another pid's exit of the same function: nested, both printed.
    at(&mut c0, &mut ts, 10, funcgraph_entry(4242, SLEEP, 1));
    at(&mut c1, &mut ts, 10, funcgraph_exit(4343, SLEEP, 1, 10, 20));
    at(&mut c0, &mut ts, 10, funcgraph_exit(4242, SLEEP, 1, 10, 20));
    // A leaf whose exit is on the other CPU (the peek spans CPUs).
    at(&mut c0, &mut ts, 10, funcgraph_entry(4344, SLEEP, 2));
    at(&mut c1, &mut ts, 10, funcgraph_exit(4344, SLEEP, 2, 1, 2));
    // A leaf at the very end, and an entry as the last record.
    at(&mut c0, &mut ts, 10, sched_switch(4242, 1, 4343));
    at(&mut c0, &mut ts, 10, funcgraph_exit(4242, IOCTL, 0, 0, 99_999_999));
    at(&mut c1, &mut ts, 10, funcgraph_entry(4343, IOCTL, 0));
    let data = [CpuData { buffer: "", cpu: 0, events: c0 }, CpuData { buffer: "", cpu: 1, events: c1 }];
    let dat = write_dat(&f, 7, Compression::None, 2, &data);
    let dir = tmpdir("funcgraph");
    let file = dir.join("graph.dat");
    std::fs::write(&file, dat).unwrap();
    let ours = tscmerge(&["report", file.to_str().unwrap()]);
    // The folds are there, whatever the oracle says.
    assert!(ours.contains("|    nanosleep_copyout();"), "no leaf line:\n{ours}");
    if !trace_cmd("the function graph comparison with trace-cmd report") {
        return;
    }
    let theirs = trace_cmd_report(&file, &[]);
    assert_eq!(ours, theirs, "\n{}", first_diffs(&ours, &theirs, 10));
}
