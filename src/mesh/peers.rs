//! The peer table: for each known peer its address, its current link (at most one), whether a
//! link is up (watched by its dialer), and the rule that settles two links to one peer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::NodeId;
use super::link::Link;

/// One known peer.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) addr: Mutex<String>,
    pub(crate) link: Mutex<Option<Arc<Link>>>,
    /// Who dialed the installed link, `None` without one; the dialer waits for a value other
    /// than its own node.
    pub(crate) dialed_by: watch::Sender<Option<NodeId>>,
    pub(crate) dialer: Mutex<Option<AbortHandle>>,
    /// Links that came up so far (a later one counts as a reconnect).
    pub(crate) links_made: AtomicU64,
    /// When the peer was last heard on a link that has ended (when it became known, before any).
    heard_before: Mutex<Instant>,
    /// The incarnation the peer announced on its latest link (0 before any).
    incarnation: AtomicU64,
}

impl Peer {
    pub(crate) fn new(id: NodeId, addr: String) -> Arc<Peer> {
        Arc::new(Peer {
            id,
            addr: Mutex::new(addr),
            link: Mutex::new(None),
            dialed_by: watch::Sender::new(None),
            dialer: Mutex::new(None),
            links_made: AtomicU64::new(0),
            heard_before: Mutex::new(Instant::now()),
            incarnation: AtomicU64::new(0),
        })
    }

    pub(crate) fn addr(&self) -> String {
        lock(&self.addr).clone()
    }

    /// The incarnation the peer announced on its latest link.
    pub(crate) fn incarnation(&self) -> Option<u64> {
        match self.incarnation.load(Ordering::Acquire) {
            0 => None,
            incarnation => Some(incarnation),
        }
    }

    /// Records the incarnation the peer announced on a link that came up.
    pub(crate) fn set_incarnation(&self, incarnation: u64) {
        self.incarnation.store(incarnation, Ordering::Release);
    }

    pub(crate) fn current(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }

    /// How long since any frame came from this peer: on the link that is up, or else on the last
    /// one before it ended (since the peer became known when no link ever came up).
    pub(crate) fn silent_for(&self) -> Duration {
        let heard = match self.current().filter(|link| link.is_up()) {
            Some(link) => link.last_heard(),
            None => *lock(&self.heard_before),
        };
        heard.elapsed()
    }

    /// Installs `link` as this peer's link unless the current one must stay; the one replaced is
    /// closed. `me` is this node's id. Returns whether `link` was installed.
    pub(crate) fn install(&self, me: NodeId, link: &Arc<Link>) -> bool {
        let mut slot = lock(&self.link);
        if let Some(current) = slot.as_ref() {
            if !replaces(me, self.id, current.dialed_by, link.dialed_by) {
                return false;
            }
            current.close();
        }
        link.mark_up();
        if self.links_made.fetch_add(1, Ordering::Relaxed) > 0 {
            link.telemetry.reconnects.increment(1);
        }
        *slot = Some(Arc::clone(link));
        self.dialed_by.send_replace(Some(link.dialed_by));
        true
    }

    /// Removes `link` if it is still this peer's link. The peer's gauges are reset here, under
    /// the slot's lock, so a replaced link that ends late cannot zero its successor's.
    pub(crate) fn uninstall(&self, link: &Link) {
        let mut slot = lock(&self.link);
        if slot.as_ref().is_some_and(|current| current.id == link.id) {
            *slot = None;
            let mut heard = lock(&self.heard_before);
            *heard = (*heard).max(link.last_heard());
            drop(heard);
            link.telemetry.up.set(0.0);
            for gauge in &link.telemetry.lane_depth {
                gauge.set(0.0);
            }
            self.dialed_by.send_replace(None);
        }
    }
}

/// Whether a new link dialed by `new_dialer` replaces the current one dialed by `current_dialer`
/// between nodes `me` and `peer`. The link dialed by the lower id is the one both sides keep;
/// between two links dialed by the same node the newer wins (the older is likely from before a
/// restart). Both ends apply the same rule, so they settle on the same link.
pub(crate) fn replaces(
    me: NodeId,
    peer: NodeId,
    current_dialer: NodeId,
    new_dialer: NodeId,
) -> bool {
    let lower = me.min(peer);
    !(current_dialer == lower && new_dialer != lower)
}

/// The table of known peers.
pub(crate) type PeerTable = Mutex<BTreeMap<NodeId, Arc<Peer>>>;

/// Locks a mutex, taking over its value if a panicking thread poisoned it (every critical
/// section here leaves its data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_dialed_by_the_lower_id_stays() {
        // Between 1 and 2, as seen from either side.
        for me in [1, 2] {
            let peer = 3 - me;
            assert!(
                !replaces(me, peer, 1, 2),
                "a link from 2 does not replace one from 1"
            );
            assert!(
                replaces(me, peer, 2, 1),
                "a link from 1 replaces one from 2"
            );
            assert!(
                replaces(me, peer, 1, 1),
                "a newer link from 1 replaces an older one"
            );
            assert!(replaces(me, peer, 2, 2));
        }
    }
}
