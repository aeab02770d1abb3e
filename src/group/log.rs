//! Reading logged group entries back. Entries of large groups are kept once in the group's log
//! in the store (`glog/<group>/<seq>` records of the group's shard); members' stored copies are
//! references to them, resolved here when a copy is loaded at recovery or paged in.

use std::sync::Arc;

use hashbrown::HashMap;

use super::record::{decode_logged, log_key};
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

/// Entry `group_seq` of `group_id` from the store, from an async context.
pub async fn read(
    stores: &Stores,
    group_id: &Id,
    group_seq: u64,
) -> Result<Option<Arc<GroupEntry>>, LogError> {
    let shard = shard_of(key_hash(group_id.as_bytes()));
    let value = stores
        .get_record(shard, &log_key(group_id, group_seq))?
        .into_receiver()
        .await
        .map_err(|_| StoreError::Closed)??;
    match value {
        Some(value) => Ok(Some(Arc::new(decode_logged(value)?))),
        None => Ok(None),
    }
}
