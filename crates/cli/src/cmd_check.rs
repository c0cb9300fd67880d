//! `tscmerge check HOST... --guest NAME=FILE`: prove a merge against the
//! host's vCPU run windows.

use std::process::ExitCode;

use tscmerge::check::{CheckReport, CheckSink, WindowKind};
use tscmerge::merge::merge;
use tscmerge::plan::Plan;

#[derive(clap::Args)]
#[command(
    after_help = "Inputs and offsets as for merge (see tscmerge merge --help for the precedence of offset sources).\n\
Each vCPU's host thread: a trace-cmd GUEST option's map (threads the host recording holds events of; a map\n\
naming none of them is refused, some of them is a note), else the one thread that wrote the vCPU's\n\
kvm_write_tsc_offset (and no other vCPU's), else the thread whose kvm_entry names the vCPU, else the VM's\n\
thread whose windows hold most of the CPU's events (reported as inferred).\n\
Exit status: 0 when violations <= --tolerance and every rdmsr read's value equals the host's kvm_msr, 1 otherwise, 2 on bad input."
)]
pub struct CheckArgs {
    #[command(flatten)]
    pub inputs: crate::inputs::InputArgs,
    /// Violations allowed before the check fails.
    #[arg(long, default_value_t = 0)]
    pub tolerance: u64,
    /// Print the report as one JSON object instead of text (per guest CPU,
    /// `judged_by` counts its events by the kind of window that judged them).
    #[arg(long)]
    pub json: bool,
}

fn dist(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("min {} / median {} / p99 {} / max {}", v[0], p(0.5), p(0.99), v[v.len() - 1])
}

fn cycles(c: u64, khz: Option<u64>) -> String {
    match khz {
        Some(k) if k > 0 => format!("{c} cycles ({:.3} us)", c as f64 * 1000.0 / k as f64),
        _ => format!("{c} cycles"),
    }
}

