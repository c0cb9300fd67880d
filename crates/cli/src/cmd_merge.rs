//! `tscmerge merge HOST... --guest NAME=FILE[,FILE...][,pid=PID]`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use tscmerge::merge::{merge_threads, Sink};
use tscmerge::plan::Plan;
use tscmerge::sink::{ChromeSink, DatSink, HostNs, JsonSink, MachineProvenance, PerfettoSink, TextSink, TsFormat, VcpuThread};
use tscmerge::check::CheckSink;
use tscmerge::EventView;

use crate::output::Output;

#[derive(clap::Args)]
#[command(after_help = "Each guest CPU is taken to be the vCPU of the same number unless --vcpu-map says otherwise.\n\
Offsets, per vCPU, in this precedence: (1) the host's kvm_write_tsc_offset events, each from its write on\n\
(replaced by KVM debugfs snapshots that contradict them with --offsets auto, or always with --offsets debugfs);\n\
(2) a trace-cmd guest's TIME_SHIFT samples, before the first of (1) or everywhere (1) has none; where (1)\n\
covers a sample, (1) wins and a disagreement is said; (3) --tsc-offset, before everything else when (1) and (2)\n\
do not reach back. trace-cmd host-guest files are recognised by content: the guest's TRACEID finds the host's\n\
GUEST option, which names the vCPU threads: `tscmerge merge host.dat --guest guest.dat` needs no flags.\n\
After a fall of an offset guest times repeat: such an event goes to the period whose host time lies inside a\n\
run window of its vCPU thread (kvm_entry..kvm_exit, else sched_switch on-CPU, else kvm_emulate_insn); where\n\
nothing decides, to the earliest fitting period, counted as ambiguous (stderr, --stats, JSON \"placed\": \"rule\").\n\
Formats: text (trace-cmd report layout with a machine column), json (one object per line),\n\
perfetto (protobuf for ui.perfetto.dev), chrome (trace event JSON): both need host time in ns, from --tsc-khz,\n\
else the host trace.dat's TSC2NSEC option (trace-cmd 3.x), else the frequency tscmerge record noted.\n\
Text prints host time as seconds when --tsc-khz is given (%6u.%09u) or the host trace.dat has TSC2NSEC\n\
(as trace-cmd report prints it: %5u.%06u), TSC cycles otherwise; json then adds \"ns\" beside \"ts\" (TSC).\n\
dat (trace.dat v7, zstd, one buffer per machine, for trace-cmd and KernelShark; needs -o; with trace-cmd's TRACEID,\n\
one GUEST option per guest naming its vCPU threads, and TSC2NSEC from the host file or --tsc-khz).\n\
trace-cmd (-o DIR): the host and guest trace.dat inputs again, events untouched, as a trace-cmd 3.x host-guest\n\
session: the host file gains TRACEID, a GUEST option per guest and TSC2NSEC where missing; each guest,\n\
DIR/NAME.dat, gains TRACEID and TIME_SHIFT (our offsets, one sample per offset period and vCPU), so that\n\
`trace-cmd report -i DIR/host.dat -i DIR/NAME.dat` and `kernelshark DIR/host.dat -a DIR/NAME.dat` merge them.\n\
Examples:\n  tscmerge merge host.txt host-tsc_offset.txt --guest vm0=guest-vm0.txt,pid=2000\n\
  tscmerge merge trace-host.dat --guest trace-guest.dat          # trace-cmd record -A GUEST ...\n\
  tscmerge merge host.dat --guest vm0=guest.dat --format perfetto --tsc-khz 2995200 -o merged.pftrace\n\
  tscmerge merge host.dat --guest vm0=guest.dat --format dat -o merged.dat && kernelshark merged.dat\n\
  tscmerge merge host.dat --guest vm0=guest.dat --format trace-cmd -o tc && trace-cmd report -i tc/host.dat -i tc/vm0.dat")]
