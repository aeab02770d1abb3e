//! Inbound requests of the metadata group: Raft RPCs handed to openraft, proposals and joins
//! served by the leader or passed on towards it.

use bytes::Bytes;
use prost::Message;

use super::{Attempt, MAX_HOPS, MetaError, Shared, failure, stopped};
use crate::cluster::map::{MapCommand, NodeRecord};
use crate::cluster::placement::NodeId;
use crate::cluster::raft::network::{self, RPC_DEADLINE};
use crate::cluster::raft::{MetaTypes, convert};
use crate::proto::mesh as pb;

impl Shared {
    pub(super) async fn handle(&self, _from: NodeId, payload: Bytes) -> Result<Bytes, String> {
        let request = pb::RaftRequest::decode(payload)
            .map_err(|error| error.to_string())?
            .request
            .ok_or_else(|| "empty request".to_string())?;
        let response = self
            .serve(request)
            .await
            .unwrap_or_else(|error| failure(error, None));
        Ok(Bytes::from(
            pb::RaftResponse {
                response: Some(response),
            }
            .encode_to_vec(),
        ))
    }

    async fn serve(
        &self,
        request: pb::raft_request::Request,
    ) -> Result<pb::raft_response::Response, MetaError> {
        use pb::raft_request::Request;
        use pb::raft_response::Response;
        let malformed =
            |error: crate::cluster::map::DecodeError| MetaError::Malformed(error.to_string());
        Ok(match request {
            Request::Vote(vote) => {
                let vote = convert::vote_request_from_proto(&vote).map_err(malformed)?;
                let response = self.raft.vote(vote).await.map_err(stopped)?;
                Response::Vote(convert::vote_response_to_proto(&response))
            }
            Request::PreVote(vote) => {
                let vote = convert::vote_request_from_proto(&vote).map_err(malformed)?;
                let response = self.raft.pre_vote(vote).await.map_err(stopped)?;
                Response::Vote(convert::vote_response_to_proto(&response))
            }
            Request::Append(append) => {
                let append = convert::append_request_from_proto(append, convert::entry_from_proto)
                    .map_err(malformed)?;
                let response = self.raft.append_entries(append).await.map_err(stopped)?;
                Response::Append(convert::append_response_to_proto(&response))
            }
            Request::Snapshot(snapshot) => {
                let missing =
                    |field| MetaError::Malformed(format!("InstallSnapshotRequest without {field}"));
                let vote = convert::vote_from_proto(
                    snapshot.vote.as_ref().ok_or_else(|| missing("vote"))?,
                );
                let meta = snapshot.meta.as_ref().ok_or_else(|| missing("meta"))?;
                let meta = convert::snapshot_meta_from_proto(meta).map_err(malformed)?;
                let snapshot = openraft::type_config::alias::SnapshotOf::<MetaTypes, Bytes> {
                    meta,
                    snapshot: snapshot.data,
                };
                let response = self
                    .raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(stopped)?;
                Response::Snapshot(convert::snapshot_response_to_proto(&response))
            }
            Request::Propose(propose) => {
                let command = propose
                    .command
                    .ok_or_else(|| MetaError::Malformed("ProposeRequest without command".into()))?;
                let command = MapCommand::from_proto(command).map_err(malformed)?;
                self.serve_propose(command, propose.hops).await
            }
            Request::Join(join) => {
                let record = join
                    .record
                    .ok_or_else(|| MetaError::Malformed("JoinRequest without record".into()))?;
                let record = NodeRecord::from_proto(record).map_err(malformed)?;
                self.serve_join(join.node, record, join.hops).await
            }
            Request::Transfer(transfer) => {
                let transfer =
                    convert::transfer_request_from_proto(&transfer).map_err(malformed)?;
                let response = self
                    .raft
                    .handle_transfer_leader(transfer)
                    .await
                    .map_err(stopped)?;
                Response::Transfer(convert::transfer_response_to_proto(&response))
            }
            Request::Applied(_) => Response::Applied(pb::AppliedResponse {
                index: self.metrics().last_applied.map_or(0, |log_id| log_id.index),
            }),
            Request::Probe(_) => Response::Probe(pb::ProbeResponse {
                initialized: self.raft.is_initialized().await.map_err(stopped)?,
            }),
        })
    }

    async fn serve_propose(&self, command: MapCommand, hops: u32) -> pb::raft_response::Response {
        use pb::raft_response::Response;
        if self.raft.is_leader() {
            return match self.write_local(command).await {
                Attempt::Done(version) => Response::Propose(pb::ProposeResponse {
                    version,
                    rejected: String::new(),
                }),
                Attempt::Failed(MetaError::Refused(refused)) => {
                    Response::Propose(pb::ProposeResponse {
                        version: 0,
                        rejected: refused.to_string(),
                    })
                }
                Attempt::Failed(error) => failure(error, None),
                Attempt::Retry(reason) => failure(reason, None),
            };
        }
        let leader = self.metrics().current_leader;
        match leader {
            Some(leader) if leader != self.config.node && hops < MAX_HOPS => {
                let request = pb::raft_request::Request::Propose(pb::ProposeRequest {
                    command: Some(command.to_proto()),
                    hops: hops + 1,
                });
                network::call(&self.transport, leader, request, RPC_DEADLINE * 4)
                    .await
                    .unwrap_or_else(|error| failure(error, Some(leader)))
            }
            _ => failure("no leader known", leader),
        }
    }

    async fn serve_join(
        &self,
        node: NodeId,
        record: NodeRecord,
        hops: u32,
    ) -> pb::raft_response::Response {
        use pb::raft_response::Response;
        if self.raft.is_leader() {
            return match self.join_local(node, record).await {
                Attempt::Done(version) => Response::Join(pb::JoinResponse { version }),
                Attempt::Failed(error) => failure(error, None),
                Attempt::Retry(reason) => failure(reason, None),
            };
        }
        let leader = self.metrics().current_leader;
        match leader {
            Some(leader) if leader != self.config.node && hops < MAX_HOPS => {
                let request = pb::raft_request::Request::Join(pb::JoinRequest {
                    node,
                    record: Some(record.to_proto()),
                    hops: hops + 1,
                });
                network::call(&self.transport, leader, request, RPC_DEADLINE * 4)
                    .await
                    .unwrap_or_else(|error| failure(error, Some(leader)))
            }
            _ => failure("no leader known", leader),
        }
    }
}
