//! The reader task of one connection: waits for the socket, decodes frames (length checked before
//! allocating), handles Login, rate-limits, and casts every later frame to the session actor.
//!
//! It also waits for writability on the session's behalf, and it is the last owner of the
//! socket: it exits only after the connection is closed, then removes it from the table.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use ractor::{Actor, ActorRef};
use tokio::io::Interest;
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::clock::{now_secs, uptime_secs};
use crate::connection::{Conn, device_key, per_ip};
use crate::frame::{self, FrameError};
use crate::limits::{Refused, SourceKey};
use crate::logging::throttle::Throttle;
use crate::metrics as names;
use crate::node::Node;
use crate::proto::PROTOCOL_VERSION;
use crate::proto::v1::{ClientFrame, ErrorCode, Login, client_frame::Frame};
use crate::session::{Session, SessionArgs, SessionError, SessionMsg, wire};
use crate::token::TokenError;

/// Bytes read per `read(2)` when a frame's size is not known yet.
const READ_CHUNK: usize = 4096;
/// Reads per wakeup before yielding to other connections.
const READS_PER_WAKEUP: usize = 16;
/// How long a closed connection waits for the phone's FIN before dropping the socket (dropping
/// with unread input would reset the connection and could destroy the final error frame).
const LINGER: Duration = Duration::from_secs(2);
/// Most input a closed connection discards while it lingers. A phone has nothing to say after
/// its connection was closed; a flooder refused at login keeps writing, and draining it for the
/// whole linger cost every refused reconnect thousands of reads on the runtime's workers (a
/// chatting pair's p99 rose 3-5x under such churn). Past this the socket is dropped.
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// The message of the `OVERLOADED` error that ends a connection not logged in (or logging in)
/// while the node shuts down.
pub(crate) const SHUTTING_DOWN: &str = "server shutting down";

/// Lines per second about refused logins, for the whole process. Refusals come in floods (a
/// phone retrying a stale token, a reconnect storm at shutdown): past this the lines are
/// dropped, and the next one says how many (`suppressed`). `tern_logins_total{result}` counts
/// every refusal whatever is logged.
const REFUSED_LOGIN_LINES_PER_SEC: u32 = 10;

/// The throttle of refused logins' lines, shared by every connection.
static REFUSED_LOGIN_LINES: Throttle = Throttle::new(REFUSED_LOGIN_LINES_PER_SEC);

/// Why the reader stops reading.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Eof,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Token bucket for frames per second, refilled once per coarse second.
struct RateLimit {
    tokens: u32,
    refused: u32,
    refilled_at: u32,
}

impl RateLimit {
    fn new(burst: u32) -> Self {
        Self {
            tokens: burst,
            refused: 0,
            refilled_at: uptime_secs(),
        }
    }

