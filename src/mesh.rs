//! The mesh between nodes: one authenticated TCP link per pair of nodes, carrying length-prefixed
//! prost frames (`proto/tern/mesh/v1/link.proto`). Transport only: it knows services by number
//! and payloads as bytes, nothing of Raft, mailboxes or the cluster map.
//!
//! Tasks, all owned by the mesh's `JoinSet` and ended by [`Mesh::shutdown`]:
//! - the accept loop: one task; each inbound connection gets a task that runs the handshake
//!   (at most `MAX_PENDING_HANDSHAKES` at once) and then drives the link;
//! - one dialer per known peer with a higher id (the lower id dials): dials, handshakes, installs
//!   the link, spawns its driver, waits for the link to go down, redials with backoff;
//! - one driver per link (`link::drive`): writer, reader and heartbeat loops; inbound calls run
//!   in a set owned by the reader, so they end with the link.
//!
//! A driver that ends or panics uninstalls its link through a drop guard, which fails the link's
//! pending calls and wakes the dialer.
//!
//! Determinism: every `select!` is `biased` (shutdown first), and peers and pending calls are
//! kept in id order, so nothing the mesh does depends on tokio's random branch order or on hash
//! order; with
//! `MeshConfig::jitter_seed` set the reconnect jitter is seeded too, and a simulated run
//! (`tests/cluster_sim.rs`) replays exactly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub mod backoff;
mod calls;
pub mod config;
mod connect;
pub mod error;
pub mod frame;
mod handler;
pub mod handshake;
mod lanes;
mod link;
mod peers;
pub mod telemetry;
pub mod transport;

pub use config::MeshConfig;
pub use error::{CallError, CastError, HandshakeError, MeshError};
pub use handler::{Handler, Handlers};
pub use lanes::Lane;
pub use link::LinkCounters;
pub use transport::{TcpTransport, Transport};

use handshake::Identity;
use link::{Link, Timings};
use peers::{Peer, PeerTable, lock};

/// A node's id in the cluster, 1..=1023.
pub type NodeId = u64;

/// A boxed, sendable future (what handlers return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The state of the link to one known peer.
#[derive(Clone, Debug)]
pub struct LinkStatus {
    /// The peer's node id.
    pub peer: NodeId,
    /// The peer's mesh address (as configured or announced).
    pub addr: String,
    /// Whether a link is up.
    pub up: bool,
    /// How long the current link has been up.
    pub since: Option<Duration>,
    /// Smoothed heartbeat round-trip time.
    pub rtt: Option<Duration>,
    /// Frames queued per lane (Consensus, Call, Cast).
    pub lane_depths: [usize; 3],
    /// Whether this node dialed the current link.
    pub outbound: bool,
    /// Counters of the current link.
    pub counters: LinkCounters,
}

/// A node's mesh: cheap to clone. Its tasks run until [`Mesh::shutdown`] (dropping the handles
/// does not stop them).
pub struct Mesh<T: Transport = TcpTransport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<T: Transport> {
    identity: Identity,
    lane_capacity: [usize; 3],
    timings: Timings,
    backoff: (Duration, Duration),
    jitter_seed: Option<u64>,
    peer_label: &'static str,
    transport: T,
    handlers: Arc<Handlers>,
    peers: PeerTable,
    tasks: std::sync::Mutex<JoinSet<()>>,
    shutdown: CancellationToken,
    next_link: AtomicU64,
}

