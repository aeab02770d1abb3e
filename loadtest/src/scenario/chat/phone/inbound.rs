//! The receiving side of a chat phone: ServerAcks, deliveries (checked by id and timed),
//! errors (refusals are retried) and GoAway; and the cumulative acks it owes the server.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tern::client::{ClientError, ClientReader, ClientWriter};
use tern::proto::v1::{
    ChatMessage, DeviceAck, ErrorCode, GoAwayReason, ServerFrame, client_frame, deliver,
    server_frame::Frame,
};

use super::{ACK_RETRY, End, State};
use crate::body::{self, Stamp};
use crate::poll::now_or_never;
use crate::progress::bump;

/// Delivered entries after which an ack goes out even if more are waiting.
const ACK_EVERY: u64 = 32;
/// Frames handled before the phone writes again.
const READ_BATCH: usize = 1024;

impl State<'_> {
    /// Handles a received frame and everything else already buffered; queues acks.
    pub(super) fn on_received(
        &mut self,
        received: Result<Option<ServerFrame>, ClientError>,
        reader: &mut ClientReader,
        writer: &mut ClientWriter,
    ) -> Option<End> {
        let mut received = received;
        for _ in 0..READ_BATCH {
            match received {
                Ok(Some(frame)) => {
                    if let Some(end) = frame.frame.and_then(|f| self.handle(f)) {
                        return Some(end);
                    }
                }
                Ok(None) => return Some(End::Lost(ClientError::Closed)),
                Err(error) => return Some(End::Lost(error)),
            }
            if self.last_seq >= self.acked_seq + ACK_EVERY {
                // Write this ack now; the rest of the buffer is read right after.
                self.queue_ack(writer);
                return None;
            }
            match now_or_never(reader.recv()) {
                Some(next) => received = next,
                None => break,
            }
        }
        // The read buffer is drained (or the batch is full): ack everything handled.
        self.queue_ack(writer);
        None
    }

    pub(super) fn queue_ack(&mut self, writer: &mut ClientWriter) {
        if self.last_seq > self.acked_seq {
            writer.queue(client_frame::Frame::Ack(DeviceAck {
                up_to_seq: self.last_seq,
            }));
            self.acked_seq = self.last_seq;
            // Acks of new deliveries are never rate-limited, so they do not count against the frame
            // budget.
            self.queued = true;
        }
    }

    /// Repeats the last ack (the server refused it, so it may not know about it).
    pub(super) fn queue_ack_again(&mut self, writer: &mut ClientWriter) {
        if self.last_seq > 0 {
            self.acked_seq = self.acked_seq.min(self.last_seq - 1);
            self.queue_ack(writer);
        }
    }

    /// Handles one frame; `Some` when the connection ends.
    fn handle(&mut self, frame: Frame) -> Option<End> {
        let counters = &self.shared.counters;
        match frame {
            Frame::ServerAck(ack) => {
                if ack.duplicate {
                    bump(&counters.duplicate_acks);
                }
                // A recipient homed in another datacenter: durable in this datacenter's queue
                // to it, no mailbox seq yet (0). Acks are matched by client_msg_id, never by
                // their seq.
                if ack.queued {
                    bump(&counters.queued_acks);
                }
                let counter = body::parse_client_msg_id(self.shared.run, &ack.client_msg_id)?;
                let pending = self.outbox.acked(counter)?;
                let waited_ms = body::now_us().saturating_sub(pending.sent_us) / 1000;
                counters
                    .ack_wait_max_ms
                    .fetch_max(waited_ms, Ordering::Relaxed);
                counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                // The longest time without an ack while this phone had a send waiting, on one
                // connection (the first ack after a reconnect is not counted): since the last
                // ack, or since this message was sent if it was sent later. How long the slot
                // of its partner (or its path to it) paused.
                let now = Instant::now();
                if let Some(before) = self.last_ack_at {
                    let since =
                        u64::try_from(now.duration_since(before).as_millis()).unwrap_or(u64::MAX);
                    counters
                        .ack_pause_max_ms
                        .fetch_max(since.min(waited_ms), Ordering::Relaxed);
                }
                self.last_ack_at = Some(now);
                if self.outgoing().acked(counter) {
                    bump(&counters.acked);
                }
            }
            Frame::Deliver(deliver) => {
                if deliver.seq <= self.last_seq {
                    bump(&counters.seq_regressions);
                } else {
                    if deliver.seq > self.last_seq + 1 {
                        bump(&counters.seq_gaps);
                        eprintln!(
                            "chat: {} was delivered seq {} after seq {}",
                            self.phone.user, deliver.seq, self.last_seq
                        );
                    }
                    self.last_seq = deliver.seq;
                }
                if let Some(deliver::Payload::Message(message)) = deliver.payload {
                    self.on_message(&message);
                }
            }
            Frame::Error(error) => self.on_error(&error),
            Frame::GoAway(go_away) => {
                bump(&counters.go_aways);
                return Some(End::GoAway(
                    Duration::from_millis(go_away.reconnect_after_ms.into()),
                    go_away.alternate_addrs,
                    go_away.reason == i32::from(GoAwayReason::Elsewhere),
                ));
            }
            Frame::Welcome(_)
            | Frame::QueueDrained(_)
            | Frame::Typing(_)
            | Frame::Presence(_)
            | Frame::Pong(_)
            | Frame::GroupResponse(_)
            | Frame::PushResponse(_) => {}
        }
        None
    }

    fn on_message(&mut self, message: &ChatMessage) {
        let stamp = Stamp::decode(&message.body)
            .filter(|s| s.run == self.shared.run && message.from_user == self.phone.partner);
        super::count_delivery(self.phone, self.shared, &mut self.latency, stamp);
    }

    fn on_error(&mut self, error: &tern::proto::v1::Error) {
        let counters = &self.shared.counters;
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        let counter = body::parse_client_msg_id(self.shared.run, &error.client_msg_id);
        let retryable = matches!(
            code,
            ErrorCode::RateLimited | ErrorCode::Overloaded | ErrorCode::StorageFailure
        );
        match counter {
            Some(counter) if retryable => {
                if self.outbox.refused(counter, Instant::now()) {
                    bump(&counters.refused);
                    self.outgoing().retried(counter);
                }
            }
            Some(counter) => {
                if self.outbox.failed(counter).is_some() {
                    counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                bump(&counters.errors);
                self.show_error(&format!(
                    "{}: message {} refused: {} {}",
                    self.phone.user,
                    error.client_msg_id,
                    code.as_str_name(),
                    error.message
                ));
            }
            None => {
                bump(&counters.errors);
                if retryable {
                    // Frames without an id that this phone sends are acks: repeat it later,
                    // or delivery stalls once the server's delivery window is full.
                    self.ack_retry_at
                        .get_or_insert_with(|| Instant::now() + ACK_RETRY);
                }
                self.show_error(&format!(
                    "{}: error {} {}",
                    self.phone.user,
                    code.as_str_name(),
                    error.message
                ));
            }
        }
    }
}
