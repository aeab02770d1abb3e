//! Starting and stopping a node: listeners, the accept loop, the sweeper, the admin server, and
//! a graceful shutdown that tells every phone to go away and waits for them (bounded).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::connection::reader::write_error_and_close;
use crate::connection::{Conn, reader, sweep};
use crate::mailbox::Storage;
use crate::media::Media;
use crate::metrics as names;
use crate::node::Node;
use crate::proto::v1::{ErrorCode, GoAwayReason};
use crate::session::SessionMsg;
use crate::shard::key_hash;

/// Phones are told to reconnect after a delay spread over this window (ms) at shutdown.
const SHUTDOWN_RECONNECT_SPREAD_MS: u64 = 5_000;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The journals could not be opened or replayed.
    #[error("storage: {0}")]
    Storage(String),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    /// The media data could not be opened.
    #[error("media: {0}")]
    Media(#[from] crate::media::OpenError),
}

/// The node's bound sockets.
pub struct Listeners {
    /// Phones.
    pub client: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
    /// Media HTTP (uploads and downloads).
    pub media: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the configuration.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        Ok(Self {
            client: bind(config.node.client_addr, CLIENT_BACKLOG)?,
            admin: bind(config.node.admin_addr, ADMIN_BACKLOG)?,
            media: bind(config.media.listen_addr, MEDIA_BACKLOG)?,
        })
    }
}

/// A running node.
pub struct Server {
    node: Arc<Node>,
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    media_addr: SocketAddr,
    accept: JoinHandle<()>,
    admin: JoinHandle<Result<(), ServerError>>,
    media: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// Runs a node until `shutdown` completes, then drains it.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::start(config, listeners)
        .await?
        .run_until(shutdown)
        .await
}

impl Server {
    /// Starts every part of the node on `listeners`; phones can connect when this returns.
    pub async fn start(config: Config, listeners: Listeners) -> Result<Self, ServerError> {
        let prometheus = crate::metrics::install();
        let client_addr = local_addr(&listeners.client)?;
        let admin_addr = local_addr(&listeners.admin)?;
        let media_addr = local_addr(&listeners.media)?;
        let (config, storage, media) = tokio::task::spawn_blocking(move || {
            let storage = Storage::open(&config);
            let media = Media::open(&config);
            (config, storage, media)
        })
        .await
        .map_err(|_| ServerError::Storage("storage recovery panicked".to_owned()))?;
        let storage = storage.map_err(|error| ServerError::Storage(error.to_string()))?;
        let (node, mut workers) = Node::start(config, storage, media?);
        workers.push(tokio::spawn(sweep::run(node.clone())));
        workers.push(tokio::spawn(crate::media::expiry::run(node.clone())));
        workers.push(tokio::spawn(crate::mailbox::checkpoint::run(node.clone())));
        let admin = tokio::spawn(crate::admin::serve(
            listeners.admin,
            node.clone(),
            prometheus,
        ));
        let media = tokio::spawn(crate::media::http::serve(listeners.media, node.clone()));
        let accept = tokio::spawn(accept_loop(listeners.client, node.clone()));
        tracing::info!(%client_addr, %admin_addr, %media_addr, node = %node.config.node.id, "node started");
        Ok(Self {
            node,
            client_addr,
            admin_addr,
            media_addr,
            accept,
            admin,
            media,
            workers,
        })
    }

    /// The address phones connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The media HTTP address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Waits for `shutdown`, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tokio::select! {
            () = shutdown => {}
            () = self.node.shutdown.cancelled() => {}
        }
        self.shutdown().await
    }

    /// Stops accepting, sends every phone a GoAway with a jittered reconnect delay, waits up to
    /// `shutdown_grace_secs` for connections to close, then stops the workers.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let node = self.node;
        node.shutdown.cancel();
        self.accept.abort();
        let conns = node.conns.len();
        tracing::info!(conns, "shutting down");
        node.conns.for_each(|conn| match conn.session() {
            Some(session) => {
                let spread = key_hash(&conn.id.to_le_bytes()) % SHUTDOWN_RECONNECT_SPREAD_MS;
                let _ = session.cast(SessionMsg::GoAway {
                    reason: GoAwayReason::Shutdown,
                    reconnect_after_ms: u32::try_from(spread).unwrap_or(0),
                });
            }
            None => conn.close(),
        });
        let grace = node.config.limits.shutdown_grace();
        let drained = tokio::time::timeout(grace, async {
            while !node.conns.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = node.conns.len(),
                "grace period over; closing the rest"
            );
            node.conns.for_each(|conn| conn.close());
        }
        let admin = self.admin.await;
        let _ = self.media.await;
        // The workers stop once the last sender (held by the node) is dropped.
        drop(node);
        for worker in self.workers {
            worker.abort();
        }
        tracing::info!("node stopped");
        match admin {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

/// Accept-queue length for the phone port: login storms after a restart arrive by the ten
/// thousand (the kernel caps it at `net.core.somaxconn`; see patches/sysctl.d).
const CLIENT_BACKLOG: u32 = 65_535;
const ADMIN_BACKLOG: u32 = 128;
const MEDIA_BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(error)?;
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(backlog).map_err(error)
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    let max = node.config.limits.max_connections as usize;
    let accepted = metrics::counter!(names::CONNECTIONS_ACCEPTED);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors or a transient network error: back off briefly
                // instead of spinning.
                tracing::warn!(%error, "accept failed");
                metrics::counter!(names::ERRORS, "kind" => "accept").increment(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(node.conns.next_id(), stream, peer));
        if node.conns.len() >= max {
            metrics::counter!(names::ERRORS, "kind" => "too_many_connections").increment(1);
            write_error_and_close(
                &conn,
                ErrorCode::TooManyConnections,
                "server at its connection limit",
            );
            continue;
        }
        accepted.increment(1);
        metrics::gauge!(names::CONNECTIONS).increment(1.0);
        node.conns.insert(conn.clone());
        tokio::spawn(reader::serve(node.clone(), conn));
    }
}
