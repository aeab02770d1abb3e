//! This node as a member of a cluster: its mesh links to the peers and its replica of the
//! cluster map (the metadata Raft group), started from `[cluster]`, followed by the mesh (every
//! node the map lists is a peer) and shown by `GET /cluster`.
//!
//! Supervision: [`ClusterMember::start`] owns the mesh (its accept loop, dialers and links), the
//! metadata group (openraft's tasks, its controller and registration) and one task that keeps
//! the mesh's peer table in step with the map; [`ClusterMember::shutdown`] stops all three,
//! the group first so that it sends nothing more over the mesh.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::cluster::config::ClusterConfig;
use crate::cluster::map::{ClusterMap, NodeRecord, NodeState};
use crate::cluster::raft::slot::{LogEngine, SlotGroups, SlotGroupsConfig};
use crate::cluster::raft::{MetaConfig, MetaError, MetaGroup, RaftTransport, Role};
use crate::cluster::remote::copies::Copies;
use crate::cluster::remote::{MailboxService, Remote, SERVICE_MAILBOX};
use crate::cluster::replica::{Replica, Shared as ReplicaShared};
use crate::config::Config;
use crate::journal::JournalConfig;
use crate::mesh::{
    BoxFuture, CallError, Handler, Handlers, Lane, Mesh, MeshConfig, MeshError, NodeId,
    TcpTransport, Transport,
};
use crate::node::Node;

/// The mesh service number of the metadata group's requests (votes, appends, snapshots,
/// proposals and joins forwarded to the leader).
pub const SERVICE_META: u32 = 1;
/// The mesh service number of the slot groups' coalesced Raft requests.
pub const SERVICE_SLOTS: u32 = 3;