/// Prints the report; returns whether the strong check was possible.
pub fn print_report(plan: &Plan, r: &mut CheckReport, khz: Option<u64>, out: &mut dyn std::io::Write) -> std::io::Result<bool> {
    for (guest, tries) in &plan.matches {
        let ev: Vec<String> = tries.iter().map(|t| format!("{} {:.1}%", t.vm, 100.0 * t.fraction())).collect();
        writeln!(out, "match: guest {guest} -> {} (inside run windows: {})", tries[0].vm, ev.join(", "))?;
    }
    let strong = r.host_windows > 0;
    if strong {
        let kinds: Vec<&str> = r
            .window_kinds
            .iter()
            .map(|k| k.describe())
            .collect();
        writeln!(
            out,
            "check: {} guest events, {} inside run windows ({:.3}%), {} outside; {} host windows ({})",
            r.guest_events,
            r.inside,
            100.0 * r.fraction_inside(),
            r.violations(),
            r.host_windows,
            kinds.join(", ")
        )?;
    } else {
        writeln!(
            out,
            "check: the strong check was not possible: the host recording has no run windows (neither kvm_entry/kvm_exit nor kvm_emulate_insn for the vCPU threads); record kvm:kvm_entry and kvm:kvm_exit on the host"
        )?;
        writeln!(
            out,
            "check: weaker checks passed: {} guest events all after their vCPU's first offset write, none before its VM was created",
            r.guest_events
        )?;
    }
    if r.outside_recording() > 0 {
        writeln!(
            out,
            "check: {} guest events fall outside the host's recording ({} before its first event, {} after its last): not judged",
            r.outside_recording(),
            r.before_host,
            r.after_host
        )?;
        if strong && r.judged() == 0 {
            writeln!(out, "check: no guest event falls within the host's recording: nothing could be checked (the recordings do not overlap on this timeline: another session's files, or wrong offsets)")?;
        }
    }
    let decided = r.by_run_windows + r.by_guest_order;
    if (r.ambiguous > 0 || decided > 0) && !strong {
        writeln!(
            out,
            "check: {} guest events fitted more than one offset period: {} placed by the guest CPU's later events; {} placed by the rule (ambiguous): without run windows nothing judges them",
            decided + r.ambiguous,
            r.by_guest_order,
            r.ambiguous
        )?;
    } else if r.ambiguous > 0 || decided > 0 {
        writeln!(
            out,
            "check: {} guest events fitted more than one offset period: {} placed by the host's run windows, {} by the guest CPU's later events; {} placed by the rule (ambiguous), of which {} lie outside every window of their thread: the rule misplaced those, counted apart from the violations above (record kvm_entry/kvm_exit or sched_switch of the vCPU threads so the merge can decide them)",
            decided + r.ambiguous,
            r.by_run_windows,
            r.by_guest_order,
            r.ambiguous,
            r.ambiguous_outside
        )?;
    }
    writeln!(out, "check: {} guest events out of time order on their CPU after conversion", r.non_monotonic)?;
    if r.rdmsr_reads > 0 {
        writeln!(out, "check: rdmsr reads: {} of {} values equal the host's kvm_msr", r.rdmsr_values_equal, r.rdmsr_reads)?;
    }
    if let Some(w) = &r.worst_value_mismatch {
        writeln!(
            out,
            "check: {} rdmsr reads disagree with the host's kvm_msr; worst: {} cpu {} at host {}: guest read {:#x}, host kvm_msr {:#x} (thread {}), {} apart",
            r.value_mismatches,
            w.machine,
            w.cpu,
            w.ts,
            w.guest_value,
            w.host_value,
            w.thread,
            cycles(w.difference(), khz)
        )?;
    }
    for c in &mut r.cpus {
        let thread = match (c.thread, c.inferred) {
            (Some(t), false) => match c.thread_from {
                Some(from) => format!("thread {t} (from the {})", from.name()),
                None => format!("thread {t}"),
            },
            (Some(t), true) => format!("thread {t} (inferred)"),
            (None, _) => "thread unknown".into(),
        };
        let outside = if c.outside_recording > 0 { format!(" ({} outside the host's recording)", c.outside_recording) } else { String::new() };
        // Which evidence judged the thread (runs/: exact windows, else its
        // on-CPU intervals).
        let judged: Vec<String> = WindowKind::BY_STRENGTH
            .iter()
            .filter_map(|k| Some(format!("{} {}", c.judged_by.get(k.name())?, k.describe())))
            .collect();
        let judged = if judged.is_empty() { String::new() } else { format!("; judged by {}", judged.join(", ")) };
        writeln!(out, "  {} cpu {}: {thread}, {} events{outside}, {} inside{judged}", c.machine, c.cpu, c.events, c.inside)?;
        if !c.after_start.is_empty() {
            writeln!(out, "    event - window start: {}", dist(&mut c.after_start))?;
            writeln!(out, "    window end - event:   {}", dist(&mut c.before_end))?;
        }
    }
    if strong && r.violations() > 0 {
        writeln!(out, "worst violations:")?;
        for v in &r.worst {
            writeln!(
                out,
                "  {} cpu {} at host {} (guest {}): {} — {} outside; the vCPU thread's last host event: {}",
                v.machine,
                v.cpu,
                v.ts,
                v.guest_ts.map(|g| g.to_string()).unwrap_or_default(),
                v.event,
                v.distance.map(|d| cycles(d, khz)).unwrap_or_else(|| "no window yet".into()),
                v.host_before.as_deref().unwrap_or("none")
            )?;
        }
        writeln!(out, "largest distance outside a window: {}", cycles(r.max_distance, khz))?;
    }
    for line in plan.diagnose(Some(r)) {
        writeln!(out, "diagnosis: {line}")?;
    }
    Ok(strong)
}

pub fn run(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let spec = crate::inputs::spec(&a.inputs)?;
    let plan = Plan::new(spec)?;
    for n in &plan.notes {
        println!("note: {n}");
    }
    let mut sink = CheckSink::new(plan.check_config(), None);
    merge(plan.cursors()?, &mut sink)?;
    let mut r = sink.report();
    let mut stdout = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut stdout, &r)?;
        std::io::Write::write_all(&mut stdout, b"\n")?;
    } else {
        print_report(&plan, &mut r, a.inputs.tsc_khz, &mut stdout)?;
    }
    let nothing_judged = r.host_windows > 0 && r.guest_events > 0 && r.judged() == 0;
    let failed = (r.violations() > a.tolerance && r.host_windows > 0) || r.value_mismatches > 0 || nothing_judged;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
