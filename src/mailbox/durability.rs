//! Where a worker's records become durable: the node's journal (one node, or an island of one),
//! or, when slots are replicated, the slot group of the record's key (durable once a majority
//! of the island has it on disk). Either way a record's completion says whether it is durable,
//! and a record refused outright drops its completion unrun.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::journal::Journal;

/// A completion: `true` once the record is durable, `false` when its fate is unknown (the
/// worker withdraws what it made; if the record is committed after all, it is applied again as
/// any other node's record would be).
pub type Done = Box<dyn FnOnce(bool) + Send>;

/// A slot group's applied point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The group.
    pub group: u64,
    /// The log index of the point (marks of one group are ordered by it).
    pub index: u64,
    /// The point as the group's replication encodes it.
    pub point: Bytes,
}

/// Replicates records through the slot groups.
pub trait Replicate: Send + Sync + 'static {
    /// Queues `record` about `key` for the slot group of `key`'s slot; `done` runs once its
    /// fate is known. `Err` returns `done` unrun (nothing queued: not this node's to write, or
    /// the queue is full).
    fn append(&self, key: &str, record: Bytes, done: Done) -> Result<(), Done>;
    /// Every group's applied point now: all it covers is in the stores once a write-back
    /// pass that starts after this call is checkpointed (`checkpoint.rs` saves the marks with
    /// that checkpoint).
    fn marks(&self) -> Vec<Mark>;
    /// The checkpoint that saved `marks` is durable: each group's log may be released up to
    /// its mark.
    fn checkpointed(&self, marks: Vec<Mark>);
}

/// A worker's way to make its records durable.
#[derive(Clone)]
pub enum Durability {
    /// This node's journal.
    Journal(Arc<Journal>),
    /// The slot groups (set once the node joined its cluster; refused before).
    Replicated(Arc<OnceLock<Arc<dyn Replicate>>>),
}

/// A record was refused outright: its completion was dropped unrun.
#[derive(Debug, thiserror::Error)]
#[error("record refused")]
pub struct Refused;

impl Durability {
    /// Writes `record` about `key` and calls `done(durable)` once its fate is known. On `Err`,
    /// `done` is dropped unrun.
    pub fn append_with(
        &self,
        key: &str,
        record: Bytes,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), Refused> {
        match self {
            Durability::Journal(journal) => journal
                .append_with(record, move |result| done(result.is_ok()))
                .map_err(|_| Refused),
            Durability::Replicated(cell) => match cell.get() {
                Some(replicate) => replicate
                    .append(key, record, Box::new(done))
                    .map_err(|_| Refused),
                None => Err(Refused),
            },
        }
    }
}
