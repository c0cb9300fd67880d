//! `tscmerge record`: record a KVM host (or a guest) into one trace.dat, and
//! the home of the two live subcommands (`record`, `doctor`) registered in
//! main.rs as one flattened group.
//!
//! Flow: stop handlers (SIGINT/SIGTERM → flag) → check events → `record::Recorder::start`
//! (instances, capture threads, debugfs sampler) → COMMAND → wait for COMMAND /
//! signal / `--duration` → `Recorder::stop` (instances removed) → lost events
//! per CPU → `record::todat::convert` (temporary file renamed into place) →
//! raw directory removed. Everything the kernel side needs undoing is undone by
//! the record crate on every path; here we only remove our raw directory.
//!
//! Exit status: 0 a file was written (also when stopped by SIGINT/SIGTERM, the
//! normal way to end a recording without COMMAND or `--duration`); 130 stopped
//! during setup (nothing written); 2 anything that prevented recording (another
//! `tscmerge record` running, missing event, no tracefs).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use record::todat::{self, ToDat};
use record::{InstanceConfig, RecordConfig, Recorder, Tracefs};

/// The live subcommands: they need root, tracefs and (doctor) /dev/kvm.
#[derive(clap::Subcommand)]
pub enum LiveCmd {
    /// Record a KVM host (--host) or a guest (--guest) into one trace.dat (x86-tsc clock).
    #[command(after_help = RECORD_HELP)]
    Record(Args),
    /// Check that this machine can record what tscmerge needs, with a 1-second micro-VM run.
    Doctor(crate::cmd_doctor::Args),
}

impl LiveCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            LiveCmd::Record(a) => run(a),
            LiveCmd::Doctor(a) => crate::cmd_doctor::run(a),
        }
    }
}

const RECORD_HELP: &str = "\
Host mode makes two tracefs instances, both with the x86-tsc clock, before COMMAND starts:
  tsc_offset  kvm:kvm_write_tsc_offset only (rare and vital: a busy buffer must not overwrite it)
  tscmerge    the events (default kvm:kvm_entry kvm:kvm_exit kvm:kvm_cpuid kvm:kvm_pio
              sched:sched_switch sched:sched_wakeup; defaults this kernel lacks are skipped)
and samples KVM debugfs (tsc-offset per vCPU). Guest mode makes one instance `tscmerge`
(default sched:sched_switch sched:sched_wakeup). Both copy writes to the top-level
trace_marker into the instance (options/copy_trace_marker, Linux 6.17+); without it,
write markers to /sys/kernel/tracing/instances/tscmerge/trace_marker.

Recording ends when COMMAND exits, after --duration, or on SIGINT/SIGTERM (COMMAND, if still
running, then gets SIGTERM). Killed by SIGKILL, record leaves its instances, its hidden raw
directory and a journal of them in /run/tscmerge-record.d (the command dies with it: PDEATHSIG);
the next record names them all and refuses, `tscmerge doctor` lists them, and
`tscmerge record --recover` removes them in one step. The output is one trace.dat v7 (zstd): `tscmerge` as the top-level
buffer, `tsc_offset` as an instance, process/tgid table, debugfs snapshots and TSC frequency
as private options; `trace-cmd report` reads it.

trace-cmd 3.x's host-guest options are written too: TRACEID (--trace-id, else random; printed),
TSC2NSEC (perf's mult/shift for the TSC, as trace-cmd records it: `trace-cmd report` prints
seconds, `--raw-ts` the counts) and, on the host, one GUEST option per VM whose
kvm_write_tsc_offset events were recorded: its name (--guest-name NAME=PID, PID its VMM process
or a vCPU thread; NAME alone: VMs in creation order; else vmN), its guest's trace id (`,trace-id=ID`, else derived from NAME and the
host's trace id; printed) and each vCPU's host thread (the one thread that wrote its offsets).
Give the guest the same id with `record --guest --trace-id ID`: then `tscmerge merge host.dat
--guest guest.dat` ties and names it by itself. TIME_SHIFT (the offsets, for trace-cmd's own
`report -i host.dat -i guest.dat`) is known only once both files exist: `tscmerge merge HOST
--guest NAME=GUEST.dat --format trace-cmd -o DIR` writes the pair with it.

Examples:
  tscmerge record --host -o host.dat -- qemu-system-x86_64 -enable-kvm ...
  tscmerge record --host --duration 10 -e kvm:kvm_exit -e sched:sched_switch
  tscmerge record --guest -o guest.dat -- ./workload     (inside the guest)
  tscmerge record --host --trace-id 0x100 --guest-name web=4242,trace-id=0x101 -o host.dat
  tscmerge record --guest --trace-id 0x101 -o guest.dat  (inside VM `web`)";

