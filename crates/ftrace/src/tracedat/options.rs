//! trace.dat options (trace-cmd Documentation/trace-cmd/trace-cmd.dat.v7.5.txt,
//! "OPTIONS SECTION"; lib/trace-cmd/trace-input.c `handle_options`).
//! Option ids are an open set: unknown ones survive as [`TraceOption::Unknown`].

use crate::{Endian, Error, FileOffset, Reader, Result};

/// Option ids (include/trace-cmd/trace-cmd.h `enum tracecmd_option_id`).
pub mod id {
    pub const DONE: u16 = 0;
    pub const DATE: u16 = 1;
    pub const CPUSTAT: u16 = 2;
    pub const BUFFER: u16 = 3;
    pub const TRACECLOCK: u16 = 4;
    pub const UNAME: u16 = 5;
    pub const HOOK: u16 = 6;
    pub const OFFSET: u16 = 7;
    pub const CPUCOUNT: u16 = 8;
    pub const VERSION: u16 = 9;
    pub const PROCMAPS: u16 = 10;
    pub const TRACEID: u16 = 11;
    pub const TIME_SHIFT: u16 = 12;
    pub const GUEST: u16 = 13;
    pub const TSC2NSEC: u16 = 14;
    pub const STRINGS: u16 = 15;
    pub const HEADER_INFO: u16 = 16;
    pub const FTRACE_EVENTS: u16 = 17;
    pub const EVENT_FORMATS: u16 = 18;
    pub const KALLSYMS: u16 = 19;
    pub const PRINTK: u16 = 20;
    pub const CMDLINES: u16 = 21;
    pub const BUFFER_TEXT: u16 = 22;
    pub const BTF_FILE: u16 = 23;
    pub const LAST_BOOT_INFO: u16 = 24;
    pub const MODULES_FILE: u16 = 25;
}

/// One option, typed where the format is documented.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceOption {
    /// Offset of event timestamps from the time of day, as text ("0x...", µs).
    Date(String),
    /// `per_cpu/cpuN/stats`; `cpu` from its `CPU: N` line when present.
    CpuStat { cpu: Option<u32>, text: String },
    /// The `trace_clock` file (`local global [x86-tsc] ...`).
    TraceClock(String),
    Uname(String),
    Hook(String),
    /// A fixed offset added to timestamps, as text.
    Offset(String),
    CpuCount(u32),
    Version(String),
    ProcMaps(String),
    TraceId(u64),
    TimeShift(TimeShift),
    Guest(Guest),
    /// An option whose body does not parse where trace-cmd would skip it
    /// too (a GUEST option: trace-input.c `trace_guest_load` drops a bad
    /// one and reads on): the file stays readable, and the error is kept
    /// for whoever needs the option.
    Malformed { id: u16, error: String },
    Tsc2Nsec { mult: u32, shift: u32, offset: u64 },
    /// A flyrecord buffer (instance); its full description is in
    /// [`super::TraceDat::buffers`].
    Buffer { name: String, offset: FileOffset },
    /// A latency (text) buffer.
    BufferText { name: String, offset: FileOffset },
    /// A v7 pointer to a metadata section (HEADER_INFO .. MODULES_FILE).
    Section { id: u16, offset: FileOffset },
    Unknown { id: u16, data: Vec<u8> },
}

/// TIME_SHIFT: host/guest time synchronisation samples, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeShift {
    pub peer_trace_id: u64,
    pub flags: u32,
    pub cpus: Vec<TimeShiftCpu>,
}

impl TimeShift {
    /// Flag: offsets are interpolated linearly between samples
    /// (include/trace-cmd/trace-cmd.h `TRACECMD_TSYNC_FLAG_INTERPOLATE`).
    pub const FLAG_INTERPOLATE: u32 = 1;

    /// Samples over all CPUs.
    pub fn sample_count(&self) -> usize {
        self.cpus.iter().map(|c| c.times.len()).sum()
    }
}

/// One TIME_SHIFT sample, typed: at guest time `time` (the guest's raw
/// trace timestamp of trace-cmd's sync marker), the host answered with
/// `offset` = −(KVM's TSC offset) and the vCPU's scaling (trace-cmd
/// lib/trace-cmd/trace-timesync-kvm.c `kvm_clock_host`: `packet.offset =
/// -kvm_offset`; ratio 1 and fraction bits 0 when KVM's ratio is its
/// default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeShiftSample {
    pub time: u64,
    /// As stored: the KVM offset negated.
    pub offset: i64,
    pub scaling: u64,
    /// 0 when the file has no fraction bits (before trace-cmd 3.0).
    pub frac_bits: u64,
}

