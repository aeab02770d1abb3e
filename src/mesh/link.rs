//! One link to one peer, once its handshake is done: the shared `Link` (lanes, pending calls,
//! counters) that callers queue frames on, and `drive`, the link's task. The task runs three
//! loops over the split stream until one ends: the writer (drains the lanes in priority order,
//! one `write_all` per batch), the reader (decodes frames, answers heartbeats, completes calls,
//! runs inbound calls in a bounded set of tasks it owns) and the heartbeat (keeps an idle link
//! alive, measures RTT, closes a link that went silent).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::calls::{PendingCalls, Waiter};
use super::config::{MAX_CALLS_IN_FLIGHT, MAX_FRAME_BYTES, WRITE_BATCH_BYTES};
use super::error::{CallError, CastError, FrameError};
use super::lanes::{Lane, LaneReceivers, Lanes};
use super::telemetry::LinkTelemetry;
use super::{Handlers, NodeId, frame};
use crate::proto::mesh::{
    self as wire, Failure, Heartbeat, HeartbeatReply, MeshFrame, mesh_frame::Kind, reply,
};

/// The largest payload of a call, reply or cast: a frame's maximum less room for its fields.
const MAX_PAYLOAD_BYTES: usize = MAX_FRAME_BYTES - 64;
/// Read buffer headroom kept before each read.
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer that grew beyond this (one huge frame) is given back after its write.
const KEEP_WRITE_BUFFER: usize = 4 * WRITE_BATCH_BYTES;

/// The shared side of one link.
#[derive(Debug)]
pub(crate) struct Link {
    /// Unique within the mesh, so a link that ends removes only itself from its peer's slot.
    pub(crate) id: u64,
    pub(crate) peer: NodeId,
    /// The node that dialed this link (decides which of two links to one peer stays).
    pub(crate) dialed_by: NodeId,
    /// The peer's address as seen on this link.
    pub(crate) addr: String,
    lanes: Lanes,
    pub(crate) calls: PendingCalls,
    close: CancellationToken,
    started: Instant,
    up: AtomicBool,
    last_in_us: AtomicU64,
    last_out_us: AtomicU64,
    heartbeat_queued_us: AtomicU64,
    rtt_us: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    writes: AtomicU64,
    dropped: AtomicU64,
    call_timeouts: AtomicU64,
    late_replies: AtomicU64,
    pub(crate) telemetry: LinkTelemetry,
}

