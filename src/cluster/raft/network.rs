//! openraft's network over a [`RaftTransport`]: each RPC is one encoded `RaftRequest` and one
//! `RaftResponse`, with its own deadline (votes short, appends and snapshots longer).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RaftNetworkV2, RaftTypeConfig};
use prost::Message;

use super::MetaTypes;
use super::convert::{self, Ids};
use super::transport::RaftTransport;
use crate::proto::mesh as pb;

/// How long one vote call may take (at most: openraft's own deadline is shorter), and one
/// append-entries call (always: openraft gives appends three quarters of a heartbeat, so a
/// follower further away than that would never catch up).
pub const RPC_DEADLINE: Duration = Duration::from_secs(1);
/// How long sending a whole snapshot may take.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// A failure to carry or understand one RPC.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// The transport could not deliver the call or bring back a reply.
    #[error("transport: {0}")]
    Transport(String),
    /// The reply did not decode.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The peer answered with a failure.
    #[error("peer failed: {0}")]
    Remote(String),
}

/// Makes one [`Connection`] per peer.
pub struct Network {
    transport: Arc<dyn RaftTransport>,
}

impl Network {
    /// A network over `transport`.
    pub fn new(transport: Arc<dyn RaftTransport>) -> Network {
        Network { transport }
    }
}

/// Sends `request` to `peer` and decodes its response.
pub async fn call(
    transport: &Arc<dyn RaftTransport>,
    peer: u64,
    request: pb::raft_request::Request,
    deadline: Duration,
) -> Result<pb::raft_response::Response, CallError> {
    let payload = Bytes::from(
        pb::RaftRequest {
            request: Some(request),
        }
        .encode_to_vec(),
    );
    let reply = transport
        .call(peer, payload, deadline)
        .await
        .map_err(CallError::Transport)?;
    let response = pb::RaftResponse::decode(reply)
        .map_err(|error| CallError::Malformed(error.to_string()))?
        .response
        .ok_or_else(|| CallError::Malformed("empty response".into()))?;
    match response {
        pb::raft_response::Response::Failure(failure) => Err(CallError::Remote(failure.message)),
        other => Ok(other),
    }
}

/// The RPCs to one peer.
pub struct Connection {
    transport: Arc<dyn RaftTransport>,
    target: u64,
}

impl Connection {
    async fn call(
        &self,
        request: pb::raft_request::Request,
        deadline: Duration,
    ) -> Result<pb::raft_response::Response, RPCError<MetaTypes>> {
        call(&self.transport, self.target, request, deadline)
            .await
            .map_err(|error| match error {
                CallError::Transport(_) => RPCError::Unreachable(Unreachable::new(&error)),
                CallError::Malformed(_) | CallError::Remote(_) => {
                    RPCError::Network(NetworkError::new(&error))
                }
            })
    }

    /// A vote or pre-vote request: both are answered with a vote response.
    async fn ballot(
        &self,
        request: pb::raft_request::Request,
        option: RPCOption,
    ) -> Result<VoteResponse<MetaTypes>, RPCError<MetaTypes>> {
        vote_reply(
            self.call(request, option.soft_ttl().min(RPC_DEADLINE))
                .await?,
        )
    }
}

/// A reply that did not decode, as openraft's error.
pub(crate) fn malformed<C: RaftTypeConfig>(error: impl std::fmt::Display) -> RPCError<C> {
    RPCError::Network(NetworkError::new(&CallError::Malformed(error.to_string())))
}

/// A reply of another kind than the request's.
pub(crate) fn unexpected<C: RaftTypeConfig>() -> RPCError<C> {
    malformed("reply of another kind")
}

/// A failed snapshot call as openraft's streaming error.
pub(crate) fn to_streaming<C: RaftTypeConfig>(error: RPCError<C>) -> StreamingError<C> {
    match error {
        RPCError::Unreachable(error) => StreamingError::Unreachable(error),
        RPCError::Timeout(error) => StreamingError::Timeout(error),
        RPCError::Network(error) => StreamingError::Network(error),
        other => StreamingError::Network(NetworkError::new(&other)),
    }
}

/// The vote response in `response`.
pub(crate) fn vote_reply<C: Ids>(
    response: pb::raft_response::Response,
) -> Result<VoteResponse<C>, RPCError<C>> {
    match response {
        pb::raft_response::Response::Vote(response) => {
            convert::vote_response_from_proto(&response).map_err(malformed)
        }
        _ => Err(unexpected()),
    }
}

/// The append response in `response`.
pub(crate) fn append_reply<C: Ids>(
    response: pb::raft_response::Response,
) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
    match response {
        pb::raft_response::Response::Append(response) => {
            convert::append_response_from_proto(&response).map_err(malformed)
        }
        _ => Err(unexpected()),
    }
}

/// The transfer response in `response`.
pub(crate) fn transfer_reply<C: Ids>(
    response: pb::raft_response::Response,
) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
    match response {
        pb::raft_response::Response::Transfer(response) => {
            convert::transfer_response_from_proto(&response).map_err(malformed)
        }
        _ => Err(unexpected()),
    }
}

/// The snapshot response in `response` (a failed call as openraft's streaming error).
pub(crate) fn snapshot_reply<C: Ids>(
    response: Result<pb::raft_response::Response, RPCError<C>>,
) -> Result<SnapshotResponse<C>, StreamingError<C>> {
    match response.map_err(to_streaming)? {
        pb::raft_response::Response::Snapshot(response) => {
            convert::snapshot_response_from_proto(&response)
                .map_err(|error| to_streaming(malformed(error)))
        }
        _ => Err(to_streaming(unexpected())),
    }
}

impl RaftNetworkFactory<MetaTypes> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
        }
    }
}

impl RaftNetworkV2<MetaTypes> for Connection {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaTypes>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<MetaTypes>, RPCError<MetaTypes>> {
        let request = pb::raft_request::Request::Append(convert::append_request_to_proto(
            &rpc,
            convert::entry_to_proto,
        ));
        append_reply(self.call(request, RPC_DEADLINE).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MetaTypes>, RPCError<MetaTypes>> {
        let request = pb::raft_request::Request::Vote(convert::vote_request_to_proto(&rpc));
        self.ballot(request, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MetaTypes>, RPCError<MetaTypes>> {
        let request = pb::raft_request::Request::PreVote(convert::vote_request_to_proto(&rpc));
        self.ballot(request, option).await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<MetaTypes>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<MetaTypes>, RPCError<MetaTypes>> {
        let request =
            pb::raft_request::Request::Transfer(convert::transfer_request_to_proto(&request));
        transfer_reply(self.call(request, RPC_DEADLINE).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<MetaTypes>,
        snapshot: SnapshotOf<MetaTypes, Bytes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<MetaTypes>, StreamingError<MetaTypes>> {
        let request = pb::raft_request::Request::Snapshot(convert::snapshot_request_to_proto(
            &vote,
            &snapshot.meta,
            snapshot.snapshot,
        ));
        let response = tokio::select! {
            biased;
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = self.call(request, SNAPSHOT_DEADLINE) => response,
        };
        snapshot_reply(response)
    }
}
