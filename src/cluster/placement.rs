//! Placement of slots on islands: a pure function from the previous placement and the member
//! nodes to the next one, moving as few slots as balance allows.
//!
//! An island is a disjoint group of exactly `replication` nodes that together hold the replicas
//! of the slots placed on it; with fewer nodes than `replication`, one island of all of them
//! (unless departures left several short islands: they stay apart), so every slot always has a
//! home. Nodes left over (`nodes.len() % replication`) are spares until
//! more join.
//!
//! Rules, in order:
//! 1. A previous island keeps its id and those of its members that are still member nodes, in
//!    their order, as long as one of them is (a departed member, taken out of the cluster by an
//!    operator, leaves a place).
//! 2. An island short of `replication` members is completed with the lowest spare nodes: first
//!    into the places its departed members left (so the slot groups that preferred a departed
//!    member prefer its replacement), then after the others. With too few spares it stays short
//!    until more join: its slot groups keep serving with the members they have, and no slot
//!    moves (slots hold data; moving them is not a placement's business). An island formed
//!    while the cluster had fewer nodes grows the same way, so a cluster brought up one node at
//!    a time never moves a slot until it has a second island.
//! 3. The other nodes, in ascending order, form new islands of `replication` nodes with fresh
//!    ids (above every id the previous placement used, islands and slots alike, so a vanished
//!    island's id is not given to a new island while slots still name it).
//! 4. Every island's share is `slot_count / islands` or one more (the islands that already hold
//!    the most get the larger shares). Slots of vanished islands, then the highest-numbered
//!    excess slots of islands above their share, move to the islands below theirs, lowest slot
//!    to lowest island id first.
//!
//! An island's `founders` are the members its slot groups were founded with: set once, the
//! first time it has `replication` members, and kept for as long as the island exists (only
//! they may initialize a group; members added later join the running groups).
//!
//! The result depends only on the arguments (the order of `nodes` and duplicates in it do not
//! matter), so every node computing it from the same cluster map gets the same answer.

use std::collections::BTreeSet;

/// A node's ordinal in the cluster (`cluster.node`).
pub type NodeId = u64;

/// A group of nodes that hold the replicas of the slots placed on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Island {
    /// Stable id: an island keeps it for as long as one of its members stays.
    pub id: u32,
    /// Its nodes: `replication` of them, fewer while there are not enough nodes to complete
    /// it. In order: the island member at a slot group's number names its preferred leader.
    pub members: Vec<NodeId>,
    /// The members its slot groups were founded with (empty until it first had `replication`
    /// members); only they ever initialize a group.
    pub founders: Vec<NodeId>,
}

impl Island {
    /// Whether the island's slot groups exist (or are to be founded now): it has had
    /// `replication` members, or has them now.
    pub fn founded(&self, replication: usize) -> bool {
        !self.founders.is_empty() || self.members.len() >= replication
    }

    /// The voters a slot group of the island is founded with, if `node` may found it: the
    /// founders, or the members while it has none yet.
    pub fn founding_voters(&self, node: NodeId) -> Option<&[NodeId]> {
        let voters = if self.founders.is_empty() {
            &self.members
        } else {
            &self.founders
        };
        voters.contains(&node).then_some(voters.as_slice())
    }
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

    // Previous islands with their members that are still member nodes (`None` where one
    // departed), if any is and none is on an island kept before them (a well-formed previous
    // placement passes the second check).
    let mut previous_islands: Vec<&Island> = previous.islands.iter().collect();
    previous_islands.sort_by_key(|island| island.id);
    let mut free = nodes.clone();
    let mut survivors: Vec<(&Island, Vec<Option<NodeId>>)> = Vec::new();
    for island in previous_islands {
        let mut seen = BTreeSet::new();
        let places: Vec<Option<NodeId>> = island
            .members
            .iter()
            .map(|node| (free.contains(node) && seen.insert(*node)).then_some(*node))
            .collect();
        if seen.is_empty() || seen.len() > replication {
            continue;
        }
        free.retain(|node| !seen.contains(node));
        survivors.push((island, places));
    }

    if nodes.len() < replication && survivors.len() <= 1 {
        // One island of every node: it keeps the id (and founders) of the survivor, whose
        // nodes lead its list. (Several survivors, left short by departures, stay apart: a
        // merge would move slots away from their data.)
        let biggest = survivors.iter().max_by_key(|(island, places)| {
            (
                places.iter().flatten().count(),
                std::cmp::Reverse(island.id),
            )
        });
        let empty = Island::default();
        let (id, before, mut members): (u32, &Island, Vec<NodeId>) = match biggest {
            Some((island, places)) => (
                island.id,
                island,
                places.iter().flatten().copied().collect(),
            ),
            None => (fresh_id(), &empty, Vec::new()),
        };
        let rest: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|node| !members.contains(node))
            .collect();
        members.extend(rest);
        return vec![with_founders(id, members, before, replication)];
    }

    let mut islands = Vec::new();
    for (island, places) in survivors {
        let mut members = Vec::with_capacity(replication);
        for place in places {
            // A departed member's place goes to the lowest spare, if there is one.
            if let Some(node) = place.or_else(|| free.pop_first()) {
                members.push(node);
            }
        }
        while members.len() < replication {
            let Some(node) = free.pop_first() else {
                break;
            };
            members.push(node);
        }
        members.truncate(replication);
        islands.push(with_founders(island.id, members, island, replication));
    }
    let rest: Vec<NodeId> = free.into_iter().collect();
    for chunk in rest.chunks_exact(replication) {
        islands.push(with_founders(
            fresh_id(),
            chunk.to_vec(),
            &Island::default(),
            replication,
        ));
    }
    islands.sort_by_key(|island| island.id);
    islands
}

/// Island `id` with `members`: it keeps the founders of `before` (what it was); an island
/// that had none gets its members as founders once it has `replication` of them (or had them
/// before: a map from before founders were recorded).
fn with_founders(id: u32, members: Vec<NodeId>, before: &Island, replication: usize) -> Island {
    let founders = if !before.founders.is_empty() {
        before.founders.clone()
    } else if before.members.len() >= replication {
        before.members.clone()
    } else if members.len() >= replication {
        members.clone()
    } else {
        Vec::new()
    };
    Island {
        id,
        members,
        founders,
    }
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
