//! The whole recording path on this machine, with micro-VM guests in place of
//! Linux guests (none boots here): `tscmerge record --host -- tscmerge
//! microvm`, then `check` on the recorded trace.dat (offsets from the
//! debugfs snapshots the recorder stored), `trace-cmd report` reading the
//! host file, and the same recording read as trace.dat, as the raw capture and
//! as text giving the same events. Skipped, loudly, without /dev/kvm or tracefs.

use std::path::Path;
use std::process::Command;

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// (ts, cpu, event, body) of every event of a `report --json`, sorted: the
/// buffer labels differ between forms, the events must not.
fn events(json: &str) -> Vec<(u64, u64, String, String)> {
    let mut v: Vec<_> = json
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                j["ts"].as_u64().unwrap(),
                j["cpu"].as_u64().unwrap(),
                j["event"].as_str().unwrap_or("").to_string(),
                j["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn record_microvm_guests_then_merge_and_check() {
    if !Path::new("/dev/kvm").exists() || !Path::new("/sys/kernel/tracing").exists() {
        eprintln!("SKIPPED: record_microvm: no /dev/kvm or tracefs");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tscmerge-recmv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let exe = env!("CARGO_BIN_EXE_tscmerge");
    let (host, raw) = (d("host.dat"), d("raw"));
    let (code, out, err) = tscmerge(&[
        "record", "--host", "--no-kallsyms", "--trace-id", "0x100", "--guest-name", "first,trace-id=0x101", "--guest-name", "second",
        "-e", "kvm:kvm_emulate_insn", "-e", "kvm:kvm_pio", "-e", "kvm:kvm_msr", "-e", "kvm:kvm_cpuid", "-e", "kvm:kvm_userspace_exit",
        "--raw", &raw, "-o", &host, "--",
        exe, "microvm", "-o", &d(""), "--vms", "2", "--vcpus", "2", "--reads", "24", "--wrmsr-after", "11", "--hold-ms", "150",
    ]);
    if code == 2 && err.contains("another tscmerge record is running") {
        eprintln!("SKIPPED: record_microvm: another recorder holds the lock: {err}");
        return;
    }
    assert_eq!(code, 0, "record failed: {out}{err}");
    let rec_err = err.clone();

    // Merge and check straight from the recorded file: matched without pins,
    // debugfs offsets chosen, every read inside its read instruction's window (rdmsr, the CLI default).
    let (code, out, err) = tscmerge(&["check", &host, "--guest", &format!("a={}", d("guest-vm0.txt")), "--guest", &format!("b={}", d("guest-vm1.txt"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("were not applied on this host"), "{out}");
    assert!(out.contains("96 guest events, 96 inside run windows (100.000%)"), "{out}");
    assert!(out.contains("rdmsr reads: 96 of 96 values equal the host's kvm_msr"), "{out}");
    let vms = std::fs::read_to_string(d("vms.txt")).unwrap();
    let (_, offsets, _) = tscmerge(&["offsets", &host]);
    for (guest, line) in ["a", "b"].iter().zip(vms.lines()) {
        let pid = line.split_whitespace().find_map(|w| w.strip_prefix("pid=")).unwrap();
        let vm = offsets.lines().find(|l| l.contains(&format!("(VMM pid {pid})"))).and_then(|l| l.split_whitespace().next()).unwrap();
        assert!(out.contains(&format!("match: guest {guest} -> {vm} ")), "guest {guest} should be {vm}:\n{out}");
    }

    // trace-cmd's host-guest options: the host's TRACEID, and one GUEST
    // option per micro-VM, named in creation order, whose vCPU threads are
    // the ones the micro-VM itself reports (vms.txt `vcpu_tids`), in vCPU order.
    let input = tscmerge::source::Input::open(Path::new(&host)).unwrap();
    let dat = input.tracedat().unwrap();
    assert_eq!(dat.trace_id(), Some(0x100));
    let guests: Vec<&ftrace::tracedat::Guest> = dat.guests().collect();
    assert_eq!(guests.len(), 2, "{guests:?}");
    assert_eq!((guests[0].name.as_str(), guests[0].trace_id, guests[1].name.as_str()), ("first", 0x101, "second"));
    assert_eq!(guests[1].trace_id, ftrace::write::hostguest::derived_trace_id("second", 0x100));
    let tids: Vec<Vec<(u32, u32)>> = vms
        .lines()
        .map(|l| {
            let t = l.split_whitespace().find_map(|w| w.strip_prefix("vcpu_tids=")).unwrap();
            t.split(',').enumerate().map(|(v, p)| (v as u32, p.parse().unwrap())).collect()
        })
        .collect();
    for g in &guests {
        assert!(tids.contains(&g.vcpus), "GUEST {} names {:?}; the micro-VMs ran {tids:?}", g.name, g.vcpus);
    }
    assert_ne!(guests[0].vcpus, guests[1].vcpus);
    assert!(rec_err.contains("guest first (VMM pid ") && rec_err.contains("2 of 2 vCPU threads known"), "{rec_err}");
    // TSC2NSEC: perf's pair, else from the frequency noted.
    assert!(dat.tsc2nsec().is_some_and(|(m, _, o)| m > 0 && o == 0));

    // trace-cmd reads the host file without complaint.
    if let Ok(tc) = Command::new("trace-cmd").args(["report", "-i", &host]).output() {
        let stderr = String::from_utf8_lossy(&tc.stderr);
        assert!(tc.status.success() && !stderr.contains("rror") && !stderr.contains("ailed"), "trace-cmd: {stderr}");
        assert!(String::from_utf8_lossy(&tc.stdout).contains("kvm_write_tsc_offset"));
    } else {
        eprintln!("SKIPPED: record_microvm: trace-cmd not installed, host file not checked with it");
    }

    // The same recording as trace.dat, as the raw capture, and as text.
    // --raw-ts: TSC counts (the file's TSC2NSEC would make nanoseconds of them).
    let (c1, from_dat, e1) = tscmerge(&["report", "--json", "--raw-ts", &host]);
    let (c2, from_raw, e2) = tscmerge(&["report", "--json", "--raw-ts", &raw]);
    let (c3, text, e3) = tscmerge(&["report", "--raw-ts", &host]);
    assert_eq!((c1, c2, c3), (0, 0, 0), "{e1}{e2}{e3}");
    std::fs::write(d("host-report.txt"), &text).unwrap();
    let (c4, from_text, e4) = tscmerge(&["report", "--json", &d("host-report.txt")]);
    assert_eq!(c4, 0, "{e4}");
    let (a, b, c) = (events(&from_dat), events(&from_raw), events(&from_text));
    assert!(a.len() > 1000, "{} events", a.len());
    assert_eq!(a, b, "trace.dat and raw capture differ");
    assert_eq!(a, c, "trace.dat and its text differ");
    eprintln!("record_microvm: {} host events identical as trace.dat, raw pages and text", a.len());
    std::fs::remove_dir_all(&dir).ok();
}
