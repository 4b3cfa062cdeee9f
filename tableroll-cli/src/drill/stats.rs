//! Percentiles of timings, and requests counted in fixed-width time buckets.

use serde::Serialize;

/// The median, 99th percentile and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// The median.
    pub p50: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The largest sample.
    pub max: u64,
    /// How many samples.
    pub n: usize,
}

impl Spread {
    /// The spread of `samples`; `None` if there are none.
    pub fn of(samples: impl IntoIterator<Item = u64>) -> Option<Spread> {
        let mut sorted: Vec<u64> = samples.into_iter().collect();
        sorted.sort_unstable();
        Some(Spread {
            p50: percentile(&sorted, 50.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
            n: sorted.len(),
        })
    }
}

/// The `q`th percentile (0 to 100) of `sorted` by the nearest-rank method: the smallest
/// sample that is at least `q`% of the samples. `None` for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Requests that ended in each bucket of `width_ns` since the start of the load, succeeded and
/// failed apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Buckets {
    /// The width of a bucket in nanoseconds.
    #[serde(skip)]
    pub width_ns: u64,
    /// Requests that succeeded, per bucket.
    pub ok: Vec<u64>,
    /// Requests that failed, per bucket.
    pub failed: Vec<u64>,
}

impl Buckets {
    /// No requests yet, in buckets of `width_ns` (at least 1).
    pub fn new(width_ns: u64) -> Buckets {
        Buckets { width_ns: width_ns.max(1), ok: Vec::new(), failed: Vec::new() }
    }

    /// Counts a request that ended `offset_ns` after the start.
    pub fn record(&mut self, offset_ns: u64, ok: bool) {
        let index = usize::try_from(offset_ns / self.width_ns).unwrap_or(usize::MAX);
        self.grow_to(index.saturating_add(1));
        if ok {
            self.ok[index] += 1;
        } else {
            self.failed[index] += 1;
        }
    }

    /// Adds `other`'s counts (of the same width) to these.
    pub fn merge(&mut self, other: &Buckets) {
        debug_assert_eq!(self.width_ns, other.width_ns);
        self.grow_to(other.len());
        for (i, (ok, failed)) in other.ok.iter().zip(&other.failed).enumerate() {
            self.ok[i] += ok;
            self.failed[i] += failed;
        }
    }

    /// Extends the buckets to cover `duration_ns` (so that a quiet end shows as zeros).
    pub fn cover(&mut self, duration_ns: u64) {
        let whole = usize::try_from(duration_ns.div_ceil(self.width_ns)).unwrap_or(usize::MAX);
        self.grow_to(whole);
    }

    fn grow_to(&mut self, len: usize) {
        if self.ok.len() < len {
            self.ok.resize(len, 0);
            self.failed.resize(len, 0);
        }
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    /// The requests per second that succeeded in bucket `index`.
    pub fn ok_rate(&self, index: usize) -> f64 {
        self.ok.get(index).map_or(0.0, |&n| n as f64 * 1e9 / self.width_ns as f64)
    }

    /// The requests per second that failed in bucket `index`.
    pub fn failed_rate(&self, index: usize) -> f64 {
        self.failed.get(index).map_or(0.0, |&n| n as f64 * 1e9 / self.width_ns as f64)
    }

    /// The lowest success rate over the buckets that lie wholly within the first
    /// `duration_ns` (the last bucket is usually cut short by the end of the load).
    pub fn min_ok_rate(&self, duration_ns: u64) -> Option<f64> {
        let whole = usize::try_from(duration_ns / self.width_ns).unwrap_or(usize::MAX).min(self.len());
        (0..whole).map(|i| self.ok_rate(i)).min_by(f64::total_cmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50.0), Some(3));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 100.0), Some(100));
        assert_eq!(percentile(&hundred, 150.0), Some(100));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
    }

    #[test]
    fn spread_sorts_first() {
        assert_eq!(Spread::of([5, 1, 3]), Some(Spread { p50: 3, p99: 5, max: 5, n: 3 }));
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn requests_land_in_their_bucket() {
        let mut b = Buckets::new(50);
        b.record(0, true);
        b.record(49, true);
        b.record(50, false);
        b.record(170, true);
        assert_eq!(b.ok, [2, 0, 0, 1]);
        assert_eq!(b.failed, [0, 1, 0, 0]);
        assert_eq!(b.ok_rate(0), 2.0 * 1e9 / 50.0);
        assert_eq!(b.failed_rate(9), 0.0);
    }

    #[test]
    fn merged_buckets_add_up() {
        let mut a = Buckets::new(10);
        a.record(5, true);
        let mut b = Buckets::new(10);
        b.record(5, true);
        b.record(35, false);
        a.merge(&b);
        assert_eq!(a.ok, [2, 0, 0, 0]);
        assert_eq!(a.failed, [0, 0, 0, 1]);
        let mut empty = Buckets::new(10);
        empty.merge(&a);
        assert_eq!(empty, a);
    }

    #[test]
    fn covering_and_the_lowest_whole_bucket() {
        let mut b = Buckets::new(10);
        b.record(3, true);
        b.record(4, true);
        b.record(15, true);
        b.cover(41);
        assert_eq!(b.len(), 5);
        // Buckets 0..4 are whole within 41 ns; bucket 2 and 3 are empty.
        assert_eq!(b.min_ok_rate(41), Some(0.0));
        assert_eq!(b.min_ok_rate(20), Some(1e8));
        assert_eq!(b.min_ok_rate(5), None);
    }
}
