//! Frames from the phone: validation, then appends, acks, typing and presence.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ractor::ActorRef;

use super::{AppendFailure, MAX_PENDING_SENDS, PendingSend, SessionMsg, SessionState, wire};
use crate::clock::now_ms;
use crate::dispatch::DispatchError;
use crate::mailbox::{AckInfo, AppendJob, Content, MailboxOp};
use crate::message::{Id, MessageKind};
use crate::proto::v1::{
    ErrorCode, Pong, PresenceSubscribe, PresenceUpdate, Receipt, Send, Typing, TypingNotice,
    client_frame::Frame as In, server_frame::Frame as Out,
};
use crate::token::valid_id;

/// Longest accepted client_msg_id, in bytes.
const MAX_CLIENT_MSG_ID: usize = 128;

/// The low bit of an append tag: set for the copy in the sender's own mailbox.
const COPY_BIT: u64 = 1;

impl SessionState {
    /// Dispatches one frame from the phone.
    pub(super) fn inbound(&mut self, myself: &ActorRef<SessionMsg>, frame: In) {
        match frame {
            In::Send(send) => self.on_send(send),
            In::Receipt(receipt) => self.on_receipt(receipt),
            In::Ack(ack) => self.on_device_ack(myself, ack.up_to_seq),
            In::Typing(typing) if !typing.group_id.is_empty() => {
                self.on_group_typing(&typing.group_id, typing.typing);
            }
            In::Typing(typing) => self.on_typing(&typing),
            In::GroupRequest(request) => self.on_group_request(request),
            In::GroupSend(send) => self.on_group_send(send),
            In::GroupReceipt(receipt) => self.on_group_receipt(receipt),
            In::PushRequest(request) => self.on_push_request(request),
            In::PresenceSubscribe(subscribe) => self.on_presence_subscribe(subscribe),
            In::Ping(ping) => self.send(Out::Pong(Pong {
                nonce: ping.nonce,
                server_time_ms: now_ms(),
            })),
            In::Login(_) => self.send_error(ErrorCode::ProtocolViolation, "already logged in", ""),
        }
    }

