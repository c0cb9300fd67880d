//! A merge, planned: the inputs opened, the offset timeline built from every
//! host buffer, each guest tied to a VM, every clock checked. The plan then
//! hands out the cursors the merge runs over.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::runs::{Lookahead, LookaheadStats, MAX_STORED_WINDOWS};
use crate::clock::{Tally, GuestCursor, OffsetTimeline, Scaling, TimeShiftUse, VcpuClock, VcpuTimeline};
use crate::merge;
use crate::source::pages::GuestClock;
use crate::source::{Input, InputKind, PageFeed};
use crate::time::VcpuId;
use crate::{Error, Result};

/// One guest as the user named it (`--guest NAME=FILE[,FILE...][,pid=PID]`).
#[derive(Clone, Debug, Default)]
pub struct GuestSpec {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// The VMM process (or one of its vCPU threads) this guest ran in.
    pub pid: Option<i32>,
    /// Guest CPU → vCPU, where not the identity.
    pub vcpu_map: BTreeMap<u32, u32>,
    /// Offsets assumed from the beginning of time, per vCPU.
    pub tsc_offsets: Vec<(u32, u64)>,
    pub scaling: Option<Scaling>,
}

impl GuestSpec {
    /// The guests `tscmerge synth` wrote into `dir` (`guest-vmN.EXT`, named
    /// `vmN`), pinned to their VMM processes when `pin`.
    pub fn from_synth(cfg: &crate::synth::SynthConfig, dir: &std::path::Path, ext: &str, pin: bool) -> Vec<GuestSpec> {
        (0..cfg.vms.len())
            .map(|vm| GuestSpec {
                name: format!("vm{vm}"),
                files: vec![dir.join(format!("guest-vm{vm}.{ext}"))],
                pid: pin.then(|| cfg.vmm_pid(vm)),
                ..Default::default()
            })
            .collect()
    }

    /// Parses `[NAME=]FILE[,FILE...][,pid=PID]`. Without a name (empty
    /// `name`), the plan names the guest: after the host's GUEST option for
    /// a trace-cmd guest, else after its first file.
    pub fn parse(s: &str) -> std::result::Result<GuestSpec, String> {
        let first = s.split(',').next().unwrap_or("");
        let named = first.contains('=') && !first.starts_with("pid=") && !std::path::Path::new(first).exists();
        let (name, rest) = if named { s.split_once('=').unwrap_or(("", s)) } else { ("", s) };
        if named && (name.is_empty() || name == "host") {
            return Err(format!("--guest {s:?}: the guest needs a name other than 'host'"));
        }
        let mut g = GuestSpec { name: name.to_string(), ..Default::default() };
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            match part.strip_prefix("pid=") {
                Some(_) if g.pid.is_some() => return Err(format!("--guest {s:?}: pid= given twice; a guest runs in one VMM process")),
                Some(pid) => g.pid = Some(pid.parse().map_err(|_| format!("--guest {s:?}: pid {pid:?} is not a number from 1 to {}", i32::MAX))?),
                None => g.files.push(PathBuf::from(part)),
            }
        }
        if g.files.is_empty() {
            return Err(format!("--guest {s:?}: no file given"));
        }
        Ok(g)
    }
}

/// Where the offsets come from (`--offsets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetSource {
    /// kvm_write_tsc_offset events.
    Tracepoint,
    /// KVM debugfs snapshots (tsc-offset).
    Debugfs,
    /// The tracepoint, unless debugfs snapshots contradict it.
    #[default]
    Auto,
}

#[derive(Clone, Debug, Default)]
pub struct MergeSpec {
    pub hosts: Vec<PathBuf>,
    pub guests: Vec<GuestSpec>,
    /// TSC scaling for every guest that has none of its own.
    pub scaling: Option<Scaling>,
    pub offsets: OffsetSource,
    /// debugfs snapshots given by the user (`--kvm-debugfs FILE`), in
    /// addition to those recorded in the host inputs.
    pub debugfs: Vec<crate::clock::DebugfsSnapshot>,
    /// Threads that may scan the hosts' CPUs for offset writes (0 or 1: one).
    pub threads: usize,
}

pub struct PlannedGuest {
    pub spec: GuestSpec,
    pub inputs: Vec<Input>,
    pub vm: usize,
    /// Why this VM (pinned, the only one, matched by run windows...), for the user.
    pub reason: String,
}

/// One candidate VM tried for a guest by [`Plan::new`]'s matching.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatchTry {
    pub vm: String,
    pub inside: u64,
    pub events: u64,
    /// Why the candidate could not be used at all (conversion failed).
    pub error: Option<String>,
}

impl MatchTry {
    pub fn fraction(&self) -> f64 {
        if self.events == 0 { 0.0 } else { self.inside as f64 / self.events as f64 }
    }
}

