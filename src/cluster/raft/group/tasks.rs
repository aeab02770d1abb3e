//! The metadata group's background tasks: registering nodes in the map, and the controller
//! ticks that act while this node leads.

use std::sync::Arc;

use openraft::{BasicNode, ChangeMembers, Instant as _, ServerState};
use tokio::time::Instant;

use super::{Attempt, MetaError, RETRY_PAUSE, Shared};
use crate::cluster::controller::{Action, Controller, ControllerConfig, LeaderView};
use crate::cluster::map::{MapCommand, NodeRecord};
use crate::cluster::placement::NodeId;

impl Shared {
    /// Carries out one controller tick if this node leads.
    async fn control_tick(&self, controller: &mut Controller, leader_since: &mut Option<Instant>) {
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            *leader_since = None;
            controller.reset();
            return;
        }
        let now = Instant::now();
        let since = *leader_since.get_or_insert(now);
        let membership = metrics.membership_config.membership();
        let last_ack = metrics
            .heartbeat
            .as_ref()
            .map(|heartbeats| {
                heartbeats
                    .iter()
                    .map(|(id, at)| (*id, at.as_ref().map(|at| at.elapsed())))
                    .collect()
            })
            .unwrap_or_default();
        let map = self.state_machine.map();
        let silent_for = map
            .nodes
            .keys()
            .filter_map(|id| Some((*id, self.transport.silent_for(*id)?)))
            .collect();
        let view = LeaderView {
            me: self.config.node,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_ack,
            silent_for,
            leading_for: now.saturating_duration_since(since),
        };
        let settings = ControllerConfig {
            down_after: self.config.down_after,
            replication: self.config.replication,
            slot_count: self.config.slot_count,
        };
        for action in controller.tick(&view, &map, &settings) {
            let result = match action {
                Action::SetState(node, state) => {
                    tracing::info!(node, ?state, "metadata controller: node state");
                    attempt_result(self.write_local(MapCommand::SetState { node, state }).await)
                }
                Action::Voters(ids) => {
                    tracing::info!(?ids, "metadata controller: voters");
                    self.change(ChangeMembers::ReplaceAllVoters(ids)).await
                }
                Action::Forget(ids) => {
                    tracing::info!(?ids, "metadata controller: removed learners leave");
                    self.change(ChangeMembers::RemoveNodes(ids)).await
                }
                Action::Place(placement) => {
                    attempt_result(self.write_local(MapCommand::SetPlacement(placement)).await)
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "metadata controller action not done");
                // Try again from a fresh view next tick.
                controller.reset();
                return;
            }
        }
    }

    /// Changes the group's membership; a voter it leaves out leaves the group (removed nodes
    /// only: the controller keeps every other voter).
    async fn change(&self, change: ChangeMembers<NodeId, BasicNode>) -> Result<(), String> {
        self.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

fn attempt_result(attempt: Attempt<u64>) -> Result<(), String> {
    match attempt {
        Attempt::Done(_) | Attempt::Failed(MetaError::Refused(_)) => Ok(()),
        Attempt::Failed(error) => Err(error.to_string()),
        Attempt::Retry(reason) => Err(reason),
    }
}

/// Joins each of `nodes` to the group and map until the map lists each with its addresses.
pub(super) async fn register(shared: Arc<Shared>, nodes: Vec<(NodeId, NodeRecord)>) {
    let mut stop = shared.stop.subscribe();
    let mut attempt = 0;
    loop {
        let map = shared.state_machine.map();
        let pending: Vec<&(NodeId, NodeRecord)> = nodes
            .iter()
            .filter(|(id, record)| match map.nodes.get(id) {
                None => true,
                // A seed known only by its mesh address is an introduction: once the node is
                // in the map, its own registration (with every address) is what counts.
                Some(_) if record.client_addr.is_empty() => false,
                Some(known) => {
                    known.mesh_addr != record.mesh_addr || known.client_addr != record.client_addr
                }
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        for (node, record) in pending {
            let outcome = if shared.raft.is_leader() {
                shared.join_local(*node, record.clone()).await
            } else {
                shared.join_remote(*node, record, attempt).await
            };
            match &outcome {
                Attempt::Done(_) => {}
                // Said once in a while: a node that never gets in has wrong seeds or no quorum.
                Attempt::Retry(reason) if attempt % 100 == 99 => {
                    tracing::warn!(node, attempt, %reason, "metadata registration still pending");
                }
                Attempt::Retry(reason) => {
                    tracing::debug!(node, %reason, "metadata registration pending");
                }
                Attempt::Failed(error) => {
                    tracing::warn!(node, %error, "metadata registration failed, retrying");
                }
            }
        }
        attempt += 1;
        let pause = RETRY_PAUSE * 3;
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs the controller every `controller_interval` while the group runs.
pub(super) async fn control(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut ticks = tokio::time::interval(shared.config.controller_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut controller = Controller::default();
    let mut leader_since = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = ticks.tick() => shared.control_tick(&mut controller, &mut leader_since).await,
        }
    }
}