impl TimeShiftSample {
    /// The KVM TSC offset (`guest = ((host * ratio) >> frac) + offset`),
    /// two's complement.
    pub fn kvm_offset(&self) -> u64 {
        (self.offset as u64).wrapping_neg()
    }
}

/// One CPU's samples: parallel arrays. Offsets are the raw stored values
/// (trace-cmd stores the guest→host correction, i.e. the KVM offset negated).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TimeShiftCpu {
    pub times: Vec<u64>,
    pub offsets: Vec<i64>,
    pub scalings: Vec<u64>,
    /// Fraction bits per sample; absent in files from before trace-cmd 3.0.
    pub frac_bits: Option<Vec<u64>>,
}

impl TimeShiftCpu {
    /// The samples in file order.
    pub fn samples(&self) -> impl Iterator<Item = TimeShiftSample> + '_ {
        (0..self.times.len()).map(move |i| TimeShiftSample {
            time: self.times[i],
            offset: self.offsets.get(i).copied().unwrap_or(0),
            scaling: self.scalings.get(i).copied().unwrap_or(0),
            frac_bits: self.frac_bits.as_ref().and_then(|f| f.get(i)).copied().unwrap_or(0),
        })
    }
}

/// GUEST: a traced guest and the host tasks running its vCPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub name: String,
    pub trace_id: u64,
    /// `(vcpu, host pid)`, each vcpu below the count the option gives.
    pub vcpus: Vec<(u32, u32)>,
}

impl Guest {
    /// The host thread running `vcpu`.
    pub fn vcpu_pid(&self, vcpu: u32) -> Option<u32> {
        self.vcpus.iter().find(|&&(v, _)| v == vcpu).map(|&(_, p)| p)
    }
}

/// Option text: NUL-terminated when present; some options are empty.
pub(crate) fn text(data: &[u8]) -> String {
    let end = memchr::memchr(0, data).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// The current clock in `trace_clock` text: the bracketed name, or the whole
/// trimmed text when there are no brackets.
pub(crate) fn current_clock(text: &str) -> Option<String> {
    if let Some(a) = text.find('[') {
        let rest = &text[a + 1..];
        return rest.find(']').map(|b| rest[..b].to_string());
    }
    let t = text.trim();
    (!t.is_empty() && !t.contains(char::is_whitespace)).then(|| t.to_string())
}

/// Reads `n` u64 values, after checking they are there (so the allocation is
/// bounded by the data).
fn u64s(r: &mut Reader<'_>, n: u32, what: &'static str) -> Result<Vec<u64>> {
    let bytes = n as u64 * 8;
    if bytes > r.remaining() as u64 {
        return Err(Error::Truncated { offset: r.offset(), needed: bytes, what });
    }
    (0..n).map(|_| r.u64(what)).collect()
}

fn time_shift(data: &[u8], endian: Endian, offset: u64) -> Result<TimeShift> {
    let mut r = Reader::new(data, endian, offset);
    let peer_trace_id = r.u64("TIME_SHIFT peer trace id")?;
    let flags = r.u32("TIME_SHIFT flags")?;
    let ncpu = r.u32("TIME_SHIFT cpu count")?;
    // Each CPU needs at least its u32 count.
    if ncpu as u64 * 4 > r.remaining() as u64 {
        return Err(Error::invalid(offset + 12, format!("TIME_SHIFT cpu count {ncpu} exceeds the option size")));
    }
    let mut cpus = Vec::with_capacity(ncpu as usize);
    for _ in 0..ncpu {
        let n = r.u32("TIME_SHIFT sample count")?;
        let times = u64s(&mut r, n, "TIME_SHIFT times")?;
        let offsets = u64s(&mut r, n, "TIME_SHIFT offsets")?.into_iter().map(|v| v as i64).collect();
        let scalings = u64s(&mut r, n, "TIME_SHIFT scalings")?;
        cpus.push(TimeShiftCpu { times, offsets, scalings, frac_bits: None });
    }
    // Fraction bits follow for every CPU when bytes remain (trace-input.c
    // `tsync_cpu_offsets_load`).
    if !r.is_empty() {
        for c in cpus.iter_mut() {
            let n = c.times.len() as u32;
            c.frac_bits = Some(u64s(&mut r, n, "TIME_SHIFT fraction bits")?);
        }
    }
    Ok(TimeShift { peer_trace_id, flags, cpus })
}

fn guest(data: &[u8], endian: Endian, offset: u64) -> Result<Guest> {
    let mut r = Reader::new(data, endian, offset);
    let name = String::from_utf8_lossy(r.cstr("GUEST name")?).into_owned();
    let trace_id = r.u64("GUEST trace id")?;
    let n = r.u32("GUEST cpu count")?;
    if n as u64 * 8 > r.remaining() as u64 {
        return Err(Error::Truncated { offset: r.offset(), needed: n as u64 * 8, what: "GUEST vcpu table" });
    }
    let mut vcpus = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = r.offset();
        let vcpu = r.u32("GUEST vcpu")?;
        // trace_guest_load: a vCPU id at or past the count is an error.
        if vcpu >= n {
            return Err(Error::invalid(at, format!("GUEST vcpu {vcpu} is not below the option's vcpu count {n}")));
        }
        vcpus.push((vcpu, r.u32("GUEST vcpu pid")?));
    }
    Ok(Guest { name, trace_id, vcpus })
}

