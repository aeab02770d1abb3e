//! The journal's metrics: names, descriptions, and handles created once per journal thread.
//!
//! Several journals in one process add up: the segment gauge is moved by increments, never set.

use metrics::{Counter, Gauge, Histogram, Unit};

/// Time one `sync_data` of the active segment took.
pub const FSYNC_SECONDS: &str = "tern_journal_fsync_seconds";
/// Records written per batch (one write and one fsync each).
pub const BATCH_RECORDS: &str = "tern_journal_batch_records";
/// Bytes of records written and fsynced.
pub const BYTES_WRITTEN: &str = "tern_journal_bytes_written_total";
/// Batches that failed (write, fsync or quota); their records were not acknowledged.
pub const FAILURES: &str = "tern_journal_failures_total";
/// Segment files the journal holds on disk.
pub const SEGMENTS: &str = "tern_journal_segments";

/// Registers descriptions and units of the journal's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "Journal fsync latency.");
    metrics::describe_histogram!(BATCH_RECORDS, Unit::Count, "Records per journal batch.");
    metrics::describe_counter!(BYTES_WRITTEN, Unit::Bytes, "Journal bytes made durable.");
    metrics::describe_counter!(
        FAILURES,
        Unit::Count,
        "Journal batches that failed (I/O error or disk full)."
    );
    metrics::describe_gauge!(SEGMENTS, Unit::Count, "Journal segment files on disk.");
}

/// Handles to the journal's metrics.
#[derive(Debug)]
pub(crate) struct Telemetry {
    pub(crate) fsync_seconds: Histogram,
    pub(crate) batch_records: Histogram,
    pub(crate) bytes_written: Counter,
    pub(crate) failures: Counter,
    pub(crate) segments: Gauge,
}

impl Telemetry {
    pub(crate) fn new() -> Self {
        Telemetry {
            fsync_seconds: metrics::histogram!(FSYNC_SECONDS),
            batch_records: metrics::histogram!(BATCH_RECORDS),
            bytes_written: metrics::counter!(BYTES_WRITTEN),
            failures: metrics::counter!(FAILURES),
            segments: metrics::gauge!(SEGMENTS),
        }
    }
}
