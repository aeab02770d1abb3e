//! Loss and duplicate accounting for the messages of one sender.
//!
//! The sender records each message it sends and each ServerAck; the receiver records each
//! delivery. A message the server acked (made durable) but never delivered is lost; a message
//! delivered more than once is duplicated. Ids are the sender's dense counters 0, 1, 2..., so
//! they are also the order in which the messages were sent: a message sent once (never refused
//! and sent again) that arrives after a later one of the same sender arrived out of order.

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

const SENT: u8 = 1;
const ACKED: u8 = 2;
const DELIVERED: u8 = 4;
/// Sent more than once (refused, or in flight across a reconnect): it may arrive after
/// messages sent after it.
const RETRIED: u8 = 8;

/// What a delivery turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The first delivery of a sent message.
    First,
    /// A message delivered before.
    Duplicate,
    /// An id that was never sent.
    Unknown,
}

/// Per-id state of one sender's messages.
#[derive(Debug, Default)]
pub struct Tracker {
    states: Vec<u8>,
    counts: Counts,
    /// The highest id delivered of the messages sent only once.
    highest_in_order: Option<u64>,
}

/// Totals of one or more trackers (and of worker processes: they add up).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Distinct messages sent (retries not counted).
    pub sent: u64,
    /// Distinct messages acked by the server.
    pub acked: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Deliveries beyond the first of a message.
    pub duplicates: u64,
    /// Deliveries of ids never sent.
    pub unknown: u64,
    /// Acked and not delivered (lost, once delivery had time to finish).
    pub undelivered: u64,
    /// Sent, never acked.
    pub unacked: u64,
    /// First deliveries of messages sent only once that came after a later message of the
    /// same sender (also sent only once).
    #[serde(default)]
    pub out_of_order: u64,
}

impl Tracker {
    /// A tracker with nothing sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Message `id` was sent (again, for a retry). True the first time.
    pub fn sent(&mut self, id: u64) -> bool {
        let Ok(index) = usize::try_from(id) else {
            return false;
        };
        if index >= self.states.len() {
            self.states.resize(index + 1, 0);
        }
        let state = &mut self.states[index];
        let first = *state & SENT == 0;
        if first {
            *state |= SENT;
            self.counts.sent += 1;
            self.counts.unacked += 1;
        }
        first
    }

    /// The server acked `id`. True the first time for a sent id.
    pub fn acked(&mut self, id: u64) -> bool {
        let Some(state) = self.state_mut(id) else {
            return false;
        };
        if *state & ACKED != 0 {
            return false;
        }
        *state |= ACKED;
        let delivered = *state & DELIVERED != 0;
        self.counts.acked += 1;
        self.counts.unacked -= 1;
        if !delivered {
            self.counts.undelivered += 1;
        }
        true
    }

    /// Message `id` is being sent again (after a refusal or a reconnect): it no longer counts
    /// for the order check.
    pub fn retried(&mut self, id: u64) {
        if let Some(state) = self.state_mut(id) {
            *state |= RETRIED;
        }
    }

    /// The receiver got `id`.
    pub fn delivered(&mut self, id: u64) -> Delivery {
        let Some(state) = self.state_mut(id) else {
            self.counts.unknown += 1;
            return Delivery::Unknown;
        };
        if *state & DELIVERED != 0 {
            self.counts.duplicates += 1;
            return Delivery::Duplicate;
        }
        *state |= DELIVERED;
        let acked = *state & ACKED != 0;
        let once = *state & RETRIED == 0;
        self.counts.delivered += 1;
        if acked {
            self.counts.undelivered -= 1;
        }
        if once {
            match self.highest_in_order {
                Some(highest) if id < highest => self.counts.out_of_order += 1,
                _ => self.highest_in_order = Some(id),
            }
        }
        Delivery::First
    }

