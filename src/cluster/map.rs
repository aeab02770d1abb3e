//! The cluster map (nodes, their addresses and states, the placement) and the pure `apply` of
//! the commands that change it; the metadata Raft group replicates these commands.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use crate::cluster::placement::{Island, NodeId, Placement};
use crate::proto::mesh as pb;

/// What a node is doing in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// In the map, not yet seen live by the metadata leader.
    Joining,
    /// Live and placeable.
    Active,
    /// Handing its work away before a restart (`tern drain`): still placeable (it comes back),
    /// but no slot group prefers it as leader until it is active again.
    Draining,
    /// Not answering the metadata leader; still placeable: a crash or a restart moves nothing.
    Down,
    /// Taken out of the cluster by an operator (`POST /cluster/nodes/{id}/remove`): not
    /// placeable, never placed again; its state no longer changes.
    Removed,
}

/// One node's addresses and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Where peers reach its mesh listener.
    pub mesh_addr: String,
    /// Where phones connect.
    pub client_addr: String,
    /// Its admin (metrics, status) listener.
    pub admin_addr: String,
    /// Its media (upload, download) listener.
    pub media_addr: String,
    /// Its state.
    pub state: NodeState,
}

/// The replicated cluster map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMap {
    /// Grows by one on every change, so a reader can tell a newer map from an older one.
    pub version: u64,
    /// Every node by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Islands and the slot table.
    pub placement: Placement,
}

/// One change to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapCommand {
    /// Adds a node, or updates a known node's addresses (its state is kept then). A record
    /// without a client address introduces a seed by its mesh address alone: it adds the node
    /// if unknown and changes nothing otherwise.
    AddNode {
        /// The node.
        node: NodeId,
        /// Its addresses; the state is used only for a new node.
        record: NodeRecord,
    },
    /// Changes a known node's state.
    SetState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// Replaces the placement.
    SetPlacement(Placement),
}

/// Why a command was refused (the map is left as it was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The command names a node that is not in the map.
    #[error("node {0} is not in the cluster map")]
    UnknownNode(NodeId),
    /// A placement's slot names an island it does not define.
    #[error("slot {slot} names island {island}, which the placement does not define")]
    UnknownIsland {
        /// The slot.
        slot: usize,
        /// The island id it names.
        island: u32,
    },
}

/// Bytes that are not a valid encoded map, command or snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf of the expected message.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// The message that was expected.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// A required field is absent or has an unknown value.
    #[error("{what}: missing or unknown {field}")]
    Missing {
        /// The message.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl ClusterMap {
    /// Applies `command`: `Ok(true)` when the map changed (and `version` grew by one),
    /// `Ok(false)` when it already said so. Deterministic, so every replica ends up equal.
    pub fn apply(&mut self, command: &MapCommand) -> Result<bool, MapError> {
        let changed = match command {
            MapCommand::AddNode { node, record } => match self.nodes.get_mut(node) {
                // An introduction (a seed known only by its mesh address) never blanks the
                // addresses a node registered itself.
                Some(_) if record.client_addr.is_empty() => false,
                Some(known) => {
                    let updated = NodeRecord {
                        state: known.state,
                        ..record.clone()
                    };
                    if *known == updated {
                        false
                    } else {
                        *known = updated;
                        true
                    }
                }
                None => {
                    self.nodes.insert(*node, record.clone());
                    true
                }
            },
            MapCommand::SetState { node, state } => {
                let known = self
                    .nodes
                    .get_mut(node)
                    .ok_or(MapError::UnknownNode(*node))?;
                if known.state == *state || known.state == NodeState::Removed {
                    // A removed node stays removed.
                    false
                } else {
                    known.state = *state;
                    true
                }
            }
            MapCommand::SetPlacement(placement) => {
                self.check_placement(placement)?;
                if self.placement == *placement {
                    false
                } else {
                    self.placement = placement.clone();
                    true
                }
            }
        };
        if changed {
            self.version += 1;
        }
        Ok(changed)
    }

    /// The nodes a placement may use, by id: the active ones, those down and those draining.
    /// Down and draining are states of a crash or a restart: the node's islands keep a majority
    /// without it and it catches up when back, so it keeps its place and no slot moves. Joining
    /// nodes are not live yet; removed ones are gone for good (their places in their islands go
    /// to spare nodes).
    pub fn placeable(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, record)| {
                matches!(
                    record.state,
                    NodeState::Active | NodeState::Down | NodeState::Draining
                )
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn check_placement(&self, placement: &Placement) -> Result<(), MapError> {
        for island in &placement.islands {
            if let Some(unknown) = island
                .members
                .iter()
                .find(|id| !self.nodes.contains_key(id))
            {
                return Err(MapError::UnknownNode(*unknown));
            }
        }
        for (slot, island) in placement.slots.iter().enumerate() {
            if !placement.islands.iter().any(|known| known.id == *island) {
                return Err(MapError::UnknownIsland {
                    slot,
                    island: *island,
                });
            }
        }
        Ok(())
    }

    /// Encodes the map as a `MapSnapshot`.
    pub fn encode_snapshot(&self) -> Bytes {
        let snapshot = pb::MapSnapshot {
            map: Some(self.to_proto()),
        };
        Bytes::from(snapshot.encode_to_vec())
    }

    /// Decodes a `MapSnapshot`.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterMap, DecodeError> {
        let snapshot = pb::MapSnapshot::decode(bytes).map_err(|source| DecodeError::Malformed {
            what: "MapSnapshot",
            source,
        })?;
        let map = snapshot.map.ok_or(DecodeError::Missing {
            what: "MapSnapshot",
            field: "map",
        })?;
        ClusterMap::from_proto(map)
    }

    /// The map as its proto message.
    pub fn to_proto(&self) -> pb::ClusterMap {
        pb::ClusterMap {
            version: self.version,
            nodes: self
                .nodes
                .iter()
                .map(|(id, record)| pb::NodeEntry {
                    id: *id,
                    record: Some(record.to_proto()),
                })
                .collect(),
            placement: Some(placement_to_proto(&self.placement)),
        }
    }

    /// The map from its proto message.
    pub fn from_proto(map: pb::ClusterMap) -> Result<ClusterMap, DecodeError> {
        let mut nodes = BTreeMap::new();
        for entry in map.nodes {
            let record = entry.record.ok_or(DecodeError::Missing {
                what: "NodeEntry",
                field: "record",
            })?;
            nodes.insert(entry.id, NodeRecord::from_proto(record)?);
        }
        Ok(ClusterMap {
            version: map.version,
            nodes,
            placement: map.placement.map(placement_from_proto).unwrap_or_default(),
        })
    }
}

