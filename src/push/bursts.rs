//! When a device is pushed: one push per burst of messages, none for what it acked.
//!
//! Per device with a registration and unacked messages, a *burst*: the seqs not yet acked, the
//! latest message, and at most one push scheduled or outstanding. The first message of a burst
//! schedules a push after a short delay (longer when the device had a live session: it gets the
//! time to ack); later messages join it (collapsed: the count and the latest message change).
//! Once pushed, the push stays outstanding: newer messages are collapsed into it until the
//! device catches up (acks everything: the burst ends) or `renotify` has passed (the next
//! message schedules a new push). A push whose messages were all acked before it was due is not
//! sent. A push the sender has no room for is put back ([`Bursts::defer`]) and offered again
//! after a growing pause, until the retry time is over; so while the gateway is down the bursts
//! themselves hold what is still owed (one per device), not a queue. Pure state: the caller
//! supplies the time ([`super::scheduler`] runs it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use super::hub::Arrival;
use super::notification::Notification;
use crate::mailbox::pushers::{Conversation, Target};
use crate::message::Id;

/// Unacked seqs remembered per device at most; a longer burst is counted as this many.
const MAX_TRACKED_SEQS: usize = 999;

/// The timing the scheduler follows.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Delay before pushing a device that had no live session.
    pub offline_delay: Duration,
    /// Delay before pushing a device that had one (its chance to ack).
    pub ack_grace: Duration,
    /// Least time between two pushes of one burst.
    pub renotify: Duration,
    /// First pause before a push the sender had no room for is offered again; doubled each
    /// time, up to `defer_max`.
    pub defer_base: Duration,
    /// Longest such pause.
    pub defer_max: Duration,
    /// How long a push is put back before it is given up.
    pub give_up: Duration,
}

/// A (user, device) pair.
type Key = (Id, Id);

/// The latest message of a burst.
#[derive(Debug, Clone)]
struct Latest {
    seq: u64,
    server_id: u64,
    conversation: Conversation,
    sender: Id,
    preview: Option<Arc<str>>,
}

#[derive(Debug)]
struct Burst {
    target: Arc<Target>,
    acked: u64,
    /// Seqs not acked, ascending (at most [`MAX_TRACKED_SEQS`]).
    unacked: Vec<u64>,
    /// Messages beyond the tracked seqs.
    overflow: u32,
    latest: Latest,
    /// When the scheduled push is due, and its generation (to ignore stale timers).
    due: Option<Instant>,
    generation: u64,
    /// When the last push of the burst was handed over.
    pushed_at: Option<Instant>,
    /// Times in a row its push was put back, and since when.
    deferred: u32,
    deferred_since: Option<Instant>,
}

impl Burst {
    fn count(&self) -> u32 {
        u32::try_from(self.unacked.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.overflow)
    }
}

/// What one arrival did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// It scheduled a push.
    Scheduled,
    /// It joined a push scheduled or outstanding.
    Collapsed,
    /// The device had acked it already (or it was seen before).
    Ignored,
}

/// What putting a push back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// It is offered again later.
    Later,
    /// Its retry time is over: it is given up (a dead letter); the burst stays outstanding.
    GivenUp,
    /// The device's burst ended meanwhile (it acked, or its registration went).
    Gone,
}

/// Every device's burst and the timers of the scheduled pushes.
#[derive(Debug)]
pub struct Bursts {
    timing: Timing,
    bursts: HashMap<Key, Burst>,
    timers: BinaryHeap<Reverse<(Instant, u64, Key)>>,
    next_generation: u64,
}

impl Bursts {
    /// No bursts yet.
    pub fn new(timing: Timing) -> Self {
        Bursts {
            timing,
            bursts: HashMap::new(),
            timers: BinaryHeap::new(),
            next_generation: 0,
        }
    }

    /// Devices with a burst.
    pub fn len(&self) -> usize {
        self.bursts.len()
    }

    /// True when no device has a burst.
    pub fn is_empty(&self) -> bool {
        self.bursts.is_empty()
    }

