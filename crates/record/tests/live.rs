//! Live tests against the kernel's tracefs, debugfs and /dev/kvm. They need
//! root; without tracefs (or /dev/kvm for the VM part) they print "SKIPPED:".
//! Instance names start with `record_test_` so they never collide with other
//! users of the shared tracefs.

use record::{
    Error, Instance, InstanceConfig, KvmVcpuSnapshot, Meta, RecordConfig, Recorder, Tracefs,
    TracefsState,
};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tracefs_or_skip(test: &str) -> Option<Tracefs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: {test}: needs root");
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
    let d = std::env::temp_dir().join(format!("record_test_{tag}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Only differences about the listed instances or the top-level files count:
/// other users of the shared tracefs create and remove their own instances.
fn relevant_diff(before: &TracefsState, after: &TracefsState, ours: &[&str]) -> Vec<String> {
    before
        .diff(after)
        .into_iter()
        .filter(|l| match l.strip_prefix("instance ") {
            Some(rest) => ours.iter().any(|n| rest.split(' ').next() == Some(*n)),
            None => true,
        })
        .collect()
}

struct Vm {
    _vm: OwnedFd,
    _vcpu: OwnedFd,
    tid: i32,
    tsc_before: u64,
    tsc_after: u64,
}

/// KVM_CREATE_VM + KVM_CREATE_VCPU(0): creating the vCPU fires
/// kvm_write_tsc_offset (prev=0, next=-host_tsc) in this thread.
fn create_vm() -> Option<Vm> {
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .ok()?;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
    // SAFETY: plain ioctls with integer arguments on fds we own.
    unsafe {
        let vm = libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0);
        if vm < 0 {
            return None;
        }
        let vm = OwnedFd::from_raw_fd(vm);
        let tsc_before = core::arch::x86_64::_rdtsc();
        let vcpu = libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0);
        let tsc_after = core::arch::x86_64::_rdtsc();
        if vcpu < 0 {
            return None;
        }
        Some(Vm {
            _vm: vm,
            _vcpu: OwnedFd::from_raw_fd(vcpu),
            tid: libc::gettid(),
            tsc_before,
            tsc_after,
        })
    }
}

