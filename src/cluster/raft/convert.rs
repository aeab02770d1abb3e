//! Conversions between openraft's types and tern's own proto messages (`tern.mesh.v1`), so the
//! wire and the log file do not depend on the library's serialization.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, StoredMembershipOf, VoteOf};
use openraft::{BasicNode, Entry, EntryPayload, Membership, RaftTypeConfig};

use super::MetaTypes;
use crate::cluster::map::{DecodeError, MapCommand};
use crate::proto::mesh as pb;

/// openraft's log entry of the metadata group.
pub type MetaEntry = Entry<LeaderId<u64, u64>, EntryPayload<MapCommand, u64, BasicNode>>;

/// The type configurations of this crate's groups: `u64` terms and node ids, a member's mesh
/// address as its node, openraft's default leader ids and votes (so log ids and votes are one
/// type for every group, and only the entries differ).
pub trait Ids:
    RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Term = u64,
        LeaderId = LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<LeaderId<u64, u64>>,
    >
{
}

impl<C> Ids for C where
    C: RaftTypeConfig<
            NodeId = u64,
            Node = BasicNode,
            Term = u64,
            LeaderId = LeaderId<u64, u64>,
            Vote = openraft::impls::Vote<LeaderId<u64, u64>>,
        >
{
}

fn missing(what: &'static str, field: &'static str) -> DecodeError {
    DecodeError::Missing { what, field }
}

pub fn log_id_to_proto(log_id: &LogIdOf<MetaTypes>) -> pb::LogId {
    pb::LogId {
        term: log_id.leader_id.term,
        node: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub fn log_id_from_proto(log_id: &pb::LogId) -> LogIdOf<MetaTypes> {
    LogIdOf::<MetaTypes>::new(
        LeaderId {
            term: log_id.term,
            node_id: log_id.node,
        },
        log_id.index,
    )
}

fn opt_log_id_to_proto(log_id: &Option<LogIdOf<MetaTypes>>) -> Option<pb::LogId> {
    log_id.as_ref().map(log_id_to_proto)
}

fn opt_log_id_from_proto(log_id: &Option<pb::LogId>) -> Option<LogIdOf<MetaTypes>> {
    log_id.as_ref().map(log_id_from_proto)
}

pub fn vote_to_proto(vote: &VoteOf<MetaTypes>) -> pb::Vote {
    pb::Vote {
        term: vote.leader_id.term,
        node: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub fn vote_from_proto(vote: &pb::Vote) -> VoteOf<MetaTypes> {
    VoteOf::<MetaTypes> {
        leader_id: LeaderId {
            term: vote.term,
            node_id: vote.node,
        },
        committed: vote.committed,
    }
}

fn required_vote(
    vote: &Option<pb::Vote>,
    what: &'static str,
) -> Result<VoteOf<MetaTypes>, DecodeError> {
    vote.as_ref()
        .map(vote_from_proto)
        .ok_or(missing(what, "vote"))
}

pub fn membership_to_proto(membership: &Membership<u64, BasicNode>) -> pb::Membership {
    pb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|set| pb::VoterSet {
                ids: set.iter().copied().collect(),
            })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| pb::MemberNode {
                id: *id,
                addr: node.addr.clone(),
            })
            .collect(),
    }
}

pub fn membership_from_proto(
    membership: &pb::Membership,
) -> Result<Membership<u64, BasicNode>, DecodeError> {
    let configs: Vec<BTreeSet<u64>> = membership
        .configs
        .iter()
        .map(|set| set.ids.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<u64, BasicNode> = membership
        .nodes
        .iter()
        .map(|node| {
            (
                node.id,
                BasicNode {
                    addr: node.addr.clone(),
                },
            )
        })
        .collect();
    Membership::new(configs, nodes).map_err(|_| missing("Membership", "a node for every voter"))
}

pub fn stored_membership_to_proto(stored: &StoredMembershipOf<MetaTypes>) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: opt_log_id_to_proto(stored.log_id()),
        membership: Some(membership_to_proto(stored.membership())),
    }
}

pub fn stored_membership_from_proto(
    stored: &pb::StoredMembership,
) -> Result<StoredMembershipOf<MetaTypes>, DecodeError> {
    let membership = match &stored.membership {
        Some(membership) => membership_from_proto(membership)?,
        None => Membership::default(),
    };
    Ok(StoredMembershipOf::<MetaTypes>::new(
        opt_log_id_from_proto(&stored.log_id),
        membership,
    ))
}

