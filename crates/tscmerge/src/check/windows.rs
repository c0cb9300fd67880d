use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::event::{EventView, Payload};
use crate::merge::Sink;
use crate::Result;

/// What opened a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WindowKind {
    /// kvm_entry … next event of the thread (kvm_exit).
    Entry,
    /// kvm_emulate_insn … next event of the thread.
    Emulation,
}

/// An instruction that reads the TSC, as emulated on the host and as named
/// by the guest's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TscRead {
    /// `rdtsc` (0f 31).
    Rdtsc,
    /// `rdmsr` (0f 32) of IA32_TSC: KVM's emulator fires `kvm_msr` right
    /// after reading the TSC (arch/x86/kvm/x86.c
    /// `emulator_get_msr_with_filter`), so that event closes the window a
    /// few hundred cycles after the read instead of at the next instruction.
    Rdmsr,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    start: u64,
    /// The window is the emulation of an instruction that reads the TSC.
    reads: Option<TscRead>,
}

#[derive(Clone, Debug, Default)]
struct Thread {
    open: Option<Open>,
    /// End of the last closed window.
    last_close: Option<u64>,
    windows: u64,
}

/// One guest event outside every window of its thread.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub machine: String,
    pub cpu: u32,
    pub ts: u64,
    pub guest_ts: Option<u64>,
    pub event: String,
    /// Cycles to the nearest window edge seen so far (the end of the
    /// thread's last window, or the start of the next when it came soon).
    pub distance: Option<u64>,
    /// The host thread's last event before it, as `name@ts`.
    pub host_before: Option<String>,
}

/// Which host threads may run a guest machine's CPUs.
#[derive(Clone, Debug, Default)]
pub struct VmThreads {
    /// The VMM process: its threads are candidates.
    pub tgid: Option<i32>,
    /// Threads known to belong to the VM (offset writers).
    pub pids: Vec<i32>,
    /// Guest CPU → vCPU where not the identity.
    pub vcpu_of_cpu: BTreeMap<u32, u32>,
}

/// What to check and how to map guest CPUs to host threads.
///
/// A guest CPU's thread is known exactly when the host traced `kvm_entry`
/// (its `vcpu` field names the vCPU a thread runs) or when `threads` pins it.
/// Otherwise every candidate thread of its VM is tried, and the thread whose
/// windows held most of its events is reported as inferred; run the check a
/// second time with that pin to measure it strictly.
#[derive(Clone, Debug, Default)]
pub struct CheckConfig {
    /// (machine, guest CPU) → host thread pins.
    pub threads: HashMap<(usize, u32), i32>,
    /// Machine → its VM's threads.
    pub vms: HashMap<usize, VmThreads>,
    /// Machine names, for messages.
    pub machines: Vec<String>,
    /// How many violations to keep for the report.
    pub keep_worst: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GuestCpuReport {
    pub machine: String,
    pub cpu: u32,
    pub thread: Option<i32>,
    pub inferred: bool,
    pub events: u64,
    pub inside: u64,
    /// Per candidate thread, how many events its windows held.
    pub inside_by_thread: BTreeMap<i32, u64>,
    /// Events outside their known thread's windows, by the other thread of
    /// the VM whose window held them (evidence of a wrong CPU-to-vCPU map).
    pub fits_other: BTreeMap<i32, u64>,
    /// Margins of inside events: (event − window start), cycles.
    pub after_start: Vec<u64>,
    /// (window end − event), cycles, filled as windows close.
    pub before_end: Vec<u64>,
    pub outside_max: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub guest_events: u64,
    pub inside: u64,
    pub host_windows: u64,
    pub window_kinds: Vec<WindowKind>,
    pub cpus: Vec<GuestCpuReport>,
    pub worst: Vec<Violation>,
    /// Largest distance outside a window, cycles.
    pub max_distance: u64,
    /// Guest events whose converted time went backward on their CPU.
    pub non_monotonic: u64,
    /// Host thread → (machine, vCPU), from kvm_entry's vcpu field.
    pub thread_vcpu: BTreeMap<i32, (usize, u32)>,
}

impl CheckReport {
    pub fn violations(&self) -> u64 {
        self.guest_events - self.inside
    }
    pub fn fraction_inside(&self) -> f64 {
        if self.guest_events == 0 { 0.0 } else { self.inside as f64 / self.guest_events as f64 }
    }
}

/// Cap on the margin samples kept per guest CPU (for distributions).
const MAX_SAMPLES: usize = 1 << 16;

struct CpuState {
    report: GuestCpuReport,
    last_ts: Option<u64>,
    /// Inside events waiting for their window to close: (thread, ts).
    pending: Vec<(i32, u64)>,
}

/// The check as a sink; forwards every event to `inner` when given.
pub struct CheckSink<'s> {
    cfg: CheckConfig,
    inner: Option<&'s mut dyn Sink>,
    threads: HashMap<i32, Thread>,
    /// Host thread → the guest machine whose VM it belongs to.
    thread_machine: HashMap<i32, Option<usize>>,
    /// Machine → candidate threads seen so far.
    candidates: HashMap<usize, Vec<i32>>,
    /// (machine, vCPU) → thread, from kvm_entry's vcpu field.
    vcpu_thread: HashMap<(usize, u32), i32>,
    last_host: HashMap<i32, (String, u64)>,
    scratch: Vec<u8>,
    cpus: BTreeMap<(usize, u32), CpuState>,
    report: CheckReport,
    seq: u64,
}

