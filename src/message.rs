//! Domain types of the mailbox: what a user's mailbox holds, independent of the wire format.

mod group;

pub use group::{GroupContent, GroupEntry, GroupEvent, GroupEventKind, GroupReceiptNotice};

use std::sync::Arc;

use bytes::Bytes;

/// A user or device id (validated by [`crate::token::valid_id`]); cheap to clone.
pub type Id = Arc<str>;

/// What a 1:1 message body is; mirrors the wire `MessageKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Opaque application bytes.
    Binary,
    /// A reference to a finished upload on the media server (an encoded `MediaRef`, checked by
    /// [`crate::media::Media::share`]).
    Media,
}

/// Which receipt; mirrors the wire `ReceiptKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// The messages reached the device.
    Delivered,
    /// The user has read the messages.
    Read,
}

/// One entry of a user's mailbox, numbered by that mailbox's sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position in the mailbox: 1, 2, 3... without gaps.
    pub seq: u64,
    /// When the server accepted it, milliseconds since the Unix epoch (wall clock; what users
    /// see, never used to decide what may be released).
    pub timestamp_ms: u64,
    /// When this process appended it to the mailbox, on the process's monotonic clock
    /// ([`crate::clock::monotonic_ms`]); 0 for entries read back from disk at start. Write-back
    /// ages entries by this stamp, so a wall-clock step cannot make an entry look older than it
    /// is and get its journal record released before the entry reaches the store. Not stored.
    pub accepted_ms: u64,
    /// What it carries.
    pub payload: Payload,
}

/// The contents of a mailbox entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A chat message.
    Message(ChatMessage),
    /// A delivered/read receipt from a peer.
    Receipt(ReceiptNotice),
    /// An entry of a group's log, copied to a member (shared by all members' copies).
    Group(Arc<GroupEntry>),
    /// A group member's receipt for the mailbox owner's group messages.
    GroupReceipt(GroupReceiptNotice),
}

/// A chat message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Server-wide unique id.
    pub server_id: u64,
    /// Author.
    pub from_user: Id,
    /// Author's device.
    pub from_device: Id,
    /// Addressee (differs from the mailbox owner for copies of the owner's own messages).
    pub to_user: Id,
    /// The author's id for it.
    pub client_msg_id: Arc<str>,
    /// Body type.
    pub kind: MessageKind,
    /// Body bytes.
    pub body: Bytes,
}

/// A receipt as stored in the mailbox of the author of the covered messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptNotice {
    /// Who received or read.
    pub from_user: Id,
    /// On which device.
    pub from_device: Id,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Covers the author's messages with seq <= this in `from_user`'s mailbox.
    pub up_to_seq: u64,
}

impl Entry {
    /// Roughly the bytes this entry takes on the wire, for byte budgets.
    pub fn approximate_bytes(&self) -> usize {
        const ENVELOPE: usize = 96;
        match &self.payload {
            Payload::Message(m) => {
                ENVELOPE
                    + m.body.len()
                    + m.client_msg_id.len()
                    + m.from_user.len()
                    + m.from_device.len()
                    + m.to_user.len()
            }
            Payload::Receipt(r) => ENVELOPE + r.from_user.len() + r.from_device.len(),
            Payload::Group(g) => ENVELOPE + g.approximate_bytes(),
            Payload::GroupReceipt(r) => {
                ENVELOPE + r.group_id.len() + r.from_user.len() + r.from_device.len()
            }
        }
    }

    /// Roughly the memory this entry takes in the mailbox cache: the wire size plus the
    /// allocation, the log slot and the dedup record.
    pub fn cache_bytes(&self) -> usize {
        const HELD: usize = 160;
        self.approximate_bytes() + HELD
    }

    /// The device that produced this entry, for entries a device must not receive back.
    pub fn origin(&self) -> (&Id, &Id) {
        match &self.payload {
            Payload::Message(m) => (&m.from_user, &m.from_device),
            Payload::Receipt(r) => (&r.from_user, &r.from_device),
            Payload::Group(g) => (&g.from_user, &g.from_device),
            Payload::GroupReceipt(r) => (&r.from_user, &r.from_device),
        }
    }
}