/// Why this node could not take its place in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The mesh could not start (its listener could not be bound, or its settings are wrong).
    #[error("mesh: {0}")]
    Mesh(#[from] MeshError),
    /// The metadata group could not start (its files, or openraft).
    #[error("cluster map: {0}")]
    Meta(#[from] MetaError),
    /// The slot groups' log could not be opened, or their runtime not started.
    #[error("slot groups: {0}")]
    Slots(String),
    /// The links to other datacenters could not start.
    #[error("wan: {0}")]
    Wan(#[from] crate::wan::WanError),
}

/// The addresses a node's listeners are bound to.
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    /// Phones.
    pub client: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
    /// Media HTTP.
    pub media: SocketAddr,
}

/// This node's mesh (over TCP in production, any [`Transport`] in simulations) and its replica
/// of the cluster map.
pub struct ClusterMember<T: Transport = TcpTransport> {
    name: String,
    mesh: Mesh<T>,
    meta: Arc<MetaGroup>,
    mailbox: Arc<MailboxService<T>>,
    follow: JoinHandle<()>,
    /// Tells the node's sessions to register and read again when the cluster changes.
    resync: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// With replicated slots: this node's slot groups, what applies their entries, the
    /// founding size of an island, and the task following their leaders (started on attach:
    /// there is nothing to replicate before the node has mailboxes).
    slots: tokio::sync::Mutex<Option<Slots>>,
    slot_service: Arc<SlotService>,
    /// Serves this node's media to the other members (refuses until attached).
    media_service: Arc<super::media::MediaService>,
    /// Serves this node's gateway to the cluster (refuses while it is none).
    gateway_service: Arc<crate::wan::GatewayService>,
    /// With `[wan]`: this node's part of the links to other datacenters (started on attach).
    wan: tokio::sync::Mutex<Option<Arc<crate::wan::Wan<T>>>>,
    data_dir: std::path::PathBuf,
    cluster: ClusterConfig,
}

/// This node's replicated slots.
struct Slots {
    groups: Arc<SlotGroups>,
    follow: JoinHandle<()>,
}

impl ClusterMember {
    /// Starts the mesh on `cluster.listen`, then the metadata group over it (bootstrapping it
    /// if this is the lowest seed and it never was, joining through a seed otherwise). `bound`
    /// are the addresses the node's listeners got (the map tells peers and phones these).
    pub async fn start(
        config: &Config,
        cluster: &ClusterConfig,
        bound: BoundAddrs,
        tls: &Arc<crate::tls::TlsContext>,
    ) -> Result<Self, ClusterError> {
        let transport = TcpTransport::for_listener(tls, "mesh");
        ClusterMember::start_over(&config.node.data_dir, cluster, bound, transport, None).await
    }
}

impl<T: Transport> ClusterMember<T> {
    /// [`ClusterMember::start`] over `transport`, keeping the group's files under `data_dir`.
    /// `seed`, when given, fixes every random draw of the mesh and the group (reconnect
    /// jitter, election timeouts), so that a simulated cluster repeats a run exactly; a
    /// production node passes `None`.
    pub async fn start_over(
        data_dir: &Path,
        cluster: &ClusterConfig,
        bound: BoundAddrs,
        transport: T,
        seed: Option<u64>,
    ) -> Result<Self, ClusterError> {
        let mut mesh_config = MeshConfig::new(
            cluster.name.clone(),
            cluster.node,
            cluster.listen.to_string(),
            cluster.secret.as_bytes().to_vec(),
        );
        mesh_config.peers = cluster
            .seeds
            .iter()
            .filter(|seed| seed.node != cluster.node)
            .map(|seed| (seed.node, seed.addr.to_string()))
            .collect();
        mesh_config.heartbeat = Duration::from_millis(cluster.heartbeat_ms);
        mesh_config.dead_after = Duration::from_millis(cluster.down_after_ms);
        mesh_config.jitter_seed = seed;
        let service = Arc::new(MetaService::default());
        let mailbox = Arc::new(MailboxService::default());
        let slot_service = Arc::new(SlotService::default());
        let media_service = Arc::new(super::media::MediaService::default());
        let gateway_service = Arc::new(crate::wan::GatewayService::default());
        let mesh = Mesh::start(
            mesh_config,
            transport,
            Handlers::default()
                .with(SERVICE_META, service.clone())
                .with(SERVICE_MAILBOX, mailbox.clone())
                .with(SERVICE_SLOTS, slot_service.clone())
                .with(super::media::SERVICE_MEDIA, media_service.clone())
                .with(crate::wan::SERVICE_GATEWAY, gateway_service.clone()),
        )
        .await?;
        // A seed with a lower id would wait for this node to be dialled; a node it has never
        // heard of must announce itself.
        for seed in cluster.seeds.iter().filter(|seed| seed.node < cluster.node) {
            let _ = mesh.connect(seed.node);
        }
        let advertise = match cluster.advertise {
            Some(advertise) => advertise.to_string(),
            None => mesh.local_addr(),
        };
        let record = NodeRecord {
            mesh_addr: advertise,
            client_addr: bound.client.to_string(),
            admin_addr: bound.admin.to_string(),
            media_addr: bound.media.to_string(),
            state: NodeState::Joining,
        };
        let seeds = cluster
            .seeds
            .iter()
            .map(|seed| {
                let known = if seed.node == cluster.node {
                    record.clone()
                } else {
                    NodeRecord {
                        mesh_addr: seed.addr.to_string(),
                        client_addr: String::new(),
                        admin_addr: String::new(),
                        media_addr: String::new(),
                        state: NodeState::Joining,
                    }
                };
                (seed.node, known)
            })
            .collect();
        let mut meta_config = MetaConfig::new(cluster.node, record, data_dir.to_path_buf(), seeds);
        meta_config.heartbeat = Duration::from_millis(cluster.heartbeat_ms);
        meta_config.election_timeout_min = Duration::from_millis(cluster.election_timeout_ms.min);
        meta_config.election_timeout_max = Duration::from_millis(cluster.election_timeout_ms.max);
        meta_config.down_after = Duration::from_millis(cluster.down_after_ms);
        meta_config.replication = cluster.replication_factor as usize;
        meta_config.slot_count = cluster.slots;
        meta_config.rng_seed = seed;
        let transport = Arc::new(MeshTransport {
            mesh: mesh.clone(),
            service: SERVICE_META,
        });
        let meta = match MetaGroup::start(meta_config, transport).await {
            Ok(meta) => Arc::new(meta),
            Err(error) => {
                mesh.shutdown().await;
                return Err(error.into());
            }
        };
        let _ = service.0.set(meta.clone());
        let follow = tokio::spawn(follow_map(mesh.clone(), meta.clone()));
        Ok(ClusterMember {
            name: cluster.name.clone(),
            mesh,
            meta,
            mailbox,
            follow,
            resync: std::sync::Mutex::new(None),
            slots: tokio::sync::Mutex::new(None),
            slot_service,
            media_service,
            gateway_service,
            wan: tokio::sync::Mutex::new(None),
            data_dir: data_dir.to_path_buf(),
            cluster: cluster.clone(),
        })
    }

    /// Serves `node`'s mailboxes to the peers and sends its sessions' operations on users other
    /// nodes own to them; with replicated slots, opens the slot groups' log and starts them,
    /// replicating `node`'s mailboxes: call once, before phones are accepted.
    pub async fn attach(&self, node: &Arc<Node>) -> Result<(), ClusterError> {
        self.mailbox
            .attach(node.clone(), self.mesh.clone(), self.meta.map());
        let remote = Remote::new(
            self.mesh.node(),
            self.mesh.clone(),
            self.meta.map(),
            node.leaders.clone(),
        );
        let copies = Copies::new(
            self.mesh.node(),
            self.mesh.clone(),
            self.meta.map(),
            node.leaders.clone(),
        );
        let remote: Arc<dyn crate::node::divert::Divert> = Arc::new(remote);
        let copies: Arc<dyn crate::group::fanout::Elsewhere> = Arc::new(copies);
        let (remote, copies) = match &node.config.wan {
            Some(config) => {
                let mut held = self.wan.lock().await;
                let wan = match held.as_ref() {
                    Some(wan) => wan.clone(),
                    None => {
                        let wan = crate::wan::Wan::start(node, config, self.mesh.clone()).await?;
                        if let Some(gateway) = wan.gateway() {
                            self.gateway_service.attach(gateway.clone());
                        }
                        held.insert(wan).clone()
                    }
                };
                let remote: Arc<dyn crate::node::divert::Divert> =
                    Arc::new(crate::wan::WanDivert::new(remote, wan.clone()));
                let copies: Arc<dyn crate::group::fanout::Elsewhere> =
                    Arc::new(crate::wan::WanElsewhere::new(copies, wan, node));
                (remote, copies)
            }
            None => (remote, copies),
        };
        let _ = node.remote.set(remote);
        let _ = node.fanout.elsewhere().set(copies);
        let mut slots = self.slots.lock().await;
        if self.cluster.replication_factor > 1 && slots.is_none() {
            let (groups, applier) = start_slots(
                &self.data_dir,
                &self.cluster,
                &self.mesh,
                node.media.clone(),
            )
            .await?;
            let _ = self.slot_service.0.set(groups.clone());
            node.media.attach_cluster(
                Arc::new(super::media::ClusterMedia::new(
                    self.mesh.clone(),
                    self.meta.map(),
                    node.leaders.clone(),
                    groups.clone(),
                )),
                node.shutdown.clone(),
            );
            let _ = self.media_service.0.set(node.media.clone());
            let island_size =
                (self.cluster.replication_factor as usize).min(self.cluster.seeds.len().max(1));
            let (replica, follow) = Replica::start(
                self.mesh.node(),
                applier,
                groups.clone(),
                self.meta.map(),
                node.mailboxes.clone(),
                node.leaders.clone(),
                island_size,
            );
            node.mailboxes.replicate_through(replica);
            *slots = Some(Slots { groups, follow });
        }
        drop(slots);
        let task = tokio::spawn(resync_on_change(
            self.mesh.clone(),
            self.meta.map(),
            node.clone(),
        ));
        if let Some(old) = self
            .resync
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(task)
        {
            old.abort();
        }
        // A node back from a drain is active again (it ends by itself, or with the node).
        let (meta, me, stop) = (self.meta.clone(), self.mesh.node(), node.shutdown.clone());
        tokio::spawn(async move { super::drain::rejoin(&meta, me, stop).await });
        Ok(())
    }

    /// The mesh (for the services built on it).
    pub fn mesh(&self) -> &Mesh<T> {
        &self.mesh
    }

    /// The metadata group.
    pub fn meta(&self) -> &MetaGroup {
        &self.meta
    }

    /// Sets the cluster's gauges (term, leader, map version, nodes by state) for a scrape.
    pub fn report_metrics(&self) {
        super::telemetry::report(&self.meta.status(), &self.meta.map().borrow());
    }

    /// Hands this node's share of the cluster away before a restart: marks it `Draining` in the
    /// map (from then on no slot group prefers it: each of its groups' leadership goes by
    /// transfer to the next member, which the leader does once that member holds everything),
    /// hands the metadata leadership over if it holds it, and waits until it leads nothing, or
    /// until `deadline`. Says what it did.
    pub async fn drain(&self, deadline: Duration) -> super::drain::Handover {
        // Debug builds only: a drain that hands nothing over (as one whose peers cannot take
        // over in time), for the test of a node that exits while it still leads.
        #[cfg(debug_assertions)]
        if std::env::var_os("TERN_DEBUG_DRAIN_NO_HANDOVER").is_some() {
            return super::drain::Handover {
                marked: false,
                still_led: self.led_groups()(),
                still_meta_leader: self.meta.status().leader == Some(self.mesh.node()),
                meta_to: None,
                took: Duration::ZERO,
            };
        }
        if let Ok(slots) = self.slots.try_lock()
            && let Some(slots) = slots.as_ref()
        {
            slots.groups.set_draining(true);
        }
        super::drain::hand_over(&self.meta, self.mesh.node(), self.led_groups(), deadline).await
    }

    /// What this node leads of the slot groups, asked again at each call of the closure.
    fn led_groups(&self) -> impl Fn() -> usize + '_ {
        move || {
            self.slots
                .try_lock()
                .ok()
                .and_then(|slots| slots.as_ref().map(|slots| slots.groups.led().len()))
                .unwrap_or(0)
        }
    }

    /// Whether this node serves phones as far as the cluster goes: the map lists it active,
    /// and with replicated slots every group it is a member of has a leader and was applied
    /// here up to what that leader committed. Otherwise, why not.
    pub fn readiness(&self) -> Result<(), String> {
        let me = self.mesh.node();
        let state = self
            .meta
            .map()
            .borrow()
            .nodes
            .get(&me)
            .map(|record| record.state);
        match state {
            Some(NodeState::Active) => {}
            Some(state) => return Err(super::view::state_name(state).to_owned()),
            None => return Err("not in the cluster map yet".to_owned()),
        }
        match self.slots.try_lock() {
            Ok(slots) => match slots.as_ref() {
                Some(slots) if !slots.groups.in_sync(READY_SLACK) => Err("catching up".to_owned()),
                _ => Ok(()),
            },
            Err(_) => Err("starting".to_owned()),
        }
    }

    /// Takes `node` out of the cluster for good (it must be down): see [`super::removal`].
    pub async fn remove(&self, node: NodeId) -> Result<u64, super::removal::RemovalError> {
        super::removal::remove(&self.meta, self.mesh.node(), node).await
    }

    /// This node's view of the cluster, as `GET /cluster` shows it.
    pub fn view(&self) -> serde_json::Value {
        let mut view = super::view::render(
            &self.name,
            &self.meta.status(),
            &self.meta.map().borrow(),
            &self.mesh.links(),
        );
        // With replicated slots: each slot group's leader, term and last applied entry here.
        if let Ok(slots) = self.slots.try_lock()
            && let Some(slots) = slots.as_ref()
            && let Some(object) = view.as_object_mut()
        {
            object.insert(
                "slot_groups".to_owned(),
                serde_json::Value::Array(slots.groups.view()),
            );
        }
        view
    }

    /// Stops the metadata group, then the mesh.
    pub async fn shutdown(&self) {
        // The gateway first: its queues are closed (fsynced) while the node can still answer.
        if let Some(wan) = self.wan.lock().await.take() {
            wan.shutdown().await;
        }
        self.follow.abort();
        if let Some(task) = self
            .resync
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
        if let Some(slots) = self.slots.lock().await.take() {
            slots.follow.abort();
            slots.groups.shutdown().await;
        }
        self.meta.shutdown().await;
        self.mesh.shutdown().await;
    }
}

