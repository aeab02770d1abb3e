//! The session's write side: frames are encoded into one buffer and written with one
//! non-blocking `write(2)` per batch; a full socket waits for the reader's writability signal.

use bytes::{Buf, BytesMut};
use ractor::ActorRef;

use super::{SessionMsg, SessionState, wire};
use crate::encode::Field;
use crate::frame;
use crate::metrics as names;
use crate::proto::v1::{ErrorCode, GoAway, GoAwayReason, server_frame::Frame};

impl SessionState {
    /// Queues a frame for the phone. A buffer over `outbound_max_bytes` means the phone is not
    /// reading: the session closes as a slow consumer (its messages stay in its mailbox).
    pub(super) fn send(&mut self, frame: Frame) {
        if self.closing {
            return;
        }
        let frame = wire::server_frame(frame);
        let start = self.out.len();
        let len = frame::encode(&frame, &mut self.out);
        if !self.fits(len, &frame) {
            self.out.truncate(start);
            return;
        }
        self.queued();
    }

    /// As [`SessionState::send`], for a `ServerFrame` given as borrowed fields.
    pub(super) fn send_fields(&mut self, frame: &[Field<'_>]) {
        if self.closing {
            return;
        }
        let start = self.out.len();
        let len = frame::encode_fields(frame, &mut self.out);
        if !self.fits(len, &frame) {
            self.out.truncate(start);
            return;
        }
        self.queued();
    }

    /// The last guard of the frame limit, promised in both directions: a frame over
    /// `max_frame_bytes` is never written (the phone would have to refuse it); the caller takes
    /// it back out of the buffer. Checked on the length the encoder computed anyway, so the
    /// guard costs nothing per frame. Answers are built to fit (paged, bounded inputs), so this
    /// firing is a server bug: logged and counted.
    fn fits(&self, len: usize, frame: &dyn std::fmt::Debug) -> bool {
        let max = self.node.config.limits.max_frame_bytes as usize;
        if len <= max {
            return true;
        }
        metrics::counter!(names::FRAMES_OVERSIZED).increment(1);
        let kind = format!("{frame:?}");
        let kind = kind.get(..kind.len().min(80)).unwrap_or_default();
        tracing::error!(
            conn = self.conn.id,
            len,
            max,
            kind,
            "outbound frame over the limit dropped"
        );
        false
    }

    /// A frame was queued: counts it, and closes a slow consumer.
    fn queued(&mut self) {
        self.node.metrics.frames_out.increment(1);
        if self.out.len() > self.node.config.limits.outbound_max_bytes as usize {
            tracing::info!(conn = self.conn.id, user = %self.user, "slow consumer: outbound buffer full");
            metrics::counter!(names::ERRORS, "kind" => "slow_consumer").increment(1);
            self.out.clear();
            self.close("slow_consumer");
        }
    }

    /// Sends an Error frame (the connection stays open).
    pub(super) fn send_error(&mut self, code: ErrorCode, message: &str, client_msg_id: &str) {
        metrics::counter!(names::ERRORS, "kind" => wire::error_kind(code)).increment(1);
        self.send(wire::error(code, message, client_msg_id));
    }

    /// Writes what the socket takes now; asks the reader to wait for writability otherwise.
    pub(super) fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.conn.try_write(&self.out) {
                Ok(written) => {
                    self.out.advance(written);
                    self.node.metrics.bytes_out.increment(written as u64);
                    self.node.metrics.socket_writes.increment(1);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.waiting_writable = true;
                    self.conn.request_writable();
                    return;
                }
                Err(error) => {
                    tracing::debug!(conn = self.conn.id, %error, "write failed");
                    self.out.clear();
                    self.close("socket_error");
                    return;
                }
            }
        }
        // Idle sessions keep no write buffer.
        self.out = BytesMut::new();
    }

    /// After each message: schedule one flush for everything queued meanwhile (the Flush message
    /// queues behind the messages already waiting, so their frames share one write), and publish
    /// whether delivery is blocked.
    pub(super) fn after_handle(&mut self, myself: &ActorRef<SessionMsg>) {
        if !self.out.is_empty() && !self.flush_scheduled && !self.waiting_writable {
            self.flush_scheduled = myself.cast(SessionMsg::Flush).is_ok();
        }
        let blocked = self.waiting_writable || self.delivery.window_blocked(self.window());
        self.conn.set_stalled(blocked);
        // Before any flush writes them: the phone's acks of these entries then find them
        // published and pass the reader's rate limit as new acks.
        self.conn.set_delivered(self.delivery.sent_upto());
    }

    /// Writes what can be written and closes the connection; the actor then stops.
    pub(super) fn close(&mut self, reason: &'static str) {
        if self.closing {
            return;
        }
        if !self.out.is_empty() {
            self.flush();
        }
        self.closing = true;
        metrics::counter!(names::DISCONNECTS, "reason" => reason).increment(1);
        tracing::debug!(conn = self.conn.id, user = %self.user, reason, "closing session");
        self.conn.close();
    }

    /// Sends GoAway and closes.
    pub(super) fn go_away(
        &mut self,
        reason: GoAwayReason,
        reconnect_after_ms: u32,
        label: &'static str,
    ) {
        // A node going away names the others (they serve the same users); a replaced or idle
        // connection is sent to no one in particular.
        let alternate_addrs = if reason == GoAwayReason::Shutdown {
            self.node.peer_addrs.current()
        } else {
            Vec::new()
        };
        self.send(Frame::GoAway(GoAway {
            reason: reason.into(),
            reconnect_after_ms,
            message: label.replace('_', " "),
            alternate_addrs,
        }));
        self.close(label);
    }

    /// Answers a fatal input error and closes.
    pub(super) fn fatal(&mut self, code: ErrorCode, message: &str) {
        self.send(wire::error(code, message, ""));
        self.close(wire::error_kind(code));
    }

    /// Answers a frame refused by the rate limit.
    pub(super) fn rate_limited(&mut self, frame: Option<&crate::proto::v1::client_frame::Frame>) {
        use crate::proto::v1::client_frame::Frame as In;
        let client_msg_id = match frame {
            Some(In::Send(send)) => send.client_msg_id.as_str(),
            Some(In::Receipt(receipt)) => receipt.client_msg_id.as_str(),
            Some(In::GroupSend(send)) => send.client_msg_id.as_str(),
            _ => "",
        };
        let client_msg_id = client_msg_id.to_owned();
        self.send(wire::error(
            ErrorCode::RateLimited,
            "rate limit exceeded; retry later",
            &client_msg_id,
        ));
    }
}