    /// True when a frame may pass now.
    fn admit(&mut self, rate: u32, burst: u32) -> bool {
        let now = uptime_secs();
        if now != self.refilled_at {
            let elapsed = now.saturating_sub(self.refilled_at);
            self.tokens = self
                .tokens
                .saturating_add(rate.saturating_mul(elapsed))
                .min(burst.max(rate));
            self.refilled_at = now;
            self.refused = 0;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

/// The admitted frames of one read, cast to the session as one actor message: one frame as
/// [`SessionMsg::Inbound`], several as [`SessionMsg::InboundBatch`]. Lives on the stack of a
/// synchronous function, so it does not grow the reader task's state.
enum Batch {
    Empty,
    One(Frame),
    Many(Vec<Frame>),
}

impl Batch {
    fn push(&mut self, frame: Frame) {
        // Acks are cumulative: an ack right after another one replaces it, so a burst of acks
        // reaches the session as one cursor move.
        if let Frame::Ack(ack) = &frame {
            let last = match self {
                Batch::One(last) => Some(last),
                Batch::Many(frames) => frames.last_mut(),
                Batch::Empty => None,
            };
            if let Some(Frame::Ack(last)) = last {
                last.up_to_seq = last.up_to_seq.max(ack.up_to_seq);
                return;
            }
        }
        *self = match std::mem::replace(self, Batch::Empty) {
            Batch::Empty => Batch::One(frame),
            Batch::One(first) => Batch::Many(vec![first, frame]),
            Batch::Many(mut frames) => {
                frames.push(frame);
                Batch::Many(frames)
            }
        };
    }

    /// Casts what is gathered, leaving the batch empty.
    fn send(&mut self, session: &ActorRef<SessionMsg>) {
        let _ = match std::mem::replace(self, Batch::Empty) {
            Batch::Empty => return,
            Batch::One(frame) => session.cast(SessionMsg::Inbound(frame)),
            Batch::Many(frames) => session.cast(SessionMsg::InboundBatch(frames)),
        };
    }
}

struct Reader {
    node: Arc<Node>,
    conn: Arc<Conn>,
    buf: Option<BytesMut>,
    session: Option<ActorRef<SessionMsg>>,
    reading: bool,
    rate: RateLimit,
    /// The phone's source address, as the per-address limits count it.
    source: SourceKey,
}

/// Starts the reader task of an accepted connection, inside the connection's span when spans are
/// on. Two spawns rather than one future that may hold a span: each task's cell is sized for its
/// own future, so a connection pays for a span only when there is one.
pub fn spawn(node: Arc<Node>, conn: Arc<Conn>, source: SourceKey) {
    match span(&conn) {
        Some(span) => drop(tokio::spawn(serve(node, conn, source).instrument(span))),
        None => drop(tokio::spawn(serve(node, conn, source))),
    }
}

/// The connection's span: `conn`, the phone's `ip` and `port`, and `user` and `device` once
/// logged in. At debug level: a span per connection held by the subscriber costs per-phone
/// memory, so at the default `info` filter there is none (`RUST_LOG=tern=debug` turns them on);
/// the peer's address is looked up only when the span is on.
fn span(conn: &Conn) -> Option<tracing::Span> {
    let span = tracing::debug_span!(
        "conn",
        conn = conn.id,
        ip = Empty,
        port = Empty,
        user = Empty,
        device = Empty
    );
    if span.is_disabled() {
        return None;
    }
    if let Ok(peer) = conn.stream.peer_addr() {
        span.record("ip", display(peer.ip()));
        span.record("port", peer.port());
    }
    Some(span)
}

/// Serves one accepted connection from `source` (counted by [`per_ip::admit`]) until it is
/// closed. Not an `async fn`: an async fn's task keeps its arguments beside the reader built
/// from them (16 bytes more per phone); the `async move` block below holds the reader alone.
pub fn serve(node: Arc<Node>, conn: Arc<Conn>, source: SourceKey) -> impl Future<Output = ()> {
    let burst = node.config.limits.frame_burst;
    let mut reader = Reader {
        node,
        conn,
        buf: None,
        session: None,
        reading: true,
        rate: RateLimit::new(burst),
        source,
    };
    async move {
        if reader.node.shutdown.is_cancelled() {
            // Accepted during the shutdown's drain: told at once, as every connection that had
            // not logged in when it began (see `Server::shutdown`).
            write_error_and_close(&reader.conn, ErrorCode::Overloaded, SHUTTING_DOWN);
        }
        reader.run().await;
        reader.linger().await;
        let Reader {
            node, conn, source, ..
        } = reader;
        node.conns.remove(conn.id);
        per_ip::release(&node, source);
        metrics::gauge!(names::CONNECTIONS).decrement(1.0);
    }
}

impl Reader {
    async fn run(&mut self) {
        let conn = self.conn.clone();
        while !conn.is_closed() {
            if self.reading && conn.has_buffered_input() {
                // Decrypted input the socket's readiness no longer announces.
                if let Err(error) = self.read_available().await {
                    self.stop_reading(error);
                }
                continue;
            }
            // Before login only TLS writes wait for the socket (handshake messages).
            let want_write = conn.want_write.load(Ordering::Acquire)
                && (self.session.is_some() || conn.is_tls());
            let interest = match (self.reading, want_write) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, true) => Interest::WRITABLE,
                (false, false) => {
                    conn.wake.notified().await;
                    continue;
                }
            };
            let ready = tokio::select! {
                () = conn.wake.notified() => continue,
                ready = conn.stream.ready(interest) => ready,
            };
            let ready = match ready {
                Ok(ready) => ready,
                Err(error) => {
                    self.stop_reading(ReadError::Io(error));
                    continue;
                }
            };
            if ready.is_writable() && conn.want_write.swap(false, Ordering::AcqRel) {
                match conn.flush_pending() {
                    Ok(true) => {
                        if let Some(session) = &self.session {
                            let _ = session.cast(SessionMsg::Flush);
                        }
                    }
                    Ok(false) => conn.want_write.store(true, Ordering::Release),
                    Err(error) => {
                        self.stop_reading(ReadError::Io(error));
                        continue;
                    }
                }
            }
            if self.reading
                && (ready.is_readable() || ready.is_read_closed())
                && let Err(error) = self.read_available().await
            {
                self.stop_reading(error);
            }
        }
    }

    /// Reads and handles every frame the socket has now.
    async fn read_available(&mut self) -> Result<(), ReadError> {
        let max = self.node.config.limits.max_frame_bytes;
        for _ in 0..READS_PER_WAKEUP {
            let buf = self
                .buf
                .get_or_insert_with(|| BytesMut::with_capacity(READ_CHUNK));
            // The buffer grows with what arrives (doubling, and never past the end of the frame
            // under way, whatever its prefix announces), so a frame that stalls half-way holds
            // about the bytes it sent.
            if buf.capacity() == buf.len() {
                let doubling = READ_CHUNK.max(buf.len());
                let missing = frame::missing_bytes(buf).unwrap_or(READ_CHUNK);
                buf.reserve(doubling.min(missing.max(READ_CHUNK)));
            }
            let (read, drained) = match self.conn.try_read_drained(buf) {
                Ok((0, _)) => return Err(ReadError::Eof),
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error.into()),
            };
            self.node.metrics.bytes_in.increment(read as u64);
            self.conn.touch();
            while let Some(buf) = self.buf.as_mut() {
                if let Some(session) = self.session.clone() {
                    // Logged in: every complete frame of this read goes to the session.
                    let held = buf.len();
                    let mut batch = Batch::Empty;
                    let result = self.dispatch(&session, &mut batch, max);
                    batch.send(&session);
                    result?;
                    // Frames split off shorten the buffer: then a frame completed, and what is
                    // left (if anything) is a frame that began with this read.
                    let left = self.buf.as_ref().map_or(0, BytesMut::len);
                    self.conn.set_partial(left > 0, left < held);
                    break;
                }
                let Some(payload) = frame::split_frame(buf, max)? else {
                    break;
                };
                self.node.metrics.frames_in.increment(1);
                let client_frame: ClientFrame = frame::decode(payload)?;
                self.first_frame(client_frame).await?;
                if !self.reading || self.conn.is_closed() {
                    return Ok(());
                }
            }
            if !self.reading || self.conn.is_closed() {
                return Ok(());
            }
            if drained {
                break;
            }
        }
        // An idle connection keeps no read buffer.
        if self.buf.as_ref().is_some_and(BytesMut::is_empty) {
            self.buf = None;
        }
        Ok(())
    }