/// Event ID from a format file.
fn event_id(format: &str) -> u16 {
    format
        .lines()
        .find_map(|l| l.strip_prefix("ID: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Find kvm_write_tsc_offset records written by `vm.tid` for vcpu 0 whose
/// `next_tsc_offset` is minus a host TSC read during the vCPU's creation.
/// Scans 4-byte aligned positions (ring-buffer events are 4-byte aligned,
/// kernel/trace/ring_buffer.c RB_ALIGNMENT) of each page's data area.
fn find_offset_event(raw: &[u8], page: usize, id: u16, vm: &Vm) -> usize {
    let mut hits = 0;
    for p in raw.chunks_exact(page) {
        let data = &p[16..];
        let mut i = 0;
        while i + 32 <= data.len() {
            let u16at = |o| u16::from_le_bytes(data[i + o..i + o + 2].try_into().unwrap());
            let u32at = |o| u32::from_le_bytes(data[i + o..i + o + 4].try_into().unwrap());
            let u64at = |o| u64::from_le_bytes(data[i + o..i + o + 8].try_into().unwrap());
            if u16at(0) == id && u32at(4) as i32 == vm.tid && u32at(8) == 0 {
                let next = u64at(24).wrapping_neg();
                if u64at(16) == 0 && next >= vm.tsc_before && next <= vm.tsc_after {
                    hits += 1;
                }
            }
            i += 4;
        }
    }
    hits
}

#[test]
fn record_short_run_with_a_vm() {
    let Some(tfs) = tracefs_or_skip("record_short_run_with_a_vm") else {
        return;
    };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: record_short_run_with_a_vm: no /dev/kvm");
        return;
    }
    let names = ["record_test_tsc", "record_test_sched"];
    let tmp = tmpdir("run");
    let out = tmp.join("out");
    let before = TracefsState::snapshot(&tfs).unwrap();
    let mut cfg = RecordConfig::new(&out);
    cfg.instances = vec![
        InstanceConfig::new(names[0], &["kvm:kvm_write_tsc_offset"]),
        InstanceConfig::new(names[1], &["sched:sched_switch", "sched:sched_wakeup"]),
    ];
    cfg.instances[0].buffer_size_kb = Some(256);
    cfg.kallsyms = true;
    cfg.lock_path = tmp.join("lock");
    cfg.kvm_debugfs_interval = Some(Duration::from_millis(50));
    cfg.poll_interval = Duration::from_millis(20);
    let rec = Recorder::start(cfg.clone()).unwrap();

    // A second recorder with the same lock refuses, naming us.
    let mut cfg2 = cfg.clone();
    cfg2.out_dir = tmp.join("out2");
    match Recorder::start(cfg2) {
        Err(e @ Error::Locked { .. }) => {
            assert!(
                e.to_string()
                    .contains(&format!("by pid {}", std::process::id())),
                "{e}"
            )
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second recorder started"),
    }
    // The instance-exists message when the directory is there anyway.
    let e = Instance::create_locked(&tfs, names[0], &cfg.lock_path)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("an instance named record_test_tsc exists: this process holds"),
        "{e}"
    );
    assert!(
        e.contains("rmdir /sys/kernel/tracing/instances/record_test_tsc"),
        "{e}"
    );

    let kb = fs::read_to_string(tfs.instances_dir().join(names[0]).join("buffer_size_kb")).unwrap();
    // The kernel rounds up to whole pages of data (258 here).
    let kb: u64 = kb.trim().parse().unwrap();
    assert!((256..256 + 16).contains(&kb), "buffer_size_kb {kb}");

    let vm = std::thread::spawn(|| {
        let vm = create_vm();
        std::thread::sleep(Duration::from_millis(300));
        vm
    })
    .join()
    .unwrap();
    let Some(vm) = vm else {
        drop(rec);
        eprintln!("SKIPPED: record_short_run_with_a_vm: KVM_CREATE_VM/VCPU failed");
        return;
    };
    std::thread::sleep(Duration::from_millis(100));
    let live: u64 = rec
        .counters()
        .iter()
        .flat_map(|i| &i.cpus)
        .map(|(_, c)| c.bytes.load(Ordering::Relaxed))
        .sum();
    let sum = rec.stop().unwrap();
    eprintln!("live bytes before stop: {live}; summary: {sum:?}");

    let meta = Meta::read(&out).unwrap();
    let page: usize = meta.get("page_size").unwrap().parse().unwrap();
    assert_eq!(meta.get("complete"), Some("1"));
    assert_eq!(meta.get("kallsyms"), Some("1"));
    let ks = fs::read_to_string(out.join("kallsyms")).unwrap();
    assert!(
        ks.lines()
            .any(|l| l.ends_with(" T _stext") || l.ends_with(" t _stext") || l.contains(" T ")),
        "kallsyms"
    );
    assert!(meta.get("tsc_hz_source").is_some() && meta.get("uname").unwrap().starts_with("Linux"));
    assert_eq!(sum.page_size, page);
    for n in names {
        let d = out.join(n);
        assert_eq!(
            fs::read_to_string(d.join("trace_clock")).unwrap(),
            "x86-tsc\n"
        );
        let mut total = 0;
        for c in &sum.instances.iter().find(|i| i.name == n).unwrap().cpus {
            let len = fs::metadata(d.join(format!("cpu{}.raw", c.cpu)))
                .unwrap()
                .len() as usize;
            assert_eq!(len % page, 0, "{n} cpu{} size {len}", c.cpu);
            assert_eq!(len as u64, c.capture.bytes);
            assert!(
                c.capture.spliced,
                "splice fell back to read/write on {}",
                d.display()
            );
            total += len;
        }
        assert!(total > 0, "{n}: nothing captured");
        assert!(fs::read_to_string(d.join("stats"))
            .unwrap()
            .contains("overrun="));
    }
    for f in [
        "header_page",
        "header_event",
        "printk_formats",
        "saved_cmdlines",
        "events/ftrace/print/format",
        "events/ftrace/bprint/format",
        "events/sched/sched_switch/format",
    ] {
        assert!(fs::metadata(out.join(f)).unwrap().len() > 0, "{f}");
    }

    // The kernel wrote our vCPU creation: right id, pid, vcpu and offset.
    let id =
        event_id(&fs::read_to_string(out.join("events/kvm/kvm_write_tsc_offset/format")).unwrap());
    let mut hits = 0;
    for e in fs::read_dir(out.join(names[0])).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "raw") {
            hits += find_offset_event(&fs::read(&p).unwrap(), page, id, &vm);
        }
    }
    assert_eq!(
        hits, 1,
        "kvm_write_tsc_offset of tid {} not found exactly once",
        vm.tid
    );

    // debugfs saw our VM, and processes.txt names the vCPU thread.
    let pid = std::process::id() as i32;
    let kd = fs::read_to_string(out.join("kvm_debugfs.txt")).unwrap();
    // debugfs names the VM after the *thread* that created it (task_pid_nr).
    let ours: Vec<_> = kd
        .lines()
        .filter_map(KvmVcpuSnapshot::parse_line)
        .filter(|(s, _)| s.pid == vm.tid)
        .collect();
    assert!(ours.iter().any(|(s, r)| r == "new" && s.vcpu == 0), "{kd}");
    let procs = fs::read_to_string(out.join("processes.txt")).unwrap();
    assert!(
        procs
            .lines()
            .any(|l| l.starts_with(&format!("{} {pid} ", vm.tid))),
        "{procs}"
    );

    trace_cmd_oracle(&tmp, &out, &sum, &vm);

    drop(vm);
    let after = TracefsState::snapshot(&tfs).unwrap();
    assert_eq!(relevant_diff(&before, &after, &names), Vec::<String>::new());
    if std::env::var_os("RECORD_TEST_KEEP").is_some() {
        eprintln!("kept {}", out.display());
    } else {
        fs::remove_dir_all(&tmp).unwrap();
    }
}

