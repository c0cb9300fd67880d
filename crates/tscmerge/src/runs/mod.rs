//! Run windows: when a host thread can be running its guest, from the host's
//! own events. The one place that says what opens and closes a window, used
//! by every judge of a guest event's host time:
//! - the merge, deciding an event whose guest time fits several offset
//!   periods ([`Lookahead`], read ahead of the merge on its own cursors);
//! - `check` and automatic guest matching ([`crate::check`]), which follow
//!   the windows in the merged stream itself.
//!
//! Three kinds, strongest first:
//! 1. **Entry**: `kvm_entry` until the thread's next host event (normally
//!    `kvm_exit`; arch/x86/kvm/trace.h). The guest runs only in between.
//! 2. **On CPU**: `sched_switch` with `next_pid` = the thread until the
//!    `sched_switch` whose `prev_pid` is the thread: a vCPU thread runs its
//!    guest only while on a CPU.
//! 3. **Emulation**: `kvm_emulate_insn` until the thread's next host event.
//!    On hosts where KVM emulates every guest instruction (PVM, this
//!    project's micro-VMs) the guest's work happens inside those.

mod lookahead;
#[cfg(test)]
pub(crate) use lookahead::tests as lookahead_tests;

use serde::Serialize;

use crate::event::Record;

pub use lookahead::{Evidence, Lookahead, LookaheadStats, MAX_STORED_WINDOWS};

/// What opened a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum WindowKind {
    /// kvm_entry … next event of the thread (kvm_exit).
    Entry,
    /// kvm_emulate_insn … next event of the thread.
    Emulation,
    /// sched_switch to the thread … sched_switch away from it.
    OnCpu,
}

impl WindowKind {
    /// In the order evidence is preferred.
    pub const BY_STRENGTH: [WindowKind; 3] = [WindowKind::Entry, WindowKind::OnCpu, WindowKind::Emulation];

    pub fn index(self) -> usize {
        match self {
            WindowKind::Entry => 0,
            WindowKind::OnCpu => 1,
            WindowKind::Emulation => 2,
        }
    }

    /// A short name, for JSON and summaries.
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Entry => "entry",
            WindowKind::OnCpu => "on_cpu",
            WindowKind::Emulation => "emulation",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            WindowKind::Entry => "kvm_entry..next event",
            WindowKind::Emulation => "kvm_emulate_insn..next event",
            WindowKind::OnCpu => "sched_switch in..out",
        }
    }
}

/// The window a host event of the thread that emitted it opens, if any.
/// Every host event of a thread closes that thread's open window first
/// (the window ends at the thread's next event, whatever it is).
pub fn opens(name: &str) -> Option<WindowKind> {
    match name {
        "kvm_entry" => Some(WindowKind::Entry),
        "kvm_emulate_insn" => Some(WindowKind::Emulation),
        _ => None,
    }
}

/// `(prev_pid, next_pid)` of a `sched_switch`: the CPU leaves `prev_pid`
/// and runs `next_pid` from this event on (include/trace/events/sched.h).
pub fn switch_pids(r: &Record<'_>) -> Option<(i32, i32)> {
    if r.name != "sched_switch" {
        return None;
    }
    let prev = crate::sink::field_int(r, "prev_pid")?;
    let next = crate::sink::field_int(r, "next_pid")?;
    Some((i32::try_from(prev).ok()?, i32::try_from(next).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Body;

    #[test]
    fn sched_switch_text() {
        let r = Record {
            pid: 5,
            tgid: None,
            comm: "c",
            system: "sched",
            name: "sched_switch",
            body: Body::Text("prev_comm=a prev_pid=5 prev_prio=120 prev_state=R+ ==> next_comm=b next_pid=77 next_prio=120"),
        };
        assert_eq!(switch_pids(&r), Some((5, 77)));
        assert_eq!(opens("kvm_entry"), Some(WindowKind::Entry));
        assert_eq!(opens("kvm_exit"), None);
    }
}