/// Types one option. `offset` is the file offset of `data` (for errors);
/// BUFFER/BUFFER_TEXT bodies are parsed by the caller and given back here
/// only as their name and section offset.
pub(crate) fn parse(opt: u16, data: &[u8], endian: Endian, offset: u64) -> Result<TraceOption> {
    let mut r = Reader::new(data, endian, offset);
    Ok(match opt {
        id::DATE => TraceOption::Date(text(data)),
        id::CPUSTAT => {
            let text = text(data);
            let cpu = text.lines().find_map(|l| l.strip_prefix("CPU:")).and_then(|v| v.trim().parse().ok());
            TraceOption::CpuStat { cpu, text }
        }
        id::TRACECLOCK => TraceOption::TraceClock(text(data)),
        id::UNAME => TraceOption::Uname(text(data)),
        id::HOOK => TraceOption::Hook(text(data)),
        id::OFFSET => TraceOption::Offset(text(data)),
        id::CPUCOUNT => TraceOption::CpuCount(r.u32("CPUCOUNT option")?),
        id::VERSION => TraceOption::Version(text(data)),
        id::PROCMAPS => TraceOption::ProcMaps(text(data)),
        id::TRACEID => TraceOption::TraceId(r.u64("TRACEID option")?),
        id::TIME_SHIFT => TraceOption::TimeShift(time_shift(data, endian, offset)?),
        id::GUEST => match guest(data, endian, offset) {
            Ok(g) => TraceOption::Guest(g),
            Err(e) => TraceOption::Malformed { id: opt, error: e.to_string() },
        },
        id::TSC2NSEC => TraceOption::Tsc2Nsec {
            mult: r.u32("TSC2NSEC mult")?,
            shift: r.u32("TSC2NSEC shift")?,
            offset: r.u64("TSC2NSEC offset")?,
        },
        id::BUFFER | id::BUFFER_TEXT => {
            let off = r.u64("buffer option offset")?;
            let name = String::from_utf8_lossy(r.cstr("buffer option name")?).into_owned();
            if opt == id::BUFFER {
                TraceOption::Buffer { name, offset: FileOffset(off) }
            } else {
                TraceOption::BufferText { name, offset: FileOffset(off) }
            }
        }
        id::HEADER_INFO..=id::CMDLINES | id::BTF_FILE | id::MODULES_FILE if data.len() >= 8 => {
            TraceOption::Section { id: opt, offset: FileOffset(r.u64("section offset")?) }
        }
        _ => TraceOption::Unknown { id: opt, data: data.to_vec() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn guest_option_typed() {
        let d = le(&[b"vm1\0", &7u64.to_le_bytes(), &2u32.to_le_bytes(), &1u32.to_le_bytes(), &501u32.to_le_bytes(), &0u32.to_le_bytes(), &500u32.to_le_bytes()]);
        let TraceOption::Guest(g) = parse(id::GUEST, &d, Endian::Little, 100).unwrap() else { panic!() };
        assert_eq!((g.name.as_str(), g.trace_id, g.vcpus.clone()), ("vm1", 7, vec![(1, 501), (0, 500)]));
        assert_eq!((g.vcpu_pid(0), g.vcpu_pid(1), g.vcpu_pid(2)), (Some(500), Some(501), None));
    }

    #[test]
    fn bad_guest_options_are_kept_as_malformed() {
        // A count far beyond the bytes: refused before any allocation.
        let d = le(&[b"g\0", &1u64.to_le_bytes(), &u32::MAX.to_le_bytes(), &[0; 8]]);
        let o = parse(id::GUEST, &d, Endian::Little, 0).unwrap();
        assert!(matches!(&o, TraceOption::Malformed { id: 13, error } if error.contains("vcpu table")), "{o:?}");
        // A vCPU id past the count (trace_guest_load refuses it too).
        let d = le(&[b"g\0", &1u64.to_le_bytes(), &1u32.to_le_bytes(), &3u32.to_le_bytes(), &9u32.to_le_bytes()]);
        let o = parse(id::GUEST, &d, Endian::Little, 0).unwrap();
        assert!(matches!(&o, TraceOption::Malformed { error, .. } if error.contains("vcpu 3 is not below")), "{o:?}");
        // Truncated trace id.
        assert!(matches!(parse(id::GUEST, b"g\0\x01", Endian::Little, 0).unwrap(), TraceOption::Malformed { .. }));
    }

    fn time_shift_bytes(frac: bool) -> Vec<u8> {
        let mut d = le(&[&0xabcu64.to_le_bytes(), &1u32.to_le_bytes(), &2u32.to_le_bytes()]);
        // CPU 0: two samples; CPU 1: one.
        d.extend(2u32.to_le_bytes());
        for v in [100u64, 200, (-5i64) as u64, (-6i64) as u64, 1, 1] {
            d.extend(v.to_le_bytes());
        }
        d.extend(1u32.to_le_bytes());
        for v in [300u64, 9, 0xc000_0000_0000] {
            d.extend(v.to_le_bytes());
        }
        if frac {
            for v in [0u64, 0, 48] {
                d.extend(v.to_le_bytes());
            }
        }
        d
    }

    #[test]
    fn time_shift_typed_with_and_without_fraction_bits() {
        let TraceOption::TimeShift(t) = parse(id::TIME_SHIFT, &time_shift_bytes(true), Endian::Little, 0).unwrap() else { panic!() };
        assert_eq!((t.peer_trace_id, t.flags, t.cpus.len(), t.sample_count()), (0xabc, TimeShift::FLAG_INTERPOLATE, 2, 3));
        let s: Vec<TimeShiftSample> = t.cpus[0].samples().collect();
        assert_eq!(s[1], TimeShiftSample { time: 200, offset: -6, scaling: 1, frac_bits: 0 });
        assert_eq!(s[1].kvm_offset(), 6);
        let s1: Vec<TimeShiftSample> = t.cpus[1].samples().collect();
        assert_eq!(s1, vec![TimeShiftSample { time: 300, offset: 9, scaling: 0xc000_0000_0000, frac_bits: 48 }]);
        let TraceOption::TimeShift(t) = parse(id::TIME_SHIFT, &time_shift_bytes(false), Endian::Little, 0).unwrap() else { panic!() };
        assert!(t.cpus.iter().all(|c| c.frac_bits.is_none()));
        assert_eq!(t.cpus[1].samples().next().unwrap().frac_bits, 0);
    }

    #[test]
    fn time_shift_counts_are_bounded_by_the_bytes() {
        // A CPU count, then a sample count, far beyond the option: errors,
        // no allocation of the claimed size.
        let d = le(&[&1u64.to_le_bytes(), &0u32.to_le_bytes(), &u32::MAX.to_le_bytes()]);
        assert!(parse(id::TIME_SHIFT, &d, Endian::Little, 0).unwrap_err().to_string().contains("cpu count"));
        let d = le(&[&1u64.to_le_bytes(), &0u32.to_le_bytes(), &1u32.to_le_bytes(), &u32::MAX.to_le_bytes(), &[0; 16]]);
        assert!(parse(id::TIME_SHIFT, &d, Endian::Little, 0).is_err());
        // Fraction bits cut short.
        let mut d = time_shift_bytes(true);
        d.truncate(d.len() - 4);
        assert!(parse(id::TIME_SHIFT, &d, Endian::Little, 0).is_err());
    }

    #[test]
    fn trace_id_and_tsc2nsec() {
        assert_eq!(parse(id::TRACEID, &5u64.to_be_bytes(), Endian::Big, 0).unwrap(), TraceOption::TraceId(5));
        let d = le(&[&735842807u32.to_le_bytes(), &31u32.to_le_bytes(), &0u64.to_le_bytes()]);
        assert_eq!(parse(id::TSC2NSEC, &d, Endian::Little, 0).unwrap(), TraceOption::Tsc2Nsec { mult: 735842807, shift: 31, offset: 0 });
    }
}
