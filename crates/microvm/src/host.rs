//! Host-side ground truth: record a micro-VM run in a private tracefs instance and check that
//! every guest read lies inside the host events that bracket it.
//!
//! On this machine every real-mode guest instruction goes through KVM's emulator, which fires
//! `kvm_emulate_insn` (arch/x86/kvm/trace.h) in the vCPU thread before emulating it. So a read's
//! host window is [the `kvm_emulate_insn` of its `rdtsc`, the thread's next host event]: the
//! guest value, converted to host time, must fall inside. The conversion uses the debugfs
//! `tsc-offset` the VMM read (`host = guest - offset`; before the guest's wrmsr the value read
//! at vCPU creation, after it the value read at halt), so the same check holds where offsets
//! are applied (VMX/SVM) and where they are not (PVM: debugfs says 0).
//!
//! Measured here (6.18 PVM, 2 VMs × 2 vCPUs × 500 reads, wrmsr IA32_TSC midway): all 2000
//! reads inside their window; guest − start min/median/max 546/702/4680 cycles, end − guest
//! 1352/1716/113126 (the tail is host preemption). The window's end event is always the
//! `kvm_emulate_insn` of the next instruction.
//!
//! With `rdmsr` of IA32_TSC as the read ([`crate::ReadInsn::Rdmsr`]) the window ends at the
//! `kvm_msr` that `emulator_get_msr_with_filter` (arch/x86/kvm/x86.c) fires right after reading
//! the TSC, and that event carries the value the guest got. Measured (same setup, 2000 reads):
//! guest − start 650/832/3848, end − guest 182/286/2912; every `kvm_msr` value equals the
//! guest's edx:eax, which is the raw host TSC as with `rdtsc` (PVM; before and after the
//! guest's wrmsr).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::program::TSC_PORT;
use crate::program::ReadInsn;
use crate::vmm::{Insn, VmReport};

/// tracefs mount point.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// The host events a ground-truth recording needs (`system/event`).
pub const HOST_EVENTS: &[&str] = &[
    "kvm/kvm_write_tsc_offset",
    "kvm/kvm_emulate_insn",
    "kvm/kvm_pio",
    "kvm/kvm_msr",
    "kvm/kvm_cpuid",
    "kvm/kvm_userspace_exit",
];