impl<'s> CheckSink<'s> {
    pub fn new(cfg: CheckConfig, inner: Option<&'s mut dyn Sink>) -> Self {
        CheckSink {
            cfg,
            inner,
            threads: HashMap::new(),
            thread_machine: HashMap::new(),
            candidates: HashMap::new(),
            vcpu_thread: HashMap::new(),
            last_host: HashMap::new(),
            scratch: Vec::new(),
            cpus: BTreeMap::new(),
            report: CheckReport::default(),
            seq: 0,
        }
    }

    /// The guest machine a host thread serves, decided at its first event.
    fn machine_of(&mut self, pid: i32, tgid: Option<i32>) -> Option<usize> {
        if let Some(&m) = self.thread_machine.get(&pid) {
            return m;
        }
        let m = self
            .cfg
            .vms
            .iter()
            .find(|(_, vm)| vm.pids.contains(&pid) || (tgid.is_some() && vm.tgid == tgid))
            .map(|(&m, _)| m);
        self.thread_machine.insert(pid, m);
        if let Some(m) = m {
            self.candidates.entry(m).or_default().push(pid);
        }
        m
    }

    fn host_event(&mut self, pid: i32, tgid: Option<i32>, name: &str, vcpu: Option<u32>, reads: Option<TscRead>, ts: u64) {
        let machine = self.machine_of(pid, tgid);
        if let (Some(m), Some(v)) = (machine, vcpu) {
            self.vcpu_thread.insert((m, v), pid);
        }
        let t = self.threads.entry(pid).or_default();
        if let Some(open) = t.open.take() {
            t.last_close = Some(ts);
            // Inside events of this thread now know their window's end.
            let _ = open.start;
            for st in self.cpus.values_mut() {
                st.pending.retain(|&(thread, ets)| {
                    if thread != pid {
                        return true;
                    }
                    if st.report.before_end.len() < MAX_SAMPLES {
                        st.report.before_end.push(ts.saturating_sub(ets));
                    }
                    false
                });
            }
        }
        let kind = match name {
            "kvm_entry" => Some(WindowKind::Entry),
            "kvm_emulate_insn" => Some(WindowKind::Emulation),
            _ => None,
        };
        if let Some(kind) = kind {
            t.open = Some(Open { start: ts, reads });
            t.windows += 1;
            self.report.host_windows += 1;
            if !self.report.window_kinds.contains(&kind) {
                self.report.window_kinds.push(kind);
            }
        }
        if self.cfg.keep_worst > 0 {
            let e = self.last_host.entry(pid).or_insert_with(|| (String::new(), 0));
            e.0.clear();
            e.0.push_str(name);
            e.1 = ts;
        }
    }