fn run(cmd: &mut std::process::Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// trace-cmd as the oracle for the raw pages: `restore -c` makes a trace.dat
/// head from this kernel's tracefs, `restore -i head cpu*.raw` appends our
/// pages, `report` decodes them. It must find exactly as many events as the
/// kernel says were read (per_cpu stats `read events`), and our vCPU's
/// kvm_write_tsc_offset with a timestamp inside the ioctl.
fn trace_cmd_oracle(tmp: &Path, out: &Path, sum: &record::RecordSummary, vm: &Vm) {
    if std::process::Command::new("trace-cmd")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: trace-cmd oracle: trace-cmd not installed");
        return;
    }
    use std::process::Command;
    let head = tmp.join("head");
    run(Command::new("trace-cmd")
        .arg("restore")
        .arg("-c")
        .arg("-o")
        .arg(&head));
    for (inst, needle) in [
        ("record_test_tsc", "kvm_write_tsc_offset:"),
        ("record_test_sched", "sched_"),
    ] {
        let rep = oracle_report(&head, tmp, out, sum, inst, needle);
        if inst == "record_test_tsc" {
            // "  comm-TID [CPU]  SECS.NSECS: kvm_write_tsc_offset: vcpu=0 prev=0 next=N"; with
            // the x86-tsc clock SECS.NSECS is the raw TSC split at 10^9.
            let want = format!("-{} ", vm.tid);
            let line = rep
                .lines()
                .find(|l| l.contains(&want) && l.contains("vcpu=0 prev=0 next="))
                .expect(&rep);
            let ts: u64 = line
                .split(']')
                .nth(1)
                .unwrap()
                .trim()
                .split(':')
                .next()
                .unwrap()
                .replace('.', "")
                .parse()
                .unwrap();
            assert!(
                vm.tsc_before <= ts && ts <= vm.tsc_after,
                "{line}: not in [{}, {}]",
                vm.tsc_before,
                vm.tsc_after
            );
            let next: u64 = line.rsplit("next=").next().unwrap().trim().parse().unwrap();
            assert!(
                next.wrapping_neg() >= vm.tsc_before && next.wrapping_neg() <= ts,
                "{line}"
            );
        }
    }
}