    /// The totals so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Ids acked and never delivered (the first `max` of them).
    pub fn lost_ids(&self, max: usize) -> Vec<u64> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, state)| **state & ACKED != 0 && **state & DELIVERED == 0)
            .map(|(id, _)| id as u64)
            .take(max)
            .collect()
    }

    fn state_mut(&mut self, id: u64) -> Option<&mut u8> {
        let state = self.states.get_mut(usize::try_from(id).ok()?)?;
        (*state & SENT != 0).then_some(state)
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.unknown += other.unknown;
        self.undelivered += other.undelivered;
        self.unacked += other.unacked;
        self.out_of_order += other.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_and_delivered_messages_are_not_lost() {
        let mut t = Tracker::new();
        for id in 0..3 {
            assert!(t.sent(id));
            assert!(t.acked(id));
            assert_eq!(t.delivered(id), Delivery::First);
        }
        let c = t.counts();
        assert_eq!((c.sent, c.acked, c.delivered), (3, 3, 3));
        assert_eq!((c.undelivered, c.duplicates, c.unacked), (0, 0, 0));
    }

    #[test]
    fn only_acked_undelivered_messages_count_as_lost() {
        let mut t = Tracker::new();
        t.sent(0);
        t.acked(0); // acked, never delivered: lost
        t.sent(1); // never acked, never delivered: not lost (the server never promised it)
        t.sent(2);
        t.acked(2);
        t.delivered(2);
        let c = t.counts();
        assert_eq!(c.undelivered, 1);
        assert_eq!(c.unacked, 1);
        assert_eq!(c.delivered, 1);
    }

    #[test]
    fn delivery_before_the_ack_is_not_lost() {
        let mut t = Tracker::new();
        t.sent(0);
        assert_eq!(t.delivered(0), Delivery::First);
        assert_eq!(t.counts().undelivered, 0);
        assert!(t.acked(0));
        assert_eq!(t.counts().undelivered, 0);
        assert_eq!(t.counts().unacked, 0);
    }

    #[test]
    fn every_extra_delivery_is_a_duplicate() {
        let mut t = Tracker::new();
        t.sent(5);
        t.acked(5);
        assert_eq!(t.delivered(5), Delivery::First);
        assert_eq!(t.delivered(5), Delivery::Duplicate);
        assert_eq!(t.delivered(5), Delivery::Duplicate);
        let c = t.counts();
        assert_eq!((c.delivered, c.duplicates), (1, 2));
    }

    #[test]
    fn retries_and_repeated_acks_count_once() {
        let mut t = Tracker::new();
        assert!(t.sent(0));
        assert!(!t.sent(0));
        assert!(t.acked(0));
        assert!(!t.acked(0));
        let c = t.counts();
        assert_eq!((c.sent, c.acked), (1, 1));
    }

    #[test]
    fn ids_never_sent_are_unknown_and_do_not_grow_the_table() {
        let mut t = Tracker::new();
        t.sent(1);
        // Id 0 is inside the table but was never sent.
        assert_eq!(t.delivered(0), Delivery::Unknown);
        assert_eq!(t.delivered(u64::MAX), Delivery::Unknown);
        assert!(!t.acked(0));
        assert!(!t.acked(1_000_000));
        let c = t.counts();
        assert_eq!((c.unknown, c.delivered, c.acked), (2, 0, 0));
        assert_eq!(t.states.len(), 2);
    }

    #[test]
    fn counts_add_up_across_trackers() {
        let mut a = Tracker::new();
        a.sent(0);
        a.acked(0);
        let mut b = Tracker::new();
        b.sent(0);
        b.delivered(0);
        b.delivered(0);
        let mut total = Counts::default();
        total += a.counts();
        total += b.counts();
        assert_eq!(total.sent, 2);
        assert_eq!(total.undelivered, 1);
        assert_eq!(total.duplicates, 1);
        assert_eq!(total.unacked, 1);
    }

    #[test]
    fn counts_from_worker_processes_add_up_after_json() {
        let mut a = Tracker::new();
        for id in 0..4 {
            a.sent(id);
            a.acked(id);
        }
        a.delivered(0);
        a.delivered(0);
        let mut b = Tracker::new();
        b.sent(0);
        b.sent(1);
        b.acked(1);
        b.delivered(1);
        let mut total = Counts::default();
        for counts in [a.counts(), b.counts()] {
            let line = serde_json::to_string(&counts).unwrap();
            total += serde_json::from_str::<Counts>(&line).unwrap();
        }
        let want = Counts {
            sent: 6,
            acked: 5,
            delivered: 2,
            duplicates: 1,
            unknown: 0,
            undelivered: 3,
            unacked: 1,
            out_of_order: 0,
        };
        assert_eq!(total, want);
    }

    #[test]
    fn a_message_overtaken_by_a_later_one_is_out_of_order() {
        let mut t = Tracker::new();
        for id in 0..5 {
            t.sent(id);
            t.acked(id);
        }
        assert_eq!(t.delivered(0), Delivery::First);
        assert_eq!(t.delivered(2), Delivery::First);
        assert_eq!(t.delivered(1), Delivery::First);
        assert_eq!(t.counts().out_of_order, 1);
        // A duplicate of an earlier message is a duplicate, not a reordering.
        assert_eq!(t.delivered(0), Delivery::Duplicate);
        assert_eq!(t.delivered(3), Delivery::First);
        assert_eq!(t.delivered(4), Delivery::First);
        let c = t.counts();
        assert_eq!((c.out_of_order, c.duplicates, c.delivered), (1, 1, 5));
    }

    #[test]
    fn messages_sent_again_may_arrive_late() {
        let mut t = Tracker::new();
        for id in 0..4 {
            t.sent(id);
        }
        // 1 was refused and sent again: it arrives after 3, which is not a reordering.
        t.retried(1);
        assert_eq!(t.delivered(0), Delivery::First);
        assert_eq!(t.delivered(3), Delivery::First);
        assert_eq!(t.delivered(1), Delivery::First);
        assert_eq!(t.counts().out_of_order, 0);
        // 2 was sent once and arrives after 3: out of order.
        assert_eq!(t.delivered(2), Delivery::First);
        assert_eq!(t.counts().out_of_order, 1);
        // Ids never sent are not marked.
        t.retried(9);
        assert_eq!(t.delivered(9), Delivery::Unknown);
    }

    #[test]
    fn counts_without_out_of_order_read_as_zero() {
        let line = r#"{"sent":1,"acked":1,"delivered":1,"duplicates":0,"unknown":0,"undelivered":0,"unacked":0}"#;
        let counts: Counts = serde_json::from_str(line).unwrap();
        assert_eq!(counts.out_of_order, 0);
    }

    #[test]
    fn running_totals_match_a_recount_after_any_sequence_of_events() {
        // A small deterministic pseudo-random walk over sends, acks and deliveries, checked
        // against a model that recounts from scratch.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut t = Tracker::new();
        let mut model: Vec<(bool, bool, u64)> = vec![(false, false, 0); 64];
        for _ in 0..5_000 {
            let id = next() % 64;
            let m = &mut model[id as usize];
            match next() % 3 {
                0 => {
                    t.sent(id);
                    m.0 = true;
                }
                1 => {
                    t.acked(id);
                    m.1 |= m.0;
                }
                _ => {
                    t.delivered(id);
                    if m.0 {
                        m.2 += 1;
                    }
                }
            }
        }
        let c = t.counts();
        let sent = model.iter().filter(|m| m.0).count() as u64;
        let acked = model.iter().filter(|m| m.1).count() as u64;
        let delivered = model.iter().filter(|m| m.2 > 0).count() as u64;
        let duplicates: u64 = model.iter().map(|m| m.2.saturating_sub(1)).sum();
        let undelivered = model.iter().filter(|m| m.1 && m.2 == 0).count() as u64;
        let unacked = model.iter().filter(|m| m.0 && !m.1).count() as u64;
        assert_eq!(
            (
                c.sent,
                c.acked,
                c.delivered,
                c.duplicates,
                c.undelivered,
                c.unacked
            ),
            (sent, acked, delivered, duplicates, undelivered, unacked)
        );
    }
}
