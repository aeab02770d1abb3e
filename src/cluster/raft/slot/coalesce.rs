//! The Raft requests of all the slot groups two nodes share, coalesced: every append (and
//! heartbeat) for a peer joins that peer's bounded queue, and one task per peer sends whatever
//! has queued as one `SlotBatch` call (at most [`MAX_BATCHES_IN_FLIGHT`] at once, so a batch that waits on a
//! follower's fsync does not hold back the next one's heartbeats). The groups' heartbeats go
//! out at the same instant (`groups.rs`), so an idle island costs one call per peer per
//! heartbeat, however many groups it has. Votes, transfers and probes go alone
//! ([`Coalescer::call_alone`]): a batch is answered as a whole, and an election must not wait
//! for a follower's fsync of a large append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::cluster::raft::network::CallError;
use crate::cluster::raft::transport::RaftTransport;
use crate::proto::mesh as pb;

/// Requests queued for one peer before new ones are refused (openraft retries them).
pub const QUEUE_PER_PEER: usize = 4096;
/// Batches to one peer in flight at once.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Requests in one batch, at most.
pub const MAX_RPCS_PER_BATCH: usize = 512;
/// Encoded bytes of one batch, about (a batch closes once it passed this).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a batch that starts with a heartbeat waits for the other groups' heartbeats (the
/// ticker triggers them together, but each group's openraft sends its own a moment later).
pub const HEARTBEAT_LINGER: Duration = Duration::from_millis(2);

type Reply = Result<pb::raft_response::Response, CallError>;

struct Queued {
    rpc: pb::SlotRpc,
    deadline: Duration,
    reply: oneshot::Sender<Reply>,
}

impl Queued {
    /// `request` of `group`, and where its reply will come.
    fn new(
        group: u64,
        request: pb::raft_request::Request,
        retain: u64,
        deadline: Duration,
    ) -> (Queued, oneshot::Receiver<Reply>) {
        let (reply, response) = oneshot::channel();
        let queued = Queued {
            rpc: pb::SlotRpc {
                group,
                request: Some(pb::RaftRequest {
                    request: Some(request),
                }),
                retain,
            },
            deadline,
            reply,
        };
        (queued, response)
    }
}

/// Counts of what went out, for tests and metrics.
#[derive(Debug, Default)]
pub struct CoalesceStats {
    /// Calls made (one per batch).
    pub batches: AtomicU64,
    /// Requests carried in them.
    pub rpcs: AtomicU64,
}

/// The per-peer queues of one node's slot groups.
pub struct Coalescer {
    transport: Arc<dyn RaftTransport>,
    peers: Mutex<HashMap<u64, mpsc::Sender<Queued>>>,
    stats: Arc<CoalesceStats>,
    /// Per led group: the index up to which every voter holds its entries, told with appends.
    retain: Mutex<HashMap<u64, u64>>,
}

impl Coalescer {
    /// Coalesces over `transport`.
    pub fn new(transport: Arc<dyn RaftTransport>) -> Coalescer {
        Coalescer {
            transport,
            peers: Mutex::new(HashMap::new()),
            stats: Arc::new(CoalesceStats::default()),
            retain: Mutex::new(HashMap::new()),
        }
    }

    /// Tells `group`'s followers, with its next appends, that every voter holds its entries up
    /// to `index`.
    pub fn set_retain(&self, group: u64, index: u64) {
        self.retain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(group, index);
    }

