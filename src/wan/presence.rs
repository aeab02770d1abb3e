//! Presence across datacenters.
//!
//! The watcher's node sends a `Watch` through its gateway to a gateway of the watched users'
//! datacenter. That gateway stands in for the watcher there: under a connection id of its own
//! (a proxy), it watches the users as a session of its node would (through its cluster's
//! router for users other nodes own, in its node's presence table for its own), and every
//! change it hears of for the proxy goes back across as a `PresenceRelay`, which the watcher's
//! gateway hands to the watcher's node as the owner of a user in its own cluster would.
//!
//! Notices only, like presence everywhere: lost when a link is down (the phone sees the state
//! again when it subscribes again, as after any reconnect). A proxy ends when its watcher
//! unwatches all its users (its session ended or subscribed anew); one whose `Unwatch` was lost
//! stays until the same connection watches or unwatches again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::mailbox::{EventSink, MailboxEvent, SessionHandle};
use crate::message::Id;
use crate::node::Node;
use crate::proto::wan as pb;

/// Sends a relay back to the datacenter named first.
pub(super) type SendBack = Arc<dyn Fn(&str, pb::PresenceRelay) + Send + Sync>;

/// Who a proxy stands in for.
struct Proxy {
    from: String,
    node: u64,
    conn_id: u64,
    watcher: Id,
    users: Vec<Id>,
}

/// The watchers of other datacenters on users homed here, on one gateway.
pub(super) struct FarWatchers {
    node: Weak<Node>,
    send_back: SendBack,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    proxies: HashMap<u64, Proxy>,
    by_origin: HashMap<(String, u64, u64), u64>,
}

impl FarWatchers {
    pub(super) fn new(node: &Arc<Node>, send_back: SendBack) -> Arc<FarWatchers> {
        Arc::new(FarWatchers {
            node: Arc::downgrade(node),
            send_back,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts watching for a watcher of another datacenter.
    pub(super) fn watch(self: &Arc<Self>, watch: pb::Watch) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let users: Vec<Id> = watch.users.iter().map(|u| Id::from(u.as_str())).collect();
        let watcher = Id::from(watch.watcher);
        let origin = (watch.from.clone(), watch.node, watch.conn_id);
        let proxy = {
            let mut state = self.lock();
            let proxy = match state.by_origin.get(&origin) {
                Some(proxy) => *proxy,
                None => {
                    let proxy = node.conns.next_id();
                    state.by_origin.insert(origin, proxy);
                    proxy
                }
            };
            let entry = state.proxies.entry(proxy).or_insert_with(|| Proxy {
                from: watch.from,
                node: watch.node,
                conn_id: watch.conn_id,
                watcher: watcher.clone(),
                users: Vec::new(),
            });
            for user in &users {
                if !entry.users.contains(user) {
                    entry.users.push(user.clone());
                }
            }
            proxy
        };
        let local = match node.remote.get() {
            Some(remote) => remote.watch_presence(&watcher, proxy, &users),
            None => users,
        };
        let sink: SessionHandle = Arc::new(ProxySink {
            proxy,
            watchers: Arc::downgrade(self),
        });
        node.presence.watch(proxy, &sink, &local);
        for user in &local {
            let online = node.registry.is_online(user);
            let last_seen_ms = if online {
                0
            } else {
                node.presence.last_seen(user)
            };
            self.relay(proxy, user, online, last_seen_ms);
        }
    }

    /// Ends watches of a watcher of another datacenter.
    pub(super) fn unwatch(&self, unwatch: pb::Unwatch) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let users: Vec<Id> = unwatch.users.iter().map(|u| Id::from(u.as_str())).collect();
        let origin = (unwatch.from, unwatch.node, unwatch.conn_id);
        let (proxy, watcher) = {
            let mut state = self.lock();
            let Some(proxy) = state.by_origin.get(&origin).copied() else {
                return;
            };
            let watcher = state
                .proxies
                .get(&proxy)
                .map_or_else(|| Id::from(""), |entry| entry.watcher.clone());
            let empty = state.proxies.get_mut(&proxy).is_none_or(|entry| {
                entry.users.retain(|user| !users.contains(user));
                entry.users.is_empty()
            });
            if empty {
                state.proxies.remove(&proxy);
                state.by_origin.remove(&origin);
            }
            (proxy, watcher)
        };
        if let Some(remote) = node.remote.get() {
            remote.unwatch_presence(&watcher, proxy, &users);
        }
        node.presence.unwatch(proxy, &users);
    }

    /// Sends a change of `user` to the watcher `proxy` stands in for; false when it is none.
    pub(super) fn relay(&self, proxy: u64, user: &Id, online: bool, last_seen_ms: u64) -> bool {
        let (from, relay) = {
            let state = self.lock();
            let Some(entry) = state.proxies.get(&proxy) else {
                return false;
            };
            (
                entry.from.clone(),
                pb::PresenceRelay {
                    node: entry.node,
                    conn_id: entry.conn_id,
                    watcher: entry.watcher.to_string(),
                    user: user.to_string(),
                    online,
                    last_seen_ms,
                },
            )
        };
        (self.send_back)(&from, relay);
        true
    }
}

impl crate::presence::FarWatchers for FarWatchers {
    fn relay(&self, conn_id: u64, user: &Id, online: bool, last_seen_ms: u64) -> bool {
        FarWatchers::relay(self, conn_id, user, online, last_seen_ms)
    }
}

/// The reply address of a proxy in its node's presence table.
struct ProxySink {
    proxy: u64,
    watchers: Weak<FarWatchers>,
}

impl fmt::Debug for ProxySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxySink({})", self.proxy)
    }
}

impl EventSink for ProxySink {
    fn send(&self, event: MailboxEvent) -> bool {
        let MailboxEvent::Presence {
            user,
            online,
            last_seen_ms,
        } = event
        else {
            return false;
        };
        self.watchers
            .upgrade()
            .is_some_and(|watchers| watchers.relay(self.proxy, &user, online, last_seen_ms))
    }
}
