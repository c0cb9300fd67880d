//! Every event this kernel offers, recorded here and shown by `tscmerge
//! report` and by `trace-cmd report` (3.1.6, the oracle), compared per
//! event type.
//!
//! Our own tracefs instance `every_<pid>` (removed at the end) gets
//! `events/enable` = 1 (every event of every system) and the x86-tsc clock,
//! while a workload forks and execs, reads and writes files, uses pipes and
//! loopback TCP sockets, sleeps on timers, allocates and touches memory, and
//! runs micro-VMs when /dev/kvm works. `trace-cmd extract -B` writes the
//! instance to a trace.dat; both reports of that file are split into
//! events (an event line and the lines under it) and compared event by event.
//!
//! The floor: the same events in the same order, and >= 99.5% of the event
//! types whose every event prints as trace-cmd prints it, events where
//! trace-cmd itself fails (`[FAILED TO PARSE]`) left out and listed with
//! what we print instead. Needs root, tracefs and trace-cmd: skips loudly.

mod reader_common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use reader_common::*;

const TRACEFS: &str = "/sys/kernel/tracing";

/// Our instance: tracing and events off, then rmdir, whatever happens.
struct Instance(PathBuf);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("tracing_on"), "0");
        let _ = fs::write(self.0.join("events/enable"), "0");
        // `trace-cmd extract -B` removes the instance it read.
        match fs::remove_dir(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => eprintln!("could not remove {}: {e}", self.0.display()),
            _ => {}
        }
    }
}

/// A second of varied kernel work.
fn workload(dir: &Path) {
    // fork + exec, pipes.
    for _ in 0..5 {
        let _ = Command::new("sh").arg("-c").arg("echo hello | cat > /dev/null; true").status();
    }
    // files: write, fsync, read, rename, unlink.
    for i in 0..20 {
        let p = dir.join(format!("f{i}"));
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&vec![i as u8; 64 * 1024]).unwrap();
        f.sync_all().unwrap();
        let mut b = Vec::new();
        fs::File::open(&p).unwrap().read_to_end(&mut b).unwrap();
        let q = dir.join(format!("g{i}"));
        fs::rename(&p, &q).unwrap();
        fs::remove_file(&q).unwrap();
    }
    // loopback TCP.
    if let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") {
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            for _ in 0..20 {
                let _ = c.write_all(&[7u8; 1000]);
                let mut b = [0u8; 1000];
                let _ = c.read_exact(&mut b);
            }
        }
        let _ = t.join();
    }
    // timers and memory.
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut v = vec![0u8; 64 << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    drop(v);
    // micro-VMs: KVM's events (kvm_emulate_insn, kvm_pio, kvm_msr, ...).
    if Path::new("/dev/kvm").exists() {
        let out = dir.join("vms");
        let _ = Command::new(BIN).args(["microvm", "--vms", "1", "--vcpus", "1", "--reads", "8", "-o"]).arg(&out).status();
    }
}

/// Splits a report into (event name, lines) per event, after `cpus=`.
fn events(report: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in report.lines() {
        if line.starts_with("cpus=") {
            continue;
        }
        match event_name(line) {
            Some(name) => out.push((name.to_string(), line.to_string())),
            None => match out.last_mut() {
                Some((_, text)) => {
                    text.push('\n');
                    text.push_str(line);
                }
                None => out.push((String::new(), line.to_string())),
            },
        }
    }
    out
}

/// The event name of `comm-pid [cpu] ts: name: body` (None for a lost-events
/// line or a continuation line).
fn event_name(line: &str) -> Option<&str> {
    let rb = line.find("] ")?;
    let lb = line[..rb].rfind('[')?;
    if rb == lb + 1 || !line[lb + 1..rb].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let rest = line[rb + 1..].trim_start();
    let (ts, rest) = rest.split_once(": ")?;
    if ts.is_empty() || !ts.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    rest.split_once(':').map(|(n, _)| n.trim())
}

