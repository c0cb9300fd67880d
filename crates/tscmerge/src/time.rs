//! Newtypes for the two time axes. A guest TSC and a host TSC are both u64
//! cycle counts, and mixing them up is the one mistake this tool exists to
//! avoid; only `clock` converts between them.

use serde::Serialize;

/// A timestamp on the host's TSC (the merged timeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct HostTsc(pub u64);

/// A timestamp on one guest vCPU's TSC, as the guest recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct GuestTsc(pub u64);

/// A guest's vCPU index, as `kvm_write_tsc_offset` reports it (`vcpu_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct VcpuId(pub u32);

/// A CPU of the machine that recorded a trace (host CPU or guest CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Cpu(pub u32);

impl std::fmt::Display for HostTsc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::fmt::Display for GuestTsc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
