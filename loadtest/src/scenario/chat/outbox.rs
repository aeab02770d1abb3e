//! A sending phone's messages in flight: the window of unacked sends and the refused ones
//! waiting to be retried with the same `client_msg_id`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// First retry delay after a refusal; doubled per refusal of the same message.
const RETRY_BASE: Duration = Duration::from_millis(25);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One unacked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// When it was first sent (µs since the epoch, also in its body).
    pub sent_us: u64,
    /// Refusals so far.
    pub refusals: u32,
}

/// Unacked messages of one phone, by counter.
#[derive(Debug)]
pub struct Outbox {
    window: usize,
    next: u64,
    in_flight: HashMap<u64, Pending>,
    retries: VecDeque<(Instant, u64)>,
}

impl Outbox {
    /// At most `window` (at least 1) unacked messages.
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            next: 0,
            in_flight: HashMap::new(),
            retries: VecDeque::new(),
        }
    }

    /// True when a new message fits in the window.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.window
    }

    /// Unacked messages.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// True when every message was acked or given up.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Registers a new message sent at `sent_us`; returns its counter.
    pub fn push(&mut self, sent_us: u64) -> u64 {
        let counter = self.next;
        self.next += 1;
        self.in_flight.insert(
            counter,
            Pending {
                sent_us,
                refusals: 0,
            },
        );
        counter
    }

    /// The server acked `counter`; its entry if it was still in flight.
    pub fn acked(&mut self, counter: u64) -> Option<Pending> {
        self.in_flight.remove(&counter)
    }

    /// The server refused `counter` for now: retry it after a growing delay. False if it is not
    /// in flight.
    pub fn refused(&mut self, counter: u64, now: Instant) -> bool {
        let Some(pending) = self.in_flight.get_mut(&counter) else {
            return false;
        };
        pending.refusals = pending.refusals.saturating_add(1);
        let delay = RETRY_BASE
            .saturating_mul(1 << pending.refusals.min(16).saturating_sub(1))
            .min(RETRY_MAX);
        self.schedule(now + delay, counter);
        true
    }

    /// The server refused `counter` for good: forget it. Its entry if it was in flight.
    pub fn failed(&mut self, counter: u64) -> Option<Pending> {
        self.in_flight.remove(&counter)
    }

    /// After a reconnect: every unacked message is sent again, now, in counter order.
    pub fn resend_all(&mut self, now: Instant) {
        let mut counters: Vec<u64> = self.in_flight.keys().copied().collect();
        counters.sort_unstable();
        self.retries.clear();
        self.retries.extend(counters.into_iter().map(|c| (now, c)));
    }

    /// A retry that is due now: its counter and entry.
    pub fn due_retry(&mut self, now: Instant) -> Option<(u64, Pending)> {
        while let Some(&(at, counter)) = self.retries.front() {
            let Some(pending) = self.in_flight.get(&counter) else {
                // Acked or given up meanwhile.
                self.retries.pop_front();
                continue;
            };
            if at > now {
                return None;
            }
            self.retries.pop_front();
            return Some((counter, *pending));
        }
        None
    }

    /// When the earliest retry is due (possibly of a message acked meanwhile).
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.front().map(|(at, _)| *at)
    }

    fn schedule(&mut self, at: Instant, counter: u64) {
        // Keep the queue ordered by time (delays grow, so this is usually an append).
        let position = self.retries.partition_point(|(t, _)| *t <= at);
        self.retries.insert(position, (at, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_unacked_messages() {
        let mut o = Outbox::new(2);
        assert_eq!(o.push(1), 0);
        assert_eq!(o.push(2), 1);
        assert!(!o.has_room());
        assert_eq!(o.acked(0).map(|p| p.sent_us), Some(1));
        assert!(o.has_room());
        assert_eq!(
            o.acked(0),
            None,
            "a second ack of the same message is ignored"
        );
        assert_eq!(o.push(3), 2, "counters are never reused");
    }

    #[test]
    fn refused_messages_come_back_after_a_growing_delay() {
        let t = Instant::now();
        let mut o = Outbox::new(8);
        let id = o.push(10);
        assert!(o.refused(id, t));
        assert_eq!(o.due_retry(t), None);
        assert_eq!(o.next_retry(), Some(t + RETRY_BASE));
        let (again, pending) = o.due_retry(t + RETRY_BASE).unwrap();
        assert_eq!((again, pending.sent_us, pending.refusals), (id, 10, 1));
        // Still in flight (occupies the window) until acked.
        assert_eq!(o.len(), 1);
        assert!(o.refused(id, t));
        assert_eq!(o.next_retry(), Some(t + 2 * RETRY_BASE));
        for _ in 0..30 {
            o.refused(id, t);
        }
        assert!(o.retries.iter().all(|(at, _)| *at <= t + RETRY_MAX));
    }

    #[test]
    fn acked_or_failed_messages_are_not_retried() {
        let t = Instant::now();
        let mut o = Outbox::new(8);
        let a = o.push(1);
        let b = o.push(2);
        o.refused(a, t);
        o.refused(b, t);
        o.acked(a);
        o.failed(b);
        assert_eq!(o.due_retry(t + RETRY_MAX), None);
        assert!(o.is_empty());
        assert!(!o.refused(a, t), "refusing an acked message does nothing");
    }

    #[test]
    fn a_reconnect_resends_everything_in_order() {
        let t = Instant::now();
        let mut o = Outbox::new(8);
        for i in 0..4 {
            o.push(i);
        }
        o.acked(1);
        o.refused(3, t);
        o.resend_all(t);
        let order: Vec<u64> = std::iter::from_fn(|| o.due_retry(t).map(|(c, _)| c)).collect();
        assert_eq!(order, vec![0, 2, 3]);
    }
}
