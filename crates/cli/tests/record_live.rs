//! `tscmerge record` and `tscmerge doctor` against the real kernel: the binary
//! is run as a user would, the output is checked with `trace-cmd report` (the
//! oracle) and read back through tscmerge. Instances are named `recordcli_*`
//! (hidden `--instance-prefix`) and each test has its own lock file, so they
//! never meet other users of the shared tracefs. Without root, tracefs,
//! trace-cmd or /dev/kvm they print "SKIPPED:".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use record::{Tracefs, TracefsState};

const BIN: &str = env!("CARGO_BIN_EXE_tscmerge");

fn tracefs_or_skip(test: &str) -> Option<Tracefs> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: {test}: needs root");
        return None;
    }
    if Command::new("trace-cmd").arg("--version").output().is_err() {
        eprintln!("SKIPPED: {test}: no trace-cmd");
        return None;
    }
    match Tracefs::open_or_mount(Path::new("/")) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("SKIPPED: {test}: {e}");
            None
        }
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recordcli_{tag}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Differences that concern us: our instances, or any top-level file.
fn our_diff(before: &TracefsState, after: &TracefsState, prefix: &str) -> Vec<String> {
    before
        .diff(after)
        .into_iter()
        .filter(|l| match l.strip_prefix("instance ") {
            Some(rest) => rest.starts_with(prefix),
            None => true,
        })
        .collect()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `trace-cmd report FILE`; panics when trace-cmd complains.
fn trace_cmd_report(f: &Path) -> String {
    let o = Command::new("trace-cmd").arg("report").arg(f).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success() && err.trim().is_empty(), "trace-cmd report {}: {err}", f.display());
    out
}

/// `ours` equals trace-cmd's report `tc`, but for one libtraceevent quirk:
/// comms the sched plugins register while every event so far was the idle
/// task's go to the unsorted `cmdlist` beside the file's saved cmdlines,
/// before the first lookup of a real pid builds the sorted table
/// (event-parse.c `_tep_register_comm`, `cmdline_init`); a pid then in both
/// with two comms is found by `bsearch` over the duplicates, either one.
/// Such lines may differ in the task column only, and trace-cmd's comm must
/// be one those first idle events registered for that pid.
fn same_but_early_comms(ours: &str, tc: &str) {
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), tc.lines().collect());
    assert_eq!(a.len(), b.len(), "tscmerge report differs from trace-cmd report:\n{ours}");
    // The task column: `comm-pid` right-aligned before ` [cpu]`.
    let task = |l: &str| -> Option<(String, String)> {
        let head = l.split(" [").next()?.trim();
        let (comm, pid) = head.rsplit_once('-')?;
        Some((comm.to_string(), pid.to_string()))
    };
    // Comms registered by the leading idle-task events (`==> comm:pid`, `comm:pid` of a wakeup).
    let mut early = std::collections::BTreeSet::new();
    for l in b.iter().skip_while(|l| task(l).is_none()) {
        if task(l).is_none_or(|(_, pid)| pid != "0") {
            break;
        }
        for w in l.split_whitespace() {
            if let Some((c, p)) = w.rsplit_once(':') {
                early.insert((c.to_string(), p.to_string()));
            }
        }
    }
    let mut quirks = 0;
    for (x, y) in a.iter().zip(&b) {
        if x == y {
            continue;
        }
        let (tx, ty) = (task(x), task(y));
        let rest = |l: &str| l.split_once(" [").map(|(_, r)| r.to_string());
        let ok = matches!((&tx, &ty), (Some((_, px)), Some((cy, py))) if px == py && early.contains(&(cy.clone(), py.clone())))
            && rest(x) == rest(y);
        assert!(ok, "tscmerge report differs from trace-cmd report:\n ours: {x}\n t-c:  {y}");
        quirks += 1;
    }
    if quirks > 0 {
        eprintln!("record_host_with_a_vm: {quirks} lines differ only by a comm registered before libtraceevent built its cmdline table");
    }
}