    /// A frame before login: it must be a Login (see [`Reader::login`]).
    async fn first_frame(&mut self, client_frame: ClientFrame) -> Result<(), ReadError> {
        let Some(frame) = client_frame.frame else {
            return Err(FrameError::Empty.into());
        };
        // Boxed: the login future (it spawns the session) is large and would otherwise size
        // this task's state for the connection's whole life.
        Box::pin(self.login(frame)).await;
        Ok(())
    }

    /// Splits every complete frame off the read buffer and hands it to the session: admitted
    /// frames gather in `batch` (the caller casts what is left in it), and anything else the
    /// session must hear casts the batch first, so the session sees everything in order.
    fn dispatch(
        &mut self,
        session: &ActorRef<SessionMsg>,
        batch: &mut Batch,
        max: u32,
    ) -> Result<(), ReadError> {
        let limits = &self.node.config.limits;
        while self.reading && !self.conn.is_closed() {
            let Some(buf) = self.buf.as_mut() else {
                break;
            };
            let Some(payload) = frame::split_frame(buf, max)? else {
                break;
            };
            self.node.metrics.frames_in.increment(1);
            let client_frame: ClientFrame = frame::decode(payload)?;
            // Every frame takes a token, whatever its case (empty and unknown ones included),
            // except an ack of something delivered and not acked before: those are bounded by
            // what the session wrote, and a fast reader's acks stay cheap.
            let free = match &client_frame.frame {
                Some(Frame::Ack(ack)) => self.conn.free_ack(ack.up_to_seq),
                _ => false,
            };
            if !free && !self.rate.admit(limits.frames_per_sec, limits.frame_burst) {
                batch.send(session);
                if self.rate.refused > limits.frame_burst {
                    metrics::counter!(names::ERRORS, "kind" => "flood").increment(1);
                    let _ = session.cast(SessionMsg::Flooded);
                    self.reading = false;
                } else {
                    metrics::counter!(names::ERRORS, "kind" => "rate_limited").increment(1);
                    let _ = session.cast(SessionMsg::RateLimited(client_frame.frame));
                }
                continue;
            }
            match client_frame.frame {
                Some(frame) => batch.push(frame),
                None => {
                    // A frame type this server does not know (a newer client): refuse it, stay
                    // open.
                    batch.send(session);
                    let _ = session.cast(SessionMsg::Unsupported);
                }
            }
        }
        Ok(())
    }

