//! `GET /cluster`: this node's view of the cluster as JSON (the metadata group's leader and term,
//! the map's nodes, islands and slot table, and every mesh link's state, queues and round trip).

use serde_json::{Value, json};

use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::raft::MetaStatus;
use crate::mesh::LinkStatus;

/// Renders the view. Slots are listed as the island id of each slot, in slot order, with the
/// count per island beside the islands.
pub fn render(cluster: &str, status: &MetaStatus, map: &ClusterMap, links: &[LinkStatus]) -> Value {
    let nodes: Vec<Value> = map
        .nodes
        .iter()
        .map(|(id, record)| {
            json!({
                "id": id,
                "state": state_name(record.state),
                "mesh_addr": record.mesh_addr,
                "client_addr": record.client_addr,
                "admin_addr": record.admin_addr,
                "media_addr": record.media_addr,
            })
        })
        .collect();
    let islands: Vec<Value> = map
        .placement
        .islands
        .iter()
        .map(|island| {
            let slots = map
                .placement
                .slots
                .iter()
                .filter(|s| **s == island.id)
                .count();
            json!({
                "id": island.id,
                "members": island.members,
                "founders": island.founders,
                "slots": slots,
            })
        })
        .collect();
    let links: Vec<Value> = links
        .iter()
        .map(|link| {
            json!({
                "peer": link.peer,
                "addr": link.addr,
                "up": link.up,
                "outbound": link.outbound,
                "up_for_ms": link.since.map(|since| since.as_millis() as u64),
                "rtt_us": link.rtt.map(|rtt| rtt.as_micros() as u64),
                "lane_depths": {
                    "consensus": link.lane_depths[0],
                    "call": link.lane_depths[1],
                    "cast": link.lane_depths[2],
                },
                "frames_in": link.counters.frames_in,
                "frames_out": link.counters.frames_out,
                "bytes_in": link.counters.bytes_in,
                "bytes_out": link.counters.bytes_out,
                "dropped": link.counters.dropped,
                "call_timeouts": link.counters.call_timeouts,
                "pending_calls": link.counters.pending_calls,
            })
        })
        .collect();
    json!({
        "cluster": cluster,
        "node": status.node,
        "role": super::member::role_name(status.role),
        "leader": status.leader,
        "term": status.term,
        "last_applied": status.last_applied,
        "voters": status.voters,
        "learners": status.learners,
        "map": {
            "version": map.version,
            "nodes": nodes,
            "islands": islands,
            "slots": map.placement.slots,
        },
        "links": links,
    })
}

/// The name of a node state, as the map shows it.
pub fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Joining => "joining",
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
        NodeState::Removed => "removed",
    }
}