#[test]
fn doctor_fake_root_fails_with_advice() {
    let root = tmpdir("fakeroot");
    fs::create_dir_all(root.join("proc")).unwrap();
    fs::write(root.join("proc/cpuinfo"), "processor\t: 0\nflags\t\t: fpu tsc constant_tsc\n\n").unwrap();
    let o = Command::new(BIN).args(["doctor", "--root"]).arg(&root).output().unwrap();
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = |tag: &str, what: &str| out.lines().find(|l| l.starts_with(tag) && l[6..].starts_with(what)).map(str::to_string);
    let t = line("FAIL", "tracefs").expect(&out);
    assert!(t.contains("mount -t tracefs nodev"), "{t}");
    let k = line("FAIL", "/dev/kvm").expect(&out);
    assert!(k.contains("modprobe kvm_intel"), "{k}");
    assert!(line("PASS", "constant_tsc").is_some(), "{out}");
    assert!(line("WARN", "nonstop_tsc").is_some(), "{out}");
    assert!(line("WARN", "virtualization").is_some(), "{out}");
    assert!(line("INFO", "micro-VM run").unwrap().contains("skipped"), "{out}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn doctor_real_run() {
    let Some(tfs) = tracefs_or_skip("doctor_real_run") else { return };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: doctor_real_run: no /dev/kvm");
        return;
    }
    let before = TracefsState::snapshot(&tfs).unwrap();
    let t0 = std::time::Instant::now();
    let o = Command::new(BIN).args(["doctor", "--instance", "recordcli_doctor"]).output().unwrap();
    let took = t0.elapsed();
    let (out, err) = text(&o);
    eprintln!("{out}{err}doctor took {took:?}");
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(took.as_secs_f64() < 5.0);
    let offs = out.lines().find(|l| l.starts_with("PASS  offset events")).expect(&out);
    assert!(offs.contains("prev=0 next=-"), "{offs}");
    assert!(out.lines().any(|l| l.starts_with("PASS  guest read vs host") && l.contains("16/16 reads inside")), "{out}");
    // It reads with rdmsr IA32_TSC, says so, and each read's window ends at
    // the kvm_msr carrying the guest's value.
    assert!(out.lines().any(|l| l.starts_with("INFO  micro-VM run") && l.contains("16 reads with rdmsr IA32_TSC")), "{out}");
    assert!(out.contains("16/16 windows end at a kvm_msr msr_read 10 carrying the guest's value"), "{out}");
    // One sentence about the host, whichever kind it is.
    assert!(out.contains("PVM-style host") || out.contains("VMX/SVM-style host") || out.contains("offsets disagree"), "{out}");
    let after = TracefsState::snapshot(&tfs).unwrap();
    assert!(our_diff(&before, &after, "recordcli_doctor").is_empty());
}

/// Host recording around a micro-VM (`tscmerge doctor` as COMMAND): the file
/// reads in trace-cmd, tscmerge shows exactly what trace-cmd shows, offsets are
/// grouped by the VMM's tgid, and the recorded facts come back.
/// KVM_CREATE_VM, KVM_CREATE_VCPU(0), hold 300 ms.
const HOLD_VM: &str = "import fcntl,os,time; k=os.open(\"/dev/kvm\",os.O_RDWR); vm=fcntl.ioctl(k,0xAE01,0); v=fcntl.ioctl(vm,0xAE41,0); time.sleep(0.3)";