    /// What appends of `group` carry as `retain`.
    fn retain_of(&self, group: u64, request: &pb::raft_request::Request) -> u64 {
        if !matches!(request, pb::raft_request::Request::Append(_)) {
            return 0;
        }
        self.retain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&group)
            .copied()
            .unwrap_or(0)
    }

    /// What went out so far.
    pub fn stats(&self) -> &Arc<CoalesceStats> {
        &self.stats
    }

    /// Sends `request` of `group` to `peer` in the next batch and waits for its response.
    pub async fn call(
        &self,
        peer: u64,
        group: u64,
        request: pb::raft_request::Request,
        deadline: Duration,
    ) -> Reply {
        let retain = self.retain_of(group, &request);
        let (queued, response) = Queued::new(group, request, retain, deadline);
        self.queue(peer)
            .try_send(queued)
            .map_err(|_| CallError::Transport(format!("queue to node {peer} full")))?;
        match tokio::time::timeout(deadline, response).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(CallError::Transport("batch dropped".into())),
            Err(_) => Err(CallError::Transport("deadline passed".into())),
        }
    }

    /// Sends `request` of `group` to `peer` at once, alone, outside the queue: for elections,
    /// transfers and probes, which must not wait behind a batch of appends (a batch is answered
    /// as a whole, when its slowest request is done).
    pub async fn call_alone(
        &self,
        peer: u64,
        group: u64,
        request: pb::raft_request::Request,
        deadline: Duration,
    ) -> Reply {
        let (queued, response) = Queued::new(group, request, 0, deadline);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.rpcs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(super::telemetry::BATCHES).increment(1);
        metrics::counter!(super::telemetry::RPCS).increment(1);
        send(&*self.transport, peer, vec![queued]).await;
        response
            .await
            .unwrap_or_else(|_| Err(CallError::Transport("call dropped".into())))
    }

    fn queue(&self, peer: u64) -> mpsc::Sender<Queued> {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = peers.get(&peer).filter(|queue| !queue.is_closed()) {
            return queue.clone();
        }
        let (queue, queued) = mpsc::channel(QUEUE_PER_PEER);
        tokio::spawn(drive(
            peer,
            queued,
            self.transport.clone(),
            self.stats.clone(),
        ));
        peers.insert(peer, queue.clone());
        queue
    }
}

/// Sends the requests queued for `peer`, as many per call as have queued, until every sender
/// is gone.
async fn drive(
    peer: u64,
    mut queued: mpsc::Receiver<Queued>,
    transport: Arc<dyn RaftTransport>,
    stats: Arc<CoalesceStats>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // While every batch slot is taken, requests keep queueing: the next batch is larger.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if is_heartbeat(&first.rpc) {
            tokio::time::sleep(HEARTBEAT_LINGER).await;
        } else {
            // Requests other groups' tasks are about to queue join this batch.
            tokio::task::yield_now().await;
        }
        let mut bytes = first.rpc.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_RPCS_PER_BATCH && bytes < MAX_BATCH_BYTES {
            match queued.try_recv() {
                Ok(next) => {
                    bytes += next.rpc.encoded_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.rpcs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::counter!(super::telemetry::BATCHES).increment(1);
        metrics::counter!(super::telemetry::RPCS).increment(batch.len() as u64);
        let transport = transport.clone();
        tokio::spawn(async move {
            send(&*transport, peer, batch).await;
            drop(permit);
        });
    }
}

/// Sends one batch and hands each request its response (or the batch's failure).
async fn send(transport: &dyn RaftTransport, peer: u64, batch: Vec<Queued>) {
    let deadline = batch
        .iter()
        .map(|queued| queued.deadline)
        .max()
        .unwrap_or_default();
    let (rpcs, waiters): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.rpc, queued.reply))
        .unzip();
    let payload = Bytes::from(pb::SlotBatch { rpcs }.encode_to_vec());
    let responses = match transport.call(peer, payload, deadline).await {
        Err(error) => Err(CallError::Transport(error)),
        Ok(reply) => match pb::SlotBatchReply::decode(reply) {
            Err(error) => Err(CallError::Malformed(error.to_string())),
            Ok(reply) if reply.responses.len() != waiters.len() => {
                Err(CallError::Malformed(format!(
                    "{} responses to {} requests",
                    reply.responses.len(),
                    waiters.len()
                )))
            }
            Ok(reply) => Ok(reply.responses),
        },
    };
    match responses {
        Ok(responses) => {
            for (waiter, response) in waiters.into_iter().zip(responses) {
                let _ = waiter.send(one(response));
            }
        }
        Err(error) => {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}

/// An append request without entries: a heartbeat, which can wait a moment for company.
fn is_heartbeat(rpc: &pb::SlotRpc) -> bool {
    matches!(
        rpc.request.as_ref().and_then(|request| request.request.as_ref()),
        Some(pb::raft_request::Request::Append(append)) if append.entries.is_empty()
    )
}

/// One response of a batch, a failure as an error.
fn one(response: pb::RaftResponse) -> Reply {
    match response.response {
        None => Err(CallError::Malformed("empty response".into())),
        Some(pb::raft_response::Response::Failure(failure)) => {
            Err(CallError::Remote(failure.message))
        }
        Some(other) => Ok(other),
    }
}
