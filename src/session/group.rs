//! Group frames from the phone: requests, posts, receipts and typing, sent to the group's
//! worker; and the answers going back.

use std::sync::Arc;
use std::time::Instant;

use super::{PendingSend, SessionState, group_wire, wire};
use crate::dispatch::DispatchError;
use crate::group::{Change, GroupError};
use crate::mailbox::group_ops::{GroupAnswer, GroupCall, GroupFailure, GroupJob};
use crate::mailbox::{MailboxOp, SessionHandle};
use crate::message::Id;
use crate::proto::v1::{
    ErrorCode, GroupReceipt, GroupRequest, GroupSend, group_request::Op, server_frame::Frame as Out,
};
use crate::token::valid_id;

/// Longest group subject, in bytes.
const MAX_SUBJECT: usize = 256;

/// Bytes of a frame kept free of a request's user list for the rest of the group event it
/// becomes (`Deliver` envelope, ids, subject): the event of any accepted change fits in one frame.
const EVENT_ENVELOPE_BYTES: usize = 1024;

impl SessionState {
    /// A group request: checked here, decided by the group's worker.
    pub(super) fn on_group_request(&mut self, request: GroupRequest) {
        let request_id = request.request_id;
        let invalid = |state: &mut Self, message: &str| {
            state.answer_group(
                request_id,
                Err((ErrorCode::InvalidArgument, message.to_owned())),
            );
        };
        let Some(op) = request.op else {
            return invalid(self, "empty group request");
        };
        let max_users =
            (self.node.config.limits.max_frame_bytes as usize).saturating_sub(EVENT_ENVELOPE_BYTES);
        let after = match &op {
            Op::Info(g) => g.after.as_str(),
            Op::ReadBy(r) => r.after.as_str(),
            Op::List(l) => l.after.as_str(),
            Op::Create(c) if users_len(&c.members) > max_users => {
                return invalid(self, "too many members for one request; add the rest after");
            }
            Op::Add(m) | Op::Remove(m) | Op::Promote(m) | Op::Demote(m)
                if users_len(&m.users) > max_users =>
            {
                return invalid(self, "too many users for one request; split it");
            }
            _ => "",
        };
        if !after.is_empty() && !valid_id(after) {
            return invalid(self, "invalid page cursor");
        }
        // The page cursor travels with the request: the worker answers from it on.
        let after: Option<Id> = (!after.is_empty()).then(|| Id::from(after));
        if !self.admit_group_op(request_id, &op) {
            return;
        }
        let (group, call) = match op {
            Op::Create(create) => {
                if create.subject.len() > MAX_SUBJECT {
                    return invalid(self, "subject over 256 bytes");
                }
                let Some(members) = users(&create.members) else {
                    return invalid(self, "invalid member id");
                };
                // Linked to other datacenters, a group is homed where it was created.
                let group = match &self.node.config.wan {
                    Some(wan) => format!("g{:x}@{}", self.node.next_server_id(), wan.datacenter),
                    None => format!("g{:x}", self.node.next_server_id()),
                };
                let group = Id::from(group);
                let call = GroupCall::Create {
                    subject: create.subject,
                    members,
                };
                (group, call)
            }
            Op::Add(m) | Op::Remove(m) | Op::Promote(m) | Op::Demote(m)
                if !valid_id(&m.group_id) || users(&m.users).is_none() =>
            {
                return invalid(self, "invalid group or user id");
            }
            Op::Add(m) => (group_id(&m.group_id), change(Change::Add, &m.users)),
            Op::Remove(m) => (group_id(&m.group_id), change(Change::Remove, &m.users)),
            Op::Promote(m) => (group_id(&m.group_id), change(Change::Promote, &m.users)),
            Op::Demote(m) => (group_id(&m.group_id), change(Change::Demote, &m.users)),
            Op::Leave(g) => (group_id(&g.group_id), GroupCall::Change(Change::Leave)),
            Op::SetSubject(s) => {
                if s.subject.len() > MAX_SUBJECT {
                    return invalid(self, "subject over 256 bytes");
                }
                (
                    group_id(&s.group_id),
                    GroupCall::Change(Change::Subject(s.subject)),
                )
            }
            Op::Info(g) => (group_id(&g.group_id), GroupCall::Info { after }),
            Op::ReadBy(r) => (
                group_id(&r.group_id),
                GroupCall::ReadBy {
                    group_seq: r.group_seq,
                    after,
                },
            ),
            Op::List(_) => {
                let op = MailboxOp::ListGroups {
                    user: self.user.clone(),
                    after,
                    request_id,
                    reply: self.reply_to(),
                };
                if self.node.submit(op).is_err() {
                    self.answer_group(request_id, Err(busy()));
                }
                return;
            }
        };
        if !valid_id(&group) {
            return invalid(self, "invalid group id");
        }
        let job = GroupJob {
            group,
            actor: self.user.clone(),
            device: self.device.clone(),
            call,
            request_id,
            reply: Some(self.reply_to()),
        };
        if self.node.submit(MailboxOp::Group(Box::new(job))).is_err() {
            self.answer_group(request_id, Err(busy()));
        }
    }

