//! Domain types of group chats as they travel through mailboxes: an entry of a group's log
//! (a message or a membership/subject event) and a member's receipt for an author.

use std::sync::Arc;

use bytes::Bytes;

use super::{Id, MessageKind, ReceiptKind};

/// One entry of a group's log, shared (one allocation) by every member's mailbox it is copied
/// to.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    /// The group.
    pub group_id: Id,
    /// Position in the group's log.
    pub group_seq: u64,
    /// Server-wide id.
    pub server_id: u64,
    /// Author of a message, or the member who made a change.
    pub from_user: Id,
    /// The device it came from.
    pub from_device: Id,
    /// The author's id for a message (empty for events).
    pub client_msg_id: Arc<str>,
    /// Acceptance time, ms since the epoch.
    pub timestamp_ms: u64,
    /// A message or an event.
    pub content: GroupContent,
    /// Kept in the group's log in the store, so members' stored copies hold only a reference
    /// (large groups).
    pub logged: bool,
}

/// What a group log entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupContent {
    /// A message to the group.
    Message {
        /// Body type.
        kind: MessageKind,
        /// Body.
        body: Bytes,
    },
    /// A change to the group.
    Event(GroupEvent),
}

/// A change to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    /// What changed.
    pub kind: GroupEventKind,
    /// Whom it concerns (the initial members for `Created`).
    pub users: Vec<Id>,
    /// The subject, for `Created` and `Subject`.
    pub subject: String,
}

/// Kinds of group changes; mirrors the wire `GroupEventKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEventKind {
    /// The group was created.
    Created,
    /// Members were added.
    Added,
    /// Members were removed by an admin.
    Removed,
    /// The actor left.
    Left,
    /// Members became admins.
    Promoted,
    /// Admins became plain members.
    Demoted,
    /// The subject changed.
    Subject,
}

/// A member's receipt for group messages, stored in an author's mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReceiptNotice {
    /// The group.
    pub group_id: Id,
    /// The member.
    pub from_user: Id,
    /// The member's device.
    pub from_device: Id,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Covers the group's entries up to this group seq.
    pub up_to_group_seq: u64,
}

impl GroupEntry {
    /// Roughly the bytes of the entry's variable parts.
    pub fn approximate_bytes(&self) -> usize {
        let content = match &self.content {
            GroupContent::Message { body, .. } => body.len(),
            GroupContent::Event(event) => {
                event.subject.len() + event.users.iter().map(|u| u.len() + 2).sum::<usize>()
            }
        };
        content
            + self.group_id.len()
            + self.from_user.len()
            + self.from_device.len()
            + self.client_msg_id.len()
    }
}
