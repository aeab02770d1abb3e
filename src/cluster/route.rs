//! Where a user's (or a group's) operations run: the key hashes to a slot, the slot to an island
//! of the cluster map. Without replication the island's first member owns the slot: pure, the
//! same map and key give the same answer on every node, which is what lets any node route and
//! the owner check; an owner that is down makes its slots unavailable (callers refuse with
//! OVERLOADED so phones retry), never served elsewhere.
//!
//! With replicated slots the slot's group's leader serves it ([`Leaders`]): a node that knows
//! no leader sends the operation to the group's preferred member (which answers with the leader
//! it knows), and a node that leads serves only once its workers hold the whole state.

use crate::cluster::leaders::{Leaders, preferred_leader, slot_group};
use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::placement::NodeId;
use crate::shard::key_hash;

/// Where one operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node owns the key's slot.
    Local,
    /// Another node owns it.
    Remote(NodeId),
    /// Nobody can serve it now: the slot is not placed, or its owner is down or unknown.
    Unavailable,
}

/// The slot of `key` among `slot_count` slots (0 when there are none).
pub fn slot_of(key: &[u8], slot_count: u32) -> u32 {
    match slot_count {
        0 => 0,
        count => (key_hash(key) % u64::from(count)) as u32,
    }
}

/// The node that owns `slot` in `map`, whatever its state.
pub fn owner_of(map: &ClusterMap, slot: u32) -> Option<NodeId> {
    map.placement
        .island_of(slot)
        .and_then(|island| island.members.first().copied())
}

/// The node serving `key` as far as node `me` knows (its slot's owner, or with replicated slots
/// its group's leader or preferred member), whatever its state.
pub fn serving(map: &ClusterMap, leaders: &Leaders, key: &[u8]) -> Option<NodeId> {
    let slot = slot_of(key, map.placement.slots.len() as u32);
    let island = map.placement.island_of(slot)?;
    if !leaders.replicated() {
        return island.members.first().copied();
    }
    let group = slot_group(island.id, slot);
    leaders
        .get(group)
        .or_else(|| preferred_leader(island, group))
}

/// Where an operation on `key` goes, seen from node `me` with `map` and `leaders`.
pub fn route(map: &ClusterMap, leaders: &Leaders, me: NodeId, key: &[u8]) -> Route {
    if leaders.replicated() {
        return replicated_route(map, leaders, me, key);
    }
    let slot = slot_of(key, map.placement.slots.len() as u32);
    let Some(owner) = owner_of(map, slot) else {
        return Route::Unavailable;
    };
    match map.nodes.get(&owner).map(|record| record.state) {
        Some(NodeState::Active | NodeState::Draining) if owner == me => Route::Local,
        Some(NodeState::Active | NodeState::Draining) => Route::Remote(owner),
        _ => Route::Unavailable,
    }
}

/// [`route`] with replicated slots: the group's leader; when none is known, the preferred
/// member unless that is this node (which would be the leader if it could serve) or down.
fn replicated_route(map: &ClusterMap, leaders: &Leaders, me: NodeId, key: &[u8]) -> Route {
    let slot = slot_of(key, map.placement.slots.len() as u32);
    let Some(island) = map.placement.island_of(slot) else {
        return Route::Unavailable;
    };
    let group = slot_group(island.id, slot);
    match leaders.get(group) {
        Some(leader) if leader == me => Route::Local,
        Some(leader) => Route::Remote(leader),
        None => match preferred_leader(island, group) {
            Some(preferred)
                if preferred != me
                    && map.nodes.get(&preferred).is_some_and(|record| {
                        matches!(record.state, NodeState::Active | NodeState::Draining)
                    }) =>
            {
                Route::Remote(preferred)
            }
            _ => Route::Unavailable,
        },
    }
}

/// Keys by where their operations run (see [`place`]).
#[derive(Debug)]
pub struct Placed<K> {
    /// Owned by this node.
    pub here: Vec<K>,
    /// Owned by other nodes, per node in the order first met.
    pub remote: Vec<(NodeId, Vec<K>)>,
    /// Nobody can serve them now.
    pub nowhere: Vec<K>,
}

