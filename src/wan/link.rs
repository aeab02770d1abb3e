//! The sender of one queue: finds a gateway of the far datacenter whose link is up, asks it how
//! far it got (Resume), then sends the queue's records in order, a window of delivery calls in
//! flight, and drops from the queue what the far side confirms. Any failure (link down, a
//! deadline, a gap the far side refuses) starts over from a Resume; the far side skips what it
//! already has, so resending is always safe.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::SERVICE_LINK;
use super::queue::Queue;
use super::telemetry::LinkTelemetry;
use crate::mesh::backoff::Backoff;
use crate::mesh::{CallError, Lane, Mesh, NodeId, TcpTransport};
use crate::proto::wan as pb;

/// How long the far side has to answer a Resume.
const RESUME_DEADLINE: Duration = Duration::from_secs(5);
/// How long the far side has to store one delivery's records (their mailboxes' slot groups
/// commit them; a slot group electing a leader can take seconds).
const DELIVER_DEADLINE: Duration = Duration::from_secs(30);
/// How often the queue's age is reported while nothing else happens.
const AGE_TICK: Duration = Duration::from_secs(1);

/// What every sender of a gateway shares.
#[derive(Clone, Debug)]
pub(super) struct LinkSettings {
    /// This datacenter's name (the far side keeps its progress per sending datacenter).
    pub local: String,
    /// Records per delivery call.
    pub batch_records: usize,
    /// Delivery calls in flight.
    pub window: usize,
}

/// Why a session of the link ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("call: {0}")]
    Call(#[from] CallError),
    #[error("malformed reply")]
    Malformed,
    #[error("the far side stopped at {applied}, before record {expected}")]
    Behind { applied: u64, expected: u64 },
}

/// Runs the sender of `queue` to the far `gateways` until `stop`.
pub(super) async fn run(
    queue: Arc<Queue>,
    mesh: Mesh<TcpTransport>,
    gateways: Vec<NodeId>,
    settings: LinkSettings,
    telemetry: Arc<LinkTelemetry>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut turn = 0usize;
    telemetry.up.set(0.0);
    loop {
        let target = gateways[turn % gateways.len().max(1)];
        let resumed = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            resumed = resume(&mesh, target, &settings.local, queue.id()) => resumed,
        };
        if let Ok(applied) = resumed {
            telemetry.sent.increment(queue.acked(applied));
            telemetry.up.set(1.0);
            telemetry.resumes.increment(1);
            backoff.reset();
            tracing::info!(
                datacenter = queue.datacenter(),
                gateway = target,
                applied,
                "WAN link up"
            );
            let ended = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                ended = send(&queue, &mesh, target, &settings, &telemetry, applied) => ended,
            };
            if let Err(error) = ended {
                tracing::warn!(datacenter = queue.datacenter(), gateway = target, %error, "WAN link down");
            }
            telemetry.up.set(0.0);
        }
        queue.report_age();
        turn += 1;
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Asks the far gateway how far it got.
async fn resume(
    mesh: &Mesh<TcpTransport>,
    target: NodeId,
    local: &str,
    queue: u64,
) -> Result<u64, LinkError> {
    let call = pb::LinkCall {
        op: Some(pb::link_call::Op::Resume(pb::Resume {
            from: local.to_owned(),
            queue,
        })),
    };
    let reply = mesh
        .call(
            target,
            Lane::Call,
            SERVICE_LINK,
            Bytes::from(call.encode_to_vec()),
            RESUME_DEADLINE,
        )
        .await?;
    let reply = pb::LinkReply::decode(reply).map_err(|_| LinkError::Malformed)?;
    Ok(reply.applied)
}

/// Sends the queue from `applied` on until something fails.
async fn send(
    queue: &Queue,
    mesh: &Mesh<TcpTransport>,
    target: NodeId,
    settings: &LinkSettings,
    telemetry: &LinkTelemetry,
    applied: u64,
) -> Result<(), LinkError> {
    let mut sent_up_to = applied;
    let mut in_flight = FuturesOrdered::new();
    let mut tick = tokio::time::interval(AGE_TICK);
    loop {
        while in_flight.len() < settings.window {
            let batch = queue.after(sent_up_to, settings.batch_records);
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                break;
            };
            let (first_seq, last_seq) = (first.seq, last.seq);
            let call = pb::LinkCall {
                op: Some(pb::link_call::Op::Deliver(pb::Deliver {
                    from: settings.local.clone(),
                    first_seq,
                    records: batch.into_iter().map(|record| record.payload).collect(),
                    queue: queue.id(),
                })),
            };
            let reply = mesh.call(
                target,
                Lane::Call,
                SERVICE_LINK,
                Bytes::from(call.encode_to_vec()),
                DELIVER_DEADLINE,
            );
            in_flight.push_back(async move { (last_seq, reply.await) });
            sent_up_to = last_seq;
        }
        tokio::select! {
            biased;
            Some((last_seq, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                let reply = pb::LinkReply::decode(reply?).map_err(|_| LinkError::Malformed)?;
                telemetry.sent.increment(queue.acked(reply.applied));
                if reply.applied < last_seq {
                    return Err(LinkError::Behind { applied: reply.applied, expected: last_seq });
                }
            }
            () = queue.changed() => {}
            _ = tick.tick() => queue.report_age(),
        }
    }
}