/// Default host events (besides kvm_write_tsc_offset in its own instance).
pub const HOST_EVENTS: &[&str] = &[
    "kvm:kvm_entry",
    "kvm:kvm_exit",
    "kvm:kvm_cpuid",
    "kvm:kvm_pio",
    "sched:sched_switch",
    "sched:sched_wakeup",
];
/// Default guest events.
pub const GUEST_EVENTS: &[&str] = &["sched:sched_switch", "sched:sched_wakeup"];

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["host", "guest", "recover"])))]
pub struct Args {
    /// Record a KVM host: offsets in their own instance, kvm and sched events, debugfs snapshots.
    #[arg(long)]
    pub host: bool,
    /// Record inside a guest: one instance, x86-tsc, no kvm events.
    #[arg(long)]
    pub guest: bool,
    /// Event to record, `system:name` or `system:*` (repeatable; replaces the defaults).
    #[arg(short = 'e', long = "event", value_name = "SYSTEM:NAME")]
    pub events: Vec<String>,
    /// Output trace.dat.
    #[arg(short, long, default_value = "trace.dat")]
    pub output: PathBuf,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Per-CPU ring buffer size of the events instance, in KiB.
    #[arg(long, value_name = "N")]
    pub buffer_kb: Option<u64>,
    /// Keep the raw capture (trace_pipe_raw pages, formats, meta.txt) in this new directory.
    #[arg(long, value_name = "DIR")]
    pub raw: Option<PathBuf>,
    /// Do not store /proc/kallsyms (saves ~5 MB raw; kernel addresses then print as hex).
    #[arg(long)]
    pub no_kallsyms: bool,
    /// Prefix of the instance names (tests).
    #[arg(long, hide = true, default_value = "")]
    pub instance_prefix: String,
    /// Lock file (tests).
    #[arg(long, hide = true, default_value = record::DEFAULT_LOCK_PATH)]
    pub lock: PathBuf,
    /// Remove everything a killed `tscmerge record` left (its tracefs
    /// instances, tracing and events switched off first; its raw directory;
    /// its traced command, if still running), as listed by `tscmerge doctor`
    /// and by the next `record`, and exit.
    #[arg(long, conflicts_with = "command")]
    pub recover: bool,
    /// This recording's trace id (trace-cmd's TRACEID option), decimal or 0x-hex; default: a
    /// random one, printed. Give a guest's `record --guest` the id the host's --guest-name names.
    #[arg(long, value_name = "ID", value_parser = parse_trace_id)]
    pub trace_id: Option<u64>,
    /// (--host) Name a VM in the host file's GUEST option: the one whose VMM process, or one of
    /// whose vCPU threads, is PID; without PID the next VM created that no PID names. With the
    /// trace id its guest recording carries (default: derived from NAME and the host's trace id,
    /// printed). Repeatable. VMs not named are `vmN`.
    #[arg(long = "guest-name", value_name = "NAME[=PID][,trace-id=ID]", requires = "host")]
    pub guest_names: Vec<String>,
    /// Command to run while recording.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `0x`-hex or decimal u64.
fn parse_trace_id(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("{s:?}: not a trace id (a u64, decimal or 0x-hex): {e}"))
}

/// One `--guest-name NAME[=PID][,trace-id=ID]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestName {
    pub name: String,
    /// The VMM process or a vCPU thread; `None`: the next VM created that no
    /// PID names, in creation order.
    pub pid: Option<i32>,
    pub trace_id: Option<u64>,
}

impl GuestName {
    pub fn parse(s: &str) -> Result<GuestName, String> {
        let bad = |why: &str| format!("--guest-name {s:?}: {why}; expected NAME[=PID][,trace-id=ID]");
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or("");
        let (name, pid) = match head.split_once('=') {
            Some((n, p)) => (n, Some(p.trim().parse::<i32>().ok().filter(|&p| p > 0).ok_or_else(|| bad("PID is not a positive number"))?)),
            None => (head, None),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad("the name is empty or holds white space"));
        }
        let mut trace_id = None;
        for p in parts {
            match p.split_once('=') {
                Some(("trace-id", v)) => trace_id = Some(parse_trace_id(v).map_err(|e| bad(&e))?),
                _ => return Err(bad(&format!("unknown part {p:?}"))),
            }
        }
        Ok(GuestName { name: name.to_string(), pid, trace_id })
    }
}

