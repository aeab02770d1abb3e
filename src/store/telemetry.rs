//! The store's metrics: names, descriptions, and handles created once per database thread.
//!
//! Labels: `op` (write, read, checkpoint) on the latency, `store` (the database's index in
//! `store.paths`) on the rest; never a user id.

use metrics::{Counter, Gauge, Histogram, Unit};

use super::worker::OpKind;

/// Time one operation took on its database thread (label `op`).
pub const OP_SECONDS: &str = "tern_store_op_seconds";
/// Operations that completed with an error, panics included (label `store`).
pub const ERRORS: &str = "tern_store_errors_total";
/// Checkpoints (flush plus fsync) that succeeded (label `store`).
pub const CHECKPOINTS: &str = "tern_store_checkpoints_total";
/// Operations waiting in a database's queue (label `store`).
pub const QUEUE_DEPTH: &str = "tern_store_queue_depth";
/// Times a failed database was closed and opened again (label `store`).
pub const REOPENS: &str = "tern_store_reopens_total";
/// Reopens of a failed database that failed in turn, retried later (label `store`).
pub const REOPEN_FAILURES: &str = "tern_store_reopen_failures_total";

/// Registers descriptions and units of the store's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        OP_SECONDS,
        Unit::Seconds,
        "Store operation latency on its database thread, by op (write, read, checkpoint)."
    );
    metrics::describe_counter!(
        ERRORS,
        Unit::Count,
        "Store operations that failed (sled or I/O error, or a caught panic)."
    );
    metrics::describe_counter!(
        CHECKPOINTS,
        Unit::Count,
        "Store checkpoints (sled flush plus fsync of its files) that succeeded."
    );
    metrics::describe_counter!(
        REOPENS,
        Unit::Count,
        "Failed store databases closed and opened again (sled keeps failing after an I/O error)."
    );
    metrics::describe_counter!(
        REOPEN_FAILURES,
        Unit::Count,
        "Reopens of a failed store database that failed and are retried."
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Operations waiting for a store database thread."
    );
}

/// The queue-depth gauge of database `index` (moved by the submitting side and the thread).
pub(crate) fn queue_depth(index: usize) -> Gauge {
    metrics::gauge!(QUEUE_DEPTH, "store" => index.to_string())
}

/// Handles to the metrics one database thread records.
#[derive(Debug)]
pub(crate) struct Telemetry {
    write_seconds: Histogram,
    read_seconds: Histogram,
    checkpoint_seconds: Histogram,
    pub(crate) errors: Counter,
    pub(crate) checkpoints: Counter,
    pub(crate) reopens: Counter,
    pub(crate) reopen_failures: Counter,
}

impl Telemetry {
    pub(crate) fn new(index: usize) -> Self {
        let store = index.to_string();
        Telemetry {
            write_seconds: metrics::histogram!(OP_SECONDS, "op" => "write"),
            read_seconds: metrics::histogram!(OP_SECONDS, "op" => "read"),
            checkpoint_seconds: metrics::histogram!(OP_SECONDS, "op" => "checkpoint"),
            errors: metrics::counter!(ERRORS, "store" => store.clone()),
            checkpoints: metrics::counter!(CHECKPOINTS, "store" => store.clone()),
            reopens: metrics::counter!(REOPENS, "store" => store.clone()),
            reopen_failures: metrics::counter!(REOPEN_FAILURES, "store" => store),
        }
    }

    /// The latency histogram of `kind`.
    pub(crate) fn op_seconds(&self, kind: OpKind) -> &Histogram {
        match kind {
            OpKind::Write => &self.write_seconds,
            OpKind::Read => &self.read_seconds,
            OpKind::Checkpoint => &self.checkpoint_seconds,
        }
    }
}
