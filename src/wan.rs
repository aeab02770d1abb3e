//! Links between datacenters (wandist): two or more clusters, each in its own datacenter, form
//! one service. Every user and group has a home datacenter ([`directory`]); a phone logging in
//! elsewhere is sent home. A message for a mailbox homed in another datacenter is queued on
//! disk at one of this datacenter's gateways and acked to its sender from there; the gateway's
//! link carries the queue to a gateway of the far datacenter, which stores each record in its
//! mailbox exactly once.
//!
//! Topology: only gateways (`wan.datacenters[].gateways`) hold links between datacenters, one
//! per pair of gateways, on a mesh of their own (`crate::mesh`, authenticated with the WAN
//! secret, heartbeats, reconnect with backoff). Every other node reaches its datacenter's
//! gateway over its cluster's mesh (service [`SERVICE_GATEWAY`]).
//!
//! Per far datacenter, each gateway keeps one durable queue ([`queue`]) and one sender
//! ([`link`]): a cut or slow link to one datacenter backs up that queue only, never the
//! cluster's mesh, the other links or anything inside the datacenter. Records wait in the queue
//! (bounded; past it sends are refused and phones retry), never dropped.
//!
//! Groups are homed where they are created; their entries cross once per far datacenter with
//! members there ([`elsewhere`]); posts of members homed elsewhere are queued records, their
//! other group requests are relayed and answered at once.
//!
//! Exactly once: records carry the queue's sequence numbers; the far gateway ([`receiver`])
//! answers each delivery once its records are stored (committed in their mailboxes' slot
//! groups), skips what it already applied, and remembers how far it got; the mailbox's own
//! dedup by `client_msg_id` covers the last delivery before a crash of the far gateway.

pub mod config;
pub mod directory;
mod divert;
mod elsewhere;
mod gateway;
mod link;
mod presence;
pub mod queue;
mod receiver;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

pub use config::WanConfig;
pub use directory::Directory;
pub use divert::WanDivert;
pub use elsewhere::WanElsewhere;
pub use gateway::{Gateway, GatewayService};

use crate::mesh::{CallError, Lane, Mesh, NodeId, Transport};
use crate::node::Node;
use crate::proto::wan as pb;

/// The service number of gateway calls on a cluster's mesh.
pub const SERVICE_GATEWAY: u32 = 4;
/// The service number of link calls on the gateways' mesh.
pub const SERVICE_LINK: u32 = 5;
/// How long a node waits for its gateway to queue a record (its fsync included).
pub const ENQUEUE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a request relayed to a group in another datacenter may take, both ocean crossings
/// included.
pub const RELAY_DEADLINE: Duration = Duration::from_secs(10);

/// Why the WAN did not start.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A queue could not be opened.
    #[error("WAN queue: {0}")]
    Queue(#[from] queue::QueueError),
    /// The gateways' mesh did not start.
    #[error("WAN mesh: {0}")]
    Mesh(#[from] crate::mesh::MeshError),
    /// A blocking task failed.
    #[error("WAN start-up task: {0}")]
    Task(String),
}

/// Why a record was not queued for another datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueFailure {
    /// The queue is full or the gateway is unreachable: retry later.
    Busy,
    /// The gateway's disk failed.
    Storage,
}

/// This node's view of the WAN: the directory, and its datacenter's gateways (this node may be
/// one).
pub struct Wan<T: Transport> {
    directory: Directory,
    config: WanConfig,
    me: NodeId,
    /// Cluster ordinals of this datacenter's gateways.
    gateways: Vec<NodeId>,
    cluster_mesh: Mesh<T>,
    gateway: Option<Arc<Gateway>>,
}