pub fn entry_to_proto(entry: &MetaEntry) -> pb::Entry {
    use pb::entry::Payload;
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(command) => Payload::Command(command.to_proto()),
        EntryPayload::Membership(membership) => {
            Payload::Membership(membership_to_proto(membership))
        }
    };
    pb::Entry {
        log_id: Some(log_id_to_proto(&entry.log_id)),
        payload: Some(payload),
    }
}

pub fn entry_from_proto(entry: pb::Entry) -> Result<MetaEntry, DecodeError> {
    use pb::entry::Payload;
    let log_id = entry
        .log_id
        .as_ref()
        .map(log_id_from_proto)
        .ok_or(missing("Entry", "log_id"))?;
    let payload = match entry.payload.ok_or(missing("Entry", "payload"))? {
        Payload::Blank(_) => EntryPayload::Blank,
        Payload::Command(command) => EntryPayload::Normal(MapCommand::from_proto(command)?),
        Payload::Membership(membership) => {
            EntryPayload::Membership(membership_from_proto(&membership)?)
        }
        // A slot group's entry in the metadata group's log.
        Payload::Slot(_) => return Err(missing("Entry", "payload")),
    };
    Ok(MetaEntry { log_id, payload })
}

pub fn vote_request_to_proto<C: Ids>(request: &VoteRequest<C>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_proto(&request.vote)),
        last_log_id: opt_log_id_to_proto(&request.last_log_id),
        leadership_transfer: request.leadership_transfer,
    }
}

pub fn vote_request_from_proto<C: Ids>(
    request: &pb::VoteRequest,
) -> Result<VoteRequest<C>, DecodeError> {
    let mut decoded = VoteRequest::new(
        required_vote(&request.vote, "VoteRequest")?,
        opt_log_id_from_proto(&request.last_log_id),
    );
    decoded.leadership_transfer = request.leadership_transfer;
    Ok(decoded)
}

pub fn vote_response_to_proto<C: Ids>(response: &VoteResponse<C>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_proto(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: opt_log_id_to_proto(&response.last_log_id),
    }
}

pub fn vote_response_from_proto<C: Ids>(
    response: &pb::VoteResponse,
) -> Result<VoteResponse<C>, DecodeError> {
    Ok(VoteResponse::new(
        required_vote(&response.vote, "VoteResponse")?,
        opt_log_id_from_proto(&response.last_log_id),
        response.vote_granted,
    ))
}

pub fn append_request_to_proto<C: Ids>(
    request: &AppendEntriesRequest<C>,
    entry_to_proto: impl Fn(&C::Entry) -> pb::Entry,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_to_proto(&request.vote)),
        prev_log_id: opt_log_id_to_proto(&request.prev_log_id),
        entries: request.entries.iter().map(entry_to_proto).collect(),
        leader_commit: opt_log_id_to_proto(&request.leader_commit),
    }
}

pub fn append_request_from_proto<C: Ids>(
    request: pb::AppendEntriesRequest,
    entry_from_proto: impl Fn(pb::Entry) -> Result<C::Entry, DecodeError>,
) -> Result<AppendEntriesRequest<C>, DecodeError> {
    Ok(AppendEntriesRequest {
        vote: required_vote(&request.vote, "AppendEntriesRequest")?,
        prev_log_id: opt_log_id_from_proto(&request.prev_log_id),
        leader_commit: opt_log_id_from_proto(&request.leader_commit),
        entries: request
            .entries
            .into_iter()
            .map(entry_from_proto)
            .collect::<Result<_, _>>()?,
    })
}