/// trace-cmd's report of one instance's raw files; asserts it decodes as many
/// `needle` events as the kernel says were read.
fn oracle_report(
    head: &Path,
    tmp: &Path,
    out: &Path,
    sum: &record::RecordSummary,
    inst: &str,
    needle: &str,
) -> String {
    use std::process::Command;
    let is = sum.instances.iter().find(|i| i.name == inst).unwrap();
    let dat = tmp.join(format!("{inst}.dat"));
    let mut c = Command::new("trace-cmd");
    c.arg("restore").arg("-i").arg(head).arg("-o").arg(&dat);
    for cpu in &is.cpus {
        c.arg(out.join(inst).join(format!("cpu{}.raw", cpu.cpu)));
    }
    run(&mut c);
    let rep = run(Command::new("trace-cmd").arg("report").arg("-t").arg(&dat));
    let n = rep.lines().filter(|l| l.contains(needle)).count() as u64;
    let read: u64 = is.cpus.iter().map(|c| c.stats.read_events).sum();
    assert_eq!(
        n, read,
        "{inst}: trace-cmd decoded {n} events, the kernel says {read} were read"
    );
    assert!(n > 0, "{inst}: no events");
    rep
}

#[test]
fn read_write_capture_matches_trace_cmd() {
    let Some(_tfs) = tracefs_or_skip("read_write_capture_matches_trace_cmd") else {
        return;
    };
    if std::process::Command::new("trace-cmd")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: read_write_capture_matches_trace_cmd: trace-cmd not installed");
        return;
    }
    let tmp = tmpdir("rw");
    let out = tmp.join("out");
    let mut cfg = RecordConfig::new(&out);
    cfg.instances = vec![InstanceConfig::new(
        "record_test_rw",
        &["sched:sched_switch", "sched:sched_waking"],
    )];
    cfg.lock_path = tmp.join("lock");
    cfg.kvm_debugfs_interval = None;
    cfg.poll_interval = Duration::from_millis(10);
    cfg.splice = false;
    let rec = Recorder::start(cfg).unwrap();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let sum = rec.stop().unwrap();
    assert!(sum.instances[0].cpus.iter().all(|c| !c.capture.spliced));
    let head = tmp.join("head");
    run(std::process::Command::new("trace-cmd")
        .arg("restore")
        .arg("-c")
        .arg("-o")
        .arg(&head));
    oracle_report(&head, &tmp, &out, &sum, "record_test_rw", "sched_");
    fs::remove_dir_all(&tmp).unwrap();
}

