//! What callers hand the journal thread (commands, completions) and the state both sides read.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::JournalError;

/// The outcome of one append: its lsn once durable, or why it is not.
pub type AppendResult = Result<u64, JournalError>;

/// A message on the journal thread's bounded queue.
#[derive(Debug)]
pub(crate) enum Command {
    /// Make `payload` durable, then complete `done`.
    Append { payload: Bytes, done: Completion },
    /// Look at the release mark (sent by `release` when the queue has room).
    Wake,
    /// Stop after what was queued before: write, fsync and complete it, then exit
    /// ([`super::Journal::close`]).
    Close,
    /// Die of a panic (debug builds: tests of the node's supervision).
    #[cfg(debug_assertions)]
    Crash,
}

/// How an append's outcome reaches its caller.
pub(crate) enum Completion {
    /// Sent on a oneshot channel (the receiver may be gone; that is fine).
    Channel(oneshot::Sender<AppendResult>),
    /// Called on the journal thread; a panic in it is caught and logged.
    Callback(Box<dyn FnOnce(AppendResult) + Send>),
}

impl Completion {
    /// Delivers `result`.
    pub(crate) fn complete(self, result: AppendResult, shared: &Shared) {
        match self {
            Completion::Channel(sender) => {
                // The caller stopped waiting; the record's durability does not depend on it.
                let _ = sender.send(result);
            }
            Completion::Callback(callback) => {
                if panic::catch_unwind(AssertUnwindSafe(move || callback(result))).is_err() {
                    shared.callback_panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("journal completion callback panicked; journal continues");
                }
            }
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Completion::Channel(_) => f.write_str("Completion::Channel"),
            Completion::Callback(_) => f.write_str("Completion::Callback"),
        }
    }
}

/// Counters and marks shared by the [`super::Journal`] handle and its thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// `sync_data` calls made (successful or not).
    pub(crate) fsyncs: AtomicU64,
    /// Batches that failed.
    pub(crate) failures: AtomicU64,
    /// False from a failed batch until the next batch that succeeds.
    pub(crate) healthy: AtomicBool,
    /// The highest lsn known durable.
    pub(crate) durable_lsn: AtomicU64,
    /// Segment files held.
    pub(crate) segments: AtomicU64,
    /// Bytes the segment files take.
    pub(crate) disk_bytes: AtomicU64,
    /// Records up to this lsn are checkpointed elsewhere; their segments may go.
    pub(crate) release_up_to: AtomicU64,
    /// Completion callbacks that panicked.
    pub(crate) callback_panics: AtomicU64,
    /// Failures to inject, for tests of the error paths.
    #[cfg(test)]
    pub(crate) faults: Faults,
}

/// Counts of upcoming operations that fail on purpose (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Batch writes that write half their bytes, then fail.
    pub(crate) writes: std::sync::atomic::AtomicU32,
    /// `sync_data` calls that fail (after the bytes reached the page cache).
    pub(crate) syncs: std::sync::atomic::AtomicU32,
    /// Truncations (rollbacks of a failed batch) that fail without truncating.
    pub(crate) truncates: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl Faults {
    /// Consumes one injected failure from `counter`; true if there was one.
    pub(crate) fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