impl<T: Transport> Wan<T> {
    /// Starts this node's part of the WAN (its gateway, when it is one) for `node`, reaching
    /// its datacenter's gateways over `cluster_mesh`.
    pub async fn start(
        node: &Arc<Node>,
        config: &WanConfig,
        cluster_mesh: Mesh<T>,
    ) -> Result<Arc<Wan<T>>, WanError> {
        let me = cluster_mesh.node();
        let local = config.local_index().unwrap_or(0);
        let gateway = match config.gateway_position(me) {
            Some(position) => {
                let (mesh, weak) = (cluster_mesh.clone(), Arc::downgrade(node));
                let presence: PresenceHook =
                    Arc::new(move |relay| deliver_presence(&mesh, me, &weak, relay));
                Some(Gateway::start(node, config, position, presence).await?)
            }
            None => None,
        };
        Ok(Arc::new(Wan {
            directory: Directory::new(config),
            config: config.clone(),
            me,
            gateways: config.datacenters[local]
                .gateways
                .iter()
                .map(|gateway| gateway.node)
                .collect(),
            cluster_mesh,
            gateway,
        }))
    }

    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// This node's gateway, when it is one.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.as_ref()
    }

    /// The client addresses of datacenter `index`.
    pub fn clients(&self, index: usize) -> Vec<String> {
        self.config
            .datacenters
            .get(index)
            .map(|dc| dc.clients.clone())
            .unwrap_or_default()
    }

    /// The gateway (cluster ordinal) that carries records for `key`: always the same one for
    /// one key, so that a conversation's records keep their order.
    fn gateway_for(&self, key: &str) -> NodeId {
        let count = self.gateways.len().max(1) as u64;
        let index = crate::shard::key_hash(key.as_bytes()) % count;
        self.gateways.get(index as usize).copied().unwrap_or(0)
    }

    /// Queues `record` (for `key`, homed in datacenter `dc`) at this datacenter's gateway for
    /// `key`; resolves once it is durable there.
    pub fn enqueue(
        &self,
        dc: usize,
        key: &str,
        record: pb::WanRecord,
    ) -> impl Future<Output = Result<u64, EnqueueFailure>> + Send + 'static {
        let target = self.gateway_for(key);
        let local = match (&self.gateway, target == self.me) {
            (Some(gateway), true) => Some(gateway.enqueue(dc, record.clone())),
            _ => None,
        };
        let call = local.is_none().then(|| {
            let payload = pb::GatewayCall {
                op: Some(pb::gateway_call::Op::Enqueue(pb::Enqueue {
                    datacenter: self.directory.name(dc).to_owned(),
                    record: Some(record),
                })),
            };
            self.cluster_mesh.call(
                target,
                Lane::Call,
                SERVICE_GATEWAY,
                Bytes::from(payload.encode_to_vec()),
                ENQUEUE_DEADLINE,
            )
        });
        async move {
            if let Some(local) = local {
                return local.await;
            }
            let Some(call) = call else {
                return Err(EnqueueFailure::Busy);
            };
            match call.await.map(pb::GatewayReply::decode) {
                Ok(Ok(pb::GatewayReply {
                    reply: Some(pb::gateway_reply::Reply::Enqueued(queued)),
                })) => Ok(queued.seq),
                Ok(Ok(pb::GatewayReply {
                    reply: Some(pb::gateway_reply::Reply::Refused(refused)),
                })) if refused.reason() == pb::gateway_refused::Reason::Storage => {
                    Err(EnqueueFailure::Storage)
                }
                Err(error) => {
                    log_call_error(target, &error);
                    Err(EnqueueFailure::Busy)
                }
                _ => Err(EnqueueFailure::Busy),
            }
        }
    }

    /// Carries a request to a group homed in datacenter `dc` through this datacenter's gateway
    /// for the group and the far gateway; resolves to the group's answer, or `None` when the
    /// way is down or the answer does not come in time.
    pub fn relay(
        &self,
        dc: usize,
        call: crate::proto::mesh::GroupCall,
    ) -> impl Future<Output = Option<crate::proto::mesh::GroupReply>> + Send + 'static {
        let target = self.gateway_for(&call.group);
        let local = match (&self.gateway, target == self.me) {
            (Some(gateway), true) => Some(gateway.relay(dc, call.clone())),
            _ => None,
        };
        let remote = local.is_none().then(|| {
            let payload = pb::GatewayCall {
                op: Some(pb::gateway_call::Op::Relay(pb::Relay {
                    datacenter: self.directory.name(dc).to_owned(),
                    call: Some(call),
                })),
            };
            self.cluster_mesh.call(
                target,
                Lane::Call,
                SERVICE_GATEWAY,
                Bytes::from(payload.encode_to_vec()),
                RELAY_DEADLINE,
            )
        });
        async move {
            if let Some(local) = local {
                return local.await;
            }
            match remote?.await.map(pb::GatewayReply::decode) {
                Ok(Ok(pb::GatewayReply {
                    reply: Some(pb::gateway_reply::Reply::Answered(answer)),
                })) => Some(answer),
                Err(error) => {
                    log_call_error(target, &error);
                    None
                }
                _ => None,
            }
        }
    }

    /// Relays a typing notice for `to_user` (homed in datacenter `dc`) through the gateway;
    /// dropped when anything on the way is down.
    pub fn typing(&self, dc: usize, from_user: &str, to_user: &str, typing: bool) {
        let notice = pb::Typing {
            datacenter: self.directory.name(dc).to_owned(),
            from_user: from_user.to_owned(),
            to_user: to_user.to_owned(),
            typing,
        };
        self.to_gateway(
            to_user,
            pb::GatewayCast {
                cast: Some(pb::gateway_cast::Cast::Typing(notice)),
            },
        );
    }

    /// Watches, for the session of `watcher` on connection `conn_id` of this node, the presence
    /// of `users`, homed in datacenter `dc` (a notice through the gateway).
    pub fn watch(&self, dc: usize, watcher: &str, conn_id: u64, users: Vec<String>) {
        let watch = pb::Watch {
            datacenter: self.directory.name(dc).to_owned(),
            from: self.config.datacenter.clone(),
            node: self.me,
            conn_id,
            watcher: watcher.to_owned(),
            users,
        };
        self.to_gateway(
            watcher,
            pb::GatewayCast {
                cast: Some(pb::gateway_cast::Cast::Watch(watch)),
            },
        );
    }

    /// Ends the watches of connection `conn_id` of this node on `users`, homed in `dc`.
    pub fn unwatch(&self, dc: usize, watcher: &str, conn_id: u64, users: Vec<String>) {
        let unwatch = pb::Unwatch {
            datacenter: self.directory.name(dc).to_owned(),
            from: self.config.datacenter.clone(),
            node: self.me,
            conn_id,
            users,
        };
        self.to_gateway(
            watcher,
            pb::GatewayCast {
                cast: Some(pb::gateway_cast::Cast::Unwatch(unwatch)),
            },
        );
    }

    /// Relays typing in `group` (homed here) to its `members` homed in datacenter `dc`.
    pub fn group_typing(
        &self,
        dc: usize,
        group: &str,
        from_user: &str,
        typing: bool,
        members: Vec<String>,
    ) {
        let relay = crate::proto::mesh::GroupTypingRelay {
            group: group.to_owned(),
            from_user: from_user.to_owned(),
            typing,
            to_users: members,
        };
        self.to_gateway(
            group,
            pb::GatewayCast {
                cast: Some(pb::gateway_cast::Cast::GroupTyping(pb::GroupTyping {
                    datacenter: self.directory.name(dc).to_owned(),
                    relay: Some(relay),
                })),
            },
        );
    }

    /// Hands `cast` to the gateway for `key` (this node's own, or over the cluster's mesh).
    fn to_gateway(&self, key: &str, cast: pb::GatewayCast) {
        let target = self.gateway_for(key);
        match (&self.gateway, target == self.me) {
            (Some(gateway), true) => gateway.forward(cast),
            _ => {
                let _ = self.cluster_mesh.cast(
                    target,
                    SERVICE_GATEWAY,
                    Bytes::from(cast.encode_to_vec()),
                );
            }
        }
    }

    /// Stops the gateway (its senders, its mesh) and closes its queues.
    pub async fn shutdown(&self) {
        if let Some(gateway) = &self.gateway {
            gateway.shutdown().await;
        }
    }
}

