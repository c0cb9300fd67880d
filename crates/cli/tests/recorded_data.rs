//! The checked-in real recordings (examples/microvm-pvm, rdtsc reads, and
//! examples/microvm-record, rdmsr reads; see their READMEs): run anywhere, no
//! KVM needed.

use std::process::Command;

const D: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/microvm-pvm");

fn tscmerge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tscmerge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn f(name: &str) -> String {
    format!("{D}/{name}")
}

/// `SUBCOMMAND` on the whole recording, guests unpinned, debugfs given, then `extra`.
fn on_recording(sub: &str, extra: &[&str]) -> (i32, String, String) {
    let (host, offs, a, b, dbg) =
        (f("host.txt"), f("host-tsc_offset.txt"), format!("a={}", f("guest-vm0.txt")), format!("b={}", f("guest-vm1.txt")), f("kvm_debugfs.txt"));
    let mut args = vec![sub, &host, &offs, "--guest", &a, "--guest", &b, "--kvm-debugfs", &dbg];
    args.extend_from_slice(extra);
    tscmerge(&args)
}

fn vmm_pids() -> Vec<String> {
    std::fs::read_to_string(f("vms.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")).unwrap().to_string())
        .collect()
}

#[test]
fn auto_offsets_put_every_read_in_its_window_and_match_both_guests() {
    let (code, out, err) = on_recording("check", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("were not applied on this host"), "{out}");
    assert!(out.contains("96 guest events, 96 inside run windows (100.000%)"), "{out}");
    // Each guest is matched to the VM of its own VMM process.
    let (_, offsets, _) = tscmerge(&["offsets", &f("host-tsc_offset.txt")]);
    let pids = vmm_pids();
    for (guest, pid) in ["a", "b"].iter().zip(&pids) {
        let vm = offsets
            .lines()
            .find(|l| l.contains(&format!("(VMM pid {pid})")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        assert!(out.contains(&format!("match: guest {guest} -> {vm} ")), "guest {guest} should be {vm}: {out}");
    }
}

#[test]
fn trusting_the_tracepoint_fails_with_a_diagnosis() {
    let pids = vmm_pids();
    let (code, out, err) = tscmerge(&[
        "check",
        &f("host.txt"),
        &f("host-tsc_offset.txt"),
        "--offsets",
        "tracepoint",
        "--guest",
        &format!("a={},pid={}", f("guest-vm0.txt"), pids[0]),
        "--guest",
        &format!("b={},pid={}", f("guest-vm1.txt"), pids[1]),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("0 inside run windows"), "{out}");
    assert!(out.contains("diagnosis:") && out.contains("PVM"), "{out}");
}

#[test]
fn offsets_show_debugfs_disagreeing() {
    let (code, out, _) = tscmerge(&["offsets", &f("host-tsc_offset.txt"), "--kvm-debugfs", &f("kvm_debugfs.txt")]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("DISAGREE").count(), 8, "{out}");
    assert!(out.contains("BREAK: prev != previous next"), "{out}");
}

#[test]
fn merge_output_is_chronological_and_complete() {
    let (code, out, err) = on_recording("merge", &["--json", "--stats"]);
    assert_eq!(code, 0, "{err}");
    let mut last = 0u64;
    let mut guests = 0;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["ts"].as_u64().unwrap();
        assert!(ts >= last);
        last = ts;
        if v["machine"] != "host" {
            guests += 1;
        }
    }
    assert_eq!(guests, 96);
    assert!(err.contains("events out"), "{err}");
}

#[test]
fn merge_check_reports_on_stderr_and_sets_the_exit_code() {
    let (code, out, err) = on_recording("merge", &["--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("96 inside run windows (100.000%)"), "{err}");
    assert!(!out.contains("check:"), "the report stays off stdout");
    let pins: Vec<String> = vmm_pids();
    let a = format!("a={},pid={}", f("guest-vm0.txt"), pins[0]);
    let (code, _, err) = tscmerge(&["merge", &f("host.txt"), &f("host-tsc_offset.txt"), "--guest", &a, "--offsets", "tracepoint", "--check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("diagnosis:"), "{err}");
}

/// The checked-in `tscmerge record` recording with rdmsr reads
/// (examples/microvm-record, see its README): host.dat holds its own debugfs
/// snapshots, so no pins and no extra files are needed.
const R: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/microvm-record");

fn rec(name: &str) -> String {
    format!("{R}/{name}")
}

/// Each TSC value a guest trace reports: its rdmsr lines' timestamps.
fn guest_values(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.contains("tracing_mark_write: rdmsr seq="))
        .map(|l| l.split(": ").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn rdmsr_recording_every_value_equals_the_hosts_kvm_msr() {
    let (a, b) = (format!("a={}", rec("guest-vm0.txt")), format!("b={}", rec("guest-vm1.txt")));
    let (code, out, err) = tscmerge(&["check", &rec("host.dat"), "--guest", &a, "--guest", &b]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("were not applied on this host"), "{out}");
    assert!(out.contains("96 guest events, 96 inside run windows (100.000%)"), "{out}");
    assert!(out.contains("rdmsr reads: 96 of 96 values equal the host's kvm_msr"), "{out}");
    // Oracle: trace-cmd's own rendering of the host file has exactly the
    // guests' values as its `msr_read 10` values.
    match Command::new("trace-cmd").args(["report", "-i", &rec("host.dat")]).output() {
        Ok(tc) if tc.status.success() => {
            let mut host: Vec<u64> = String::from_utf8_lossy(&tc.stdout)
                .lines()
                .filter_map(|l| l.split_once("msr_read 10 = 0x"))
                .map(|(_, v)| u64::from_str_radix(v.trim(), 16).unwrap())
                .collect();
            let mut guest: Vec<u64> = ["guest-vm0.txt", "guest-vm1.txt"]
                .iter()
                .flat_map(|g| guest_values(&std::fs::read_to_string(rec(g)).unwrap()))
                .collect();
            host.sort_unstable();
            guest.sort_unstable();
            assert_eq!(guest.len(), 96);
            assert_eq!(host, guest, "trace-cmd's kvm_msr values are the guests' reads");
        }
        _ => eprintln!("SKIPPED: recorded_data: trace-cmd not usable, kvm_msr values not compared with it"),
    }
}

#[test]
fn rdmsr_recording_a_guest_value_off_by_one_fails_the_check() {
    // Read seq=5 of vCPU 0 in guest a, its value (and so its time) moved by
    // one cycle: still inside its window, but not the value the host read.
    let text = std::fs::read_to_string(rec("guest-vm0.txt")).unwrap();
    let mut moved = None;
    let tampered: String = text
        .lines()
        .map(|l| {
            let line = match l.split_once(": tracing_mark_write: rdmsr seq=5 ") {
                Some((head, tail)) if moved.is_none() && head.contains("[000]") => {
                    let (lead, ts) = head.rsplit_once(' ').unwrap();
                    let v: u64 = ts.parse().unwrap();
                    moved = Some(v);
                    format!("{lead} {}: tracing_mark_write: rdmsr seq=5 {tail}", v + 1)
                }
                _ => l.to_string(),
            };
            line + "\n"
        })
        .collect();
    let v = moved.expect("guest a has read 5 on cpu 0");
    let dir = std::env::temp_dir().join(format!("tscmerge-recdata-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = dir.join("guest-vm0.txt");
    std::fs::write(&g, tampered).unwrap();
    let (a, b) = (format!("a={}", g.display()), format!("b={}", rec("guest-vm1.txt")));
    let (code, out, err) = tscmerge(&["check", &rec("host.dat"), "--guest", &a, "--guest", &b]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("96 guest events, 96 inside run windows (100.000%)"), "one cycle stays inside: {out}");
    assert!(out.contains("rdmsr reads: 95 of 96 values equal the host's kvm_msr"), "{out}");
    let want = format!("1 rdmsr reads disagree with the host's kvm_msr; worst: a cpu 0 at host {}: guest read {:#x}, host kvm_msr {v:#x}", v + 1, v + 1);
    assert!(out.contains(&want), "{want}\n{out}");
}
