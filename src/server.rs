//! Starting and stopping a node: listeners, the accept loop, the sweeper, the admin server, the
//! supervision of every background task and thread, and a graceful shutdown that tells every
//! phone to go away, waits for them (bounded), then stops the workers and closes the journals
//! and stores.
//!
//! Supervision: every background task (mailbox workers, fan-out lanes, sweeper, checkpointer,
//! media expiry, accept loop, and with `[cluster]` the follower of the peers' addresses) is kept by its `JoinHandle`, and every journal and store thread
//! by a watcher task that ends when the thread ends. [`Server::run_until`] waits on all of them
//! beside the shutdown future: one that ends while the node is not shutting down (a panic, or
//! a loop that returned) is logged, counted in `tern_background_task_failures_total{task}`,
//! and shuts the node down with [`ServerError::TaskDied`], so `tern serve` exits with its own
//! code (70) and its supervisor restarts it and recovery runs, instead of a node that accepts
//! phones it can no longer serve.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::member::{BoundAddrs, ClusterMember};
use crate::config::Config;
use crate::connection::reader::{SHUTTING_DOWN, write_error_and_close};
use crate::connection::tls::PhoneTls;
use crate::connection::{Conn, per_ip, reader, sweep};
use crate::mailbox::Storage;
use crate::media::Media;
use crate::metrics as names;
use crate::node::Node;
use crate::proto::v1::{ErrorCode, GoAwayReason};
use crate::session::SessionMsg;
use crate::shard::key_hash;

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
    /// A TLS certificate, key or CA file could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// This node could not take its place in its cluster (mesh or cluster map).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::member::ClusterError),
    /// A background task or thread ended while the node was running; the node shut down.
    #[error("background task {task} {how}; node stopped")]
    TaskDied {
        /// Which kind of task (`journal`, `store`, `mailbox_worker`, `fanout_lane`, ...).
        task: &'static str,
        /// How it ended: `panicked`, `ended` (returned; for a journal or store thread, ended
        /// either way, its panic is in the log) or `was cancelled`.
        how: &'static str,
    },
}

