//! Who is online: each user's connected devices and the handle of each device's session actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use dashmap::DashMap;

use crate::mailbox::event::{MailboxEvent, SessionHandle};
use crate::message::Id;

/// Bounds the live pushes queued in one session's actor mailbox (ractor mailboxes are
/// unbounded). Past the bound, pushes are skipped and the session reads them from its mailbox.
#[derive(Debug, Default)]
pub struct PushBudget {
    queued: AtomicU32,
    missed: AtomicBool,
}

impl PushBudget {
    /// Reserves room for one push; false (and the session marked as having missed one) when the
    /// queue already holds `limit` pushes.
    pub fn try_reserve(&self, limit: u32) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) < limit {
            true
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.missed.store(true, Ordering::Release);
            false
        }
    }

    /// Records that a push to this session was lost on its way (the session reads its mailbox
    /// once its queued pushes are taken).
    pub fn mark_missed(&self) {
        self.missed.store(true, Ordering::Release);
    }

    /// Called by the session for each push it takes; true when pushes were skipped and none is
    /// left queued, so the session must read its mailbox to catch up.
    pub fn release(&self) -> bool {
        let left = self.queued.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        left == 0 && self.missed.swap(false, Ordering::AcqRel)
    }
}

/// One connected device.
#[derive(Debug, Clone)]
pub struct DeviceSession {
    /// The device id.
    pub device: Id,
    /// The connection serving it.
    pub conn_id: u64,
    /// Where its session's events go.
    pub sink: SessionHandle,
    /// Its live-push budget.
    pub pushes: Arc<PushBudget>,
}

impl DeviceSession {
    /// Hands `event` to the session within its push budget of `limit` queued pushes; false when
    /// the budget is spent (the session then reads its mailbox) or the session is gone.
    pub fn try_push(&self, limit: u32, event: MailboxEvent) -> bool {
        if !self.pushes.try_reserve(limit) {
            return false;
        }
        if self.sink.send(event) {
            true
        } else {
            self.pushes.release();
            false
        }
    }
}

/// The online map: user → connected devices.
#[derive(Debug, Default)]
pub struct Registry {
    users: DashMap<Id, Vec<DeviceSession>>,
}

/// What registering a device changed.
#[derive(Debug)]
pub struct Registered {
    /// The session the same device had before, now replaced.
    pub replaced: Option<DeviceSession>,
    /// True when the user had no device online before.
    pub came_online: bool,
}

impl Registry {
    /// Registers a session for `user`, replacing any earlier session of the same device.
    pub fn insert(&self, user: &Id, session: DeviceSession) -> Registered {
        let mut devices = self.users.entry(user.clone()).or_default();
        let came_online = devices.is_empty();
        let replaced = devices
            .iter()
            .position(|d| d.device == session.device)
            .map(|index| devices.swap_remove(index));
        devices.push(session);
        Registered {
            replaced,
            came_online,
        }
    }

    /// Removes the session on connection `conn_id` (if it is still registered); true when the
    /// user now has no device online.
    pub fn remove(&self, user: &Id, conn_id: u64) -> bool {
        self.users
            .remove_if_mut(user, |_, devices| {
                devices.retain(|d| d.conn_id != conn_id);
                devices.is_empty()
            })
            .is_some()
    }

    /// Calls `f` for every connected device of `user` (the map stays read-locked meanwhile, so
    /// `f` must not touch the registry).
    pub fn for_each(&self, user: &str, mut f: impl FnMut(&DeviceSession)) {
        if let Some(devices) = self.users.get(user) {
            devices.iter().for_each(&mut f);
        }
    }

    /// Hands a typing notice from `from_user` to every session of `to_user` known here, each
    /// within its push budget of `limit`; returns how many took it. Never stored.
    pub fn relay_typing(&self, from_user: &Id, to_user: &Id, typing: bool, limit: u32) -> u64 {
        let mut relayed = 0;
        self.for_each(to_user, |session| {
            let notice = MailboxEvent::Typing {
                from_user: from_user.clone(),
                typing,
                group: None,
            };
            if session.try_push(limit, notice) {
                relayed += 1;
            }
        });
        metrics::counter!(crate::metrics::TYPING_RELAYED).increment(relayed);
        relayed
    }

    /// Forgets the sessions on other nodes for which `stale(node, incarnation)` holds (their
    /// node restarted or went down); returns the users left with no device online.
    pub fn drop_remote(&self, stale: impl Fn(u64, u64) -> bool) -> Vec<Id> {
        let is_stale = |session: &DeviceSession| {
            session
                .sink
                .origin()
                .is_some_and(|(node, incarnation)| stale(node, incarnation))
        };
        let mut emptied = Vec::new();
        for mut entry in self.users.iter_mut() {
            let before = entry.value().len();
            entry.value_mut().retain(|session| !is_stale(session));
            if entry.value().is_empty() && before > 0 {
                emptied.push(entry.key().clone());
            }
        }
        for user in &emptied {
            self.users.remove_if(user, |_, devices| devices.is_empty());
        }
        emptied
    }

    /// True when `user` has a device online.
    pub fn is_online(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Number of devices online of `user`.
    pub fn device_count(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |d| d.len())
    }

    /// Users with at least one device online.
    pub fn online_users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_budget_skips_past_the_limit_and_asks_for_a_catch_up() {
        let budget = PushBudget::default();
        assert!(budget.try_reserve(2));
        assert!(budget.try_reserve(2));
        assert!(!budget.try_reserve(2), "third push is skipped");
        assert!(!budget.release(), "one push still queued");
        assert!(budget.release(), "queue empty after a skip: catch up");
        assert!(budget.try_reserve(2));
        assert!(!budget.release(), "nothing skipped this time");
    }
}