    /// A message for a registered device became durable at `now`.
    pub fn arrive(&mut self, arrival: Arrival, now: Instant) -> Arrived {
        let Arrival {
            owner,
            device,
            target,
            seq,
            server_id,
            conversation,
            sender,
            preview,
            online,
        } = arrival;
        let latest = Latest {
            seq,
            server_id,
            conversation,
            sender,
            preview,
        };
        let key = (owner, device);
        let burst = match self.bursts.get_mut(&key) {
            Some(burst) => {
                if seq <= burst.acked || seq <= burst.latest.seq {
                    return Arrived::Ignored;
                }
                burst.target = target;
                burst.latest = latest;
                if burst.unacked.len() < MAX_TRACKED_SEQS {
                    burst.unacked.push(seq);
                } else {
                    burst.overflow = burst.overflow.saturating_add(1);
                }
                let outstanding = burst
                    .pushed_at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.timing.renotify);
                if burst.due.is_some() || outstanding {
                    return Arrived::Collapsed;
                }
                burst
            }
            None => self.bursts.entry(key.clone()).or_insert(Burst {
                target,
                acked: 0,
                unacked: vec![seq],
                overflow: 0,
                latest,
                due: None,
                generation: 0,
                pushed_at: None,
                deferred: 0,
                deferred_since: None,
            }),
        };
        let delay = if online {
            self.timing.ack_grace
        } else {
            self.timing.offline_delay
        };
        let due = now + delay;
        self.next_generation += 1;
        burst.due = Some(due);
        burst.generation = self.next_generation;
        self.timers.push(Reverse((due, self.next_generation, key)));
        Arrived::Scheduled
    }

    /// `device` of `owner` acked up to `up_to`: a burst it caught up with ends.
    pub fn ack(&mut self, owner: &Id, device: &Id, up_to: u64) {
        let key = (owner.clone(), device.clone());
        let Some(burst) = self.bursts.get_mut(&key) else {
            return;
        };
        burst.acked = burst.acked.max(up_to);
        burst.unacked.retain(|seq| *seq > up_to);
        if burst.latest.seq <= up_to {
            self.bursts.remove(&key);
        }
    }

    /// Forgets `device`'s burst (its registration went).
    pub fn forget(&mut self, owner: &Id, device: &Id) {
        self.bursts.remove(&(owner.clone(), device.clone()));
    }

    /// When the next scheduled push is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((due, generation, key))) = self.timers.peek() {
            if self.is_live(key, *generation) {
                return Some(*due);
            }
            self.timers.pop();
        }
        None
    }

    fn is_live(&self, key: &Key, generation: u64) -> bool {
        self.bursts
            .get(key)
            .is_some_and(|burst| burst.due.is_some() && burst.generation == generation)
    }

    /// The sender took the push of `device` of `owner`.
    pub fn handed(&mut self, owner: &str, device: &str) {
        if let Some(burst) = self.bursts.get_mut(&(Id::from(owner), Id::from(device))) {
            burst.deferred = 0;
            burst.deferred_since = None;
        }
    }

    /// The sender had no room for the push of `device` of `owner` taken at `now`: schedules
    /// it again after a pause that grows with each time, or gives it up once it has been put
    /// back for longer than the retry time.
    pub fn defer(&mut self, owner: &str, device: &str, now: Instant) -> Deferred {
        let key = (Id::from(owner), Id::from(device));
        let Some(burst) = self.bursts.get_mut(&key) else {
            return Deferred::Gone;
        };
        let since = *burst.deferred_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.timing.give_up {
            burst.deferred = 0;
            burst.deferred_since = None;
            return Deferred::GivenUp;
        }
        let pause = self
            .timing
            .defer_base
            .saturating_mul(1 << burst.deferred.min(16))
            .min(self.timing.defer_max);
        burst.deferred = burst.deferred.saturating_add(1);
        burst.pushed_at = None;
        let due = now + pause;
        self.next_generation += 1;
        burst.due = Some(due);
        burst.generation = self.next_generation;
        self.timers.push(Reverse((due, self.next_generation, key)));
        Deferred::Later
    }

    /// The pushes due at `now`, each marked as sent.
    pub fn take_due(&mut self, now: Instant) -> Vec<Notification> {
        let mut due = Vec::new();
        while let Some(Reverse((at, generation, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = self.timers.pop() else {
                break;
            };
            if !self.is_live(&key, generation) {
                continue;
            }
            let Some(burst) = self.bursts.get_mut(&key) else {
                continue;
            };
            burst.due = None;
            burst.pushed_at = Some(now);
            due.push(notification(&key, burst));
        }
        due
    }
}

/// The push of `burst`.
fn notification(key: &Key, burst: &Burst) -> Notification {
    let (owner, device) = key;
    let target = &burst.target;
    let latest = &burst.latest;
    let preview = target.preview;
    Notification {
        id: format!("{owner}/{device}/{}", latest.seq),
        platform: target.platform,
        token: target.token.to_string(),
        app_id: target.app_id.to_string(),
        registered_secs: target.registered_ms / 1000,
        user: owner.to_string(),
        device: device.to_string(),
        conversation: latest.conversation.id().to_string(),
        group: matches!(latest.conversation, Conversation::Group(_)),
        server_id: latest.server_id,
        seq: latest.seq,
        count: burst.count().max(1),
        sender: preview.then(|| latest.sender.to_string()),
        preview: latest
            .preview
            .as_ref()
            .filter(|_| preview)
            .map(|text| text.to_string()),
    }
}

#[cfg(test)]
mod tests;