/// A supervised background task: its name (the `task` label) and its handle.
struct Supervised {
    task: &'static str,
    handle: JoinHandle<()>,
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
    admin: JoinHandle<Result<(), ServerError>>,
    media: JoinHandle<()>,
    /// Every background task and thread watcher, accept loop included.
    tasks: Vec<Supervised>,
    /// Ends the admin server: at the very end of a shutdown, so `/readyz`, `/metrics` and
    /// `/cluster` answer during the whole drain.
    admin_stop: CancellationToken,
    /// Ends the accept loop: after the shutdown's drain, not at its start, so a phone that
    /// connects meanwhile is answered (`OVERLOADED`) instead of finding the port closed.
    stop_accepting: CancellationToken,
    /// This node's mesh and cluster map, with a `[cluster]` section.
    cluster: Option<Arc<ClusterMember>>,
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
        // Until the node is up, a second handle of the admin socket answers `/readyz` with 503
        // and `/healthz` with 200 (also when start-up fails: the guard ends it).
        let (admin_listener, early) = twin(listeners.admin)?;
        let tls = crate::tls::TlsContext::load(&config.tls)?;
        let recovered = CancellationToken::new();
        let early = tokio::spawn(crate::admin::ready::recovering(early, recovered.clone()));
        let recovered = recovered.drop_guard();
        let (config, storage, media) = tokio::task::spawn_blocking(move || {
            // Debug builds only: a longer recovery, for the tests of readiness during it.
            #[cfg(debug_assertions)]
            if let Some(millis) = std::env::var("TERN_DEBUG_RECOVERY_DELAY_MS")
                .ok()
                .and_then(|millis| millis.parse().ok())
            {
                std::thread::sleep(Duration::from_millis(millis));
            }
            let storage = Storage::open(&config);
            let media = Media::open(&config);
            (config, storage, media)
        })
        .await
        .map_err(|_| ServerError::Storage("storage recovery panicked".to_owned()))?;
        let storage = storage.map_err(|error| ServerError::Storage(error.to_string()))?;
        let (node, workers) = Node::start(config, storage, media?, tls);
        let mut tasks: Vec<Supervised> = workers
            .into_iter()
            .map(|(task, handle)| Supervised { task, handle })
            .collect();
        for journal in node.mailboxes.journals() {
            tasks.push(Supervised {
                task: "journal",
                handle: tokio::spawn(journal.exited()),
            });
        }
        let stores = node.mailboxes.stores();
        for store in (0..stores.databases()).filter_map(|index| stores.store(index)) {
            tasks.push(Supervised {
                task: "store",
                handle: tokio::spawn(store.exited()),
            });
        }
        let mut supervise = |task, handle| tasks.push(Supervised { task, handle });
        supervise("sweeper", tokio::spawn(sweep::run(node.clone())));
        supervise(
            "media_expiry",
            tokio::spawn(crate::media::expiry::run(node.clone())),
        );
        supervise(
            "checkpointer",
            tokio::spawn(crate::mailbox::checkpoint::run(
                node.mailboxes.clone(),
                node.config.mailbox.clone(),
                node.shutdown.clone(),
            )),
        );
        if let Some(reloader) = crate::tls::spawn_reloader(node.tls.clone(), node.shutdown.clone())
        {
            supervise("tls_reload", reloader);
        }
        let cluster = match &node.config.cluster {
            Some(section) => Some(Arc::new(
                ClusterMember::start(
                    &node.config,
                    section,
                    BoundAddrs {
                        client: client_addr,
                        admin: admin_addr,
                        media: media_addr,
                    },
                    &node.tls,
                )
                .await?,
            )),
            None => None,
        };
        if let Some(cluster) = &cluster {
            cluster.attach(&node).await?;
        }
        if let (Some(member), Some(section)) = (&cluster, &node.config.cluster) {
            supervise(
                "peer_addrs",
                tokio::spawn(crate::cluster::announce::follow(
                    member.meta().map(),
                    section.node,
                    node.peer_addrs.clone(),
                    node.shutdown.clone(),
                )),
            );
        }
        drop(recovered);
        let _ = early.await;
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(crate::admin::serve(
            admin_listener,
            node.clone(),
            prometheus,
            cluster.clone(),
            admin_stop.clone(),
        ));
        let media = tokio::spawn(crate::media::http::serve(listeners.media, node.clone()));
        let stop_accepting = CancellationToken::new();
        supervise(
            "accept",
            tokio::spawn(accept_loop(
                listeners.client,
                node.clone(),
                stop_accepting.clone(),
            )),
        );
        tracing::info!(%client_addr, %admin_addr, %media_addr, node = %node.config.node.id, "node started");
        Ok(Self {
            node,
            client_addr,
            admin_addr,
            media_addr,
            admin,
            media,
            tasks,
            admin_stop,
            stop_accepting,
            cluster,
        })
    }

    /// The address phones connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// A probe of the node's readiness (what `GET /readyz` answers), for a task that outlives
    /// this handle (`tern serve` tells systemd once it is ready).
    pub fn readiness_probe(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let node = self.node.clone();
        let cluster = self.cluster.clone();
        move || crate::admin::ready::readiness(&node, cluster.as_deref())
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The media HTTP address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Waits for `shutdown`, then shuts down gracefully. If a background task or thread ends
    /// first, shuts down all the same and returns [`ServerError::TaskDied`].
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let died = tokio::select! {
            () = shutdown => None,
            () = self.node.shutdown.cancelled() => None,
            () = self.node.drain.cancelled() => None,
            died = first_ended(&mut self.tasks) => Some(died),
        };
        if let Some((task, how)) = died {
            metrics::counter!(names::BACKGROUND_TASK_FAILURES, "task" => task).increment(1);
            tracing::error!(task, how, "background task died; shutting the node down");
            // The node stops either way; the death is what the caller must hear about.
            let _ = self.shutdown().await;
            return Err(ServerError::TaskDied { task, how });
        }
        self.shutdown().await
    }

    /// Shuts down in order (a drain): refuses new logins; in a cluster, hands this node's
    /// leaderships over (`ClusterMember::drain`: marked draining, slot groups and the metadata
    /// group led by peers, up to `shutdown_grace_secs`); sends every logged-in phone a GoAway
    /// with the other nodes' addresses and a reconnect delay spread over
    /// `reconnect_window_ms`, and every connection not logged in `Error{OVERLOADED}`, and waits
    /// up to `shutdown_grace_secs` for connections to close, still accepting meanwhile (each new
    /// connection gets the same `OVERLOADED` at once); stops accepting; stops
    /// the node's own producers (sweeper, checkpointer, expiry), the fan-out lanes and the
    /// mailbox workers; then closes the journals (what is queued is written and fsynced, their
    /// threads joined) and the stores (each checkpoints, closes sled, and its thread is joined).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let Server {
            node,
            admin,
            media,
            mut tasks,
            admin_stop,
            stop_accepting,
            cluster,
            ..
        } = self;
        // From here on a login is refused, and a connection accepted is refused at once
        // (`reader::serve`); one being logged in right now is either seen below with its
        // session, or has none yet and is refused here, its Welcome never written.
        node.shutdown.cancel();
        crate::notify::notify("STOPPING=1\nSTATUS=draining");
        let grace = node.config.limits.shutdown_grace();
        let conns = node.conns.len();
        tracing::info!(conns, "shutting down");
        if let Some(cluster) = &cluster {
            let handover = cluster.drain(grace).await;
            tracing::info!(
                took_ms = handover.took.as_millis() as u64,
                marked = handover.marked,
                still_led = handover.still_led,
                still_meta_leader = handover.still_meta_leader,
                meta_to = ?handover.meta_to,
                "drain: leaderships handed over"
            );
        }
        let window = u64::from(node.config.limits.reconnect_window_ms).max(1);
        node.conns.for_each(|conn| match conn.session() {
            Some(session) => {
                let spread = key_hash(&conn.id.to_le_bytes()) % window;
                let _ = session.cast(SessionMsg::GoAway {
                    reason: GoAwayReason::Shutdown,
                    reconnect_after_ms: u32::try_from(spread).unwrap_or(0),
                });
            }
            None => write_error_and_close(conn, ErrorCode::Overloaded, SHUTTING_DOWN),
        });
        let drained = tokio::time::timeout(grace, async {
            while !node.conns.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_accepting.cancel();
        stop_tasks(&mut tasks, &["accept"], grace).await;
        if drained.is_err() {
            tracing::warn!(
                left = node.conns.len(),
                "grace period over; closing the rest"
            );
            node.conns.for_each(|conn| conn.close());
        }
        let _ = media.await;
        // The node's own producers stop on the shutdown token; then the fan-out (which feeds
        // the workers), then the workers.
        stop_tasks(
            &mut tasks,
            &["sweeper", "media_expiry", "checkpointer", "peer_addrs"],
            grace,
        )
        .await;
        node.fanout.stop();
        stop_tasks(&mut tasks, &["fanout_lane"], grace).await;
        node.mailboxes.stop();
        stop_tasks(&mut tasks, &["mailbox_worker"], grace).await;
        if let Some(cluster) = cluster {
            cluster.shutdown().await;
        }
        let closing = node.clone();
        let closed = tokio::task::spawn_blocking(move || close_storage(&closing)).await;
        if !matches!(closed, Ok(true)) {
            tracing::error!("journals or stores did not close cleanly; recovery replays them");
        }
        // Only the thread watchers are left, and their threads have ended.
        stop_tasks(&mut tasks, &["journal", "store"], grace).await;
        // Last: the admin port answered (`/readyz` 503) through the whole drain; once it is
        // closed, `tern drain` knows the node is done.
        admin_stop.cancel();
        let admin = admin.await;
        tracing::info!("node stopped");
        match admin {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

/// Closes every journal, then every store; false if any did not close cleanly (each error is
/// logged). Blocks.
fn close_storage(node: &Node) -> bool {
    let mut clean = true;
    for journal in node.mailboxes.journals() {
        if let Err(error) = journal.close() {
            tracing::error!(%error, dir = %journal.dir().display(), "journal: unclean close");
            clean = false;
        }
    }
    // Each store thread checkpoints (sled flush and fsync) before it lets go of its database.
    if node.mailboxes.stores().close().is_err() {
        clean = false;
    }
    clean
}

/// Resolves when one of `tasks` ends, with its name and how it ended; removes it from the list.
/// Never resolves for an empty list.
async fn first_ended(tasks: &mut Vec<Supervised>) -> (&'static str, &'static str) {
    std::future::poll_fn(|context| {
        let ended = tasks
            .iter_mut()
            .enumerate()
            .find_map(
                |(index, supervised)| match Pin::new(&mut supervised.handle).poll(context) {
                    Poll::Ready(outcome) => Some((index, outcome)),
                    Poll::Pending => None,
                },
            );
        match ended {
            Some((index, outcome)) => {
                let task = tasks.swap_remove(index).task;
                let how = match outcome {
                    Ok(()) => "ended",
                    Err(error) if error.is_panic() => "panicked",
                    Err(_) => "was cancelled",
                };
                Poll::Ready((task, how))
            }
            None => Poll::Pending,
        }
    })
    .await
}

/// Waits, up to `grace`, for the tasks named `names` to end (they have been told to stop), and
/// removes them from `tasks`; aborts the ones still running after that, with a warning.
async fn stop_tasks(tasks: &mut Vec<Supervised>, names: &[&str], grace: Duration) {
    let (stopping, rest): (Vec<_>, Vec<_>) = std::mem::take(tasks)
        .into_iter()
        .partition(|supervised| names.contains(&supervised.task));
    *tasks = rest;
    let deadline = tokio::time::Instant::now() + grace;
    for Supervised { task, mut handle } in stopping {
        if tokio::time::timeout_at(deadline, &mut handle)
            .await
            .is_err()
        {
            tracing::warn!(
                task,
                "task did not stop within the grace period; aborting it"
            );
            handle.abort();
        }
    }
}

/// Accept-queue length for the phone port: login storms after a restart arrive by the ten
/// thousand (the kernel caps it at `net.core.somaxconn`; see patches/sysctl.d).
const CLIENT_BACKLOG: u32 = 65_535;
const ADMIN_BACKLOG: u32 = 128;

/// Two handles of one listening socket (the same backlog): one for the early admin server that
/// answers during recovery, one for the admin server proper.
fn twin(listener: TcpListener) -> Result<(TcpListener, TcpListener), ServerError> {
    let failed = |error: std::io::Error| ServerError::Admin(error);
    let listener = listener.into_std().map_err(failed)?;
    let other = listener.try_clone().map_err(failed)?;
    Ok((
        TcpListener::from_std(listener).map_err(failed)?,
        TcpListener::from_std(other).map_err(failed)?,
    ))
}
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

/// Accepts phones until `stop` (the listener closes when this returns). During the shutdown's
/// drain the readers refuse what is accepted.
async fn accept_loop(listener: TcpListener, node: Arc<Node>, stop: CancellationToken) {
    let max = node.config.limits.max_connections as usize;
    let accepted = metrics::counter!(names::CONNECTIONS_ACCEPTED);
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            next = listener.accept() => next,
        };
        let (stream, peer) = match next {
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
        let tls = match node.tls.client().map(PhoneTls::new).transpose() {
            Ok(tls) => tls,
            Err(error) => {
                tracing::warn!(%error, "TLS session not created; connection closed");
                continue;
            }
        };
        let conn = Arc::new(Conn::with_tls(node.conns.next_id(), stream, tls));
        if node.conns.len() >= max {
            metrics::counter!(names::ERRORS, "kind" => "too_many_connections").increment(1);
            write_error_and_close(
                &conn,
                ErrorCode::TooManyConnections,
                "server at its connection limit",
            );
            continue;
        }
        let Some(source) = per_ip::admit(&node, &conn, peer) else {
            continue;
        };
        accepted.increment(1);
        metrics::gauge!(names::CONNECTIONS).increment(1.0);
        node.conns.insert(conn.clone());
        reader::spawn(node.clone(), conn, source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_reported_with_how_it_ended() {
        let mut tasks = vec![
            Supervised {
                task: "idle",
                handle: tokio::spawn(std::future::pending()),
            },
            Supervised {
                task: "panicking",
                handle: tokio::spawn(async { panic!("dies on purpose") }),
            },
        ];
        assert_eq!(first_ended(&mut tasks).await, ("panicking", "panicked"));
        assert_eq!(tasks.len(), 1);
        tasks.push(Supervised {
            task: "returning",
            handle: tokio::spawn(async {}),
        });
        assert_eq!(first_ended(&mut tasks).await, ("returning", "ended"));
        stop_tasks(&mut tasks, &["idle"], Duration::from_millis(10)).await;
        assert!(tasks.is_empty());
    }
}