pub struct Plan {
    pub hosts: Vec<Input>,
    pub guests: Vec<PlannedGuest>,
    pub timeline: OffsetTimeline,
    /// For guests matched automatically: every VM tried, best first.
    pub matches: Vec<(String, Vec<MatchTry>)>,
    /// What the user should know about how the plan was made (one sentence each).
    pub notes: Vec<String>,
    /// The tracepoint's timeline, kept when another source was chosen.
    pub tracepoint_timeline: Option<OffsetTimeline>,
    pub debugfs: Vec<crate::clock::DebugfsSnapshot>,
    /// Each trace-cmd guest's TIME_SHIFT samples and what became of them.
    pub time_shifts: Vec<TimeShiftUse>,
    /// Guest events whose guest time fitted several offset periods, per
    /// (guest, vCPU), filled as the merge's cursors finish.
    pub ambiguity: Tally,
    /// What each run-window pass of the host did ([`crate::runs::Lookahead`]).
    pub lookahead: Arc<Mutex<Vec<LookaheadStats>>>,
}

/// What a guest recording says of itself as trace-cmd wrote it.
#[derive(Clone, Debug, Default)]
struct GuestIds {
    /// TRACEID: the host's GUEST option names the same.
    trace_id: Option<u64>,
    time_shift: Option<ftrace::tracedat::TimeShift>,
}

impl GuestIds {
    fn of(inputs: &[Input]) -> GuestIds {
        let mut ids = GuestIds::default();
        for d in inputs.iter().filter_map(Input::tracedat) {
            ids.trace_id = ids.trace_id.or(d.trace_id());
            if ids.time_shift.is_none() {
                ids.time_shift = d.time_shift().cloned();
            }
        }
        ids
    }
}