pub struct Args {
    #[command(flatten)]
    pub inputs: crate::inputs::InputArgs,
    /// Show each guest event's own TSC next to its host time.
    #[arg(long)]
    pub show_guest_ts: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as --format json: one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Check the merge against the host's run windows as it goes (summary on stderr; exit 1 on violations).
    #[arg(long)]
    pub check: bool,
    /// Print events in and out per source on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Write to FILE (complete or not at all) instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Compression of the trace.dat (v7) that --format dat writes, as
    /// `trace-cmd convert --compression` [default: zstd].
    #[arg(long, value_enum)]
    pub compression: Option<crate::output::Codec>,
    /// --format perfetto: add each vCPU's states as explain finds them (guest, exit by reason,
    /// userspace, preempted by whom, halted) as slices on a `<guest> vCPU N state` track, and a
    /// `<guest> vCPU N steal` counter (ns preempted so far).
    #[arg(long)]
    pub vcpu_states: bool,
    /// Threads: 1 runs everything on one; 2 renders and writes on a second
    /// thread. Default: 2 when this process may use two CPUs, else 1.
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
}


#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Perfetto,
    Dat,
    #[value(alias = "json-trace")]
    Chrome,
    /// The inputs as trace-cmd host-guest files (-o DIR): options appended, events untouched.
    #[value(name = "trace-cmd")]
    TraceCmd,
}

/// Shows progress on stderr (only when it is a terminal) around another sink.
struct Progress<'s> {
    inner: &'s mut dyn Sink,
    bar: indicatif::ProgressBar,
    n: u64,
}

impl Sink for Progress<'_> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> tscmerge::Result<()> {
        self.n += 1;
        if self.n & 8191 == 0 {
            self.bar.set_position(self.n);
        }
        self.inner.event(machine, ev)
    }
    fn finish(&mut self) -> tscmerge::Result<()> {
        self.bar.set_position(self.n);
        let r = self.inner.finish();
        self.bar.finish_and_clear();
        r
    }
    fn body_style(&self) -> Option<ftrace::printfmt::Style> {
        self.inner.body_style()
    }
}

/// What `--check` needs: the plan, and the frequency for printing distances.
type CheckWith<'p> = Option<(&'p Plan, Option<u64>)>;

/// Runs the merge, with a progress bar when stderr is a terminal, and with
/// `--check`'s check around `sink` (its report goes to stderr). Returns the
/// counts and whether the check failed.
fn run_merge(
    cursors: Vec<tscmerge::merge::Input<'_>>,
    total: Option<u64>,
    sink: &mut dyn Sink,
    check: CheckWith<'_>,
    threads: usize,
) -> tscmerge::Result<(tscmerge::merge::MergeStats, bool)> {
    let Some((plan, khz)) = check else { return Ok((run_merge_plain(cursors, total, sink, threads)?, false)) };
    let mut cs = CheckSink::new(plan.check_config(), Some(sink));
    let stats = run_merge_plain(cursors, total, &mut cs, threads)?;
    let mut r = cs.report();
    let _ = crate::cmd_check::print_report(plan, &mut r, khz, &mut std::io::stderr().lock());
    let nothing_judged = r.host_windows > 0 && r.guest_events > 0 && r.judged() == 0;
    Ok((stats, (r.host_windows > 0 && r.violations() > 0) || r.value_mismatches > 0 || nothing_judged))
}

