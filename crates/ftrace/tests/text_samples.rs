//! ftrace::text on real captures: tracefs text and trace-cmd report output
//! kept under tests/data/text (see its README), and the full samples in
//! /work/samples when present.

use ftrace::text::{parse_write_tsc_offset, TextKind, TextReader, TextRecord, TextTs};
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/text")
        .join(name)
}

/// An owned copy of what the tests compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Rec {
    Ev {
        cpu: u32,
        ts: TextTs,
        event: String,
        comm: String,
        pid: i32,
        tgid: Option<i32>,
        buffer: Option<String>,
        body: String,
    },
    Lost {
        cpu: u32,
        count: Option<u64>,
    },
    Started {
        cpu: u32,
    },
}

pub fn read_all(bytes: &[u8]) -> (TextKind, ftrace::text::TextHeader, Vec<Rec>) {
    let mut r = TextReader::new(bytes).unwrap();
    let kind = r.kind();
    let header = r.header().clone();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap_or_else(|e| panic!("{e}")) {
        v.push(match rec {
            TextRecord::Event(l) => Rec::Ev {
                cpu: l.cpu,
                ts: l.ts,
                event: l.event.to_owned(),
                comm: l.comm.to_owned(),
                pid: l.pid,
                tgid: l.tgid,
                buffer: l.buffer.map(str::to_owned),
                body: l.body.to_owned(),
            },
            TextRecord::Lost { cpu, count, .. } => Rec::Lost { cpu, count },
            TextRecord::BufferStarted { cpu } => Rec::Started { cpu },
        });
    }
    (kind, header, v)
}

fn events(v: &[Rec]) -> usize {
    v.iter().filter(|r| matches!(r, Rec::Ev { .. })).count()
}

#[test]
fn tracefs_tsc_offset_instance() {
    let (kind, h, v) = read_all(&std::fs::read(data("tracefs_tsc_offset.txt")).unwrap());
    assert_eq!(kind, TextKind::Tracefs);
    assert_eq!(
        (h.tracer.as_deref(), h.entries, h.written, h.cpus),
        (Some("nop"), Some(2), Some(2), Some(2))
    );
    assert_eq!(h.irq_info, Some(true));
    assert_eq!(v.len(), 2);
    let Rec::Ev {
        cpu,
        ts,
        event,
        comm,
        pid,
        tgid,
        body,
        ..
    } = &v[1]
    else {
        panic!()
    };
    assert_eq!(
        (*cpu, *ts, event.as_str(), comm.as_str(), *pid, *tgid),
        (
            0,
            TextTs::Count(669436429873),
            "kvm_write_tsc_offset",
            "python3",
            4617,
            None
        )
    );
    let w = parse_write_tsc_offset(body).unwrap();
    assert_eq!((w.vcpu, w.prev, w.next), (1, 0, 18446743404273366793));
}

#[test]
fn tracefs_full_sample_counts_match_header() {
    let p = Path::new("/work/samples/trace.x86tsc.txt");
    let Ok(bytes) = std::fs::read(p) else {
        eprintln!("SKIPPED: {} absent", p.display());
        return;
    };
    let (kind, h, v) = read_all(&bytes);
    assert_eq!(kind, TextKind::TracefsTgid);
    assert_eq!(h.entries, Some(1336));
    assert_eq!(events(&v), 1336);
    // Every data line is a record: nothing silently skipped.
    let data_lines = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    assert_eq!(v.len(), data_lines);
    assert!(v.iter().all(|r| matches!(
        r,
        Rec::Ev {
            ts: TextTs::Count(_),
            ..
        }
    )));
}

#[test]
fn tracefs_tgid_head_fixture() {
    let (kind, h, v) = read_all(&std::fs::read(data("tracefs_tgid_head.txt")).unwrap());
    assert_eq!(kind, TextKind::TracefsTgid);
    assert_eq!(h.tgid, Some(true));
    assert_eq!(events(&v), h.entries.unwrap() as usize);
    let Rec::Ev { comm, tgid, .. } = &v[4] else {
        panic!()
    };
    assert_eq!((comm.as_str(), *tgid), ("<idle>", None)); // (-------)
}

