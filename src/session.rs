//! The session actor: one ractor actor per logged-in device.
//!
//! Supervision tree of one connection:
//! ```text
//! accept loop ──spawns──▶ reader task (owns the connection's lifetime)
//!                             └─spawns after Login──▶ Session actor (this module)
//! ```
//! The reader casts decoded frames to the session; the session owns all writes to the socket.
//! The session's state ([`SessionState`]) is built in `pre_start` (mailbox login, registry entry,
//! Welcome) and its `Drop` undoes all of it, whether the actor stopped, failed or panicked; it
//! also closes the connection, which ends the reader. A reader that sees EOF or bad input tells
//! the session, which stops. So neither half can outlive the other.
//!
//! The actor's own configuration is empty: everything mutable lives in `SessionState`.

mod abuse;
mod delivery;
mod events;
mod group;
pub mod group_wire;
mod inbound;
mod outbound;
mod push;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use hashbrown::HashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::connection::Conn;
pub use crate::mailbox::AppendFailure;
use crate::mailbox::{AckInfo, MailboxEvent, MailboxOp, SessionHandle};
use crate::message::Id;
use crate::metrics as names;
use crate::node::Node;
use crate::proto::PROTOCOL_VERSION;
use crate::proto::v1::{ErrorCode, GoAwayReason, Welcome, client_frame::Frame as ClientFrame};
use crate::registry::{DeviceSession, PushBudget};
use delivery::Delivery;

/// Messages a session actor handles.
#[derive(Debug)]
pub enum SessionMsg {
    /// A frame from the phone (already rate-limited by the reader).
    Inbound(ClientFrame),
    /// Several frames from one read of the socket, in order (already rate-limited).
    InboundBatch(Vec<ClientFrame>),
    /// A frame the reader refused for exceeding the rate limit (`None`: a frame with no case
    /// this server knows).
    RateLimited(Option<ClientFrame>),
    /// The phone sent a frame type this server does not know.
    Unsupported,
    /// The phone kept sending far above its rate limit: close.
    Flooded,
    /// The phone sent an oversized or undecodable frame: answer and close.
    Fatal {
        /// What to tell the phone.
        code: ErrorCode,
        /// Details.
        message: String,
    },
    /// The phone closed the connection or the socket failed (the reason label).
    PeerClosed(&'static str),
    /// Write buffered frames to the socket.
    Flush,
    /// An answer or push of the mailbox service (or the directory of who is online).
    Event(MailboxEvent),
    /// Close the connection with a GoAway frame.
    GoAway {
        /// Why.
        reason: GoAwayReason,
        /// The delay the phone should wait before reconnecting.
        reconnect_after_ms: u32,
    },
    /// Retry a mailbox read that found its queue full.
    RetryFetch,
    /// The cluster changed (a link to a peer came back, or the map): register with the owner
    /// again, then read the mailbox, in case pushes were lost meanwhile.
    Resync,
    /// The registration of a resync is settled (true) or failed (false: tried again shortly);
    /// either way the mailbox is read: anything stored before the owner knew this session again
    /// is read, anything after it is pushed.
    Reregistered(bool),
}

/// The session actor (stateless; see [`SessionState`]).
pub struct Session;

/// What the reader hands a new session.
pub struct SessionArgs {
    /// The node.
    pub node: Arc<Node>,
    /// The connection.
    pub conn: Arc<Conn>,
    /// Authenticated user.
    pub user: Id,
    /// Authenticated device.
    pub device: Id,
    /// The device's resume cursor from Login.
    pub resume_after: u64,
    /// When its token was issued (seconds; 0 for a token of the first format).
    pub token_issued_at: u64,
}

/// A Send or Receipt waiting for its mailbox appends.
#[derive(Debug)]
struct PendingSend {
    client_msg_id: Arc<str>,
    received: Instant,
    waiting: u8,
    recipient: Option<(AckInfo, bool)>,
    failed: Option<AppendFailure>,
    /// Set for a group post.
    group: Option<Id>,
}

/// Everything a session owns.
pub struct SessionState {
    node: Arc<Node>,
    conn: Arc<Conn>,
    user: Id,
    device: Id,
    pushes: Arc<PushBudget>,
    /// Encoded frames not yet written.
    out: BytesMut,
    flush_scheduled: bool,
    waiting_writable: bool,
    closing: bool,
    delivery: Delivery,
    /// Known devices of this user (own messages are copied to the user's mailbox when > 1).
    devices: usize,
    pending: HashMap<u64, PendingSend>,
    next_tag: u64,
    watching: Vec<Id>,
    /// When the session's token was issued: its owner checks it against revocations again
    /// when the session registers there anew.
    token_issued_at: u64,
}

/// Sends and receipts in flight per session before new ones are refused with OVERLOADED.
/// `mailbox.dedup_window` may not be smaller (a device may resend all of them).
pub const MAX_PENDING_SENDS: usize = 1024;

/// Why a session did not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The mailbox queue of this user is full.
    #[error("mailbox service overloaded")]
    Overloaded,
    /// The mailbox worker stopped (shutdown).
    #[error("mailbox service stopped")]
    Stopped,
    /// The token was issued before its device or user was signed out.
    #[error(transparent)]
    Revoked(crate::mailbox::revocation::Revoked),
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let SessionArgs {
            node,
            conn,
            user,
            device,
            resume_after,
            token_issued_at,
        } = args;
        let (reply, answer) = oneshot::channel();
        node.submit(MailboxOp::Login {
            owner: user.clone(),
            device: device.clone(),
            resume_after,
            conn_id: conn.id,
            token_issued_at,
            reply,
        })
        .map_err(|_| SessionError::Overloaded)?;
        let login = answer
            .await
            .map_err(|_| SessionError::Stopped)?
            .map_err(SessionError::Revoked)?;

