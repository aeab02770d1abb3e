//! The node's push hub: what the mailbox workers tell the scheduler (through one bounded
//! queue: chat never waits for push), and which device holds each token.

use std::sync::Arc;

use dashmap::DashMap;
use metrics::Counter;
use tokio::sync::mpsc;

use super::telemetry;
use crate::mailbox::pushers::{Conversation, Target};
use crate::message::Id;

/// A durable message for a registered device.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The user.
    pub owner: Id,
    /// The device.
    pub device: Id,
    /// Where it is pushed.
    pub target: Arc<Target>,
    /// The message's seq in the user's mailbox.
    pub seq: u64,
    /// Its server id.
    pub server_id: u64,
    /// Its conversation.
    pub conversation: Conversation,
    /// Its author.
    pub sender: Id,
    /// Its text for a preview (only when the target shows previews).
    pub preview: Option<Arc<str>>,
    /// The device had a live session when the message became durable.
    pub online: bool,
}

/// What the scheduler hears.
#[derive(Debug)]
pub enum PushEvent {
    /// A message arrived for a registered device.
    Arrived(Box<Arrival>),
    /// A device acked its mailbox up to `up_to` (or logged in from there).
    Acked {
        /// The user.
        owner: Id,
        /// The device.
        device: Id,
        /// Everything up to here.
        up_to: u64,
    },
    /// `device` of `owner` no longer holds the token it had (unregistered or replaced): its
    /// burst ends.
    Forget {
        /// The user.
        owner: Id,
        /// The device.
        device: Id,
    },
    /// `token` moved to another device: drop it from `device` of `owner`.
    Moved {
        /// The user that held it.
        owner: Id,
        /// The device that held it.
        device: Id,
        /// The token.
        token: Arc<str>,
    },
}

/// Who holds a token, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    owner: Id,
    device: Id,
    registered_ms: u64,
}

/// The handle the mailbox workers use.
#[derive(Debug)]
pub struct PushHub {
    events: mpsc::Sender<PushEvent>,
    tokens: DashMap<Arc<str>, Holder>,
    dropped: Counter,
}

impl PushHub {
    /// A hub whose events go to `events`.
    pub fn new(events: mpsc::Sender<PushEvent>) -> Self {
        PushHub {
            events,
            tokens: DashMap::new(),
            dropped: metrics::counter!(telemetry::DEAD_LETTERS),
        }
    }

    /// Hands `event` to the scheduler; when its queue is full the event is dropped and
    /// counted as a dead letter (a lost ack only means a push the device did not need; a lost
    /// arrival, a push it does not get).
    pub fn tell(&self, event: PushEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped.increment(1);
        }
    }

    /// Notes that `device` of `owner` registered `token` at `registered_ms`; tells the
    /// scheduler to drop the token from the device that held it before, if another did (the
    /// newer registration wins).
    pub fn claim(&self, token: &Arc<str>, owner: &Id, device: &Id, registered_ms: u64) {
        let holder = Holder {
            owner: owner.clone(),
            device: device.clone(),
            registered_ms,
        };
        let loser = match self.tokens.entry(token.clone()) {
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(holder);
                None
            }
            dashmap::Entry::Occupied(mut occupied) => {
                let old = occupied.get();
                if old.owner == holder.owner && old.device == holder.device {
                    occupied.insert(holder);
                    None
                } else if old.registered_ms <= registered_ms {
                    Some(occupied.insert(holder))
                } else {
                    // An older registration found after a newer one (recovery order).
                    Some(holder)
                }
            }
        };
        if let Some(loser) = loser {
            self.tell(PushEvent::Moved {
                owner: loser.owner,
                device: loser.device,
                token: token.clone(),
            });
        }
    }

    /// Notes that `device` of `owner` no longer holds `token`.
    pub fn release(&self, token: &str, owner: &Id, device: &Id) {
        self.tokens.remove_if(token, |_, holder| {
            holder.owner == *owner && holder.device == *device
        });
    }
}