    fn guest_event(&mut self, machine: usize, cpu: u32, ts: u64, guest_ts: Option<u64>, name: &str, tsc_read: Option<TscRead>) {
        let vcpu = self.cfg.vms.get(&machine).and_then(|vm| vm.vcpu_of_cpu.get(&cpu).copied()).unwrap_or(cpu);
        let known = self.cfg.threads.get(&(machine, cpu)).or_else(|| self.vcpu_thread.get(&(machine, vcpu))).copied();
        let cands: Vec<i32> = match known {
            Some(t) => vec![t],
            None => self.candidates.get(&machine).cloned().unwrap_or_default(),
        };
        let mname = self.cfg.machines.get(machine).cloned().unwrap_or_default();
        let st = self.cpus.entry((machine, cpu)).or_insert_with(|| CpuState {
            report: GuestCpuReport { machine: mname.clone(), cpu, ..Default::default() },
            last_ts: None,
            pending: Vec::new(),
        });
        if known.is_some() {
            st.report.thread = known;
        }
        if st.last_ts.is_some_and(|l| ts < l) {
            self.report.non_monotonic += 1;
        }
        st.last_ts = Some(ts);
        st.report.events += 1;
        self.report.guest_events += 1;
        let mut inside_any = false;
        let mut nearest: Option<u64> = None;
        // Margins are measured when exactly one candidate's window holds the
        // event (always so when the thread is known).
        // A TSC read fits only the emulation of the same reading
        // instruction on its thread.
        let fits = |o: &Open| tsc_read.is_none() || o.reads == tsc_read;
        let holders = cands.iter().filter(|p| self.threads.get(p).is_some_and(|t| t.open.as_ref().is_some_and(fits))).count();
        for &pid in &cands {
            let Some(t) = self.threads.get(&pid) else { continue };
            match t.open.filter(fits) {
                Some(open) => {
                    inside_any = true;
                    *st.report.inside_by_thread.entry(pid).or_default() += 1;
                    if holders == 1 {
                        if st.report.after_start.len() < MAX_SAMPLES {
                            st.report.after_start.push(ts.saturating_sub(open.start));
                        }
                        st.pending.push((pid, ts));
                    }
                }
                None => {
                    if let Some(c) = t.last_close {
                        let d = ts.saturating_sub(c);
                        nearest = Some(nearest.map_or(d, |n| n.min(d)));
                    }
                }
            }
        }
        if inside_any {
            st.report.inside += 1;
            self.report.inside += 1;
            return;
        }
        if known.is_some() {
            for &pid in self.candidates.get(&machine).map(Vec::as_slice).unwrap_or(&[]) {
                if self.threads.get(&pid).is_some_and(|t| t.open.as_ref().is_some_and(fits)) {
                    *st.report.fits_other.entry(pid).or_default() += 1;
                }
            }
        }
        let d = nearest.unwrap_or(u64::MAX);
        st.report.outside_max = st.report.outside_max.max(d);
        if d != u64::MAX {
            self.report.max_distance = self.report.max_distance.max(d);
        }
        if self.cfg.keep_worst > 0 {
            let host_before = cands.first().and_then(|p| self.last_host.get(p)).map(|(n, t)| format!("{n}@{t}"));
            let v = Violation {
                machine: mname,
                cpu,
                ts,
                guest_ts,
                event: name.to_string(),
                distance: (d != u64::MAX).then_some(d),
                host_before,
            };
            let worst = &mut self.report.worst;
            worst.push(v);
            worst.sort_by_key(|v| std::cmp::Reverse(v.distance.unwrap_or(u64::MAX)));
            worst.truncate(self.cfg.keep_worst);
        }
    }

