//! Where merged events go. Sinks know nothing of where events came from:
//! they see a machine index, its name, and an [`EventView`].
//!
//! - [`text`], [`json`]: lines for people and scripts;
//! - [`chrome`]: Chrome trace event JSON (chrome://tracing, Perfetto UI);
//! - [`perfetto`]: Perfetto protobuf trace, one machine per host/guest;
//! - [`dat`]: trace.dat v7 with one buffer per machine (trace-cmd, KernelShark).

pub mod chrome;
pub mod dat;
pub mod json;
pub mod perfetto;
pub mod perfetto_proto;
pub mod text;

pub use chrome::ChromeSink;
pub use dat::{DatSink, MachineProvenance};
pub use json::JsonSink;
pub use perfetto::{PerfettoSink, VcpuThread};
pub use text::{TextSink, TsFormat};


pub use crate::event::{field_int, field_str, for_each_field, prev_state_bits, FieldVal};

/// Host TSC cycles to nanoseconds with the TSC frequency in kHz, in 128 bits.
pub fn tsc_to_ns(ts: u64, khz: u64) -> u64 {
    (ts as u128 * 1_000_000 / khz.max(1) as u128) as u64
}

/// How host TSC becomes nanoseconds in the outputs that show time as such.
///
/// In this precedence (cli `merge`): `--tsc-khz`, then the host file's
/// TSC2NSEC option (trace-cmd 3.x writes it whenever the clock is a TSC),
/// then the frequency `tscmerge record` noted (Perfetto and Chrome only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostNs {
    /// The TSC frequency in kHz: `ns = ts * 10^6 / khz`.
    Khz(u64),
    /// A trace.dat's TSC2NSEC option: `ns = ((ts * mult) >> shift) + offset`.
    Tsc2Nsec { mult: u32, shift: u32, offset: u64 },
}

impl HostNs {
    /// `ts` in nanoseconds, the product in 128 bits (trace-cmd's
    /// `mul_u64_u32_shr` gives the same for `shift` up to 32; above, where
    /// the C's shift is undefined, this is the exact value). The offset is
    /// added as the TSC2NSEC option defines it; trace-cmd 3.1.6 reads it but
    /// neither writes one other than 0 nor adds it in `report`.
    pub fn ns(self, ts: u64) -> u64 {
        match self {
            HostNs::Khz(khz) => tsc_to_ns(ts, khz),
            HostNs::Tsc2Nsec { mult, shift, offset } => {
                let p = (ts as u128 * mult as u128).checked_shr(shift).unwrap_or(0);
                (p as u64).wrapping_add(offset)
            }
        }
    }

    /// A JSON object describing the conversion (for output headers).
    pub fn describe_json(self) -> String {
        match self {
            HostNs::Khz(khz) => format!("\"tsc_khz\":{khz}"),
            HostNs::Tsc2Nsec { mult, shift, offset } => format!("\"tsc2nsec\":{{\"mult\":{mult},\"shift\":{shift},\"offset\":{offset}}}"),
        }
    }
}

#[cfg(test)]
mod host_ns_tests {
    use super::HostNs;

    #[test]
    fn tsc2nsec_is_exact_in_128_bits() {
        // 2 GHz: mult 2^30, shift 31.
        let c = HostNs::Tsc2Nsec { mult: 1 << 30, shift: 31, offset: 0 };
        assert_eq!(c.ns(2_000_000_000), 1_000_000_000);
        // A product beyond 64 bits.
        let c = HostNs::Tsc2Nsec { mult: 735_842_807, shift: 31, offset: 5 };
        let ts = u64::MAX / 3;
        assert_eq!(c.ns(ts), ((ts as u128 * 735_842_807) >> 31) as u64 + 5);
        assert_eq!(HostNs::Khz(2_000_000).ns(3_000), 1_500);
        assert_eq!(HostNs::Tsc2Nsec { mult: 1, shift: 200, offset: 0 }.ns(u64::MAX), 0);
    }
}
