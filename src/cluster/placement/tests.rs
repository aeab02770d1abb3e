//! Placement properties: every slot placed, balance within one, islands disjoint and of the
//! replication factor, few moves on a join or a departure, same input same output.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Checks everything a placement must satisfy for `nodes`, `replication` and `slot_count`.
fn assert_valid(placement: &Placement, nodes: &[NodeId], replication: usize, slot_count: u32) {
    let nodes: BTreeSet<NodeId> = nodes.iter().copied().collect();
    let ids: Vec<u32> = placement.islands.iter().map(|island| island.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "island ids ascending and unique");
    let mut seen = BTreeSet::new();
    for island in &placement.islands {
        for node in &island.members {
            assert!(nodes.contains(node), "{node} is not a member node");
            assert!(seen.insert(*node), "{node} is on two islands");
        }
    }
    if nodes.len() < replication && placement.islands.len() == 1 {
        assert_eq!(seen, nodes, "one island of all nodes");
    } else {
        let spares = nodes.len() - seen.len();
        assert!(spares < replication, "{spares} spares make no island");
        for island in &placement.islands {
            assert!(island.members.len() <= replication, "{island:?}");
            assert!(
                island.members.len() == replication || spares == 0,
                "{island:?} short while {spares} nodes are spare"
            );
        }
    }
    for island in &placement.islands {
        assert!(
            island.founders.is_empty() || island.founders.len() == replication,
            "{island:?}: founders are a whole island"
        );
        assert!(
            island.members.len() < replication || !island.founders.is_empty(),
            "{island:?}: a whole island has founders"
        );
    }
    assert_eq!(placement.slots.len(), slot_count as usize);
    let counts = holdings(placement);
    assert_eq!(
        counts.len(),
        placement.islands.len(),
        "every island holds slots"
    );
    let base = slot_count as usize / placement.islands.len();
    for (id, count) in &counts {
        assert!(ids.contains(id), "slot on missing island {id}");
        assert!(
            (base..=base + 1).contains(count),
            "island {id} holds {count}, share {base}"
        );
    }
}

/// Slots held per island id.
fn holdings(placement: &Placement) -> BTreeMap<u32, usize> {
    let mut counts: BTreeMap<u32, usize> = placement
        .islands
        .iter()
        .map(|island| (island.id, 0))
        .collect();
    for id in &placement.slots {
        *counts.entry(*id).or_default() += 1;
    }
    counts
}

fn moved(before: &Placement, after: &Placement) -> Vec<u32> {
    (0..after.slots.len() as u32)
        .filter(|&slot| before.slots.get(slot as usize) != after.slots.get(slot as usize))
        .collect()
}

/// A placement reached through a history of joins and departures.
fn grown(history: &[Vec<NodeId>], replication: usize, slot_count: u32) -> Placement {
    history
        .iter()
        .fold(Placement::default(), |previous, nodes| {
            place(&previous, nodes, replication, slot_count)
        })
}

fn node_set() -> impl Strategy<Value = Vec<NodeId>> {
    proptest::collection::btree_set(1..64u64, 1..24).prop_map(|set| set.into_iter().collect())
}

fn scenario() -> impl Strategy<Value = (usize, u32, Vec<Vec<NodeId>>)> {
    (
        prop_oneof![Just(1usize), Just(3usize)],
        16..700u32,
        proptest::collection::vec(node_set(), 1..5),
    )
}

proptest! {
    #[test]
    fn every_placement_is_valid((replication, slot_count, history) in scenario()) {
        let mut previous = Placement::default();
        for nodes in &history {
            let next = place(&previous, nodes, replication, slot_count);
            assert_valid(&next, nodes, replication, slot_count);
            previous = next;
        }
    }

    #[test]
    fn same_input_same_output(
        (replication, slot_count, history) in scenario(),
        nodes in node_set(),
        rotation in 0..24usize,
    ) {
        let previous = grown(&history, replication, slot_count);
        let first = place(&previous, &nodes, replication, slot_count);
        // Order and duplicates in the node list do not matter.
        let mut shuffled = nodes.clone();
        shuffled.rotate_left(rotation % nodes.len());
        shuffled.reverse();
        shuffled.extend(nodes.iter().take(2));
        prop_assert_eq!(&first, &place(&previous, &shuffled, replication, slot_count));
        // Placing again with nothing changed moves nothing.
        prop_assert_eq!(&first, &place(&first, &nodes, replication, slot_count));
    }

    #[test]
    fn a_join_moves_at_most_one_share(
        (replication, slot_count, history) in scenario(),
        newcomer in 64..128u64,
    ) {
        let previous = grown(&history, replication, slot_count);
        let mut nodes = history.last().cloned().unwrap_or_default();
        nodes.push(newcomer);
        let next = place(&previous, &nodes, replication, slot_count);
        assert_valid(&next, &nodes, replication, slot_count);
        let moved = moved(&previous, &next).len();
        let bound = slot_count as usize / next.islands.len() + 1;
        prop_assert!(moved <= bound, "{} moved, bound {}", moved, bound);
        // Islands of the previous placement are all still there: whole ones as they were,
        // short ones with their members in their places, maybe completed.
        for island in &previous.islands {
            if island.members.len() == replication {
                prop_assert!(next.islands.contains(island), "{:?} lost", island);
            } else {
                let now = next.islands.iter().find(|now| now.id == island.id);
                prop_assert!(
                    now.is_some_and(|now| now.members.starts_with(&island.members)),
                    "{:?} became {:?}", island, now
                );
            }
        }
    }

    #[test]
    fn a_departure_moves_only_its_islands_slots_and_what_new_islands_take(
        (replication, slot_count, history) in scenario(),
        pick in 0..64usize,
    ) {
        let previous = grown(&history, replication, slot_count);
        let nodes = history.last().cloned().unwrap_or_default();
        prop_assume!(nodes.len() >= 2);
        let gone = nodes[pick % nodes.len()];
        let remaining: Vec<NodeId> = nodes.iter().copied().filter(|node| *node != gone).collect();
        let next = place(&previous, &remaining, replication, slot_count);
        assert_valid(&next, &remaining, replication, slot_count);
        let vanished: BTreeSet<u32> = previous
            .islands
            .iter()
            .filter(|island| !next.islands.contains(island))
            .map(|island| island.id)
            .collect();
        let new: BTreeSet<u32> = next
            .islands
            .iter()
            .filter(|island| !previous.islands.contains(island))
            .map(|island| island.id)
            .collect();
        for slot in moved(&previous, &next) {
            let from = previous.slots[slot as usize];
            let to = next.slots[slot as usize];
            prop_assert!(
                vanished.contains(&from) || new.contains(&to),
                "slot {} moved from surviving island {} to surviving island {}", slot, from, to
            );
        }
        // Only the departed node's island can vanish.
        for id in &vanished {
            let island = previous.islands.iter().find(|island| island.id == *id);
            prop_assert!(island.is_some_and(|island| island.members.contains(&gone)));
        }
    }
}

