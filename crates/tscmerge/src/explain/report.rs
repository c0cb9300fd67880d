//! The explain report as text, over any `Write` (the CLI prints it, tests
//! read it from a `Vec<u8>`).

use std::io::{self, Write};

use super::{ExplainReport, IrqTotal};
use crate::sink::HostNs;

/// A duration in microseconds (a right-aligned column) when the clock is known, else empty.
fn us(c: u64, clock: Option<HostNs>) -> String {
    match clock {
        Some(k) => {
            let ns = k.ns(c).wrapping_sub(k.ns(0));
            format!(" {:>17}.{:03} us", ns / 1000, ns % 1000)
        }
        None => String::new(),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// `irq 33 nvme0q3`, `softirq 3 NET_RX`.
fn irq_label(t: &IrqTotal) -> String {
    match t.number {
        Some(n) => format!("{} {n} {}", t.kind, t.name),
        None => t.kind.to_string(),
    }
}

/// One handler a line: count, cycles, and the share of `whole`.
fn write_irqs(out: &mut dyn Write, head: &str, irqs: &[IrqTotal], whole: u64, indent: &str) -> io::Result<()> {
    if irqs.is_empty() {
        return Ok(());
    }
    writeln!(out, "{indent}{head}:")?;
    for t in irqs {
        writeln!(out, "{indent}  {:<40} {:>8}x {:>16} {:>7.2}%", irq_label(t), t.count, t.cycles, share(t.cycles, whole))?;
    }
    Ok(())
}

/// Writes `r` as text; `clock` turns cycles into time where known.
pub fn write_text(r: &ExplainReport, clock: Option<HostNs>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "explain: host recording {}..{}: {} cycles{}; {} host events, {} sched_switch, {} wakeups; {} guest sched_switch",
        r.start,
        r.end,
        r.length,
        clock.map(|_| format!(" ({})", us(r.length, clock).trim_start())).unwrap_or_default(),
        r.host_events,
        r.sched_switches,
        r.wakeups,
        r.guest_switches
    )?;
    if r.sched_switches == 0 {
        writeln!(
            out,
            "note: the host recorded no sched_switch: preemption and halts are not told apart from the exits they follow (record sched:sched_switch and sched:sched_waking on the host)"
        )?;
    }
    if r.lost_marks > 0 {
        writeln!(out, "note: the host recording lost events at {} places: states across them may be wrong", r.lost_marks)?;
    }
    if r.irq_unmatched_exits + r.irq_lost_exits + r.irq_open_at_end > 0 {
        writeln!(
            out,
            "note: host IRQs: {} handler exits without their entry or events without their number (ignored), {} entries without their exit (closed at the next of their kind), {} handlers open at the end (cut there)",
            r.irq_unmatched_exits, r.irq_lost_exits, r.irq_open_at_end
        )?;
    }
    if r.vcpus.is_empty() {
        writeln!(out, "explain: no vCPU thread in the host recording (no kvm_entry, kvm_exit or kvm_emulate_insn, and no vCPU thread named by offsets or a GUEST option)")?;
    }
    for v in &r.vcpus {
        let id = match v.vcpu {
            Some(n) => format!("vCPU {n}"),
            None => "vCPU ?".into(),
        };
        let mode = if v.emulating { ", emulated (no kvm_entry: exits are emulations)" } else { "" };
        writeln!(out, "\n{} {id} (thread {} {}{mode})", v.machine, v.thread, v.comm)?;
        let time_head = if clock.is_some() { format!(" {:>24}", "time") } else { String::new() };
        writeln!(out, "  {:<44} {:>16} {:>8}{time_head}", "state", "cycles", "share")?;
        for s in &v.states {
            let name = match (s.state, &s.detail) {
                ("preempted", Some(d)) => format!("preempted by {d}"),
                (st, Some(d)) => format!("{st} {d}"),
                ("unknown", None) => "unknown (before its first telling event)".into(),
                (st, None) => st.to_string(),
            };
            writeln!(out, "  {name:<44} {:>16} {:>7.2}%{}", s.cycles, share(s.cycles, r.length), us(s.cycles, clock))?;
        }
        writeln!(out, "  {:<44} {:>16} {:>7.2}%{}", "total", v.total, share(v.total, r.length), us(v.total, clock))?;
        if !v.exits.is_empty() {
            let what = if v.emulating { "emulation to next emulation" } else { "exit to entry" };
            writeln!(out, "  {what}, cycles:")?;
            writeln!(out, "  {:<24} {:>9} {:>16} {:>10} {:>10} {:>10}  guest task at exit", "reason", "count", "total", "p50", "p99", "max")?;
            for e in &v.exits {
                let s = &e.summary;
                let approx = if s.exact_quantiles { "" } else { "~" };
                let tasks: Vec<String> = e.guest_tasks.iter().take(3).map(|(t, n)| format!("{t} {n}")).collect();
                let more = if e.guest_tasks.len() > 3 { format!(" (+{} more)", e.guest_tasks.len() - 3) } else { String::new() };
                writeln!(
                    out,
                    "  {:<24} {:>9} {:>16} {:>10} {:>10} {:>10}  {}{more}",
                    e.reason,
                    s.count,
                    s.total,
                    format!("{approx}{}", s.p50),
                    format!("{approx}{}", s.p99),
                    s.max,
                    tasks.join(", ")
                )?;
            }
        }
        write_irqs(out, "host IRQs on its CPU while it ran there (count, exclusive cycles; within the states above)", &v.host_irqs, r.length, "  ")?;
        if let Some((reason, ts)) = &v.open_exit {
            writeln!(out, "  an exit ({reason}, at {ts}) had no entry before the recording ended: in the states, not in exit to entry")?;
        }
        if v.unpaired_exits > 0 || v.missed_exits > 0 {
            writeln!(
                out,
                "  note: {} exits without their entry and {} events in guest mode without an exit before them (events the recording lost)",
                v.unpaired_exits, v.missed_exits
            )?;
        }
    }
    for k in &r.stalls {
        writeln!(out, "\nstalls {}: {}", k.kind, k.count)?;
        for s in &k.sums {
            let thread = s.thread.map_or("no vCPU thread known".to_string(), |t| format!("thread {t}"));
            writeln!(out, "  {} cpu {} ({thread}): {} stalls, {} cycles{}", s.machine, s.cpu, s.count, s.cycles, clock.map(|_| format!(" ({})", us(s.cycles, clock).trim_start())).unwrap_or_default())?;
            for (state, c) in &s.breakdown {
                writeln!(out, "    {state:<42} {c:>16} {:>7.2}%", share(*c, s.cycles))?;
            }
            write_irqs(out, "host IRQs on its thread's CPU", &s.irqs, s.cycles, "    ")?;
        }
        if !k.longest.is_empty() {
            writeln!(out, "  longest:")?;
        }
        for s in &k.longest {
            let parts: Vec<String> = s.breakdown.iter().map(|(st, c)| format!("{st} {c}")).collect();
            let task = if s.task.is_empty() { String::new() } else { format!(" {}", s.task) };
            let irqs: Vec<String> = s.irqs.iter().map(|t| format!("{} {}x {}", irq_label(t), t.count, t.cycles)).collect();
            let irqs = if irqs.is_empty() { String::new() } else { format!("; host IRQs: {}", irqs.join(", ")) };
            writeln!(out, "    {} cpu {}{task} {}..{}: {} cycles: {}{irqs}", s.machine, s.cpu, s.start, s.end, s.end.saturating_sub(s.start), parts.join(", "))?;
        }
    }
    if r.vcpus.iter().flat_map(|v| &v.exits).any(|e| !e.summary.exact_quantiles) {
        writeln!(out, "\n~: from a histogram (more than {} exits): at most 1/64 below the exact value", super::hist::EXACT)?;
    }
    Ok(())
}
