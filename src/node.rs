//! Everything one node shares between its connections, sessions and workers.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Config;
use crate::connection::ConnTable;
use crate::dispatch::DispatchError;
use crate::group::fanout::FanOut;
use crate::limits::AbuseLimits;
use crate::mailbox::{MailboxOp, Mailboxes, Storage};
use crate::media::Media;
use crate::message::Id;
use crate::metrics as names;
use crate::node::peer_addrs::PeerAddrs;
use crate::presence::Presence;
use crate::push::hub::PushHub;
use crate::registry::Registry;
use crate::token::TokenKey;

pub mod divert;
pub mod ids;
pub mod peer_addrs;

/// Events the mailbox workers may leave for the push scheduler before more are dropped.
const PUSH_EVENTS: usize = 65_536;

/// Shared node state. Held in an `Arc` by every task and actor of the node.
pub struct Node {
    /// The configuration the node started with.
    pub config: Config,
    /// Verifies login tokens.
    pub token_key: TokenKey,
    /// The mailbox service (mailboxes and groups).
    pub mailboxes: Arc<Mailboxes>,
    /// The group fan-out lanes.
    pub fanout: FanOut,
    /// The media service (uploads, downloads, the media check of chat messages).
    pub media: Arc<Media>,
    /// Who is online.
    pub registry: Arc<Registry>,
    /// Presence subscriptions.
    pub presence: Presence,
    /// Open connections.
    pub conns: ConnTable,
    /// Connections and logins per source address, group operations per user.
    pub abuse: AbuseLimits,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Cancelled when a drain is asked for on the admin port (`POST /drain`): the node then
    /// shuts down as on SIGTERM.
    pub drain: CancellationToken,
    /// Hot-path metric handles, registered once.
    pub metrics: HotMetrics,
    /// In a cluster: sends operations on keys owned elsewhere to their owner (set once, before
    /// phones are accepted). Unset on a node without `[cluster]`.
    pub remote: OnceLock<std::sync::Arc<dyn divert::Divert>>,
    /// With `[wan]`, on a gateway: the watchers of other datacenters it stands in for (presence
    /// changes for their connections go to them).
    pub far_watchers: OnceLock<std::sync::Arc<dyn crate::presence::FarWatchers>>,
    /// With replicated slots: who leads each slot group (empty, and unused, otherwise).
    pub leaders: Arc<crate::cluster::leaders::Leaders>,
    /// The client addresses of the cluster's other nodes that are not down (empty without
    /// `[cluster]`), kept by a task that follows the cluster map; announced in `Welcome`.
    pub peer_addrs: Arc<PeerAddrs>,
    /// TLS on the client, media, mesh and gateway listeners (plain text where `[tls]` says).
    pub tls: Arc<crate::tls::TlsContext>,
    server_ids: ids::ServerIds,
}

/// Metric handles used per frame or per message, resolved once instead of per use.
pub struct HotMetrics {
    /// Frames received.
    pub frames_in: Counter,
    /// Frames sent.
    pub frames_out: Counter,
    /// Bytes received.
    pub bytes_in: Counter,
    /// Bytes sent.
    pub bytes_out: Counter,
    /// write(2) calls.
    pub socket_writes: Counter,
    /// Messages accepted.
    pub messages_in: Counter,
    /// Retries answered with the original ack.
    pub messages_duplicate: Counter,
    /// Entries delivered.
    pub messages_out: Counter,
    /// Send → ServerAck.
    pub ack_latency: Histogram,
}

impl HotMetrics {
    fn new() -> Self {
        Self {
            frames_in: metrics::counter!(names::FRAMES_IN),
            frames_out: metrics::counter!(names::FRAMES_OUT),
            bytes_in: metrics::counter!(names::BYTES_IN),
            bytes_out: metrics::counter!(names::BYTES_OUT),
            socket_writes: metrics::counter!(names::SOCKET_WRITES),
            messages_in: metrics::counter!(names::MESSAGES_IN),
            messages_duplicate: metrics::counter!(names::MESSAGES_DUPLICATE),
            messages_out: metrics::counter!(names::MESSAGES_OUT),
            ack_latency: metrics::histogram!(names::ACK_LATENCY),
        }
    }
}