/// `keys` by where their operations run, seen from node `me` with `map` and `leaders`.
pub fn place<K: AsRef<str>>(
    map: &ClusterMap,
    leaders: &Leaders,
    me: NodeId,
    keys: impl IntoIterator<Item = K>,
) -> Placed<K> {
    let mut placed = Placed {
        here: Vec::new(),
        remote: Vec::new(),
        nowhere: Vec::new(),
    };
    for key in keys {
        match route(map, leaders, me, key.as_ref().as_bytes()) {
            Route::Local => placed.here.push(key),
            Route::Remote(node) => match placed.remote.iter_mut().find(|(n, _)| *n == node) {
                Some((_, keys)) => keys.push(key),
                None => placed.remote.push((node, vec![key])),
            },
            Route::Unavailable => placed.nowhere.push(key),
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{MapCommand, NodeRecord};
    use crate::cluster::placement::{Placement, place};

    fn map(states: &[(NodeId, NodeState)], slots: u32) -> ClusterMap {
        let mut map = ClusterMap::default();
        for (id, state) in states {
            let record = NodeRecord {
                mesh_addr: format!("127.0.0.1:{}", 7000 + id),
                client_addr: format!("127.0.0.1:{}", 8000 + id),
                admin_addr: String::new(),
                media_addr: String::new(),
                state: *state,
            };
            map.apply(&MapCommand::AddNode { node: *id, record }).ok();
            map.apply(&MapCommand::SetState {
                node: *id,
                state: *state,
            })
            .ok();
        }
        let ids: Vec<NodeId> = states.iter().map(|(id, _)| *id).collect();
        let placement = place(&Placement::default(), &ids, 1, slots);
        map.apply(&MapCommand::SetPlacement(placement)).ok();
        map
    }

    #[test]
    fn keys_are_placed_as_each_is_routed() {
        let map = map(
            &[
                (1, NodeState::Active),
                (2, NodeState::Down),
                (3, NodeState::Active),
            ],
            64,
        );
        let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
        let placed = super::place(
            &map,
            &Leaders::default(),
            1,
            keys.iter().map(String::as_str),
        );
        for key in &placed.here {
            assert_eq!(
                route(&map, &Leaders::default(), 1, key.as_bytes()),
                Route::Local
            );
        }
        for key in &placed.nowhere {
            assert_eq!(
                route(&map, &Leaders::default(), 1, key.as_bytes()),
                Route::Unavailable
            );
        }
        assert_eq!(placed.remote.len(), 1);
        for (node, keys) in &placed.remote {
            for key in keys {
                assert_eq!(
                    route(&map, &Leaders::default(), 1, key.as_bytes()),
                    Route::Remote(*node)
                );
            }
        }
        let total = placed.here.len()
            + placed.nowhere.len()
            + placed
                .remote
                .iter()
                .map(|(_, keys)| keys.len())
                .sum::<usize>();
        assert_eq!(total, keys.len());
        assert!(!placed.here.is_empty() && !placed.nowhere.is_empty());
    }

    #[test]
    fn every_node_routes_a_key_to_the_same_owner() {
        let map = map(
            &[
                (1, NodeState::Active),
                (2, NodeState::Active),
                (3, NodeState::Active),
            ],
            64,
        );
        let mut owners = [0usize; 4];
        for i in 0..3000 {
            let key = format!("user-{i}");
            let slot = slot_of(key.as_bytes(), 64);
            let owner = owner_of(&map, slot).expect("placed");
            owners[owner as usize] += 1;
            for me in 1..=3 {
                let expected = if me == owner {
                    Route::Local
                } else {
                    Route::Remote(owner)
                };
                assert_eq!(
                    route(&map, &Leaders::default(), me, key.as_bytes()),
                    expected
                );
            }
        }
        // Spread over all three (slots are placed evenly; keys hash evenly).
        assert!(owners[1..].iter().all(|n| *n > 700), "{owners:?}");
    }

    #[test]
    fn a_down_owner_makes_its_slots_unavailable_and_no_map_means_unavailable() {
        let map = map(&[(1, NodeState::Active), (2, NodeState::Down)], 16);
        let key = (0..)
            .map(|i| format!("user-{i}"))
            .find(|key| owner_of(&map, slot_of(key.as_bytes(), 16)) == Some(2))
            .expect("a key owned by node 2");
        assert_eq!(
            route(&map, &Leaders::default(), 1, key.as_bytes()),
            Route::Unavailable
        );
        assert_eq!(
            route(
                &ClusterMap::default(),
                &Leaders::default(),
                1,
                key.as_bytes()
            ),
            Route::Unavailable
        );
    }

    #[test]
    fn slots_are_stable_across_builds() {
        // FNV-1a 64 of "alice" modulo 512: a change here moves every user of a live cluster.
        assert_eq!(slot_of(b"alice", 512), 263);
        assert_eq!(slot_of(b"alice", 0), 0);
    }
}
