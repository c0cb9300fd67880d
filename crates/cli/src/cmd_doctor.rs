//! `tscmerge doctor`: can this machine record what tscmerge needs, and do the
//! offsets `kvm_write_tsc_offset` reports match the ones KVM applies?
//!
//! Static checks (tracefs, kvm events, x86-tsc, TSC flags, VMX/SVM and TSC
//! scaling, debugfs, /dev/kvm), then a micro-VM run (crates/microvm: 1 VM × 1
//! vCPU, 16 `rdmsr IA32_TSC`, one guest `wrmsr IA32_TSC`) recorded in a private
//! tracefs instance: the offsets the tracepoint reported, debugfs `tsc-offset`,
//! and each guest read against its host window (the `kvm_emulate_insn` of its
//! `rdmsr` to the `kvm_msr` that reports the value read, which must be the
//! guest's; microvm/src/host.rs), which says which offset the guest really ran
//! with. `rdmsr` rather than `rdtsc`: its window closes ~200 cycles after the
//! read instead of at the next instruction. Exit status: 0 no FAIL, 1 some
//! check failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use microvm::host::{self, HostEvent, TraceInstance};
use microvm::{Config, ReadInsn, WrmsrPlan, MSR_IA32_TSC};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  tscmerge doctor\n  tscmerge doctor --root /mnt/other-root   (static checks only)")]
pub struct Args {
    /// Check this root instead of `/` (static checks only: no mount, no micro-VM).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Skip the micro-VM run.
    #[arg(long)]
    pub no_vm: bool,
    /// Name of the tracefs instance used for the micro-VM run (tests).
    #[arg(long, hide = true, default_value = "tscmerge_doctor")]
    pub instance: String,
    /// `tscmerge record`'s lock file, whose `.d` registry lists what each recorder made (tests).
    #[arg(long, hide = true, default_value = record::DEFAULT_LOCK_PATH)]
    pub lock: PathBuf,
    /// `tscmerge record --instance-prefix` (tests).
    #[arg(long, hide = true, default_value = "")]
    pub instance_prefix: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Info,
    Warn,
    Fail,
}

struct Report {
    fails: usize,
    warns: usize,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, msg: impl AsRef<str>) {
        let tag = match level {
            Level::Pass => "PASS",
            Level::Info => "INFO",
            Level::Warn => {
                self.warns += 1;
                "WARN"
            }
            Level::Fail => {
                self.fails += 1;
                "FAIL"
            }
        };
        println!("{tag}  {what:<22} {}", msg.as_ref());
    }
}