/// A tracefs instance of our own (`instances/<name>`), removed on drop. The top-level buffer
/// is shared by everyone on the machine and is never touched.
#[derive(Debug)]
pub struct TraceInstance {
    dir: PathBuf,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl TraceInstance {
    /// Creates `instances/<name>` with the x86-tsc clock, `buffer_kb` per CPU and `events`
    /// enabled, and starts it. A stale instance of the same name (left by a killed run) is
    /// removed first.
    pub fn create(name: &str, events: &[&str], buffer_kb: u32) -> Result<Self> {
        let dir = Path::new(TRACEFS).join("instances").join(name);
        if dir.exists() {
            fs::remove_dir(&dir).map_err(io(format!("rmdir stale {}", dir.display())))?;
        }
        fs::create_dir(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
        let inst = TraceInstance { dir };
        inst.write("tracing_on", "0")?;
        inst.write("trace_clock", "x86-tsc")?;
        inst.write("buffer_size_kb", &buffer_kb.to_string())?;
        for e in events {
            inst.write(&format!("events/{e}/enable"), "1")?;
        }
        inst.write("tracing_on", "1")?;
        Ok(inst)
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let p = self.dir.join(file);
        fs::write(&p, value).map_err(io(format!("write {value:?} to {}", p.display())))
    }

    /// Stops recording.
    pub fn stop(&self) -> Result<()> {
        self.write("tracing_on", "0")
    }

    /// `cat trace` of the instance.
    pub fn read_trace(&self) -> Result<String> {
        let p = self.dir.join("trace");
        fs::read_to_string(&p).map_err(io(format!("read {}", p.display())))
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One line of tracefs text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    pub tid: i32,
    pub cpu: u32,
    /// Raw timestamp (x86-tsc: host TSC cycles).
    pub ts: u64,
    /// Event name, e.g. `kvm_emulate_insn`.
    pub name: String,
    /// Everything after `name: `.
    pub fields: String,
}

/// Parses tracefs `trace` text with a counter clock (integer timestamps). `#` lines are the
/// header; a line that does not parse is returned by number in the second list.
pub fn parse_trace_text(text: &str) -> (Vec<HostEvent>, Vec<usize>) {
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(e) => events.push(e),
            None => bad.push(n + 1),
        }
    }
    (events, bad)
}

/// `<comm>-<pid> [(<tgid>)] [<cpu>] <flags> <ts>: <name>: <fields>`. The comm may hold any
/// character, so try each `-` from the left until the rest fits.
fn parse_line(line: &str) -> Option<HostEvent> {
    for (i, _) in line.match_indices('-') {
        if let Some(e) = parse_after_comm(&line[i + 1..]) {
            return Some(e);
        }
    }
    None
}

fn parse_after_comm(s: &str) -> Option<HostEvent> {
    let (tid, rest) = split_num(s)?;
    let mut rest = rest.trim_start();
    if let Some(r) = rest.strip_prefix('(') {
        rest = r.split_once(')')?.1.trim_start(); // record-tgid column
    }
    let rest = rest.strip_prefix('[')?;
    let (cpu, rest) = split_num(rest)?;
    let rest = rest.strip_prefix(']')?.trim_start();
    let (_flags, rest) = rest.split_once(' ')?;
    let (ts, rest) = split_num(rest.trim_start())?;
    let rest = rest.strip_prefix(": ")?;
    let (name, fields) = rest
        .split_once(": ")
        .unwrap_or((rest.trim_end_matches(':'), ""));
    Some(HostEvent {
        tid: i32::try_from(tid).ok()?,
        cpu: u32::try_from(cpu).ok()?,
        ts,
        name: name.to_string(),
        fields: fields.to_string(),
    })
}

fn split_num(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// One read and its host window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWindow {
    pub vm: usize,
    pub vcpu: u32,
    pub seq: u32,
    pub guest_tsc: u64,
    /// `guest_tsc - offset` (the debugfs offset in force for this read).
    pub host_tsc: u64,
    /// Host TSC of the read's `kvm_emulate_insn`.
    pub start: u64,
    /// Host TSC of the thread's next event.
    pub end: u64,
    /// Name of that next event.
    pub end_event: String,
}

impl ReadWindow {
    /// `start <= host_tsc <= end`.
    pub fn contains(&self) -> bool {
        self.start <= self.host_tsc && self.host_tsc <= self.end
    }
    /// host_tsc - start (negative when outside).
    pub fn after_start(&self) -> i128 {
        i128::from(self.host_tsc) - i128::from(self.start)
    }
    /// end - host_tsc (negative when outside).
    pub fn before_end(&self) -> i128 {
        i128::from(self.end) - i128::from(self.host_tsc)
    }
}

/// Result of checking one VM's reads against a host recording.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Every read that was found in the host trace.
    pub windows: Vec<ReadWindow>,
    /// What did not match (missing events, reads outside their window).
    pub failures: Vec<String>,
}

