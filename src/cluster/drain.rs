//! The cluster's part of a drain (`tern drain`, SIGTERM): before its phones are told to go, a
//! node marks itself `Draining` in the map, so no slot group prefers it as leader any more
//! (each group's leader hands leadership to the next island member by transfer once that
//! member holds everything: no election, no timeout), and hands the metadata leadership over if
//! it holds it. It then waits until it leads nothing. Restarted, the node marks itself active
//! again (`rejoin`) and its groups hand their leadership back once it has caught up.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::map::{MapCommand, NodeState};
use crate::cluster::placement::NodeId;
use crate::cluster::raft::MetaGroup;

/// How often a drain looks at what this node still leads.
const POLL: Duration = Duration::from_millis(50);
/// A metadata voter is handed the leadership only if it acknowledged a heartbeat this recently.
const FRESH: Duration = Duration::from_secs(1);

/// What a drain's hand-over did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The map says this node is draining.
    pub marked: bool,
    /// Slot groups this node still led when the hand-over ended (0: all handed over).
    pub still_led: usize,
    /// This node still led the metadata group when the hand-over ended.
    pub still_meta_leader: bool,
    /// Who took the metadata leadership from this node, if it held it.
    pub meta_to: Option<NodeId>,
    /// How long it took.
    pub took: Duration,
}

/// Marks `me` draining, then hands its leaderships over until it leads nothing (`led` counts
/// the slot groups it leads) or `deadline` passes.
pub async fn hand_over(
    meta: &MetaGroup,
    me: NodeId,
    led: impl Fn() -> usize,
    deadline: Duration,
) -> Handover {
    let start = Instant::now();
    let until = start + deadline;
    let mut marked = false;
    let mut meta_to = None;
    loop {
        // A proposal waits for a majority: a node whose peers are gone must still stop.
        let left = until.saturating_duration_since(Instant::now());
        if !marked {
            marked = tokio::time::timeout(left, mark(meta, me, NodeState::Draining))
                .await
                .unwrap_or(false);
        }
        let left = until.saturating_duration_since(Instant::now());
        if let Ok(Some(to)) = tokio::time::timeout(left, meta.hand_over(FRESH)).await {
            meta_to = Some(to);
        }
        let still_led = led();
        let still_meta_leader = meta.status().leader == Some(me);
        if (marked && still_led == 0 && !still_meta_leader) || Instant::now() >= until {
            return Handover {
                marked,
                still_led,
                still_meta_leader,
                meta_to,
                took: start.elapsed(),
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sets this node's state in the map to `state` unless it already is; true once the map
/// says so.
async fn mark(meta: &MetaGroup, me: NodeId, state: NodeState) -> bool {
    if state_of(meta, me) == Some(state) {
        return true;
    }
    match meta.propose(MapCommand::SetState { node: me, state }).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, ?state, "node state not set yet");
            false
        }
    }
}

/// `me`'s state in the map, if it is there.
fn state_of(meta: &MetaGroup, me: NodeId) -> Option<NodeState> {
    meta.map()
        .borrow()
        .nodes
        .get(&me)
        .map(|record| record.state)
}

/// After a restart: a node the map still shows draining (its previous run drained) marks itself
/// active again, retrying until the map says so or `stop` ends.
pub async fn rejoin(meta: &MetaGroup, me: NodeId, stop: tokio_util::sync::CancellationToken) {
    while !stop.is_cancelled() {
        match state_of(meta, me) {
            Some(NodeState::Draining) if mark(meta, me, NodeState::Active).await => {
                tracing::info!("back from a drain: active again");
                return;
            }
            Some(NodeState::Draining) | None => {}
            Some(_) => return,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