fn cpu_flags(cpuinfo: &str, key: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

/// The tracefs directory under `root`, if one looks mounted (real root: mounted
/// now, or mountable — the check mounts it as `tscmerge record` would).
fn find_tracefs(root: &Path, real: bool) -> Result<PathBuf, String> {
    if real {
        return record::Tracefs::open_or_mount(root).map(|t| t.dir().to_path_buf()).map_err(|e| e.to_string());
    }
    for d in ["sys/kernel/tracing", "sys/kernel/debug/tracing"] {
        let p = root.join(d);
        if p.join("trace_clock").is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no tracefs at {}: mount it with `mount -t tracefs nodev {}` (needs root; CONFIG_FTRACE)",
        root.join("sys/kernel/tracing").display(),
        root.join("sys/kernel/tracing").display()
    ))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut r = Report { fails: 0, warns: 0 };
    let root = a.root.clone();
    let real = root == Path::new("/");

    // tracefs, events, clock.
    let tracefs = match find_tracefs(&root, real) {
        Ok(t) => {
            r.line(Level::Pass, "tracefs", format!("mounted at {}", t.display()));
            Some(t)
        }
        Err(e) => {
            r.line(Level::Fail, "tracefs", e);
            None
        }
    };
    if let Some(t) = &tracefs {
        let has = |ev: &str| crate::cmd_record::event_exists(t, ev);
        if has("kvm:kvm_write_tsc_offset") {
            r.line(Level::Pass, "kvm_write_tsc_offset", "event present");
        } else {
            r.line(Level::Fail, "kvm_write_tsc_offset", "event absent: load KVM (`modprobe kvm_intel` or `kvm_amd`); without it no offsets can be recorded");
        }
        for ev in ["kvm:kvm_entry", "kvm:kvm_exit"] {
            if has(ev) {
                r.line(Level::Pass, &ev[4..], "event present (whether it fires: see the micro-VM run)");
            } else {
                r.line(Level::Warn, &ev[4..], "event absent: `tscmerge check` cannot use vCPU run windows");
            }
        }
        let clocks = std::fs::read_to_string(t.join("trace_clock")).unwrap_or_default();
        if clocks.split_whitespace().any(|c| c.trim_matches(['[', ']']) == "x86-tsc") {
            r.line(Level::Pass, "x86-tsc clock", "offered by trace_clock");
        } else {
            r.line(Level::Fail, "x86-tsc clock", format!("not offered (trace_clock: {}): guest and host timestamps cannot be TSC counts; x86 only", clocks.trim()));
        }
    }

    // What a killed `tscmerge record` left (its journal names each item).
    if let Some(t) = &tracefs {
        let p = &a.instance_prefix;
        let left = record::leftovers::find(&record::leftovers::registry_for(&a.lock), &t.join("instances"), &[format!("{p}tscmerge"), format!("{p}tsc_offset")]);
        if left.is_empty() {
            r.line(Level::Pass, "record leftovers", "none (no instance or raw directory of a killed tscmerge record)");
        } else {
            for it in &left.items {
                r.line(Level::Fail, "record leftover", it.describe());
            }
            r.line(Level::Info, "record leftovers", "`tscmerge record --recover` removes them all (tracing and events off first)");
        }
    }

    // CPU flags.
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let flags = cpu_flags(&cpuinfo, "flags");
    let has = |f: &str| flags.iter().any(|x| x == f);
    if cpuinfo.is_empty() {
        r.line(Level::Fail, "cpuinfo", format!("{} unreadable", root.join("proc/cpuinfo").display()));
    } else {
        for f in ["constant_tsc", "nonstop_tsc"] {
            if has(f) {
                r.line(Level::Pass, f, "TSC rate is invariant");
            } else {
                r.line(Level::Warn, f, "absent: the TSC may change rate or stop in idle; host/guest TSC conversion can drift");
            }
        }
        let vmx_flags = cpu_flags(&cpuinfo, "vmx flags");
        if has("vmx") {
            let sc = vmx_flags.iter().any(|f| f == "tsc_scaling");
            r.line(Level::Pass, "virtualization", format!("Intel VMX; TSC scaling {}", if sc { "supported (ratio from debugfs tsc-scaling-ratio)" } else { "not supported" }));
        } else if has("svm") {
            let sc = has("tsc_scale");
            r.line(Level::Pass, "virtualization", format!("AMD SVM; TSC scaling {}", if sc { "supported (ratio from debugfs tsc-scaling-ratio)" } else { "not supported" }));
        } else if root.join("dev/kvm").exists() {
            r.line(Level::Warn, "virtualization", "no vmx/svm flag but /dev/kvm exists: KVM in PVM (paravirtual) mode; no TSC scaling; see the micro-VM run for whether offsets apply");
        } else {
            r.line(Level::Warn, "virtualization", "no vmx/svm flag: no hardware virtualization (enable it in firmware, or this is a guest: use `record --guest`)");
        }
    }

    // debugfs, /dev/kvm.
    let dbg = root.join("sys/kernel/debug");
    if dbg.join("kvm").is_dir() {
        r.line(Level::Pass, "debugfs kvm", format!("{} present (applied tsc-offset per vCPU)", dbg.join("kvm").display()));
    } else if real && record::tracefs::open_or_mount_debugfs(&root).is_ok() && dbg.join("kvm").is_dir() {
        r.line(Level::Pass, "debugfs kvm", format!("{} present after mounting debugfs", dbg.join("kvm").display()));
    } else {
        r.line(Level::Warn, "debugfs kvm", format!("{} absent: mount debugfs (`mount -t debugfs nodev {}`) and load KVM; without it tscmerge cannot tell applied offsets from reported ones", dbg.join("kvm").display(), dbg.display()));
    }
    let devkvm = root.join("dev/kvm");
    let kvm_ok = match std::fs::OpenOptions::new().read(true).write(true).open(&devkvm) {
        Ok(_) => {
            r.line(Level::Pass, "/dev/kvm", "opens read-write");
            true
        }
        Err(e) => {
            r.line(Level::Fail, "/dev/kvm", format!("{}: {e}: load KVM (`modprobe kvm_intel`/`kvm_amd`), run as root or join group kvm", devkvm.display()));
            false
        }
    };

    if !real || a.no_vm {
        r.line(Level::Info, "micro-VM run", if real { "skipped (--no-vm)" } else { "skipped (--root given)" });
    } else if let (Some(t), true) = (&tracefs, kvm_ok) {
        microvm_run(&mut r, t, &a.instance);
    } else {
        r.line(Level::Info, "micro-VM run", "skipped: needs tracefs and /dev/kvm");
    }
    println!("{} failed, {} warnings", r.fails, r.warns);
    Ok(if r.fails > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `vcpu=0 prev=0 next=18446743...` → (prev, next) as signed.
fn offsets_of(fields: &str) -> Option<(i64, i64)> {
    let mut prev = None;
    let mut next = None;
    for w in fields.split_whitespace() {
        if let Some(v) = w.strip_prefix("prev=") {
            prev = v.parse::<u64>().ok();
        } else if let Some(v) = w.strip_prefix("next=") {
            next = v.parse::<u64>().ok();
        }
    }
    Some((prev? as i64, next? as i64))
}

fn microvm_run(r: &mut Report, tracefs: &Path, instance: &str) {
    let t0 = std::time::Instant::now();
    let mut events: Vec<&str> = host::HOST_EVENTS.to_vec();
    events.extend(["kvm/kvm_entry", "kvm/kvm_exit"]);
    events.retain(|e| tracefs.join("events").join(e).join("enable").is_file());
    if tracefs != Path::new(host::TRACEFS) {
        r.line(Level::Info, "micro-VM run", format!("skipped: tracefs is at {}, the micro-VM recorder expects {}", tracefs.display(), host::TRACEFS));
        return;
    }
    let inst = match TraceInstance::create(instance, &events, 2048) {
        Ok(i) => i,
        Err(e) => {
            r.line(Level::Fail, "micro-VM run", format!("cannot create tracefs instance {instance}: {e}"));
            return;
        }
    };
    let cfg = Config {
        reads: 16,
        read: ReadInsn::Rdmsr,
        wrmsr: Some(WrmsrPlan { after_read: 7, msr: MSR_IA32_TSC, value: 1 << 40 }),
        ..Config::default()
    };
    let insn = match cfg.read {
        ReadInsn::Rdtsc => "rdtsc",
        ReadInsn::Rdmsr => "rdmsr IA32_TSC",
    };
    let report = match microvm::run(&cfg) {
        Ok(rep) => rep,
        Err(e) => {
            drop(inst);
            r.line(Level::Fail, "micro-VM run", format!("{e}"));
            return;
        }
    };
    let _ = inst.stop();
    let text = inst.read_trace().unwrap_or_default();
    drop(inst);
    let (host_events, _) = host::parse_trace_text(&text);
    let Some(vm) = report.vms.first() else { return };
    let Some(vc) = vm.vcpus.first() else { return };
    let mine = |e: &&HostEvent| e.tid == vc.tid || e.tid == vm.creator_tid;
    let offs: Vec<(u64, i64, i64)> = host_events
        .iter()
        .filter(mine)
        .filter(|e| e.name == "kvm_write_tsc_offset")
        .filter_map(|e| offsets_of(&e.fields).map(|(p, n)| (e.ts, p, n)))
        .collect();
    let fired = |n: &str| host_events.iter().filter(mine).filter(|e| e.name == n).count();
    r.line(Level::Info, "micro-VM run", format!("1 VM x 1 vCPU, {} reads with {insn}, wrmsr IA32_TSC=2^40 after read 7, {:.2}s", cfg.reads, t0.elapsed().as_secs_f64()));
    let desc: Vec<String> = offs.iter().map(|(ts, p, n)| format!("@{ts} prev={p} next={n}")).collect();
    r.line(
        if offs.is_empty() { Level::Fail } else { Level::Pass },
        "offset events",
        if offs.is_empty() { "kvm_write_tsc_offset did not fire for the micro-VM".to_string() } else { format!("{}: {}", offs.len(), desc.join("; ")) },
    );
    for ev in ["kvm_entry", "kvm_exit"] {
        if tracefs.join("events/kvm").join(ev).is_dir() {
            let n = fired(ev);
            if n == 0 {
                r.line(Level::Warn, ev, "present but did not fire during the run (PVM/emulated guest): tscmerge check uses kvm_emulate_insn/kvm_pio windows here");
            } else {
                r.line(Level::Pass, ev, format!("fired {n} times"));
            }
        }
    }
    let dbg = vc.debugfs;
    let show = |v: Option<i64>| v.map_or("unreadable".to_string(), |x| x.to_string());
    r.line(
        if dbg.offset_at_create.is_some() { Level::Pass } else { Level::Warn },
        "debugfs tsc-offset",
        format!("{} at creation, {} after the wrmsr (vcpu0 of {})", show(dbg.offset_at_create), show(dbg.offset_at_end), vm.debugfs_dir().display()),
    );
    let v = host::verify(vm, &host_events);
    let gaps: Vec<i128> = v.windows.iter().map(|w| w.after_start()).collect();
    let mn = cfg.read.mnemonic();
    // For rdmsr, host::verify also requires each window to end at the kvm_msr
    // of that read carrying the guest's value.
    let ends = match cfg.read {
        ReadInsn::Rdtsc => String::new(),
        ReadInsn::Rdmsr => format!(
            "; {}/{} windows end at a kvm_msr msr_read 10 carrying the guest's value",
            v.windows
                .iter()
                .filter(|w| {
                    let want = format!("msr_read 10 = {:#x}", w.guest_tsc);
                    host_events.iter().any(|e| e.tid == vc.tid && e.ts == w.end && e.name == "kvm_msr" && e.fields.trim_end() == want)
                })
                .count(),
            v.windows.len()
        ),
    };
    match host::min_median_max(gaps) {
        Some((lo, med, hi)) => r.line(
            if v.failures.is_empty() { Level::Pass } else { Level::Warn },
            "guest read vs host",
            format!(
                "guest TSC (converted with debugfs offsets) − its {mn}'s kvm_emulate_insn: min {lo} median {med} max {hi} cycles; {}/{} reads inside their window{ends}",
                v.windows.iter().filter(|w| w.contains()).count(),
                v.windows.len()
            ),
        ),
        None => r.line(
            Level::Warn,
            "guest read vs host",
            format!("no read windows found ({})", v.failures.first().map(String::as_str).unwrap_or("no kvm_emulate_insn events: a VMX/SVM host does not emulate the read")),
        ),
    }
    if let Some(f) = v.failures.first() {
        r.line(Level::Warn, "guest read vs host", format!("{} problem(s), first: {f}", v.failures.len()));
    }

    // One sentence about this host.
    let created = offs.iter().find(|(_, p, _)| *p == 0).map(|(_, _, n)| *n);
    let first_read = vc.reads.first().map(|x| x.guest_tsc);
    let first_win = v.windows.first().map(|w| w.start);
    let sentence = match (created, dbg.offset_at_create, first_read, first_win) {
        (Some(tp), Some(df), Some(g), Some(start)) if tp != df && df == 0 && g.abs_diff(start) < 1_000_000 => format!(
            "PVM-style host: kvm_write_tsc_offset reported offsets (next={tp}) that were not applied (debugfs tsc-offset=0, guest TSC = host TSC + {} cycles): tscmerge will use debugfs offsets here (--offsets auto)",
            g.wrapping_sub(start) as i64
        ),
        (Some(tp), Some(df), _, _) if tp == df => "VMX/SVM-style host: the offsets kvm_write_tsc_offset reports are the ones KVM applies (debugfs agrees): tscmerge uses the tracepoint (--offsets auto)".to_string(),
        (Some(tp), Some(df), _, _) => format!("offsets disagree: tracepoint next={tp}, debugfs tsc-offset={df}; record with `tscmerge record --host` so both are kept, and compare with `tscmerge offsets`"),
        (None, _, _, _) => "no creation-time kvm_write_tsc_offset: offsets cannot be recorded on this host".to_string(),
        (_, None, _, _) => "debugfs tsc-offset unreadable: only the tracepoint's offsets are available; mount debugfs to compare".to_string(),
    };
    println!("      {sentence}");
}