        // Known to the connection before anything is sent, so shutdown and the sweeper treat it
        // as logged in from its first frame on.
        conn.set_session(myself.clone());
        let pushes = Arc::new(PushBudget::default());
        let registered = node.registry.insert(
            &user,
            DeviceSession {
                device: device.clone(),
                conn_id: conn.id,
                sink: conn.clone(),
                pushes: pushes.clone(),
            },
        );
        if let Some(old) = registered.replaced {
            old.sink.send(MailboxEvent::Replaced);
        }
        // In a cluster, the user's owner announces its presence (it knows every node's devices).
        let announce = node.remote.get().is_none_or(|remote| remote.owns(&user));
        if registered.came_online && announce {
            node.presence.changed(&user, true, now_ms());
        }
        metrics::counter!(names::LOGINS, "result" => "ok").increment(1);
        metrics::gauge!(names::SESSIONS).increment(1.0);
        tracing::debug!(conn = conn.id, user = %user, device = %device, cursor = login.cursor, "logged in");

        let limits = &node.config.limits;
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            user: user.to_string(),
            device: device.to_string(),
            cursor: login.cursor,
            last_seq: login.last_seq,
            server_time_ms: now_ms(),
            node: node.config.node.id.clone(),
            max_frame_bytes: limits.max_frame_bytes,
            max_body_bytes: limits.max_body_bytes,
            idle_timeout_secs: limits.idle_timeout_secs,
            delivery_window: limits.delivery_window,
            frames_per_sec: limits.frames_per_sec,
            frame_burst: limits.frame_burst,
            peer_addrs: node.peer_addrs.current(),
        };
        let mut state = SessionState {
            node,
            conn,
            user,
            device,
            pushes,
            out: BytesMut::new(),
            flush_scheduled: false,
            waiting_writable: false,
            closing: false,
            delivery: Delivery::new(login.cursor),
            devices: login.devices,
            pending: HashMap::new(),
            next_tag: 0,
            watching: Vec::new(),
            token_issued_at,
        };
        state.send(crate::proto::v1::server_frame::Frame::Welcome(welcome));
        state.fetch(&myself);
        if !state.delivery.fetching() {
            state.after_handle(&myself);
        }
        // Otherwise the Welcome leaves with the mailbox's first answer (entries, or
        // QueueDrained): one write per login instead of two.
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.closing {
            return Ok(());
        }
        match message {
            SessionMsg::Inbound(frame) => state.inbound(&myself, frame),
            SessionMsg::InboundBatch(frames) => {
                for frame in frames {
                    if state.closing {
                        break;
                    }
                    state.inbound(&myself, frame);
                }
            }
            SessionMsg::RateLimited(frame) => state.rate_limited(frame.as_ref()),
            SessionMsg::Unsupported => state.send_error(
                ErrorCode::ProtocolViolation,
                "frame type not supported by this server",
                "",
            ),
            SessionMsg::Flooded => {
                // Its logins are refused for the delay the GoAway announces.
                let device = crate::connection::device_key(&state.user, &state.device);
                state
                    .node
                    .conns
                    .penalize(device, crate::clock::uptime_secs());
                state.go_away(
                    GoAwayReason::Flood,
                    crate::connection::FLOOD_PENALTY_SECS * 1000,
                    "flood",
                );
            }
            SessionMsg::Fatal { code, message } => state.fatal(code, &message),
            SessionMsg::PeerClosed(reason) => state.close(reason),
            SessionMsg::Flush => {
                state.flush_scheduled = false;
                state.waiting_writable = false;
                state.flush();
                // Deliveries paused by a full buffer resume once it drained.
                state.fetch(&myself);
            }
            SessionMsg::Event(event) => state.on_event(&myself, event),
            SessionMsg::GoAway {
                reason,
                reconnect_after_ms,
            } => state.go_away(reason, reconnect_after_ms, go_away_label(reason)),
            SessionMsg::RetryFetch => state.fetch(&myself),
            SessionMsg::Resync => {
                use crate::node::divert::Reregistration;
                let session = myself.clone();
                let done: Box<dyn FnOnce(Reregistration) + Send> = Box::new(move |outcome| {
                    let _ = session.cast(match outcome {
                        Reregistration::Settled => SessionMsg::Reregistered(true),
                        Reregistration::Failed => SessionMsg::Reregistered(false),
                        Reregistration::Revoked(revoked) => {
                            SessionMsg::Event(MailboxEvent::Revoked(revoked))
                        }
                    });
                });
                match state.node.remote.get() {
                    Some(remote) => remote.reregister(
                        &state.user,
                        &state.device,
                        state.conn.id,
                        state.token_issued_at,
                        done,
                    ),
                    None => done(Reregistration::Settled),
                }
                state.rewatch();
            }
            SessionMsg::Reregistered(settled) => {
                if !settled {
                    resync_after(&myself, RESYNC_RETRY_MS);
                }
                state.delivery.lost_pushes();
                state.fetch(&myself);
            }
        }
        if state.closing {
            myself.stop(None);
        } else {
            state.after_handle(&myself);
        }
        Ok(())
    }
}

