//! Group requests and their answers as they cross the mesh: a session's [`GroupJob`] becomes a
//! `GroupCall` for the group's owner, which runs it on its workers and turns the one event it
//! answers with into a `GroupReply`; the caller turns that back into the event a local worker
//! would have sent, with the session's own request id or send tag.

use std::sync::Arc;

use crate::group::{Change, GroupError, Role};
use crate::mailbox::group_ops::{GroupAnswer, GroupCall, GroupFailure, GroupInfo, GroupJob};
use crate::mailbox::{AckInfo, AppendFailure, MailboxEvent, SessionHandle};
use crate::message::Id;
use crate::proto::kinds;
use crate::proto::mesh as pb;

use pb::group_reply::Answer;
use pb::mailbox_refused::Reason;

/// Why a call from a peer is not a group request.
#[derive(Debug, thiserror::Error)]
pub enum GroupWireError {
    /// A required part is missing.
    #[error("group call without {0}")]
    Missing(&'static str),
    /// A kind this node does not know.
    #[error("unknown {0}")]
    Unknown(&'static str),
}

/// The call carrying `job` (its reply address stays here).
pub fn call_of(job: &GroupJob) -> pb::GroupCall {
    use pb::group_call::Call as Carried;
    let call = match &job.call {
        GroupCall::Create { subject, members } => Carried::Create(pb::GroupCreate {
            subject: subject.clone(),
            members: strings(members),
        }),
        GroupCall::Change(change) => Carried::Change(change_of(change)),
        GroupCall::Info { after } => Carried::Info(pb::GroupPage {
            after: after.as_ref().map(ToString::to_string),
        }),
        GroupCall::ReadBy { group_seq, after } => Carried::ReadBy(pb::GroupReadBy {
            group_seq: *group_seq,
            after: after.as_ref().map(ToString::to_string),
        }),
        GroupCall::Post {
            client_msg_id,
            server_id,
            kind,
            body,
            ..
        } => Carried::Post(pb::GroupPost {
            client_msg_id: client_msg_id.to_string(),
            server_id: *server_id,
            kind: kinds::message_kind_to_wire(*kind).into(),
            body: body.clone(),
        }),
        GroupCall::Receipt { kind, up_to } => Carried::Receipt(pb::AppendReceipt {
            kind: kinds::receipt_kind_to_wire(*kind).into(),
            up_to_seq: *up_to,
        }),
        GroupCall::Typing(typing) => Carried::Typing(*typing),
    };
    pb::GroupCall {
        group: job.group.to_string(),
        actor: job.actor.to_string(),
        device: job.device.to_string(),
        request_id: job.request_id,
        call: Some(call),
    }
}

/// The job a peer's call asks for, answering `reply`.
pub fn job_of(call: pb::GroupCall, reply: SessionHandle) -> Result<GroupJob, GroupWireError> {
    use pb::group_call::Call as Carried;
    let carried = call.call.ok_or(GroupWireError::Missing("a request"))?;
    let call_kind = match carried {
        Carried::Create(create) => GroupCall::Create {
            subject: create.subject,
            members: ids(create.members),
        },
        Carried::Change(change) => GroupCall::Change(change_from(change)?),
        Carried::Info(page) => GroupCall::Info {
            after: page.after.map(Id::from),
        },
        Carried::ReadBy(read_by) => GroupCall::ReadBy {
            group_seq: read_by.group_seq,
            after: read_by.after.map(Id::from),
        },
        Carried::Post(post) => GroupCall::Post {
            client_msg_id: Arc::from(post.client_msg_id),
            server_id: post.server_id,
            kind: kinds::message_kind_from_wire(post.kind)
                .ok_or(GroupWireError::Unknown("message kind"))?,
            body: post.body,
            tag: 0,
        },
        Carried::Receipt(receipt) => GroupCall::Receipt {
            kind: kinds::receipt_kind_from_wire(receipt.kind)
                .ok_or(GroupWireError::Unknown("receipt kind"))?,
            up_to: receipt.up_to_seq,
        },
        Carried::Typing(typing) => GroupCall::Typing(typing),
    };
    Ok(GroupJob {
        group: Id::from(call.group),
        actor: Id::from(call.actor),
        device: Id::from(call.device),
        call: call_kind,
        request_id: call.request_id,
        reply: Some(reply),
    })
}

fn change_of(change: &Change) -> pb::GroupChange {
    use pb::group_change::Kind;
    let (kind, users, subject) = match change {
        Change::Add(users) => (Kind::Add, strings(users), String::new()),
        Change::Remove(users) => (Kind::Remove, strings(users), String::new()),
        Change::Leave => (Kind::Leave, Vec::new(), String::new()),
        Change::Promote(users) => (Kind::Promote, strings(users), String::new()),
        Change::Demote(users) => (Kind::Demote, strings(users), String::new()),
        Change::Subject(subject) => (Kind::Subject, Vec::new(), subject.clone()),
    };
    pb::GroupChange {
        kind: kind.into(),
        users,
        subject,
    }
}

fn change_from(change: pb::GroupChange) -> Result<Change, GroupWireError> {
    use pb::group_change::Kind;
    let users = ids(change.users);
    Ok(match Kind::try_from(change.kind) {
        Ok(Kind::Add) => Change::Add(users),
        Ok(Kind::Remove) => Change::Remove(users),
        Ok(Kind::Leave) => Change::Leave,
        Ok(Kind::Promote) => Change::Promote(users),
        Ok(Kind::Demote) => Change::Demote(users),
        Ok(Kind::Subject) => Change::Subject(change.subject),
        Ok(Kind::Unspecified) | Err(_) => return Err(GroupWireError::Unknown("group change")),
    })
}

/// The reply carrying the event a group job answered with (`None`: it answered nothing).
pub fn reply_of(event: Option<MailboxEvent>) -> pb::GroupReply {
    let answer = match event {
        Some(MailboxEvent::GroupAnswer { answer, .. }) => match answer {
            Ok(GroupAnswer::Done) => Answer::Done(pb::Done {}),
            Ok(GroupAnswer::Info(info)) => Answer::Info(info_of(info)),
            Ok(GroupAnswer::List(groups)) => Answer::List(pb::GroupList {
                groups: strings(&groups),
            }),
            Ok(GroupAnswer::ReadBy {
                group_id,
                group_seq,
                read,
                delivered,
            }) => Answer::ReadBy(pb::ReadByReply {
                group_id: group_id.to_string(),
                group_seq,
                read: strings(&read),
                delivered: strings(&delivered),
            }),
            Err(GroupFailure::Refused(error)) => Answer::Refused(refusal_of(&error)),
            Err(GroupFailure::Storage) => Answer::Failed(reason(Reason::Storage)),
            Err(GroupFailure::Busy) => Answer::Failed(reason(Reason::Busy)),
        },
        Some(MailboxEvent::Appended { result, .. }) => match result {
            Ok((ack, duplicate)) => Answer::Posted(pb::AppendReply {
                seq: ack.seq,
                server_id: ack.server_id,
                timestamp_ms: ack.timestamp_ms,
                duplicate,
            }),
            Err(AppendFailure::NotAMember) => Answer::PostNotAMember(pb::Done {}),
            Err(AppendFailure::Storage) => Answer::PostFailed(reason(Reason::Storage)),
            Err(AppendFailure::Busy) => Answer::PostFailed(reason(Reason::Busy)),
        },
        Some(MailboxEvent::GroupRefused { error, .. }) => {
            Answer::ReceiptRefused(refusal_of(&error))
        }
        _ => Answer::None(pb::Done {}),
    };
    pb::GroupReply {
        answer: Some(answer),
    }
}

/// The event for the session that sent `job`, from its owner's reply; `None` when there is
/// nothing to tell it.
pub fn event_of(reply: pb::GroupReply, job: &GroupJob) -> Option<MailboxEvent> {
    let request_id = job.request_id;
    let answer = |answer| Some(MailboxEvent::GroupAnswer { request_id, answer });
    let tag = match &job.call {
        GroupCall::Post { tag, .. } => *tag,
        _ => 0,
    };
    let posted = |result| Some(MailboxEvent::Appended { tag, result });
    match reply.answer? {
        Answer::None(_) => None,
        Answer::Done(_) => answer(Ok(GroupAnswer::Done)),
        Answer::Info(info) => answer(Ok(GroupAnswer::Info(info_from(info)))),
        Answer::List(list) => answer(Ok(GroupAnswer::List(ids(list.groups)))),
        Answer::ReadBy(read_by) => answer(Ok(GroupAnswer::ReadBy {
            group_id: Id::from(read_by.group_id),
            group_seq: read_by.group_seq,
            read: ids(read_by.read),
            delivered: ids(read_by.delivered),
        })),
        Answer::Refused(refusal) => answer(Err(GroupFailure::Refused(error_from(&refusal)))),
        Answer::Failed(failed) if failed.reason() == Reason::Storage => {
            answer(Err(GroupFailure::Storage))
        }
        Answer::Failed(_) => answer(Err(GroupFailure::Busy)),
        Answer::Posted(ack) => posted(Ok((
            AckInfo {
                seq: ack.seq,
                server_id: ack.server_id,
                timestamp_ms: ack.timestamp_ms,
            },
            ack.duplicate,
        ))),
        Answer::PostNotAMember(_) => posted(Err(AppendFailure::NotAMember)),
        Answer::PostFailed(failed) if failed.reason() == Reason::Storage => {
            posted(Err(AppendFailure::Storage))
        }
        Answer::PostFailed(_) => posted(Err(AppendFailure::Busy)),
        Answer::ReceiptRefused(refusal) => Some(MailboxEvent::GroupRefused {
            group: job.group.clone(),
            error: error_from(&refusal),
        }),
    }
}

fn reason(reason: Reason) -> pb::MailboxRefused {
    pb::MailboxRefused {
        reason: reason.into(),
    }
}

fn info_of(info: GroupInfo) -> pb::GroupInfoReply {
    pb::GroupInfoReply {
        group_id: info.group_id.to_string(),
        subject: info.subject,
        created_ms: info.created_ms,
        last_seq: info.last_seq,
        members: info
            .members
            .into_iter()
            .map(|(user, role, joined_seq)| pb::GroupMemberInfo {
                user: user.to_string(),
                admin: role == Role::Admin,
                joined_seq,
            })
            .collect(),
    }
}

fn info_from(info: pb::GroupInfoReply) -> GroupInfo {
    GroupInfo {
        group_id: Id::from(info.group_id),
        subject: info.subject,
        created_ms: info.created_ms,
        last_seq: info.last_seq,
        members: info
            .members
            .into_iter()
            .map(|member| {
                let role = if member.admin {
                    Role::Admin
                } else {
                    Role::Member
                };
                (Id::from(member.user), role, member.joined_seq)
            })
            .collect(),
    }
}

fn refusal_of(error: &GroupError) -> pb::GroupRefusal {
    use pb::group_refusal::Code;
    let (code, max, invalid) = match error {
        GroupError::NotAMember => (Code::NotAMember, 0, String::new()),
        GroupError::NotAdmin => (Code::NotAdmin, 0, String::new()),
        GroupError::Full { max } => (Code::Full, *max as u64, String::new()),
        GroupError::Invalid(what) => (Code::Invalid, 0, (*what).to_owned()),
        GroupError::Exists => (Code::Exists, 0, String::new()),
    };
    pb::GroupRefusal {
        code: code.into(),
        max,
        invalid,
    }
}

fn error_from(refusal: &pb::GroupRefusal) -> GroupError {
    use pb::group_refusal::Code;
    match refusal.code() {
        Code::NotAdmin => GroupError::NotAdmin,
        Code::Full => GroupError::Full {
            max: usize::try_from(refusal.max).unwrap_or(usize::MAX),
        },
        Code::Invalid => GroupError::Invalid(GroupError::known_invalid(&refusal.invalid)),
        Code::Exists => GroupError::Exists,
        Code::NotAMember | Code::Unspecified => GroupError::NotAMember,
    }
}

fn strings(ids: &[Id]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

fn ids(strings: Vec<String>) -> Vec<Id> {
    strings.into_iter().map(Id::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::EventSink;

    #[derive(Debug)]
    struct Nowhere;

    impl EventSink for Nowhere {
        fn send(&self, _event: MailboxEvent) -> bool {
            false
        }
    }

    fn job(call: GroupCall) -> GroupJob {
        GroupJob {
            group: Id::from("g1"),
            actor: Id::from("alice"),
            device: Id::from("phone"),
            call,
            request_id: 7,
            reply: None,
        }
    }

    fn round_trip(call: GroupCall) -> GroupCall {
        let wire = call_of(&job(call));
        let back = job_of(wire, Arc::new(Nowhere)).expect("decodes");
        assert_eq!(
            (back.group.as_ref(), back.actor.as_ref(), back.request_id),
            ("g1", "alice", 7)
        );
        back.call
    }

    #[test]
    fn every_request_crosses_unchanged() {
        let calls = [
            GroupCall::Create {
                subject: "s".into(),
                members: vec![Id::from("bob")],
            },
            GroupCall::Change(Change::Add(vec![Id::from("bob")])),
            GroupCall::Change(Change::Leave),
            GroupCall::Change(Change::Subject("new".into())),
            GroupCall::Info {
                after: Some(Id::from("b")),
            },
            GroupCall::Info { after: None },
            GroupCall::ReadBy {
                group_seq: 3,
                after: None,
            },
            GroupCall::Typing(true),
        ];
        for call in calls {
            let text = format!("{call:?}");
            assert_eq!(format!("{:?}", round_trip(call)), text);
        }
    }

    #[test]
    fn answers_come_back_as_the_local_event_with_the_sessions_own_ids() {
        let info = GroupInfo {
            group_id: Id::from("g1"),
            subject: "s".into(),
            created_ms: 5,
            last_seq: 9,
            members: vec![(Id::from("alice"), Role::Admin, 1)],
        };
        let reply = reply_of(Some(MailboxEvent::GroupAnswer {
            request_id: 0,
            answer: Ok(GroupAnswer::Info(info.clone())),
        }));
        let event = event_of(reply, &job(GroupCall::Info { after: None }));
        assert!(matches!(
            event,
            Some(MailboxEvent::GroupAnswer { request_id: 7, answer: Ok(GroupAnswer::Info(got)) }) if got == info
        ));
        let refused = reply_of(Some(MailboxEvent::GroupAnswer {
            request_id: 0,
            answer: Err(GroupFailure::Refused(GroupError::Invalid(
                "subject over 256 bytes",
            ))),
        }));
        let event = event_of(refused, &job(GroupCall::Info { after: None }));
        assert!(matches!(
            event,
            Some(MailboxEvent::GroupAnswer {
                answer: Err(GroupFailure::Refused(GroupError::Invalid(
                    "subject over 256 bytes"
                ))),
                ..
            })
        ));
        let receipt = job(GroupCall::Receipt {
            kind: crate::message::ReceiptKind::Read,
            up_to: 3,
        });
        assert!(event_of(reply_of(None), &receipt).is_none());
        let refused = reply_of(Some(MailboxEvent::GroupRefused {
            group: Id::from("g1"),
            error: GroupError::NotAMember,
        }));
        assert!(matches!(
            event_of(refused, &receipt),
            Some(MailboxEvent::GroupRefused {
                error: GroupError::NotAMember,
                ..
            })
        ));
    }
}
