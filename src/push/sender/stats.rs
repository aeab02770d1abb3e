//! What one sender has done so far: counted both in the process's metrics (which add up over
//! every sender) and in this sender's own counts ([`Stats`], for tests and admin views).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::push::notification::Notification;
use crate::push::telemetry::Telemetry;

/// A sender's counts since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pushes the gateway took.
    pub sent: u64,
    /// Pushes the gateway refused for good.
    pub failed: u64,
    /// Pushes sent again after a transient failure (one per new attempt).
    pub retries: u64,
    /// Dead tokens handed to the `unregistered` callback.
    pub tokens_removed: u64,
    /// Pushes given up: refused by the full (or closed) queue, or out of retry time.
    pub dead_letters: u64,
    /// Pushes waiting in the queue now.
    pub queued: u64,
}

/// The counts and metric handles, shared by the sender and its tasks.
#[derive(Debug)]
pub(super) struct Counters {
    telemetry: Telemetry,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    tokens_removed: AtomicU64,
    dead_letters: AtomicU64,
    queued: AtomicU64,
}

impl Counters {
    pub(super) fn new() -> Counters {
        Counters {
            telemetry: Telemetry::new(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            tokens_removed: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }

    pub(super) fn snapshot(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            tokens_removed: self.tokens_removed.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }

    /// A push delivered by a request that took `latency`.
    pub(super) fn sent(&self, latency: Duration) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.telemetry.sent.increment(1);
        self.telemetry.gateway_seconds.record(latency.as_secs_f64());
    }

    pub(super) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.telemetry.failed.increment(1);
    }

    pub(super) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.telemetry.retries.increment(1);
    }

    pub(super) fn token_removed(&self) {
        self.tokens_removed.fetch_add(1, Ordering::Relaxed);
        self.telemetry.tokens_removed.increment(1);
    }

    /// A push given up; returns how many were given up before it.
    pub(super) fn dead_letter(&self) -> u64 {
        self.telemetry.dead_letters.increment(1);
        self.dead_letters.fetch_add(1, Ordering::Relaxed)
    }
}

/// A push in the queue. It counts in the queue depth from its creation until it is taken out
/// or dropped with the queue, whichever comes first.
#[derive(Debug)]
pub(super) struct Queued {
    notification: Notification,
    _waiting: Waiting,
}

impl Queued {
    /// `notification`, counted as waiting.
    pub(super) fn new(notification: Notification, counters: &Arc<Counters>) -> Queued {
        counters.queued.fetch_add(1, Ordering::Relaxed);
        counters.telemetry.queue_depth.increment(1.0);
        Queued {
            notification,
            _waiting: Waiting(Arc::clone(counters)),
        }
    }

    /// The push, no longer counted as waiting.
    pub(super) fn take(self) -> Notification {
        self.notification
    }
}

/// One push's place in the queue depth, given back when dropped.
#[derive(Debug)]
struct Waiting(Arc<Counters>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.telemetry.queue_depth.decrement(1.0);
    }
}
