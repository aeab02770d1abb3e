//! Handles to the media server's metrics (named and described in `crate::metrics`), resolved
//! once. Gauges move by increments so several nodes in one test process add up.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge};

use crate::metrics as names;

/// The media server's metric handles.
#[derive(Debug)]
pub struct Telemetry {
    pub(crate) uploads_started: Counter,
    pub(crate) uploads_completed: Counter,
    pub(crate) uploads_expired: Counter,
    pub(crate) uploads_terminated: Counter,
    pub(crate) uploads_unfinished: Gauge,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_hit_ratio: Gauge,
    pub(crate) cache_bytes: Gauge,
    pub(crate) dedup_hits: Counter,
    pub(crate) dedup_saved_bytes: Counter,
    pub(crate) objects: Gauge,
    pub(crate) stored_bytes: Gauge,
    hits: AtomicU64,
    downloads: AtomicU64,
}

impl Telemetry {
    /// Resolves every handle.
    pub fn new() -> Self {
        let requests = |result: &'static str| metrics::counter!(names::MEDIA_HOT_CACHE_REQUESTS, "result" => result);
        Self {
            uploads_started: metrics::counter!(names::MEDIA_UPLOADS_STARTED),
            uploads_completed: metrics::counter!(names::MEDIA_UPLOADS_COMPLETED),
            uploads_expired: metrics::counter!(names::MEDIA_UPLOADS_EXPIRED),
            uploads_terminated: metrics::counter!(names::MEDIA_UPLOADS_TERMINATED),
            uploads_unfinished: metrics::gauge!(names::MEDIA_UPLOADS_UNFINISHED),
            bytes_in: metrics::counter!(names::MEDIA_BYTES_IN),
            bytes_out: metrics::counter!(names::MEDIA_BYTES_OUT),
            cache_hits: requests("hit"),
            cache_misses: requests("miss"),
            cache_hit_ratio: metrics::gauge!(names::MEDIA_HOT_CACHE_HIT_RATIO),
            cache_bytes: metrics::gauge!(names::MEDIA_HOT_CACHE_BYTES),
            dedup_hits: metrics::counter!(names::MEDIA_DEDUP_HITS),
            dedup_saved_bytes: metrics::counter!(names::MEDIA_DEDUP_SAVED_BYTES),
            objects: metrics::gauge!(names::MEDIA_OBJECTS),
            stored_bytes: metrics::gauge!(names::MEDIA_STORED_BYTES),
            hits: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
        }
    }

    /// Counts one download served from memory (`hit`) or from disk.
    pub fn download(&self, hit: bool) {
        let hits = if hit {
            self.cache_hits.increment(1);
            self.hits.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.cache_misses.increment(1);
            self.hits.load(Ordering::Relaxed)
        };
        let downloads = self.downloads.fetch_add(1, Ordering::Relaxed) + 1;
        self.cache_hit_ratio.set(hits as f64 / downloads as f64);
    }

    /// Counts an HTTP response by status class.
    pub fn response(status: u16) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!(names::MEDIA_RESPONSES, "status" => class).increment(1);
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
