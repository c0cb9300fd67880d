//! Lost-events marks as `trace-cmd report` 3.1.6 prints them
//! (tracecmd/trace-read.c `trace_show_data`): with the next record of that
//! CPU, after the buffer's label: `label: CPU:0 [5 EVENTS DROPPED]`, a
//! newline, then the record's line without its label; `[EVENTS DROPPED]`
//! when the count was not stored; nothing for a stored count of 0. Pages
//! with RB_MISSED_EVENTS are written with our writer; trace-cmd is the oracle.

mod reader_common;

use ftrace::write::{Compression, PageBuilder};
use reader_common::*;

/// Pages of `events` (ts, pid), a new page before each index in `marks`
/// with its lost-events mark.
fn pages(events: &[(u64, i32)], marks: &[(usize, Option<u64>)]) -> Vec<Vec<u8>> {
    let mut pb = PageBuilder::default();
    let mut out = Vec::new();
    for (i, &(ts, pid)) in events.iter().enumerate() {
        if let Some(&(_, m)) = marks.iter().find(|(at, _)| *at == i) {
            pb.flush(|p| {
                out.push(p.to_vec());
                Ok(())
            })
            .unwrap();
            pb.set_missed_events(m);
        }
        assert!(pb.try_push(ts, &sched_switch(pid, 1, 4343)).unwrap());
    }
    pb.flush(|p| {
        out.push(p.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn lost_events_as_trace_cmd() {
    let f = Formats::load();
    let t = 5_000_000_000u64;
    let data = [
        // CPU 0: a counted loss between 20 and 40, with CPU 1's 30 between.
        CpuPages { buffer: "", cpu: 0, pages: pages(&[(t + 10, 4242), (t + 20, 4242), (t + 40, 4242), (t + 60, 4242)], &[(2, Some(5)), (3, Some(0))]) },
        // CPU 1: an uncounted loss first thing, and one no record follows.
        CpuPages { buffer: "", cpu: 1, pages: pages(&[(t + 30, 4343), (t + 50, 4343)], &[(0, None)]) },
        CpuPages { buffer: "inst", cpu: 1, pages: pages(&[(t + 15, 4344), (t + 35, 4344)], &[(1, Some(123))]) },
    ];
    let dat = write_dat_pages(&f, 7, Compression::None, 2, &data);
    let dir = tmpdir("lost");
    let file = dir.join("lost.dat");
    std::fs::write(&file, dat).unwrap();
    let ours = tscmerge(&["report", file.to_str().unwrap()]);
    assert!(ours.contains("CPU:0 [5 EVENTS DROPPED]\n") && ours.contains("inst: CPU:1 [123 EVENTS DROPPED]\n"), "{ours}");
    if !trace_cmd("the lost-events comparison with trace-cmd report") {
        return;
    }
    let theirs = trace_cmd_report(&file, &[]);
    assert_eq!(ours, theirs, "\n{}", first_diffs(&ours, &theirs, 10));
}
