//! Delivery to one device: catch up from the mailbox, then follow live pushes, never more than
//! `delivery_window` entries ahead of the device's cumulative ack.
//!
//! `sent_upto` is the highest seq written to the phone; entries arrive either in answer to a
//! read (`Batch`) or pushed live (`Push`). A push is written only when it is exactly the next
//! seq and the device is caught up; anything else (a gap, skipped pushes, a full window) makes
//! the session read its mailbox again. Each seq is therefore written at most once per
//! connection, in order.

use std::sync::Arc;

use ractor::ActorRef;

use super::{SessionMsg, SessionState, wire};
use crate::dispatch::DispatchError;
use crate::mailbox::MailboxOp;
use crate::message::Entry;
use crate::proto::v1::{QueueDrained, server_frame::Frame};

/// A device's delivery position on this connection.
#[derive(Debug)]
pub(super) struct Delivery {
    /// Highest seq written to the phone (or skipped as its own).
    sent_upto: u64,
    /// Highest seq the device acked.
    acked: u64,
    /// Highest seq known to exist in the mailbox.
    known_last: u64,
    /// Everything known has been sent and live pushes may be written directly.
    caught_up: bool,
    /// A mailbox read is in flight.
    fetching: bool,
    /// QueueDrained was sent on this connection.
    drained_sent: bool,
}

impl Delivery {
    pub(super) fn new(cursor: u64) -> Self {
        Self {
            sent_upto: cursor,
            acked: cursor,
            known_last: cursor,
            caught_up: false,
            fetching: false,
            drained_sent: false,
        }
    }

    /// Entries that may still be sent before the window is full.
    fn room(&self, window: u64) -> u64 {
        window.saturating_sub(self.sent_upto - self.acked)
    }

    /// True when entries wait but the window is full.
    pub(super) fn window_blocked(&self, window: u64) -> bool {
        self.room(window) == 0 && self.known_last > self.sent_upto
    }

    /// A mailbox read is in flight.
    pub(super) fn fetching(&self) -> bool {
        self.fetching
    }

    /// Highest seq written to the phone.
    pub(super) fn sent_upto(&self) -> u64 {
        self.sent_upto
    }

    /// Live pushes were skipped: read the mailbox to find them.
    pub(super) fn lost_pushes(&mut self) {
        self.caught_up = false;
    }
}

impl SessionState {
    pub(super) fn window(&self) -> u64 {
        u64::from(self.node.config.limits.delivery_window)
    }

    /// Reads the mailbox after `sent_upto` if delivery is behind, no read is in flight and the
    /// window has room.
    pub(super) fn fetch(&mut self, myself: &ActorRef<SessionMsg>) {
        let room = self.delivery.room(self.window());
        let byte_room = self.delivery_byte_room();
        if self.delivery.fetching || self.delivery.caught_up || room == 0 || byte_room == 0 {
            // A full outbound buffer: the next Flush that empties it fetches again.
            return;
        }
        let limit = room.min(u64::from(self.node.config.mailbox.fetch_batch)) as usize;
        let op = MailboxOp::Fetch {
            owner: self.user.clone(),
            after: self.delivery.sent_upto,
            limit,
            max_bytes: byte_room,
            reply: self.reply_to(),
        };
        match self.node.submit(op) {
            Ok(()) => self.delivery.fetching = true,
            // Rare: the read lane is full. Try again shortly without holding the actor.
            Err(DispatchError::Overloaded(_)) => retry_fetch_after(myself, 20),
            Err(DispatchError::Stopped(_)) => self.close("shutdown"),
        }
    }

    /// A mailbox read failed in the store: try again later (the store may recover).
    pub(super) fn fetch_failed(&mut self, myself: &ActorRef<SessionMsg>) {
        self.delivery.fetching = false;
        retry_fetch_after(myself, 200);
    }

    /// Bytes of deliveries that may still be buffered: half the outbound budget, so acks and
    /// errors always fit in the other half and a reading phone is never cut as slow.
    fn delivery_byte_room(&self) -> usize {
        (self.node.config.limits.outbound_max_bytes as usize / 2).saturating_sub(self.out.len())
    }

