//! A gateway: this datacenter's end of the links to the others. It holds one durable queue per
//! far datacenter, runs one sender per queue ([`super::link`]) and the receiver of the far
//! gateways' deliveries ([`super::receiver`]) on the gateways' own mesh, and queues records for
//! the nodes of its cluster ([`GatewayService`], on the cluster's mesh).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::WanConfig;
use super::link::{self, LinkSettings};
use super::queue::{Queue, QueueError};
use super::receiver::Receiver;
use super::telemetry::LinkTelemetry;
use super::{EnqueueFailure, SERVICE_LINK, WanError};
use crate::mesh::{BoxFuture, Handler, Handlers, Mesh, MeshConfig, NodeId, TcpTransport};
use crate::node::Node;
use crate::proto::wan as pb;

/// One far datacenter, as this gateway sees it.
struct Far {
    name: String,
    queue: Arc<Queue>,
    /// Its gateways' ids on the gateways' mesh.
    gateways: Vec<NodeId>,
}

/// This node's gateway.
pub struct Gateway {
    mesh: Mesh<TcpTransport>,
    far: BTreeMap<usize, Far>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    stop: CancellationToken,
}

impl Gateway {
    /// Opens the queues under `data_dir/wan/out/`, starts the gateways' mesh on `wan.listen`
    /// and one sender per far datacenter. `position` is this node's place in its
    /// datacenter's gateway list.
    pub(super) async fn start(
        node: &Arc<Node>,
        config: &WanConfig,
        position: usize,
        presence: super::PresenceHook,
    ) -> Result<Arc<Gateway>, WanError> {
        let local = config.local_index().unwrap_or(0);
        let data_dir = node.config.node.data_dir.join("wan");
        let mut far = BTreeMap::new();
        let mut peers = Vec::new();
        for (index, dc) in config.datacenters.iter().enumerate() {
            if index == local {
                continue;
            }
            let dir = data_dir.join("out").join(&dc.name);
            let (name, max) = (dc.name.clone(), config.queue_max_bytes);
            let queue = tokio::task::spawn_blocking(move || Queue::open(dir, &name, max))
                .await
                .map_err(|error| WanError::Task(error.to_string()))??;
            let gateways: Vec<NodeId> = (0..dc.gateways.len())
                .map(|position| WanConfig::gateway_id(index, position))
                .collect();
            for (id, gateway) in gateways.iter().zip(&dc.gateways) {
                peers.push((*id, gateway.addr.to_string()));
            }
            far.insert(
                index,
                Far {
                    name: dc.name.clone(),
                    queue: Arc::new(queue),
                    gateways,
                },
            );
        }
        let me = WanConfig::gateway_id(local, position);
        let mut mesh_config = MeshConfig::new(
            &config.name,
            me,
            config.listen.to_string(),
            config.secret.as_bytes(),
        );
        mesh_config.peers = peers;
        mesh_config.heartbeat = Duration::from_millis(config.heartbeat_ms);
        mesh_config.dead_after = Duration::from_millis(config.down_after_ms);
        mesh_config.peer_label = "wan-";
        let receiver = Arc::new(Receiver::open(
            node.clone(),
            config,
            data_dir.join("in"),
            presence,
        )?);
        let mesh = Mesh::start(
            mesh_config,
            TcpTransport::for_listener(&node.tls, "wan"),
            Handlers::default().with(SERVICE_LINK, receiver.clone()),
        )
        .await?;
        // Presence changes for the watchers of other datacenters go back to a gateway of theirs.
        let gateways_of: BTreeMap<String, Vec<NodeId>> = far
            .values()
            .map(|dc| (dc.name.clone(), dc.gateways.clone()))
            .collect();
        let back = mesh.clone();
        let send_back: super::presence::SendBack = Arc::new(move |dc, relay| {
            let cast = Bytes::from(
                pb::LinkCast {
                    cast: Some(pb::link_cast::Cast::Presence(relay)),
                }
                .encode_to_vec(),
            );
            for gateway in gateways_of.get(dc).into_iter().flatten() {
                if back.cast(*gateway, SERVICE_LINK, cast.clone()).is_ok() {
                    return;
                }
            }
        });
        let far_watchers = super::presence::FarWatchers::new(node, send_back);
        receiver.attach(far_watchers.clone());
        let _ = node.far_watchers.set(far_watchers);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let settings = LinkSettings {
            local: config.datacenter.clone(),
            batch_records: config.batch_records,
            window: config.window,
        };
        for dc in far.values() {
            tasks.spawn(link::run(
                dc.queue.clone(),
                mesh.clone(),
                dc.gateways.clone(),
                settings.clone(),
                Arc::new(LinkTelemetry::new(&dc.name)),
                stop.clone(),
            ));
        }
        tracing::info!(
            datacenter = %config.datacenter,
            listen = %mesh.local_addr(),
            links = far.len(),
            "WAN gateway started"
        );
        Ok(Arc::new(Gateway {
            mesh,
            far,
            tasks: tokio::sync::Mutex::new(tasks),
            stop,
        }))
    }