/// Where a gateway hands presence changes that came back for watchers of its datacenter.
pub(crate) type PresenceHook = Arc<dyn Fn(pb::PresenceRelay) + Send + Sync>;

/// Hands a presence change for the watcher on connection `relay.conn_id` of node `relay.node`
/// to that session: here, or through the cluster's mesh as the user's owner would.
fn deliver_presence<T: Transport>(
    mesh: &Mesh<T>,
    me: NodeId,
    node: &std::sync::Weak<Node>,
    relay: pb::PresenceRelay,
) {
    use crate::proto::mesh as mesh_pb;
    if relay.node != me {
        let event = mesh_pb::SessionEvent {
            owner: relay.watcher,
            conn_id: relay.conn_id,
            event: Some(mesh_pb::session_event::Event::Presence(
                mesh_pb::PresenceNotice {
                    user: relay.user,
                    online: relay.online,
                    last_seen_ms: relay.last_seen_ms,
                },
            )),
            missed: false,
        };
        crate::cluster::remote::cast_to(
            mesh,
            relay.node,
            mesh_pb::mailbox_cast::Cast::Event(event),
        );
        return;
    }
    let Some(node) = node.upgrade() else { return };
    let user = crate::message::Id::from(relay.user);
    node.registry.for_each(&relay.watcher, |session| {
        if session.conn_id == relay.conn_id {
            session.sink.send(crate::mailbox::MailboxEvent::Presence {
                user: user.clone(),
                online: relay.online,
                last_seen_ms: relay.last_seen_ms,
            });
        }
    });
}

fn log_call_error(target: NodeId, error: &CallError) {
    tracing::debug!(gateway = target, %error, "queueing for another datacenter failed");
}
