//! Live counters shared by all phones of a process, and the totals a process reports to the
//! coordinator once per second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::parts::Tally;

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
    /// Deliver frames whose seq skipped one or more seqs after the one before on that
    /// connection (the phone's cumulative acks then cover entries it never got).
    pub seq_gaps: AtomicU64,
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
    /// Logins answered with GoAway ELSEWHERE (the user is homed in another datacenter; the
    /// phone logs in there instead).
    pub elsewhere: AtomicU64,
    /// ServerAcks flagged `queued` (durable in the queue to the recipient's datacenter, seq 0).
    pub queued_acks: AtomicU64,
    /// Mailbox entries from earlier runs skipped at the first login.
    pub backlog_skipped: AtomicU64,
    /// Messages sent and neither acked nor given up yet.
    /// The longest any message waited from its first send to its ack, in ms (a maximum, not
    /// a count: parts merge it by taking the largest).
    pub ack_wait_max_ms: AtomicU64,
    /// The longest time a phone waited for its next ack while it had sends waiting, on one
    /// connection (its own reconnects excluded), in ms (a maximum).
    pub ack_pause_max_ms: AtomicU64,
    pub in_flight: AtomicI64,
    /// Connections whose TLS handshake failed (also counted as failed logins or errors).
    pub handshake_failures: AtomicU64,
    /// Completed logins (Welcome, or CONNACK for MQTT).
    pub logins: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
}

/// Increments a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    /// The event counters by name, for a part's figures.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("refused", &self.refused),
            ("retries", &self.retries),
            ("duplicate_acks", &self.duplicate_acks),
            ("errors", &self.errors),
            ("go_aways", &self.go_aways),
            ("disconnects", &self.disconnects),
            ("reconnects", &self.reconnects),
            ("unexpected", &self.unexpected),
            ("seq_regressions", &self.seq_regressions),
            ("seq_gaps", &self.seq_gaps),
            ("backlog_skipped", &self.backlog_skipped),
            ("logins", &self.logins),
            ("ack_wait_max_ms", &self.ack_wait_max_ms),
            ("ack_pause_max_ms", &self.ack_pause_max_ms),
            ("elsewhere", &self.elsewhere),
            ("queued_acks", &self.queued_acks),
            ("handshake_failures", &self.handshake_failures),
        ]
        .into_iter()
        .map(|(name, counter)| (name.to_owned(), get(counter)))
        .collect()
    }

    /// The totals reported to the coordinator.
    pub fn tally(&self) -> Tally {
        Tally {
            open: self.open.load(Ordering::Relaxed).max(0).unsigned_abs(),
            logins: get(&self.logins),
            sent: get(&self.sent),
            acked: get(&self.acked),
            delivered: get(&self.delivered),
            duplicates: get(&self.duplicates),
            errors: get(&self.errors),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0).unsigned_abs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_reads_the_counters_and_never_goes_negative() {
        let c = Counters::default();
        bump(&c.sent);
        bump(&c.sent);
        bump(&c.logins);
        c.open.fetch_add(3, Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        let t = c.tally();
        assert_eq!((t.sent, t.logins, t.open, t.in_flight), (2, 1, 3, 0));
    }
}