    /// Queues `record` for datacenter `dc`; resolves once it is durable.
    pub fn enqueue(
        &self,
        dc: usize,
        record: pb::WanRecord,
    ) -> impl Future<Output = Result<u64, EnqueueFailure>> + Send + 'static {
        let queued = match self.far.get(&dc) {
            Some(far) => far.queue.enqueue(record).map_err(|error| failure(&error)),
            None => Err(EnqueueFailure::Busy),
        };
        async move {
            match queued?.await {
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(error)) => Err(failure(&error)),
                Err(_) => Err(EnqueueFailure::Busy),
            }
        }
    }

    /// Carries a group request to a gateway of datacenter `dc` (the first whose link answers);
    /// the group's answer, or `None`.
    pub fn relay(
        &self,
        dc: usize,
        call: crate::proto::mesh::GroupCall,
    ) -> impl Future<Output = Option<crate::proto::mesh::GroupReply>> + Send + 'static {
        let gateways = self
            .far
            .get(&dc)
            .map(|far| far.gateways.clone())
            .unwrap_or_default();
        let mesh = self.mesh.clone();
        let payload = Bytes::from(
            pb::LinkCall {
                op: Some(pb::link_call::Op::Group(call)),
            }
            .encode_to_vec(),
        );
        async move {
            for gateway in gateways {
                let reply = mesh
                    .call(
                        gateway,
                        crate::mesh::Lane::Call,
                        SERVICE_LINK,
                        payload.clone(),
                        super::RELAY_DEADLINE,
                    )
                    .await;
                if let Ok(Ok(pb::LinkReply {
                    answered: Some(answer),
                    ..
                })) = reply.map(pb::LinkReply::decode)
                {
                    return Some(answer);
                }
            }
            None
        }
    }

    /// Sends a notice (typing, a presence watch) from a node of this datacenter to a gateway
    /// of the datacenter it names whose link is up; dropped if none is.
    pub fn forward(&self, cast: pb::GatewayCast) {
        use pb::gateway_cast::Cast;
        let (datacenter, cast) = match cast.cast {
            Some(Cast::Typing(typing)) => (
                typing.datacenter.clone(),
                pb::link_cast::Cast::Typing(typing),
            ),
            Some(Cast::Watch(watch)) => {
                (watch.datacenter.clone(), pb::link_cast::Cast::Watch(watch))
            }
            Some(Cast::Unwatch(unwatch)) => (
                unwatch.datacenter.clone(),
                pb::link_cast::Cast::Unwatch(unwatch),
            ),
            Some(Cast::GroupTyping(typing)) => (
                typing.datacenter.clone(),
                pb::link_cast::Cast::GroupTyping(typing),
            ),
            None => return,
        };
        let Some(far) = self.far_index(&datacenter).and_then(|dc| self.far.get(&dc)) else {
            return;
        };
        let cast = Bytes::from(pb::LinkCast { cast: Some(cast) }.encode_to_vec());
        for gateway in &far.gateways {
            if self.mesh.cast(*gateway, SERVICE_LINK, cast.clone()).is_ok() {
                return;
            }
        }
    }

    /// The index of the datacenter named `name`, among the far ones.
    pub fn far_index(&self, name: &str) -> Option<usize> {
        self.far
            .iter()
            .find(|(_, far)| far.name == name)
            .map(|(index, _)| *index)
    }

    /// Stops the senders and the gateways' mesh, then closes the queues (what is being written
    /// is fsynced first).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        drop(tasks);
        self.mesh.shutdown().await;
        for far in self.far.values() {
            far.queue.close();
        }
    }
}