#[test]
fn record_host_with_a_vm() {
    let Some(tfs) = tracefs_or_skip("record_host_with_a_vm") else { return };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: record_host_with_a_vm: no /dev/kvm");
        return;
    }
    let tmp = tmpdir("host");
    let out = tmp.join("host.dat");
    let lock = tmp.join("lock");
    // The doctor's micro-VM lives a few ms, less than the debugfs sampler's
    // 20 ms tick; a second VM held 300 ms (python, when present) is sampled.
    let python = Command::new("python3").arg("--version").output().is_ok();
    let script = format!(
        "{BIN} doctor --instance recordcli_h_doctor{}",
        if python { format!(" && python3 -c '{HOLD_VM}'") } else { String::new() }
    );
    let before = TracefsState::snapshot(&tfs).unwrap();
    let o = Command::new(BIN)
        .args(["record", "--host", "--instance-prefix", "recordcli_h_", "--lock"])
        .arg(&lock)
        .arg("-o")
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let (dout, err) = text(&o);
    assert!(o.status.success(), "{dout}{err}");
    assert!(err.contains("stopped by command exited"), "{err}");
    assert!(err.contains("lost events total 0"), "{err}");
    let after = TracefsState::snapshot(&tfs).unwrap();
    assert!(our_diff(&before, &after, "recordcli_h_").is_empty(), "{:?}", before.diff(&after));
    // Only the output is left beside it: no raw directory, no temporary file.
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let tc = trace_cmd_report(&out);
    let ours = Command::new(BIN).arg("report").arg(&out).output().unwrap();
    assert!(ours.status.success());
    same_but_early_comms(&String::from_utf8_lossy(&ours.stdout), &tc);
    // The doctor's vCPU creation wrote an offset in the tsc_offset buffer.
    let creation = tc
        .lines()
        .find(|l| l.starts_with("tsc_offset:") && l.contains("kvm_write_tsc_offset: vcpu=0 prev=0 next="))
        .unwrap_or_else(|| panic!("no creation event in\n{tc}"));
    // The doctor printed the same offset (signed) in its report.
    let next: u64 = creation.rsplit("next=").next().unwrap().trim().parse().unwrap();
    assert!(dout.contains(&format!("next={}", next as i64)), "{creation}\n{dout}");
    // Default events this kernel has fired at least once (kvm_pio from the guest's `out`).
    assert!(tc.contains("kvm_pio:"), "no kvm_pio");

    let input = tscmerge::source::Input::open(&out).unwrap();
    let w = &input.offset_writes()[0];
    assert!(w.tgid.is_some(), "offset write without tgid: {w:?}");
    let facts = input.recorded_facts().expect("recorded facts");
    assert!(facts.tsc_hz.is_some_and(|hz| hz > 100_000_000), "{facts:?}");
    if python {
        assert!(facts.kvm_debugfs.iter().any(|l| l.split_whitespace().nth(1) == Some("new")), "{facts:?}");
    } else {
        eprintln!("SKIPPED: debugfs snapshot part: no python3 to hold a VM");
    }
    assert_eq!(facts.meta("format"), Some("tscmerge-raw 1"));
    // Each buffer's events are listed under its name in the file: the top
    // level (no kvm_write_tsc_offset there) is not scanned for offsets, the
    // tsc_offset buffer is. A GUEST option (a VM whose vCPU thread wrote its
    // offset) has the top level scanned once more, for the events of the
    // threads it names (which of them the host saw).
    let top = facts.meta("buffer_events.").unwrap_or_else(|| panic!("no top-level event list: {facts:?}"));
    assert!(top.split(',').any(|e| e == "kvm:kvm_pio") && !top.contains("kvm_write_tsc_offset"), "{top}");
    assert_eq!(facts.meta("buffer_events.tsc_offset"), Some("kvm:kvm_write_tsc_offset"));
    let dat = input.tracedat().unwrap();
    assert!(dat.trace_id().is_some());
    let g: Vec<_> = dat.guests().collect();
    assert_eq!(input.buffers()[0].events.is_some(), !g.is_empty(), "top level scanned: GUEST options {g:?}");
    assert!(g.iter().all(|g| g.vcpus.iter().any(|&(_, p)| p as i32 == w.pid)) || g.is_empty() || input.offset_writes().iter().any(|x| g.iter().any(|g| g.vcpus.iter().any(|&(_, p)| p as i32 == x.pid))), "{g:?}");
    assert!(input.buffers()[1].events.is_some_and(|n| n >= 1), "{:?}", input.buffers()[1]);
    let offsets = Command::new(BIN).arg("offsets").arg(&out).output().unwrap();
    let (otext, _) = text(&offsets);
    assert!(otext.contains(&format!("(VMM pid {})", w.tgid.unwrap())), "{otext}");
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn record_refusals() {
    let Some(tfs) = tracefs_or_skip("record_refusals") else { return };
    let tmp = tmpdir("refuse");
    let lock = tmp.join("lock");
    let before = TracefsState::snapshot(&tfs).unwrap();
    // A named event this kernel lacks is an error, before anything is created.
    let o = Command::new(BIN)
        .args(["record", "--guest", "--instance-prefix", "recordcli_r_", "-e", "nosuch:event", "--lock"])
        .arg(&lock)
        .arg("-o")
        .arg(tmp.join("x.dat"))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("event nosuch:event does not exist"), "{err}");
    assert!(!tmp.join("x.dat").exists());

    // A second recorder refuses while one runs, naming the first one's pid.
    let mut first = Command::new(BIN)
        .args(["record", "--guest", "--instance-prefix", "recordcli_r_", "--duration", "3", "--no-kallsyms", "--lock"])
        .arg(&lock)
        .arg("-o")
        .arg(tmp.join("a.dat"))
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !tfs.instances_dir().join("recordcli_r_tscmerge").exists() && t0.elapsed().as_secs() < 3 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = Command::new(BIN)
        .args(["record", "--guest", "--instance-prefix", "recordcli_r2_", "--duration", "1", "--lock"])
        .arg(&lock)
        .arg("-o")
        .arg(tmp.join("b.dat"))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("another tscmerge record is running: {} is locked by pid {}", lock.display(), first.id())), "{err}");
    assert!(!tmp.join("b.dat").exists());
    assert!(first.wait().unwrap().success());
    trace_cmd_report(&tmp.join("a.dat"));
    let after = TracefsState::snapshot(&tfs).unwrap();
    assert!(our_diff(&before, &after, "recordcli_r").is_empty());
    fs::remove_dir_all(&tmp).unwrap();
}

