//! Group operations as the mailbox workers receive them, and their answers.

use std::sync::Arc;

use bytes::Bytes;

use crate::group::{Change, GroupError, Role};
use crate::mailbox::event::SessionHandle;
use crate::message::{Id, MessageKind, ReceiptKind};

/// What a member asks of a group.
#[derive(Debug)]
pub enum GroupCall {
    /// Create the group (the job's group id is new) with the actor as admin.
    Create {
        /// Subject.
        subject: String,
        /// Initial members besides the creator.
        members: Vec<Id>,
    },
    /// Change members, roles or the subject.
    Change(Change),
    /// Members, roles and subject: the members after the page cursor.
    Info {
        /// Page cursor (see [`on_page`]).
        after: Option<Id>,
    },
    /// Who read (or received) the entry at this group seq: the members after the page cursor.
    ReadBy {
        /// The entry.
        group_seq: u64,
        /// Page cursor (see [`on_page`]).
        after: Option<Id>,
    },
    /// Post a message.
    Post {
        /// The author's id for it.
        client_msg_id: Arc<str>,
        /// Server-wide id, assigned by the session.
        server_id: u64,
        /// Body type.
        kind: MessageKind,
        /// Body.
        body: Bytes,
        /// The session's tag for the pending send.
        tag: u64,
    },
    /// The actor received or read the group's entries up to a group seq.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// Up to this group seq.
        up_to: u64,
    },
    /// The actor started or stopped typing.
    Typing(bool),
}

/// One group operation.
#[derive(Debug)]
pub struct GroupJob {
    /// The group.
    pub group: Id,
    /// The member asking.
    pub actor: Id,
    /// The member's device.
    pub device: Id,
    /// What is asked.
    pub call: GroupCall,
    /// The client's request id, echoed in the answer.
    pub request_id: u64,
    /// The session to answer.
    pub reply: Option<SessionHandle>,
}

/// True when `id` belongs to the page that follows the cursor `after`: ids sort as bytes, and a
/// page holds the ids after the last one of the page before (`None`: from the first). Answers
/// are built from this page on and cut to fit one frame by the session.
pub fn on_page(after: Option<&Id>, id: &str) -> bool {
    after.is_none_or(|after| id > &**after)
}

/// The answer to a group request.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAnswer {
    /// Done (a change, once durable).
    Done,
    /// A group's details.
    Info(GroupInfo),
    /// Group ids.
    List(Vec<Id>),
    /// Who read and who received an entry.
    ReadBy {
        /// The group.
        group_id: Id,
        /// The entry.
        group_seq: u64,
        /// Members whose read position covers it.
        read: Vec<Id>,
        /// Members whose delivered position covers it, but not their read position.
        delivered: Vec<Id>,
    },
}

/// Why a group request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFailure {
    /// The rules refuse it.
    Refused(GroupError),
    /// The journal could not make it durable.
    Storage,
    /// A queue was full: retry.
    Busy,
}

/// A group's details.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// Group id.
    pub group_id: Id,
    /// Subject.
    pub subject: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Highest group seq.
    pub last_seq: u64,
    /// (user, role, joined group seq), ordered by user.
    pub members: Vec<(Id, Role, u64)>,
}