    fn on_send(&mut self, send: Send) {
        let Some(kind) = wire::message_kind_from_wire(send.kind) else {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "unknown message kind",
                &send.client_msg_id,
            );
        };
        let max_body = self.node.config.limits.max_body_bytes as usize;
        if send.body.len() > max_body {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "body too large",
                &send.client_msg_id,
            );
        }
        let Some(to_user) = self.check_envelope(&send.client_msg_id, &send.to_user) else {
            return;
        };
        let Some(body) = self.checked_body(kind, send.body, &send.client_msg_id) else {
            return;
        };
        // Own messages are copied to the user's mailbox for the user's other devices.
        let copy = to_user != self.user && self.devices > 1;
        let content = Content::Message {
            to_user: to_user.clone(),
            kind,
            body,
        };
        self.append(&send.client_msg_id, to_user, content, copy);
    }

    /// The body to store for a 1:1 or group message of `kind`: a media reference must name
    /// finished media (holding its id entitles the sender to send it on, as to download it) and
    /// gets the stored type, size and hash filled in; other bodies pass unchanged. Answers the
    /// refusal itself and returns `None` when the body is refused.
    pub(super) fn checked_body(
        &mut self,
        kind: MessageKind,
        body: Bytes,
        client_msg_id: &str,
    ) -> Option<Bytes> {
        if kind != MessageKind::Media {
            return Some(body);
        }
        let max_body = self.node.config.limits.max_body_bytes as usize;
        match self.node.media.share(&body, max_body) {
            Ok(body) => Some(body),
            Err(refusal) => {
                self.send_error(refusal.code(), &refusal.to_string(), client_msg_id);
                None
            }
        }
    }

    fn on_receipt(&mut self, receipt: Receipt) {
        let Some(kind) = wire::receipt_kind_from_wire(receipt.kind) else {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "unknown receipt kind",
                &receipt.client_msg_id,
            );
        };
        if receipt.up_to_seq == 0 || receipt.up_to_seq > self.delivery.sent_upto() {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "up_to_seq must name an entry delivered to this device",
                &receipt.client_msg_id,
            );
        }
        let Some(to_user) = self.check_envelope(&receipt.client_msg_id, &receipt.to_user) else {
            return;
        };
        let content = Content::Receipt {
            kind,
            up_to_seq: receipt.up_to_seq,
        };
        self.append(&receipt.client_msg_id, to_user, content, false);
    }

    /// Validates client_msg_id and recipient; answers the error itself when invalid.
    pub(super) fn check_envelope(&mut self, client_msg_id: &str, to_user: &str) -> Option<Id> {
        if client_msg_id.is_empty()
            || client_msg_id.len() > MAX_CLIENT_MSG_ID
            || client_msg_id.starts_with('#')
        {
            self.send_error(
                ErrorCode::InvalidArgument,
                "client_msg_id must be 1-128 bytes and not start with '#'",
                client_msg_id,
            );
            return None;
        }
        if !valid_id(to_user) {
            self.send_error(
                ErrorCode::InvalidArgument,
                "invalid recipient",
                client_msg_id,
            );
            return None;
        }
        if self.pending.len() >= MAX_PENDING_SENDS {
            self.send_error(
                ErrorCode::Overloaded,
                "too many messages in flight",
                client_msg_id,
            );
            return None;
        }
        Some(Id::from(to_user))
    }

    /// Appends to the recipient's mailbox (and the sender's own, when `copy`); the ServerAck
    /// goes out when every append has answered.
    fn append(&mut self, client_msg_id: &str, owner: Id, content: Content, copy: bool) {
        let client_msg_id: Arc<str> = Arc::from(client_msg_id);
        let server_id = self.node.next_server_id();
        let timestamp_ms = now_ms();
        let tag = self.next_tag;
        self.next_tag += 1;
        let job = |owner: Id, content: Content, role: u64| {
            MailboxOp::Append(Box::new(AppendJob {
                owner,
                from_user: self.user.clone(),
                from_device: self.device.clone(),
                client_msg_id: client_msg_id.clone(),
                server_id,
                timestamp_ms,
                content,
                reply: Some((self.reply_to(), (tag << 1) | role)),
                done: None,
            }))
        };
        let copy_job = copy.then(|| job(self.user.clone(), content.clone(), COPY_BIT));
        if let Err(error) = self.node.submit(job(owner, content, 0)) {
            let message = match error {
                DispatchError::Overloaded(_) => "server busy; retry",
                DispatchError::Stopped(_) => "server shutting down; retry",
            };
            return self.send_error(ErrorCode::Overloaded, message, &client_msg_id);
        }
        let mut pending = PendingSend {
            client_msg_id,
            received: Instant::now(),
            waiting: 1,
            recipient: None,
            failed: None,
            group: None,
        };
        if let Some(copy_job) = copy_job {
            match self.node.submit(copy_job) {
                Ok(()) => pending.waiting += 1,
                // The recipient has it; the phone will retry (deduplicated) for the copy.
                Err(_) => pending.failed = Some(AppendFailure::Busy),
            }
        }
        self.pending.insert(tag, pending);
    }

    /// An append finished; when all of a send's appends have, answer the phone.
    pub(super) fn on_appended(&mut self, tag: u64, result: Result<(AckInfo, bool), AppendFailure>) {
        let Some(pending) = self.pending.get_mut(&(tag >> 1)) else {
            return;
        };
        match result {
            Ok(outcome) if tag & COPY_BIT == 0 => pending.recipient = Some(outcome),
            Ok(_) => {}
            Err(failure) => pending.failed = Some(failure),
        }
        pending.waiting -= 1;
        if pending.waiting > 0 {
            return;
        }
        let Some(pending) = self.pending.remove(&(tag >> 1)) else {
            return;
        };
        let metrics = &self.node.metrics;
        metrics
            .ack_latency
            .record(pending.received.elapsed().as_secs_f64());
        match (pending.recipient, pending.failed) {
            (Some((ack, duplicate)), None) => {
                if duplicate {
                    metrics.messages_duplicate.increment(1);
                } else {
                    metrics.messages_in.increment(1);
                }
                let group = pending.group.as_deref().unwrap_or_default();
                wire::with_server_ack_fields(
                    &pending.client_msg_id,
                    &ack,
                    duplicate,
                    group,
                    |frame| self.send_fields(frame),
                );
            }
            (_, Some(AppendFailure::NotAMember)) => self.send_error(
                ErrorCode::NotAMember,
                "not a member of this group",
                &pending.client_msg_id,
            ),
            (_, Some(AppendFailure::Storage)) => self.send_error(
                ErrorCode::StorageFailure,
                "the message could not be stored; retry later",
                &pending.client_msg_id,
            ),
            _ => self.send_error(
                ErrorCode::Overloaded,
                "server busy; retry",
                &pending.client_msg_id,
            ),
        }
    }

    fn on_typing(&mut self, typing: &Typing) {
        if !valid_id(&typing.to_user) {
            return self.send_error(ErrorCode::InvalidArgument, "invalid recipient", "");
        }
        let to_user = Id::from(typing.to_user.as_str());
        if let Some(remote) = self.node.remote.get()
            && remote.relay_typing(&self.user, &to_user, typing.typing)
        {
            return;
        }
        let limit = self.node.config.mailbox.push_queue;
        self.node
            .registry
            .relay_typing(&self.user, &to_user, typing.typing, limit);
    }

    pub(super) fn on_typing_notice(&mut self, from_user: &Id, typing: bool, group: Option<&Id>) {
        self.send(Out::Typing(TypingNotice {
            from_user: from_user.to_string(),
            typing,
            group_id: group.map(ToString::to_string).unwrap_or_default(),
        }));
    }

    fn on_presence_subscribe(&mut self, subscribe: PresenceSubscribe) {
        let max = self.node.config.limits.max_presence_subscriptions as usize;
        if subscribe.users.len() > max {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "too many presence subscriptions",
                "",
            );
        }
        if let Some(bad) = subscribe.users.iter().find(|u| !valid_id(u)) {
            let message = format!("invalid user {bad:?}");
            return self.send_error(ErrorCode::InvalidArgument, &message, "");
        }
        let users: Vec<Id> = subscribe
            .users
            .iter()
            .map(|u| Id::from(u.as_str()))
            .collect();
        let node = self.node.clone();
        self.unwatch_all();
        let local = match node.remote.get() {
            Some(remote) => remote.watch_presence(&self.user, self.conn.id, &users),
            None => users.clone(),
        };
        let sink: crate::mailbox::SessionHandle = self.conn.clone();
        node.presence.watch(self.conn.id, &sink, &local);
        for user in &local {
            let online = node.registry.is_online(user);
            let last_seen_ms = if online {
                0
            } else {
                node.presence.last_seen(user)
            };
            self.on_presence(user, online, last_seen_ms);
        }
        self.watching = users;
    }

    /// Ends this session's presence watches, here and at other nodes' users' owners.
    pub(super) fn unwatch_all(&self) {
        self.node.presence.unwatch(self.conn.id, &self.watching);
        if let Some(remote) = self.node.remote.get() {
            remote.unwatch_presence(&self.user, self.conn.id, &self.watching);
        }
    }

    /// Watches the users this session watched again (their owners may have restarted).
    pub(super) fn rewatch(&mut self) {
        if let Some(remote) = self.node.remote.get() {
            remote.watch_presence(&self.user, self.conn.id, &self.watching);
        }
    }

    pub(super) fn on_presence(&mut self, user: &Id, online: bool, last_seen_ms: u64) {
        metrics::counter!(crate::metrics::PRESENCE_UPDATES).increment(1);
        self.send(Out::Presence(PresenceUpdate {
            user: user.to_string(),
            online,
            last_seen_ms,
        }));
    }
}
