//! Conversions between group domain values and the v1 wire frames.

use crate::group::{GroupError, Role};
use crate::mailbox::group_ops::{GroupAnswer, GroupInfo};
use crate::message::{GroupContent, GroupEntry};
use crate::proto::kinds::event_kind_to_wire;
use crate::proto::v1::{self as wire, ErrorCode, deliver, group_response};
use prost::Message as _;

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

/// The GroupResponse for an answer, paged to fit in one frame of `max_frame` bytes. The worker
/// answered from the request's page cursor on ([`crate::mailbox::group_ops::on_page`]), in
/// id order; a list here holds as many of those as fit, and `more` says whether others follow.
/// So no answer outgrows the frame limit, whatever the group's size or the user's number of
/// groups.
pub fn response(
    request_id: u64,
    answer: Result<GroupAnswer, (ErrorCode, String)>,
    max_frame: usize,
) -> wire::GroupResponse {
    let mut response = wire::GroupResponse {
        request_id,
        error: ErrorCode::Unspecified.into(),
        message: String::new(),
        result: None,
        retry_after_ms: 0,
    };
    match answer {
        Ok(GroupAnswer::Done) => {}
        Ok(GroupAnswer::Info(info)) => {
            let mut info = info_to_wire(info);
            let members = std::mem::take(&mut info.members);
            response.result = Some(group_response::Result::Info(info));
            let costs = members.iter().map(|m| message_len(5, m));
            let fit = fitting(&response, costs, max_frame);
            if let Some(group_response::Result::Info(info)) = &mut response.result {
                info.more = fit < members.len();
                info.members = members;
                info.members.truncate(fit);
            }
        }
        Ok(GroupAnswer::List(groups)) => {
            let groups: Vec<String> = groups.iter().map(ToString::to_string).collect();
            response.result = Some(group_response::Result::List(wire::GroupList::default()));
            let fit = fitting(
                &response,
                groups.iter().map(|g| string_len(1, g)),
                max_frame,
            );
            if let Some(group_response::Result::List(list)) = &mut response.result {
                list.more = fit < groups.len();
                list.group_ids = groups;
                list.group_ids.truncate(fit);
            }
        }
        Ok(GroupAnswer::ReadBy {
            group_id,
            group_seq,
            read,
            delivered,
        }) => {
            // One page over both lists, merged in user order.
            let mut merged: Vec<(&str, bool)> = read
                .iter()
                .map(|user| (&**user, true))
                .chain(delivered.iter().map(|user| (&**user, false)))
                .collect();
            merged.sort_unstable();
            response.result = Some(group_response::Result::ReadBy(wire::ReadByList {
                group_id: group_id.to_string(),
                group_seq,
                ..Default::default()
            }));
            let costs = merged.iter().map(|(user, _)| string_len(3, user));
            let fit = fitting(&response, costs, max_frame);
            if let Some(group_response::Result::ReadBy(list)) = &mut response.result {
                list.more = fit < merged.len();
                for (user, is_read) in merged.into_iter().take(fit) {
                    let to = if is_read {
                        &mut list.read
                    } else {
                        &mut list.delivered
                    };
                    to.push(user.to_owned());
                }
            }
        }
        Err((code, message)) => {
            response.error = code.into();
            response.message = message;
        }
    }
    response
}

/// Bytes a nested list's page may grow the frame by, on top of its items: the length prefixes
/// of the enclosing messages lengthen (at most 2 bytes each for 3 levels) and `more` is set (2).
const PAGE_SLACK: usize = 8;

/// How many items (given by their encoded costs, in order) fit in the frame carrying
/// `response` (whose list is still empty) within `max_frame` bytes.
fn fitting(
    response: &wire::GroupResponse,
    costs: impl Iterator<Item = usize>,
    max_frame: usize,
) -> usize {
    let frame =
        super::wire::server_frame(wire::server_frame::Frame::GroupResponse(response.clone()));
    let mut used = frame.encoded_len() + PAGE_SLACK;
    let mut count = 0;
    for cost in costs {
        used += cost;
        if used > max_frame {
            break;
        }
        count += 1;
    }
    count
}