/// Entries a slot group may still have to apply here while the node is ready.
const READY_SLACK: u64 = 64;

/// How often the links are looked at for one that came up again.
const RESYNC_POLL: Duration = Duration::from_millis(250);

/// When a link to a peer is made again (the peer restarted, or the link was cut) or the map
/// changes (an owner went down or came back, slots moved), or a slot group has a new leader, pushes to this node's sessions may
/// have been lost and their owners may have forgotten them: every session registers again with
/// its owner and reads its mailbox.
async fn resync_on_change<T: Transport>(
    mesh: Mesh<T>,
    mut map: tokio::sync::watch::Receiver<Arc<ClusterMap>>,
    node: Arc<Node>,
) {
    let mut links = mesh.links_made();
    let mut version = map.borrow_and_update().version;
    // With replicated slots a user's owner is its group's leader: a new leader is a move too.
    let mut leaders = node.leaders.version();
    let mut incarnations: std::collections::BTreeMap<NodeId, u64> = Default::default();
    let mut down = down_nodes(&map.borrow());
    let mut tick = tokio::time::interval(RESYNC_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = map.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let now = mesh.links_made();
        let current = map.borrow_and_update().version;
        let leaders_now = node.leaders.version();
        if now == links && current == version && leaders_now == leaders {
            continue;
        }
        links = now;
        version = current;
        leaders = leaders_now;
        // Sessions registered here from a process that has since restarted, or from a node now
        // marked down, are gone: forget them (and announce their users offline).
        let mut restarted = Vec::new();
        for (peer, _) in &links {
            if let Some(incarnation) = mesh.peer_incarnation(*peer)
                && incarnations
                    .insert(*peer, incarnation)
                    .is_some_and(|before| before != incarnation)
            {
                restarted.push((*peer, incarnation));
            }
        }
        let now_down = down_nodes(&map.borrow());
        let newly_down: Vec<NodeId> = now_down.difference(&down).copied().collect();
        down = now_down;
        if !restarted.is_empty() || !newly_down.is_empty() {
            forget_sessions(&node, |peer, incarnation| {
                newly_down.contains(&peer)
                    || restarted
                        .iter()
                        .any(|(node, current)| *node == peer && *current != incarnation)
            });
        }
        let mut sessions = 0u64;
        node.conns.for_each(|conn| {
            if let Some(session) = conn.session()
                && session.cast(crate::session::SessionMsg::Resync).is_ok()
            {
                sessions += 1;
            }
        });
        tracing::debug!(sessions, version, "cluster changed: sessions read again");
    }
}