#[test]
fn every_event_reports_as_trace_cmd() {
    let inst_dir = Path::new(TRACEFS).join("instances");
    if !inst_dir.is_dir() {
        eprintln!("SKIPPED: no tracefs at {TRACEFS}; the every-event comparison did not run");
        return;
    }
    if !trace_cmd("the every-event comparison") {
        return;
    }
    let name = format!("every_{}", std::process::id());
    let idir = inst_dir.join(&name);
    if let Err(e) = fs::create_dir(&idir) {
        eprintln!("SKIPPED: cannot create tracefs instance {} ({e}); the every-event comparison did not run", idir.display());
        return;
    }
    let inst = Instance(idir.clone());
    let put = |f: &str, v: &str| fs::write(idir.join(f), v).unwrap_or_else(|e| panic!("{f} <- {v}: {e}"));
    put("tracing_on", "0");
    put("buffer_size_kb", "8192");
    put("trace_clock", "x86-tsc");
    // Some events refuse to be enabled here; the write still enables the rest.
    if let Err(e) = fs::write(idir.join("events/enable"), "1") {
        eprintln!("events/enable: {e} (some events stay off)");
    }
    let dir = tmpdir("every_event");
    put("tracing_on", "1");
    workload(&dir);
    put("tracing_on", "0");
    let dat = dir.join("every.dat");
    let o = run(Command::new("trace-cmd").args(["extract", "-B", &name, "-o"]).arg(&dat));
    drop(inst);
    assert!(o.status.success() && dat.exists(), "trace-cmd extract: {}", String::from_utf8_lossy(&o.stderr));

    let theirs = trace_cmd_report(&dat, &[]);
    let ours = tscmerge(&["report", dat.to_str().unwrap()]);
    let (te, oe) = (events(&theirs), events(&ours));
    eprintln!("{} events of {} types from trace-cmd, {} from us", te.len(), te.iter().map(|e| &e.0).collect::<std::collections::BTreeSet<_>>().len(), oe.len());
    assert!(te.len() > 1000, "too few events recorded ({}) to say anything", te.len());
    assert_eq!(
        te.iter().map(|e| &e.0).collect::<Vec<_>>(),
        oe.iter().map(|e| &e.0).collect::<Vec<_>>(),
        "the events differ from trace-cmd's (names in order)"
    );
    // Per type: (events, identical, where trace-cmd failed, first difference).
    let mut per: BTreeMap<&str, (usize, usize, usize, Option<(String, String)>)> = BTreeMap::new();
    for ((name, t), (_, o)) in te.iter().zip(&oe) {
        let e = per.entry(name.as_str()).or_default();
        e.0 += 1;
        if t.contains("[FAILED TO PARSE]") {
            e.2 += 1;
            if e.3.is_none() {
                e.3 = Some((t.clone(), o.clone()));
            }
        } else if t == o {
            e.1 += 1;
        } else if e.3.is_none() {
            e.3 = Some((t.clone(), o.clone()));
        }
    }
    let mut bad = Vec::new();
    let (mut judged, mut good) = (0, 0);
    for (name, (n, same, failed, diff)) in &per {
        if *failed == *n {
            let (t, o) = diff.as_ref().unwrap();
            eprintln!("trace-cmd fails on {name} ({n} events):\n  trace-cmd: {t}\n  ours:      {o}");
            continue;
        }
        judged += 1;
        if same + failed == *n {
            good += 1;
        } else {
            let (t, o) = diff.as_ref().unwrap();
            bad.push(format!("{name}: {same}/{} identical\n  trace-cmd: {t}\n  ours:      {o}", n - failed));
        }
    }
    let pct = 100.0 * good as f64 / judged.max(1) as f64;
    eprintln!("{good}/{judged} event types print exactly as trace-cmd ({pct:.2}%)");
    for b in &bad {
        eprintln!("{b}");
    }
    assert!(pct >= 99.5, "{} event types differ from trace-cmd report:\n{}", bad.len(), bad.join("\n"));
}