    /// Ends the check: infers threads where unknown and returns the report.
    pub fn report(mut self) -> CheckReport {
        for (&(m, v), &pid) in &self.vcpu_thread {
            self.report.thread_vcpu.insert(pid, (m, v));
        }
        for (_, st) in std::mem::take(&mut self.cpus) {
            let mut r = st.report;
            if r.thread.is_none() {
                if let Some((&pid, _)) = r.inside_by_thread.iter().max_by_key(|(_, n)| **n) {
                    r.thread = Some(pid);
                    r.inferred = true;
                }
            }
            self.report.cpus.push(r);
        }
        self.report
    }
}

impl Sink for CheckSink<'_> {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        self.seq += 1;
        if let Payload::Event(r) = ev.payload {
            if machine == 0 {
                let vcpu = if r.name == "kvm_entry" { entry_vcpu(&r.body) } else { None };
                let reads = if r.name == "kvm_emulate_insn" { emulated_tsc_read(&r.body) } else { None };
                self.host_event(r.pid, r.tgid, r.name, vcpu, reads, ev.ts);
            } else {
                let tsc_read = if matches!(r.name, "tracing_mark_write" | "print") { tsc_read_of(&r.body, &mut self.scratch) } else { None };
                self.guest_event(machine, ev.cpu, ev.ts, ev.orig_ts, r.name, tsc_read);
            }
        }
        match self.inner.as_deref_mut() {
            Some(s) => s.event(machine, ev),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self.inner.as_deref_mut() {
            Some(s) => s.finish(),
            None => Ok(()),
        }
    }
}

/// The `vcpu` of a kvm_entry: field `vcpu_id` of a binary record, or the
/// `vcpu N,` its print format (arch/x86/kvm/trace.h) puts first in text.
fn entry_vcpu(body: &crate::event::Body<'_>) -> Option<u32> {
    match *body {
        crate::event::Body::Text(_) | crate::event::Body::Rendered(_) => {
            body.text()?.strip_prefix("vcpu ")?.split([',', ' ']).next()?.parse().ok()
        }
        crate::event::Body::Raw { format, data, ctx } => match format.field("vcpu_id")?.value(data, ctx.endian)? {
            ftrace::format::FieldValue::Unsigned(v) => u32::try_from(v).ok(),
            ftrace::format::FieldValue::Signed(v) => u32::try_from(v).ok(),
            _ => None,
        },
    }
}

/// Which TSC-reading instruction a kvm_emulate_insn emulated, if any:
/// `rdtsc` (0f 31) or `rdmsr` (0f 32; the micro-VM's only `rdmsr` reads
/// IA32_TSC). Field `insn` of a binary record, or the hex bytes its print
/// format puts after `csbase:rip:` in text (`0:1004:0f 31 (real)`).
fn emulated_tsc_read(body: &crate::event::Body<'_>) -> Option<TscRead> {
    let (rdtsc, rdmsr) = match *body {
        crate::event::Body::Text(_) | crate::event::Body::Rendered(_) => {
            let b = body.text()?.splitn(3, ':').nth(2)?;
            (b.starts_with("0f 31"), b.starts_with("0f 32"))
        }
        crate::event::Body::Raw { format, data, .. } => {
            let b = format.field("insn").and_then(|f| f.raw(data))?;
            (b.starts_with(&[0x0f, 0x31]), b.starts_with(&[0x0f, 0x32]))
        }
    };
    match (rdtsc, rdmsr) {
        (true, _) => Some(TscRead::Rdtsc),
        (_, true) => Some(TscRead::Rdmsr),
        _ => None,
    }
}