impl SessionState {
    /// This session's reply address for the mailbox service: its connection.
    fn reply_to(&self) -> SessionHandle {
        self.conn.clone()
    }
}

/// How long a session waits before registering with its owner again after a failed try.
const RESYNC_RETRY_MS: u64 = 500;

/// Casts [`SessionMsg::Resync`] to the session after `millis`, without holding the actor.
fn resync_after(myself: &ActorRef<SessionMsg>, millis: u64) {
    let session = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        let _ = session.cast(SessionMsg::Resync);
    });
}

fn go_away_label(reason: GoAwayReason) -> &'static str {
    match reason {
        GoAwayReason::Unspecified => "go_away",
        GoAwayReason::Shutdown => "shutdown",
        GoAwayReason::SlowConsumer => "slow_consumer",
        GoAwayReason::Replaced => "replaced",
        GoAwayReason::Idle => "idle",
        GoAwayReason::Flood => "flood",
        GoAwayReason::Elsewhere => "elsewhere",
    }
}

impl Drop for SessionState {
    /// Undoes the login whatever ended the session (stop, failure or panic).
    fn drop(&mut self) {
        if std::thread::panicking() {
            metrics::counter!(names::SESSION_PANICS).increment(1);
            tracing::error!(conn = self.conn.id, user = %self.user, "session panicked");
        }
        let now = now_ms();
        let announce = self
            .node
            .remote
            .get()
            .is_none_or(|remote| remote.owns(&self.user));
        if self.node.registry.remove(&self.user, self.conn.id) && announce {
            self.node.presence.changed(&self.user, false, now);
        }
        if let Some(remote) = self.node.remote.get() {
            remote.logged_out(&self.user, self.conn.id);
        }
        self.unwatch_all();
        metrics::gauge!(names::SESSIONS).decrement(1.0);
        self.conn.close();
    }
}