/// The nodes the map marks down.
fn down_nodes(map: &ClusterMap) -> std::collections::BTreeSet<NodeId> {
    map.nodes
        .iter()
        .filter(|(_, record)| record.state == NodeState::Down)
        .map(|(id, _)| *id)
        .collect()
}

/// Drops the sessions and presence watches registered from other nodes' processes for which
/// `stale(node, incarnation)` holds; users left without a device are announced offline.
fn forget_sessions(node: &Node, stale: impl Fn(u64, u64) -> bool) {
    let offline = node.registry.drop_remote(&stale);
    node.presence.drop_remote(&stale);
    let now = crate::clock::now_ms();
    for user in &offline {
        node.presence.changed(user, false, now);
    }
    tracing::info!(
        offline = offline.len(),
        "forgot the sessions of a restarted or down node"
    );
}

/// Keeps the mesh's peers in step with the map: every node it lists (but this one) is a peer
/// at its mesh address; a node that left the map is dropped.
async fn follow_map<T: Transport>(mesh: Mesh<T>, meta: Arc<MetaGroup>) {
    let mut map = meta.map();
    let mut known: std::collections::BTreeMap<NodeId, String> = Default::default();
    loop {
        let current: Arc<ClusterMap> = map.borrow_and_update().clone();
        for (node, record) in &current.nodes {
            if *node == mesh.node() || record.mesh_addr.is_empty() {
                continue;
            }
            if known.get(node) != Some(&record.mesh_addr) {
                mesh.set_peer(*node, record.mesh_addr.clone());
                known.insert(*node, record.mesh_addr.clone());
            }
        }
        let gone: Vec<NodeId> = known
            .keys()
            .filter(|node| !current.nodes.contains_key(node))
            .copied()
            .collect();
        for node in gone {
            mesh.remove_peer(node);
            known.remove(&node);
        }
        if map.changed().await.is_err() {
            return;
        }
    }
}

