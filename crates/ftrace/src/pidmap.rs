//! pid-keyed tables looked up once or twice per event (comms, tgids): a
//! multiplicative hash (Fibonacci hashing) instead of SipHash. Crafted pids
//! can only slow lookups down, never change results.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Clone, Copy, Default)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i32(&mut self, v: i32) {
        self.0 = (v as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Builds [`PidHasher`]s.
pub type PidBuildHasher = BuildHasherDefault<PidHasher>;

/// pid → value, hashed with [`PidHasher`].
pub type PidMap<V> = HashMap<i32, V, PidBuildHasher>;