/// Encoded bytes of a string field.
fn string_len(tag: u32, value: &str) -> usize {
    prost::encoding::key_len(tag)
        + prost::encoding::encoded_len_varint(value.len() as u64)
        + value.len()
}

/// Encoded bytes of a message field.
fn message_len(tag: u32, value: &impl prost::Message) -> usize {
    prost::encoding::message::encoded_len(tag, value)
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
        more: false,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::mailbox::group_ops::on_page;
    use crate::message::Id;

    fn frame_len(response: &wire::GroupResponse) -> usize {
        super::super::wire::server_frame(wire::server_frame::Frame::GroupResponse(response.clone()))
            .encoded_len()
    }

    /// Paging from `after` to `after` returns every member once, in order, each page within
    /// the frame limit and as full as it can be.
    #[test]
    fn info_pages_fit_the_frame_and_cover_every_member() {
        const MAX: usize = 1024;
        let members: Vec<(Id, Role, u64)> = (0..100)
            .map(|i| (Id::from(format!("user-{i:03}").as_str()), Role::Member, i))
            .collect();
        let info = GroupInfo {
            group_id: Id::from("g1"),
            subject: "s".repeat(256),
            created_ms: 1,
            last_seq: 100,
            members: members.clone(),
        };
        let mut after: Option<Id> = None;
        let mut seen = Vec::new();
        loop {
            // The worker's part: the members from the cursor on.
            let mut page = info.clone();
            page.members
                .retain(|(user, _, _)| on_page(after.as_ref(), user));
            let response = response(7, Ok(GroupAnswer::Info(page)), MAX);
            assert!(frame_len(&response) <= MAX);
            let Some(group_response::Result::Info(page)) = response.result else {
                panic!("no info");
            };
            assert!(!page.members.is_empty());
            seen.extend(page.members.iter().map(|m| m.user.clone()));
            if !page.more {
                break;
            }
            // A full page: one more member would not have fitted.
            assert!(frame_len(&response_with_one_more(&page, &members)) + 8 > MAX);
            after = seen.last().map(|user| Id::from(user.as_str()));
        }
        let all: Vec<String> = members.iter().map(|m| m.0.to_string()).collect();
        assert_eq!(seen, all);
    }

    fn response_with_one_more(
        page: &wire::GroupInfo,
        members: &[(Id, Role, u64)],
    ) -> wire::GroupResponse {
        let mut page = page.clone();
        page.members.push(wire::GroupMember {
            user: members[0].0.to_string(),
            role: wire::GroupRole::Member.into(),
            joined_seq: 1,
        });
        wire::GroupResponse {
            request_id: 7,
            result: Some(group_response::Result::Info(page)),
            ..Default::default()
        }
    }

    /// Read-by pages merge both lists in user order.
    #[test]
    fn read_by_pages_cover_both_lists() {
        let ids = |range: std::ops::Range<usize>| -> Vec<Id> {
            range
                .map(|i| Id::from(format!("{}{i:03}", "u".repeat(60)).as_str()))
                .collect()
        };
        let (read, delivered) = (ids(0..40), ids(40..80));
        let mut after: Option<Id> = None;
        let mut seen = Vec::new();
        loop {
            // The worker's part: both lists from the cursor on.
            let from = |users: &[Id]| -> Vec<Id> {
                users
                    .iter()
                    .filter(|user| on_page(after.as_ref(), user))
                    .cloned()
                    .collect()
            };
            let answer = GroupAnswer::ReadBy {
                group_id: Id::from("g1"),
                group_seq: 3,
                read: from(&read),
                delivered: from(&delivered),
            };
            let response = response(1, Ok(answer), 1024);
            assert!(frame_len(&response) <= 1024);
            let Some(group_response::Result::ReadBy(page)) = response.result else {
                panic!("no read_by");
            };
            let mut users: Vec<String> = page.read.iter().chain(&page.delivered).cloned().collect();
            users.sort();
            seen.extend(users.iter().cloned());
            if !page.more {
                break;
            }
            after = users.last().map(|user| Id::from(user.as_str()));
        }
        let all: Vec<String> = read
            .iter()
            .chain(&delivered)
            .map(|u| u.to_string())
            .collect();
        assert_eq!(seen, all);
    }
}