    /// A message to a group; acked once durable in the group's log.
    pub(super) fn on_group_send(&mut self, send: GroupSend) {
        let Some(kind) = wire::message_kind_from_wire(send.kind) else {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "unknown message kind",
                &send.client_msg_id,
            );
        };
        if send.body.len() > self.node.config.limits.max_body_bytes as usize {
            return self.send_error(
                ErrorCode::InvalidArgument,
                "body too large",
                &send.client_msg_id,
            );
        }
        let Some(group) = self.check_envelope(&send.client_msg_id, &send.group_id) else {
            return;
        };
        let Some(body) = self.checked_body(kind, send.body, &send.client_msg_id) else {
            return;
        };
        let client_msg_id: Arc<str> = Arc::from(send.client_msg_id.as_str());
        let tag = self.next_tag;
        self.next_tag += 1;
        let job = GroupJob {
            group: group.clone(),
            actor: self.user.clone(),
            device: self.device.clone(),
            call: GroupCall::Post {
                client_msg_id: client_msg_id.clone(),
                server_id: self.node.next_server_id(),
                kind,
                body,
                // The same tag layout as 1:1 sends (no copy bit).
                tag: tag << 1,
            },
            request_id: 0,
            reply: Some(self.reply_to()),
        };
        if let Err(error) = self.node.submit(MailboxOp::Group(Box::new(job))) {
            let message = match error {
                DispatchError::Overloaded(_) => "server busy; retry",
                DispatchError::Stopped(_) => "server shutting down; retry",
            };
            return self.send_error(ErrorCode::Overloaded, message, &client_msg_id);
        }
        self.pending.insert(
            tag,
            PendingSend {
                client_msg_id,
                received: Instant::now(),
                waiting: 1,
                recipient: None,
                failed: None,
                group: Some(group),
            },
        );
    }

    /// The member received or read the group up to a group seq. Not answered when accepted;
    /// refused by the group's worker (not a member) with an `Error` naming the group.
    pub(super) fn on_group_receipt(&mut self, receipt: GroupReceipt) {
        let Some(kind) = wire::receipt_kind_from_wire(receipt.kind) else {
            return self.send_error(ErrorCode::InvalidArgument, "unknown receipt kind", "");
        };
        if !valid_id(&receipt.group_id) {
            return self.send_error(ErrorCode::InvalidArgument, "invalid group id", "");
        }
        self.submit_group(
            group_id(&receipt.group_id),
            GroupCall::Receipt {
                kind,
                up_to: receipt.up_to_group_seq,
            },
            Some(self.reply_to()),
        );
    }

    /// Typing in a group: relayed by the group's worker to its online members.
    pub(super) fn on_group_typing(&mut self, group: &str, typing: bool) {
        if !valid_id(group) {
            return self.send_error(ErrorCode::InvalidArgument, "invalid group id", "");
        }
        self.submit_group(group_id(group), GroupCall::Typing(typing), None);
    }

    /// Queues a group job that has no answer of its own: `reply` hears only a refusal. One
    /// dropped for a full queue is not retried (a later receipt covers it; typing lapses).
    fn submit_group(&mut self, group: Id, call: GroupCall, reply: Option<SessionHandle>) {
        let job = GroupJob {
            group,
            actor: self.user.clone(),
            device: self.device.clone(),
            call,
            request_id: 0,
            reply,
        };
        let _ = self.node.submit(MailboxOp::Group(Box::new(job)));
    }

    /// A group frame without an answer of its own was refused: the `Error` has no
    /// `client_msg_id`, so its message names the group.
    pub(super) fn on_group_refused(&mut self, group: &str, error: &GroupError) {
        let (code, message) = group_wire::group_error(error);
        self.send_error(code, &format!("{message}: group {group}"), "");
    }

    /// Sends the answer to a group request.
    pub(super) fn on_group_answer(
        &mut self,
        request_id: u64,
        answer: Result<GroupAnswer, GroupFailure>,
    ) {
        let answer = answer.map_err(|failure| match failure {
            GroupFailure::Refused(error) => group_wire::group_error(&error),
            GroupFailure::Storage => (
                ErrorCode::StorageFailure,
                "the change could not be stored; retry later".to_owned(),
            ),
            GroupFailure::Busy => busy(),
        });
        self.answer_group(request_id, answer);
    }

    fn answer_group(&mut self, request_id: u64, answer: Result<GroupAnswer, (ErrorCode, String)>) {
        let max_frame = self.node.config.limits.max_frame_bytes as usize;
        self.send(Out::GroupResponse(group_wire::response(
            request_id, answer, max_frame,
        )));
    }
}

fn busy() -> (ErrorCode, String) {
    (ErrorCode::Overloaded, "server busy; retry".to_owned())
}

fn group_id(id: &str) -> Id {
    Id::from(id)
}

/// Encoded bytes of a list of ids, as a group event will carry them.
fn users_len(ids: &[String]) -> usize {
    ids.iter().map(|id| id.len() + 3).sum()
}

/// The ids, if all are valid.
fn users(ids: &[String]) -> Option<Vec<Id>> {
    ids.iter()
        .map(|id| valid_id(id).then(|| Id::from(id.as_str())))
        .collect()
}

fn change(make: fn(Vec<Id>) -> Change, ids: &[String]) -> GroupCall {
    GroupCall::Change(make(ids.iter().map(|id| Id::from(id.as_str())).collect()))
}