impl Node {
    /// Builds the node state and starts the mailbox workers and the fan-out lanes on the
    /// recovered `storage`; `media` is the opened media service, `tls` the loaded
    /// certificates. Returns their tasks, each with
    /// the name the supervisor reports it under.
    pub fn start(
        config: Config,
        storage: Storage,
        media: Arc<Media>,
        tls: Arc<crate::tls::TlsContext>,
    ) -> (Arc<Self>, Vec<(&'static str, tokio::task::JoinHandle<()>)>) {
        let registry = Arc::new(Registry::default());
        let ordinal = config.node_ordinal();
        let (fanout, lanes) = FanOut::new(
            config.groups.fanout_lanes as usize,
            config.groups.fanout_queue as usize,
        );
        let push = config.push.as_ref().map(|_| {
            let (events, queue) = tokio::sync::mpsc::channel(PUSH_EVENTS);
            (Arc::new(PushHub::new(events)), queue)
        });
        let hub = push.as_ref().map(|(hub, _)| hub.clone());
        let (mailboxes, workers) =
            Mailboxes::start(&config, registry.clone(), storage, &fanout, hub);
        let replicated = config
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.replication_factor > 1);
        let mut handles: Vec<_> = workers
            .into_iter()
            .map(|handle| ("mailbox_worker", handle))
            .collect();
        let abuse = AbuseLimits::new(&config.limits);
        let node = Arc::new(Self {
            fanout,
            token_key: TokenKey::from_config(&config.auth),
            config,
            mailboxes: Arc::new(mailboxes),
            media,
            registry,
            presence: Presence::default(),
            conns: ConnTable::new(ordinal),
            abuse,
            shutdown: CancellationToken::new(),
            drain: CancellationToken::new(),
            metrics: HotMetrics::new(),
            remote: OnceLock::new(),
            far_watchers: OnceLock::new(),
            leaders: Arc::new(crate::cluster::leaders::Leaders::new(replicated)),
            peer_addrs: Arc::new(PeerAddrs::default()),
            tls,
            server_ids: ids::ServerIds::new(ordinal),
        });
        for lane in lanes {
            handles.push((
                "fanout_lane",
                tokio::spawn(crate::group::fanout::run_lane(
                    lane,
                    node.mailboxes.clone(),
                    node.fanout.stopped(),
                    node.fanout.elsewhere().clone(),
                )),
            ));
        }
        if let (Some(config), Some((_, queue))) = (node.config.push.clone(), push) {
            handles.push(("push_scheduler", crate::push::start(&config, queue, &node)));
        }
        (node, handles)
    }

    /// Hands a session's operation to the node that owns its key: this node's workers, or (in
    /// a cluster) its owner through the mesh. Errors only when this node's own lane is full or
    /// stopped.
    pub fn submit(&self, op: MailboxOp) -> Result<(), DispatchError<MailboxOp>> {
        match self.remote.get() {
            None => self.mailboxes.submit(op),
            Some(remote) => match remote.divert(op) {
                Some(op) => self.mailboxes.submit(op),
                None => Ok(()),
            },
        }
    }

    /// Revokes `owner`'s tokens of `device` (`None`: of every device) issued up to now, on the
    /// node that owns the user (this one, or in a cluster its owner through the mesh); returns
    /// the not-before time in force once it is durable there.
    pub async fn revoke(
        &self,
        owner: Id,
        device: Option<Id>,
    ) -> Result<u64, crate::mailbox::revocation::RevokeError> {
        use crate::mailbox::revocation::RevokeError;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op = MailboxOp::Revoke {
            owner,
            device,
            not_before: crate::clock::now_secs(),
            reply,
        };
        self.submit(op).map_err(|_| RevokeError::Unavailable)?;
        answer.await.map_err(|_| RevokeError::Unavailable)?
    }

    /// A new message id, unique in the cluster: milliseconds since the epoch in the high bits,
    /// then a counter, then this node's ordinal (layout in [`ids`]); strictly increasing on
    /// this node.
    pub fn next_server_id(&self) -> u64 {
        self.server_ids.next(now_ms())
    }
}