/// Finds each read's `rdtsc` (or `rdmsr`) among its vCPU thread's `kvm_emulate_insn` events
/// (by guest rip, the k-th such event being read k) and checks the read against its window,
/// that the thread's next `kvm_pio` carries the read's low 32 bits, and for `rdmsr` that the
/// window's end is the `kvm_msr` of that read, carrying the very value the guest got.
pub fn verify(vm: &VmReport, events: &[HostEvent]) -> Verification {
    let mut v = Verification::default();
    let [o0, o1] = vm.read.opcode();
    let loop_pat = format!("0:{:x}:{o0:02x} {o1:02x} ", vm.loop_rdtsc_rip);
    let last_pat = format!("0:{:x}:{o0:02x} {o1:02x} ", vm.last_rdtsc_rip);
    for vc in &vm.vcpus {
        let mut mine: Vec<&HostEvent> = events.iter().filter(|e| e.tid == vc.tid).collect();
        // `cat trace` is merged by time already; a stable sort only guards hand-made input.
        mine.sort_by_key(|e| e.ts);
        let rdtscs: Vec<usize> = mine
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.name == "kvm_emulate_insn"
                    && (e.fields.starts_with(&loop_pat) || e.fields.starts_with(&last_pat))
            })
            .map(|(i, _)| i)
            .collect();
        if rdtscs.len() != vc.reads.len() {
            v.failures.push(format!(
                "vm{} vcpu{} (tid {}): {} {} emulations in the host trace for {} reads",
                vm.index,
                vc.vcpu,
                vc.tid,
                rdtscs.len(),
                vm.read.mnemonic(),
                vc.reads.len()
            ));
            continue;
        }
        let after = vm.wrmsr.map(|w| w.after_read);
        for (r, &i) in vc.reads.iter().zip(&rdtscs) {
            let want = if r.seq as usize + 1 == vc.reads.len() {
                &last_pat
            } else {
                &loop_pat
            };
            if !mine[i].fields.starts_with(want.as_str()) {
                v.failures.push(format!(
                    "vm{} vcpu{} read {}: rdtsc at the wrong rip: {}",
                    vm.index, vc.vcpu, r.seq, mine[i].fields
                ));
            }
            let Some(next) = mine.get(i + 1) else {
                v.failures.push(format!(
                    "vm{} vcpu{} read {}: no host event after the rdtsc",
                    vm.index, vc.vcpu, r.seq
                ));
                continue;
            };
            let offset = match after {
                Some(a) if r.seq as usize > a => vc.debugfs.offset_at_end,
                _ => vc.debugfs.offset_at_create,
            }
            .unwrap_or(0);
            let w = ReadWindow {
                vm: vm.index,
                vcpu: vc.vcpu,
                seq: r.seq,
                guest_tsc: r.guest_tsc,
                host_tsc: r.guest_tsc.wrapping_sub(offset as u64),
                start: mine[i].ts,
                end: next.ts,
                end_event: next.name.clone(),
            };
            if vm.read == ReadInsn::Rdmsr {
                let want = format!("msr_read 10 = {:#x}", r.guest_tsc);
                if next.name != "kvm_msr" || next.fields.trim_end() != want {
                    v.failures.push(format!(
                        "vm{} vcpu{} read {}: expected kvm_msr {want:?} to end the window, found {} {:?}",
                        vm.index, vc.vcpu, r.seq, next.name, next.fields
                    ));
                }
            }
            // The `out` after the read shows its low 32 bits on the host (kvm_pio).
            if r.before == Insn::Out {
                let want = format!(
                    "pio_write at {:#x} size 4 count 1 val {:#x} ",
                    TSC_PORT, r.guest_tsc as u32
                );
                match mine[i + 1..].iter().find(|e| e.name == "kvm_pio") {
                    Some(e) if e.fields.starts_with(&want) => {}
                    other => v.failures.push(format!(
                        "vm{} vcpu{} read {}: expected kvm_pio {want:?}, found {:?}",
                        vm.index,
                        vc.vcpu,
                        r.seq,
                        other.map(|e| &e.fields)
                    )),
                }
            }
            if !w.contains() {
                v.failures.push(format!(
                    "vm{} vcpu{} read {}: host {} outside [{}, {}] ({:+} / {:+})",
                    vm.index,
                    vc.vcpu,
                    r.seq,
                    w.host_tsc,
                    w.start,
                    w.end,
                    w.after_start(),
                    w.before_end()
                ));
            }
            v.windows.push(w);
        }
    }
    v
}