/// What a link's counters show, for `Mesh::links`.
#[derive(Clone, Debug, Default)]
pub struct LinkCounters {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// write calls on the socket (frames out / writes is the coalescing factor).
    pub writes: u64,
    /// Casts dropped and calls refused because a lane was full.
    pub dropped: u64,
    /// Calls that got no reply within their deadline.
    pub call_timeouts: u64,
    /// Replies that arrived after their call's deadline (discarded).
    pub late_replies: u64,
    /// Calls waiting for a reply now.
    pub pending_calls: u64,
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkEnd {
    #[error("peer closed the link")]
    PeerClosed,
    #[error("closed by this node")]
    Closed,
    #[error("no frame from the peer for {0:?}")]
    Silent(Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl Link {
    pub(crate) fn new(
        id: u64,
        peer: NodeId,
        dialed_by: NodeId,
        addr: String,
        lane_capacity: [usize; 3],
        close: CancellationToken,
        peer_label: &str,
    ) -> (Arc<Link>, LaneReceivers) {
        let (lanes, receivers) = Lanes::new(lane_capacity);
        let link = Link {
            id,
            peer,
            dialed_by,
            addr,
            lanes,
            calls: PendingCalls::default(),
            close,
            started: Instant::now(),
            up: AtomicBool::new(false),
            last_in_us: AtomicU64::new(0),
            last_out_us: AtomicU64::new(0),
            heartbeat_queued_us: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            call_timeouts: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            telemetry: LinkTelemetry::new(peer_label, peer),
        };
        (Arc::new(link), receivers)
    }

    /// Microseconds since the link was made (the clock of heartbeats and liveness).
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Marks the link up (under its peer's slot lock, see `Peer::install`).
    pub(crate) fn mark_up(&self) {
        self.up.store(true, Ordering::Release);
        self.telemetry.up.set(1.0);
    }

    /// Marks the link down and fails its pending calls with `error` (its gauges are reset by
    /// `Peer::uninstall`, which knows whether another link replaced it).
    pub(crate) fn mark_down(&self, error: &CallError) {
        self.up.store(false, Ordering::Release);
        self.calls.close(error);
        self.close.cancel();
    }

    /// Asks the link's task to end.
    pub(crate) fn close(&self) {
        self.close.cancel();
    }

    /// When the peer was last heard on this link (the link's start before its first frame).
    pub(crate) fn last_heard(&self) -> Instant {
        self.started + Duration::from_micros(self.last_in_us.load(Ordering::Relaxed))
    }

    /// How long the link has existed.
    pub(crate) fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Smoothed round-trip time, once a heartbeat came back.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub(crate) fn lane_depths(&self) -> [usize; 3] {
        self.lanes.depths()
    }

    pub(crate) fn counters(&self) -> LinkCounters {
        LinkCounters {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            call_timeouts: self.call_timeouts.load(Ordering::Relaxed),
            late_replies: self.late_replies.load(Ordering::Relaxed),
            pending_calls: self.calls.len() as u64,
        }
    }

    /// Sets the lane depth gauges (after each write, and at each heartbeat tick so that a
    /// stalled link's full lanes show).
    fn publish_depths(&self) {
        if !self.is_up() {
            return;
        }
        for (gauge, depth) in self.telemetry.lane_depth.iter().zip(self.lanes.depths()) {
            gauge.set(depth as f64);
        }
    }

    fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.telemetry.dropped.increment(1);
    }

    /// Counts a call whose deadline passed.
    pub(crate) fn count_timeout(&self) {
        self.call_timeouts.fetch_add(1, Ordering::Relaxed);
        self.telemetry.call_timeouts.increment(1);
    }

    /// Queues a call; the caller then waits on the returned waiter until its deadline.
    pub(crate) fn start_call(
        &self,
        lane: Lane,
        service: u32,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<(u64, Waiter), CallError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(CallError::TooLarge);
        }
        let Some((id, waiter)) = self.calls.register() else {
            return Err(CallError::LinkDown);
        };
        let wire_lane = match lane {
            Lane::Consensus => wire::Lane::Consensus,
            Lane::Call | Lane::Cast => wire::Lane::Call,
        };
        let frame = frame::encode(&MeshFrame {
            kind: Some(Kind::Call(wire::Call {
                id,
                service,
                deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
                payload,
                lane: wire_lane as i32,
            })),
        });
        if self.lanes.push(lane, frame).is_err() {
            self.calls.forget(id);
            self.count_dropped();
            return Err(if self.is_up() {
                CallError::LaneFull
            } else {
                CallError::LinkDown
            });
        }
        Ok((id, waiter))
    }

    /// Queues a cast, or drops and counts it.
    pub(crate) fn cast(&self, service: u32, payload: Bytes) -> Result<(), CastError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(CastError::TooLarge);
        }
        let frame = frame::encode(&MeshFrame {
            kind: Some(Kind::Cast(wire::Cast { service, payload })),
        });
        if self.lanes.push(Lane::Cast, frame).is_err() {
            self.count_dropped();
            return Err(if self.is_up() {
                CastError::LaneFull
            } else {
                CastError::LinkDown
            });
        }
        Ok(())
    }

    /// Queues a control frame or a reply; if its lane is full it is dropped and counted (the
    /// caller's deadline covers a lost reply).
    fn push_or_drop(&self, lane: Lane, kind: Kind) {
        if self
            .lanes
            .push(lane, frame::encode(&MeshFrame { kind: Some(kind) }))
            .is_err()
        {
            self.count_dropped();
        }
    }
}

/// Link timings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    pub(crate) heartbeat: Duration,
    pub(crate) dead_after: Duration,
}