impl<T: Transport> Mesh<T> {
    /// Binds the listener, starts accepting, and dials the configured peers with a higher id.
    pub async fn start(
        config: MeshConfig,
        transport: T,
        handlers: Handlers,
    ) -> Result<Self, MeshError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(MeshError::Config(problems.join("\n")));
        }
        let listener = transport
            .bind(&config.listen)
            .await
            .map_err(|source| MeshError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let local = transport
            .local_addr(&listener)
            .map_err(|source| MeshError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let inner = Arc::new(Inner {
            identity: Identity {
                cluster: config.cluster,
                node: config.node,
                secret: config.secret,
                listen: local,
                incarnation: incarnation(config.jitter_seed),
            },
            lane_capacity: config.lane_capacity,
            timings: Timings {
                heartbeat: config.heartbeat,
                dead_after: config.dead_after,
            },
            backoff: (config.backoff_min, config.backoff_max),
            jitter_seed: config.jitter_seed,
            peer_label: config.peer_label,
            transport,
            handlers: Arc::new(handlers),
            peers: PeerTable::default(),
            tasks: std::sync::Mutex::new(JoinSet::new()),
            shutdown: CancellationToken::new(),
            next_link: AtomicU64::new(1),
        });
        let accepting = Arc::clone(&inner);
        inner.spawn(accepting.accept_loop(listener));
        for (peer, addr) in config.peers {
            inner.set_peer(peer, addr);
        }
        tracing::info!(
            node = inner.identity.node,
            listen = %inner.identity.listen,
            "mesh started"
        );
        Ok(Mesh { inner })
    }

    /// The address the mesh listens on.
    pub fn local_addr(&self) -> String {
        self.inner.identity.listen.clone()
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.identity.node
    }

    /// Calls `service` on `peer` on `lane`, waiting at most `deadline` for the reply. The call is
    /// queued before this returns; a full lane or a down link fails at once.
    pub fn call(
        &self,
        peer: NodeId,
        lane: Lane,
        service: u32,
        payload: Bytes,
        deadline: Duration,
    ) -> impl Future<Output = Result<Bytes, CallError>> + Send + 'static {
        let started = self.inner.link_to(peer).and_then(|link| {
            let (id, waiter) = link.start_call(lane, service, payload, deadline)?;
            Ok((link, id, waiter))
        });
        let shutdown = self.inner.shutdown.clone();
        async move {
            let (link, id, waiter) = started?;
            tokio::select! {
                biased;
                reply = tokio::time::timeout(deadline, waiter) => match reply {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(CallError::LinkDown),
                    Err(_) => {
                        link.calls.forget(id);
                        link.count_timeout();
                        Err(CallError::DeadlineExceeded)
                    }
                },
                () = shutdown.cancelled() => Err(CallError::ShuttingDown),
            }
        }
    }

    /// Sends a one-way message to `service` on `peer`; never waits (a full lane drops it).
    pub fn cast(&self, peer: NodeId, service: u32, payload: Bytes) -> Result<(), CastError> {
        match self.inner.link_to(peer) {
            Ok(link) => link.cast(service, payload),
            Err(CallError::UnknownPeer(peer)) => Err(CastError::UnknownPeer(peer)),
            Err(_) => Err(CastError::LinkDown),
        }
    }

    /// Learns a peer or changes its address (used at the next dial); a peer with a higher id
    /// than this node is dialed.
    pub fn set_peer(&self, peer: NodeId, addr: String) {
        self.inner.set_peer(peer, addr);
    }

    /// Dials a known peer once now, whatever the ids: how a node with a higher id announces
    /// itself to a seed that does not know it. If a link is up already, both ends keep the one
    /// dialed by the lower id.
    pub fn connect(&self, peer: NodeId) -> Result<(), CallError> {
        let peer = lock(&self.inner.peers)
            .get(&peer)
            .cloned()
            .ok_or(CallError::UnknownPeer(peer))?;
        let inner = Arc::clone(&self.inner);
        let dialing = self.inner.spawn(async move {
            let addr = peer.addr();
            match inner.dial(&peer, &addr).await {
                Ok((stream, auth)) => {
                    let me = inner.identity.node;
                    if let Some(run) = inner.install(&peer, stream, auth, addr, me) {
                        run.await;
                    }
                }
                Err(err) => inner.handshake_failed(&addr, Some(peer.id), &err),
            }
        });
        dialing.map(|_| ()).ok_or(CallError::ShuttingDown)
    }

    /// Forgets a peer: stops dialing it and closes its link.
    pub fn remove_peer(&self, peer: NodeId) {
        let removed = lock(&self.inner.peers).remove(&peer);
        if let Some(peer) = removed {
            if let Some(dialer) = lock(&peer.dialer).take() {
                dialer.abort();
            }
            if let Some(link) = peer.current() {
                link.close();
            }
        }
    }

    /// How many links to each known peer came up so far (a change means a link was made again).
    pub fn links_made(&self) -> Vec<(NodeId, u64)> {
        let peers: Vec<Arc<Peer>> = lock(&self.inner.peers).values().cloned().collect();
        peers
            .iter()
            .map(|peer| {
                (
                    peer.id,
                    peer.links_made.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The incarnation `peer` announced on its latest link (`None` before any link).
    pub fn peer_incarnation(&self, peer: NodeId) -> Option<u64> {
        let known = lock(&self.inner.peers).get(&peer).cloned();
        known.and_then(|peer| peer.incarnation())
    }

    /// This node's incarnation (drawn at start, told to peers).
    pub fn incarnation(&self) -> u64 {
        self.inner.identity.incarnation
    }

    /// How long since any frame came from `peer` (`None` for a peer this node does not know).
    pub fn silent_for(&self, peer: NodeId) -> Option<Duration> {
        let known = lock(&self.inner.peers).get(&peer).cloned();
        known.map(|peer| peer.silent_for())
    }

    /// The state of the link to every known peer, by peer id.
    pub fn links(&self) -> Vec<LinkStatus> {
        let peers: Vec<Arc<Peer>> = lock(&self.inner.peers).values().cloned().collect();
        let mut statuses: Vec<LinkStatus> = peers
            .iter()
            .map(|peer| {
                let link = peer.current().filter(|link| link.is_up());
                LinkStatus {
                    peer: peer.id,
                    addr: peer.addr(),
                    up: link.is_some(),
                    since: link.as_ref().map(|l| l.age()),
                    rtt: link.as_ref().and_then(|l| l.rtt()),
                    lane_depths: link.as_ref().map(|l| l.lane_depths()).unwrap_or_default(),
                    outbound: link
                        .as_ref()
                        .is_some_and(|l| l.dialed_by == self.inner.identity.node),
                    counters: link.as_ref().map(|l| l.counters()).unwrap_or_default(),
                }
            })
            .collect();
        statuses.sort_by_key(|s| s.peer);
        statuses
    }

    /// Closes every link and the listener, fails pending calls, and waits for every task to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        tasks.abort_all();
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
        tracing::info!(node = self.inner.identity.node, "mesh stopped");
    }
}

impl<T: Transport> Inner<T> {
    /// Spawns a task owned by the mesh (none once shutdown began); reaps finished ones first.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Option<AbortHandle> {
        let mut tasks = lock(&self.tasks);
        while let Some(done) = tasks.try_join_next() {
            log_task_end(done);
        }
        if self.shutdown.is_cancelled() {
            return None;
        }
        Some(tasks.spawn(task))
    }

    fn link_to(&self, peer: NodeId) -> Result<Arc<Link>, CallError> {
        if self.shutdown.is_cancelled() {
            return Err(CallError::ShuttingDown);
        }
        let peer = lock(&self.peers)
            .get(&peer)
            .cloned()
            .ok_or(CallError::UnknownPeer(peer))?;
        peer.current()
            .filter(|link| link.is_up())
            .ok_or(CallError::LinkDown)
    }

    fn set_peer(self: &Arc<Self>, id: NodeId, addr: String) {
        if id == self.identity.node {
            return;
        }
        let peer = {
            let mut peers = lock(&self.peers);
            if let Some(peer) = peers.get(&id) {
                *lock(&peer.addr) = addr;
                Arc::clone(peer)
            } else {
                let peer = Peer::new(id, addr);
                peers.insert(id, Arc::clone(&peer));
                peer
            }
        };
        self.ensure_dialer(&peer);
    }

    /// Starts the dialer of a peer this node must dial (higher id, known address), once.
    fn ensure_dialer(self: &Arc<Self>, peer: &Arc<Peer>) {
        if peer.id <= self.identity.node || peer.addr().is_empty() {
            return;
        }
        let mut dialer = lock(&peer.dialer);
        if dialer.is_none() {
            *dialer = self.spawn(Arc::clone(self).dial_loop(Arc::clone(peer)));
        }
    }
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(err) = done
        && err.is_panic()
    {
        tracing::error!(error = %err, "mesh task panicked");
    }
}

/// This process's incarnation: from the seed in a simulation (so runs repeat), else random.
fn incarnation(seed: Option<u64>) -> u64 {
    match seed {
        Some(seed) => backoff::splitmix64(seed ^ 0x696e_6361_726e_6174),
        None => getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        }),
    }
}
