//! Taking a node out of the cluster for good (`POST /cluster/nodes/{id}/remove` on any node's
//! admin port): its state becomes `Removed` in the map, which the metadata leader's controller
//! and placement act on (its places in its islands go to spare nodes, whose slot groups take
//! them in by a membership change; it leaves the metadata group).
//!
//! Only a node that is down can be removed: a live node is drained first (it hands its work
//! away), and a node never removes itself.

use crate::cluster::map::{MapCommand, NodeState};
use crate::cluster::placement::NodeId;
use crate::cluster::raft::{MetaError, MetaGroup};
use crate::cluster::view::state_name;

/// Why a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// The map does not list the node.
    #[error("node {0} is not in the cluster map")]
    Unknown(NodeId),
    /// The node asked is the one asking.
    #[error("node {0} cannot remove itself; ask another node")]
    Itself(NodeId),
    /// The node is not down.
    #[error("node {node} is {state}: only a node that is down can be removed")]
    NotDown {
        /// The node.
        node: NodeId,
        /// Its state.
        state: &'static str,
    },
    /// The metadata group did not take the change.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Marks `node` removed, as `me` asks; returns the map version that holds it. Removing a
/// removed node again changes nothing and succeeds.
pub async fn remove(meta: &MetaGroup, me: NodeId, node: NodeId) -> Result<u64, RemovalError> {
    if node == me {
        return Err(RemovalError::Itself(node));
    }
    let state = meta
        .map()
        .borrow()
        .nodes
        .get(&node)
        .map(|record| record.state)
        .ok_or(RemovalError::Unknown(node))?;
    if !matches!(state, NodeState::Down | NodeState::Removed) {
        return Err(RemovalError::NotDown {
            node,
            state: state_name(state),
        });
    }
    tracing::warn!(node, "removing a node from the cluster");
    let version = meta
        .propose(MapCommand::SetState {
            node,
            state: NodeState::Removed,
        })
        .await?;
    Ok(version)
}
