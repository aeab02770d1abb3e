//! The client addresses of the cluster's other nodes, announced to every phone in `Welcome`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The list a task following the cluster map refreshes and every login reads. On a node
/// without `[cluster]` nothing ever sets it, and a login reads one atomic flag and nothing else.
#[derive(Debug, Default)]
pub struct PeerAddrs {
    /// Set once a list was stored: until then `list` is not looked at.
    set: AtomicBool,
    /// Changed only when the cluster map changes (rarely); read under the lock per login.
    list: RwLock<Arc<[String]>>,
}

impl PeerAddrs {
    /// Replaces the list (host:port strings, this node not among them).
    pub fn replace(&self, addrs: Vec<String>) {
        let addrs: Arc<[String]> = addrs.into();
        // A poisoned lock only means a writer panicked mid-swap of an Arc: the value is whole.
        let mut list = self
            .list
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *list = addrs;
        drop(list);
        self.set.store(true, Ordering::Release);
    }

    /// The current list, for a Welcome; empty when none was ever stored.
    pub fn current(&self) -> Vec<String> {
        if !self.set.load(Ordering::Acquire) {
            return Vec::new();
        }
        // Hold the lock only for the clone of the Arc; the strings are copied after.
        let list = Arc::clone(
            &self
                .list
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        list.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_empty_until_set_and_then_the_last_one_stored() {
        let addrs = PeerAddrs::default();
        assert!(addrs.current().is_empty());
        addrs.replace(vec!["10.0.0.2:7400".into(), "10.0.0.3:7400".into()]);
        assert_eq!(addrs.current(), ["10.0.0.2:7400", "10.0.0.3:7400"]);
        addrs.replace(vec!["10.0.0.3:7400".into()]);
        assert_eq!(addrs.current(), ["10.0.0.3:7400"]);
    }
}
