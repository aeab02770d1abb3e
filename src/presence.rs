//! Presence: who watches whom, and last-seen times. Never stored on disk, never retried.

use dashmap::DashMap;

use crate::mailbox::event::{MailboxEvent, SessionHandle};
use crate::message::Id;

/// Watchers in other datacenters: presence changes for the connections that stand in for them
/// on this node (`crate::wan`).
pub trait FarWatchers: Send + Sync {
    /// Sends a change of `user` to the watcher connection `conn_id` stands in for; false when
    /// it stands in for none.
    fn relay(&self, conn_id: u64, user: &Id, online: bool, last_seen_ms: u64) -> bool;
}

/// Presence subscriptions and last-seen times.
#[derive(Debug, Default)]
pub struct Presence {
    /// Watched user → (connection id, watching session).
    watchers: DashMap<Id, Vec<(u64, SessionHandle)>>,
    /// User → when their last device went offline (ms since the epoch).
    last_seen: DashMap<Id, u64>,
}

impl Presence {
    /// Adds `session` (on connection `conn_id`) as a watcher of each of `users`.
    pub fn watch(&self, conn_id: u64, session: &SessionHandle, users: &[Id]) {
        for user in users {
            let mut watchers = self.watchers.entry(user.clone()).or_default();
            if !watchers.iter().any(|(id, _)| *id == conn_id) {
                watchers.push((conn_id, session.clone()));
            }
        }
    }

    /// Removes connection `conn_id` as a watcher of each of `users`.
    pub fn unwatch(&self, conn_id: u64, users: &[Id]) {
        for user in users {
            self.watchers.remove_if_mut(user, |_, watchers| {
                watchers.retain(|(id, _)| *id != conn_id);
                watchers.is_empty()
            });
        }
    }

    /// Forgets the watches of sessions on other nodes for which `stale(node, incarnation)`
    /// holds.
    pub fn drop_remote(&self, stale: impl Fn(u64, u64) -> bool) {
        self.watchers.retain(|_, watchers| {
            watchers.retain(|(_, session)| {
                !session
                    .origin()
                    .is_some_and(|(node, incarnation)| stale(node, incarnation))
            });
            !watchers.is_empty()
        });
    }

    /// When `user` was last seen (0 if never, or online now).
    pub fn last_seen(&self, user: &str) -> u64 {
        self.last_seen.get(user).map_or(0, |t| *t)
    }

    /// Tells every watcher of `user` that it came online or went offline at `now_ms`.
    /// Returns how many watchers were told.
    pub fn changed(&self, user: &Id, online: bool, now_ms: u64) -> usize {
        let last_seen_ms = if online {
            self.last_seen.remove(user);
            0
        } else {
            self.last_seen.insert(user.clone(), now_ms);
            now_ms
        };
        let Some(watchers) = self.watchers.get(user) else {
            return 0;
        };
        for (_, session) in watchers.iter() {
            session.send(MailboxEvent::Presence {
                user: user.clone(),
                online,
                last_seen_ms,
            });
        }
        watchers.len()
    }
}
