//! Conversions between group domain values and the v1 wire frames.

use crate::group::{GroupError, Role};
use crate::mailbox::group_ops::{GroupAnswer, GroupInfo};
use crate::message::{GroupContent, GroupEntry, GroupEventKind};
use crate::proto::v1::{self as wire, ErrorCode, deliver, group_response};

/// The Deliver payload of a group log entry.
pub fn deliver_group(entry: &GroupEntry) -> deliver::Payload {
    match &entry.content {
        GroupContent::Message { kind, body } => {
            deliver::Payload::GroupMessage(wire::GroupMessage {
                group_id: entry.group_id.to_string(),
                group_seq: entry.group_seq,
                server_id: entry.server_id,
                from_user: entry.from_user.to_string(),
                from_device: entry.from_device.to_string(),
                client_msg_id: entry.client_msg_id.to_string(),
                kind: super::wire::message_kind_to_wire(*kind).into(),
                body: body.clone(),
            })
        }
        GroupContent::Event(event) => deliver::Payload::GroupEvent(wire::GroupEvent {
            group_id: entry.group_id.to_string(),
            group_seq: entry.group_seq,
            kind: event_kind_to_wire(event.kind).into(),
            actor: entry.from_user.to_string(),
            users: event.users.iter().map(ToString::to_string).collect(),
            subject: event.subject.clone(),
        }),
    }
}

/// The wire event kind.
pub fn event_kind_to_wire(kind: GroupEventKind) -> wire::GroupEventKind {
    match kind {
        GroupEventKind::Created => wire::GroupEventKind::Created,
        GroupEventKind::Added => wire::GroupEventKind::Added,
        GroupEventKind::Removed => wire::GroupEventKind::Removed,
        GroupEventKind::Left => wire::GroupEventKind::Left,
        GroupEventKind::Promoted => wire::GroupEventKind::Promoted,
        GroupEventKind::Demoted => wire::GroupEventKind::Demoted,
        GroupEventKind::Subject => wire::GroupEventKind::Subject,
    }
}

/// The domain event kind; `None` for unspecified or unknown values.
pub fn event_kind_from_wire(kind: i32) -> Option<GroupEventKind> {
    Some(match wire::GroupEventKind::try_from(kind).ok()? {
        wire::GroupEventKind::Created => GroupEventKind::Created,
        wire::GroupEventKind::Added => GroupEventKind::Added,
        wire::GroupEventKind::Removed => GroupEventKind::Removed,
        wire::GroupEventKind::Left => GroupEventKind::Left,
        wire::GroupEventKind::Promoted => GroupEventKind::Promoted,
        wire::GroupEventKind::Demoted => GroupEventKind::Demoted,
        wire::GroupEventKind::Subject => GroupEventKind::Subject,
        wire::GroupEventKind::Unspecified => return None,
    })
}

/// The error code and message for a refused group operation.
pub fn group_error(error: &GroupError) -> (ErrorCode, String) {
    let code = match error {
        GroupError::NotAMember => ErrorCode::NotAMember,
        GroupError::NotAdmin => ErrorCode::NotAdmin,
        GroupError::Full { .. } => ErrorCode::GroupFull,
        GroupError::Invalid(_) | GroupError::Exists => ErrorCode::InvalidArgument,
    };
    (code, error.to_string())
}

/// The GroupResponse for an answer.
pub fn response(
    request_id: u64,
    answer: Result<GroupAnswer, (ErrorCode, String)>,
) -> wire::GroupResponse {
    let (error, message, result) = match answer {
        Ok(GroupAnswer::Done) => (ErrorCode::Unspecified, String::new(), None),
        Ok(GroupAnswer::Info(info)) => (
            ErrorCode::Unspecified,
            String::new(),
            Some(group_response::Result::Info(info_to_wire(info))),
        ),
        Ok(GroupAnswer::List(groups)) => (
            ErrorCode::Unspecified,
            String::new(),
            Some(group_response::Result::List(wire::GroupList {
                group_ids: groups.iter().map(ToString::to_string).collect(),
            })),
        ),
        Ok(GroupAnswer::ReadBy {
            group_id,
            group_seq,
            read,
            delivered,
        }) => (
            ErrorCode::Unspecified,
            String::new(),
            Some(group_response::Result::ReadBy(wire::ReadByList {
                group_id: group_id.to_string(),
                group_seq,
                read: read.iter().map(ToString::to_string).collect(),
                delivered: delivered.iter().map(ToString::to_string).collect(),
            })),
        ),
        Err((code, message)) => (code, message, None),
    };
    wire::GroupResponse {
        request_id,
        error: error.into(),
        message,
        result,
    }
}

fn info_to_wire(info: GroupInfo) -> wire::GroupInfo {
    wire::GroupInfo {
        group_id: info.group_id.to_string(),
        subject: info.subject,
        created_ms: info.created_ms,
        last_seq: info.last_seq,
        members: info
            .members
            .into_iter()
            .map(|(user, role, joined_seq)| wire::GroupMember {
                user: user.to_string(),
                role: match role {
                    Role::Admin => wire::GroupRole::Admin,
                    Role::Member => wire::GroupRole::Member,
                }
                .into(),
                joined_seq,
            })
            .collect(),
    }
}
