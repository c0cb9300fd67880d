//! Where guest time meets host time, and nowhere else: the offset timeline
//! built from `kvm_write_tsc_offset`, the exact conversion, and the rule for
//! which period a guest event belongs to.

mod convert;
pub(crate) mod cursor;
mod debugfs;
pub mod report;
mod timeline;
mod walk;

pub use cursor::GuestCursor;
pub use debugfs::{parse_kvm_debugfs, DebugfsSnapshot, Disagreement};
pub use convert::{parse_offset, Conversion, Scaling};
pub use timeline::{Anomaly, OffsetTimeline, OffsetWrite, Period, VcpuTimeline, Vm};
pub use walk::{PlaceError, Placed, VcpuClock};