/// trace-cmd's host-guest options for what was recorded into `raw`: the
/// TRACEID, and (host) one GUEST option per VM whose kvm_write_tsc_offset
/// events were recorded, each vCPU's host thread being the one thread that
/// wrote its offsets and no other vCPU's (`tscmerge::clock::Vm::vcpu_threads`,
/// the rule `check` uses). Lines for the user go to `say`.
pub fn hostguest_options(raw: &Path, host: bool, trace_id: u64, names: &[GuestName], say: &mut dyn FnMut(String)) -> anyhow::Result<Vec<ftrace::write::OptionData>> {
    use ftrace::write::hostguest;
    let mut out = vec![ftrace::write::OptionData::TraceId(trace_id)];
    if !host {
        return Ok(out);
    }
    let input = tscmerge::source::Input::open(raw).with_context(|| format!("reading the offset writes back from {}", raw.display()))?;
    let tl = tscmerge::clock::OffsetTimeline::build(input.offset_writes().to_vec());
    let mut used = vec![false; names.len()];
    // Named by PID first; the VMs no PID names take the names without one
    // in creation order (the timeline lists VMs by their first write).
    let by_pid: Vec<Option<usize>> = tl.vms.iter().map(|vm| names.iter().position(|n| n.pid.is_some_and(|p| vm.tgid == Some(p) || vm.has_pid(p)))).collect();
    let mut unnamed = (0..names.len()).filter(|&i| names[i].pid.is_none());
    for (vm, by_pid) in tl.vms.iter().zip(by_pid) {
        let named = by_pid.or_else(|| unnamed.next());
        let name = match named {
            Some(i) => {
                used[i] = true;
                names[i].name.clone()
            }
            None => format!("vm{}", vm.index),
        };
        let id = named.and_then(|i| names[i].trace_id).unwrap_or_else(|| hostguest::derived_trace_id(&name, trace_id));
        let threads = vm.vcpu_threads(|_| true);
        let missing: Vec<String> = vm.vcpus.keys().filter(|v| !threads.contains_key(&v.0)).map(|v| v.0.to_string()).collect();
        let vmm = vm.tgid.map_or_else(|| "VMM pid unknown".to_string(), |t| format!("VMM pid {t}"));
        say(format!(
            "guest {name} ({vmm}): trace id {id:#x}, {} of {} vCPU threads known{}",
            threads.len(),
            vm.vcpus.len(),
            if missing.is_empty() { String::new() } else { format!(" (none for vCPU {}: no thread wrote only its offsets)", missing.join(", ")) }
        ));
        out.push(hostguest::guest_option(&name, id, threads.iter().map(|(&v, &(pid, _))| (v, pid as u32))));
    }
    for (n, _) in names.iter().zip(&used).filter(|(_, u)| !**u) {
        match n.pid {
            Some(p) => say(format!("warning: --guest-name {}={p}: no VM of this recording has that VMM process or vCPU thread (no kvm_write_tsc_offset of it was recorded): no GUEST option for it", n.name)),
            None => say(format!("warning: --guest-name {}: fewer VMs were created while recording ({}) than names given: no GUEST option for it", n.name, tl.vms.len())),
        }
    }
    Ok(out)
}

/// Whether `system:name` (or `system:*`) exists under tracefs `events/`.
pub fn event_exists(tfs: &Path, ev: &str) -> bool {
    match ev.split_once(':') {
        Some((s, "*")) => tfs.join("events").join(s).is_dir(),
        Some((s, n)) => tfs.join("events").join(s).join(n).join("enable").is_file(),
        None => false,
    }
}

struct RawDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RawDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn human(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b}B"),
        10_000..=9_999_999 => format!("{}K", b / 1024),
        _ => format!("{:.1}M", b as f64 / 1048576.0),
    }
}

/// Reads `per_cpu/cpuN/stats` of an instance: (events seen = read + entries, lost).
fn live_stats(inst_dir: &Path, cpu: u32) -> Option<(u64, u64)> {
    let t = std::fs::read_to_string(inst_dir.join(format!("per_cpu/cpu{cpu}/stats"))).ok()?;
    let s = record::CpuStats::parse(&t);
    Some((s.read_events + s.entries, s.lost()))
}

fn status_line(rec: &Recorder, tfs: &Path, elapsed: Duration) -> String {
    let mut s = format!("{:6.1}s", elapsed.as_secs_f64());
    for ic in rec.counters() {
        let dir = tfs.join("instances").join(&ic.name);
        let mut lost = 0;
        s.push_str(&format!("  {}:", ic.name));
        for (cpu, c) in &ic.cpus {
            let (ev, l) = live_stats(&dir, *cpu).unwrap_or((0, 0));
            lost += l;
            s.push_str(&format!(
                " cpu{cpu} {} {}p {ev}ev",
                human(c.bytes.load(Ordering::Relaxed)),
                c.pages.load(Ordering::Relaxed)
            ));
        }
        s.push_str(&format!(" lost {lost}"));
    }
    s
}

fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // First of all, so a signal from now on ends the recording cleanly.
    let flag = record::signal::install_stop_handlers().context("installing SIGINT/SIGTERM handlers")?;
    if let Some(d) = a.duration {
        if !(d.is_finite() && d > 0.0) {
            bail!("--duration {d}: expected a positive number of seconds");
        }
    }
    let root = PathBuf::from("/");
    let tfs = Tracefs::open_or_mount(&root)?;
    let tdir = tfs.dir().to_path_buf();
    let p = &a.instance_prefix;
    let main_name = format!("{p}tscmerge");
    let tsc_name = format!("{p}tsc_offset");

    // A killed recorder's leftovers: removed with --recover, else named all
    // at once and the run refused before anything is created.
    let registry = record::leftovers::registry_for(&a.lock);
    let left = record::leftovers::find(&registry, &tfs.instances_dir(), &[main_name.clone(), tsc_name.clone()]);
    if a.recover {
        let _lock = record::RecordLock::acquire(&a.lock)?;
        if left.is_empty() {
            record::leftovers::recover(&left)?;
            eprintln!("tscmerge record: nothing to recover: no leftover of a killed tscmerge record");
            return Ok(ExitCode::SUCCESS);
        }
        for line in record::leftovers::recover(&left)? {
            eprintln!("tscmerge record: {line}");
        }
        eprintln!("tscmerge record: recovered: tracefs is as it was before the killed run");
        return Ok(ExitCode::SUCCESS);
    }
    if left.is_empty() {
        // Journals of recorders killed before they made anything.
        record::leftovers::recover(&left)?;
    } else {
        bail!(
            "a previous tscmerge record was killed and left: {}; run `tscmerge record --recover` to remove them all (tracing and events off first), then record again",
            left.describe()
        );
    }

    // Events: -e must exist; defaults this kernel lacks are skipped with a warning.
    let mut events = Vec::new();
    if a.events.is_empty() {
        for ev in if a.host { HOST_EVENTS } else { GUEST_EVENTS } {
            if event_exists(&tdir, ev) {
                events.push(ev.to_string());
            } else {
                eprintln!("tscmerge record: warning: {ev} does not exist in this kernel: not recorded");
            }
        }
    } else {
        for ev in &a.events {
            if !event_exists(&tdir, ev) {
                bail!(
                    "event {ev} does not exist: no {}/events/{} (is its module loaded? e.g. `modprobe kvm`)",
                    tdir.display(),
                    ev.replace(':', "/")
                );
            }
            events.push(ev.clone());
        }
    }
    let guest_names: Vec<GuestName> = a.guest_names.iter().map(|g| GuestName::parse(g)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let trace_id = a.trace_id.unwrap_or_else(ftrace::write::hostguest::random_trace_id);
    if a.host && !event_exists(&tdir, "kvm:kvm_write_tsc_offset") {
        bail!("kvm:kvm_write_tsc_offset does not exist: is KVM loaded (`modprobe kvm_intel` / `kvm_amd`)? Use --guest inside a guest");
    }

    // Declared before everything it lists, so that it is removed after them.
    let journal = std::sync::Arc::new(record::Journal::create(&registry)?);
    let raw = match &a.raw {
        Some(d) => RawDir { path: d.clone(), keep: true },
        None => {
            let dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let name = a.output.file_name().unwrap_or_default().to_string_lossy();
            RawDir { path: dir.join(format!(".{name}.raw.{}", std::process::id())), keep: false }
        }
    };
    let mut cfg = RecordConfig::new(&raw.path);
    cfg.root = root;
    cfg.lock_path = a.lock.clone();
    cfg.kallsyms = !a.no_kallsyms;
    cfg.interrupt = Some(flag.clone());
    cfg.journal = Some(journal.clone());
    // Our hidden raw directory is made fresh (mkdir, a planted symlink refused).
    cfg.fresh_out_dir = a.raw.is_none();
    // Frequent enough to see short-lived VMs (a few files per vCPU a sample).
    cfg.kvm_debugfs_interval = a.host.then(|| Duration::from_millis(50));
    let mut main_inst = InstanceConfig::new(&main_name, &[]);
    main_inst.events = events;
    main_inst.buffer_size_kb = a.buffer_kb;
    cfg.instances = if a.host {
        let mut t = InstanceConfig::new(&tsc_name, &["kvm:kvm_write_tsc_offset"]);
        t.buffer_size_kb = Some(128);
        vec![t, main_inst]
    } else {
        vec![main_inst]
    };
    let rec = match Recorder::start(cfg) {
        Ok(r) => r,
        Err(record::Error::Interrupted) => {
            drop(raw);
            eprintln!("tscmerge record: interrupted during setup: nothing recorded, tracefs left as found");
            return Ok(ExitCode::from(130));
        }
        // `raw` is removed on the way out unless the user named it.
        Err(e) => return Err(e.into()),
    };
    // Markers written to the top-level trace_marker are copied into our instance
    // (kernel/trace/trace.c, `copy_trace_marker`); absent before 6.17.
    let ctm = tdir.join("instances").join(&main_name).join("options/copy_trace_marker");
    if ctm.exists() {
        if let Err(e) = std::fs::write(&ctm, "1") {
            eprintln!("tscmerge record: warning: {}: {e}", ctm.display());
        }
    }

    let mut child = None;
    if let Some((prog, args)) = a.command.split_first() {
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args);
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                // The command dies with its recorder, even by SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The recorder died before the prctl: no signal will come.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(c) => {
                if let Err(e) = journal.note_child(c.id() as i32) {
                    eprintln!("tscmerge record: warning: {e}");
                }
                child = Some(c)
            }
            Err(e) => {
                drop(rec);
                return Err(anyhow::anyhow!(e).context(format!("starting {prog}")));
            }
        }
    }
    let tty = std::io::stderr().is_terminal();
    if child.is_none() && a.duration.is_none() {
        eprintln!("tscmerge record: recording into {}; Ctrl-C to stop", a.output.display());
    }
    let t0 = Instant::now();
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let reason = loop {
        if flag.load(Ordering::SeqCst) {
            break "signal".to_string();
        }
        if let Some(d) = a.duration {
            if t0.elapsed().as_secs_f64() >= d {
                break format!("--duration {d}");
            }
        }
        if let Some(c) = &mut child {
            if let Ok(Some(st)) = c.try_wait() {
                break format!("command exited ({st})");
            }
        }
        if tty && last_status.elapsed() >= Duration::from_millis(250) {
            last_status = Instant::now();
            let line = status_line(&rec, &tdir, t0.elapsed());
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K{line}");
            let _ = e.flush();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let summary = rec.stop();
    if tty {
        eprint!("\r\x1b[K");
    }
    if let Some(c) = &mut child {
        stop_child(c);
    }
    let summary = summary?;
    eprintln!("tscmerge record: stopped by {reason} after {:.1}s", t0.elapsed().as_secs_f64());
    for inst in &summary.instances {
        let per: Vec<String> = inst
            .cpus
            .iter()
            .map(|c| format!("cpu{} {} lost {}", c.cpu, human(c.capture.bytes), c.stats.lost()))
            .collect();
        eprintln!("  {}: {} — lost events total {}", inst.name, per.join(", "), inst.lost());
    }
    let mut names = vec![(main_name.clone(), String::new())];
    if a.host {
        names.push((tsc_name.clone(), "tsc_offset".into()));
    }
    let mut raw = raw;
    let options = hostguest_options(&raw.path, a.host, trace_id, &guest_names, &mut |l| eprintln!("tscmerge record: {l}"));
    let options = match options {
        Ok(o) => o,
        Err(e) => {
            raw.keep = true;
            return Err(e.context(format!("the raw capture is kept in {}", raw.path.display())));
        }
    };
    eprintln!("tscmerge record: trace id {trace_id:#x}{}", if a.host { "" } else { " (give it to the host's --guest-name NAME=PID,trace-id=ID)" });
    let bufs = match todat::convert(&raw.path, &a.output, &ToDat { names, options, ..Default::default() }) {
        Ok(b) => b,
        Err(e) => {
            // Keep what was captured: it can be converted again or read as is.
            raw.keep = true;
            return Err(anyhow::Error::new(e).context(format!("converting {} into {} (the raw capture is kept there)", raw.path.display(), a.output.display())));
        }
    };
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    let pages: Vec<String> = bufs
        .iter()
        .map(|b| format!("{} {} pages", if b.name.is_empty() { "top" } else { &b.name }, b.pages))
        .collect();
    eprintln!("tscmerge record: wrote {} ({}; {})", a.output.display(), human(size), pages.join(", "));
    if a.raw.is_some() {
        eprintln!("tscmerge record: raw capture kept in {}", raw.path.display());
    }
    Ok(ExitCode::SUCCESS)
}
