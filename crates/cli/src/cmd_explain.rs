//! `tscmerge explain HOST... --guest ...`: where each vCPU's time went, from
//! the host's story in the merged stream.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::explain::{write_text, ExplainSink, StallSpec};
use tscmerge::merge::merge_threads;

#[derive(clap::Args)]
#[command(
    after_help = "Inputs and offsets as for merge. Every host cycle from the host recording's first event to its last is\n\
given, per vCPU thread, to one state: guest (kvm_entry..), exit by reason (kvm_exit.., in the kernel),\n\
userspace by reason (kvm_userspace_exit.. the thread's next kvm event), preempted by a host task (runnable\n\
but off CPU: sched_switch prev_state R/R+, or woken while asleep; record sched:sched_switch and\n\
sched:sched_waking), halted (asleep after an HLT exit), unknown (before its first telling event).\n\
Hosts that emulate guest code (kvm_emulate_insn, no kvm_entry) show each emulation as an exit (EMULATE).\n\
Exit to entry per vCPU and reason: count, total, p50, p99, max in host TSC cycles (quantiles exact up to\n\
4096 exits of a reason, then within 1/64 below), and the guest task at the exit (the guest's sched_switch).\n\
Stalls (--stall FROM..TO, --sched-latency CYCLES): each guest interval's host cycles per state of its vCPU.\n\
Host IRQs (irq:irq_handler_entry/exit, irq:softirq_entry/exit): per vCPU and per stall, count and exclusive\n\
cycles of each hard IRQ and softirq on the host CPU while the vCPU thread ran there (within the states).\n\
Examples:\n  tscmerge explain host.dat --guest vm=guest.dat\n  tscmerge explain host.dat --json -o explain.json\n  tscmerge explain host.dat --guest vm=guest.dat --stall 'req start..req end' --sched-latency 200000\n\
Exit status: 0 success, 2 bad input."
)]
pub struct Args {
    #[command(flatten)]
    pub inputs: crate::inputs::InputArgs,
    /// One JSON document instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Write the report here (complete or not at all) instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// A guest interval to account for: FROM..TO, each an event name or text of a guest marker
    /// (from each FROM to the next TO on the same guest CPU); repeatable.
    #[arg(long = "stall", value_name = "FROM..TO")]
    pub stalls: Vec<String>,
    /// Guest scheduling latencies (sched_waking to the sched_switch that runs the task) above
    /// this many host TSC cycles are stalls too.
    #[arg(long, value_name = "CYCLES")]
    pub sched_latency: Option<u64>,
    /// Threads for the merge (default: 2 where two CPUs are available).
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let threads = crate::inputs::threads(a.threads);
    let plan = crate::inputs::open_plan(&a.inputs, threads, a.output.as_deref())?;
    let mut cfg = plan.explain_config();
    cfg.stalls = a.stalls.iter().map(|s| StallSpec::parse(s)).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("--stall {e}"))?;
    cfg.sched_latency = a.sched_latency;
    let mut sink = ExplainSink::new(cfg, None);
    merge_threads(plan.cursors()?, &mut sink, threads)?;
    let report = sink.explainer.report();
    let clock = a.inputs.tsc_khz.map(tscmerge::sink::HostNs::Khz).or_else(|| plan.host_tsc2nsec()).or_else(|| plan.recorded_tsc_khz().map(tscmerge::sink::HostNs::Khz));
    let mut out = crate::output::Output::open(a.output.as_deref())?;
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&report, clock, &mut out)?;
    }
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}
