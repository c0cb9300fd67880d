//! Writes a synthetic recording as tracefs text, laid out as the kernel's
//! `trace` file prints it (kernel/trace/trace_output.c: `%16s-%-7d`, the tgid
//! column `(%7d)`, `[%03d]`, the irq-info flags, the counter timestamp).

use std::io::{self, Write};

use super::model::{Happening, SynthConfig, SynthEvent};

const HEADER_TGID: &str = "\
#                                          _-----=> irqs-off/BH-disabled
#                                         / _----=> need-resched
#                                        | / _---=> hardirq/softirq
#                                        || / _--=> preempt-depth
#                                        ||| / _-=> migrate-disable
#                                        |||| /     delay
#           TASK-PID       TGID    CPU#  |||||  TIMESTAMP  FUNCTION
#              | |           |       |   |||||     |         |
";

const HEADER: &str = "\
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
";

/// Writes the block the kernel prints before the events (`#P` = CPU count).
pub fn write_header(out: &mut impl Write, entries: u64, cpus: u32, tgid: bool, note: &str) -> io::Result<()> {
    writeln!(out, "# tracer: nop\n#\n# entries-in-buffer/entries-written: {entries}/{entries}   #P:{cpus}\n#")?;
    if !note.is_empty() {
        writeln!(out, "# {note}\n#")?;
    }
    out.write_all(if tgid { HEADER_TGID } else { HEADER }.as_bytes())
}

pub(super) fn guest_comm(pid: i32) -> &'static str {
    ["swapper/0", "systemd", "kworker/0:1", "sshd", "bash", "stress-ng", "rcu_sched", "sleep"]
        .get(pid as usize)
        .copied()
        .unwrap_or("task")
}

pub(super) fn host_comm(pid: i32) -> String {
    if pid == 0 {
        "<idle>".to_string()
    } else {
        format!("worker{pid}")
    }
}

fn line_prefix(out: &mut impl Write, comm: &str, pid: i32, tgid: Option<Option<i32>>, cpu: u32, flags: &str, ts: u64) -> io::Result<()> {
    write!(out, "{comm:>16}-{pid:<7} ")?;
    match tgid {
        Some(Some(t)) => write!(out, "({t:>7}) ")?,
        Some(None) => write!(out, "(-------) ")?,
        None => {}
    }
    write!(out, "[{cpu:03}] {flags} {ts}: ")
}

/// One host-side line (top-level buffer or the offset instance), kernel style.
pub fn write_host_line(out: &mut impl Write, cfg: &SynthConfig, ev: &SynthEvent) -> io::Result<()> {
    if let (Some(vm), Happening::VcpuOut { .. } | Happening::VcpuWaking { .. } | Happening::VcpuIn { .. } | Happening::HostIrq { .. }) = (ev.vm, &ev.what) {
        return write_story_line(out, cfg, vm, ev);
    }
    let (comm, pid, tgid) = match (ev.vm, &ev.what) {
        // A switch is the task leaving the CPU's (a vCPU thread's too).
        (_, &Happening::HostSwitch { prev_pid, .. }) => (host_comm(prev_pid), prev_pid, (prev_pid != 0).then_some(prev_pid)),
        (Some(vm), _) => (format!("CPU {}/KVM", ev.vcpu), cfg.vcpu_tid(vm, ev.vcpu), Some(cfg.vmm_pid(vm))),
        (None, _) => ("?".to_string(), 0, None),
    };
    line_prefix(out, &comm, pid, Some(tgid), ev.host_cpu, "d..1.", ev.host.0)?;
    match ev.what {
        Happening::KvmEntry => writeln!(
            out,
            "kvm_entry: vcpu {}, rip 0xffffffff81{:06x} intr_info 0x00000000 error_code 0x00000000",
            ev.vcpu,
            (ev.host.0 >> 4) & 0xffffff
        ),
        Happening::KvmExit { reason } => writeln!(
            out,
            "kvm_exit: vcpu {} reason {reason} rip 0xffffffff81{:06x} info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000",
            ev.vcpu,
            (ev.host.0 >> 4) & 0xffffff
        ),
        Happening::KvmCpuid { leaf } => writeln!(
            out,
            "kvm_cpuid: func {leaf:x} idx 0 rax 40000001 rbx 4b4d564b rcx 564b4d56 rdx 4d, cpuid entry found"
        ),
        Happening::WriteTscOffset { prev, next } => {
            writeln!(out, "kvm_write_tsc_offset: vcpu={} prev={prev} next={next}", ev.vcpu)
        }
        Happening::HostSwitch { prev_pid, next_pid } => {
            let (pc, nc) = (host_comm(prev_pid), host_comm(next_pid));
            let (pc, nc) = (pc.trim_matches(['<', '>']), nc.trim_matches(['<', '>']));
            let pc = if prev_pid == 0 { format!("swapper/{}", ev.host_cpu) } else { pc.to_string() };
            let nc = if next_pid == 0 { format!("swapper/{}", ev.host_cpu) } else { nc.to_string() };
            writeln!(
                out,
                "sched_switch: prev_comm={pc} prev_pid={prev_pid} prev_prio=120 prev_state={} ==> next_comm={nc} next_pid={next_pid} next_prio=120",
                if prev_pid == 0 { "R" } else { "S" }
            )
        }
        Happening::GuestSwitch { .. } | Happening::GuestMarker { .. } => Ok(()),
        Happening::VcpuOut { .. } | Happening::VcpuWaking { .. } | Happening::VcpuIn { .. } | Happening::HostIrq { .. } => Ok(()),
    }
}