/// A name for a guest given without one: its file's stem.
fn name_from_file(g: &GuestSpec) -> String {
    let stem = g.files.first().and_then(|f| f.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if stem.is_empty() || stem == "host" { "guest".into() } else { stem }
}

static NO_TIMELINE: VcpuTimeline = VcpuTimeline { pid: None, periods: Vec::new(), scaling: None };

fn require_tsc(input: &Input) -> Result<()> {
    for b in input.buffers() {
        if !b.is_tsc() {
            return Err(Error::WrongClock { input: input.name(), buffer: b.display_name().to_string(), clock: b.clock.clone() });
        }
    }
    Ok(())
}

impl Plan {
    pub fn new(spec: MergeSpec) -> Result<Plan> {
        if spec.hosts.is_empty() {
            return Err(Error::Usage("no host input given".into()));
        }
        let mut hosts = spec.hosts.iter().map(|p| Input::open_threads(p, spec.threads)).collect::<Result<Vec<_>>>()?;
        // Moved, not cloned: at 10 GB of synth input a million writes are ~50 MB.
        let mut writes = Vec::new();
        for h in &mut hosts {
            let w = h.take_offset_writes();
            if writes.is_empty() {
                writes = w;
            } else {
                writes.extend(w);
            }
        }
        let mut timeline = OffsetTimeline::build(writes);
        // debugfs snapshots: the user's, and those `tscmerge record` stored.
        let mut debugfs = spec.debugfs.clone();
        for h in &hosts {
            if let Some(facts) = h.recorded_facts() {
                let text = facts.kvm_debugfs_text();
                debugfs.extend(crate::clock::parse_kvm_debugfs(&text).map_err(|e| Error::Usage(format!("{}: recorded KVM debugfs snapshots: {e}", h.name())))?);
            }
        }
        let mut notes = Vec::new();
        let mut tracepoint_timeline = None;
        match spec.offsets {
            OffsetSource::Tracepoint => {}
            OffsetSource::Debugfs => {
                if debugfs.is_empty() {
                    return Err(Error::Usage(
                        "--offsets debugfs: no KVM debugfs snapshots (record with tscmerge record, or pass --kvm-debugfs FILE)".into(),
                    ));
                }
                tracepoint_timeline = Some(timeline.clone());
                timeline = timeline.with_debugfs(&debugfs);
                notes.push("using offsets from KVM debugfs snapshots (--offsets debugfs)".into());
            }
            OffsetSource::Auto => {
                let dis = timeline.compare_debugfs(&debugfs);
                if let Some(d) = dis.first() {
                    notes.push(format!(
                        "offsets reported by kvm_write_tsc_offset were not applied on this host (debugfs tsc-offset = {} for vm{}/vcpu{} where the tracepoint says {}; {} of {} snapshots disagree): using the debugfs values",
                        d.debugfs as i64,
                        d.vm,
                        d.vcpu.0,
                        d.tracepoint as i64,
                        dis.len(),
                        debugfs.len()
                    ));
                    tracepoint_timeline = Some(timeline.clone());
                    timeline = timeline.with_debugfs(&debugfs);
                }
            }
        }
        if !spec.guests.is_empty() {
            for h in &hosts {
                require_tsc(h)?;
            }
        }
        // trace-cmd host-guest recordings: the host's GUEST options name
        // each guest's trace id and vCPU threads.
        let mut host_ids: Vec<u64> = Vec::new();
        for h in &hosts {
            if let Some(d) = h.tracedat() {
                host_ids.extend(d.trace_id());
                for g in d.guests() {
                    timeline.add_guest_option(g);
                }
                for o in d.options() {
                    if let ftrace::tracedat::TraceOption::Malformed { error, .. } = o {
                        notes.push(format!("{}: a GUEST option does not parse and is skipped, as trace-cmd skips it: {error}", h.name()));
                    }
                }
            }
        }
        let mut guests = Vec::new();
        let mut unresolved = Vec::new();
        let mut ids = Vec::new();
        for mut g in spec.guests {
            let inputs = g.files.iter().map(|p| Input::open(p)).collect::<Result<Vec<_>>>()?;
            for i in &inputs {
                require_tsc(i)?;
            }
            let gid = GuestIds::of(&inputs);
            let unnamed = g.name.is_empty();
            if unnamed {
                g.name = name_from_file(&g);
            }
            let (vm, reason) = match choose_vm(&mut timeline, &g, &gid)? {
                Some(choice) => choice,
                None => {
                    unresolved.push(guests.len());
                    (usize::MAX, String::new())
                }
            };
            if unnamed {
                if let Some(n) = timeline.vms.get(vm).and_then(|v| v.guest_option.as_ref()).map(|o| o.name.clone()).filter(|n| !n.is_empty() && n != "host") {
                    g.name = n;
                }
                let taken = |n: &str| guests.iter().any(|p: &PlannedGuest| p.spec.name == n);
                if taken(&g.name) {
                    let base = g.name.clone();
                    g.name = (2..).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or(base);
                }
            }
            guests.push(PlannedGuest { spec: g, inputs, vm, reason });
            ids.push(gid);
        }
        let mut plan = Plan { hosts, guests, timeline, matches: Vec::new(), notes, tracepoint_timeline, debugfs, time_shifts: Vec::new(), ambiguity: Tally::default(), lookahead: Default::default() };
        for gi in unresolved {
            plan.match_guest(gi)?;
        }
        for (gi, gid) in ids.iter().enumerate() {
            plan.check_guest_threads(gi)?;
            let g = &plan.guests[gi];
            let (vm, name) = (g.vm, g.spec.name.clone());
            if let Some(ts) = &gid.time_shift {
                let used = plan.timeline.apply_time_shift(vm, &name, ts).map_err(|e| Error::Usage(format!("guest {name}: {e}")))?;
                if !host_ids.is_empty() && !host_ids.contains(&ts.peer_trace_id) {
                    plan.notes.push(format!(
                        "guest {name}: its TIME_SHIFT was sampled against host trace id {:#x}, not the host inputs' ({}): the files are not from one trace-cmd session",
                        ts.peer_trace_id,
                        host_ids.iter().map(|i| format!("{i:#x}")).collect::<Vec<_>>().join(", ")
                    ));
                }
                plan.notes.extend(used.disagreement_note());
                plan.time_shifts.push(used);
            }
            let g = &plan.guests[gi];
            let (offsets, scaling) = (g.spec.tsc_offsets.clone(), g.spec.scaling.or(spec.scaling));
            for (vcpu, off) in offsets {
                if let Some(origin) = plan.timeline.assume_initial_offset(vm, VcpuId(vcpu), off) {
                    plan.notes.push(format!(
                        "guest {name}: --tsc-offset {vcpu}={} is not used: {} offsets already cover vCPU {vcpu} from the beginning, and they take precedence",
                        off as i64,
                        origin.name()
                    ));
                }
            }
            if let Some(s) = scaling {
                plan.timeline.set_scaling(vm, None, s);
            }
        }
        Ok(plan)
    }

    /// Events the host recordings hold of each thread a GUEST option names.
    fn guest_thread_events(&self) -> BTreeMap<i32, u64> {
        self.hosts.iter().flat_map(|h| h.guest_thread_events().iter().copied()).fold(BTreeMap::new(), |mut m, (p, n)| {
            *m.entry(p).or_default() += n;
            m
        })
    }

    /// A guest tied to a host's GUEST option: the vCPU threads the option
    /// names must appear in the host recording (else the map is of another
    /// recording, and no run window could ever be found): none seen is an
    /// error; some not seen is a note (a vCPU may have stayed halted the
    /// whole recording), and those vCPUs' threads come from the next
    /// source ([`crate::clock::Vm::vcpu_threads`]).
    fn check_guest_threads(&mut self, gi: usize) -> Result<()> {
        let g = &self.guests[gi];
        let Some(opt) = self.timeline.vms.get(g.vm).and_then(|v| v.guest_option.as_ref()) else { return Ok(()) };
        let seen = self.guest_thread_events();
        let absent: Vec<String> = opt.vcpu_pids.iter().filter(|(_, p)| seen.get(p).copied().unwrap_or(0) == 0).map(|(v, p)| format!("vCPU {v} → thread {p}")).collect();
        if !absent.is_empty() && absent.len() == opt.vcpu_pids.len() {
            return Err(Error::Usage(format!(
                "guest {}: the host's GUEST option names its vCPU threads ({}), but the host recording holds no event of any of them: the option describes another recording, or the host traced neither kvm_entry/kvm_exit nor anything else of those threads",
                g.spec.name,
                absent.join(", ")
            )));
        }
        if !absent.is_empty() {
            let note = format!(
                "guest {}: the host recording holds no event of {} of the {} vCPU threads its GUEST option names ({}): those vCPUs never ran while the host recorded, or the map is wrong; their threads are taken from the offset writes, else from a thread of no known VM whose kvm_entry names the vCPU, and check counts their guest events outside run windows if none fits",
                g.spec.name,
                absent.len(),
                opt.vcpu_pids.len(),
                absent.join(", ")
            );
            self.notes.push(note);
        }
        Ok(())
    }

    /// Ties guest `gi` to the VM whose run windows hold the largest share of
    /// its events, converted with that VM's offsets. Refuses when no VM's
    /// windows hold any, or when the best two are equally good.
    fn match_guest(&mut self, gi: usize) -> Result<()> {
        let name = self.guests[gi].spec.name.clone();
        let mut tries = Vec::new();
        for vm in 0..self.timeline.vms.len() {
            let vm_name = self.timeline.vms[vm].name();
            self.guests[gi].vm = vm;
            let cfg = self.check_config_for(&[gi]);
            let mut sink = crate::check::CheckSink::new(cfg, None);
            let run = self.cursors_for(&[gi]).and_then(|c| merge::merge(c, &mut sink));
            match run {
                Ok(_) => {
                    let r = sink.report();
                    tries.push(MatchTry { vm: vm_name, inside: r.inside, events: r.guest_events, error: None });
                }
                // A file that cannot be read is at fault whichever VM is
                // tried: its own error, naming it (a corrupt host file is
                // not a guest matching problem).
                Err(e @ (Error::Parse(_) | Error::Io { .. } | Error::Fs(_))) => return Err(e),
                Err(e) => tries.push(MatchTry { vm: vm_name, inside: 0, events: 0, error: Some(e.to_string()) }),
            }
        }
        let mut order: Vec<usize> = (0..tries.len()).collect();
        order.sort_by(|&a, &b| tries[b].fraction().total_cmp(&tries[a].fraction()));
        let zero_prev_breaks = self
            .timeline
            .anomalies
            .iter()
            .any(|a| matches!(a, crate::clock::Anomaly::PrevMismatch { prev: 0, .. }));
        let best = order.first().copied().filter(|&b| tries[b].inside > 0).ok_or_else(|| {
            let hint = if zero_prev_breaks {
                " The offset writes break their chain with prev=0, as on hosts that do not apply the tracepoint's offsets (PVM): try --offsets debugfs with the recorded KVM debugfs snapshots."
            } else {
                ""
            };
            Error::Usage(format!(
                "guest {name}: no VM of the host recording ({}) has run windows holding its events ({}); the host needs kvm_entry/kvm_exit (or kvm_emulate_insn) recorded, or pin the guest: --guest {name}=FILE,pid=PID ({}).{hint}",
                self.hosts.iter().map(|h| h.path.display().to_string()).collect::<Vec<_>>().join(", "),
                tries.iter().map(|t| format!("{}: {}", t.vm, t.error.as_deref().unwrap_or("0 inside"))).collect::<Vec<_>>().join("; "),
                describe_vms(&self.timeline)
            ))
        })?;
        if let Some(&second) = order.get(1) {
            if tries[second].fraction() == tries[best].fraction() {
                return Err(Error::Usage(format!(
                    "guest {name}: {} and {} hold its events equally well ({:.1}% inside run windows): pin it with --guest {name}=FILE,pid=PID",
                    tries[best].vm,
                    tries[second].vm,
                    100.0 * tries[best].fraction()
                )));
            }
        }
        let g = &mut self.guests[gi];
        g.vm = best;
        g.reason = match order.get(1) {
            Some(&s) => format!(
                "matched by run windows: {:.1}% of {} events inside; runner-up {} {:.1}%",
                100.0 * tries[best].fraction(),
                tries[best].events,
                tries[s].vm,
                100.0 * tries[s].fraction()
            ),
            None => format!("matched by run windows: {:.1}% of {} events inside", 100.0 * tries[best].fraction(), tries[best].events),
        };
        let sorted = order.into_iter().map(|i| tries[i].clone()).collect();
        self.matches.push((name, sorted));
        Ok(())
    }

    /// What the check needs to know of each guest machine's VM.
    pub fn check_config(&self) -> crate::check::CheckConfig {
        let all: Vec<usize> = (0..self.guests.len()).collect();
        self.check_config_for(&all)
    }

    fn check_config_for(&self, guests: &[usize]) -> crate::check::CheckConfig {
        let mut cfg = crate::check::CheckConfig { machines: self.machines(), keep_worst: 10, ..Default::default() };
        let seen = self.guest_thread_events();
        for &gi in guests {
            let g = &self.guests[gi];
            let Some(vm) = self.timeline.vms.get(g.vm) else { continue };
            let vcpu_pids = vm.vcpu_threads(|p| seen.get(&p).is_some_and(|&n| n > 0));
            let unresolved_vcpus = vm.guest_option.iter().flat_map(|o| o.vcpu_pids.keys()).filter(|v| !vcpu_pids.contains_key(v)).copied().collect();
            cfg.vms.insert(
                gi + 1,
                crate::check::VmThreads {
                    tgid: vm.tgid,
                    pids: vm.pids().collect(),
                    vcpu_of_cpu: g.spec.vcpu_map.clone(),
                    vcpu_pids,
                    unresolved_vcpus,
                },
            );
        }
        cfg
    }

    /// What `explain` needs: machine names, the vCPU threads of each guest
    /// machine (as the check knows them) with their guest CPUs, VMM
    /// processes, and names for VMs no guest recording was given for (a
    /// GUEST option's name, else the timeline's `vmN?`).
    pub fn explain_config(&self) -> crate::explain::ExplainConfig {
        let check = self.check_config();
        let mut cfg = crate::explain::ExplainConfig { machines: self.machines(), ..Default::default() };
        for (&m, vm) in &check.vms {
            if let Some(t) = vm.tgid {
                cfg.tgids.push((t, m));
            }
            let cpu_of: BTreeMap<u32, u32> = vm.vcpu_of_cpu.iter().map(|(&c, &v)| (v, c)).collect();
            for (&v, &(pid, _)) in &vm.vcpu_pids {
                cfg.vcpus.push(crate::explain::KnownVcpu { pid, machine: m, vcpu: v, guest_cpu: cpu_of.get(&v).copied().unwrap_or(v) });
            }
        }
        for (vi, vm) in self.timeline.vms.iter().enumerate() {
            if self.guests.iter().any(|g| g.vm == vi) {
                continue;
            }
            let name = match &vm.guest_option {
                Some(o) if !o.name.is_empty() => o.name.clone(),
                _ => format!("{}?", vm.name()),
            };
            let pids = vm.guest_option.iter().flat_map(|o| o.vcpu_pids.values().copied()).chain(vm.pids()).chain(vm.tgid);
            for pid in pids {
                if !cfg.labels.iter().any(|(p, _)| *p == pid) {
                    cfg.labels.push((pid, name.clone()));
                }
            }
        }
        cfg
    }

    /// The first host trace.dat's TSC2NSEC option (mult ≠ 0, the last such
    /// option of that file, as trace-input.c keeps it): how trace-cmd
    /// turns this host's TSC into nanoseconds. Host files that disagree are
    /// said in [`Plan::notes`]-style text by the caller.
    pub fn host_tsc2nsec(&self) -> Option<crate::sink::HostNs> {
        self.hosts
            .iter()
            .filter_map(Input::tracedat)
            .find_map(|d| d.tsc2nsec().filter(|&(mult, _, _)| mult != 0))
            .map(|(mult, shift, offset)| crate::sink::HostNs::Tsc2Nsec { mult, shift, offset })
    }

    /// `host`, then each guest's name: the machine column.
    /// The TSC frequency a host recording noted (`tscmerge record`), in kHz.
    pub fn recorded_tsc_khz(&self) -> Option<u64> {
        self.hosts.iter().find_map(|h| h.recorded_facts()?.tsc_hz).map(|hz| hz / 1000).filter(|&k| k > 0)
    }

    pub fn machines(&self) -> Vec<String> {
        std::iter::once("host".to_string()).chain(self.guests.iter().map(|g| g.spec.name.clone())).collect()
    }

    /// Cursors for the merge: host first, then guests in the order given,
    /// each guest CPU converted with its vCPU's offsets.
    pub fn cursors(&self) -> Result<Vec<merge::Input<'_>>> {
        let all: Vec<usize> = (0..self.guests.len()).collect();
        self.cursors_for(&all)
    }

    /// Cursors for the host and the guests listed (by index).
    pub fn cursors_for(&self, guests: &[usize]) -> Result<Vec<merge::Input<'_>>> {
        let evidence = self.run_windows(guests)?;
        let mut out = Vec::new();
        for h in &self.hosts {
            for b in 0..h.buffers().len() {
                for (_, cursor) in h.cursors(b, false)? {
                    out.push(merge::Input { machine: 0, cursor, meta: h.meta() });
                }
            }
        }
        for &gi in guests {
            let g = &self.guests[gi];
            for input in &g.inputs {
                for b in 0..input.buffers().len() {
                    for (k, (cpu, cursor)) in input.cursors(b, true)?.into_iter().enumerate() {
                        let (vcpu, tl) = self.vcpu_of(g, cpu.unwrap_or(0));
                        let clock = with_later_events(self.clock(&evidence, gi, vcpu, tl), input, b, move |i, _| i == k);
                        let cursor = GuestCursor::new(cursor, clock, &g.spec.name, vcpu)?.with_tally(self.ambiguity.clone());
                        out.push(merge::Input { machine: gi + 1, cursor: Box::new(cursor), meta: input.meta() });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The sources of one output CPU: every input CPU that maps to it, in the
/// merge's cursor order (which breaks ties the same way).
pub struct PageGroup<'a> {
    pub machine: usize,
    pub cpu: u32,
    /// Each with the index of the merge cursor it belongs to (`--stats`).
    pub sources: Vec<(usize, PageFeed<'a>)>,
}

impl Plan {
    /// The inputs by output (machine, CPU), for a writer that copies pages
    /// (`merge --format dat`), and the machine of each merge cursor the
    /// counts are kept for ([`cursors`](Self::cursors) numbers them the same
    /// way).
    pub fn page_groups(&self) -> Result<(Vec<PageGroup<'_>>, Vec<usize>)> {
        let mut groups: BTreeMap<(usize, u32), Vec<(usize, PageFeed<'_>)>> = BTreeMap::new();
        // Machine of each merge cursor; its length numbers the next one.
        let mut stats: Vec<usize> = Vec::new();
        for h in &self.hosts {
            for b in 0..h.buffers().len() {
                let feeds = h.page_sources(b, |_| None)?;
                // A text host is one merge cursor for all its CPUs.
                let one = h.kind == InputKind::Text;
                for (cpu, feed) in feeds {
                    groups.entry((0, cpu)).or_default().push((stats.len(), feed));
                    if !one {
                        stats.push(0);
                    }
                }
                if one {
                    stats.push(0);
                }
            }
        }
        let all: Vec<usize> = (0..self.guests.len()).collect();
        let evidence = self.run_windows(&all)?;
        for (gi, g) in self.guests.iter().enumerate() {
            let timeline = |cpu: u32| self.vcpu_of(g, cpu);
            for input in &g.inputs {
                for b in 0..input.buffers().len() {
                    let feeds = input.page_sources(b, |cpu| {
                        let (vcpu, tl) = timeline(cpu);
                        let clock = with_later_events(self.clock(&evidence, gi, vcpu, tl), input, b, move |_, c| c == Some(cpu));
                        Some(GuestClock { clock, guest: g.spec.name.clone(), vcpu, tally: self.ambiguity.clone(), counts: Default::default() })
                    })?;
                    for (cpu, feed) in feeds {
                        let feed = match feed {
                            PageFeed::Events(c) => {
                                let (vcpu, tl) = timeline(cpu);
                                let clock = with_later_events(self.clock(&evidence, gi, vcpu, tl), input, b, move |_, c| c == Some(cpu));
                                PageFeed::Events(Box::new(GuestCursor::new(c, clock, &g.spec.name, vcpu)?.with_tally(self.ambiguity.clone())))
                            }
                            f => f,
                        };
                        groups.entry((gi + 1, cpu)).or_default().push((stats.len(), feed));
                        stats.push(gi + 1);
                    }
                }
            }
        }
        let groups = groups.into_iter().map(|((machine, cpu), sources)| PageGroup { machine, cpu, sources }).collect();
        Ok((groups, stats))
    }

    /// A second pass over the host for the run windows of the vCPU threads
    /// whose offsets can leave guest time ambiguous (a fall), and which
    /// thread runs each such vCPU; `None` when no vCPU needs one.
    fn run_windows(&self, guests: &[usize]) -> Result<Option<RunWindows<'_>>> {
        let seen = self.guest_thread_events();
        let mut threads = BTreeMap::new();
        for &gi in guests {
            let g = &self.guests[gi];
            let Some(vm) = self.timeline.vms.get(g.vm) else { continue };
            let pids = vm.vcpu_threads(|p| seen.get(&p).is_some_and(|&n| n > 0));
            for (id, tl) in &vm.vcpus {
                if let (Some(&(pid, _)), true) = (pids.get(&id.0), tl.can_be_ambiguous()) {
                    threads.insert((gi, id.0), pid);
                }
            }
        }
        if threads.is_empty() {
            return Ok(None);
        }
        let (mut cursors, mut metas) = (Vec::new(), Vec::new());
        for h in &self.hosts {
            for b in 0..h.buffers().len() {
                for (_, c) in h.any_cursors(b, false)? {
                    cursors.push(c);
                    metas.push(h.meta());
                }
            }
        }
        let la = Lookahead::new(cursors, threads.values().copied(), MAX_STORED_WINDOWS).with_metas(metas).report_to(self.lookahead.clone());
        Ok(Some(RunWindows { la: Rc::new(RefCell::new(la)), threads }))
    }

    /// Guest `gi`'s vCPU `vcpu`'s clock, deciding by run windows where a
    /// pass reads them for its thread.
    fn clock<'a>(&'a self, rw: &Option<RunWindows<'a>>, gi: usize, vcpu: u32, tl: &'a VcpuTimeline) -> VcpuClock<'a> {
        let clock = VcpuClock::new(tl);
        match rw.as_ref().and_then(|rw| Some((rw, *rw.threads.get(&(gi, vcpu))?))) {
            Some((rw, pid)) => clock.with_evidence(Lookahead::evidence(&rw.la, pid)),
            None => clock,
        }
    }

    /// The vCPU a guest CPU runs on (`--vcpu-map`, else the same number) and
    /// its offset timeline (empty when the host never wrote its offset).
    fn vcpu_of(&self, g: &PlannedGuest, cpu: u32) -> (u32, &VcpuTimeline) {
        let vcpu = g.spec.vcpu_map.get(&cpu).copied().unwrap_or(cpu);
        (vcpu, self.timeline.vms[g.vm].vcpus.get(&VcpuId(vcpu)).unwrap_or(&NO_TIMELINE))
    }
}

/// `clock` asking, before it places an ambiguous event by the rule, the
/// guest CPU's later events (clock/walk.rs `Order`): read by a cursor of
/// their own over buffer `buffer` of `input`, the one `pick` chooses (by
/// position and CPU), opened at first need. A vCPU whose offsets never
/// repeat a guest time needs none.
fn with_later_events<'a>(clock: VcpuClock<'a>, input: &'a Input, buffer: usize, pick: impl Fn(usize, Option<u32>) -> bool + 'a) -> VcpuClock<'a> {
    if !clock.can_be_ambiguous() {
        return clock;
    }
    let mut cursor: Option<Box<dyn crate::event::Cursor + 'a>> = None;
    let mut opened = false;
    clock.with_order(Box::new(move || {
        if !opened {
            opened = true;
            // An input that opened once opens again; if not, nothing is
            // ruled out (the rule decides, counted as ambiguous).
            let all = input.cursors(buffer, true).ok()?;
            cursor = all.into_iter().enumerate().find(|(i, (cpu, _))| pick(*i, *cpu)).map(|(_, (_, c))| c);
        }
        loop {
            let c = cursor.as_mut()?;
            let ts = c.own_ts()?;
            // A read error ends the look ahead; the merge's own cursor
            // reports it when it gets there.
            if c.advance().is_err() {
                cursor = None;
            }
            if let Some(ts) = ts {
                return Some(ts);
            }
        }
    }))
}

/// The host's run windows read ahead of a merge, and the thread of each
/// (guest, vCPU) they are read for.
struct RunWindows<'a> {
    la: Rc<RefCell<Lookahead<'a>>>,
    threads: BTreeMap<(usize, u32), i32>,
}

