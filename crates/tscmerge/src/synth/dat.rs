//! `tscmerge synth --format dat`: the modelled recording as trace.dat files
//! (v7, as `trace-cmd extract` writes them), event for event the same as the
//! text output.
//!
//! - `host.dat`: two buffers, the top level (kvm_entry, kvm_exit, kvm_cpuid,
//!   sched_switch) and the instance `tsc_offset` (kvm_write_tsc_offset);
//! - `guest-vmN.dat`: sched_switch and `trace_marker` prints, stamped with
//!   the guest TSC, CPU = vCPU;
//! - `truth.tsv`: as [`super::write_text`] writes it.
//!
//! Records are laid out by real format files of this machine (`formats/`,
//! see its README) with [`encode_record`]. A trace.dat holds each CPU's pages
//! contiguously; every (buffer, CPU) stream is one deterministic generator of
//! the model (a vCPU thread or a busy host CPU), so each is generated on its
//! own and packed into pages as it goes: memory is a page plus a compression
//! chunk, whatever the size.

use std::io::{self, Seek, Write};
use std::path::Path;

use ftrace::format::{EventFormat, FieldKind};
use ftrace::write::{BufferId, Compression, Header, OptionData, PageBuilder, TraceDatWriter};
use ftrace::Endian;

use super::model::{Happening, HostNoise, SynthConfig, SynthEvent, VcpuEntity};
use super::text::{guest_comm, host_comm};
use super::{guest_events, write_atomically, SynthSummary};

pub(super) const HEADER_PAGE: &[u8] = include_bytes!("formats/header_page");
const HEADER_EVENT: &[u8] = include_bytes!("formats/header_event");
pub(super) const KVM_ENTRY: &[u8] = include_bytes!("formats/kvm/kvm_entry");
pub(super) const KVM_EXIT: &[u8] = include_bytes!("formats/kvm/kvm_exit");
pub(super) const KVM_CPUID: &[u8] = include_bytes!("formats/kvm/kvm_cpuid");
const KVM_WRITE_TSC_OFFSET: &[u8] = include_bytes!("formats/kvm/kvm_write_tsc_offset");
pub(super) const SCHED_SWITCH: &[u8] = include_bytes!("formats/sched/sched_switch");
const FTRACE_PRINT: &[u8] = include_bytes!("formats/ftrace/print");

/// Where `tracing_mark_write` sits in the kallsyms we store, so the print
/// event's `%ps` renders as the kernel's `trace` file shows markers. `_stext`
/// and `_etext` around it cover the guest RIPs of the host's
/// kvm_entry/kvm_exit (0xffffffff81000000 + 24 bits; libtraceevent finds no
/// function past the last symbol): `trace-cmd report -i HOST -i GUEST`
/// names them by the guest's symbols once it has tied the guest file to the
/// host's GUEST option (trace-read.c `tep_plugin_kvm_get_func`), which shows
/// that it did.
const MARK_WRITE_IP: u64 = 0xffff_ffff_8123_4560;
const KALLSYMS: &[u8] = b"ffffffff81000000 T _stext\nffffffff81234560 T tracing_mark_write\nffffffff82000000 T _etext\n";

/// `common_flags` bits (kernel/trace/trace.h `trace_flag_type`).
const TRACE_FLAG_IRQS_OFF: u8 = 0x01;

/// A value for one field of [`encode_record`].
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    U(u64),
    I(i64),
    /// For `char name[N]` (NUL-terminated, at most N-1 bytes, as the kernel's
    /// `strscpy` leaves it) and a trailing `char buf[]` (NUL appended).
    Str(&'a str),
}