    /// Handles the first frame: it must be a Login with a valid token and version.
    async fn login(&mut self, frame: Frame) {
        let login = match frame {
            Frame::Login(login) => login,
            _ => {
                return self.refuse(
                    ErrorCode::ProtocolViolation,
                    "the first frame must be Login",
                    "protocol",
                );
            }
        };
        if let Err(refused) = self.node.abuse.admit_login(self.source) {
            return self.refuse_abuse(&refused);
        }
        match self.check_login(&login) {
            Ok(claims) => {
                let device = device_key(&claims.user, &claims.device);
                if self.node.conns.penalty_secs(device, uptime_secs()) > 0 {
                    // Cut for flooding moments ago: the GoAway's delay has not passed.
                    return self.refuse(
                        ErrorCode::RateLimited,
                        "flooding: reconnect after the delay the GoAway gave",
                        "flood_penalty",
                    );
                }
                if let Some(home) = self
                    .node
                    .remote
                    .get()
                    .and_then(|remote| remote.home_elsewhere(&claims.user))
                {
                    return self.send_home(home);
                }
                record_login(&claims);
                let args = SessionArgs {
                    node: self.node.clone(),
                    conn: self.conn.clone(),
                    user: claims.user.into(),
                    device: claims.device.into(),
                    resume_after: login.resume_after,
                    token_issued_at: claims.issued_at,
                };
                match Actor::spawn(None, Session, args).await {
                    Ok((session, _)) => self.session = Some(session),
                    Err(error) => match revoked(&error) {
                        Some(revoked) => {
                            self.refuse(ErrorCode::TokenRevoked, &revoked.to_string(), "revoked");
                        }
                        None => {
                            tracing::warn!(conn = self.conn.id, %error, "session did not start");
                            self.refuse(
                                ErrorCode::Overloaded,
                                "server busy, retry later",
                                "overloaded",
                            );
                        }
                    },
                }
            }
            Err((code, message, result)) => self.refuse(code, message, result),
        }
    }

