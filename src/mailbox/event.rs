//! What the mailbox service (and the directory of who is online) tells a session, in its own
//! words, and where it sends it: the session layer translates events into frames.

use std::fmt;
use std::sync::Arc;

use super::AckInfo;
use super::group_ops::{GroupAnswer, GroupFailure};
use crate::group::GroupError;
use crate::message::{Entry, Id};

/// Why an append was not acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFailure {
    /// The journal could not make it durable (disk full, I/O error): STORAGE_FAILURE.
    Storage,
    /// A queue was full: OVERLOADED, retry.
    Busy,
    /// A group post by a user who is not a member: NOT_A_MEMBER.
    NotAMember,
}

/// One answer or push for a session.
#[derive(Debug)]
pub enum MailboxEvent {
    /// A new entry of the session's user's mailbox, pushed live.
    Push(Arc<Entry>),
    /// The answer to a mailbox read.
    Batch {
        /// Entries after the requested seq, in order.
        entries: Vec<Arc<Entry>>,
        /// The mailbox's highest seq at the time of the read.
        last_seq: u64,
        /// When `entries` is empty: every seq up to here that the read did not return is gone
        /// (acked by every device, or never stored), so delivery may skip past it.
        read_upto: u64,
    },
    /// A mailbox read failed in the store: retry shortly.
    FetchFailed,
    /// An append of the session's finished.
    Appended {
        /// The tag the session gave the append.
        tag: u64,
        /// Where it was stored and whether it had been stored before (a retry), or why not.
        result: Result<(AckInfo, bool), AppendFailure>,
    },
    /// The number of known devices of the session's user changed.
    Devices(usize),
    /// Another user is typing to this one (in `group`, when set).
    Typing {
        /// Who.
        from_user: Id,
        /// Started or stopped.
        typing: bool,
        /// The group they type in.
        group: Option<Id>,
    },
    /// The answer to a group request.
    GroupAnswer {
        /// The client's request id.
        request_id: u64,
        /// What the group's worker answered.
        answer: Result<GroupAnswer, GroupFailure>,
    },
    /// The group's worker refused a group frame that has no answer of its own (a receipt).
    GroupRefused {
        /// The group the frame named.
        group: Id,
        /// Why.
        error: GroupError,
    },
    /// A watched user came online or went offline.
    Presence {
        /// Who.
        user: Id,
        /// Online now?
        online: bool,
        /// Last seen (ms since the epoch) when offline.
        last_seen_ms: u64,
    },
    /// Another login of the same device took this session's place.
    Replaced,
    /// An operator signed the session's device (or its whole user) out: it closes with
    /// TOKEN_REVOKED.
    Revoked(super::revocation::Revoked),
    /// The answer to a push registration request ([`super::MailboxOp::Push`]): durable, or
    /// why not.
    PushAnswer {
        /// The client's request id.
        request_id: u64,
        /// Done, or why not.
        result: Result<(), super::pushers::PushFailure>,
    },
    /// Pushes to this session were lost on their way (a full link to its node): it reads its
    /// mailbox to catch up.
    Missed,
}

/// Where a session's events go: its reply address. A session on this node is reached through
/// its connection; one on another node would be reached through the mesh.
pub trait EventSink: Send + Sync + fmt::Debug {
    /// Hands `event` over; false when the session is gone (or not yet logged in).
    fn send(&self, event: MailboxEvent) -> bool;
    /// For a session on another node: that node and the incarnation of its process when the
    /// session registered (so its entries can be dropped when it restarts or goes down).
    fn origin(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A session's reply address, cheap to clone.
pub type SessionHandle = Arc<dyn EventSink>;
