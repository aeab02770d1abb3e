//! End-to-end latency: an HDR histogram of microseconds, and a sharded shared recorder that
//! many phone tasks feed in batches.

use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency told apart, in microseconds (longer ones count as this).
pub const MAX_US: u64 = 60_000_000;

/// Latencies recorded by one phone before they are added to the shared histogram.
const BATCH: usize = 256;

/// A latency histogram in microseconds, 3 significant digits. It serializes as its buckets, so
/// that worker processes can hand their histograms to the parent for merging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Buckets", into = "Buckets")]
pub struct Latency {
    hist: Histogram<u64>,
}

/// A histogram as `(value µs, count)` pairs, one per non-empty bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl From<Latency> for Buckets {
    fn from(latency: Latency) -> Self {
        Self(
            latency
                .hist
                .iter_recorded()
                .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
                .collect(),
        )
    }
}

impl From<Buckets> for Latency {
    fn from(buckets: Buckets) -> Self {
        let mut latency = Latency::new();
        for (value, count) in buckets.0 {
            latency.hist.saturating_record_n(value.max(1), count);
        }
        latency
    }
}

/// The figures reported for a histogram, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Recorded values.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_US, 3)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        Self { hist }
    }

    /// Records one latency; 0 counts as 1 µs, anything above [`MAX_US`] as `MAX_US`.
    pub fn record(&mut self, micros: u64) {
        self.hist.saturating_record(micros.max(1));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot overflow the range.
        if self.hist.add(&other.hist).is_err() {
            for value in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Percentiles in milliseconds; all zero when nothing was recorded.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| round3(micros as f64 / 1000.0);
        LatencySummary {
            count: self.count(),
            p50_ms: ms(self.hist.value_at_quantile(0.5)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
            mean_ms: round3(self.hist.mean() / 1000.0),
        }
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// A histogram shared by many tasks, split into shards to keep lock contention low.
#[derive(Debug)]
pub struct SharedLatency {
    shards: Vec<Mutex<Latency>>,
}

impl SharedLatency {
    /// `shards` independent histograms (at least one).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Latency::new()))
                .collect(),
        }
    }

    /// Adds `values` (microseconds) to the shard chosen by `hint`.
    pub fn record_all(&self, hint: usize, values: &[u64]) {
        let shard = &self.shards[hint % self.shards.len()];
        let mut hist = shard.lock().unwrap_or_else(PoisonError::into_inner);
        for value in values {
            hist.record(*value);
        }
    }

    /// Everything recorded so far, merged.
    pub fn collect(&self) -> Latency {
        let mut all = Latency::new();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner));
        }
        all
    }
}

/// One task's buffer in front of a [`SharedLatency`].
#[derive(Debug)]
pub struct LatencyBuffer {
    hint: usize,
    values: Vec<u64>,
}

impl LatencyBuffer {
    /// A buffer that flushes to shard `hint`.
    pub fn new(hint: usize) -> Self {
        Self {
            hint,
            values: Vec::with_capacity(BATCH),
        }
    }

    /// Records one latency, flushing when the buffer is full.
    pub fn record(&mut self, shared: &SharedLatency, micros: u64) {
        self.values.push(micros);
        if self.values.len() >= BATCH {
            self.flush(shared);
        }
    }

    /// Moves buffered values to `shared`.
    pub fn flush(&mut self, shared: &SharedLatency) {
        if !self.values.is_empty() {
            shared.record_all(self.hint, &self.values);
            self.values.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histograms_report_zeros() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut l = Latency::new();
        // 1..=1000 ms: p50 is 500 ms, p99 990 ms, p99.9 999 ms (within 0.1 %).
        for ms in 1..=1000u64 {
            l.record(ms * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.p999_ms, 999.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_dropped() {
        let mut l = Latency::new();
        l.record(0);
        l.record(u64::MAX);
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert!(s.p50_ms <= 0.002, "{s:?}");
        assert!(s.max_ms >= 59_900.0, "{s:?}");
    }

    #[test]
    fn histograms_survive_the_trip_through_json_bucket_for_bucket() {
        let mut l = Latency::new();
        for micros in [1, 7, 999, 1_000, 1_001, 123_456, 5_000_000, u64::MAX] {
            l.record(micros);
        }
        let json = serde_json::to_string(&l).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back.summary(), l.summary());
        assert_eq!(Buckets::from(back), Buckets::from(l));
    }

    #[test]
    fn merging_worker_histograms_equals_recording_in_one() {
        // Three "processes" each record part of the values and send their buckets as JSON;
        // the parent's merge must report what one histogram of all the values reports.
        let mut whole = Latency::new();
        let mut parts = vec![Latency::new(), Latency::new(), Latency::new()];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..30_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let micros = 50 + seed % 200_000;
            whole.record(micros);
            parts[(i % 3) as usize].record(micros);
        }
        let mut merged = Latency::new();
        for part in &parts {
            let line = serde_json::to_string(part).unwrap();
            merged.merge(&serde_json::from_str(&line).unwrap());
        }
        assert_eq!(merged.count(), 30_000);
        assert_eq!(merged.summary(), whole.summary());
    }

    #[test]
    fn shards_and_buffers_lose_nothing() {
        let shared = SharedLatency::new(4);
        let mut buffers: Vec<LatencyBuffer> = (0..7).map(LatencyBuffer::new).collect();
        for i in 0..1000u64 {
            let b = &mut buffers[(i % 7) as usize];
            b.record(&shared, 100 + i);
        }
        // Not everything is flushed yet.
        assert!(shared.collect().count() < 1000);
        for b in &mut buffers {
            b.flush(&shared);
        }
        assert_eq!(shared.collect().count(), 1000);
    }
}
