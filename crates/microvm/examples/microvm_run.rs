//! Runs micro-VMs and writes each VM's guest trace, plus a JSON summary, to a directory.
//!
//! ```text
//! microvm_run OUT_DIR [--vms N] [--vcpus M] [--reads R] [--wrmsr AFTER:MSR:VALUE]
//!                     [--leaf LEAF] [--read rdtsc|rdmsr] [--host-trace [--instance NAME]]
//! cargo run -p microvm --example microvm_run -- /tmp/mv --vms 2 --vcpus 2 --reads 24 \
//!     --wrmsr 11:0x10:0x10000000000 --host-trace
//! ```
//! Writes `OUT_DIR/vm<i>.trace.txt` (guest side, tracefs text, timestamps = guest TSC) and
//! `OUT_DIR/summary.json`. With `--host-trace` it also records the host side in tracefs
//! instance `microvm_run` (or `--instance NAME`; x86-tsc; the events of `microvm::host::HOST_EVENTS`), writes its
//! `cat trace` to `OUT_DIR/host.trace.txt` and adds the ground-truth check to the summary.
//! Numbers take decimal or 0x-hex. Exit status: 0 ok, 1 run failed or a read fell outside
//! its host window, 2 bad arguments.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use microvm::host::{self, TraceInstance, HOST_EVENTS};
use microvm::{Config, ReadInsn, RunReport, WrmsrPlan};

fn num(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad number {s:?}: {e}"))
}

struct Args {
    out: PathBuf,
    cfg: Config,
    host_trace: bool,
    instance: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut out = None;
    let mut cfg = Config::default();
    let mut host_trace = false;
    let mut instance = "microvm_run".to_string();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--vms" => cfg.vms = num(&val()?)? as usize,
            "--vcpus" => cfg.vcpus = num(&val()?)? as usize,
            "--reads" => cfg.reads = num(&val()?)? as usize,
            "--leaf" => cfg.cpuid_marker_leaf = num(&val()?)? as u32,
            "--wrmsr" => {
                let v = val()?;
                let p: Vec<&str> = v.split(':').collect();
                let [after, msr, value] = p[..] else {
                    return Err(format!("--wrmsr wants AFTER:MSR:VALUE, got {v:?}"));
                };
                cfg.wrmsr = Some(WrmsrPlan {
                    after_read: num(after)? as usize,
                    msr: num(msr)? as u32,
                    value: num(value)?,
                });
            }
            "--host-trace" => host_trace = true,
            "--instance" => instance = val()?,
            "--read" => {
                cfg.read = match val()?.as_str() {
                    "rdtsc" => ReadInsn::Rdtsc,
                    "rdmsr" => ReadInsn::Rdmsr,
                    v => return Err(format!("--read wants rdtsc or rdmsr, got {v:?}")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            s if !s.starts_with('-') && out.is_none() => out = Some(PathBuf::from(s)),
            s => return Err(format!("unknown argument {s:?}")),
        }
    }
    let out = out.ok_or("missing OUT_DIR")?;
    Ok(Args {
        out,
        cfg,
        host_trace,
        instance,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("microvm_run: {e}");
            }
            eprintln!(
                "usage: microvm_run OUT_DIR [--vms N] [--vcpus M] [--reads R] \
                 [--wrmsr AFTER:MSR:VALUE] [--leaf LEAF] [--read rdtsc|rdmsr] \
                 [--host-trace [--instance NAME]]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("microvm_run: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)?;
    let inst = if args.host_trace {
        Some(TraceInstance::create(&args.instance, HOST_EVENTS, 16384)?)
    } else {
        None
    };
    let report = microvm::run(&args.cfg)?;
    for vm in &report.vms {
        let path = args.out.join(format!("vm{}.trace.txt", vm.index));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        microvm::write_guest_trace(vm, &mut f)?;
        std::io::Write::flush(&mut f)?;
        eprintln!("wrote {}", path.display());
    }
    let mut ok = true;
    let mut check = String::new();
    if let Some(inst) = inst {
        inst.stop()?;
        let text = inst.read_trace()?;
        drop(inst);
        std::fs::write(args.out.join("host.trace.txt"), &text)?;
        let (events, bad) = host::parse_trace_text(&text);
        let mut windows = Vec::new();
        let mut failures = Vec::new();
        for vm in &report.vms {
            let v = host::verify(vm, &events);
            windows.extend(v.windows);
            failures.extend(v.failures);
        }
        ok = failures.is_empty() && bad.is_empty();
        let stat = |xs: Vec<i128>| match host::min_median_max(xs) {
            Some((a, b, c)) => format!("{{\"min\": {a}, \"median\": {b}, \"max\": {c}}}"),
            None => "null".into(),
        };
        write!(
            check,
            ",\n  \"host_check\": {{\"windows\": {}, \"failures\": {}, \"unparsed_lines\": {}, \
             \"guest_minus_start\": {}, \"end_minus_guest\": {}}}",
            windows.len(),
            failures.len(),
            bad.len(),
            stat(windows.iter().map(|w| w.after_start()).collect()),
            stat(windows.iter().map(|w| w.before_end()).collect()),
        )?;
        for f in &failures {
            eprintln!("host check: {f}");
        }
    }
    let json = summary(&args.cfg, &report, &check);
    std::fs::write(args.out.join("summary.json"), &json)?;
    print!("{json}");
    Ok(ok)
}

/// Hand-written JSON: every value is a number or a fixed identifier, nothing needs escaping.
fn summary(cfg: &Config, report: &RunReport, extra: &str) -> String {
    let opt = |v: Option<i64>| v.map_or("null".to_string(), |x| x.to_string());
    let mut s = String::new();
    let wr = match cfg.wrmsr {
        Some(w) => format!(
            "{{\"after_read\": {}, \"msr\": {}, \"value\": {}}}",
            w.after_read, w.msr, w.value
        ),
        None => "null".into(),
    };
    let _ = write!(
        s,
        "{{\n  \"vms\": {}, \"vcpus\": {}, \"reads\": {}, \"cpuid_marker_leaf\": {}, \"wrmsr\": {wr},\n  \"vm\": [",
        cfg.vms, cfg.vcpus, cfg.reads, cfg.cpuid_marker_leaf
    );
    for (i, vm) in report.vms.iter().enumerate() {
        let _ = write!(
            s,
            "{}\n    {{\"index\": {}, \"pid\": {}, \"creator_tid\": {}, \"vm_fd\": {}, \"trace\": \"vm{}.trace.txt\", \
             \"loop_rdtsc_rip\": {}, \"last_rdtsc_rip\": {}, \"vcpus\": [",
            if i > 0 { "," } else { "" },
            vm.index,
            vm.pid,
            vm.creator_tid,
            vm.vm_fd,
            vm.index,
            vm.loop_rdtsc_rip,
            vm.last_rdtsc_rip
        );
        for (j, v) in vm.vcpus.iter().enumerate() {
            let reads: Vec<String> = v.reads.iter().map(|r| r.guest_tsc.to_string()).collect();
            let _ = write!(
                s,
                "{}\n      {{\"vcpu\": {}, \"tid\": {}, \"tsc_offset_at_create\": {}, \"tsc_offset_at_end\": {}, \
                 \"guest_tsc\": [{}]}}",
                if j > 0 { "," } else { "" },
                v.vcpu,
                v.tid,
                opt(v.debugfs.offset_at_create),
                opt(v.debugfs.offset_at_end),
                reads.join(", ")
            );
        }
        s.push_str("]}");
    }
    s.push_str("\n  ]");
    s.push_str(extra);
    s.push_str("\n}\n");
    s
}
