//! Opening the journals and rebuilding every mailbox from them before the node takes phones.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hashbrown::HashMap;

use super::log::Mailbox;
use super::record::{self, Record};
use crate::config::Config;
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::message::Id;
use crate::shard::{SHARDS, key_hash, shard_of, worker_of};

/// One mailbox and its durable watermark: entries above it are written but not yet fsynced, so
/// they are neither read nor pushed.
#[derive(Debug, Default)]
pub struct Slot {
    /// The mailbox.
    pub mailbox: Mailbox,
    /// Highest seq known durable (raised by journal completions).
    pub durable: Arc<AtomicU64>,
}

/// The opened journals and the mailboxes rebuilt from them, one map per dispatcher worker.
pub struct Storage {
    /// Journal `i` serves shards `s` with `s % count == i`.
    pub journals: Vec<Arc<Journal>>,
    /// Index `shard * workers_per_shard + worker`.
    pub recovered: Vec<HashMap<Id, Slot>>,
}

/// Why the node's storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A journal could not be opened or read.
    #[error("journal {index}: {source}")]
    Journal {
        /// Which journal.
        index: usize,
        /// The cause.
        source: JournalError,
    },
    /// A journal record could not be decoded.
    #[error("journal {index}, record {lsn}: {source}")]
    Record {
        /// Which journal.
        index: usize,
        /// The record's LSN.
        lsn: u64,
        /// The cause.
        source: record::RecordError,
    },
}

impl Storage {
    /// Opens `node.data_dir/journal-N` for every journal and replays them. Blocks on disk I/O:
    /// call it off the async workers.
    pub fn open(config: &Config) -> Result<Self, StorageError> {
        let started = Instant::now();
        let workers_per_shard = config.dispatch.workers_per_shard as usize;
        let dedup_window = config.mailbox.dedup_window as usize;
        let mut recovered: Vec<HashMap<Id, Slot>> = (0..SHARDS * workers_per_shard)
            .map(|_| HashMap::new())
            .collect();
        let mut journals = Vec::new();
        let mut records = 0u64;
        for index in 0..config.journal.count as usize {
            let mut journal_config =
                JournalConfig::new(config.node.data_dir.join(format!("journal-{index}")));
            journal_config.segment_bytes = config.journal.segment_bytes;
            journal_config.max_disk_bytes = Some(config.journal.max_disk_bytes);
            let journal_error = |source| StorageError::Journal { index, source };
            let (journal, recovery) = Journal::open(journal_config).map_err(journal_error)?;
            for item in recovery.records_after(0).map_err(journal_error)? {
                let (lsn, payload) = item.map_err(journal_error)?;
                if payload.is_empty() {
                    // A barrier: orders a retry's answer after the original write.
                    continue;
                }
                let record = record::decode(payload).map_err(|source| StorageError::Record {
                    index,
                    lsn,
                    source,
                })?;
                records += 1;
                apply(&mut recovered, workers_per_shard, dedup_window, record);
            }
            journals.push(Arc::new(journal));
        }
        for slot in recovered.iter().flat_map(|map| map.values()) {
            slot.durable.store(
                slot.mailbox.last_seq(),
                std::sync::atomic::Ordering::Release,
            );
        }
        let elapsed = started.elapsed();
        metrics::gauge!(crate::metrics::RECOVERY_SECONDS).set(elapsed.as_secs_f64());
        tracing::info!(
            records,
            seconds = elapsed.as_secs_f64(),
            "mailboxes recovered from the journals"
        );
        Ok(Self {
            journals,
            recovered,
        })
    }
}

fn apply(
    recovered: &mut [HashMap<Id, Slot>],
    workers_per_shard: usize,
    dedup_window: usize,
    record: Record,
) {
    let owner = match &record {
        Record::Appended { owner, .. } | Record::Cursor { owner, .. } => owner.clone(),
    };
    let hash = key_hash(owner.as_bytes());
    let index = shard_of(hash) * workers_per_shard + worker_of(hash, workers_per_shard);
    let slot = recovered[index].entry(owner).or_default();
    match record {
        Record::Appended {
            entry,
            client_msg_id,
            server_id,
            ..
        } => slot
            .mailbox
            .restore(entry, &client_msg_id, server_id, dedup_window),
        Record::Cursor { device, cursor, .. } => {
            slot.mailbox.ack(&device, cursor);
        }
    }
}
