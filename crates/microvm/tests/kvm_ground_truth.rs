//! Real run on /dev/kvm: 2 VMs × 2 vCPUs, one guest `wrmsr IA32_TSC` per vCPU, recorded on the
//! host in a private tracefs instance. Checks each read against its host window (the ground
//! truth the project relies on) and prints what the measurement found.

use std::path::Path;

use microvm::host::{self, TraceInstance, HOST_EVENTS};
use microvm::{run, Config, Insn, WrmsrPlan, DEFAULT_MARKER_LEAF, MSR_IA32_TSC};

const READS: usize = 24;
const AFTER: usize = 11;
/// Far from the host TSC (~1e12 here), so a guest read that honoured it is unmistakable.
const WRMSR_VALUE: u64 = 1 << 40;

fn config() -> Config {
    Config {
        vms: 2,
        vcpus: 2,
        reads: READS,
        wrmsr: Some(WrmsrPlan {
            after_read: AFTER,
            msr: MSR_IA32_TSC,
            value: WRMSR_VALUE,
        }),
        cpuid_marker_leaf: DEFAULT_MARKER_LEAF,
        ..Config::default()
    }
}

#[test]
fn two_vms_two_vcpus_wrmsr_against_host_trace() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent");
        return;
    }
    // KVM's debugfs tsc-offset files are the ground truth compared below;
    // .ci/run mounts debugfs, a developer's machine may not have it.
    if !Path::new("/sys/kernel/debug/kvm").exists() {
        eprintln!("SKIPPED: debugfs is not mounted (mount -t debugfs nodev /sys/kernel/debug): no KVM tsc-offset ground truth");
        return;
    }
    let tracefs = Path::new(host::TRACEFS).join("instances").exists();
    let inst = if tracefs {
        match TraceInstance::create("microvm_test", HOST_EVENTS, 8192) {
            Ok(i) => Some(i),
            Err(e) => {
                eprintln!("SKIPPED (host side only): cannot create tracefs instance: {e}");
                None
            }
        }
    } else {
        eprintln!(
            "SKIPPED (host side only): tracefs is not mounted at {}",
            host::TRACEFS
        );
        None
    };

    let report = match run(&config()) {
        Ok(r) => r,
        Err(microvm::Error::NoKvm(e)) => {
            eprintln!("SKIPPED: cannot open /dev/kvm: {e}");
            return;
        }
        Err(e) => panic!("run failed: {e}"),
    };

    // Guest side: shape, monotonic per vCPU except across the wrmsr.
    assert_eq!(report.vms.len(), 2);
    let mut jumps = Vec::new();
    for vm in &report.vms {
        assert_eq!(vm.vcpus.len(), 2);
        assert!(vm.vm_fd >= 0 && vm.pid == std::process::id());
        for vc in &vm.vcpus {
            assert_eq!(vc.reads.len(), READS);
            assert!(vc.tid > 0);
            // debugfs is read while the VM lives; it must be there on every KVM host.
            assert!(
                vc.debugfs.offset_at_create.is_some(),
                "no debugfs tsc-offset under {}",
                vm.debugfs_dir().display()
            );
            assert!(vc.debugfs.offset_at_end.is_some());
            for (i, r) in vc.reads.iter().enumerate() {
                assert_eq!(r.seq as usize, i);
                assert_eq!(r.before, if i + 1 == READS { Insn::Hlt } else { Insn::Out });
            }
            for w in vc.reads.windows(2) {
                if w[0].seq as usize == AFTER {
                    jumps.push(w[1].guest_tsc as i128 - w[0].guest_tsc as i128);
                } else {
                    assert!(
                        w[1].guest_tsc > w[0].guest_tsc,
                        "vm{} vcpu{}: {:?}",
                        vm.index,
                        vc.vcpu,
                        w
                    );
                }
            }
            eprintln!(
                "vm{} vcpu{} tid {}: first read {} last {}; debugfs tsc-offset at create {:?} at end {:?}, scaling {:?}/{:?}",
                vm.index,
                vc.vcpu,
                vc.tid,
                vc.reads[0].guest_tsc,
                vc.reads[READS - 1].guest_tsc,
                vc.debugfs.offset_at_create,
                vc.debugfs.offset_at_end,
                vc.debugfs.scaling_ratio,
                vc.debugfs.scaling_frac_bits
            );
        }
    }
    let after_value: Vec<i128> = report
        .vms
        .iter()
        .flat_map(|vm| {
            vm.vcpus
                .iter()
                .map(|vc| vc.reads[AFTER + 1].guest_tsc as i128 - WRMSR_VALUE as i128)
        })
        .collect();
    eprintln!(
        "wrmsr IA32_TSC={WRMSR_VALUE:#x}: read after minus read before = {jumps:?} cycles; \
         read after minus the written value = {after_value:?}"
    );

    // Guest trace: parses with our own reader, one line per read, per-CPU program order.
    for vm in &report.vms {
        let mut out = Vec::new();
        microvm::write_guest_trace(vm, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!(
            "# guest trace written by tscmerge microvm monitor (vm{}",
            vm.index
        )));
        let (events, bad) = host::parse_trace_text(&text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(events.len(), 2 * READS);
        for vc in &vm.vcpus {
            let mine: Vec<u64> = events
                .iter()
                .filter(|e| e.cpu == vc.vcpu)
                .map(|e| e.ts)
                .collect();
            let want: Vec<u64> = vc.reads.iter().map(|r| r.guest_tsc).collect();
            assert_eq!(mine, want);
            assert!(events
                .iter()
                .filter(|e| e.cpu == vc.vcpu)
                .all(|e| e.tid == vc.tid));
        }
    }

    // Host side: every read inside [its rdtsc's kvm_emulate_insn, the thread's next event].
    let Some(inst) = inst else { return };
    inst.stop().unwrap();
    let text = inst.read_trace().unwrap();
    drop(inst);
    let (events, bad) = host::parse_trace_text(&text);
    assert!(bad.is_empty(), "unparsed host lines {bad:?}");
    let tids: Vec<i32> = report
        .vms
        .iter()
        .flat_map(|vm| vm.vcpus.iter().map(|v| v.tid))
        .collect();
    for e in events
        .iter()
        .filter(|e| e.name == "kvm_write_tsc_offset" || e.name == "kvm_msr")
    {
        if tids.contains(&e.tid) || e.tid == microvm::current_tid().unwrap() {
            eprintln!("host: tid {} ts {} {}: {}", e.tid, e.ts, e.name, e.fields);
        }
    }
    let mut windows = Vec::new();
    let mut failures = Vec::new();
    for vm in &report.vms {
        let v = host::verify(vm, &events);
        windows.extend(v.windows);
        failures.extend(v.failures);
    }
    let stat = |name: &str, xs: Vec<i128>| {
        let (lo, med, hi) = host::min_median_max(xs).expect("no windows");
        eprintln!("{name}: min {lo} median {med} max {hi} cycles");
    };
    stat(
        "guest_tsc - window start",
        windows.iter().map(|w| w.after_start()).collect(),
    );
    stat(
        "window end - guest_tsc",
        windows.iter().map(|w| w.before_end()).collect(),
    );
    let mut ends: Vec<&str> = windows.iter().map(|w| w.end_event.as_str()).collect();
    ends.sort_unstable();
    ends.dedup();
    eprintln!("window end events: {ends:?}; {} windows", windows.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(windows.len(), 4 * READS);
}

