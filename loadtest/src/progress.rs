//! Live counters shared by all phones, and the once-per-second progress line on stderr.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Event counters, updated by the phones as things happen.
#[derive(Debug, Default)]
pub struct Counters {
    /// Distinct messages sent.
    pub sent: AtomicU64,
    /// Sends repeated after a refusal or a reconnect.
    pub retries: AtomicU64,
    /// Distinct messages acked by the server.
    pub acked: AtomicU64,
    /// ServerAcks flagged `duplicate` (answers to retries of stored messages).
    pub duplicate_acks: AtomicU64,
    /// Distinct messages delivered.
    pub delivered: AtomicU64,
    /// Extra deliveries of a message.
    pub duplicates: AtomicU64,
    /// Deliveries that were not ours (unknown ids, wrong sender, earlier runs).
    pub unexpected: AtomicU64,
    /// Deliver frames whose seq was not above the highest seq seen before on that phone.
    pub seq_regressions: AtomicU64,
    /// Sends refused with RATE_LIMITED, OVERLOADED or STORAGE_FAILURE (retried).
    pub refused: AtomicU64,
    /// Other Error frames.
    pub errors: AtomicU64,
    /// GoAway frames.
    pub go_aways: AtomicU64,
    /// Connections lost without GoAway.
    pub disconnects: AtomicU64,
    /// Successful reconnects.
    pub reconnects: AtomicU64,
    /// Mailbox entries from earlier runs skipped at the first login.
    pub backlog_skipped: AtomicU64,
    /// Messages sent and neither acked nor given up yet.
    pub in_flight: AtomicI64,
}

/// Increments a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The sent/acked/delivered totals at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    sent: u64,
    acked: u64,
    delivered: u64,
}

impl Counters {
    /// The current totals.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: get(&self.sent),
            acked: get(&self.acked),
            delivered: get(&self.delivered),
        }
    }

    /// One progress line: rates since `before` (taken `interval` ago) and current totals.
    pub fn progress_line(&self, label: &str, before: Snapshot, interval: Duration) -> String {
        let now = self.snapshot();
        let secs = interval.as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        format!(
            "[{label}] sent {:.0}/s acked {:.0}/s delivered {:.0}/s | in flight {} refused {} errors {} goaways {} reconnects {} dup {}",
            rate(now.sent, before.sent),
            rate(now.acked, before.acked),
            rate(now.delivered, before.delivered),
            self.in_flight.load(Ordering::Relaxed),
            get(&self.refused),
            get(&self.errors),
            get(&self.go_aways),
            get(&self.reconnects),
            get(&self.duplicates),
        )
    }
}
