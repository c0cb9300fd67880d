//! One memory budget for every allocation whose size an input declares
//! (inflated trace.dat sections and chunks): a declared size is checked
//! against what is left of the budget before anything is allocated, so a
//! crafted file fails with an error instead of growing until the OOM killer
//! strikes (issue 20: eight CPUs of a BUFFER option pointing at one chunk
//! that declares 512 MiB kept 4 GB).
//!
//! Process-wide, as memory is: parsers on several threads draw on one
//! counter. A [`Reservation`] holds its share until dropped or resized.

use std::sync::atomic::{AtomicU64, Ordering};

/// The default budget: room for the largest block a trace.dat may declare
/// (compress.rs `MAX_BLOCK`, 512 MiB) and everything a real
/// recording needs (metadata of a few MB, one chunk of ~128 KiB per CPU
/// stream), while the process stays under 1 GB.
pub const DEFAULT_LIMIT: u64 = 768 << 20;

static LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_LIMIT);
static USED: AtomicU64 = AtomicU64::new(0);

/// Sets the budget in bytes (`tscmerge --max-memory`).
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::SeqCst);
}

/// The budget in bytes.
pub fn limit() -> u64 {
    LIMIT.load(Ordering::SeqCst)
}

/// Bytes reserved now, by all live [`Reservation`]s.
pub fn used() -> u64 {
    USED.load(Ordering::SeqCst)
}

/// A share of the budget, returned when dropped.
#[derive(Debug, Default)]
pub struct Reservation(u64);

/// A reservation the budget cannot grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// Bytes asked for in all (this reservation's new size).
    pub want: u64,
    /// Bytes in use by others when asked.
    pub others: u64,
    /// The budget.
    pub limit: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0
    }

    /// Holds `bytes` in all from now on (more or fewer than before). On
    /// failure nothing changes.
    pub fn set(&mut self, bytes: u64) -> Result<(), Exceeded> {
        if bytes <= self.0 {
            USED.fetch_sub(self.0 - bytes, Ordering::SeqCst);
            self.0 = bytes;
            return Ok(());
        }
        let more = bytes - self.0;
        let limit = limit();
        USED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_add(more).filter(|&n| n <= limit))
            .map_err(|u| Exceeded { want: bytes, others: u.saturating_sub(self.0), limit })?;
        self.0 = bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        USED.fetch_sub(self.0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_budget_is_refused_and_changes_nothing() {
        let mut r = Reservation::default();
        r.set(1000).unwrap();
        let e = r.set(limit() + 1).unwrap_err();
        assert_eq!(e.want, limit() + 1);
        assert_eq!(r.bytes(), 1000);
        r.set(10).unwrap();
        assert_eq!(r.bytes(), 10);
    }
}