/// Whether a guest marker reports a TSC read, and by which instruction: the
/// micro-VM monitor writes `rdtsc seq=N next=INSN` (or `rdmsr seq=N …` for
/// `rdmsr` of IA32_TSC) for each value its guest read
/// (crates/microvm/src/guest_trace.rs). Such an event is checked against the
/// emulation window of that same instruction, not any window of its thread.
fn tsc_read_of(body: &crate::event::Body<'_>, scratch: &mut Vec<u8>) -> Option<TscRead> {
    scratch.clear();
    body.render(ftrace::printfmt::Style::Kernel, scratch);
    let text = scratch.as_slice();
    let kind = |t: &[u8]| {
        if t.starts_with(b"rdtsc seq=") {
            Some(TscRead::Rdtsc)
        } else if t.starts_with(b"rdmsr seq=") {
            Some(TscRead::Rdmsr)
        } else {
            None
        }
    };
    // tracefs text is the marker text itself; a print event renders as `ip: text`.
    kind(text).or_else(|| {
        let i = text.windows(2).position(|w| w == b": ")?;
        kind(&text[i + 2..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Record};

    fn ev<'a>(ts: u64, pid: i32, name: &'a str, text: &'a str) -> EventView<'a> {
        let payload = Payload::Event(Record { pid, tgid: None, comm: "x", system: "kvm", name, body: Body::Text(text) });
        EventView { ts, orig_ts: None, cpu: 0, payload }
    }

    /// Host thread 9 emulates rdtsc at 100, rdmsr at 200 (kvm_msr at 210),
    /// then an out at 300; the guest (machine 1, CPU 0 pinned to 9) reports
    /// `reads` as (host ts, marker).
    fn run(reads: &[(u64, &str)]) -> CheckReport {
        let cfg = CheckConfig { threads: HashMap::from([((1, 0), 9)]), machines: vec!["host".into(), "g".into()], ..Default::default() };
        let mut sink = CheckSink::new(cfg, None);
        let host = [
            (100, "kvm_emulate_insn", "0:1018:0f 31 (real)"),
            (150, "kvm_emulate_insn", "0:101a:66 e7 e4 (real)"),
            (200, "kvm_emulate_insn", "0:1018:0f 32 (real)"),
            (210, "kvm_msr", "msr_read 10 = 0xcd"),
            (300, "kvm_emulate_insn", "0:101a:66 e7 e4 (real)"),
        ];
        let mut all: Vec<(u64, usize, &str, &str)> = host.iter().map(|&(t, n, b)| (t, 0, n, b)).collect();
        all.extend(reads.iter().map(|&(t, m)| (t, 1, "tracing_mark_write", m)));
        all.sort_by_key(|e| (e.0, e.1)); // host events win ties, as in the merge
        for (t, m, n, b) in all {
            sink.event(m, &ev(t, if m == 0 { 9 } else { 1 }, n, b)).unwrap();
        }
        sink.report()
    }

    #[test]
    fn a_read_fits_only_its_own_instruction() {
        let r = run(&[(120, "rdtsc seq=0 next=out"), (205, "rdmsr seq=1 next=out")]);
        assert_eq!((r.guest_events, r.inside), (2, 2));
        assert_eq!(r.cpus[0].after_start, vec![20, 5]);
        assert_eq!(r.cpus[0].before_end, vec![30, 5], "the rdmsr window ends at kvm_msr");
        // An rdmsr read in the rdtsc window, an rdtsc read in the rdmsr
        // window, an rdmsr read after its kvm_msr: all outside.
        let r = run(&[(120, "rdmsr seq=0 next=out"), (205, "rdtsc seq=1 next=out"), (211, "rdmsr seq=2 next=out")]);
        assert_eq!(r.inside, 0);
        // Other guest events fit any window of the thread; kvm_msr opens none.
        let r = run(&[(120, "x"), (160, "y"), (250, "z"), (305, "w")]);
        assert_eq!(r.inside, 3);
    }

    #[test]
    fn recognises_reads() {
        let mut s = Vec::new();
        assert_eq!(tsc_read_of(&Body::Text("rdmsr seq=3 next=hlt"), &mut s), Some(TscRead::Rdmsr));
        assert_eq!(tsc_read_of(&Body::Text("tracing_mark_write: rdtsc seq=3 next=out"), &mut s), Some(TscRead::Rdtsc));
        assert_eq!(tsc_read_of(&Body::Text("rdmsrseq=3"), &mut s), None);
        assert_eq!(emulated_tsc_read(&Body::Text("0:1018:0f 32 (real)")), Some(TscRead::Rdmsr));
        assert_eq!(emulated_tsc_read(&Body::Text("0:1018:0f 30 (real)")), None);
    }
}
