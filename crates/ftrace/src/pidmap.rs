//! Integer-keyed tables looked up once or twice per event (comms, tgids,
//! routes by format address): a multiplicative hash (Fibonacci hashing)
//! instead of SipHash. Crafted keys can only slow lookups down, never change
//! results.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Clone, Copy, Default)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        // The product's well-mixed high half lands in the low bits that pick
        // the bucket: aligned addresses have their low bits all zero.
        self.0.rotate_left(32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i32(&mut self, v: i32) {
        self.write_u64(v as u32 as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(8) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// Builds [`PidHasher`]s.
pub type PidBuildHasher = BuildHasherDefault<PidHasher>;

/// pid → value, hashed with [`PidHasher`].
pub type PidMap<V> = HashMap<i32, V, PidBuildHasher>;
