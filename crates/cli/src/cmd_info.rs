//! `tscmerge info FILE`: what a recording holds, in the spirit of
//! `trace-cmd dump --summary`: the file header (trace.dat), buffers with
//! their clocks and CPUs, events per CPU and per type, lost events, and every
//! trace.dat option decoded (trace-cmd.dat.v7.5.txt, trace-input.c
//! `handle_options`). Text and raw inputs show what applies to them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ftrace::tracedat::{options::id, TraceDat, TraceOption};
use tscmerge::source::{Input, InputKind};
use tscmerge::Payload;

use crate::output::Output;

#[derive(clap::Args)]
pub struct Args {
    /// A recording: trace.dat, tracefs text or a raw capture directory.
    pub file: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let input = Input::open(&a.file)?;
    let mut out = Output::open(None)?;
    write_info(&input, &mut out)?;
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// Per-CPU tallies of one buffer.
#[derive(Default)]
struct CpuTally {
    events: u64,
    /// Lost-events markers, and the events they count when the kernel said.
    lost_markers: u64,
    lost_counted: u64,
    lost_unknown: u64,
}

/// Writes the description of `input` to `w`.
pub fn write_info(input: &Input, w: &mut impl Write) -> anyhow::Result<()> {
    writeln!(w, "file: {}", input.name())?;
    match input.kind {
        InputKind::TraceDat => {
            if let Some(dat) = input.tracedat() {
                header(dat, w)?;
            }
        }
        InputKind::RawDir => {
            if let Some(raw) = input.rawdir() {
                writeln!(w, "format: raw trace_pipe_raw capture directory")?;
                writeln!(w, "endian: {:?}", raw.meta.endian)?;
                writeln!(w, "long size: {}", raw.meta.long_size)?;
                writeln!(w, "page size: {} (header_page: commit {} bytes, data at {})", raw.layout.page_size, raw.layout.commit_size, raw.layout.data_offset)?;
                writeln!(
                    w,
                    "metadata: {} event formats, cmdlines {}, tgids {}, kallsyms {}, printk formats {}",
                    raw.meta.events.len(),
                    raw.meta.comms.len(),
                    raw.meta.tgids.len(),
                    raw.meta.kallsyms.as_ref().map_or(0, |k| k.len()),
                    raw.meta.printk.as_ref().map_or(0, |p| p.len()),
                )?;
                if !raw.info.is_empty() {
                    writeln!(w, "meta.txt:")?;
                    for (k, v) in &raw.info {
                        writeln!(w, "  {k:<14} {v}")?;
                    }
                }
            }
        }
        InputKind::Text => writeln!(w, "format: ftrace text (tracefs trace/trace_pipe or trace-cmd report)")?,
    }

    let dat = input.tracedat();
    let raw = input.rawdir();
    for (b, desc) in input.buffers().iter().enumerate() {
        writeln!(w, "buffer {:?}: clock {}, {} CPUs {:?}", desc.display_name(), desc.clock, desc.cpus.len(), desc.cpus)?;
        if let Some(buf) = dat.and_then(|d| d.buffers().get(b)) {
            let bytes: u64 = buf.cpus.iter().map(|c| c.size).sum();
            writeln!(
                w,
                "  {:?} data, page size {}, {} bytes{}",
                buf.kind,
                buf.page_size,
                bytes,
                if buf.compressed { " (compressed)" } else { "" }
            )?;
        }
        let mut by_event: BTreeMap<String, u64> = BTreeMap::new();
        let mut cpus: BTreeMap<u32, CpuTally> = BTreeMap::new();
        for &cpu in &desc.cpus {
            cpus.entry(cpu).or_default();
        }
        for (_, mut c) in input.cursors(b, false)? {
            while let Some(ev) = c.current() {
                let t = cpus.entry(ev.cpu).or_default();
                match ev.payload {
                    Payload::Event(r) => {
                        t.events += 1;
                        let key = if r.system.is_empty() { r.name.to_string() } else { format!("{}:{}", r.system, r.name) };
                        *by_event.entry(key).or_default() += 1;
                    }
                    Payload::Lost { count } => {
                        t.lost_markers += 1;
                        match count {
                            Some(n) => t.lost_counted += n,
                            None => t.lost_unknown += 1,
                        }
                    }
                }
                c.advance()?;
            }
        }
        let total: u64 = by_event.values().sum();
        writeln!(w, "  events: {total}")?;
        for (cpu, t) in &cpus {
            write!(w, "    CPU {cpu}: {} events", t.events)?;
            if let Some(c) = dat.and_then(|d| d.buffers().get(b)).and_then(|buf| buf.cpus.iter().find(|c| c.cpu == *cpu)) {
                write!(w, ", data {} bytes at offset {}", c.size, c.offset.0)?;
            }
            if let Some(c) = raw.and_then(|r| r.buffers.get(b)).and_then(|buf| buf.cpus.iter().find(|c| c.cpu == *cpu)) {
                let len = c.bytes().len() as u64;
                write!(w, ", {} ({len} bytes, {} pages)", c.path.display(), len.div_ceil(raw.map_or(4096, |r| r.layout.page_size as u64)))?;
            }
            writeln!(w)?;
        }
        for (cpu, t) in cpus.iter().filter(|(_, t)| t.lost_markers > 0) {
            write!(w, "    CPU {cpu}: lost events reported {} times: {} events counted", t.lost_markers, t.lost_counted)?;
            if t.lost_unknown > 0 {
                write!(w, ", {} times without a count", t.lost_unknown)?;
            }
            writeln!(w)?;
        }
        if !by_event.is_empty() {
            writeln!(w, "  by event:")?;
            for (name, n) in &by_event {
                writeln!(w, "    {n:>10}  {name}")?;
            }
        }
    }
    if let Some(dat) = dat {
        options(dat, w)?;
    }
    let writes = input.offset_writes();
    writeln!(w, "kvm_write_tsc_offset events: {}", writes.len())?;
    Ok(())
}

fn header(dat: &TraceDat<'_>, w: &mut impl Write) -> anyhow::Result<()> {
    writeln!(w, "format: trace.dat version {}", dat.version())?;
    match dat.compression() {
        Some((name, "")) => writeln!(w, "compression: {name}")?,
        Some((name, version)) => writeln!(w, "compression: {name} {version}")?,
        None => writeln!(w, "compression: none (v6)")?,
    }
    writeln!(w, "endian: {:?}", dat.endian())?;
    writeln!(w, "long size: {}", dat.long_size())?;
    writeln!(w, "page size: {}", dat.page_size())?;
    let systems: std::collections::BTreeSet<&str> = dat.event_formats().map(|(s, _)| s).collect();
    writeln!(
        w,
        "metadata: {} event formats in {} systems, {} ftrace formats, header_page {} bytes, kallsyms {} bytes, printk {} bytes, cmdlines {} bytes",
        dat.event_formats().count(),
        systems.len(),
        dat.ftrace_formats().count(),
        dat.header_page().len(),
        dat.kallsyms().map_or(0, <[u8]>::len),
        dat.printk().map_or(0, <[u8]>::len),
        dat.cmdlines().len(),
    )?;
    if !dat.sections().is_empty() {
        writeln!(w, "sections: {}", dat.sections().len())?;
        for s in dat.sections() {
            writeln!(
                w,
                "  {:<28} at {:>10}, {:>9} bytes{}",
                match &s.description {
                    Some(d) => format!("{} {d:?}", section_name(s.id)),
                    None => section_name(s.id),
                },
                s.offset.0,
                s.size,
                if s.flags & 1 != 0 { ", compressed" } else { "" }
            )?;
        }
    }
    Ok(())
}

/// Option / section ids by name (trace-cmd.h `enum tracecmd_option_id`).
fn section_name(i: u16) -> String {
    let n = match i {
        id::DONE => "DONE",
        id::DATE => "DATE",
        id::CPUSTAT => "CPUSTAT",
        id::BUFFER => "BUFFER",
        id::TRACECLOCK => "TRACECLOCK",
        id::UNAME => "UNAME",
        id::HOOK => "HOOK",
        id::OFFSET => "OFFSET",
        id::CPUCOUNT => "CPUCOUNT",
        id::VERSION => "VERSION",
        id::PROCMAPS => "PROCMAPS",
        id::TRACEID => "TRACEID",
        id::TIME_SHIFT => "TIME_SHIFT",
        id::GUEST => "GUEST",
        id::TSC2NSEC => "TSC2NSEC",
        id::STRINGS => "STRINGS",
        id::HEADER_INFO => "HEADER_INFO",
        id::FTRACE_EVENTS => "FTRACE_EVENTS",
        id::EVENT_FORMATS => "EVENT_FORMATS",
        id::KALLSYMS => "KALLSYMS",
        id::PRINTK => "PRINTK",
        id::CMDLINES => "CMDLINES",
        id::BUFFER_TEXT => "BUFFER_TEXT",
        id::BTF_FILE => "BTF_FILE",
        id::LAST_BOOT_INFO => "LAST_BOOT_INFO",
        id::MODULES_FILE => "MODULES_FILE",
        other => return format!("id {other}"),
    };
    n.to_string()
}

/// Multi-line option text on one line.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(", ")
}