fn run_merge_plain(cursors: Vec<tscmerge::merge::Input<'_>>, total: Option<u64>, sink: &mut dyn Sink, threads: usize) -> tscmerge::Result<tscmerge::merge::MergeStats> {
    if !std::io::stderr().is_terminal() {
        return merge_threads(cursors, sink, threads);
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} merging {pos}/{len} events [{bar:30}] {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut p = Progress { inner: sink, bar, n: 0 };
    merge_threads(cursors, &mut p, threads)
}

/// Host threads that run guest vCPUs, named after the guest (a VM with no
/// guest trace gets its timeline name and a `?`).
fn vcpu_threads(plan: &Plan) -> Vec<VcpuThread> {
    let mut out = Vec::new();
    for (vi, vm) in plan.timeline.vms.iter().enumerate() {
        let guest = match plan.guests.iter().find(|g| g.vm == vi) {
            Some(g) => g.spec.name.clone(),
            None => format!("{}?", vm.name()),
        };
        for (vcpu, tl) in &vm.vcpus {
            if let Some(pid) = tl.pid {
                out.push(VcpuThread { pid, guest: guest.clone(), vcpu: vcpu.0 });
            }
        }
    }
    out
}

/// Offset periods kept per vCPU in a guest's provenance: enough to see how
/// the offsets moved, bounded so the option (and the memory to build it)
/// does not grow with a long recording's offset writes; `tscmerge offsets`
/// on the host lists them all.
const PROVENANCE_PERIODS: usize = 1000;

/// What the trace.dat records about where each guest's times came from.
fn provenance(plan: &Plan) -> Vec<MachineProvenance> {
    #[derive(serde::Serialize)]
    struct Vcpu<'a> {
        pid: Option<i32>,
        scaling: Option<tscmerge::clock::Scaling>,
        periods_total: usize,
        periods: &'a [tscmerge::clock::Period],
    }
    #[derive(serde::Serialize)]
    struct Guest<'a> {
        guest: &'a str,
        files: &'a [std::path::PathBuf],
        vm: String,
        vmm_pid: Option<i32>,
        why: &'a str,
        vcpu_map: &'a std::collections::BTreeMap<u32, u32>,
        vcpus: std::collections::BTreeMap<u32, Vcpu<'a>>,
    }
    plan.guests
        .iter()
        .map(|g| {
            let vm = &plan.timeline.vms[g.vm];
            let vcpus = vm
                .vcpus
                .iter()
                .map(|(id, tl)| {
                    let periods = &tl.periods[..tl.periods.len().min(PROVENANCE_PERIODS)];
                    (id.0, Vcpu { pid: tl.pid, scaling: tl.scaling, periods_total: tl.periods.len(), periods })
                })
                .collect();
            let doc = Guest {
                guest: &g.spec.name,
                files: &g.spec.files,
                vm: vm.name(),
                vmm_pid: vm.tgid,
                why: &g.reason,
                vcpu_map: &g.spec.vcpu_map,
                vcpus,
            };
            let json = serde_json::to_string(&doc).unwrap_or_default();
            MachineProvenance { name: g.spec.name.clone(), json }
        })
        .collect()
}