fn failure(error: &QueueError) -> EnqueueFailure {
    match error {
        QueueError::Full(_) => EnqueueFailure::Busy,
        QueueError::Journal(crate::journal::JournalError::Overloaded) => EnqueueFailure::Busy,
        QueueError::Journal(_) | QueueError::Malformed { .. } => EnqueueFailure::Storage,
    }
}

/// Serves this node's gateway to the nodes of its cluster (service
/// [`super::SERVICE_GATEWAY`] on the cluster's mesh). Registered on every node of a cluster;
/// a node that is not a gateway refuses with NO_LINK.
#[derive(Default)]
pub struct GatewayService {
    gateway: OnceLock<Arc<Gateway>>,
}

impl GatewayService {
    /// Serves `gateway` from now on.
    pub fn attach(&self, gateway: Arc<Gateway>) {
        let _ = self.gateway.set(gateway);
    }
}

fn refused(reason: pb::gateway_refused::Reason) -> pb::GatewayReply {
    pb::GatewayReply {
        reply: Some(pb::gateway_reply::Reply::Refused(pb::GatewayRefused {
            reason: reason.into(),
        })),
    }
}

impl Handler for GatewayService {
    fn call(&self, _from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        use pb::gateway_refused::Reason;
        let gateway = self.gateway.get().cloned();
        Box::pin(async move {
            let call = pb::GatewayCall::decode(payload).map_err(|error| error.to_string())?;
            let enqueue = match call.op {
                Some(pb::gateway_call::Op::Enqueue(enqueue)) => enqueue,
                Some(pb::gateway_call::Op::Relay(relay)) => {
                    let answer = match (gateway, relay.call) {
                        (Some(gateway), Some(call)) => match gateway.far_index(&relay.datacenter) {
                            Some(dc) => gateway.relay(dc, call).await,
                            None => None,
                        },
                        _ => None,
                    };
                    let reply = match answer {
                        Some(answer) => pb::GatewayReply {
                            reply: Some(pb::gateway_reply::Reply::Answered(answer)),
                        },
                        None => refused(Reason::NoLink),
                    };
                    return Ok(Bytes::from(reply.encode_to_vec()));
                }
                None => return Err("GatewayCall without an operation".to_owned()),
            };
            let reply = match (gateway, enqueue.record) {
                (Some(gateway), Some(record)) => match gateway.far_index(&enqueue.datacenter) {
                    Some(dc) => match gateway.enqueue(dc, record).await {
                        Ok(seq) => pb::GatewayReply {
                            reply: Some(pb::gateway_reply::Reply::Enqueued(pb::Enqueued { seq })),
                        },
                        Err(EnqueueFailure::Storage) => refused(Reason::Storage),
                        Err(EnqueueFailure::Busy) => refused(Reason::Full),
                    },
                    None => refused(Reason::NoLink),
                },
                _ => refused(Reason::NoLink),
            };
            Ok(Bytes::from(reply.encode_to_vec()))
        })
    }

    fn cast(&self, _from: NodeId, payload: Bytes) {
        let Some(gateway) = self.gateway.get() else {
            return;
        };
        if let Ok(cast) = pb::GatewayCast::decode(payload) {
            gateway.forward(cast);
        }
    }
}