    fn check_login(
        &self,
        login: &Login,
    ) -> Result<crate::token::Claims, (ErrorCode, &'static str, &'static str)> {
        if login.protocol_version != PROTOCOL_VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                "unsupported protocol version; this server speaks 1",
                "bad_version",
            ));
        }
        if self.node.shutdown.is_cancelled() {
            return Err((ErrorCode::Overloaded, SHUTTING_DOWN, "shutting_down"));
        }
        self.node
            .token_key
            .verify(&login.token, now_secs())
            .map_err(|error| match error {
                TokenError::Expired => (ErrorCode::TokenExpired, "token expired", "expired"),
                TokenError::UnknownKey(_) => (
                    ErrorCode::Unauthenticated,
                    "invalid token: signed with a key this server does not accept",
                    "bad_token",
                ),
                _ => (ErrorCode::Unauthenticated, "invalid token", "bad_token"),
            })
    }

    /// Before login: sends a phone homed in another datacenter there (GoAway ELSEWHERE with
    /// that datacenter's addresses, reconnect at once) and closes.
    fn send_home(&mut self, mut home: Vec<String>) {
        // Spread over the home's nodes.
        let turn = self.conn.id as usize % home.len().max(1);
        home.rotate_left(turn);
        use crate::proto::v1::{GoAway, GoAwayReason, server_frame::Frame as Out};
        log_refusal(&self.conn, "homed in another datacenter", "elsewhere");
        metrics::counter!(names::LOGINS, "result" => "elsewhere").increment(1);
        let mut out = BytesMut::new();
        let go_away = GoAway {
            reason: GoAwayReason::Elsewhere.into(),
            reconnect_after_ms: 0,
            message: "homed in another datacenter".to_owned(),
            alternate_addrs: home,
        };
        frame::encode(&wire::server_frame(Out::GoAway(go_away)), &mut out);
        if self.conn.close_with(&out) {
            metrics::counter!(names::DISCONNECTS, "reason" => "elsewhere").increment(1);
        }
        self.reading = false;
    }

    /// Before login: answers with an error frame and closes.
    fn refuse(&mut self, code: ErrorCode, message: &str, result: &'static str) {
        log_refusal(&self.conn, message, result);
        metrics::counter!(names::LOGINS, "result" => result).increment(1);
        write_error_and_close(&self.conn, code, message);
        self.reading = false;
    }

    /// Before login: refuses a login over its address's rate with the error frame that tells
    /// the delay, and closes.
    fn refuse_abuse(&mut self, refused: &Refused) {
        log_refusal(
            &self.conn,
            "too many logins from this address",
            "logins_per_ip",
        );
        metrics::counter!(names::LOGINS, "result" => "logins_per_ip").increment(1);
        per_ip::refuse_and_close(&self.conn, refused);
        self.reading = false;
    }

    /// Stops reading after EOF, a socket error or a bad frame; tells the session why.
    fn stop_reading(&mut self, error: ReadError) {
        self.reading = false;
        let (code, kind) = match &error {
            ReadError::Frame(FrameError::TooLarge { .. }) => {
                (Some(ErrorCode::FrameTooLarge), "frame_too_large")
            }
            ReadError::Frame(FrameError::Decode(_) | FrameError::Empty) => {
                (Some(ErrorCode::BadFrame), "bad_frame")
            }
            ReadError::Eof => (None, "peer_closed"),
            ReadError::Io(_) => (None, "socket_error"),
        };
        if code.is_some() {
            metrics::counter!(names::ERRORS, "kind" => kind).increment(1);
            tracing::debug!(conn = self.conn.id, %error, "refusing connection input");
        }
        match (&self.session, code) {
            (Some(session), Some(code)) => {
                let _ = session.cast(SessionMsg::Fatal {
                    code,
                    message: error.to_string(),
                });
            }
            (Some(session), None) => {
                let _ = session.cast(SessionMsg::PeerClosed(kind));
            }
            (None, Some(code)) => write_error_and_close(&self.conn, code, &error.to_string()),
            (None, None) => {
                metrics::counter!(names::DISCONNECTS, "reason" => kind).increment(1);
                self.conn.close();
            }
        }
    }

    /// After close: waits briefly for the phone's FIN, discarding input (at most
    /// [`LINGER_MAX_BYTES`]), so that dropping the socket does not reset it while the last frames
    /// are still in flight.
    async fn linger(&mut self) {
        self.buf = None;
        let conn = &self.conn;
        let drain = async {
            let mut scratch = vec![0u8; 4096];
            let mut discarded = 0;
            loop {
                if conn.stream.readable().await.is_err() {
                    return;
                }
                match conn.stream.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(read) => {
                        discarded += read;
                        if discarded >= LINGER_MAX_BYTES {
                            metrics::counter!(names::ERRORS, "kind" => "linger_overflow")
                                .increment(1);
                            return;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, Box::pin(drain)).await;
    }
}

/// Logs a refused login at info, with its result, its reason and the phone's `ip` and `port`,
/// within [`REFUSED_LOGIN_LINES_PER_SEC`]; after lines were dropped, the next one carries
/// `suppressed` (how many). The connection's span exists only at debug, so the line names the
/// peer itself; the address is looked up only for a line that is written, as a flood of
/// refusals would otherwise pay a system call each for lines nobody sees.
fn log_refusal(conn: &Conn, reason: &str, result: &'static str) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let Some(suppressed) = REFUSED_LOGIN_LINES.admit(uptime_secs()) else {
        return;
    };
    let peer = conn.stream.peer_addr().ok();
    tracing::info!(
        result,
        reason,
        ip = peer.map(|peer| display(peer.ip())),
        port = peer.map(|peer| peer.port()),
        suppressed = (suppressed > 0).then_some(suppressed),
        "login refused"
    );
}

/// The revocation that refused a session's start, if that is why it did not start.
fn revoked(error: &ractor::SpawnErr) -> Option<crate::mailbox::revocation::Revoked> {
    match error {
        ractor::SpawnErr::StartupFailed(cause) => match cause.downcast_ref::<SessionError>() {
            Some(SessionError::Revoked(revoked)) => Some(*revoked),
            _ => None,
        },
        _ => None,
    }
}

/// Names the logged-in user and device in the connection's span.
fn record_login(claims: &crate::token::Claims) {
    let span = tracing::Span::current();
    span.record("user", claims.user.as_str());
    span.record("device", claims.device.as_str());
}

/// Writes one error frame (best effort: the socket is fresh, so it fits) and closes; does
/// nothing if the connection was closed already (it had its last frame).
pub(crate) fn write_error_and_close(conn: &Conn, code: ErrorCode, message: &str) {
    let mut out = BytesMut::new();
    frame::encode(
        &wire::server_frame(wire::error(code, message, "")),
        &mut out,
    );
    if conn.close_with(&out) {
        metrics::counter!(names::DISCONNECTS, "reason" => wire::error_kind(code)).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// Every connection's reader task lives as long as the connection; its future's size is
    /// per-phone memory. Large, rarely used futures (login, linger) are boxed to keep it small.
    #[tokio::test]
    async fn reader_task_state_stays_small() {
        fn size_of_future<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let mut config = crate::config::Config::load(&path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        config.node.data_dir = dir.path().to_owned();
        let (config, storage, media) = tokio::task::spawn_blocking(move || {
            let storage = crate::mailbox::Storage::open(&config).unwrap();
            let media = crate::media::Media::open(&config).unwrap();
            (config, storage, media)
        })
        .await
        .unwrap();
        let (node, _workers) =
            crate::node::Node::start(config, storage, media, crate::tls::TlsContext::plain());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let conn = Arc::new(super::Conn::new(1, stream));
        let source = crate::limits::SourceKey::of([127, 0, 0, 1].into());
        let reader = super::serve(node, conn, source);
        let size = size_of_future(&reader);
        // tokio rounds a task's cell (header, this future, trailer) up to 128 bytes: at 416
        // bytes the cell took one more step, 128 bytes more per phone (heaptrack, idle).
        assert!(size <= 408, "reader future grew to {size} bytes");
    }
}
