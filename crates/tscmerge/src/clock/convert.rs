//! Guest TSC ↔ host TSC arithmetic for one offset period.
//!
//! The kernel computes a guest's TSC from the host's as
//! `guest = ((host * ratio) >> frac) + offset (mod 2^64)`
//! (arch/x86/kvm/x86.c: `kvm_scale_tsc` = `mul_u64_u64_shr(tsc, ratio, frac)`,
//! then `kvm_read_l1_tsc` adds the L1 offset). Without scaling the ratio is
//! `1 << frac` and the formula reduces to `host + offset`.
//!
//! The inverse is done exactly in 128-bit integers. Scaling throws bits away
//! (the `>> frac`), so several host values can give one guest value; we map
//! a guest value to the *smallest* host value that produces it:
//! `host = ceil(((guest - offset) << frac) / ratio)`. Hence for every host h:
//! `to_guest(to_host(to_guest(h))) == to_guest(h)` and `to_host(to_guest(h)) <= h`,
//! with equality whenever `ratio <= 1 << frac` (a guest TSC no faster than the
//! host's; each guest tick then has a host tick of its own). Property tests below.

use crate::time::{GuestTsc, HostTsc};

/// TSC scaling parameters of a vCPU: `tsc-scaling-ratio` and
/// `tsc-scaling-ratio-frac-bits` in debugfs (48 on Intel, 32 on AMD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Scaling {
    pub ratio: u64,
    pub frac_bits: u32,
}

impl Scaling {
    /// The identity ratio for `frac_bits` (what KVM uses when the guest runs
    /// at the host's frequency).
    pub fn identity(frac_bits: u32) -> Scaling {
        Scaling { ratio: 1u64 << frac_bits.min(63), frac_bits }
    }

    pub fn is_identity(&self) -> bool {
        self.frac_bits < 64 && self.ratio == 1u64 << self.frac_bits
    }

    /// Parses `RATIO:FRAC` (decimal or 0x-hex ratio), as `--tsc-scaling` takes it.
    pub fn parse(s: &str) -> Option<Scaling> {
        let (r, f) = s.split_once(':')?;
        let ratio = parse_u64(r.trim())?;
        let frac_bits: u32 = f.trim().parse().ok()?;
        (ratio != 0 && frac_bits < 64).then_some(Scaling { ratio, frac_bits })
    }
}

pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses a TSC offset as the tracepoint prints it (unsigned), or signed as
/// debugfs prints it, or hex; stored as the two's-complement u64.
pub fn parse_offset(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(neg) = s.strip_prefix('-') {
        return parse_u64(neg).map(|v| v.wrapping_neg());
    }
    parse_u64(s)
}

/// One offset (and optional scaling) in force for a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The L1 TSC offset, two's complement (the tracepoint prints it unsigned).
    pub offset: u64,
    pub scaling: Option<Scaling>,
}

impl Conversion {
    pub fn new(offset: u64, scaling: Option<Scaling>) -> Conversion {
        Conversion { offset, scaling: scaling.filter(|s| !s.is_identity()) }
    }

    /// host → guest, exactly as the kernel computes it.
    pub fn to_guest(&self, host: HostTsc) -> GuestTsc {
        let scaled = match self.scaling {
            None => host.0,
            Some(s) => ((host.0 as u128 * s.ratio as u128) >> s.frac_bits) as u64,
        };
        GuestTsc(scaled.wrapping_add(self.offset))
    }

    /// guest → host: the smallest host TSC whose guest value is `guest`
    /// (see the module comment). Saturates at `u64::MAX` when no host value
    /// in range maps there (a guest value beyond what this period can produce).
    pub fn to_host(&self, guest: GuestTsc) -> HostTsc {
        let d = guest.0.wrapping_sub(self.offset);
        match self.scaling {
            None => HostTsc(d),
            Some(s) => {
                let num = (d as u128) << s.frac_bits;
                let r = s.ratio as u128;
                let h = num.div_ceil(r);
                HostTsc(u64::try_from(h).unwrap_or(u64::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_offsets_wrap() {
        // Typical creation write: next = -host_tsc_at_creation.
        let c = Conversion::new(parse_offset("18446743876406744092").unwrap(), None);
        assert_eq!(c.offset as i64, -197_302_807_524);
        assert_eq!(c.to_guest(HostTsc(197_302_807_524)), GuestTsc(0));
        assert_eq!(c.to_host(GuestTsc(10)), HostTsc(197_302_807_534));
        assert_eq!(parse_offset("-197302807524"), Some(c.offset));
    }

    #[test]
    fn scaling_parse() {
        assert_eq!(Scaling::parse("0x1000000000000:48"), Some(Scaling::identity(48)));
        assert!(Scaling::parse("0:48").is_none());
        assert!(Conversion::new(5, Some(Scaling::identity(32))).scaling.is_none());
    }

    proptest! {
        #[test]
        fn round_trip_unscaled(h in any::<u64>(), off in any::<u64>()) {
            let c = Conversion::new(off, None);
            prop_assert_eq!(c.to_host(c.to_guest(HostTsc(h))), HostTsc(h));
        }

        // Guest slower than or as fast as the host: exact both ways.
        #[test]
        fn round_trip_slower_guest(h in 0u64..(1 << 62), off in any::<u64>(),
                                   frac in prop::sample::select(vec![32u32, 48]), num in 1u64..=1000) {
            let one = 1u64 << frac;
            let ratio = (one as u128 * num as u128 / 1000) as u64; // 0.001 ..= 1.0
            prop_assume!(ratio > 0);
            let c = Conversion::new(off, Some(Scaling { ratio, frac_bits: frac }));
            let g = c.to_guest(HostTsc(h));
            let back = c.to_host(g);
            prop_assert_eq!(c.to_guest(back), g);
            prop_assert!(back <= HostTsc(h));
            if ratio == one { prop_assert_eq!(back, HostTsc(h)); }
        }

        // Guest faster than the host (ratio up to 4.0): guest values are sparse,
        // each host value round-trips exactly.
        #[test]
        fn round_trip_faster_guest(h in 0u64..(1 << 60), off in any::<u64>(),
                                   frac in prop::sample::select(vec![32u32, 48]), num in 1000u64..=4000) {
            let ratio = ((1u128 << frac) * num as u128 / 1000) as u64;
            let c = Conversion::new(off, Some(Scaling { ratio, frac_bits: frac }));
            let g = c.to_guest(HostTsc(h));
            prop_assert_eq!(c.to_host(g), HostTsc(h));
        }
    }
}
