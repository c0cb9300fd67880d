//! `tscmerge synth -o DIR`: a modelled KVM host recording with ground truth,
//! as tracefs text, trace.dat, or both.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tscmerge::clock::Scaling;
use ftrace::write::Compression;
use tscmerge::synth::{write_dat, write_text, write_tracecmd_pair, PairConfig, Patterns, RunWindowEvents, Sampling, SynthConfig};

use crate::output::Codec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// host.txt, host-tsc_offset.txt, guest-vmN.txt (tracefs `trace` files).
    Text,
    /// host.dat (top level + instance tsc_offset), guest-vmN.dat (trace.dat v7).
    Dat,
    /// Both sets, side by side.
    Both,
    /// A trace-cmd 3.x host-guest pair: host.dat (GUEST options, kvm_entry/kvm_exit, no offset
    /// writes), guest-vmN.dat (TRACEID, TIME_SHIFT, TSC2NSEC).
    #[value(name = "trace-cmd")]
    TraceCmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeShift {
    /// First and last guest event of each vCPU (trace-cmd's default).
    StartEnd,
    /// Also right after every offset write.
    Changes,
    /// Also at every 100th guest event.
    Many,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  tscmerge synth -o /tmp/s                       # text, small\n  tscmerge synth -o /tmp/s --format dat --windows 1900000 --compression none   # 1.0 GB host.dat, ~5 MB RSS")]
pub struct Args {
    /// Output directory.
    #[arg(short = 'o', long = "output")]
    pub dir: PathBuf,
    /// vCPUs of each VM, comma separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub vms: Vec<u32>,
    /// Run windows per vCPU (the size knob).
    #[arg(long, default_value_t = 50)]
    pub windows: u64,
    /// Guest events per window.
    #[arg(long, default_value_t = 4)]
    pub events_per_window: u32,
    /// Every N windows a vCPU's guest writes its TSC (0 = never).
    #[arg(long, default_value_t = 17)]
    pub tsc_write_every: u64,
    /// TSC scaling of every guest, RATIO:FRAC_BITS.
    #[arg(long)]
    pub tsc_scaling: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What to write; truth.tsv is always written.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// --format trace-cmd: which TIME_SHIFT samples the guests get.
    #[arg(long, value_enum, default_value_t = TimeShift::Changes)]
    pub time_shift: TimeShift,
    /// The host's side of exits (text only): vCPU threads halt after HLT exits (asleep, woken on
    /// their CPU) and are preempted by named host tasks after every 4th other exit; host IRQs and
    /// softirqs run on their CPUs; truth-states.tsv gets each vCPU's cycles per state, exits per
    /// reason and host IRQs (explain's truth).
    #[arg(long)]
    pub host_story: bool,
    /// trace.dat (v7) compression.
    #[arg(long, value_enum, default_value_t = Codec::Zstd)]
    pub compression: Codec,
    /// KVM's other offset writes (arch/x86/kvm/x86.c), comma separated: host-zero (the VMM's
    /// host-initiated write of 0, offset kept), late-fall[=CYCLES] (every vCPU's offset falls once
    /// before the guest runs), unstable[=DRIFT] (unstable host TSC: fall at vcpu_load, rise at the
    /// clock update less DRIFT), tsc-adjust[=EVERY] (guest IA32_TSC_ADJUST writes, up and down),
    /// resume[=EVERY] (host suspend/resume), restore[=EVERY] (KVM_VCPU_TSC_OFFSET restores),
    /// migrate (vCPU threads change host CPU), or all.
    #[arg(long, value_parser = Patterns::parse)]
    pub kvm_writes: Option<Patterns>,
    /// Which run-window events the host recording keeps: all (kvm_entry/kvm_exit and the vCPU
    /// threads' sched_switch), sched (sched_switch only), none.
    #[arg(long, value_enum, default_value_t = WindowsKept::All)]
    pub run_windows: WindowsKept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WindowsKept {
    All,
    Sched,
    None,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let scaling = a.tsc_scaling.as_deref().map(|s| Scaling::parse(s).context("--tsc-scaling: expected RATIO:FRAC_BITS")).transpose()?;
    let cfg = SynthConfig {
        seed: a.seed,
        vms: a.vms,
        windows: a.windows,
        events_per_window: a.events_per_window,
        tsc_write_every: a.tsc_write_every,
        scaling,
        host_story: a.host_story,
        patterns: a.kvm_writes.unwrap_or_default(),
        run_windows: match a.run_windows {
            WindowsKept::All => RunWindowEvents::All,
            WindowsKept::Sched => RunWindowEvents::Sched,
            WindowsKept::None => RunWindowEvents::None,
        },
        ..Default::default()
    };
    if a.host_story && a.format != Format::Text {
        anyhow::bail!("--host-story: only --format text writes the host's sched events of the story");
    }
    // The story's truth counts the vCPU threads' own switches only: other
    // switches (unstable, migrate) or missing run windows would make it wrong.
    if a.host_story && (cfg.patterns != Default::default() || cfg.run_windows != RunWindowEvents::All) {
        anyhow::bail!("--host-story: its truth (truth-states.tsv) holds only without --kvm-writes and with --run-windows all");
    }
    let compression = Compression::from(a.compression);
    let ctx = || format!("writing {}", a.dir.display());
    let sum = match a.format {
        Format::Text => write_text(&cfg, &a.dir).with_context(ctx)?,
        Format::Dat => write_dat(&cfg, &a.dir, compression).with_context(ctx)?,
        Format::TraceCmd => {
            let sampling = match a.time_shift {
                TimeShift::StartEnd => Sampling::StartEnd,
                TimeShift::Changes => Sampling::Changes { every: 0 },
                TimeShift::Many => Sampling::Changes { every: 100 },
            };
            write_tracecmd_pair(&cfg, &PairConfig { sampling, ..Default::default() }, &a.dir, compression).with_context(ctx)?
        }
        Format::Both => {
            write_text(&cfg, &a.dir).with_context(ctx)?;
            write_dat(&cfg, &a.dir, compression).with_context(ctx)?
        }
    };
    eprintln!(
        "tscmerge: wrote {}: host {} events, {} offset writes, guests {:?} events; VMM pids {}",
        a.dir.display(),
        sum.host_events,
        sum.offset_writes,
        sum.guest_events,
        (0..cfg.vms.len()).map(|v| cfg.vmm_pid(v).to_string()).collect::<Vec<_>>().join(",")
    );
    Ok(ExitCode::SUCCESS)
}