/// Ties a guest to a VM of the timeline when that needs no evidence; `None`
/// when several VMs could be it (the caller matches by run windows).
fn choose_vm(tl: &mut OffsetTimeline, g: &GuestSpec, ids: &GuestIds) -> Result<Option<(usize, String)>> {
    if let Some(pid) = g.pid {
        return match tl.vm_of_pid(pid) {
            Some(vm) => Ok(Some((vm, format!("pinned by pid={pid}")))),
            None => Err(Error::Usage(format!(
                "guest {}: no VM has pid {pid}: {}",
                g.name,
                describe_vms(tl)
            ))),
        };
    }
    // A trace-cmd guest: its TRACEID is the trace id of one GUEST option.
    let options: Vec<(usize, u64)> = tl.vms.iter().filter_map(|v| Some((v.index, v.guest_option.as_ref()?.trace_id))).collect();
    if let (Some(id), false) = (ids.trace_id, options.is_empty()) {
        return match options.iter().find(|&&(_, t)| t == id) {
            Some(&(vm, _)) => Ok(Some((vm, format!("its trace id {id:#x} is the one the host's GUEST option names")))),
            None => Err(Error::Usage(format!(
                "guest {}: its trace id {id:#x} (TRACEID) matches no GUEST option of the host inputs, which name {}: the guest was not recorded with this host; if it was, pin it with --guest {}=FILE,pid=VCPU_THREAD",
                g.name,
                options.iter().map(|(_, t)| format!("{t:#x}")).collect::<Vec<_>>().join(", "),
                g.name
            ))),
        };
    }
    if tl.vms.is_empty() && (!g.tsc_offsets.is_empty() || ids.time_shift.is_some()) {
        let vm = tl.add_empty_vm();
        let why = if ids.time_shift.is_some() { "offsets from its TIME_SHIFT option" } else { "offsets given with --tsc-offset" };
        return Ok(Some((vm, why.into())));
    }
    match tl.vms.len() {
        0 => Err(Error::Usage(format!(
            "guest {}: the host inputs hold no kvm_write_tsc_offset event: record kvm:kvm_write_tsc_offset in its own tracefs instance (x86-tsc) before the guest boots, or pass --tsc-offset VCPU=OFFSET",
            g.name
        ))),
        1 => Ok(Some((0, "the only VM in the host recording".into()))),
        _ => Ok(None),
    }
}

