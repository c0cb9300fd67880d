//! Where guest time meets host time, and nowhere else: the offset timeline
//! built from `kvm_write_tsc_offset`, the exact conversion, and the rule for
//! which period a guest event belongs to.

mod convert;
pub(crate) mod cursor;
mod debugfs;
pub mod report;
pub mod sources;
mod timeline;
mod walk;

pub use cursor::{Ambiguity, GuestCursor, Tally};
pub use debugfs::{parse_kvm_debugfs, DebugfsSnapshot, Disagreement};
pub use convert::{parse_offset, Conversion, Scaling};
pub use sources::{ThreadFrom, TimeShiftUse, TimeShiftVcpu};
pub use timeline::{Anomaly, GuestOption, OffsetTimeline, OffsetWrite, Origin, Period, VcpuTimeline, Vm};
pub use walk::{How, PlaceError, Placed, VcpuClock};