impl NodeState {
    fn to_proto(self) -> pb::NodeState {
        match self {
            NodeState::Joining => pb::NodeState::Joining,
            NodeState::Active => pb::NodeState::Active,
            NodeState::Draining => pb::NodeState::Draining,
            NodeState::Down => pb::NodeState::Down,
            NodeState::Removed => pb::NodeState::Removed,
        }
    }

    fn from_proto(value: i32) -> Result<NodeState, DecodeError> {
        match pb::NodeState::try_from(value) {
            Ok(pb::NodeState::Joining) => Ok(NodeState::Joining),
            Ok(pb::NodeState::Active) => Ok(NodeState::Active),
            Ok(pb::NodeState::Draining) => Ok(NodeState::Draining),
            Ok(pb::NodeState::Down) => Ok(NodeState::Down),
            Ok(pb::NodeState::Removed) => Ok(NodeState::Removed),
            Ok(pb::NodeState::Unspecified) | Err(_) => Err(DecodeError::Missing {
                what: "NodeRecord",
                field: "state",
            }),
        }
    }
}

impl NodeRecord {
    /// The record as its proto message.
    pub fn to_proto(&self) -> pb::NodeRecord {
        pb::NodeRecord {
            mesh_addr: self.mesh_addr.clone(),
            client_addr: self.client_addr.clone(),
            admin_addr: self.admin_addr.clone(),
            media_addr: self.media_addr.clone(),
            state: self.state.to_proto() as i32,
        }
    }

    /// The record from its proto message.
    pub fn from_proto(record: pb::NodeRecord) -> Result<NodeRecord, DecodeError> {
        Ok(NodeRecord {
            state: NodeState::from_proto(record.state)?,
            mesh_addr: record.mesh_addr,
            client_addr: record.client_addr,
            admin_addr: record.admin_addr,
            media_addr: record.media_addr,
        })
    }
}

impl MapCommand {
    /// Encodes the command as a `MapCommand` message.
    pub fn to_proto(&self) -> pb::MapCommand {
        use pb::map_command::Command;
        let command = match self {
            MapCommand::AddNode { node, record } => Command::AddNode(pb::AddNode {
                node: *node,
                record: Some(record.to_proto()),
            }),
            MapCommand::SetState { node, state } => Command::SetState(pb::SetState {
                node: *node,
                state: state.to_proto() as i32,
            }),
            MapCommand::SetPlacement(placement) => {
                Command::SetPlacement(placement_to_proto(placement))
            }
        };
        pb::MapCommand {
            command: Some(command),
        }
    }

    /// Decodes a `MapCommand` message.
    pub fn from_proto(command: pb::MapCommand) -> Result<MapCommand, DecodeError> {
        use pb::map_command::Command;
        let missing = |field| DecodeError::Missing {
            what: "MapCommand",
            field,
        };
        match command.command.ok_or(missing("command"))? {
            Command::AddNode(add) => Ok(MapCommand::AddNode {
                node: add.node,
                record: NodeRecord::from_proto(add.record.ok_or(missing("record"))?)?,
            }),
            Command::SetState(set) => Ok(MapCommand::SetState {
                node: set.node,
                state: NodeState::from_proto(set.state)?,
            }),
            Command::SetPlacement(placement) => {
                Ok(MapCommand::SetPlacement(placement_from_proto(placement)))
            }
        }
    }
}