#[test]
fn no_nodes_no_placement() {
    assert_eq!(
        place(&Placement::default(), &[], 3, 512),
        Placement::default()
    );
}

#[test]
fn a_cluster_brought_up_one_node_at_a_time_moves_no_slot_until_its_second_island() {
    let one = place(&Placement::default(), &[1], 3, 512);
    assert_eq!(
        one.islands,
        vec![Island {
            id: 0,
            members: vec![1],
            founders: vec![],
        }]
    );
    assert!(one.slots.iter().all(|id| *id == 0));
    let two = place(&one, &[1, 2], 3, 512);
    let three = place(&two, &[1, 2, 3], 3, 512);
    assert_eq!(
        three.islands,
        vec![Island {
            id: 0,
            members: vec![1, 2, 3],
            founders: vec![1, 2, 3],
        }]
    );
    assert_eq!(three.slots, one.slots);
    // Two spares wait; the sixth node makes a second island, which takes half the slots.
    let five = place(&three, &[1, 2, 3, 4, 5], 3, 512);
    assert_eq!(five, three);
    let six = place(&five, &[1, 2, 3, 4, 5, 6], 3, 512);
    assert_eq!(
        six.islands[1],
        Island {
            id: 1,
            members: vec![4, 5, 6],
            founders: vec![4, 5, 6],
        }
    );
    assert_eq!(moved(&five, &six).len(), 256);
    assert_valid(&six, &[1, 2, 3, 4, 5, 6], 3, 512);
}

#[test]
fn a_departed_member_leaves_its_island_short_and_no_slot_moves() {
    let nodes: Vec<NodeId> = (1..=9).collect();
    let before = place(&Placement::default(), &nodes, 3, 512);
    assert_eq!(before.islands.len(), 3);
    let after = place(&before, &[1, 2, 3, 4, 5, 6, 7, 9], 3, 512);
    assert_valid(&after, &[1, 2, 3, 4, 5, 6, 7, 9], 3, 512);
    assert_eq!(
        after.islands[2],
        Island {
            id: 2,
            members: vec![7, 9],
            founders: vec![7, 8, 9],
        }
    );
    assert!(moved(&before, &after).is_empty());
}

#[test]
fn short_islands_left_by_departures_are_not_merged() {
    let history = [vec![1, 2, 11, 12, 13, 58], vec![1, 2, 58], vec![2, 58]];
    let before = grown(&history[..2], 3, 16);
    let after = place(&before, &history[2], 3, 16);
    assert_valid(&after, &[2, 58], 3, 16);
    assert_eq!(after.islands.len(), 2, "{after:?}");
    assert!(moved(&before, &after).is_empty());
}

#[test]
fn a_spare_takes_a_departed_members_place() {
    let nodes: Vec<NodeId> = (1..=10).collect();
    let before = place(&Placement::default(), &nodes, 3, 512);
    assert_eq!(before.islands.len(), 3, "10 is spare");
    let after = place(&before, &[1, 2, 3, 4, 5, 6, 7, 9, 10], 3, 512);
    assert_valid(&after, &[1, 2, 3, 4, 5, 6, 7, 9, 10], 3, 512);
    assert_eq!(
        after.islands[2],
        Island {
            id: 2,
            members: vec![7, 10, 9],
            founders: vec![7, 8, 9],
        }
    );
    assert!(moved(&before, &after).is_empty());
    // A short island is completed by the next node to join.
    let short = place(&before, &[1, 2, 3, 4, 5, 6, 7, 9], 3, 512);
    let completed = place(&short, &[1, 2, 3, 4, 5, 6, 7, 9, 11], 3, 512);
    assert_eq!(completed.islands[2].members, vec![7, 9, 11]);
    assert_eq!(completed.islands[2].founders, vec![7, 8, 9]);
}

#[test]
fn a_replication_factor_of_one_makes_every_node_an_island() {
    let placement = place(&Placement::default(), &[7, 3, 5], 1, 16);
    let members: Vec<Vec<NodeId>> = placement
        .islands
        .iter()
        .map(|island| island.members.clone())
        .collect();
    assert_eq!(members, vec![vec![3], vec![5], vec![7]]);
    assert_valid(&placement, &[3, 5, 7], 1, 16);
}
