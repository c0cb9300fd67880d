//! trace-cmd 3.x's host-guest options, as its recorder fills them
//! (tracecmd/trace-record.c; lib/trace-cmd/trace-output.c
//! `tracecmd_write_guest_option`): the values behind [`OptionData::TraceId`],
//! [`OptionData::Guest`] and [`OptionData::Tsc2Nsec`], shared by everything
//! that writes them (`tscmerge record`, `merge --format dat`, `synth
//! --format trace-cmd`). [`OptionData::TimeShift`] samples come from an
//! offset timeline, which lives in `tscmerge::clock`.

use super::OptionData;

/// TSC2NSEC from perf's own conversion (the perf mmap page's `time_mult` and
/// `time_shift`, include/uapi/linux/perf_event.h): what trace-record.c
/// `get_tsc_nsec` stores, with offset 0 (trace-cmd fills the offset only
/// for its `--tsc2nsec` flag outside host-guest tracing).
pub fn tsc2nsec_from_perf(mult: u32, shift: u16) -> OptionData {
    OptionData::Tsc2Nsec { mult, shift: u32::from(shift), offset: 0 }
}

/// TSC2NSEC for a TSC of `khz` where perf's pair is unknown: ns = (tsc *
/// mult) >> 31, mult = 10^6 * 2^31 / kHz (fits 32 bits from 500 kHz up;
/// saturates below).
pub fn tsc2nsec_from_khz(khz: u64) -> OptionData {
    let shift = 31;
    let mult = ((1_000_000u128 << shift) / khz.max(1) as u128).min(u32::MAX as u128) as u32;
    OptionData::Tsc2Nsec { mult, shift, offset: 0 }
}

/// A guest's trace id when nobody chose one: FNV-1a of its name, mixed with
/// the host's trace id, so that one name under two hosts (sessions) gets two
/// ids and a guest file is not tied to another session's host by accident.
pub fn derived_trace_id(name: &str, host_trace_id: u64) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)) ^ host_trace_id
}

/// A fresh trace id, as trace-cmd draws one per session (trace-record.c
/// `tracecmd_generate_traceid`, random); from the OS's random source,
/// else from the time and the process id.
pub fn random_trace_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_ok() {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    derived_trace_id(&std::process::id().to_string(), t)
}

/// A GUEST option: `name`, its trace id, and each vCPU's host thread
/// (sorted by vCPU, as trace-cmd stores `cpu_pid` indexed by vCPU).
pub fn guest_option(name: &str, trace_id: u64, vcpus: impl IntoIterator<Item = (u32, u32)>) -> OptionData {
    let mut vcpus: Vec<(u32, u32)> = vcpus.into_iter().collect();
    vcpus.sort_unstable();
    OptionData::Guest { name: name.to_string(), trace_id, vcpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc2nsec_values() {
        assert_eq!(tsc2nsec_from_khz(2_000_000), OptionData::Tsc2Nsec { mult: 1 << 30, shift: 31, offset: 0 });
        // This machine's perf page (2.1 GHz-ish): passed through unchanged.
        assert_eq!(tsc2nsec_from_perf(7_990_000, 24), OptionData::Tsc2Nsec { mult: 7_990_000, shift: 24, offset: 0 });
        assert_eq!(tsc2nsec_from_khz(0), OptionData::Tsc2Nsec { mult: u32::MAX, shift: 31, offset: 0 });
    }

    #[test]
    fn derived_ids_differ_by_name_and_host() {
        assert_ne!(derived_trace_id("vm0", 1), derived_trace_id("vm1", 1));
        assert_ne!(derived_trace_id("vm0", 1), derived_trace_id("vm0", 2));
        assert_eq!(derived_trace_id("", 0), 0xcbf2_9ce4_8422_2325);
        assert_ne!(random_trace_id(), random_trace_id());
    }

    #[test]
    fn guest_vcpus_sorted() {
        let OptionData::Guest { vcpus, .. } = guest_option("g", 1, [(1, 11), (0, 10)]) else { panic!() };
        assert_eq!(vcpus, [(0, 10), (1, 11)]);
    }
}