impl std::fmt::Display for MapCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapCommand::AddNode { node, record } => {
                write!(f, "add node {node} (mesh {})", record.mesh_addr)
            }
            MapCommand::SetState { node, state } => write!(f, "set node {node} {state:?}"),
            MapCommand::SetPlacement(placement) => write!(
                f,
                "set placement ({} islands, {} slots)",
                placement.islands.len(),
                placement.slots.len()
            ),
        }
    }
}

fn placement_to_proto(placement: &Placement) -> pb::Placement {
    pb::Placement {
        islands: placement
            .islands
            .iter()
            .map(|island| pb::Island {
                id: island.id,
                members: island.members.clone(),
                founders: island.founders.clone(),
            })
            .collect(),
        slots: placement.slots.clone(),
    }
}

fn placement_from_proto(placement: pb::Placement) -> Placement {
    Placement {
        islands: placement
            .islands
            .into_iter()
            .map(|island| Island {
                id: island.id,
                members: island.members,
                founders: island.founders,
            })
            .collect(),
        slots: placement.slots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16, state: NodeState) -> NodeRecord {
        NodeRecord {
            mesh_addr: format!("127.0.0.1:{port}"),
            client_addr: format!("127.0.0.1:{}", port + 1),
            admin_addr: format!("127.0.0.1:{}", port + 2),
            media_addr: format!("127.0.0.1:{}", port + 3),
            state,
        }
    }

    #[test]
    fn a_seed_introduction_adds_an_unknown_node_and_never_blanks_a_known_one() {
        let mut map = ClusterMap::default();
        let introduction = |port: u16| MapCommand::AddNode {
            node: 2,
            record: NodeRecord {
                mesh_addr: format!("127.0.0.1:{port}"),
                client_addr: String::new(),
                admin_addr: String::new(),
                media_addr: String::new(),
                state: NodeState::Joining,
            },
        };
        assert_eq!(map.apply(&introduction(7000)), Ok(true));
        let registered = MapCommand::AddNode {
            node: 2,
            record: record(7000, NodeState::Joining),
        };
        assert_eq!(map.apply(&registered), Ok(true));
        assert_eq!(map.apply(&introduction(7000)), Ok(false));
        assert_eq!(map.apply(&introduction(7100)), Ok(false));
        assert_eq!(map.nodes[&2], record(7000, NodeState::Joining));
        assert_eq!(map.version, 2);
    }

    #[test]
    fn every_change_bumps_the_version_and_a_repeat_does_not() {
        let mut map = ClusterMap::default();
        let add = MapCommand::AddNode {
            node: 1,
            record: record(7000, NodeState::Joining),
        };
        assert_eq!(map.apply(&add), Ok(true));
        assert_eq!(map.version, 1);
        assert_eq!(map.apply(&add), Ok(false));
        assert_eq!(map.version, 1);
        let active = MapCommand::SetState {
            node: 1,
            state: NodeState::Active,
        };
        assert_eq!(map.apply(&active), Ok(true));
        assert_eq!(map.version, 2);
        // Re-adding a known node keeps its state.
        assert_eq!(map.apply(&add), Ok(false));
        assert_eq!(map.nodes[&1].state, NodeState::Active);
        assert_eq!(map.placeable(), vec![1]);
    }

    #[test]
    fn refused_commands_leave_the_map_alone() {
        let mut map = ClusterMap::default();
        let before = map.clone();
        let set = MapCommand::SetState {
            node: 9,
            state: NodeState::Down,
        };
        assert_eq!(map.apply(&set), Err(MapError::UnknownNode(9)));
        let placement = Placement {
            islands: vec![Island {
                id: 0,
                members: vec![9],
                ..Island::default()
            }],
            slots: vec![0],
        };
        assert_eq!(
            map.apply(&MapCommand::SetPlacement(placement)),
            Err(MapError::UnknownNode(9))
        );
        assert_eq!(map, before);
    }

    #[test]
    fn map_and_commands_round_trip_through_proto() {
        let mut map = ClusterMap::default();
        for node in 1..=3 {
            let add = MapCommand::AddNode {
                node,
                record: record(7000 + node as u16 * 10, NodeState::Active),
            };
            assert_eq!(
                MapCommand::from_proto(add.to_proto()).ok(),
                Some(add.clone())
            );
            map.apply(&add).ok();
        }
        let placement = crate::cluster::placement::place(&map.placement, &[1, 2, 3], 3, 8);
        let set = MapCommand::SetPlacement(placement);
        assert_eq!(
            MapCommand::from_proto(set.to_proto()).ok(),
            Some(set.clone())
        );
        assert_eq!(map.apply(&set), Ok(true));
        let decoded = ClusterMap::decode_snapshot(&map.encode_snapshot());
        assert_eq!(decoded.ok(), Some(map));
    }
}