/// The same run reading with `rdmsr IA32_TSC`: each read's window must end at the `kvm_msr`
/// of that read, whose value is exactly what the guest got (checked by `host::verify`).
#[test]
fn rdmsr_reads_end_at_their_kvm_msr() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent");
        return;
    }
    // KVM's debugfs tsc-offset files are the ground truth compared below;
    // .ci/run mounts debugfs, a developer's machine may not have it.
    if !Path::new("/sys/kernel/debug/kvm").exists() {
        eprintln!("SKIPPED: debugfs is not mounted (mount -t debugfs nodev /sys/kernel/debug): no KVM tsc-offset ground truth");
        return;
    }
    if !Path::new(host::TRACEFS).join("instances").exists() {
        eprintln!("SKIPPED: tracefs is not mounted at {}", host::TRACEFS);
        return;
    }
    let inst = match TraceInstance::create("microvm_test_rdmsr", HOST_EVENTS, 8192) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("SKIPPED: cannot create tracefs instance: {e}");
            return;
        }
    };
    let cfg = Config {
        read: microvm::ReadInsn::Rdmsr,
        ..config()
    };
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(microvm::Error::NoKvm(e)) => {
            eprintln!("SKIPPED: cannot open /dev/kvm: {e}");
            return;
        }
        Err(e) => panic!("run failed: {e}"),
    };
    inst.stop().unwrap();
    let text = inst.read_trace().unwrap();
    drop(inst);
    let (events, bad) = host::parse_trace_text(&text);
    assert!(bad.is_empty(), "unparsed host lines {bad:?}");
    let mut windows = Vec::new();
    for vm in &report.vms {
        let v = host::verify(vm, &events);
        assert!(v.failures.is_empty(), "{}", v.failures.join("\n"));
        windows.extend(v.windows);
    }
    assert_eq!(windows.len(), 4 * READS);
    assert!(windows.iter().all(|w| w.end_event == "kvm_msr"));
    let (lo, med, hi) = host::min_median_max(windows.iter().map(|w| w.before_end())).unwrap();
    eprintln!("rdmsr: window end (kvm_msr) - guest_tsc: min {lo} median {med} max {hi} cycles");
}
