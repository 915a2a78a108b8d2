//! A latency histogram with fixed buckets, made of plain atomics: any thread
//! may observe into it without a lock and without allocating, and the HTTP
//! thread reads it for `/metrics` (as a Prometheus histogram) and for the
//! status page's chart.
//!
//! Owned by the server-wide `Stats` (stats.rs); the writer observes fsyncs, connection
//! threads observe the time from submitting a write to its reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`le` labels); the last bucket,
/// `+Inf`, is implicit. From 50 µs (an fsync on a fast NVMe disk) to 2.5 s
/// (a disk in trouble).
pub const BOUNDS_SECONDS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// The same bounds in nanoseconds, for the comparison on the hot path.
const BOUNDS_NS: [u64; 15] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Buckets counted separately (not cumulative); index `BOUNDS.len()` is
/// `+Inf`. The count is the sum of the buckets, so a reader never sees a
/// count that disagrees with them.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 16],
    sum_ns: AtomicU64,
}

/// A copy of a histogram at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    pub buckets: [u64; 16],
    pub sum_ns: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            ..Snapshot::default()
        };
        for (out, b) in s.buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        s
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut d = Snapshot {
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            ..Snapshot::default()
        };
        for (i, out) in d.buckets.iter_mut().enumerate() {
            *out = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d
    }

    /// Mean in seconds; 0 without observations.
    pub fn mean_seconds(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_ns as f64 / n as f64 / 1e9,
        }
    }

    /// The upper bound of the bucket holding quantile `q` (0 < q ≤ 1), in
    /// seconds: an estimate that errs high. 0 without observations; the
    /// largest finite bound when it falls in `+Inf`.
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return BOUNDS_SECONDS
                    .get(i)
                    .copied()
                    .unwrap_or(BOUNDS_SECONDS[BOUNDS_SECONDS.len() - 1]);
            }
        }
        BOUNDS_SECONDS[BOUNDS_SECONDS.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in BOUNDS_SECONDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[6], 1);
        assert_eq!(s.buckets[15], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_ns, 10_000 + 50_000 + 3_000_000 + 9_000_000_000);
        let later = {
            h.observe(Duration::from_millis(3));
            h.snapshot()
        };
        let d = later.since(&s);
        assert_eq!(d.count(), 1);
        assert_eq!(d.quantile_bound(0.99), 0.005);
        assert!((d.mean_seconds() - 0.003).abs() < 1e-9);
        assert_eq!(Snapshot::default().quantile_bound(0.5), 0.0);
    }
}
