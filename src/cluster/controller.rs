//! The metadata leader's controller: from what the leader sees of its followers, decides which
//! node states change, which learners become voters, which removed nodes leave the group and
//! whether the placement must change.
//! Pure: the group feeds it a [`LeaderView`] every tick and carries out the [`Action`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::placement::{self, NodeId, Placement};

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// A node whose last acknowledgement to the leader is older than this is marked `Down`.
    pub down_after: Duration,
    /// Nodes per island.
    pub replication: usize,
    /// Slots in the slot table (fixed when the cluster is created).
    pub slot_count: u32,
}

/// What the leader knows of the group at one tick.
#[derive(Clone, Debug, Default)]
pub struct LeaderView {
    /// The leader itself (always live).
    pub me: NodeId,
    /// Current voters.
    pub voters: BTreeSet<NodeId>,
    /// Current learners.
    pub learners: BTreeSet<NodeId>,
    /// Per member: how long ago it last acknowledged the leader (`None`: not yet).
    pub last_ack: BTreeMap<NodeId, Option<Duration>>,
    /// Per node, how long since the mesh last heard from it (where the mesh knows).
    pub silent_for: BTreeMap<NodeId, Duration>,
    /// How long this node has been leader; nobody is marked down before `down_after` of it,
    /// unless the mesh has not heard from them for `down_after` either.
    pub leading_for: Duration,
}

/// One thing the leader should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Propose a node state change.
    SetState(NodeId, NodeState),
    /// Make these the voters (current voters and learners; a voter left out leaves the group).
    Voters(BTreeSet<NodeId>),
    /// Take these learners out of the group.
    Forget(BTreeSet<NodeId>),
    /// Propose this placement.
    Place(Placement),
}

/// The controller's memory between ticks.
#[derive(Debug, Default)]
pub struct Controller {
    /// The placeable set the map's placement was last checked against.
    last_placed: Option<Vec<NodeId>>,
}

/// How many voters the group wants with `members` members.
pub fn voter_target(members: usize) -> usize {
    if members >= 5 { 5 } else { 3 }
}

impl Controller {
    /// Forgets what was placed (on losing leadership, so a new term checks afresh).
    pub fn reset(&mut self) {
        self.last_placed = None;
    }