#[test]
fn overrun_buffer_started() {
    let (kind, h, v) = read_all(&std::fs::read(data("tracefs_overrun.txt")).unwrap());
    assert_eq!(kind, TextKind::Tracefs);
    assert_eq!(h.irq_info, Some(false));
    assert_eq!((h.entries, h.written), (Some(203), Some(1393)));
    assert_eq!(events(&v), 203);
    assert_eq!(
        v.iter()
            .filter(|r| matches!(r, Rec::Started { cpu: 0 }))
            .count(),
        1
    );
    assert!(v.iter().all(|r| !matches!(
        r,
        Rec::Ev {
            ts: TextTs::Count(_),
            ..
        }
    )));
    if let Rec::Ev { ts, .. } = &v[0] {
        assert!(matches!(ts, TextTs::Secs { digits: 6, .. }));
    }
}

#[test]
fn trace_pipe_lost_lines() {
    let bytes = std::fs::read(data("pipe_lost.txt")).unwrap();
    let (kind, h, v) = read_all(&bytes);
    assert_eq!(kind, TextKind::Tracefs);
    assert_eq!(h, Default::default());
    assert_eq!(
        v[0],
        Rec::Lost {
            cpu: 0,
            count: Some(1139)
        }
    );
    assert!(v.contains(&Rec::Lost {
        cpu: 1,
        count: Some(1027)
    }));
    assert_eq!(
        v.len(),
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    );
    // Timestamps per CPU never go backwards in trace_pipe.
    for cpu in 0..2 {
        let ts: Vec<u64> = v
            .iter()
            .filter_map(|r| match r {
                Rec::Ev { cpu: c, ts, .. } if *c == cpu => ts.as_ns(),
                _ => None,
            })
            .collect();
        assert!(ts.len() > 10 && ts.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn comm_with_space_and_markers() {
    let bytes = std::fs::read(data("tracefs_local_tgid.txt")).unwrap();
    let mut r = TextReader::new(&bytes[..]).unwrap();
    assert_eq!(r.kind(), TextKind::TracefsTgid);
    let mut marks = Vec::new();
    let mut lto = 0;
    while let Some(rec) = r.next_record().unwrap() {
        if let TextRecord::Event(l) = rec {
            if let Some(t) = l.print_text() {
                marks.push(t.to_owned());
            }
            if l.comm == "lto cgu.02" {
                assert_eq!((l.pid, l.tgid), (14503, Some(14202)));
                lto += 1;
            }
        }
    }
    assert_eq!(marks, ["hello marker 1", "second: with colon"]);
    assert!(lto > 0);
}

#[test]
fn report_two_buffers_names_instance() {
    let (kind, h, v) = read_all(&std::fs::read(data("report_two_buffers.txt")).unwrap());
    assert_eq!(kind, TextKind::TraceCmdReport);
    assert_eq!(h.cpus, Some(2));
    let tsc: Vec<_> = v
        .iter()
        .filter_map(|r| match r {
            Rec::Ev {
                buffer: Some(b),
                event,
                body,
                comm,
                ..
            } => Some((b.as_str(), event.as_str(), body.as_str(), comm.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        tsc,
        [
            (
                "tsc_offset",
                "kvm_write_tsc_offset",
                "vcpu=0 prev=0 next=18446743404273366793",
                "python3"
            ),
            (
                "tsc_offset",
                "kvm_write_tsc_offset",
                "vcpu=1 prev=0 next=18446743404273366793",
                "python3"
            ),
        ]
    );
    // The same lines in latency format give the same (cpu, ts, event, buffer).
    let (kind_l, _, vl) = read_all(&std::fs::read(data("report_latency.txt")).unwrap());
    assert_eq!(kind_l, TextKind::TraceCmdReportLatency);
    let key = |v: &[Rec]| -> Vec<(u32, TextTs, String, Option<String>, String)> {
        v.iter()
            .filter_map(|r| match r {
                Rec::Ev {
                    cpu,
                    ts,
                    event,
                    buffer,
                    body,
                    ..
                } => Some((*cpu, *ts, event.clone(), buffer.clone(), body.clone())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(key(&v), key(&vl));
}

#[test]
fn report_tsdiff() {
    let (_, _, v) = read_all(&std::fs::read(data("report_tsdiff.txt")).unwrap());
    let (_, _, w) = read_all(&std::fs::read(data("report_head.txt")).unwrap());
    assert_eq!(v[..], w[..v.len()]);
}

#[test]
fn report_without_cpus_line_is_recognised() {
    let bytes = std::fs::read(data("report_head.txt")).unwrap();
    let cut = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let (kind, _, v) = read_all(cut);
    let (_, _, w) = read_all(&bytes);
    assert_eq!(kind, TextKind::TraceCmdReport);
    assert_eq!(v, w);
}
