//! Separate host and guest files we write, read by trace-cmd 3.1.6's own
//! host-guest merge (`trace-cmd report -i HOST -i GUEST...`, which applies
//! each guest's TIME_SHIFT and TSC2NSEC and ties guests to the host's GUEST
//! options by TRACEID): trace-cmd must accept the set, recognise the guests
//! (it names the host's kvm_entry/kvm_exit guest RIPs by the guest file's
//! kallsyms only through the GUEST option's vCPU → thread map) and list the
//! events in our merge's order. Inputs are synthetic (`tscmerge synth`),
//! with ground truth:
//!
//! - `synth --format trace-cmd` pairs (trace-cmd's layout: TIME_SHIFT with a
//!   sample after every offset write);
//! - `synth --format dat` (tscmerge's own layout, as `tscmerge record` lays a
//!   host out: offsets only as kvm_write_tsc_offset events, guests without
//!   options) turned into trace-cmd files by `merge --format trace-cmd`
//!   (TIME_SHIFT from our offset timeline);
//! - a pair with TSC scaling, where trace-cmd's formula is wrong (FACTS.md)
//!   and its order differs from ours, measured.
//!
//! Without /usr/bin/trace-cmd each test prints `SKIPPED:` and returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TRACE_CMD: &str = "/usr/bin/trace-cmd";

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-tcpair-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn have_trace_cmd(test: &str) -> bool {
    if Path::new(TRACE_CMD).exists() {
        return true;
    }
    eprintln!("SKIPPED: {test}: {TRACE_CMD} absent: our files were not read by trace-cmd");
    false
}

/// One event as both reports print it: machine, comm-pid, CPU, printed
/// time, event name (bodies differ: trace-cmd adds guest symbols to RIPs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    machine: String,
    task: String,
    cpu: u32,
    time: String,
    event: String,
}

/// `LABEL: comm-pid [cpu] time: event: body` lines; `machine` maps the
/// label (trace-cmd: the file name; ours: the machine column).
fn parse(text: &str, machine: impl Fn(&str) -> String) -> Vec<Key> {
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((label, rest)) = l.split_once(": ") else { continue };
        let Some(lb) = rest.find(" [") else { continue };
        let Some(rb) = rest[lb..].find(']') else { continue };
        let Ok(cpu) = rest[lb + 2..lb + rb].trim().parse::<u32>() else { continue };
        let mut tail = rest[lb + rb + 1..].splitn(3, ':');
        let (Some(time), Some(event)) = (tail.next(), tail.next()) else { continue };
        out.push(Key { machine: machine(label.trim()), task: rest[..lb].trim().to_string(), cpu, time: time.trim().to_string(), event: event.trim().to_string() });
    }
    out
}

/// How far trace-cmd's listing agrees with ours.
#[derive(Debug)]
struct Agreement {
    events: usize,
    /// The same event at the same position.
    same_position: usize,
    /// Events whose printed time (so placement, to the printed µs) is ours.
    same_time: usize,
    /// Events in the same relative order (longest common subsequence).
    same_order: usize,
    /// Runs of one printed time whose events are the same set in both.
    runs_same: usize,
    runs: usize,
}

fn agreement(ours: &[Key], theirs: &[Key]) -> Agreement {
    let same_position = ours.iter().zip(theirs).filter(|(a, b)| a == b).count();
    let mut count: BTreeMap<&Key, i64> = BTreeMap::new();
    for k in ours {
        *count.entry(k).or_default() += 1;
    }
    let mut same_time = 0;
    for k in theirs {
        if let Some(c) = count.get_mut(k).filter(|c| **c > 0) {
            *c -= 1;
            same_time += 1;
        }
    }
    let runs = |v: &[Key]| -> Vec<Vec<Key>> {
        let mut out: Vec<Vec<Key>> = Vec::new();
        for k in v {
            match out.last_mut() {
                Some(r) if r[0].time == k.time => r.push(k.clone()),
                _ => out.push(vec![k.clone()]),
            }
        }
        out.iter_mut().for_each(|r| r.sort());
        out
    };
    let (ro, rt) = (runs(ours), runs(theirs));
    let runs_same = ro.iter().zip(&rt).filter(|(a, b)| a == b).count();
    Agreement { events: ours.len(), same_position, same_time, same_order: same_order(ours, theirs), runs_same, runs: ro.len() }
}

