//! Who leads each slot group, as this node knows it: with replicated slots a key's operations
//! run on the leader of its slot's group, not on a fixed owner. Kept by the node's replica
//! (`replica.rs`) from its slot groups; read by every route.
//!
//! A slot's group is `(island id, slot % GROUPS_PER_ISLAND)`: a few groups per island so that
//! each Raft entry carries many messages (6 cost less CPU per message than 24, measured), and
//! a multiple of three so that leaders spread evenly over an island of three. The group's preferred leader is the island member at the group's
//! number modulo the island's size.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::placement::{Island, NodeId};

/// Slot groups per island.
pub const GROUPS_PER_ISLAND: u32 = 6;

/// The slot group of `slot` on island `island`.
pub fn slot_group(island: u32, slot: u32) -> u64 {
    (u64::from(island) << 32) | u64::from(slot % GROUPS_PER_ISLAND)
}

/// The slot groups of `island`, in order.
pub fn island_groups(island: u32) -> impl Iterator<Item = u64> {
    (0..GROUPS_PER_ISLAND).map(move |index| slot_group(island, index))
}

/// The member of `island` that should lead `group` while it is up.
pub fn preferred_leader(island: &Island, group: u64) -> Option<NodeId> {
    let index = (group & u64::from(u32::MAX)) as usize;
    island
        .members
        .get(index % island.members.len().max(1))
        .copied()
}

/// The member of `island` that should lead `group` now, as the map says: the preferred one
/// unless it drains, else the next member in the island's order that does not (a draining
/// node hands its groups to it by transfer, and gets them back once active again), else the
/// preferred one. A member that is down stays preferred: its group elected another leader
/// already, and moving leadership between the survivors would only add a pause (with two of
/// three members gone an island has no majority anyway).
pub fn serving_leader(map: &ClusterMap, island: &Island, group: u64) -> Option<NodeId> {
    let count = island.members.len();
    let start = (group & u64::from(u32::MAX)) as usize;
    (0..count)
        .filter_map(|offset| island.members.get((start + offset) % count.max(1)))
        .find(|member| {
            map.nodes
                .get(member)
                .is_none_or(|record| record.state != NodeState::Draining)
        })
        .copied()
        .or_else(|| preferred_leader(island, group))
}

/// The known leaders of the slot groups.
#[derive(Debug, Default)]
pub struct Leaders {
    /// Slots are replicated (otherwise every slot has its island's first member as owner and
    /// the table stays empty).
    replicated: bool,
    /// Group -> leader; a group this node leads is listed only once it has applied everything
    /// committed before its term (its workers hold the whole state).
    table: DashMap<u64, NodeId>,
    /// Raised on every change, so sessions can read again when their owner moved.
    version: AtomicU64,
}

impl Leaders {
    /// An empty table; `replicated` says whether slots are replicated at all.
    pub fn new(replicated: bool) -> Leaders {
        Leaders {
            replicated,
            ..Leaders::default()
        }
    }

    /// Whether slots are replicated.
    pub fn replicated(&self) -> bool {
        self.replicated
    }

    /// The leader of `group`, if known.
    pub fn get(&self, group: u64) -> Option<NodeId> {
        self.table.get(&group).map(|leader| *leader)
    }

    /// Sets (or, with `None`, forgets) the leader of `group`; true if that changed anything.
    pub fn set(&self, group: u64, leader: Option<NodeId>) -> bool {
        let changed = match leader {
            Some(leader) => self.table.insert(group, leader) != Some(leader),
            None => self.table.remove(&group).is_some(),
        };
        if changed {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// Changes so far.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_spread_their_preferred_leaders_evenly_over_an_island_of_three() {
        let island = Island {
            id: 7,
            members: vec![4, 5, 6],
            ..Island::default()
        };
        let mut led = [0usize; 3];
        for group in island_groups(7) {
            assert_eq!(group >> 32, 7);
            let leader = preferred_leader(&island, group).expect("a member");
            led[(leader - 4) as usize] += 1;
        }
        assert_eq!(led, [2, 2, 2]);
        assert_eq!(slot_group(7, 30), slot_group(7, 0));
    }

    #[test]
    fn a_group_is_served_by_its_preferred_member_or_the_next_active_one() {
        use crate::cluster::map::NodeRecord;
        let island = Island {
            id: 0,
            members: vec![4, 5, 6],
            ..Island::default()
        };
        let mut map = ClusterMap::default();
        for (node, state) in [
            (4, NodeState::Active),
            (5, NodeState::Draining),
            (6, NodeState::Down),
        ] {
            map.nodes.insert(
                node,
                NodeRecord {
                    mesh_addr: String::new(),
                    client_addr: String::new(),
                    admin_addr: String::new(),
                    media_addr: String::new(),
                    state,
                },
            );
        }
        let group = |index| slot_group(0, index);
        assert_eq!(serving_leader(&map, &island, group(0)), Some(4));
        // 5 drains: its group goes to the next member; 6 is down and keeps its own.
        assert_eq!(serving_leader(&map, &island, group(1)), Some(6));
        assert_eq!(serving_leader(&map, &island, group(2)), Some(6));
        for record in map.nodes.values_mut() {
            record.state = NodeState::Draining;
        }
        assert_eq!(serving_leader(&map, &island, group(1)), Some(5));
    }

    #[test]
    fn the_table_counts_its_changes() {
        let leaders = Leaders::new(true);
        assert!(leaders.set(1, Some(2)));
        assert!(!leaders.set(1, Some(2)));
        assert!(leaders.set(1, Some(3)));
        assert!(leaders.set(1, None));
        assert!(!leaders.set(1, None));
        assert_eq!(leaders.version(), 3);
        assert_eq!(leaders.get(1), None);
    }
}
