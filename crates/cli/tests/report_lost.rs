//! Lost-events marks as `trace-cmd report` 3.1.6 prints them
//! (tracecmd/trace-read.c `trace_show_data`): with the next record of that
//! CPU, after the buffer's label: `label: CPU:0 [5 EVENTS DROPPED]`, a
//! newline, then the record's line without its label; `[EVENTS DROPPED]`
//! when the count was not stored; nothing for a stored count of 0; nothing
//! either when the page's data start with a time extend (libtraceevent's
//! `kbuffer_missed_events` reports a loss only for the record at offset 0).
//! Pages with RB_MISSED_EVENTS are written with our writer; trace-cmd is the
//! oracle.

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

/// `page` (x86-64 layout: u64 timestamp, u64 commit, data) with a time
/// extend of `delta` put before its first record and the page timestamp
/// moved back by as much: the same events at the same times, the data now
/// starting with a TYPE_TIME_EXTEND record (include/linux/ring_buffer.h:
/// type_len 30, low 27 bits of the delta in the header, the rest in
/// array[0]), as the kernel writes when it adds a timestamp to the first
/// event of a page. The lost flags and a stored count move along.
fn with_leading_extend(page: &[u8], delta: u64) -> Vec<u8> {
    let ts = u64::from_le_bytes(page[..8].try_into().unwrap());
    let commit = u64::from_le_bytes(page[8..16].try_into().unwrap());
    let len = (commit & ((1 << 27) - 1)) as usize;
    let flags = commit & !((1 << 27) - 1);
    let mut out = vec![0u8; page.len()];
    out[..8].copy_from_slice(&(ts - delta).to_le_bytes());
    out[8..16].copy_from_slice(&((len as u64 + 8) | flags).to_le_bytes());
    let header = 30u32 | (((delta & ((1 << 27) - 1)) as u32) << 5);
    out[16..20].copy_from_slice(&header.to_le_bytes());
    out[20..24].copy_from_slice(&((delta >> 27) as u32).to_le_bytes());
    out[24..24 + len].copy_from_slice(&page[16..16 + len]);
    // The stored missed count follows the data (RB_MISSED_STORED).
    out[24 + len..32 + len].copy_from_slice(&page[16 + len..24 + len]);
    out
}

/// A page with the lost flag whose data start with a time extend: trace-cmd
/// prints no mark (the event after the extend is at offset 8, and
/// `kbuffer_missed_events` answers 0 there), counted or not; the same loss
/// on a page starting with its event prints as usual.
#[test]
fn no_mark_after_a_leading_time_extend() {
    let f = Formats::load();
    let t = 5_000_000_000u64;
    let mut cpu0 = pages(&[(t + 10, 4242), (t + 20, 4242), (t + 40, 4242), (t + 60, 4242)], &[(1, Some(5)), (2, None), (3, Some(7))]);
    cpu0[1] = with_leading_extend(&cpu0[1], 3 << 27);
    cpu0[2] = with_leading_extend(&cpu0[2], (1 << 27) + 5);
    let data = [CpuPages { buffer: "", cpu: 0, pages: cpu0 }, CpuPages { buffer: "", cpu: 1, pages: pages(&[(t + 30, 4343)], &[]) }];
    let dat = write_dat_pages(&f, 7, Compression::None, 2, &data);
    let dir = tmpdir("lost_extend");
    let file = dir.join("lost_extend.dat");
    std::fs::write(&file, dat).unwrap();
    let ours = tscmerge(&["report", file.to_str().unwrap()]);
    assert!(ours.contains("CPU:0 [7 EVENTS DROPPED]\n"), "{ours}");
    assert!(!ours.contains("[5 EVENTS DROPPED]") && !ours.contains("CPU:0 [EVENTS DROPPED]"), "{ours}");
    // JSON keeps every loss the pages record.
    let json = tscmerge(&["report", "--json", file.to_str().unwrap()]);
    assert_eq!(json.matches("\"lost\"").count(), 3, "{json}");
    if !trace_cmd("the lost-events comparison with trace-cmd report") {
        return;
    }
    let theirs = trace_cmd_report(&file, &[]);
    assert_eq!(ours, theirs, "\n{}", first_diffs(&ours, &theirs, 10));
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