/// The most events both listings hold in the same relative order: each of
/// our events (the n-th of its key) found in theirs, then the longest
/// increasing run of those positions (patience sorting).
fn same_order(ours: &[Key], theirs: &[Key]) -> usize {
    let mut at: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
    for (i, k) in theirs.iter().enumerate().rev() {
        at.entry(k).or_default().push(i);
    }
    let mut tails: Vec<usize> = Vec::new();
    for k in ours {
        let Some(i) = at.get_mut(k).and_then(Vec::pop) else { continue };
        let p = tails.partition_point(|&t| t < i);
        if p == tails.len() {
            tails.push(i);
        } else {
            tails[p] = i;
        }
    }
    tails.len()
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events; in the same order {} ({:.3}%); at the same position {} ({:.3}%); at the same printed time {} ({:.3}%); {} of {} runs of one printed µs hold the same events",
            self.events,
            self.same_order,
            pct(self.same_order, self.events),
            self.same_position,
            pct(self.same_position, self.events),
            self.same_time,
            pct(self.same_time, self.events),
            self.runs_same,
            self.runs
        )
    }
}

fn pct(n: usize, d: usize) -> f64 {
    100.0 * n as f64 / d.max(1) as f64
}

/// `trace-cmd report -i F...`; asserts it accepts the set.
fn trace_cmd_report(files: &[PathBuf]) -> String {
    let mut c = Command::new(TRACE_CMD);
    c.arg("report");
    for f in files {
        c.arg("-i").arg(f);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "trace-cmd report failed: {err}");
    assert!(!err.contains("rror") && !err.contains("ailed"), "trace-cmd complained: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// trace-cmd's file label → machine: `guest-vm0.dat`/`vm0.dat` → `vm0`, the host file → `host`.
fn label_machine(host_file: &str) -> impl Fn(&str) -> String + '_ {
    move |l: &str| {
        if l == host_file {
            "host".into()
        } else {
            l.trim_end_matches(".dat").trim_start_matches("guest-").to_string()
        }
    }
}

/// trace-cmd recognised each guest: host kvm_entry/kvm_exit lines of its
/// vCPU threads carry a guest symbol (`_stext`/`tracing_mark_write`/`_etext`
/// +0x..., from the guest file's kallsyms) after the RIP.
fn assert_guest_symbols(report: &str, guests: usize) {
    let named = report.lines().filter(|l| (l.contains("kvm_entry:") || l.contains("kvm_exit:")) && (l.contains(" tracing_mark_write+0x") || l.contains(" _stext+0x") || l.contains(" _etext"))).count();
    let all = report.lines().filter(|l| l.contains("kvm_entry:") || l.contains("kvm_exit:")).count();
    eprintln!("trace-cmd named the guest function of {named} of {all} kvm_entry/kvm_exit RIPs ({guests} guests)");
    assert!(all > 0 && named == all, "{named} of {all} RIPs named by a guest's symbols");
}

/// Writes a `synth --format trace-cmd` set, merges it, and has trace-cmd
/// report it: (ours, theirs) keyed, the guests recognised.
fn synth_pair(tag: &str, extra: &[&str]) -> (Vec<Key>, Vec<Key>, PathBuf) {
    let d = tmp(tag);
    let mut args = vec!["synth", "-o", s(&d), "--format", "trace-cmd", "--vms", "1,4", "--windows", "80", "--seed", "9"];
    args.extend_from_slice(extra);
    let (code, _, err) = tscmerge(&args);
    assert_eq!(code, 0, "{err}");
    let (host, g0, g1) = (d.join("host.dat"), d.join("guest-vm0.dat"), d.join("guest-vm1.dat"));
    let (code, text, err) = tscmerge(&["merge", s(&host), "--guest", s(&g0), "--guest", s(&g1), "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    let report = trace_cmd_report(&[host, g0, g1]);
    assert_guest_symbols(&report, 2);
    let ours = parse(&text, |l| l.to_string());
    let theirs = parse(&report, label_machine("host.dat"));
    assert_eq!(ours.len(), theirs.len());
    (ours, theirs, d)
}

/// A trace-cmd layout pair (1 and 4 vCPUs) whose offsets never change:
/// trace-cmd places every event where we do; within one printed µs it
/// orders by ns, then CPU, then file, we by TSC cycles.
#[test]
fn synth_tracecmd_pair_in_our_order() {
    if !have_trace_cmd("synth_tracecmd_pair_in_our_order") {
        return;
    }
    let (ours, theirs, d) = synth_pair("constant", &["--tsc-write-every", "0"]);
    let a = agreement(&ours, &theirs);
    eprintln!("synth trace-cmd pair, constant offsets: {a}");
    assert_eq!(a.same_time, a.events, "{a}");
    assert_eq!(a.runs_same, a.runs, "{a}");
    assert!(a.same_order * 100 >= a.events * 99, "{a}");
    std::fs::remove_dir_all(&d).ok();
}

/// The same with guests writing their TSC (offset up, later back down, as
/// the model does): the guest TSC falls back and repeats values, and
/// trace-cmd, which looks samples up by guest time (binary search,
/// trace-input.c `timestamp_host_sync`), takes the wrong sample for events
/// in the repeated range; we walk each vCPU's periods forward. Host events
/// all agree; the guest events that do not are measured.
#[test]
fn synth_tracecmd_pair_with_falling_guest_tsc() {
    if !have_trace_cmd("synth_tracecmd_pair_with_falling_guest_tsc") {
        return;
    }
    let (ours, theirs, d) = synth_pair("falling", &["--tsc-write-every", "17"]);
    let a = agreement(&ours, &theirs);
    eprintln!("synth trace-cmd pair, guest TSC written up and back: {a}");
    let host_ours: Vec<&Key> = ours.iter().filter(|k| k.machine == "host").collect();
    let host_theirs: Vec<&Key> = theirs.iter().filter(|k| k.machine == "host").collect();
    assert_eq!(host_ours, host_theirs, "host events in one order");
    let guest = ours.iter().filter(|k| k.machine != "host").count();
    let off = a.events - a.same_time;
    eprintln!("  {off} of {guest} guest events printed at another time by trace-cmd");
    assert!(off > 0 && off < guest, "{a}");
    std::fs::remove_dir_all(&d).ok();
}

/// tscmerge's own layout (offsets only as kvm_write_tsc_offset, guests with
/// no trace-cmd option, as `tscmerge record` writes them) carried into
/// trace-cmd files by `merge --format trace-cmd`, reported by trace-cmd and
/// by us: (ours, theirs without the host's offset events, notes).
fn our_layout(tag: &str, write_every: &str) -> (Vec<Key>, Vec<Key>, String, PathBuf) {
    let d = tmp(tag);
    let (code, _, err) = tscmerge(&["synth", "-o", s(&d), "--format", "dat", "--vms", "2,1", "--windows", "80", "--tsc-write-every", write_every, "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    let (host, g0, g1) = (d.join("host.dat"), d.join("guest-vm0.dat"), d.join("guest-vm1.dat"));
    let guests = [format!("vm0={}", s(&g0)), format!("vm1={}", s(&g1))];
    let out = d.join("tc");
    let (code, _, notes) = tscmerge(&["merge", s(&host), "--guest", &guests[0], "--guest", &guests[1], "--tsc-khz", "2000000", "--format", "trace-cmd", "-o", s(&out)]);
    assert_eq!(code, 0, "{notes}");
    let files = [out.join("host.dat"), out.join("vm0.dat"), out.join("vm1.dat")];
    // The written set reads back in tscmerge with no flag: tied by trace id,
    // offsets from the host's kvm_write_tsc_offset (which win over TIME_SHIFT).
    let (code, back, err) = tscmerge(&["merge", s(&files[0]), "--guest", s(&files[1]), "--guest", s(&files[2]), "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("guest vm0 is") && err.contains("its trace id") && !err.contains("DISAGREE"), "{err}");
    let dump = Command::new(TRACE_CMD).args(["dump", "--options"]).arg(&files[1]).output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("[Option TimeShift,") && dump.contains("[Option TRACEID,") && dump.contains("[Option TSC2NSEC,"), "{dump}");
    let report = trace_cmd_report(&files);
    assert_guest_symbols(&report, 2);
    // Ours from the original inputs, printed the same way (TSC2NSEC from --tsc-khz).
    let (code, text, err) = tscmerge(&["merge", s(&host), "--guest", &guests[0], "--guest", &guests[1], "--tsc-khz", "2000000", "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse(&back, |l| l.to_string()).len(), parse(&text, |l| l.to_string()).len());
    // trace-cmd lists the host's tsc_offset buffer too (its events on the
    // host's raw clock: TIME_SHIFT and TSC2NSEC apply to top-level buffers).
    let no_offsets = |v: Vec<Key>| -> Vec<Key> { v.into_iter().filter(|k| k.event != "kvm_write_tsc_offset").collect() };
    let ours = no_offsets(parse(&back, |l| l.to_string()));
    let theirs = no_offsets(parse(&report, label_machine("host.dat")));
    assert_eq!(ours.len(), theirs.len());
    (ours, theirs, notes, d)
}

/// Offsets set once per vCPU (at its creation): trace-cmd places every event
/// where we do.
#[test]
fn our_layout_through_format_tracecmd() {
    if !have_trace_cmd("our_layout_through_format_tracecmd") {
        return;
    }
    let (ours, theirs, notes, d) = our_layout("ours", "0");
    assert!(!notes.contains("note:"), "{notes}");
    let a = agreement(&ours, &theirs);
    eprintln!("tscmerge layout via --format trace-cmd, offsets set at creation: {a}");
    assert_eq!(a.same_time, a.events, "{a}");
    assert_eq!(a.runs_same, a.runs, "{a}");
    assert!(a.same_order * 100 >= a.events * 99, "{a}");
    // Writing over an input is refused.
    let tc = d.join("tc");
    let (code, _, err) = tscmerge(&["merge", s(&tc.join("host.dat")), "--guest", &format!("vm0={}", s(&tc.join("vm0.dat"))), "--format", "trace-cmd", "-o", s(&tc)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("would replace the input"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

/// Guests writing their TSC up and back: the TIME_SHIFT we write holds the
/// exact periods, but trace-cmd looks them up by guest time, which falls
/// back; we say so in a note, and measure what trace-cmd makes of it.
#[test]
fn our_layout_with_falling_guest_tsc() {
    if !have_trace_cmd("our_layout_with_falling_guest_tsc") {
        return;
    }
    let (ours, theirs, notes, d) = our_layout("ours-falling", "13");
    assert!(notes.contains("offset changes lower the guest's TSC below an earlier change's"), "{notes}");
    let a = agreement(&ours, &theirs);
    eprintln!("tscmerge layout via --format trace-cmd, guest TSC written up and back: {a}");
    let host = |v: &[Key]| -> Vec<Key> { v.iter().filter(|k| k.machine == "host").cloned().collect() };
    assert_eq!(host(&ours), host(&theirs), "host events in one order");
    let guest = ours.iter().filter(|k| k.machine != "host").count();
    let off = a.events - a.same_time;
    eprintln!("  {off} of {guest} guest events printed at another time by trace-cmd");
    assert!(off < guest, "{a}");
    std::fs::remove_dir_all(&d).ok();
}

/// With TSC scaling trace-cmd applies `((guest * ratio) >> frac) - offset`
/// (the host→guest formula backwards): its guest events drift from ours
/// (ours are exact: hostguest.rs and the synth truth tests). Measured, and
/// the difference must be there.
#[test]
fn scaled_pair_differs_where_trace_cmd_is_wrong() {
    if !have_trace_cmd("scaled_pair_differs_where_trace_cmd_is_wrong") {
        return;
    }
    let d = tmp("scaled");
    // ratio 0.9 with 48 fraction bits (VMX).
    let (code, _, err) = tscmerge(&["synth", "-o", s(&d), "--format", "trace-cmd", "--vms", "1", "--windows", "60", "--tsc-scaling", "253327479039590:48", "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    let (host, g0) = (d.join("host.dat"), d.join("guest-vm0.dat"));
    let (code, text, err) = tscmerge(&["merge", s(&host), "--guest", s(&g0), "-j", "1"]);
    assert_eq!(code, 0, "{err}");
    let report = trace_cmd_report(&[host.clone(), g0]);
    let ours = parse(&text, |l| l.to_string());
    let theirs = parse(&report, label_machine("host.dat"));
    assert_eq!(ours.len(), theirs.len());
    let a = agreement(&ours, &theirs);
    let guest = ours.iter().filter(|k| k.machine != "host").count();
    eprintln!("scaled pair (ratio 0.9, {guest} guest events): {a}");
    // Every host event agrees; no guest event is printed at our time.
    assert_eq!(a.same_time, a.events - guest, "{a}");
    std::fs::remove_dir_all(&d).ok();
}