/// Guest mode: one buffer, x86-tsc; a write to the top-level trace_marker is
/// copied into the instance (copy_trace_marker) and so is one to the instance's own.
#[test]
fn record_guest_markers() {
    let Some(tfs) = tracefs_or_skip("record_guest_markers") else { return };
    let tmp = tmpdir("guest");
    let out = tmp.join("g.dat");
    let inst = tfs.instances_dir().join("recordcli_g_tscmerge");
    let has_copy = tfs.dir().join("options/copy_trace_marker").exists();
    let script = format!(
        "echo recordcli-own-marker > {}/trace_marker; {}",
        inst.display(),
        if has_copy { format!("echo recordcli-top-marker > {}/trace_marker", tfs.dir().display()) } else { String::new() }
    );
    let o = Command::new(BIN)
        .args(["record", "--guest", "--trace-id", "0x5eed", "--instance-prefix", "recordcli_g_", "--no-kallsyms", "--lock"])
        .arg(tmp.join("lock"))
        .arg("-o")
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let tc = trace_cmd_report(&out);
    // `tracing_mark_write: X` with kallsyms, `print: 0xADDR: X` without.
    assert!(tc.contains(": recordcli-own-marker"), "{tc}");
    if has_copy {
        assert!(tc.contains(": recordcli-top-marker"), "{tc}");
    } else {
        eprintln!("SKIPPED: copy_trace_marker part: kernel before 6.17");
    }
    assert!(!tc.contains("tsc_offset:"));
    let info = Command::new(BIN).arg("info").arg(&out).output().unwrap();
    let (itext, _) = text(&info);
    assert!(itext.contains("buffer \"top level\": clock x86-tsc"), "{itext}");
    assert!(!itext.contains("buffer \"tsc_offset\""), "guest recordings have no offset instance: {itext}");
    // trace-cmd's TRACEID (the id a host's GUEST option names) and TSC2NSEC.
    assert!(err.contains("trace id 0x5eed (give it to the host's --guest-name"), "{err}");
    let dump = Command::new("trace-cmd").args(["dump", "--options"]).arg(&out).output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("[Option TRACEID, 8 bytes]\n0x5EED") && dump.contains("[Option TSC2NSEC, 16 bytes]") && !dump.contains("[Option GUEST"), "{dump}");
    fs::remove_dir_all(&tmp).unwrap();
}
