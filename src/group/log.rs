//! Reading logged group entries back. Entries of large groups are kept once in the group's log
//! in the store (`glog/<group>/<seq>` records of the group's shard); members' stored copies are
//! references to them, resolved here when a copy is loaded at recovery or paged in.
//!
//! The log is pruned up to the group's low-water mark (every mailbox that got a copy of those
//! entries has acked it), recorded in `glogpruned/<group>`; a reference below it whose entry
//! is gone belongs to a copy its devices acked (a cursor lost in a crash) and is skipped.

use std::sync::Arc;

use hashbrown::HashMap;

use super::record::{decode_logged, log_key, pruned_key};
use crate::mailbox::record::RecordError;
use crate::message::{Entry, GroupEntry, Id, Payload};
use crate::shard::{key_hash, shard_of};
use crate::store::{StoreError, Stores};

/// Why a logged entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store failed.
    #[error("group log: {0}")]
    Store(#[from] StoreError),
    /// The stored entry is corrupt.
    #[error("group log: {0}")]
    Record(#[from] RecordError),
}

/// The member's copy (at `seq` in its mailbox) of a group entry, read back from disk.
pub fn copy_of(seq: u64, timestamp_ms: u64, entry: Arc<GroupEntry>) -> Entry {
    Entry {
        seq,
        timestamp_ms,
        accepted_ms: 0,
        payload: Payload::Group(entry),
    }
}

/// Reads logged entries during recovery (blocking), each once.
pub struct LogReader<'a> {
    stores: &'a Stores,
    known: HashMap<(Id, u64), Arc<GroupEntry>>,
}

impl<'a> LogReader<'a> {
    /// A reader over `stores`.
    pub fn new(stores: &'a Stores) -> Self {
        Self {
            stores,
            known: HashMap::new(),
        }
    }

    /// Notes an entry replayed from the journal, so copies of it need no store read.
    pub fn remember(&mut self, entry: &Arc<GroupEntry>) {
        if entry.logged {
            self.known
                .insert((entry.group_id.clone(), entry.group_seq), entry.clone());
        }
    }

    /// Entry `group_seq` of `group_id`; `None` when the log does not have it.
    pub fn read(
        &mut self,
        group_id: &Id,
        group_seq: u64,
    ) -> Result<Option<Arc<GroupEntry>>, LogError> {
        if let Some(entry) = self.known.get(&(group_id.clone(), group_seq)) {
            return Ok(Some(entry.clone()));
        }
        let shard = shard_of(key_hash(group_id.as_bytes()));
        let value = self
            .stores
            .get_record(shard, &log_key(group_id, group_seq))?
            .into_receiver()
            .blocking_recv()
            .map_err(|_| StoreError::Closed)??;
        let Some(value) = value else {
            return Ok(None);
        };
        let entry = Arc::new(decode_logged(value)?);
        self.known
            .insert((group_id.clone(), group_seq), entry.clone());
        Ok(Some(entry))
    }
}

/// A logged entry as looked up.
#[derive(Debug)]
pub enum Logged {
    /// The entry.
    Entry(Arc<GroupEntry>),
    /// Pruned: every copy of it was acked.
    Pruned,
    /// Not in the log (yet: the next write-back pass writes it).
    Missing,
}

/// Entry `group_seq` of `group_id` from the store, from an async context.
pub async fn read(stores: &Stores, group_id: &Id, group_seq: u64) -> Result<Logged, LogError> {
    let shard = shard_of(key_hash(group_id.as_bytes()));
    let get = async |key: Vec<u8>| -> Result<Option<bytes::Bytes>, StoreError> {
        stores
            .get_record(shard, &key)?
            .into_receiver()
            .await
            .map_err(|_| StoreError::Closed)?
    };
    if let Some(value) = get(log_key(group_id, group_seq)).await? {
        return Ok(Logged::Entry(Arc::new(decode_logged(value)?)));
    }
    let pruned = get(pruned_key(group_id))
        .await?
        .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    Ok(if group_seq <= pruned {
        Logged::Pruned
    } else {
        Logged::Missing
    })
}
