//! The guest side of a micro-VM recording, written as tracefs `trace` text.
//!
//! A real guest would record its reads with `trace_marker` writes in an x86-tsc buffer; we
//! write what its `cat trace` would show: the header of kernel/trace/trace.c
//! (`print_trace_header`, `print_event_info`, `print_func_help_header_irq`) and one `print`
//! event per read, rendered as kernel/trace/trace_output.c does (`trace_print_context`:
//! `"%16s-%-7d "`, `"[%03d] "`, the five irq/preempt flag columns, `" %12llu: "` for a
//! counter clock; `trace_print_print`: the ip symbol `tracing_mark_write`, `": "`, the text).
//! The flags are `...1.`, which is what this kernel (6.18) shows for a user `trace_marker` write.
//! Lines of all CPUs are merged by timestamp, like the kernel's iterator does (it picks the CPU
//! with the smallest next timestamp, lower CPU first on ties).

use std::io::{self, Write};

use crate::vmm::{GuestRead, VmReport};

/// Comm of the thread that "wrote" vCPU `n`'s events (also the vCPU threads' host name).
pub fn vcpu_comm(n: u32) -> String {
    format!("microvm-vcpu{n}")
}

/// The `trace_marker` text for one read, as in `tracing_mark_write: rdtsc seq=3 next=out`
/// (`rdmsr seq=3 next=out` for a `rdmsr` of IA32_TSC).
pub fn marker_text(r: &GuestRead) -> String {
    format!("{} seq={} next={}", r.insn.mnemonic(), r.seq, r.before.mnemonic())
}

/// Writes `vm`'s guest trace: CPU = vCPU id, timestamp = the guest TSC, pid = the vCPU thread's
/// host tid.
pub fn write_guest_trace(vm: &VmReport, out: &mut impl Write) -> io::Result<()> {
    // Per CPU the kernel's ring buffer is in write order; when a wrmsr made the guest TSC go
    // back, a real trace would show that CPU's later events with the smaller timestamps after
    // the larger ones. Keep program order per CPU and merge the per-CPU streams by timestamp.
    let merged = merge_per_cpu(vm);

    let n = merged.len();
    let cpus = vm.vcpus.len();
    writeln!(out, "# tracer: nop")?;
    writeln!(out, "#")?;
    writeln!(
        out,
        "# entries-in-buffer/entries-written: {n}/{n}   #P:{cpus}"
    )?;
    writeln!(out, "#")?;
    writeln!(
        out,
        "# guest trace written by tscmerge microvm monitor (vm{}, host pid {}, vm fd {}), not by a guest kernel",
        vm.index, vm.pid, vm.vm_fd
    )?;
    writeln!(out, "#")?;
    writeln!(
        out,
        "#                                _-----=> irqs-off/BH-disabled"
    )?;
    writeln!(
        out,
        "#                               / _----=> need-resched"
    )?;
    writeln!(
        out,
        "#                              | / _---=> hardirq/softirq"
    )?;
    writeln!(
        out,
        "#                              || / _--=> preempt-depth"
    )?;
    writeln!(
        out,
        "#                              ||| / _-=> migrate-disable"
    )?;
    writeln!(out, "#                              |||| /     delay")?;
    writeln!(
        out,
        "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION"
    )?;
    writeln!(out, "#              | |         |   |||||     |         |")?;
    for (cpu, tid, r) in merged {
        writeln!(
            out,
            "{:>16}-{:<7} [{:03}] ...1. {:>12}: tracing_mark_write: {}",
            vcpu_comm(cpu),
            tid,
            cpu,
            r.guest_tsc,
            marker_text(r)
        )?;
    }
    Ok(())
}

/// Merges the per-vCPU read lists (each kept in program order) by timestamp, lower CPU first on
/// ties: the order of the kernel's `trace` iterator (kernel/trace/trace.c `__find_next_entry`).
fn merge_per_cpu(vm: &VmReport) -> Vec<(u32, i32, &GuestRead)> {
    let mut pos = vec![0usize; vm.vcpus.len()];
    let mut out = Vec::new();
    loop {
        let mut best: Option<(u64, usize)> = None;
        for (i, v) in vm.vcpus.iter().enumerate() {
            if let Some(r) = v.reads.get(pos[i]) {
                // strict < keeps the lower CPU on ties (vcpus are in id order)
                let better = match best {
                    None => true,
                    Some((ts, _)) => r.guest_tsc < ts,
                };
                if better {
                    best = Some((r.guest_tsc, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let v = &vm.vcpus[i];
        out.push((v.vcpu, v.tid, &v.reads[pos[i]]));
        pos[i] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{DebugfsTsc, Insn, VcpuReport};

    fn vm() -> VmReport {
        let read = |seq, guest_tsc, before| GuestRead {
            seq,
            insn: crate::ReadInsn::Rdtsc,
            guest_tsc,
            before,
        };
        VmReport {
            index: 0,
            pid: 100,
            creator_tid: 100,
            vm_fd: 7,
            wrmsr: None,
            loop_rdtsc_rip: 0,
            last_rdtsc_rip: 0,
            read: crate::ReadInsn::Rdtsc,
            vcpus: vec![
                VcpuReport {
                    vcpu: 0,
                    tid: 101,
                    reads: vec![read(0, 1000, Insn::Out), read(1, 3000, Insn::Hlt)],
                    debugfs: DebugfsTsc::default(),
                },
                VcpuReport {
                    vcpu: 1,
                    tid: 102,
                    reads: vec![
                        read(0, 1000, Insn::Out),
                        read(1, 2000, Insn::Out),
                        read(2, 500, Insn::Hlt),
                    ],
                    debugfs: DebugfsTsc::default(),
                },
            ],
        }
    }

    #[test]
    fn renders_like_the_kernel() {
        let mut out = Vec::new();
        write_guest_trace(&vm(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# tracer: nop");
        assert_eq!(lines[2], "# entries-in-buffer/entries-written: 5/5   #P:2");
        assert!(lines.iter().take_while(|l| l.starts_with('#')).count() == 14);
        let body: Vec<&str> = lines[14..].to_vec();
        // Layout copied from a real `cat trace` of a trace_marker write on this machine:
        // "           <...>-8636    [000] ...1. 1231429627042: tracing_mark_write: rdtsc seq=3 next=out"
        assert_eq!(
            body[0],
            "   microvm-vcpu0-101     [000] ...1.         1000: tracing_mark_write: rdtsc seq=0 next=out"
        );
        // Tie at 1000: CPU 0 first; CPU 1's step back to 500 stays after its 2000 (ring order).
        let order: Vec<(&str, &str)> = body
            .iter()
            .map(|l| (&l[26..29], l.rsplit(' ').nth(1).unwrap()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("000", "seq=0"),
                ("001", "seq=0"),
                ("001", "seq=1"),
                ("001", "seq=2"),
                ("000", "seq=1")
            ]
        );
    }
}
