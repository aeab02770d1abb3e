//! Placement of slots on islands: a pure function from the previous placement and the member
//! nodes to the next one, moving as few slots as balance allows.
//!
//! An island is a disjoint group of exactly `replication` nodes that together hold the replicas
//! of the slots placed on it; with fewer nodes than `replication`, one island of all of them, so
//! every slot always has a home. Nodes left over (`nodes.len() % replication`) are spares until
//! more join.
//!
//! Rules, in order:
//! 1. A previous island of `replication` nodes, all still members, stays as it is (same id).
//! 2. A previous island smaller than `replication` (formed while the cluster had fewer nodes)
//!    whose nodes are all still members keeps its id and grows with spare nodes, so a cluster
//!    brought up one node at a time never moves a slot until it has a second island.
//! 3. The other nodes, in ascending order, form new islands of `replication` nodes with fresh
//!    ids (above every id the previous placement used, islands and slots alike, so a vanished
//!    island's id is not given to a new island while slots still name it).
//! 4. Every island's share is `slot_count / islands` or one more (the islands that already hold
//!    the most get the larger shares). Slots of vanished islands, then the highest-numbered
//!    excess slots of islands above their share, move to the islands below theirs, lowest slot
//!    to lowest island id first.
//!
//! The result depends only on the arguments (the order of `nodes` and duplicates in it do not
//! matter), so every node computing it from the same cluster map gets the same answer.

use std::collections::BTreeSet;

/// A node's ordinal in the cluster (`cluster.node`).
pub type NodeId = u64;

/// A group of nodes that hold the replicas of the slots placed on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Island {
    /// Stable id: an island keeps it for as long as all its members stay.
    pub id: u32,
    /// Its nodes: `replication` of them, or all nodes while there are fewer.
    pub members: Vec<NodeId>,
}

/// Islands and the island of every slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The islands, by ascending id.
    pub islands: Vec<Island>,
    /// `slots[slot]` is the id of the island holding `slot`; empty when there are no nodes.
    pub slots: Vec<u32>,
}

impl Placement {
    /// The island holding `slot`, if it is placed.
    pub fn island_of(&self, slot: u32) -> Option<&Island> {
        let id = *self.slots.get(slot as usize)?;
        self.islands.iter().find(|island| island.id == id)
    }
}

/// The placement that follows `previous` once the member nodes are `nodes`: islands of
/// `replication` nodes (0 is taken as 1) and `slot_count` slots spread over them evenly, with
/// the fewest slot moves (see the module doc for the rules). No nodes, no placement: the result
/// is empty.
pub fn place(
    previous: &Placement,
    nodes: &[NodeId],
    replication: usize,
    slot_count: u32,
) -> Placement {
    let nodes: BTreeSet<NodeId> = nodes.iter().copied().collect();
    if nodes.is_empty() {
        return Placement::default();
    }
    let islands = form_islands(previous, &nodes, replication.max(1));
    let slots = assign_slots(previous, &islands, slot_count);
    Placement { islands, slots }
}