/// xorshift64*, seeded from the clock; the seed is printed for replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn interrupted_runs_leave_no_instance() {
    let Some(tfs) = tracefs_or_skip("interrupted_runs_leave_no_instance") else {
        return;
    };
    let name = "record_test_intr";
    let tmp = tmpdir("intr");
    let before = TracefsState::snapshot(&tfs).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("interrupted_runs_leave_no_instance seed {seed:#x}");
    let mut rng = Rng(seed);
    // Scale the interrupt moments to how long an undisturbed start takes here.
    let probe_out = tmp.join("probe");
    let mut cfg = RecordConfig::new(&probe_out);
    cfg.instances = vec![InstanceConfig::new(name, &["sched:*"])];
    cfg.lock_path = tmp.join("lock");
    cfg.kvm_debugfs_interval = Some(Duration::from_millis(10));
    let t0 = Instant::now();
    let rec = Recorder::start(cfg).unwrap();
    let start_us = t0.elapsed().as_micros() as u64;
    rec.stop().unwrap();
    eprintln!("an undisturbed start takes {start_us} us");
    let (mut during_start, mut stopped, mut dropped) = (0, 0, 0);
    for it in 0..20 {
        let out = tmp.join(format!("out{it}"));
        let flag = Arc::new(AtomicBool::new(false));
        let mut cfg = RecordConfig::new(&out);
        cfg.instances = vec![InstanceConfig::new(name, &["sched:*"])];
        cfg.lock_path = tmp.join("lock");
        cfg.kvm_debugfs_interval = Some(Duration::from_millis(10));
        cfg.poll_interval = Duration::from_millis(5);
        cfg.interrupt = Some(flag.clone());
        cfg.splice = it % 2 == 0;
        let delay = Duration::from_micros(rng.next() % (2 * start_us + 1));
        let f2 = flag.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(delay);
            f2.store(true, Ordering::SeqCst);
        });
        match Recorder::start(cfg) {
            Err(Error::Interrupted) => during_start += 1,
            Err(e) => panic!("iteration {it}: {e}"),
            Ok(rec) => {
                let t0 = Instant::now();
                while !flag.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if rng.next().is_multiple_of(2) {
                    let sum = rec.stop().unwrap();
                    for c in &sum.instances[0].cpus {
                        let len = fs::metadata(out.join(name).join(format!("cpu{}.raw", c.cpu)))
                            .unwrap()
                            .len();
                        assert_eq!((len, len % 4096), (c.capture.bytes, 0), "iteration {it}");
                        assert_eq!(c.capture.spliced, it % 2 == 0);
                    }
                    stopped += 1;
                } else {
                    drop(rec);
                    dropped += 1;
                }
            }
        }
        setter.join().unwrap();
        assert!(
            !tfs.instance_names().unwrap().iter().any(|n| n == name),
            "iteration {it} left {name}"
        );
        // The lock is free again.
        drop(record::RecordLock::acquire(&tmp.join("lock")).unwrap());
    }
    eprintln!("interrupted during start {during_start}, stopped {stopped}, dropped {dropped}");
    let after = TracefsState::snapshot(&tfs).unwrap();
    assert_eq!(
        relevant_diff(&before, &after, &[name]),
        Vec::<String>::new()
    );
    fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn clear_errors_for_bad_clock_missing_event_and_existing_instance() {
    let Some(tfs) = tracefs_or_skip("clear_errors") else {
        return;
    };
    let mut inst = Instance::create(&tfs, "record_test_errs").unwrap();
    let e = inst.set_clock("no-such-clock").unwrap_err().to_string();
    assert!(
        e.starts_with("trace clock \"no-such-clock\" is not available in"),
        "{e}"
    );
    assert!(
        e.contains("available clocks: ") && e.contains("local"),
        "{e}"
    );
    let e = inst
        .enable_event("kvm:no_such_event")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("event kvm:no_such_event does not exist"),
        "{e}"
    );
    let e = Instance::create(&tfs, "record_test_errs")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("an instance named record_test_errs exists: "),
        "{e}"
    );
    inst.set_clock("x86-tsc").unwrap();
    assert_eq!(inst.clock().unwrap(), "x86-tsc");
    inst.remove().unwrap();
    assert!(!tfs.instances_dir().join("record_test_errs").exists());
    // Drop removes too.
    drop(Instance::create(&tfs, "record_test_errs").unwrap());
    assert!(!tfs.instances_dir().join("record_test_errs").exists());
}

#[test]
fn fake_root_without_tracefs_fails_with_a_clear_message() {
    // Real mount(2) calls on paths that do not exist: ENOENT (or EPERM unprivileged).
    let root = tmpdir("fakeroot");
    let e = Tracefs::open_or_mount(&root).unwrap_err().to_string();
    let want = format!(
        "tracefs is not mounted at {}/sys/kernel/tracing and mounting it failed: ",
        root.display()
    );
    assert!(e.starts_with(&want), "{e}");
    assert!(e.contains("ENOENT") || e.contains("EPERM"), "{e}");
    assert!(e.contains("run as root or `mount -t tracefs nodev"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}
