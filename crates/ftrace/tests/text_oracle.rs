//! tracefs text against `trace-cmd report` of the same recording: the
//! per-event (cpu, timestamp, event) sequences must be equal. Fixture pairs
//! always run; the full /work/samples check runs trace-cmd live.

use ftrace::text::{TextKind, TextReader, TextRecord, TextTs};
use std::path::Path;
use std::process::Command;

type Key = (u32, TextTs, String, Option<String>);

/// (cpu, ts, event, buffer) of every event. trace-cmd names trace_marker
/// writes `print` where tracefs prints the ip symbol `tracing_mark_write`
/// (kernel trace_output.c trace_print_print), so that one name is mapped.
fn keys(bytes: &[u8]) -> (TextKind, Vec<Key>) {
    let mut r = TextReader::new(bytes).unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap_or_else(|e| panic!("{e}")) {
        if let TextRecord::Event(l) = rec {
            let ev = if l.event == "tracing_mark_write" {
                "print"
            } else {
                l.event
            };
            v.push((l.cpu, l.ts, ev.to_owned(), l.buffer.map(str::to_owned)));
        }
    }
    (r.kind(), v)
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/text")
            .join(name),
    )
    .unwrap()
}

fn strip_buffer(v: Vec<Key>) -> Vec<Key> {
    v.into_iter().map(|(c, t, e, _)| (c, t, e, None)).collect()
}

#[test]
fn fixture_x86tsc_head_matches_report() {
    let (k1, a) = keys(&data("tracefs_tgid_head.txt"));
    let (k2, b) = keys(&data("report_head.txt"));
    assert_eq!((k1, k2), (TextKind::TracefsTgid, TextKind::TraceCmdReport));
    assert_eq!(a.len(), 40);
    assert_eq!(a, b);
}

#[test]
fn fixture_local_clock_matches_report() {
    let (_, a) = keys(&data("tracefs_local_tgid.txt"));
    let (_, b) = keys(&data("report_local_tgid.txt"));
    let (_, c) = keys(&data("report_local_tgid_t.txt"));
    assert_eq!(a.len(), 46);
    // Report of an instance-only file prefixes every line with the instance.
    assert!(b.iter().all(|k| k.3.as_deref() == Some("text_test")));
    let b = strip_buffer(b);
    assert_eq!(a, b, "usec timestamps are printed identically");
    // -t prints 9 digits; both round ns to µs (kernel ns2usecs, libtraceevent
    // print_event_time add half the divisor).
    for (x, y) in a.iter().zip(&c) {
        assert!(matches!(y.1, TextTs::Secs { digits: 9, .. }));
        let us = (y.1.as_ns().unwrap() + 500) / 1000;
        assert_eq!(x.1.as_ns().unwrap() / 1000, us);
        assert_eq!((x.0, &x.2), (y.0, &y.2));
    }
}

fn trace_cmd_report(args: &[&str], file: &Path) -> Option<Vec<u8>> {
    let out = Command::new("trace-cmd")
        .arg("report")
        .args(args)
        .arg(file)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[test]
fn samples_dat_reports_match_tracefs_text() {
    let dir = Path::new("/work/samples");
    let Ok(text) = std::fs::read(dir.join("trace.x86tsc.txt")) else {
        eprintln!("SKIPPED: /work/samples absent");
        return;
    };
    let tsc = std::fs::read(dir.join("tsc_offset.trace.txt")).unwrap();
    let (_, top) = keys(&text);
    let (_, inst) = keys(&tsc);
    let mut ran = 0;
    for dat in [
        "two_buffers.v6.dat",
        "two_buffers.v7none.dat",
        "two_buffers.v7zstd.dat",
    ] {
        for args in [&[][..], &["-t"][..], &["-l"][..]] {
            let Some(rep) = trace_cmd_report(args, &dir.join(dat)) else {
                eprintln!("SKIPPED: trace-cmd report {args:?} {dat} unavailable");
                continue;
            };
            ran += 1;
            let (kind, all) = keys(&rep);
            let want = if args == ["-l"] {
                TextKind::TraceCmdReportLatency
            } else {
                TextKind::TraceCmdReport
            };
            assert_eq!(kind, want);
            let (rtop, rinst): (Vec<_>, Vec<_>) = all.into_iter().partition(|k| k.3.is_none());
            assert_eq!(rtop, top, "{dat} {args:?}: top buffer");
            assert!(rinst.iter().all(|k| k.3.as_deref() == Some("tsc_offset")));
            assert_eq!(
                strip_buffer(rinst),
                inst,
                "{dat} {args:?}: tsc_offset instance"
            );
        }
    }
    if ran == 0 {
        eprintln!("SKIPPED: trace-cmd not runnable");
    }
}
