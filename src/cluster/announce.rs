//! Which nodes phones are told about: a task that follows the cluster map and keeps the node's
//! list of the other nodes' client addresses (announced in every `Welcome`) in step with it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::placement::NodeId;
use crate::node::peer_addrs::PeerAddrs;

/// The client addresses of every node of `map` but `this` that may take phones (not down,
/// draining or removed) and has registered its addresses, in node id order.
pub fn peer_client_addrs(map: &ClusterMap, this: NodeId) -> Vec<String> {
    map.nodes
        .iter()
        .filter(|(node, record)| {
            **node != this
                && matches!(record.state, NodeState::Active | NodeState::Joining)
                && !record.client_addr.is_empty()
        })
        .map(|(_, record)| record.client_addr.clone())
        .collect()
}

/// Refreshes `into` from `map` now and on every change of the map, until `stop` is cancelled or
/// the map is gone (the metadata group stopped).
pub async fn follow(
    mut map: watch::Receiver<Arc<ClusterMap>>,
    this: NodeId,
    into: Arc<PeerAddrs>,
    stop: CancellationToken,
) {
    loop {
        let addrs = peer_client_addrs(&map.borrow_and_update(), this);
        into.replace(addrs);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = map.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::NodeRecord;

    fn record(client_addr: &str, state: NodeState) -> NodeRecord {
        NodeRecord {
            mesh_addr: "127.0.0.1:1".to_owned(),
            client_addr: client_addr.to_owned(),
            admin_addr: String::new(),
            media_addr: String::new(),
            state,
        }
    }

    #[test]
    fn every_other_registered_node_that_takes_phones_is_announced() {
        let mut map = ClusterMap::default();
        map.nodes
            .insert(1, record("10.0.0.1:7400", NodeState::Active));
        map.nodes
            .insert(2, record("10.0.0.2:7400", NodeState::Active));
        map.nodes
            .insert(3, record("10.0.0.3:7400", NodeState::Down));
        map.nodes
            .insert(4, record("10.0.0.4:7400", NodeState::Joining));
        map.nodes
            .insert(5, record("10.0.0.5:7400", NodeState::Draining));
        map.nodes.insert(6, record("", NodeState::Joining));
        map.nodes
            .insert(7, record("10.0.0.7:7400", NodeState::Removed));
        assert_eq!(
            peer_client_addrs(&map, 1),
            ["10.0.0.2:7400", "10.0.0.4:7400"]
        );
        assert_eq!(
            peer_client_addrs(&map, 2),
            ["10.0.0.1:7400", "10.0.0.4:7400"]
        );
    }

    #[tokio::test]
    async fn the_list_follows_the_map_until_stopped() {
        let mut map = ClusterMap::default();
        map.nodes
            .insert(1, record("10.0.0.1:7400", NodeState::Active));
        map.nodes
            .insert(2, record("10.0.0.2:7400", NodeState::Active));
        let (sender, receiver) = watch::channel(Arc::new(map.clone()));
        let addrs = Arc::new(PeerAddrs::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(receiver, 1, addrs.clone(), stop.clone()));
        while addrs.current() != ["10.0.0.2:7400"] {
            tokio::task::yield_now().await;
        }
        map.nodes
            .insert(2, record("10.0.0.2:7400", NodeState::Down));
        sender.send_replace(Arc::new(map));
        while !addrs.current().is_empty() {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