    /// Decides this tick's actions.
    pub fn tick(
        &mut self,
        view: &LeaderView,
        map: &ClusterMap,
        config: &ControllerConfig,
    ) -> Vec<Action> {
        let live = |id: &NodeId| {
            *id == view.me
                || matches!(view.last_ack.get(id), Some(Some(age)) if *age < config.down_after)
        };
        // A new leader has no acknowledgements yet: it waits `down_after` before marking a node
        // down, unless the mesh has not heard from the node for that long already.
        let long_silent = |id: &NodeId| {
            view.leading_for >= config.down_after
                || view
                    .silent_for
                    .get(id)
                    .is_some_and(|silent| *silent >= config.down_after)
        };
        let mut actions = Vec::new();
        let mut projected = map.clone();
        for (id, record) in &map.nodes {
            let next = match record.state {
                // A draining node that stopped answering is down (it exited after its
                // drain): it comes back active like any node that was down.
                NodeState::Active | NodeState::Draining if !live(id) && long_silent(id) => {
                    Some(NodeState::Down)
                }
                NodeState::Joining | NodeState::Down if live(id) => Some(NodeState::Active),
                _ => None,
            };
            if let Some(state) = next {
                actions.push(Action::SetState(*id, state));
                if let Some(projected) = projected.nodes.get_mut(id) {
                    projected.state = state;
                }
            }
        }

        // Removed nodes leave the group: voters are replaced by live learners, learners are
        // forgotten.
        let removed = |id: &NodeId| {
            projected
                .nodes
                .get(id)
                .is_some_and(|record| record.state == NodeState::Removed)
        };
        let kept: BTreeSet<NodeId> = view
            .voters
            .iter()
            .filter(|id| !removed(id))
            .copied()
            .collect();
        let learners: BTreeSet<NodeId> = view
            .learners
            .iter()
            .filter(|id| !removed(id))
            .copied()
            .collect();
        let wanted = voter_target(kept.len() + learners.len()).saturating_sub(kept.len());
        let promote: BTreeSet<NodeId> = learners
            .iter()
            .filter(|id| {
                live(id)
                    && projected
                        .nodes
                        .get(id)
                        .is_some_and(|r| r.state == NodeState::Active)
            })
            .take(wanted)
            .copied()
            .collect();
        if (!promote.is_empty() || kept.len() < view.voters.len()) && !kept.is_empty() {
            actions.push(Action::Voters(kept.union(&promote).copied().collect()));
        }
        let forget: BTreeSet<NodeId> = view.learners.difference(&learners).copied().collect();
        if !forget.is_empty() {
            actions.push(Action::Forget(forget));
        }

        let placeable = projected.placeable();
        if self.last_placed.as_ref() != Some(&placeable) && !placeable.is_empty() {
            let placement = placement::place(
                &map.placement,
                &placeable,
                config.replication,
                config.slot_count,
            );
            if placement != map.placement {
                actions.push(Action::Place(placement));
            }
            self.last_placed = Some(placeable);
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{MapCommand, NodeRecord};

    fn map_of(states: &[(NodeId, NodeState)]) -> ClusterMap {
        let mut map = ClusterMap::default();
        for (id, state) in states {
            let record = NodeRecord {
                mesh_addr: format!("n{id}"),
                client_addr: String::new(),
                admin_addr: String::new(),
                media_addr: String::new(),
                state: *state,
            };
            map.apply(&MapCommand::AddNode { node: *id, record }).ok();
        }
        map
    }

    fn config() -> ControllerConfig {
        ControllerConfig {
            down_after: Duration::from_secs(3),
            replication: 3,
            slot_count: 16,
        }
    }

    #[test]
    fn stale_nodes_go_down_and_answering_ones_come_back() {
        let map = map_of(&[
            (1, NodeState::Active),
            (2, NodeState::Active),
            (3, NodeState::Down),
        ]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2, 3]),
            learners: BTreeSet::new(),
            last_ack: BTreeMap::from([
                (2, Some(Duration::from_secs(10))),
                (3, Some(Duration::from_millis(50))),
            ]),
            leading_for: Duration::from_secs(60),
            ..LeaderView::default()
        };
        let actions = Controller::default().tick(&view, &map, &config());
        assert!(actions.contains(&Action::SetState(2, NodeState::Down)));
        assert!(actions.contains(&Action::SetState(3, NodeState::Active)));
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::SetState(1, _)))
        );
    }

    #[test]
    fn nobody_goes_down_early_in_a_term() {
        let map = map_of(&[(1, NodeState::Active), (2, NodeState::Active)]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2]),
            last_ack: BTreeMap::from([(2, None)]),
            leading_for: Duration::from_millis(100),
            ..LeaderView::default()
        };
        let actions = Controller::default().tick(&view, &map, &config());
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::SetState(..)))
        );
    }

    #[test]
    fn a_new_leader_marks_down_at_once_a_node_the_mesh_has_not_heard_for_long() {
        let map = map_of(&[
            (1, NodeState::Active),
            (2, NodeState::Active),
            (3, NodeState::Active),
        ]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2, 3]),
            last_ack: BTreeMap::from([(2, None), (3, None)]),
            silent_for: BTreeMap::from([
                (2, Duration::from_millis(200)),
                (3, Duration::from_secs(4)),
            ]),
            leading_for: Duration::from_millis(100),
            ..LeaderView::default()
        };
        let actions = Controller::default().tick(&view, &map, &config());
        assert!(actions.contains(&Action::SetState(3, NodeState::Down)));
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::SetState(2, _)))
        );
    }

    #[test]
    fn live_learners_are_promoted_up_to_the_target() {
        let map = map_of(&[
            (1, NodeState::Active),
            (2, NodeState::Active),
            (4, NodeState::Active),
        ]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2]),
            learners: BTreeSet::from([4]),
            last_ack: BTreeMap::from([(2, Some(Duration::ZERO)), (4, Some(Duration::ZERO))]),
            leading_for: Duration::from_secs(60),
            ..LeaderView::default()
        };
        let actions = Controller::default().tick(&view, &map, &config());
        assert!(actions.contains(&Action::Voters(BTreeSet::from([1, 2, 4]))));
    }

    #[test]
    fn a_removed_voter_is_replaced_by_a_live_learner_and_a_removed_learner_forgotten() {
        let map = map_of(&[
            (1, NodeState::Active),
            (2, NodeState::Removed),
            (3, NodeState::Active),
            (4, NodeState::Active),
            (5, NodeState::Removed),
        ]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2, 3]),
            learners: BTreeSet::from([4, 5]),
            last_ack: BTreeMap::from([(3, Some(Duration::ZERO)), (4, Some(Duration::ZERO))]),
            leading_for: Duration::from_secs(60),
            ..LeaderView::default()
        };
        let actions = Controller::default().tick(&view, &map, &config());
        assert!(actions.contains(&Action::Voters(BTreeSet::from([1, 3, 4]))));
        assert!(actions.contains(&Action::Forget(BTreeSet::from([5]))));
        // A removed node's state never changes, whatever it answers.
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::SetState(2 | 5, _)))
        );
    }

    #[test]
    fn placement_is_proposed_once_per_change_of_the_placeable_set() {
        let mut map = map_of(&[
            (1, NodeState::Active),
            (2, NodeState::Active),
            (3, NodeState::Active),
        ]);
        let view = LeaderView {
            me: 1,
            voters: BTreeSet::from([1, 2, 3]),
            last_ack: BTreeMap::from([(2, Some(Duration::ZERO)), (3, Some(Duration::ZERO))]),
            leading_for: Duration::from_secs(60),
            ..LeaderView::default()
        };
        let mut controller = Controller::default();
        let actions = controller.tick(&view, &map, &config());
        let Some(Action::Place(placement)) = actions.last().cloned() else {
            panic!("expected a placement, got {actions:?}");
        };
        assert_eq!(placement.slots.len(), 16);
        map.apply(&MapCommand::SetPlacement(placement)).ok();
        assert!(controller.tick(&view, &map, &config()).is_empty());
    }
}