/// A vCPU thread's switch out or in, or its wakeup, on its host CPU
/// (the line's task is the one running: the vCPU, the idle task, or the
/// preempting task). Preempted tasks show `R+` (include/trace/events/sched.h).
fn write_story_line(out: &mut impl Write, cfg: &SynthConfig, vm: usize, ev: &SynthEvent) -> io::Result<()> {
    let (me, tid, tgid) = (format!("CPU {}/KVM", ev.vcpu), cfg.vcpu_tid(vm, ev.vcpu), cfg.vmm_pid(vm));
    let cpu = ev.host_cpu;
    let other = |pid: i32| super::story::story_comm(pid, cpu);
    match ev.what {
        Happening::VcpuOut { runnable, next_pid } => {
            line_prefix(out, &me, tid, Some(Some(tgid)), cpu, "d..2.", ev.host.0)?;
            let st = if runnable { "R+" } else { "S" };
            writeln!(out, "sched_switch: prev_comm={me} prev_pid={tid} prev_prio=120 prev_state={st} ==> next_comm={} next_pid={next_pid} next_prio=120", other(next_pid))
        }
        Happening::VcpuWaking { waker_pid } => {
            let comm = if waker_pid == 0 { "<idle>".to_string() } else { other(waker_pid) };
            line_prefix(out, &comm, waker_pid, Some((waker_pid != 0).then_some(waker_pid)), cpu, "dNh2.", ev.host.0)?;
            writeln!(out, "sched_waking: comm={me} pid={tid} prio=120 target_cpu={cpu:03}")
        }
        Happening::VcpuIn { prev_pid } => {
            let comm = if prev_pid == 0 { "<idle>".to_string() } else { other(prev_pid) };
            line_prefix(out, &comm, prev_pid, Some((prev_pid != 0).then_some(prev_pid)), cpu, "d..2.", ev.host.0)?;
            let st = if prev_pid == 0 { "R" } else { "S" };
            writeln!(out, "sched_switch: prev_comm={} prev_pid={prev_pid} prev_prio=120 prev_state={st} ==> next_comm={me} next_pid={tid} next_prio=120", other(prev_pid))
        }
        // Print fmts of include/trace/events/irq.h; the irq-info column
        // says hardirq (`h`) or softirq (`s`) context.
        Happening::HostIrq { soft, entry, num, idle } => {
            let flags = if soft { "..s1." } else { "d.h1." };
            if idle {
                line_prefix(out, "<idle>", 0, Some(None), cpu, flags, ev.host.0)?;
            } else {
                line_prefix(out, &me, tid, Some(Some(tgid)), cpu, flags, ev.host.0)?;
            }
            let name = if entry { "entry" } else { "exit" };
            if soft {
                let action = crate::event::softirq_name(num).unwrap_or("?");
                writeln!(out, "softirq_{name}: vec={num} [action={action}]")
            } else if entry {
                writeln!(out, "irq_handler_entry: irq={num} name={}", super::story::irq_name(num))
            } else {
                writeln!(out, "irq_handler_exit: irq={num} ret=handled")
            }
        }
        _ => Ok(()),
    }
}

/// One guest-side line, stamped with the guest's TSC and the vCPU as CPU.
pub fn write_guest_line(out: &mut impl Write, ev: &SynthEvent) -> io::Result<()> {
    let g = ev.guest.unwrap_or_default();
    match ev.what {
        Happening::GuestSwitch { prev_pid, next_pid } => {
            line_prefix(out, guest_comm(prev_pid), prev_pid, None, ev.vcpu, "d..2.", g)?;
            writeln!(
                out,
                "sched_switch: prev_comm={} prev_pid={prev_pid} prev_prio=120 prev_state=S ==> next_comm={} next_pid={next_pid} next_prio=120",
                guest_comm(prev_pid),
                guest_comm(next_pid)
            )
        }
        Happening::GuestMarker { seq } => {
            line_prefix(out, "bash", 4, None, ev.vcpu, ".....", g)?;
            writeln!(out, "tracing_mark_write: tscmerge-marker vcpu={} seq={seq}", ev.vcpu)
        }
        _ => Ok(()),
    }
}