pub fn append_response_to_proto<C: Ids>(
    response: &AppendEntriesResponse<C>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as Outcome;
    let result = match response {
        AppendEntriesResponse::Success => Outcome::Success(pb::Blank {}),
        AppendEntriesResponse::PartialSuccess(log_id) => {
            Outcome::PartialSuccess(pb::PartialSuccess {
                log_id: opt_log_id_to_proto(log_id),
            })
        }
        AppendEntriesResponse::Conflict => Outcome::Conflict(pb::Blank {}),
        AppendEntriesResponse::HigherVote(vote) => Outcome::HigherVote(vote_to_proto(vote)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_response_from_proto<C: Ids>(
    response: &pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<C>, DecodeError> {
    use pb::append_entries_response::Result as Outcome;
    Ok(
        match response
            .result
            .as_ref()
            .ok_or(missing("AppendEntriesResponse", "result"))?
        {
            Outcome::Success(_) => AppendEntriesResponse::Success,
            Outcome::PartialSuccess(partial) => {
                AppendEntriesResponse::PartialSuccess(opt_log_id_from_proto(&partial.log_id))
            }
            Outcome::Conflict(_) => AppendEntriesResponse::Conflict,
            Outcome::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote_from_proto(vote)),
        },
    )
}

pub fn snapshot_meta_to_proto(meta: &SnapshotMetaOf<MetaTypes>) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: opt_log_id_to_proto(&meta.last_log_id),
        last_membership: Some(stored_membership_to_proto(&meta.last_membership)),
    }
}

pub fn snapshot_meta_from_proto(
    meta: &pb::SnapshotMeta,
) -> Result<SnapshotMetaOf<MetaTypes>, DecodeError> {
    let last_membership = match &meta.last_membership {
        Some(stored) => stored_membership_from_proto(stored)?,
        None => StoredMembershipOf::<MetaTypes>::default(),
    };
    Ok(SnapshotMetaOf::<MetaTypes> {
        last_log_id: opt_log_id_from_proto(&meta.last_log_id),
        last_membership,
    })
}

pub fn snapshot_request_to_proto(
    vote: &VoteOf<MetaTypes>,
    meta: &SnapshotMetaOf<MetaTypes>,
    data: Bytes,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        vote: Some(vote_to_proto(vote)),
        meta: Some(snapshot_meta_to_proto(meta)),
        data,
        offset: 0,
        more: false,
    }
}

pub fn snapshot_response_to_proto<C: Ids>(response: &SnapshotResponse<C>) -> pb::SnapshotResponse {
    pb::SnapshotResponse {
        vote: Some(vote_to_proto(&response.vote)),
    }
}

pub fn snapshot_response_from_proto<C: Ids>(
    response: &pb::SnapshotResponse,
) -> Result<SnapshotResponse<C>, DecodeError> {
    Ok(SnapshotResponse::new(required_vote(
        &response.vote,
        "SnapshotResponse",
    )?))
}

pub fn transfer_request_to_proto<C: Ids>(
    request: &TransferLeaderRequest<C>,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        from_leader: Some(vote_to_proto(request.from_leader())),
        to: *request.to_node_id(),
        last_log_id: request.last_log_id().map(log_id_to_proto),
    }
}

