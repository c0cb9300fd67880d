//! The TSC frequency, for meta.txt: from the perf mmap page's `time_mult` /
//! `time_shift` (the kernel's own TSC → ns conversion, include/uapi/linux/
//! perf_event.h: ns = tsc * mult >> shift) when `cap_user_time` is set, else
//! from /proc/cpuinfo `cpu MHz` (coarser; what it measures depends on the CPU).

use std::io;

/// Where the frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    /// perf_event_open mmap page, `cap_user_time`.
    PerfMmap,
    /// /proc/cpuinfo `cpu MHz` of the first CPU with the `tsc` flag.
    Cpuinfo,
}

impl TscSource {
    /// Name used in meta.txt.
    pub fn as_str(self) -> &'static str {
        match self {
            TscSource::PerfMmap => "perf_mmap",
            TscSource::Cpuinfo => "cpuinfo_mhz",
        }
    }
}

/// A TSC frequency and its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TscFreq {
    /// Cycles per second.
    pub hz: f64,
    /// Where it came from.
    pub source: TscSource,
    /// perf's (mult, shift) when that was the source.
    pub mult_shift: Option<(u32, u16)>,
}

/// Best available TSC frequency.
pub fn tsc_frequency() -> Option<TscFreq> {
    if let Ok(Some((mult, shift))) = perf_mult_shift() {
        if mult != 0 {
            let hz = 1e9 * (shift as f64).exp2() / mult as f64;
            return Some(TscFreq {
                hz,
                source: TscSource::PerfMmap,
                mult_shift: Some((mult, shift)),
            });
        }
    }
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo_mhz(&text).map(|mhz| TscFreq {
        hz: mhz * 1e6,
        source: TscSource::Cpuinfo,
        mult_shift: None,
    })
}

/// `cpu MHz` of the first processor whose flags include `tsc`.
pub fn cpuinfo_mhz(text: &str) -> Option<f64> {
    for block in text.split("\n\n") {
        let mut mhz = None;
        let mut tsc = false;
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "cpu MHz" => mhz = v.trim().parse::<f64>().ok(),
                "flags" => tsc = v.split_whitespace().any(|f| f == "tsc"),
                _ => {}
            }
        }
        if tsc {
            if let Some(m) = mhz.filter(|m| *m > 0.0) {
                return Some(m);
            }
        }
    }
    None
}

/// (time_mult, time_shift) from a dummy software event's mmap page, if
/// `cap_user_time` (bit 3 of `capabilities` at offset 40).
/// include/uapi/linux/perf_event.h
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

pub(crate) fn perf_mult_shift() -> io::Result<Option<(u32, u16)>> {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 = 64 bytes.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // type = PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&9u64.to_ne_bytes()); // config = PERF_COUNT_SW_DUMMY
                                                      // flags: disabled (bit 0), exclude_kernel (5), exclude_hv (6)
    attr[40..48].copy_from_slice(&((1u64) | (1 << 5) | (1 << 6)).to_ne_bytes());
    // SAFETY: attr is a valid, sized perf_event_attr; pid 0, cpu -1, no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as libc::c_int;
    let len = crate::sys::page_size();
    // SAFETY: mapping the first (user) page of a perf fd, read-only.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let base = p as *const u8;
    // SAFETY: the page is at least 72 bytes; fields are naturally aligned; the
    // kernel updates them under the `lock` seqcount at offset 8.
    let out = unsafe {
        let rd32 = |o: usize| std::ptr::read_volatile(base.add(o) as *const u32);
        let rd16 = |o: usize| std::ptr::read_volatile(base.add(o) as *const u16);
        let rd64 = |o: usize| std::ptr::read_volatile(base.add(o) as *const u64);
        let mut res = None;
        for _ in 0..100 {
            let seq = rd32(8);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let caps = rd64(40);
            let shift = rd16(50);
            let mult = rd32(52);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if rd32(8) == seq {
                res = if caps & (1 << 3) != 0 {
                    Some((mult, shift))
                } else {
                    None
                };
                break;
            }
        }
        res
    };
    // SAFETY: unmapping what we mapped; closing our fd.
    unsafe {
        libc::munmap(p, len);
        libc::close(fd);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_parse() {
        let t = "processor\t: 0\ncpu MHz\t\t: 2999.998\nflags\t\t: fpu tsc msr\n\nprocessor\t: 1\n";
        assert_eq!(cpuinfo_mhz(t), Some(2999.998));
        assert_eq!(cpuinfo_mhz("cpu MHz : 1.0\nflags : fpu\n"), None);
    }

    #[test]
    fn frequency_is_plausible_and_matches_rdtsc_over_a_sleep() {
        let Some(f) = tsc_frequency() else {
            eprintln!("SKIPPED: no TSC frequency source on this machine");
            return;
        };
        let (t0, i0) = (crate::sys::rdtsc(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (t1, el) = (crate::sys::rdtsc(), i0.elapsed());
        let measured = (t1 - t0) as f64 / el.as_secs_f64();
        eprintln!(
            "tsc {:?}: {:.0} Hz, measured {:.0} Hz; perf page: {:?}",
            f.source,
            f.hz,
            measured,
            perf_mult_shift()
        );
        assert!(
            (f.hz - measured).abs() / measured < 0.02,
            "{} vs {}",
            f.hz,
            measured
        );
    }
}
