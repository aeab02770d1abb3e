//! The Raft groups that replicate slots (one per slot, over the slot's island): their type
//! configuration, entries and the log engine they share. Not wired to the mailbox service yet:
//! this is the replication core the slot groups are built on.
//!
//! An entry's application data is a [`SlotCommand`]: mailbox records in the order the slot's
//! worker made them (many per entry: the worker's group commit), the same records the journal
//! holds today, so a follower applies exactly what recovery replays.

mod convert;
pub mod log_engine;

use std::fmt;

use bytes::Bytes;

pub use log_engine::{GroupLog, LogEngine, LogEngineError};

/// The mailbox records of one entry of a slot group's log, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotCommand {
    /// `tern.storage.v1.MailboxRecord`s.
    pub records: Vec<Bytes>,
}

impl fmt::Display for SlotCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mailbox records", self.records.len())
    }
}

openraft::declare_raft_types!(
    /// The type configuration of a slot group: mailbox records as entries, node ids as `u64`,
    /// a member's mesh address as its node.
    pub SlotTypes:
        D = SlotCommand,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
);

#[cfg(test)]
mod conformance;