/// trace-cmd's host-guest options for a merged trace.dat: the host's
/// TRACEID, one GUEST per guest (its name, its trace id — the one the host's
/// GUEST option gave, else one derived from its name — and each vCPU's host
/// thread as `check` knows it) and TSC2NSEC (the host file's, or from
/// --tsc-khz). No TIME_SHIFT: every buffer is on host TSC already.
fn dat_meta(plan: &Plan, clock: Option<HostNs>) -> tscmerge::sink::dat::DatMeta {
    use ftrace::write::{hostguest, OptionData};
    let mut options = Vec::new();
    let host_id = plan.hosts.iter().filter_map(|h| h.tracedat()).find_map(|d| d.trace_id());
    if let Some(id) = host_id {
        options.push(OptionData::TraceId(id));
    }
    let cfg = plan.check_config();
    for (gi, g) in plan.guests.iter().enumerate() {
        let option = plan.timeline.vms.get(g.vm).and_then(|v| v.guest_option.as_ref());
        let derived = hostguest::derived_trace_id(&g.spec.name, host_id.unwrap_or(0));
        let vcpus: Vec<(u32, u32)> = cfg.vms.get(&(gi + 1)).map(|v| v.vcpu_pids.iter().map(|(&vcpu, &(pid, _))| (vcpu, pid as u32)).collect()).unwrap_or_default();
        options.push(hostguest::guest_option(&g.spec.name, option.map_or(derived, |o| o.trace_id), vcpus));
    }
    match clock {
        Some(HostNs::Tsc2Nsec { mult, shift, offset }) => options.push(OptionData::Tsc2Nsec { mult, shift, offset }),
        Some(HostNs::Khz(khz)) => options.push(hostguest::tsc2nsec_from_khz(khz)),
        None => {}
    }
    tscmerge::sink::dat::DatMeta { provenance: provenance(plan), options }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let threads = crate::inputs::threads(a.threads);
    let plan = crate::inputs::open_plan(&a.inputs, threads, a.output.as_deref())?;
    let machines = plan.machines();
    let format = if a.json { Format::Json } else { a.format };
    // Host time in ns: --tsc-khz, else the host file's TSC2NSEC (as
    // trace-cmd report converts it), else the frequency `tscmerge record`
    // noted (Perfetto and Chrome only: text and JSON keep cycles there).
    let khz = a.inputs.tsc_khz;
    let tsc2nsec = plan.host_tsc2nsec();
    let clock = match (khz, tsc2nsec) {
        (Some(k), _) => Some(HostNs::Khz(k)),
        (None, Some(c)) => Some(c),
        (None, None) => plan.recorded_tsc_khz().filter(|_| matches!(format, Format::Perfetto | Format::Chrome)).map(HostNs::Khz),
    };
    if let (Format::Perfetto | Format::Chrome, None) = (format, clock) {
        bail!(
            "--format {}: timestamps there are nanoseconds, so the TSC frequency is needed: pass --tsc-khz KHZ \
             (the kernel's 'tsc: Refined TSC clocksource calibration: N MHz' in dmesg, times 1000)",
            if format == Format::Perfetto { "perfetto" } else { "chrome" }
        );
    }
    if format == Format::TraceCmd {
        let Some(dir) = a.output.as_deref() else { bail!("--format trace-cmd writes a host file and one file per guest: give their directory with -o DIR") };
        if a.check || a.compression.is_some() {
            bail!("--format trace-cmd copies the inputs' events as they are: --check and --compression do not apply (check with `tscmerge check`)");
        }
        let w = crate::tracecmd_pair::write(&plan, clock, dir)?;
        for n in &w.notes {
            eprintln!("tscmerge: note: {n}");
        }
        let names: Vec<String> = w.files.iter().map(|f| f.display().to_string()).collect();
        eprintln!("tscmerge: wrote {}; read them with `trace-cmd report -i {}`", names.join(", "), names.join(" -i "));
        return Ok(ExitCode::SUCCESS);
    }
    let ts = match clock {
        Some(HostNs::Khz(khz)) => TsFormat::Secs { khz },
        Some(c) => TsFormat::Tsc2Nsec(c),
        None => TsFormat::Cycles,
    };
    let total = plan.hosts.iter().chain(plan.guests.iter().flat_map(|g| g.inputs.iter()))
        .flat_map(|i| i.buffers().iter().map(|b| b.events))
        .sum::<Option<u64>>();
    let check: CheckWith<'_> = a.check.then_some((&plan, match clock {
        Some(HostNs::Khz(k)) => Some(k),
        _ => None,
    }));
    let names = machines.clone();
    // The machine of each merge cursor, for --stats.
    let sources: Vec<usize>;
    if a.vcpu_states && format != Format::Perfetto {
        bail!("--vcpu-states applies to --format perfetto only");
    }
    if a.compression.is_some() && format != Format::Dat {
        bail!("--compression applies to --format dat only");
    }
    let compression = a.compression.map_or(ftrace::write::Compression::Zstd, Into::into);
    let (stats, check_failed) = if format == Format::Dat && !a.check {
        let Some(path) = a.output.as_deref() else { bail!("--format dat writes a binary file: give it with -o FILE.dat") };
        // Each output CPU on its own, pages copied where they can be: no merge cursors.
        let (groups, machine_of) = plan.page_groups()?;
        let (stats, pages) = tscmerge::sink::dat::write_pages(path, machines, dat_meta(&plan, clock), groups, machine_of.len(), threads, compression)?;
        if a.stats {
            eprintln!("tscmerge: {} pages copied whole, {} built ({} events re-encoded, the rest copied in runs)", pages.copied, pages.built, pages.encoded);
        }
        sources = machine_of;
        (stats, false)
    } else if format == Format::Dat {
        let Some(path) = a.output.as_deref() else { bail!("--format dat writes a binary file: give it with -o FILE.dat") };
        // The check follows the merged order: the merge-fed sink.
        let cursors = plan.cursors()?;
        sources = cursors.iter().map(|c| c.machine).collect();
        let mut sink = DatSink::create(path, machines, dat_meta(&plan, clock))?.with_compression(compression);
        run_merge(cursors, total, &mut sink, check, threads)?
    } else {
        let cursors = plan.cursors()?;
        sources = cursors.iter().map(|c| c.machine).collect();
        let out = Output::open(a.output.as_deref())?;
        let name = out.name();
        let (stats, out) = match format {
            Format::Json => {
                let mut sink = JsonSink::new(out, machines, &name).with_ns(clock);
                (run_merge(cursors, total, &mut sink, check, threads)?, sink.into_inner())
            }
            Format::Text => {
                let mut sink = TextSink::new(out, machines, ts, a.show_guest_ts, &name);
                (run_merge(cursors, total, &mut sink, check, threads)?, sink.into_inner())
            }
            Format::Perfetto => {
                let clock = clock.expect("checked above");
                let mut sink = PerfettoSink::new(out, &machines, clock, vcpu_threads(&plan), &name)?;
                if a.vcpu_states {
                    sink.vcpu_states(plan.explain_config());
                }
                (run_merge(cursors, total, &mut sink, check, threads)?, sink.into_inner())
            }
            Format::Chrome => {
                let clock = clock.expect("checked above");
                let mut sink = ChromeSink::new(out, machines, clock, vcpu_threads(&plan), &name)?;
                (run_merge(cursors, total, &mut sink, check, threads)?, sink.into_inner())
            }
            Format::Dat | Format::TraceCmd => unreachable!("handled above"),
        };
        out.finish()?;
        stats
    };
    if a.stats {
        for (i, n) in stats.per_input.iter().enumerate() {
            eprintln!("tscmerge: source #{i} ({}): {n} events", names[sources[i]]);
        }
        eprintln!("tscmerge: {} events out", stats.total);
    }
    report_ambiguity(&plan, a.stats);
    Ok(if check_failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Says on stderr how the guest events whose guest time fitted several
/// offset periods were placed (always when some were left to the rule;
/// with `--stats` in full).
pub fn report_ambiguity(plan: &Plan, stats: bool) {
    let tally = plan.ambiguity.lock().map(|m| m.clone()).unwrap_or_default();
    let (windows, order, rule) = tally.values().fold((0, 0, 0), |(w, o, r), a| (w + a.by_run_windows, o + a.by_guest_order, r + a.by_rule));
    if rule > 0 || (stats && windows + order > 0) {
        eprintln!(
            "tscmerge: {} guest events fitted more than one offset period (a fall of the offset repeats guest times): {windows} placed by the host's run windows, {order} by the guest CPU's later events, {rule} by the rule (earliest fitting period) and counted as ambiguous{}",
            windows + order + rule,
            if rule > 0 { "; `check` judges them, JSON marks them \"placed\": \"rule\"" } else { "" }
        );
    }
    if stats {
        for ((guest, vcpu), a) in &tally {
            eprintln!("tscmerge: guest {guest} vCPU {vcpu}: {} by run windows, {} by later guest events, {} ambiguous (rule)", a.by_run_windows, a.by_guest_order, a.by_rule);
        }
        for l in plan.lookahead.lock().map(|v| v.clone()).unwrap_or_default().into_iter().filter(|l| l.host_events_read > 0) {
            eprintln!(
                "tscmerge: run-window pass: {} host events read, at most {} windows held, {} dropped for room, {} lost-events marks{}",
                l.host_events_read,
                l.windows_held_max,
                l.windows_dropped,
                l.lost_marks,
                l.error.map(|e| format!(", stopped: {e}")).unwrap_or_default()
            );
        }
    }
}