/// Rules 1-3: which islands exist, by ascending id.
fn form_islands(previous: &Placement, nodes: &BTreeSet<NodeId>, replication: usize) -> Vec<Island> {
    let mut next_id = previous
        .islands
        .iter()
        .map(|island| island.id)
        .chain(previous.slots.iter().copied())
        .max()
        .map_or(0, |id| id.saturating_add(1));
    let mut fresh_id = move || {
        let id = next_id;
        next_id = next_id.saturating_add(1);
        id
    };

    // Previous islands whose nodes are all still members, are distinct, number at most
    // `replication`, and overlap no island kept before them (a well-formed previous placement
    // passes all but the first check).
    let mut previous_islands: Vec<&Island> = previous.islands.iter().collect();
    previous_islands.sort_by_key(|island| island.id);
    let mut free = nodes.clone();
    let mut survivors: Vec<(u32, BTreeSet<NodeId>)> = Vec::new();
    for island in previous_islands {
        let members: BTreeSet<NodeId> = island.members.iter().copied().collect();
        let intact = !members.is_empty()
            && members.len() == island.members.len()
            && members.len() <= replication
            && members.is_subset(&free);
        if intact {
            free.retain(|node| !members.contains(node));
            survivors.push((island.id, members));
        }
    }

    if nodes.len() < replication {
        // One island of every node: it keeps the id of the biggest survivor (then the lowest
        // id), whose nodes it contains.
        let id = survivors
            .iter()
            .max_by_key(|(id, members)| (members.len(), std::cmp::Reverse(*id)))
            .map_or_else(fresh_id, |(id, _)| *id);
        return vec![Island {
            id,
            members: nodes.iter().copied().collect(),
        }];
    }

    let mut islands = Vec::new();
    for (id, mut members) in survivors {
        let wanted = replication - members.len();
        if wanted <= free.len() {
            // Complete already, or grown with the lowest free nodes.
            let grown: Vec<NodeId> = free.iter().copied().take(wanted).collect();
            free.retain(|node| !grown.contains(node));
            let kept = previous
                .islands
                .iter()
                .find(|island| island.id == id && wanted == 0)
                .map(|island| island.members.clone());
            members.extend(grown);
            islands.push(Island {
                id,
                members: kept.unwrap_or_else(|| members.into_iter().collect()),
            });
        } else {
            // Too few free nodes to complete it: its nodes are free again.
            free.extend(members);
        }
    }
    let rest: Vec<NodeId> = free.into_iter().collect();
    for chunk in rest.chunks_exact(replication) {
        islands.push(Island {
            id: fresh_id(),
            members: chunk.to_vec(),
        });
    }
    islands.sort_by_key(|island| island.id);
    islands
}

/// Rule 4: the island of every slot.
fn assign_slots(previous: &Placement, islands: &[Island], slot_count: u32) -> Vec<u32> {
    // A previous placement of another slot count says nothing about these slots.
    let previous_slots = (previous.slots.len() == slot_count as usize).then_some(&previous.slots);
    // Per island, by ascending id: its id and the slots it keeps, ascending.
    let mut held: Vec<(u32, Vec<u32>)> = islands
        .iter()
        .map(|island| (island.id, Vec::new()))
        .collect();
    let mut unplaced = Vec::new();
    for slot in 0..slot_count {
        let previous_island = previous_slots.and_then(|slots| slots.get(slot as usize));
        match previous_island
            .and_then(|id| held.binary_search_by_key(id, |(held_id, _)| *held_id).ok())
        {
            Some(index) => held[index].1.push(slot),
            None => unplaced.push(slot),
        }
    }
    if held.is_empty() {
        return Vec::new();
    }
    let island_count = held.len();
    let base = slot_count as usize / island_count;
    let extra = slot_count as usize % island_count;
    // The islands holding the most get the larger shares, so the fewest slots move.
    let mut ranking: Vec<usize> = (0..island_count).collect();
    ranking.sort_by_key(|&index| (std::cmp::Reverse(held[index].1.len()), held[index].0));
    let mut shares = vec![base; island_count];
    for &index in ranking.iter().take(extra) {
        shares[index] += 1;
    }
    for ((_, slots), &share) in held.iter_mut().zip(&shares) {
        if slots.len() > share {
            unplaced.extend(slots.drain(share..));
        }
    }
    unplaced.sort_unstable();
    let mut unplaced = unplaced.into_iter();
    let mut result = vec![0; slot_count as usize];
    for ((id, slots), &share) in held.iter_mut().zip(&shares) {
        let missing = share - slots.len();
        slots.extend(unplaced.by_ref().take(missing));
        for &slot in slots.iter() {
            if let Some(entry) = result.get_mut(slot as usize) {
                *entry = *id;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests;