/// The metadata group's requests from peers, served once the group has started (a request that
/// comes before is refused and retried by its sender).
#[derive(Default)]
struct MetaService(OnceLock<Arc<MetaGroup>>);

impl Handler for MetaService {
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let meta = self.0.get().cloned();
        Box::pin(async move {
            match meta {
                Some(meta) => meta.handle(from, payload).await,
                None => Err("the metadata group is starting".to_owned()),
            }
        })
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {}
}

/// Opens the slot groups' shared log under `data_dir/slots` and starts their runtime over
/// the mesh's consensus lane.
async fn start_slots<T: Transport>(
    data_dir: &Path,
    cluster: &ClusterConfig,
    mesh: &Mesh<T>,
    media: Arc<crate::media::Media>,
) -> Result<(Arc<SlotGroups>, Arc<ReplicaShared>), ClusterError> {
    let dir = data_dir.join("slots");
    let engine = tokio::task::spawn_blocking(move || LogEngine::open(JournalConfig::new(dir)))
        .await
        .map_err(|error| ClusterError::Slots(error.to_string()))?
        .map_err(|error| ClusterError::Slots(error.to_string()))?;
    let mut config = SlotGroupsConfig::new(cluster.node);
    config.heartbeat = Duration::from_millis(cluster.heartbeat_ms);
    config.election_timeout_min = Duration::from_millis(cluster.election_timeout_ms.min);
    config.election_timeout_max = Duration::from_millis(cluster.election_timeout_ms.max);
    config.max_lag = cluster.slot_log_max_lag;
    config.chunk_bytes = cluster.snapshot_chunk_bytes;
    let applier = Replica::applier();
    // Before the groups start: a group re-applies its log from its durable point at once.
    applier.attach_media(media);
    let transport = Arc::new(MeshTransport {
        mesh: mesh.clone(),
        service: SERVICE_SLOTS,
    });
    let groups = SlotGroups::start(config, engine, transport, applier.clone())
        .map_err(|error| ClusterError::Slots(error.to_string()))?;
    Ok((Arc::new(groups), applier))
}

/// The slot groups' batches from peers, served once the groups have started.
#[derive(Default)]
struct SlotService(OnceLock<Arc<SlotGroups>>);

impl Handler for SlotService {
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let groups = self.0.get().cloned();
        Box::pin(async move {
            match groups {
                Some(groups) => groups.handle(from, payload).await,
                None => Err("the slot groups are starting".to_owned()),
            }
        })
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {}
}

/// The metadata group's (and the slot groups') requests ride the consensus lane of the mesh,
/// to their service.
struct MeshTransport<T: Transport> {
    mesh: Mesh<T>,
    service: u32,
}

impl<T: Transport> RaftTransport for MeshTransport<T> {
    fn call(
        &self,
        peer: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let call = self
            .mesh
            .call(peer, Lane::Consensus, self.service, payload, deadline);
        Box::pin(async move { call.await.map_err(|error: CallError| error.to_string()) })
    }

    fn silent_for(&self, peer: u64) -> Option<Duration> {
        self.mesh.silent_for(peer)
    }
}

/// The name of a role, for `GET /cluster`.
pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
    }
}
