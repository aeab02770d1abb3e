//! The Raft groups that replicate slots (over the slot's island): their type configuration,
//! entries, the log engine they share, their state machine (the node's [`SlotApplier`]), their
//! coalesced network and [`SlotGroups`], the runtime that starts them, takes proposals, serves
//! peers and keeps leaders where their groups prefer.
//!
//! An entry's application data is a [`SlotCommand`]: mailbox records in the order the slot's
//! worker made them (many per entry: the worker's group commit), the same records the journal
//! holds today, so a follower applies exactly what recovery replays.

mod chunks;
mod coalesce;
mod convert;
pub mod groups;
pub mod log_engine;
mod network;
pub mod state_machine;
pub mod telemetry;

use std::fmt;

use bytes::Bytes;

pub use groups::{SlotError, SlotGroups, SlotGroupsConfig};
pub use log_engine::{GroupLog, LogEngine, LogEngineError};
pub use state_machine::SlotApplier;

/// The mailbox records of one entry of a slot group's log, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotCommand {
    /// `tern.storage.v1.MailboxRecord`s.
    pub records: Vec<Bytes>,
    /// The incarnation of the process that proposed it: that process's state already holds
    /// the records, every other applies them.
    pub origin: u64,
    /// The proposer's number for the entry.
    pub serial: u64,
    /// `tern.storage.v1.MediaChange`s (an entry carries records or media changes).
    pub media: Vec<Bytes>,
}

impl fmt::Display for SlotCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mailbox records, {} media changes",
            self.records.len(),
            self.media.len()
        )
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
        AsyncRuntime = super::runtime::MetaRuntime,
);

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests;