pub fn describe_vms(tl: &OffsetTimeline) -> String {
    tl.vms
        .iter()
        .map(|vm| {
            let pids: Vec<String> = vm.pids().map(|p| p.to_string()).collect();
            match vm.tgid {
                Some(t) => format!("{}: pid {t}, {} vCPUs", vm.name(), vm.vcpus.len()),
                None => format!("{}: {} vCPUs (offsets written by threads {})", vm.name(), vm.vcpus.len(), pids.join(" ")),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Plan {
    /// Plain sentences for the usual failures, from the timeline and, when a
    /// check ran, its report.
    pub fn diagnose(&self, r: Option<&crate::check::CheckReport>) -> Vec<String> {
        use crate::clock::Anomaly;
        let mut out = Vec::new();
        let tl = self.tracepoint_timeline.as_ref().unwrap_or(&self.timeline);
        let breaks: Vec<&Anomaly> = tl.anomalies.iter().filter(|a| matches!(a, Anomaly::PrevMismatch { .. })).collect();
        let zero_prev = breaks.iter().filter(|a| matches!(a, Anomaly::PrevMismatch { prev: 0, .. })).count();
        if !breaks.is_empty() && zero_prev == breaks.len() {
            out.push(format!(
                "{} offset writes report prev=0 although the vCPU's previous write set another offset: the host reset the offset without the event, as a host that does not apply the tracepoint's offsets does (PVM); compare with KVM debugfs (tscmerge offsets --kvm-debugfs) and merge with --offsets auto",
                breaks.len()
            ));
        } else if !breaks.is_empty() {
            out.push(format!(
                "{} offset writes do not continue the previous one (prev != the previous next): writes were lost, most likely overwritten in a busy buffer; record kvm:kvm_write_tsc_offset in its own instance, and check the periods around them",
                breaks.len() - zero_prev
            ));
        }
        let late = tl.anomalies.iter().filter(|a| matches!(a, Anomaly::NoCreation { .. })).count();
        if late > 0 {
            out.push(format!(
                "{late} vCPUs have no creation write (their first write has prev != 0): the offset instance was started after the guest was created; events before the first write cannot be placed (record the instance before the guest boots, or pass --tsc-offset)"
            ));
        }
        let given: Vec<usize> = self.guests.iter().filter(|g| g.spec.scaling.is_some()).map(|g| g.vm).collect();
        for (vm, ratio) in self.timeline.implied_scaling() {
            let used = self.timeline.vms[vm].vcpus.values().any(|v| v.scaling.is_some()) || given.contains(&vm);
            if !used {
                out.push(format!(
                    "vm{vm}'s creation offsets imply a guest TSC running at {ratio:.4}x the host's: TSC scaling is in use but was not given; pass --tsc-scaling RATIO:FRAC_BITS from debugfs kvm/*/vcpu*/tsc-scaling-ratio and -frac-bits"
                ));
            }
        }
        for g in &self.guests {
            let writes: usize = g.inputs.iter().map(|i| i.offset_writes().len()).sum();
            if writes > 0 {
                out.push(format!(
                    "guest {} recorded {writes} kvm_write_tsc_offset events of its own: it runs nested (L2) guests, whose offsets only its trace holds (the host's tracepoint records L1 offsets); merge an L2 guest with this guest's trace as the host",
                    g.spec.name
                ));
            }
        }
        if let Some(r) = r {
            // The vCPU a host thread runs: kvm_entry says so; else a thread
            // that wrote one vCPU's offsets (several: a creator thread, unknown).
            let mut vcpu_of: BTreeMap<(usize, i32), Option<u32>> = BTreeMap::new();
            for (vi, vm) in self.timeline.vms.iter().enumerate() {
                for (v, t) in &vm.vcpus {
                    for pid in t.periods.iter().filter_map(|p| p.pid) {
                        let e = vcpu_of.entry((vi, pid)).or_insert(Some(v.0));
                        if *e != Some(v.0) {
                            *e = None;
                        }
                    }
                }
            }
            let thread_vcpu = |g: &PlannedGuest, machine: usize, pid: i32| match r.thread_vcpu.get(&pid) {
                Some(&(m, v)) if m == machine => Some(v),
                _ => vcpu_of.get(&(g.vm, pid)).copied().flatten(),
            };
            for c in &r.cpus {
                let Some(gi) = self.guests.iter().position(|g| g.spec.name == c.machine) else { continue };
                let g = &self.guests[gi];
                let mapped = g.spec.vcpu_map.get(&c.cpu).copied().unwrap_or(c.cpu);
                // Most events miss their vCPU's windows but fit another thread's.
                let Some((&other, &n)) = c.fits_other.iter().max_by_key(|(_, n)| **n) else { continue };
                if c.inside * 2 >= c.events || n * 2 < c.events {
                    continue;
                }
                if let Some(v) = thread_vcpu(g, gi + 1, other).filter(|&v| v != mapped) {
                    out.push(format!(
                        "guest {} CPU {}: {n} of its {} events fit the run windows of vCPU {v} (thread {other}), not of vCPU {mapped}: the CPU-to-vCPU map is not the identity; pass --vcpu-map {}:{}={v}",
                        c.machine, c.cpu, c.events, c.machine, c.cpu
                    ));
                }
            }
            if r.host_windows > 0 && r.guest_events > 0 && r.fraction_inside() < 0.5 {
                out.push(format!(
                    "most guest events ({:.1}%) fall outside their vCPU's run windows: the offsets do not match the guest's clock (a wrong VM; offsets not applied by this host; TSC scaling not given; or a nested (L2) guest, whose offsets are written by L1's KVM and need L1's trace as the host)",
                    100.0 * (1.0 - r.fraction_inside())
                ));
            }
        }
        out
    }
}
