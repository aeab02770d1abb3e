//! openraft's network for one slot group: its RPCs go through the node's [`Coalescer`], which
//! carries the RPCs of every group bound for the same peer together. A snapshot carries no
//! data until it is sent: then the node's [`SlotApplier`] exports the group's rows of the
//! stores, and they go alone, in chunks of at most `chunk_bytes`, one call each, in order
//! (`chunks.rs` puts them together).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RaftNetworkV2};

use super::coalesce::Coalescer;
use super::convert as slot_convert;
use super::state_machine::SlotApplier;
use super::{SlotTypes, telemetry};
use crate::cluster::raft::convert;
use crate::cluster::raft::network::{
    CallError, RPC_DEADLINE, SNAPSHOT_DEADLINE, append_reply, snapshot_reply, transfer_reply,
    vote_reply,
};
use crate::proto::mesh as pb;

type Response = pb::raft_response::Response;

/// Makes the connections of one slot group.
pub struct SlotNetwork {
    group: u64,
    coalescer: Arc<Coalescer>,
    applier: Arc<dyn SlotApplier>,
    chunk_bytes: usize,
}

impl SlotNetwork {
    /// The network of `group` over `coalescer`, exporting snapshots from `applier` and
    /// sending them `chunk_bytes` per call.
    pub fn new(
        group: u64,
        coalescer: Arc<Coalescer>,
        applier: Arc<dyn SlotApplier>,
        chunk_bytes: usize,
    ) -> SlotNetwork {
        SlotNetwork {
            group,
            coalescer,
            applier,
            chunk_bytes,
        }
    }
}

/// One slot group's RPCs to one peer.
pub struct SlotConnection {
    group: u64,
    target: u64,
    coalescer: Arc<Coalescer>,
    applier: Arc<dyn SlotApplier>,
    chunk_bytes: usize,
}

fn to_rpc_error(error: CallError) -> RPCError<SlotTypes> {
    match error {
        CallError::Transport(_) => RPCError::Unreachable(Unreachable::new(&error)),
        CallError::Malformed(_) | CallError::Remote(_) => {
            RPCError::Network(NetworkError::new(&error))
        }
    }
}

impl SlotConnection {
    /// A request that must not wait behind appends (elections, transfers).
    async fn call_alone(
        &self,
        request: pb::raft_request::Request,
        deadline: std::time::Duration,
    ) -> Result<Response, RPCError<SlotTypes>> {
        self.coalescer
            .call_alone(self.target, self.group, request, deadline)
            .await
            .map_err(to_rpc_error)
    }

    async fn call(
        &self,
        request: pb::raft_request::Request,
        deadline: std::time::Duration,
    ) -> Result<Response, RPCError<SlotTypes>> {
        self.coalescer
            .call(self.target, self.group, request, deadline)
            .await
            .map_err(to_rpc_error)
    }

    async fn ballot(
        &self,
        request: pb::raft_request::Request,
        option: RPCOption,
    ) -> Result<VoteResponse<SlotTypes>, RPCError<SlotTypes>> {
        vote_reply(
            self.call_alone(request, option.soft_ttl().min(RPC_DEADLINE))
                .await?,
        )
    }
}

impl RaftNetworkFactory<SlotTypes> for SlotNetwork {
    type Network = SlotConnection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> SlotConnection {
        SlotConnection {
            group: self.group,
            target,
            coalescer: self.coalescer.clone(),
            applier: self.applier.clone(),
            chunk_bytes: self.chunk_bytes,
        }
    }
}

impl RaftNetworkV2<SlotTypes> for SlotConnection {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SlotTypes>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<SlotTypes>, RPCError<SlotTypes>> {
        let request = pb::raft_request::Request::Append(convert::append_request_to_proto(
            &rpc,
            slot_convert::entry_to_proto,
        ));
        append_reply(self.call(request, RPC_DEADLINE).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SlotTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SlotTypes>, RPCError<SlotTypes>> {
        let request = pb::raft_request::Request::Vote(convert::vote_request_to_proto(&rpc));
        self.ballot(request, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<SlotTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SlotTypes>, RPCError<SlotTypes>> {
        let request = pb::raft_request::Request::PreVote(convert::vote_request_to_proto(&rpc));
        self.ballot(request, option).await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<SlotTypes>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<SlotTypes>, RPCError<SlotTypes>> {
        let request =
            pb::raft_request::Request::Transfer(convert::transfer_request_to_proto(&request));
        transfer_reply(self.call_alone(request, RPC_DEADLINE).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<SlotTypes>,
        snapshot: SnapshotOf<SlotTypes, Bytes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<SlotTypes>, StreamingError<SlotTypes>> {
        let failed = |error: String| {
            metrics::counter!(telemetry::SNAPSHOT_FAILURES).increment(1);
            tracing::warn!(group = self.group, to = self.target, %error, "slot group snapshot not sent");
            StreamingError::Network(NetworkError::new(&std::io::Error::other(error)))
        };
        let data = if snapshot.snapshot.is_empty() {
            self.applier.export(self.group).await.map_err(failed)?
        } else {
            snapshot.snapshot
        };
        tracing::info!(group = self.group, to = self.target, bytes = data.len(), last = ?snapshot.meta.last_log_id, "sending a slot group snapshot");
        let sending = async {
            let chunk = self.chunk_bytes.max(1);
            let mut offset = 0;
            loop {
                let end = (offset + chunk).min(data.len());
                let mut request = convert::snapshot_request_to_proto(
                    &vote,
                    &snapshot.meta,
                    data.slice(offset..end),
                );
                request.offset = offset as u64;
                request.more = end < data.len();
                let response = self
                    .call_alone(
                        pb::raft_request::Request::Snapshot(request),
                        SNAPSHOT_DEADLINE,
                    )
                    .await;
                if end == data.len() {
                    return response;
                }
                match response? {
                    Response::Applied(held) if held.index == end as u64 => offset = end,
                    other => return Ok(other),
                }
            }
        };
        let response = tokio::select! {
            biased;
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = sending => response,
        };
        let reply = snapshot_reply(response);
        match &reply {
            Ok(_) => metrics::counter!(telemetry::SNAPSHOTS_SENT).increment(1),
            Err(_) => metrics::counter!(telemetry::SNAPSHOT_FAILURES).increment(1),
        }
        reply
    }
}
