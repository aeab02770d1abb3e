//! The cluster map's metrics, set at each scrape from the metadata group's status and the map
//! (the mesh's own metrics are in `src/mesh/telemetry.rs`). Absent on a node without `[cluster]`.

use metrics::Unit;

use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::raft::{MetaStatus, Role};
use crate::cluster::view::state_name;

/// The metadata group's current term, as this node knows it.
pub const TERM: &str = "tern_cluster_term";
/// The node id of the metadata leader this node knows of (0: none).
pub const LEADER: &str = "tern_cluster_leader";
/// 1 while this node leads the metadata group.
pub const IS_LEADER: &str = "tern_cluster_is_leader";
/// The version of the cluster map this node has applied.
pub const MAP_VERSION: &str = "tern_cluster_map_version";
/// Nodes in the map, by `state` (joining, active, draining, down, removed).
pub const NODES: &str = "tern_cluster_nodes";

/// Every node state, for the `state` label.
const STATES: [NodeState; 5] = [
    NodeState::Joining,
    NodeState::Active,
    NodeState::Draining,
    NodeState::Down,
    NodeState::Removed,
];

/// Registers descriptions and units of the cluster's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(TERM, Unit::Count, "Metadata Raft group term.");
    metrics::describe_gauge!(
        LEADER,
        Unit::Count,
        "Node id of the metadata leader this node knows of (0: none)."
    );
    metrics::describe_gauge!(
        IS_LEADER,
        Unit::Count,
        "This node leads the metadata group (1) or not (0)."
    );
    metrics::describe_gauge!(
        MAP_VERSION,
        Unit::Count,
        "Version of the cluster map this node has applied."
    );
    metrics::describe_gauge!(NODES, Unit::Count, "Nodes in the cluster map, by state.");
}

/// Sets the gauges from `status` and `map` (called at each scrape).
pub fn report(status: &MetaStatus, map: &ClusterMap) {
    metrics::gauge!(TERM).set(status.term as f64);
    metrics::gauge!(LEADER).set(status.leader.unwrap_or(0) as f64);
    metrics::gauge!(IS_LEADER).set(f64::from(u8::from(status.role == Role::Leader)));
    metrics::gauge!(MAP_VERSION).set(map.version as f64);
    for state in STATES {
        let count = map
            .nodes
            .values()
            .filter(|node| node.state == state)
            .count();
        metrics::gauge!(NODES, "state" => state_name(state)).set(count as f64);
    }
}