fn options(dat: &TraceDat<'_>, w: &mut impl Write) -> anyhow::Result<()> {
    writeln!(w, "options: {}", dat.options().len())?;
    for o in dat.options() {
        match o {
            TraceOption::Date(s) => writeln!(w, "  DATE         {s} (µs between trace clock and time of day)")?,
            TraceOption::CpuStat { text, .. } => writeln!(w, "  CPUSTAT      {}", one_line(text))?,
            TraceOption::TraceClock(s) => writeln!(w, "  TRACECLOCK   {}", s.trim())?,
            TraceOption::Uname(s) => writeln!(w, "  UNAME        {s}")?,
            TraceOption::Hook(s) => writeln!(w, "  HOOK         {s}")?,
            TraceOption::Offset(s) => writeln!(w, "  OFFSET       {s}")?,
            TraceOption::CpuCount(n) => writeln!(w, "  CPUCOUNT     {n}")?,
            TraceOption::Version(s) => writeln!(w, "  VERSION      {s}")?,
            TraceOption::ProcMaps(s) => writeln!(w, "  PROCMAPS     {} bytes", s.len())?,
            TraceOption::TraceId(v) => writeln!(w, "  TRACEID      {v:#018x}")?,
            TraceOption::Tsc2Nsec { mult, shift, offset } => {
                writeln!(w, "  TSC2NSEC     mult {mult}, shift {shift}, offset {offset}")?
            }
            TraceOption::TimeShift(t) => {
                writeln!(w, "  TIME_SHIFT   peer trace id {:#018x}, flags {:#x}, {} CPUs", t.peer_trace_id, t.flags, t.cpus.len())?;
                for (cpu, c) in t.cpus.iter().enumerate() {
                    write!(w, "               CPU {cpu}: {} samples", c.times.len())?;
                    for (i, time) in c.times.iter().enumerate().take(4) {
                        let frac = c.frac_bits.as_ref().and_then(|f| f.get(i)).map_or(String::new(), |f| format!(" frac {f}"));
                        write!(
                            w,
                            "; t {time} offset {} scaling {}{frac}",
                            c.offsets.get(i).copied().unwrap_or(0),
                            c.scalings.get(i).copied().unwrap_or(0)
                        )?;
                    }
                    if c.times.len() > 4 {
                        write!(w, "; ...")?;
                    }
                    writeln!(w)?;
                }
            }
            TraceOption::Guest(g) => {
                let vcpus: Vec<String> = g.vcpus.iter().map(|(v, pid)| format!("vcpu {v}→pid {pid}")).collect();
                writeln!(w, "  GUEST        {:?}, trace id {:#018x}, {}", g.name, g.trace_id, vcpus.join(", "))?
            }
            TraceOption::Malformed { id, error } => writeln!(w, "  {:<12} malformed, skipped as trace-cmd skips it: {error}", section_name(*id))?,
            TraceOption::Buffer { name, offset } => writeln!(w, "  BUFFER       {name:?} at {}", offset.0)?,
            TraceOption::BufferText { name, offset } => writeln!(w, "  BUFFER_TEXT  {name:?} at {}", offset.0)?,
            TraceOption::Section { id, offset } => writeln!(w, "  {:<12} section at {}", section_name(*id), offset.0)?,
            TraceOption::Unknown { id, data } => {
                let hex: String = data.iter().take(32).map(|b| format!("{b:02x}")).collect();
                writeln!(
                    w,
                    "  unknown id {id} ({:#06x}): {} bytes: {hex}{}",
                    id,
                    data.len(),
                    if data.len() > 32 { "..." } else { "" }
                )?
            }
            other => writeln!(w, "  {other:?}")?,
        }
    }
    Ok(())
}