/// (min, median, max) of `xs`; `None` when empty.
pub fn min_median_max(xs: impl IntoIterator<Item = i128>) -> Option<(i128, i128, i128)> {
    let mut v: Vec<i128> = xs.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some((v[0], v[v.len() / 2], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lines() {
        // Lines as this kernel writes them (tgid column off and on).
        let text = "# tracer: nop\n\
            \x20  microvm-vcpu0-4242    [001] ..... 1235000000100: kvm_emulate_insn: 0:100e:0f 31 (real)\n\
            \x20           bash-4613    (   4613) [001] d..2. 669023293889: sched_switch: prev_comm=bash\n\
            \x20  a-b [c]-77    [000] ...1. 5: tracing_mark_write: x: y\n\
            garbage\n";
        let (ev, bad) = parse_trace_text(text);
        assert_eq!(bad, vec![5]);
        assert_eq!(
            ev[0],
            HostEvent {
                tid: 4242,
                cpu: 1,
                ts: 1235000000100,
                name: "kvm_emulate_insn".into(),
                fields: "0:100e:0f 31 (real)".into()
            }
        );
        assert_eq!(
            (ev[1].tid, ev[1].ts, ev[1].name.as_str()),
            (4613, 669023293889, "sched_switch")
        );
        assert_eq!((ev[2].tid, ev[2].fields.as_str()), (77, "x: y"));
    }

    fn vm(reads: &[u64]) -> VmReport {
        use crate::vmm::{DebugfsTsc, GuestRead, VcpuReport};
        let n = reads.len();
        VmReport {
            index: 0,
            pid: 1,
            creator_tid: 1,
            vm_fd: 4,
            wrmsr: None,
            loop_rdtsc_rip: 0x1012,
            last_rdtsc_rip: 0x103f,
            read: ReadInsn::Rdtsc,
            vcpus: vec![VcpuReport {
                vcpu: 0,
                tid: 9,
                reads: reads
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| GuestRead {
                        seq: i as u32,
                        insn: ReadInsn::Rdtsc,
                        guest_tsc: t,
                        before: if i + 1 == n { Insn::Hlt } else { Insn::Out },
                    })
                    .collect(),
                debugfs: DebugfsTsc {
                    offset_at_create: Some(0),
                    offset_at_end: Some(0),
                    ..Default::default()
                },
            }],
        }
    }

    fn ev(tid: i32, ts: u64, name: &str, fields: &str) -> HostEvent {
        HostEvent {
            tid,
            cpu: 0,
            ts,
            name: name.into(),
            fields: fields.into(),
        }
    }

    #[test]
    fn verify_windows() {
        let host = vec![
            ev(9, 100, "kvm_emulate_insn", "0:1012:0f 31 (real)"),
            ev(5, 150, "kvm_pio", "other thread: ignored"),
            ev(9, 200, "kvm_emulate_insn", "0:1014:66 e7 e4 (real)"),
            ev(
                9,
                210,
                "kvm_pio",
                "pio_write at 0xe4 size 4 count 1 val 0x96 ",
            ),
            ev(9, 300, "kvm_emulate_insn", "0:103f:0f 31 (real)"),
            ev(9, 400, "kvm_emulate_insn", "0:1041:f4 (real)"),
        ];
        let ok = verify(&vm(&[150, 350]), &host);
        assert!(ok.failures.is_empty(), "{:?}", ok.failures);
        assert_eq!(
            (
                ok.windows[0].start,
                ok.windows[0].end,
                ok.windows[0].after_start()
            ),
            (100, 200, 50)
        );
        assert_eq!(
            (ok.windows[1].before_end(), ok.windows[1].end_event.as_str()),
            (50, "kvm_emulate_insn")
        );
        // Outside the window, and the pio then carries another value.
        let bad = verify(&vm(&[201, 350]), &host);
        assert_eq!(bad.failures.len(), 2, "{:?}", bad.failures);
        // A missing rdtsc emulation is reported, not guessed.
        let missing = verify(&vm(&[150, 350, 360]), &host);
        assert!(
            missing.failures[0].contains("2 rdtsc emulations"),
            "{:?}",
            missing.failures
        );
    }
}