pub fn transfer_request_from_proto<C: Ids>(
    request: &pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<C>, DecodeError> {
    Ok(TransferLeaderRequest::new(
        required_vote(&request.from_leader, "TransferLeaderRequest")?,
        request.to,
        opt_log_id_from_proto(&request.last_log_id),
    ))
}

pub fn transfer_response_to_proto<C: Ids>(
    response: &TransferLeaderResponse<C>,
) -> pb::TransferLeaderResponse {
    use pb::transfer_leader_response::Result as Outcome;
    let result = match response {
        Ok(()) => Outcome::Ok(pb::Blank {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            Outcome::VoteChanged(pb::VoteMismatch {
                expected: Some(vote_to_proto(expected)),
                actual: Some(vote_to_proto(actual)),
            })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            Outcome::LogNotFlushed(pb::LogMismatch {
                expected: opt_log_id_to_proto(expected),
                actual: opt_log_id_to_proto(actual),
            })
        }
    };
    pb::TransferLeaderResponse {
        result: Some(result),
    }
}

pub fn transfer_response_from_proto<C: Ids>(
    response: &pb::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<C>, DecodeError> {
    use pb::transfer_leader_response::Result as Outcome;
    Ok(
        match response
            .result
            .as_ref()
            .ok_or(missing("TransferLeaderResponse", "result"))?
        {
            Outcome::Ok(_) => Ok(()),
            Outcome::VoteChanged(mismatch) => Err(TransferLeaderError::VoteChanged {
                expected: required_vote(&mismatch.expected, "VoteMismatch")?,
                actual: required_vote(&mismatch.actual, "VoteMismatch")?,
            }),
            Outcome::LogNotFlushed(mismatch) => Err(TransferLeaderError::LogNotFlushed {
                expected: opt_log_id_from_proto(&mismatch.expected),
                actual: opt_log_id_from_proto(&mismatch.actual),
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{NodeRecord, NodeState};
    use prost::Message;

    fn log_id(term: u64, node: u64, index: u64) -> LogIdOf<MetaTypes> {
        log_id_from_proto(&pb::LogId { term, node, index })
    }

    fn membership() -> Membership<u64, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = (1..=4)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("10.0.0.{id}:7100"),
                    },
                )
            })
            .collect();
        let configs = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3])];
        Membership::new(configs, nodes).expect("valid membership")
    }

    fn entries() -> Vec<MetaEntry> {
        vec![
            MetaEntry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            MetaEntry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Membership(membership()),
            },
            MetaEntry {
                log_id: log_id(2, 3, 3),
                payload: EntryPayload::Normal(MapCommand::AddNode {
                    node: 4,
                    record: NodeRecord {
                        mesh_addr: "10.0.0.4:7100".into(),
                        client_addr: "10.0.0.4:7000".into(),
                        admin_addr: "10.0.0.4:7200".into(),
                        media_addr: "10.0.0.4:7300".into(),
                        state: NodeState::Joining,
                    },
                }),
            },
        ]
    }

    /// Encodes to bytes and back, as the wire does.
    fn through_bytes<M: Message + Default>(message: M) -> M {
        M::decode(message.encode_to_vec().as_slice()).expect("decodes")
    }

    #[test]
    fn entries_round_trip() {
        for entry in entries() {
            let back = entry_from_proto(through_bytes(entry_to_proto(&entry))).expect("converts");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn votes_and_vote_messages_round_trip() {
        let vote = vote_from_proto(&pb::Vote {
            term: 7,
            node: 2,
            committed: true,
        });
        assert_eq!(vote_from_proto(&through_bytes(vote_to_proto(&vote))), vote);
        let mut request = VoteRequest::<MetaTypes>::new(vote, Some(log_id(6, 1, 40)));
        request.leadership_transfer = true;
        let back = vote_request_from_proto(&through_bytes(vote_request_to_proto(&request)))
            .expect("converts");
        assert_eq!(back, request);
        let response = VoteResponse::<MetaTypes>::new(vote, None, false);
        let back = vote_response_from_proto(&through_bytes(vote_response_to_proto(&response)))
            .expect("converts");
        assert_eq!(back, response);
    }

    #[test]
    fn append_messages_round_trip() {
        let request = AppendEntriesRequest::<MetaTypes> {
            vote: vote_from_proto(&pb::Vote {
                term: 2,
                node: 3,
                committed: true,
            }),
            prev_log_id: Some(log_id(1, 1, 0)),
            entries: entries(),
            leader_commit: Some(log_id(1, 1, 2)),
        };
        let back = append_request_from_proto::<MetaTypes>(
            through_bytes(append_request_to_proto(&request, entry_to_proto)),
            entry_from_proto,
        )
        .expect("converts");
        assert_eq!(back.vote, request.vote);
        assert_eq!(back.prev_log_id, request.prev_log_id);
        assert_eq!(back.entries, request.entries);
        assert_eq!(back.leader_commit, request.leader_commit);
        let responses = [
            AppendEntriesResponse::<MetaTypes>::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(2, 3, 9))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(request.vote),
        ];
        for response in responses {
            let back =
                append_response_from_proto(&through_bytes(append_response_to_proto(&response)))
                    .expect("converts");
            assert_eq!(back, response);
        }
    }

    #[test]
    fn snapshot_meta_round_trips() {
        let meta = SnapshotMetaOf::<MetaTypes> {
            last_log_id: Some(log_id(3, 2, 17)),
            last_membership: StoredMembershipOf::<MetaTypes>::new(
                Some(log_id(1, 1, 2)),
                membership(),
            ),
        };
        let back = snapshot_meta_from_proto(&through_bytes(snapshot_meta_to_proto(&meta)))
            .expect("converts");
        assert_eq!(back, meta);
        let empty = SnapshotMetaOf::<MetaTypes>::default();
        let back = snapshot_meta_from_proto(&through_bytes(snapshot_meta_to_proto(&empty)))
            .expect("converts");
        assert_eq!(back, empty);
    }
}