/// The `common_*` fields of a record.
#[derive(Clone, Copy, Debug, Default)]
pub struct Common {
    pub pid: i32,
    pub flags: u8,
    pub preempt_count: u8,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Encodes one record of `format` into `out` (cleared first): little endian,
/// long size 8 (x86-64). `common_type` is the format's ID; fields not given
/// are zero; the fixed part is padded to its largest scalar's alignment, as
/// the kernel's `struct trace_event_raw_*` is.
pub fn encode_record(format: &EventFormat, common: Common, values: &[(&str, Value<'_>)], out: &mut Vec<u8>) -> io::Result<()> {
    let ev = &format.name;
    let mut fixed = 0usize;
    let mut align = 1usize;
    for f in &format.fields {
        fixed = fixed.max(f.offset as usize + f.size as usize);
        if f.kind == FieldKind::Int {
            align = align.max(f.size as usize);
        }
    }
    out.clear();
    out.resize(fixed.div_ceil(align) * align, 0);
    let common = [
        ("common_type", Value::U(u64::from(format.id))),
        ("common_flags", Value::U(u64::from(common.flags))),
        ("common_preempt_count", Value::U(u64::from(common.preempt_count))),
        ("common_pid", Value::I(i64::from(common.pid))),
    ];
    for (name, v) in common.iter().chain(values) {
        let f = format.field(name).ok_or_else(|| bad(format!("{ev}: no field {name:?}")))?;
        let (at, size) = (f.offset as usize, f.size as usize);
        match (f.kind, v) {
            (FieldKind::Int, Value::U(_) | Value::I(_)) => {
                let (raw, fits) = match *v {
                    Value::U(u) => (u, size == 8 || u >> (8 * size) == 0),
                    Value::I(i) => {
                        let bits = 8 * size as u32;
                        let fits = bits == 64 || (i >= -(1i64 << (bits - 1)) && i < (1i64 << (bits - 1)));
                        (i as u64, fits)
                    }
                    Value::Str(_) => unreachable!(),
                };
                if !fits {
                    return Err(bad(format!("{ev}.{name}: {v:?} does not fit {size} bytes")));
                }
                out[at..at + size].copy_from_slice(&raw.to_le_bytes()[..size]);
            }
            (FieldKind::Str, Value::Str(s)) if size > 0 => {
                if s.len() >= size {
                    return Err(bad(format!("{ev}.{name}: {s:?} does not fit char[{size}] with its NUL")));
                }
                out[at..at + s.len()].copy_from_slice(s.as_bytes());
            }
            (FieldKind::Str, Value::Str(s)) => {
                // The flexible `char buf[]` ends the record (ftrace/print).
                if at != fixed {
                    return Err(bad(format!("{ev}.{name}: a flexible array that is not the last field")));
                }
                out.truncate(at);
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
            _ => return Err(bad(format!("{ev}.{name}: {v:?} does not suit a field of type {}", f.type_name))),
        }
    }
    Ok(())
}

/// The formats records are encoded by.
pub(super) struct Formats {
    entry: EventFormat,
    exit: EventFormat,
    cpuid: EventFormat,
    offset: EventFormat,
    switch: EventFormat,
    print: EventFormat,
}

impl Formats {
    pub(super) fn load() -> io::Result<Formats> {
        let p = |sys: &str, t: &[u8]| EventFormat::parse(sys, t).map_err(io::Error::other);
        Ok(Formats {
            entry: p("kvm", KVM_ENTRY)?,
            exit: p("kvm", KVM_EXIT)?,
            cpuid: p("kvm", KVM_CPUID)?,
            offset: p("kvm", KVM_WRITE_TSC_OFFSET)?,
            switch: p("sched", SCHED_SWITCH)?,
            print: p("ftrace", FTRACE_PRINT)?,
        })
    }
}

/// VMX exit reason numbers (arch/x86/include/uapi/asm/vmx.h), as the
/// kvm_exit format's `__print_symbolic` table names them.
fn vmx_exit_reason(reason: &str) -> u64 {
    match reason {
        "CPUID" => 10,
        "HLT" => 12,
        "MSR_WRITE" => 32,
        _ => 0,
    }
}

/// The comm a host sched_switch names (text.rs prints the same).
fn switch_comm(pid: i32, cpu: u32) -> String {
    if pid == 0 {
        format!("swapper/{cpu}")
    } else {
        host_comm(pid)
    }
}

/// Encodes a host-side event (top-level buffer or offset instance).
pub(super) fn host_record(fm: &Formats, cfg: &SynthConfig, ev: &SynthEvent, out: &mut Vec<u8>) -> io::Result<()> {
    let vcpu_common = |vm: usize| Common { pid: cfg.vcpu_tid(vm, ev.vcpu), flags: TRACE_FLAG_IRQS_OFF, preempt_count: 1 };
    let rip = 0xffff_ffff_8100_0000 | ((ev.host.0 >> 4) & 0xff_ffff);
    let vcpu = Value::U(u64::from(ev.vcpu));
    match (&ev.what, ev.vm) {
        (Happening::KvmEntry, Some(vm)) => {
            encode_record(&fm.entry, vcpu_common(vm), &[("vcpu_id", vcpu), ("rip", Value::U(rip))], out)
        }
        (Happening::KvmExit { reason }, Some(vm)) => encode_record(
            &fm.exit,
            vcpu_common(vm),
            &[("exit_reason", Value::U(vmx_exit_reason(reason))), ("guest_rip", Value::U(rip)), ("isa", Value::U(1)), ("vcpu_id", vcpu)],
            out,
        ),
        (Happening::KvmCpuid { leaf }, Some(vm)) => encode_record(
            &fm.cpuid,
            vcpu_common(vm),
            &[
                ("function", Value::U(u64::from(*leaf))),
                ("rax", Value::U(0x4000_0001)),
                ("rbx", Value::U(0x4b4d_564b)),
                ("rcx", Value::U(0x564b_4d56)),
                ("rdx", Value::U(0x4d)),
                ("found", Value::U(1)),
            ],
            out,
        ),
        (Happening::WriteTscOffset { prev, next }, Some(vm)) => encode_record(
            &fm.offset,
            vcpu_common(vm),
            &[("vcpu_id", vcpu), ("previous_tsc_offset", Value::U(*prev)), ("next_tsc_offset", Value::U(*next))],
            out,
        ),
        (Happening::HostSwitch { prev_pid, next_pid }, _) => {
            let (pc, nc) = (switch_comm(*prev_pid, ev.host_cpu), switch_comm(*next_pid, ev.host_cpu));
            encode_record(
                &fm.switch,
                Common { pid: *prev_pid, flags: TRACE_FLAG_IRQS_OFF, preempt_count: 1 },
                &[
                    ("prev_comm", Value::Str(&pc)),
                    ("prev_pid", Value::I(i64::from(*prev_pid))),
                    ("prev_prio", Value::I(120)),
                    // TASK_RUNNING (0, "R") for idle, TASK_INTERRUPTIBLE (1, "S") otherwise.
                    ("prev_state", Value::I(i64::from(*prev_pid != 0))),
                    ("next_comm", Value::Str(&nc)),
                    ("next_pid", Value::I(i64::from(*next_pid))),
                    ("next_prio", Value::I(120)),
                ],
                out,
            )
        }
        _ => Err(bad(format!("not a host event: {ev:?}"))),
    }
}

/// Encodes a guest event; `line` is scratch for the marker text.
pub(super) fn guest_record(fm: &Formats, ev: &SynthEvent, line: &mut String, out: &mut Vec<u8>) -> io::Result<()> {
    match ev.what {
        Happening::GuestSwitch { prev_pid, next_pid } => encode_record(
            &fm.switch,
            Common { pid: prev_pid, flags: TRACE_FLAG_IRQS_OFF, preempt_count: 2 },
            &[
                ("prev_comm", Value::Str(guest_comm(prev_pid))),
                ("prev_pid", Value::I(i64::from(prev_pid))),
                ("prev_prio", Value::I(120)),
                ("prev_state", Value::I(1)),
                ("next_comm", Value::Str(guest_comm(next_pid))),
                ("next_pid", Value::I(i64::from(next_pid))),
                ("next_prio", Value::I(120)),
            ],
            out,
        ),
        Happening::GuestMarker { seq } => {
            use std::fmt::Write as _;
            line.clear();
            // tracing_mark_write (kernel/trace/trace.c) ends the buffer with
            // a newline when the writer did not.
            let _ = writeln!(line, "tscmerge-marker vcpu={} seq={seq}", ev.vcpu);
            encode_record(&fm.print, Common { pid: 4, flags: 0, preempt_count: 0 }, &[("ip", Value::U(MARK_WRITE_IP)), ("buf", Value::Str(line))], out)
        }
        _ => Err(bad(format!("not a guest event: {ev:?}"))),
    }
}

/// Packs one CPU's event stream into pages of `w`; returns the event count.
///
/// A guest TSC steps backward on a vCPU when its offset falls. PageBuilder
/// refuses a negative delta (the event header holds an unsigned one), and
/// we write no TIME_STAMP events; a page's header timestamp is absolute, so
/// the step starts a new page and every reader (kbuffer, ours) follows it.
pub(super) fn write_cpu<W: Write + Seek>(
    w: &mut TraceDatWriter<W>,
    pb: &mut PageBuilder,
    buf: BufferId,
    cpu: u32,
    events: impl Iterator<Item = SynthEvent>,
    ts_of: impl Fn(&SynthEvent) -> u64,
    mut encode: impl FnMut(&SynthEvent, &mut Vec<u8>) -> io::Result<()>,
) -> io::Result<u64> {
    let ferr = io::Error::other;
    w.start_cpu(buf, cpu).map_err(ferr)?;
    let mut rec = Vec::with_capacity(128);
    let (mut n, mut last) = (0u64, 0u64);
    for ev in events {
        let ts = ts_of(&ev);
        encode(&ev, &mut rec)?;
        if !pb.is_empty() && ts < last {
            pb.flush(|p| w.write_page(p)).map_err(ferr)?;
        }
        pb.push(ts, &rec, |p| w.write_page(p)).map_err(ferr)?;
        last = ts;
        n += 1;
    }
    pb.flush(|p| w.write_page(p)).map_err(ferr)?;
    w.end_cpu().map_err(ferr)?;
    Ok(n)
}

/// The metadata of a synthetic trace.dat holding `events`.
pub(super) fn header<'a>(events: Vec<(&'a str, &'a [u8])>, cmdlines: &'a [u8]) -> Header<'a> {
    Header {
        endian: Endian::Little,
        long_size: 8,
        page_size: 4096,
        header_page: HEADER_PAGE,
        header_event: HEADER_EVENT,
        ftrace_formats: vec![FTRACE_PRINT],
        event_formats: events,
        kallsyms: Some(KALLSYMS),
        printk: None,
        cmdlines,
    }
}

/// `buffers`: each buffer's name and events, listed as `tscmerge record`
/// lists them in its meta option (`buffer_events.NAME=sys:event,...`).
fn provenance(w: &mut TraceDatWriter<impl Write + Seek>, cfg: &SynthConfig, what: &str, buffers: &[(&str, &str)]) -> io::Result<()> {
    let mut note = format!("synthetic {what} written by tscmerge synth (seed {})\n", cfg.seed);
    for (name, events) in buffers {
        note += &format!("buffer_events.{name}={events}\n");
    }
    for o in [
        OptionData::Version(format!("tscmerge {}", env!("CARGO_PKG_VERSION"))),
        OptionData::Uname("Linux synth 6.18.0-synth #1 SMP x86_64".into()),
        OptionData::Raw { id: ftrace::write::option_id::PRIVATE_FIRST, data: [note.as_bytes(), b"\0"].concat() },
    ] {
        w.add_option(o).map_err(io::Error::other)?;
    }
    Ok(())
}

/// The events of host CPU `cpu`, both buffers: the one generator that runs
/// there (a busy host CPU or a vCPU thread), in time order.
pub fn host_cpu_stream(cfg: &SynthConfig, cpu: u32) -> Box<dyn Iterator<Item = SynthEvent>> {
    if cpu < cfg.background_cpus {
        return Box::new(HostNoise::new(cfg, cpu));
    }
    for (vm, &n) in cfg.vms.iter().enumerate() {
        for vcpu in 0..n {
            if cfg.vcpu_host_cpu(vm, vcpu) == cpu {
                let c = cfg.clone();
                return Box::new(VcpuEntity::new(cfg, vm, vcpu).filter(move |e| !e.is_guest() && c.keeps(e)));
            }
        }
    }
    Box::new(std::iter::empty())
}

/// Writes `host.dat`, `guest-vmN.dat` and `truth.tsv` into `dir` (created if
/// needed). `compression` is the v7 codec (`Compression::None` for plain v7).
pub fn write_dat(cfg: &SynthConfig, dir: &Path, compression: Compression) -> io::Result<SynthSummary> {
    std::fs::create_dir_all(dir)?;
    let fm = Formats::load()?;
    let ferr = io::Error::other;
    let mut sum = SynthSummary::default();

    // Host: every pid that appears in a record, with its comm.
    let cmd = host_cmdlines(cfg);
    let hdr = header(
        vec![("kvm", KVM_ENTRY), ("kvm", KVM_EXIT), ("kvm", KVM_CPUID), ("kvm", KVM_WRITE_TSC_OFFSET), ("sched", SCHED_SWITCH)],
        cmd.as_bytes(),
    );
    write_atomically(&dir.join("host.dat"), |out| {
        let mut w = TraceDatWriter::new(out, 7, compression, &hdr).map_err(ferr)?;
        let cpus = cfg.host_cpus();
        let top = w.add_buffer("", "x86-tsc", cpus).map_err(ferr)?;
        let inst = w.add_buffer("tsc_offset", "x86-tsc", cpus).map_err(ferr)?;
        provenance(&mut w, cfg, "KVM host", &[("", "kvm:kvm_entry,kvm:kvm_exit,kvm:kvm_cpuid,sched:sched_switch"), ("tsc_offset", "kvm:kvm_write_tsc_offset")])?;
        let mut pb = PageBuilder::default();
        let mut rec_err = |ev: &SynthEvent, out: &mut Vec<u8>| host_record(&fm, cfg, ev, out);
        for cpu in 0..cpus {
            let evs = host_cpu_stream(cfg, cpu).filter(|e| !e.is_offset_write());
            sum.host_events += write_cpu(&mut w, &mut pb, top, cpu, evs, |e| e.host.0, &mut rec_err)?;
        }
        for cpu in 0..cpus {
            let evs = host_cpu_stream(cfg, cpu).filter(SynthEvent::is_offset_write);
            sum.offset_writes += write_cpu(&mut w, &mut pb, inst, cpu, evs, |e| e.host.0, &mut rec_err)?;
        }
        w.finish().map_err(ferr)?;
        Ok(())
    })?;

    write_guests(cfg, dir, compression, &fm, &mut sum, |w, vm, _| provenance(w, cfg, &format!("guest vm{vm}"), &[("", "sched:sched_switch,ftrace:print")]))?;
    write_truth(cfg, dir)?;
    Ok(sum)
}

/// The host's saved_cmdlines: each VMM and vCPU thread, then the noise pids.
pub(super) fn host_cmdlines(cfg: &SynthConfig) -> String {
    let mut cmd = String::new();
    for vm in 0..cfg.vms.len() {
        cmd += &format!("{} qemu-system-x86\n", cfg.vmm_pid(vm));
        for vcpu in 0..cfg.vms[vm] {
            cmd += &format!("{} CPU {vcpu}/KVM\n", cfg.vcpu_tid(vm, vcpu));
        }
    }
    for pid in 100..150 {
        cmd += &format!("{pid} {}\n", host_comm(pid));
    }
    cmd
}

/// Writes each guest's `guest-vmN.dat`: one buffer with a CPU per vCPU
/// (its events at guest TSC), the options `options(writer, vm, vcpus)` adds
/// (ours or trace-cmd's), and counts the events into `sum`.
pub(super) fn write_guests(
    cfg: &SynthConfig,
    dir: &Path,
    compression: Compression,
    fm: &Formats,
    sum: &mut SynthSummary,
    mut options: impl FnMut(&mut TraceDatWriter<&mut std::io::BufWriter<safefs::AtomicFile>>, usize, u32) -> io::Result<()>,
) -> io::Result<()> {
    let ferr = io::Error::other;
    let mut gcmd = String::new();
    for pid in 1..8 {
        gcmd += &format!("{pid} {}\n", guest_comm(pid));
    }
    let ghdr = header(vec![("sched", SCHED_SWITCH)], gcmd.as_bytes());
    for (vm, &vcpus) in cfg.vms.iter().enumerate() {
        let mut n = 0;
        write_atomically(&dir.join(format!("guest-vm{vm}.dat")), |out| {
            let mut w = TraceDatWriter::new(out, 7, compression, &ghdr).map_err(ferr)?;
            let top = w.add_buffer("", "x86-tsc", vcpus).map_err(ferr)?;
            options(&mut w, vm, vcpus)?;
            let mut pb = PageBuilder::default();
            let mut line = String::new();
            for vcpu in 0..vcpus {
                let evs = VcpuEntity::new(cfg, vm, vcpu).filter(SynthEvent::is_guest);
                let ts = |e: &SynthEvent| e.guest.unwrap_or_default();
                n += write_cpu(&mut w, &mut pb, top, vcpu, evs, ts, |e, out| guest_record(fm, e, &mut line, out))?;
            }
            w.finish().map_err(ferr)?;
            Ok(())
        })?;
        sum.guest_events.push(n);
    }
    Ok(())
}

/// `truth.tsv` exactly as [`super::write_text`] writes it: guest events in
/// guest file order (by guest TSC across vCPUs), each with its true host TSC.
pub(super) fn write_truth(cfg: &SynthConfig, dir: &Path) -> io::Result<()> {
    write_atomically(&dir.join("truth.tsv"), |t| {
        writeln!(t, "guest\tcpu\tguest_tsc\thost_tsc")?;
        for vm in 0..cfg.vms.len() {
            for e in guest_events(cfg, vm) {
                writeln!(t, "vm{vm}\t{}\t{}\t{}", e.vcpu, e.guest.unwrap_or_default(), e.host.0)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftrace::format::FieldValue;

    #[test]
    fn records_decode_through_their_formats() {
        let fm = Formats::load().unwrap();
        let mut out = Vec::new();
        encode_record(
            &fm.switch,
            Common { pid: 7, flags: 1, preempt_count: 2 },
            &[("prev_comm", Value::Str("sleep")), ("prev_pid", Value::I(7)), ("next_pid", Value::I(-3)), ("prev_state", Value::I(1))],
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 64);
        let v = |name: &str| fm.switch.field(name).unwrap().value(&out, Endian::Little).unwrap();
        assert_eq!(v("common_type"), FieldValue::Unsigned(372));
        assert_eq!(v("common_pid"), FieldValue::Signed(7));
        assert_eq!(v("common_preempt_count"), FieldValue::Unsigned(2));
        assert_eq!(v("prev_comm"), FieldValue::Str(b"sleep"));
        assert_eq!(v("next_pid"), FieldValue::Signed(-3));
        assert_eq!(v("prev_state"), FieldValue::Signed(1));

        encode_record(&fm.print, Common::default(), &[("ip", Value::U(5)), ("buf", Value::Str("hi\n"))], &mut out).unwrap();
        assert_eq!(out.len(), 16 + 4);
        assert_eq!(fm.print.field("buf").unwrap().value(&out, Endian::Little), Some(FieldValue::Str(b"hi\n")));

        // kvm_entry's struct ends at 36 and is 8-aligned: 40 bytes.
        encode_record(&fm.entry, Common::default(), &[("vcpu_id", Value::U(3))], &mut out).unwrap();
        assert_eq!(out.len(), 40);

        let e = |f: &EventFormat, vals: &[(&str, Value)]| encode_record(f, Common::default(), vals, &mut Vec::new()).is_err();
        assert!(e(&fm.switch, &[("prev_comm", Value::Str("sixteen-chars-xx"))]));
        assert!(e(&fm.switch, &[("prev_pid", Value::I(1 << 40))]));
        assert!(e(&fm.entry, &[("vcpu_id", Value::U(1 << 32))]));
        assert!(e(&fm.entry, &[("nope", Value::U(0))]));
        assert!(e(&fm.entry, &[("vcpu_id", Value::Str("x"))]));
    }
}