    /// A live push from the mailbox worker.
    pub(super) fn on_push(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        entry: &Arc<Entry>,
        missed: bool,
    ) {
        let window = self.window();
        let d = &mut self.delivery;
        d.known_last = d.known_last.max(entry.seq);
        if missed {
            d.caught_up = false;
        }
        if entry.seq <= d.sent_upto {
            return;
        }
        let next_in_line = entry.seq == d.sent_upto + 1;
        let byte_room = self.delivery_byte_room();
        let d = &mut self.delivery;
        if d.caught_up && next_in_line && d.room(window) > 0 && byte_room > 0 {
            self.write_entry(entry);
        } else {
            self.delivery.caught_up = false;
        }
        self.fetch(myself);
    }

    /// The answer to a mailbox read.
    pub(super) fn on_batch(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        entries: &[Arc<Entry>],
        last_seq: u64,
        read_upto: u64,
    ) {
        self.delivery.fetching = false;
        self.delivery.known_last = self.delivery.known_last.max(last_seq);
        for entry in entries {
            if entry.seq <= self.delivery.sent_upto {
                continue;
            }
            if entry.seq > self.delivery.sent_upto + 1 {
                // The mailbox dropped the entries in between, which it does only once every
                // device (this one included, on another connection) acked them.
                self.skip_acked(entry.seq - 1);
            }
            self.write_entry(entry);
        }
        if entries.is_empty() && self.delivery.sent_upto < read_upto {
            self.skip_acked(read_upto);
        }
        if self.delivery.sent_upto >= self.delivery.known_last {
            self.delivery.caught_up = true;
            if !self.delivery.drained_sent {
                self.delivery.drained_sent = true;
                let last_seq = self.delivery.sent_upto;
                self.send(Frame::QueueDrained(QueueDrained { last_seq }));
            }
        } else {
            self.fetch(myself);
        }
    }

    fn skip_acked(&mut self, up_to: u64) {
        self.delivery.sent_upto = up_to;
        self.delivery.acked = self.delivery.acked.max(up_to);
    }

    /// A cumulative ack from the device.
    pub(super) fn on_device_ack(&mut self, myself: &ActorRef<SessionMsg>, up_to: u64) {
        let up_to = up_to.min(self.delivery.sent_upto);
        if up_to <= self.delivery.acked {
            return;
        }
        self.delivery.acked = up_to;
        let op = MailboxOp::Ack {
            owner: self.user.clone(),
            device: self.device.clone(),
            up_to,
        };
        // A refused ack is harmless: acks are cumulative, the next one (or the resume cursor at
        // the next login) covers it.
        let _ = self.node.submit(op);
        self.fetch(myself);
    }

    /// Writes one entry unless this device produced it, and advances `sent_upto`.
    fn write_entry(&mut self, entry: &Entry) {
        self.delivery.sent_upto = entry.seq;
        let (from_user, from_device) = entry.origin();
        if *from_user == self.user && *from_device == self.device {
            // The device's own message, copied for the user's other devices: it counts as
            // delivered to and acked by this one once everything before it is acked.
            if self.delivery.acked + 1 == entry.seq {
                self.delivery.acked = entry.seq;
                let _ = self.node.submit(MailboxOp::Ack {
                    owner: self.user.clone(),
                    device: self.device.clone(),
                    up_to: entry.seq,
                });
            }
            return;
        }
        self.node.metrics.messages_out.increment(1);
        if wire::with_deliver_fields(entry, |frame| self.send_fields(frame)).is_none() {
            self.send(wire::deliver(entry));
        }
    }
}

/// Casts [`SessionMsg::RetryFetch`] to the session after `millis`, without holding the actor.
fn retry_fetch_after(myself: &ActorRef<SessionMsg>, millis: u64) {
    let myself = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        let _ = myself.cast(SessionMsg::RetryFetch);
    });
}