/// Runs the link until the peer goes away, the link is closed, or it fails.
pub(crate) async fn drive<S>(
    link: Arc<Link>,
    stream: S,
    leftover: BytesMut,
    receivers: LaneReceivers,
    handlers: Arc<Handlers>,
    timings: Timings,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let close = link.close.clone();
    tokio::select! {
        biased;
        () = close.cancelled() => LinkEnd::Closed,
        end = write_loop(&link, writer, receivers) => end,
        end = read_loop(&link, reader, leftover, &handlers) => end,
        end = heartbeat_loop(&link, timings) => end,
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    link: &Link,
    mut writer: W,
    mut receivers: LaneReceivers,
) -> LinkEnd {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    loop {
        buf.clear();
        let frames = receivers.fill(&mut buf, WRITE_BATCH_BYTES).await;
        if frames == 0 {
            return LinkEnd::Closed;
        }
        if let Err(err) = writer.write_all(&buf).await {
            return err.into();
        }
        if let Err(err) = writer.flush().await {
            return err.into();
        }
        link.last_out_us.store(link.now_us(), Ordering::Relaxed);
        link.writes.fetch_add(1, Ordering::Relaxed);
        link.frames_out.fetch_add(frames as u64, Ordering::Relaxed);
        link.bytes_out
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        link.telemetry.frames_out.increment(frames as u64);
        link.telemetry.bytes_out.increment(buf.len() as u64);
        link.publish_depths();
        if buf.capacity() > KEEP_WRITE_BUFFER {
            buf = BytesMut::with_capacity(WRITE_BATCH_BYTES);
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    link: &Arc<Link>,
    mut reader: R,
    mut buf: BytesMut,
    handlers: &Arc<Handlers>,
) -> LinkEnd {
    // Inbound calls run here, owned by this loop: they end with the link.
    let mut calls = Inbound::default();
    loop {
        loop {
            match frame::decode(&mut buf, MAX_FRAME_BYTES) {
                Ok(Some(frame)) => {
                    link.frames_in.fetch_add(1, Ordering::Relaxed);
                    link.telemetry.frames_in.increment(1);
                    if let Err(end) = on_frame(link, frame, handlers, &mut calls) {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(err) => return err.into(),
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            // Finished handlers first: reaping them is cheap, and a busy stream must not leave
            // them holding places among the calls in flight.
            biased;
            Some(done) = calls.set.join_next(), if !calls.set.is_empty() => {
                match done {
                    Ok(lane) => calls.finished(lane),
                    Err(err) => {
                        // A panicked (or aborted) handler's lane is not known: recount.
                        calls.recount();
                        if err.is_panic() {
                            tracing::error!(peer = link.peer, "mesh call handler panicked");
                        }
                    }
                }
            }
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => return LinkEnd::PeerClosed,
                // A TLS peer that dropped the link (a duplicate it closed, say) without a
                // close_notify: closed all the same, frames being whole or not at all.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return LinkEnd::PeerClosed;
                }
                Ok(n) => {
                    link.last_in_us.store(link.now_us(), Ordering::Relaxed);
                    link.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    link.telemetry.bytes_in.increment(n as u64);
                }
                Err(err) => return err.into(),
            },
        }
    }
}

/// The inbound calls of a link in flight, counted per lane: the consensus lane has a budget of
/// its own, so mailbox calls filling theirs never refuse a vote or an append.
#[derive(Default)]
struct Inbound {
    set: JoinSet<Lane>,
    call: usize,
    consensus: usize,
}

impl Inbound {
    fn count(&mut self, lane: Lane) -> &mut usize {
        match lane {
            Lane::Consensus => &mut self.consensus,
            _ => &mut self.call,
        }
    }

    fn finished(&mut self, lane: Lane) {
        let count = self.count(lane);
        *count = count.saturating_sub(1);
    }

    /// After a handler panicked: the set's size is the truth, the split is kept as it was.
    fn recount(&mut self) {
        let total = self.set.len();
        self.consensus = self.consensus.min(total);
        self.call = total - self.consensus;
    }
}

fn on_frame(
    link: &Arc<Link>,
    frame: MeshFrame,
    handlers: &Arc<Handlers>,
    calls: &mut Inbound,
) -> Result<(), LinkEnd> {
    match frame.kind {
        Some(Kind::Heartbeat(Heartbeat { sent_us })) => {
            link.push_or_drop(
                Lane::Consensus,
                Kind::HeartbeatReply(HeartbeatReply { sent_us }),
            );
        }
        Some(Kind::HeartbeatReply(HeartbeatReply { sent_us })) => {
            let sample = link.now_us().saturating_sub(sent_us).max(1);
            let old = link.rtt_us.load(Ordering::Relaxed);
            // EWMA with weight 1/8, as TCP's smoothed RTT.
            let smoothed = if old == 0 {
                sample
            } else {
                (old * 7 + sample) / 8
            };
            link.rtt_us.store(smoothed.max(1), Ordering::Relaxed);
        }
        Some(Kind::Call(call)) => on_call(link, call, handlers, calls),
        Some(Kind::Reply(reply)) => {
            let result = match reply.result {
                Some(reply::Result::Ok(payload)) => Ok(payload),
                Some(reply::Result::Error(error)) => Err(match error.failure() {
                    Failure::NoHandler => CallError::NoHandler,
                    Failure::Busy => CallError::Remote("busy".to_owned()),
                    Failure::Handler => CallError::Remote(error.message),
                }),
                None => Err(CallError::Remote("empty reply".to_owned())),
            };
            if !link.calls.complete(reply.id, result) {
                link.late_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Kind::Cast(cast)) => match handlers.get(cast.service) {
            Some(handler) => {
                // A handler's bug must not take the link (and every other service's traffic)
                // down with it.
                let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.cast(link.peer, cast.payload);
                }));
                if delivered.is_err() {
                    tracing::error!(
                        peer = link.peer,
                        service = cast.service,
                        "mesh cast handler panicked"
                    );
                }
            }
            None => tracing::debug!(
                peer = link.peer,
                service = cast.service,
                "mesh cast for a service without handler dropped"
            ),
        },
        Some(Kind::Hello(_) | Kind::Proof(_) | Kind::Refused(_)) | None => {
            return Err(LinkEnd::Protocol(
                "handshake or empty frame on an open link",
            ));
        }
    }
    Ok(())
}

fn on_call(link: &Arc<Link>, call: wire::Call, handlers: &Arc<Handlers>, calls: &mut Inbound) {
    let lane = match call.lane() {
        wire::Lane::Consensus => Lane::Consensus,
        wire::Lane::Call => Lane::Call,
    };
    let id = call.id;
    let fail = |failure: Failure, message: &str| {
        Kind::Reply(wire::Reply {
            id,
            result: Some(reply::Result::Error(wire::CallError {
                failure: failure as i32,
                message: message.to_owned(),
            })),
        })
    };
    let Some(handler) = handlers.get(call.service) else {
        link.push_or_drop(lane, fail(Failure::NoHandler, ""));
        return;
    };
    if *calls.count(lane) >= MAX_CALLS_IN_FLIGHT {
        link.push_or_drop(lane, fail(Failure::Busy, "busy"));
        return;
    }
    let deadline = Duration::from_millis(u64::from(call.deadline_ms));
    // The handler is entered here, in the order the calls arrive, so whatever it does before
    // its first await (a mailbox append queues its job on the worker) keeps that order; a
    // panic in it fails this call only.
    let peer = link.peer;
    let payload = call.payload;
    let work = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.call(peer, payload)
    })) {
        Ok(work) => work,
        Err(_) => {
            tracing::error!(peer, "mesh call handler panicked");
            link.push_or_drop(lane, fail(Failure::Handler, "handler panicked"));
            return;
        }
    };
    *calls.count(lane) += 1;
    let link = Arc::clone(link);
    calls.set.spawn(async move {
        // Work the caller will no longer wait for is dropped.
        let Ok(result) = tokio::time::timeout(deadline, work).await else {
            return lane;
        };
        let result = match result {
            // A reply the caller's side would refuse as oversized (closing the link) is an error.
            Ok(payload) if payload.len() > MAX_PAYLOAD_BYTES => {
                reply::Result::Error(wire::CallError {
                    failure: Failure::Handler as i32,
                    message: "reply exceeds the maximum frame size".to_owned(),
                })
            }
            Ok(payload) => reply::Result::Ok(payload),
            Err(message) => reply::Result::Error(wire::CallError {
                failure: Failure::Handler as i32,
                message,
            }),
        };
        link.push_or_drop(
            lane,
            Kind::Reply(wire::Reply {
                id,
                result: Some(result),
            }),
        );
        lane
    });
}

async fn heartbeat_loop(link: &Link, timings: Timings) -> LinkEnd {
    let mut tick = tokio::time::interval((timings.heartbeat / 2).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat_us = u64::try_from(timings.heartbeat.as_micros()).unwrap_or(u64::MAX);
    let dead_us = u64::try_from(timings.dead_after.as_micros()).unwrap_or(u64::MAX);
    loop {
        tick.tick().await;
        link.publish_depths();
        let now = link.now_us();
        if now.saturating_sub(link.last_in_us.load(Ordering::Relaxed)) > dead_us {
            return LinkEnd::Silent(timings.dead_after);
        }
        let last_out = link.last_out_us.load(Ordering::Relaxed);
        let queued = link.heartbeat_queued_us.load(Ordering::Relaxed);
        // Idle, and no heartbeat still waiting in the lane (a stalled peer gets one, not many).
        if now.saturating_sub(last_out) >= heartbeat_us && queued <= last_out {
            link.heartbeat_queued_us
                .store(now.max(1), Ordering::Relaxed);
            link.push_or_drop(Lane::Consensus, Kind::Heartbeat(Heartbeat { sent_us: now }));
        }
    }
}
