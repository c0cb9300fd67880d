//! Durations of one kind (exit-to-entry of one reason on one vCPU), in
//! bounded memory: count, total, min and max exact; quantiles exact while
//! at most [`EXACT`] values came, then from a log-linear histogram whose
//! buckets are 1/64 of a power of two wide (values below 128 exact), so a
//! quantile is then the lower edge of the bucket holding it: at most 1.6%
//! (1/64) below the true value, never above.

use serde::Serialize;

/// Values kept as they are before the histogram takes over.
pub const EXACT: usize = 4096;

/// Sub-buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this have a bucket each.
const LINEAR: u64 = 2 * SUB;

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let m = (v >> (e - SUB_BITS)) - SUB; // 0..SUB
    (LINEAR + (e - SUB_BITS - 1) as u64 * SUB + m) as usize
}

/// The smallest value of bucket `i`.
fn lower(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB + SUB_BITS as u64 + 1;
    let m = (i - LINEAR) % SUB + SUB;
    m << (e - SUB_BITS as u64)
}

#[derive(Clone, Debug, Default)]
pub struct Durations {
    pub count: u64,
    pub total: u128,
    pub min: u64,
    pub max: u64,
    exact: Vec<u64>,
    /// Bucket counts, once more than [`EXACT`] values came.
    hist: Vec<u64>,
}

/// A summary for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub total: u128,
    pub min: u64,
    pub max: u64,
    pub p50: u64,
    pub p99: u64,
    /// Whether p50 and p99 are the exact nearest-rank values (else within
    /// 1/64 below them).
    pub exact_quantiles: bool,
}

impl Durations {
    pub fn add(&mut self, v: u64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.total += v as u128;
        if self.hist.is_empty() && self.exact.len() < EXACT {
            self.exact.push(v);
            return;
        }
        if self.hist.is_empty() {
            for x in std::mem::take(&mut self.exact) {
                self.put(x);
            }
        }
        self.put(v);
    }

    fn put(&mut self, v: u64) {
        let b = bucket(v);
        if self.hist.len() <= b {
            self.hist.resize(b + 1, 0);
        }
        self.hist[b] += 1;
    }

    /// The nearest-rank `q` quantile (the ⌈q·n⌉-th smallest value).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if self.hist.is_empty() {
            let mut v = self.exact.clone();
            let (_, x, _) = v.select_nth_unstable((rank - 1) as usize);
            return *x;
        }
        let mut seen = 0;
        for (i, &n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return lower(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            total: self.total,
            min: self.min,
            max: self.max,
            p50: self.quantile(0.5),
            p99: self.quantile(0.99),
            exact_quantiles: self.hist.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for i in 0..3000 {
            assert!(lower(i) < lower(i + 1));
            assert_eq!(bucket(lower(i)), i);
            assert_eq!(bucket(lower(i + 1) - 1), i);
            // Width at most 1/64 of the lower edge above the linear part.
            if i >= LINEAR as usize {
                assert!((lower(i + 1) - lower(i)) * 64 <= lower(i));
            }
        }
        assert_eq!(bucket(u64::MAX), bucket(lower(bucket(u64::MAX))));
    }

    #[test]
    fn quantiles_exact_when_small_and_close_when_large() {
        let mut d = Durations::default();
        for v in (1..=100u64).rev() {
            d.add(v * 1000);
        }
        let s = d.summary();
        assert_eq!((s.count, s.total, s.min, s.max, s.p50, s.p99, s.exact_quantiles), (100, 5_050_000, 1000, 100_000, 50_000, 99_000, true));
        let mut d = Durations::default();
        let n = 100_000u64;
        for i in 0..n {
            d.add((i * 7919) % n + 1); // a permutation of 1..=n
        }
        let s = d.summary();
        assert!(!s.exact_quantiles);
        assert_eq!((s.count, s.min, s.max, s.total), (n, 1, n, (n * (n + 1) / 2) as u128));
        for (got, want) in [(s.p50, n / 2), (s.p99, n * 99 / 100)] {
            assert!(got <= want && (want - got) * 64 <= want, "{got} vs {want}");
        }
    }
}
