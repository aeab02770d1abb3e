//! Opening the journals and rebuilding every mailbox from them before the node takes phones.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use hashbrown::HashMap;

use super::account::{self, Account};
use super::log::Mailbox;
use super::record::{self, Record};
use super::snapshot::Owners;
use super::worker::group::note_membership;
use crate::config::Config;
use crate::group::log::{LogError, LogReader, copy_of};
use crate::group::record as group_record;
use crate::group::{Group, GroupSlot};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::message::Id;
use crate::message::Payload;
use crate::shard::{SHARDS, key_hash, shard_of, worker_of};
use crate::store::{Pending, StoreConfig, StoreError, Stores, WriteBatch};

/// One mailbox and its durable watermark: entries above it are written but not yet fsynced, so
/// they are neither read nor pushed.
#[derive(Debug, Default)]
pub struct Slot {
    /// The mailbox.
    pub mailbox: Mailbox,
    /// Highest seq known durable (raised by journal completions).
    pub durable: Arc<AtomicU64>,
    /// Highest seq written back to the store.
    pub written_upto: u64,
    /// Entries at or below this seq were deleted from the store.
    pub deleted_upto: u64,
    /// `last_seq`, a cursor or the account changed since the last write-back pass.
    pub dirty: bool,
    /// The user's account record (stored with `last_seq` as the mailbox metadata).
    pub account: Account,
}

/// Key of the record (in shard 0's records) holding journal `index`'s checkpoint LSN: every
/// record at or below it is reflected in the stores.
pub fn checkpoint_key(index: usize) -> Vec<u8> {
    format!("checkpoint/journal-{index}").into_bytes()
}

/// The store record under which checkpoints save slot group `group`'s durable point (in the
/// database of shard 0, with the journals' checkpoint LSNs).
pub fn slot_checkpoint_key(group: u64) -> Vec<u8> {
    format!("checkpoint/slot-{group}").into_bytes()
}

/// The stored form of a slot group's durable point: its log index (big-endian, so a newer
/// point is told from an older one without decoding it), then the point.
pub fn encode_slot_mark(index: u64, point: &[u8]) -> Bytes {
    let mut value = Vec::with_capacity(8 + point.len());
    value.extend_from_slice(&index.to_be_bytes());
    value.extend_from_slice(point);
    Bytes::from(value)
}

/// The index and point of a stored durable point (`None` when malformed).
pub fn decode_slot_mark(value: &Bytes) -> Option<(u64, Bytes)> {
    let index = value.get(..8)?.try_into().ok().map(u64::from_be_bytes)?;
    Some((index, value.slice(8..)))
}

/// The opened journals and stores, and the mailboxes rebuilt from them, one map per worker.
pub struct Storage {
    /// Journal `i` serves shards `s` with `s % count == i`.
    pub journals: Vec<Arc<Journal>>,
    /// The sled stores.
    pub stores: Arc<Stores>,
    /// Index `shard * workers_per_shard + worker`.
    pub recovered: Vec<HashMap<Id, Slot>>,
    /// The groups, indexed like `recovered`.
    pub groups: Vec<HashMap<Id, GroupSlot>>,
}

/// Everything recovery rebuilds, one map per worker.
struct Rebuilt<'a> {
    mailboxes: &'a mut [HashMap<Id, Slot>],
    groups: &'a mut [HashMap<Id, GroupSlot>],
    workers_per_shard: usize,
    /// The maps are one live worker's (every key is its own), not every worker's.
    single: bool,
    /// Resolves members' copies of logged group entries.
    log: LogReader<'a>,
}

impl Rebuilt<'_> {
    fn index(&self, key: &str) -> usize {
        if self.single {
            return 0;
        }
        let hash = key_hash(key.as_bytes());
        shard_of(hash) * self.workers_per_shard + worker_of(hash, self.workers_per_shard)
    }

    fn group(&mut self, group_id: &Id) -> &mut GroupSlot {
        let index = self.index(group_id);
        self.groups[index]
            .entry(group_id.clone())
            .or_insert_with(|| GroupSlot::new(Group::new(group_id.clone())))
    }
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
    /// A store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored account (mailbox metadata) record could not be decoded.
    #[error("store: account record of {owner}: {source}")]
    Account {
        /// The account's user.
        owner: String,
        /// The cause.
        source: prost::DecodeError,
    },
    /// A member's copy of a group entry could not be read from the group's log.
    #[error("group {group}, entry {group_seq}: {source}")]
    GroupLog {
        /// The group.
        group: String,
        /// The entry.
        group_seq: u64,
        /// The cause.
        source: LogError,
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
        let mut store_config = StoreConfig::new(config.store_paths());
        store_config.cache_bytes = config.store.cache_bytes;
        let stores = Stores::open(store_config)?;
        let limits = LoadLimits::of(config);
        let mut groups: Vec<HashMap<Id, GroupSlot>> = (0..SHARDS * workers_per_shard)
            .map(|_| HashMap::new())
            .collect();
        let mut rebuilt = Rebuilt {
            mailboxes: &mut recovered,
            groups: &mut groups,
            workers_per_shard,
            single: false,
            log: LogReader::new(&stores),
        };
        // The saved dedup tables first: entries from the stores and the journal add to them.
        load_dedup(&stores, &mut rebuilt, dedup_window, None)?;
        let entries = load_stores(&stores, &mut rebuilt, &limits, None)?;
        load_groups(&stores, &mut rebuilt, None)?;
        let mut opened = Vec::new();
        for index in 0..config.journal.count as usize {
            let mut journal_config =
                JournalConfig::new(config.node.data_dir.join(format!("journal-{index}")));
            journal_config.segment_bytes = config.journal.segment_bytes;
            journal_config.max_disk_bytes = Some(config.journal.max_disk_bytes);
            journal_config.commit_interval_us = config.journal.commit_interval_us;
            journal_config.preallocate = config.journal.preallocate;
            let journal_error = |source| StorageError::Journal { index, source };
            let (journal, recovery) = Journal::open(journal_config).map_err(journal_error)?;
            let checkpoint = wait(stores.get_record(0, &checkpoint_key(index)))?
                .map_or(0, |bytes| decode_u64(&bytes));
            opened.push((journal, recovery, checkpoint));
        }
        // A member's copy of a group entry follows the entry in its journal; with several
        // journals they are in different ones, so group records are replayed first.
        let passes: &[Pass] = if opened.len() == 1 {
            &[Pass::All]
        } else {
            &[Pass::Groups, Pass::Mailboxes]
        };
        let mut records = 0u64;
        for pass in passes {
            for (index, (_, recovery, checkpoint)) in opened.iter().enumerate() {
                let journal_error = |source| StorageError::Journal { index, source };
                for item in recovery.records_after(*checkpoint).map_err(journal_error)? {
                    let (lsn, payload) = item.map_err(journal_error)?;
                    if payload.is_empty() {
                        // A barrier: orders a retry's answer after the original write.
                        continue;
                    }
                    let record = record::decode(payload)
                        .map_err(|source| StorageError::Record { index, lsn, source })?;
                    if pass.takes(&record) {
                        records += 1;
                        apply(&mut rebuilt, dedup_window, record)?;
                    }
                }
            }
        }
        write_group_logs(&stores, &mut rebuilt)?;
        let journals: Vec<Arc<Journal>> = opened
            .into_iter()
            .map(|(journal, _, _)| Arc::new(journal))
            .collect();
        settle(&mut recovered);
        let elapsed = started.elapsed();
        metrics::gauge!(crate::metrics::RECOVERY_SECONDS).set(elapsed.as_secs_f64());
        metrics::gauge!(crate::metrics::RECOVERY_STORE_ENTRIES).set(entries as f64);
        // One summary line: the lines per mailbox, cursor and group are at trace level.
        tracing::info!(
            mailboxes = recovered.iter().map(|map| map.len()).sum::<usize>(),
            store_entries = entries,
            journal_records = records,
            seconds = elapsed.as_secs_f64(),
            "mailboxes recovered from the stores and journals"
        );
        Ok(Self {
            journals,
            stores: Arc::new(stores),
            recovered,
            groups,
        })
    }
}

/// Which journal records a replay pass applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Everything, in journal order.
    All,
    /// Group log records only.
    Groups,
    /// Everything but group log records.
    Mailboxes,
}

impl Pass {
    fn takes(self, record: &Record) -> bool {
        let group = matches!(
            record,
            Record::GroupAppended(_) | Record::GroupFannedOut { .. }
        );
        match self {
            Pass::All => true,
            Pass::Groups => group,
            Pass::Mailboxes => !group,
        }
    }
}

/// Writes the logged group entries replayed from the journals to the groups' logs in the
/// stores before the node serves, so that copies in the stores always find their entry.
fn write_group_logs(stores: &Stores, rebuilt: &mut Rebuilt<'_>) -> Result<(), StorageError> {
    let mut batches: Vec<WriteBatch> = (0..SHARDS).map(|_| WriteBatch::new()).collect();
    for slot in rebuilt.groups.iter_mut().flat_map(|map| map.values_mut()) {
        for entry in slot.unlogged.drain(..) {
            let shard = shard_of(key_hash(entry.group_id.as_bytes()));
            batches[shard].put_record(
                &group_record::log_key(&entry.group_id, entry.group_seq),
                group_record::encode_logged(&entry),
            );
        }
    }
    for (shard, batch) in batches.into_iter().enumerate() {
        if !batch.is_empty() {
            wait(stores.write_batch(shard, batch))?;
        }
    }
    Ok(())
}

/// Waits for a store operation from a blocking context.
fn wait<T>(operation: Result<Pending<T>, StoreError>) -> Result<T, StoreError> {
    operation?
        .into_receiver()
        .blocking_recv()
        .map_err(|_| StoreError::Closed)?
}

/// A big-endian u64 (0 when malformed).
pub fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

/// Marks every loaded mailbox durable up to its last seq, and dirty when its dedup table must
/// be saved again (where it now lies) by the first pass.
fn settle(mailboxes: &mut [HashMap<Id, Slot>]) {
    for slot in mailboxes.iter_mut().flat_map(|map| map.values_mut()) {
        slot.durable.store(
            slot.mailbox.last_seq(),
            std::sync::atomic::Ordering::Release,
        );
        if slot.mailbox.dedup().has_unsaved() {
            slot.dirty = true;
        }
    }
}

/// Mailboxes and groups reloaded from the stores, one map of each per worker.
pub type Reloaded = (Vec<HashMap<Id, Slot>>, Vec<HashMap<Id, GroupSlot>>);

/// Loads the mailboxes and groups of `owners` from the stores, as recovery at start does,
/// into one map per worker (a replica that installed a slot group's snapshot). Blocks on the
/// stores: run it on a blocking thread.
pub fn reload(
    stores: &Stores,
    limits: &LoadLimits,
    owners: &Owners,
) -> Result<Reloaded, StorageError> {
    let workers = SHARDS * limits.workers_per_shard;
    let mut mailboxes: Vec<HashMap<Id, Slot>> = (0..workers).map(|_| HashMap::new()).collect();
    let mut groups: Vec<HashMap<Id, GroupSlot>> = (0..workers).map(|_| HashMap::new()).collect();
    let mut rebuilt = Rebuilt {
        mailboxes: &mut mailboxes,
        groups: &mut groups,
        workers_per_shard: limits.workers_per_shard,
        single: false,
        log: LogReader::new(stores),
    };
    load_dedup(stores, &mut rebuilt, limits.dedup_window, Some(owners))?;
    load_stores(stores, &mut rebuilt, limits, Some(owners))?;
    load_groups(stores, &mut rebuilt, Some(owners))?;
    settle(&mut mailboxes);
    Ok((mailboxes, groups))
}

/// How much of the stores recovery loads into memory.
#[derive(Clone, Debug)]
pub struct LoadLimits {
    workers_per_shard: usize,
    dedup_window: usize,
    /// A worker's share of the cache budget: once its mailboxes hold this much, the rest of its
    /// mailboxes stay in the store until read.
    worker_bytes: usize,
    /// Mailboxes with more entries than this stay in the store until read.
    huge_entries: usize,
}

impl LoadLimits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> LoadLimits {
        LoadLimits {
            workers_per_shard: config.dispatch.workers_per_shard as usize,
            dedup_window: config.mailbox.dedup_window as usize,
            worker_bytes: super::cache_budget_per_worker(config),
            huge_entries: config.mailbox.huge_mailbox_entries as usize,
        }
    }
}

/// Loads what was written back: mailbox metadata (last seq), cursors, and entries as far as
/// the cache budget allows (the entries of the others stay in the store, paged in when read).
fn load_stores(
    stores: &Stores,
    rebuilt: &mut Rebuilt<'_>,
    limits: &LoadLimits,
    only: Option<&Owners>,
) -> Result<u64, StorageError> {
    let mut loaded = 0;
    let mut held = vec![0usize; rebuilt.mailboxes.len()];
    for shard in 0..SHARDS {
        for (owner, meta) in wait(stores.scan_meta(shard))? {
            if only.is_some_and(|only| !only.contains(&owner)) {
                continue;
            }
            let owner = Id::from(String::from_utf8_lossy(&owner).as_ref());
            let hash = key_hash(owner.as_bytes());
            let index = shard_of(hash) * limits.workers_per_shard
                + worker_of(hash, limits.workers_per_shard);
            let slot = rebuilt.mailboxes[index].entry(owner.clone()).or_default();
            let rows = if held[index] < limits.worker_bytes {
                wait(stores.read_entries(shard, owner.as_bytes(), 0, limits.huge_entries + 1))?
            } else {
                Vec::new()
            };
            let mut spill = held[index] >= limits.worker_bytes || rows.len() > limits.huge_entries;
            let mut restored = Vec::new();
            let rows = if spill { Vec::new() } else { rows };
            for (seq, value) in rows {
                let record = record::decode(value).map_err(|source| StorageError::Record {
                    index: shard,
                    lsn: seq,
                    source,
                })?;
                match record {
                    Record::Appended {
                        entry,
                        client_msg_id,
                        server_id,
                        ..
                    } => restored.push((seq, entry, client_msg_id, server_id)),
                    Record::GroupCopy {
                        seq,
                        timestamp_ms,
                        group_id,
                        group_seq,
                        ..
                    } => match resolve_copy(
                        &mut rebuilt.log,
                        seq,
                        timestamp_ms,
                        &group_id,
                        group_seq,
                    )? {
                        Some((entry, client_msg_id, server_id)) => {
                            restored.push((seq, entry, client_msg_id, server_id));
                        }
                        // Its group entry is still only in the journal: leave the mailbox in
                        // the store; it is paged in once the group's log has the entry.
                        None => spill = true,
                    },
                    _ => {}
                }
            }
            if spill && let Some(last) = wait(stores.last_entry_seq(shard, owner.as_bytes()))? {
                slot.mailbox.restore_spilled(last);
                slot.written_upto = last;
            }
            for (seq, entry, client_msg_id, server_id) in restored.into_iter().filter(|_| !spill) {
                slot.mailbox
                    .restore(entry, &client_msg_id, server_id, limits.dedup_window);
                slot.written_upto = seq;
                loaded += 1;
            }
            held[index] += slot.mailbox.held_bytes();
            // The seq counter first: cursors are clamped to it.
            let (last_seq, account) =
                account::decode(&meta).map_err(|source| StorageError::Account {
                    owner: owner.to_string(),
                    source,
                })?;
            slot.mailbox.raise_last_seq(last_seq);
            slot.account = account;
            for (device, cursor) in wait(stores.read_cursors(shard, owner.as_bytes()))? {
                slot.mailbox
                    .restore_cursor(&Id::from(device.as_str()), cursor);
                tracing::trace!(owner = %owner, device, cursor, held = slot.mailbox.len(), "loaded cursor");
            }
            tracing::trace!(owner = %owner, last_seq = slot.mailbox.last_seq(), held = slot.mailbox.len(), "loaded mailbox");
            slot.deleted_upto = slot.mailbox.min_cursor().unwrap_or(0);
        }
    }
    Ok(loaded)
}

/// Loads the dedup tables saved by write-back passes (every id whose journal record may have
/// been released is among them, unless its window had already forgotten it).
fn load_dedup(
    stores: &Stores,
    rebuilt: &mut Rebuilt<'_>,
    dedup_window: usize,
    only: Option<&Owners>,
) -> Result<(), StorageError> {
    for shard in 0..SHARDS {
        let prefix = record::DEDUP_PREFIX.as_bytes();
        for (_, value) in wait(stores.scan_records(shard, prefix, usize::MAX))? {
            let (owner, sender, device, ids) =
                record::decode_dedup(value).map_err(|source| StorageError::Record {
                    index: shard,
                    lsn: 0,
                    source,
                })?;
            if only.is_some_and(|only| !only.contains(owner.as_bytes())) {
                continue;
            }
            let index = rebuilt.index(&owner);
            let dedup = rebuilt.mailboxes[index]
                .entry(owner)
                .or_default()
                .mailbox
                .dedup_mut();
            for (client_msg_id, ack) in ids {
                dedup.restore(&sender, &device, &client_msg_id, ack, dedup_window);
            }
        }
    }
    Ok(())
}

/// Loads every group snapshot written back to the stores.
fn load_groups(
    stores: &Stores,
    rebuilt: &mut Rebuilt<'_>,
    only: Option<&Owners>,
) -> Result<(), StorageError> {
    for shard in 0..SHARDS {
        let prefix = group_record::SNAPSHOT_PREFIX.as_bytes();
        for (key, value) in wait(stores.scan_records(shard, prefix, usize::MAX))? {
            let group =
                group_record::decode_snapshot(value).map_err(|source| StorageError::Record {
                    index: shard,
                    lsn: 0,
                    source,
                })?;
            if only.is_some_and(|only| !only.contains(group.id.as_bytes())) {
                continue;
            }
            tracing::trace!(key = %String::from_utf8_lossy(&key), members = group.members.len(), "loaded group");
            let index = rebuilt.index(&group.id);
            rebuilt.groups[index].insert(group.id.clone(), GroupSlot::new(group));
        }
    }
    Ok(())
}

/// A member's copy of a logged group entry, read from the group's log; `None` (logged) when
/// the log does not have it.
fn resolve_copy(
    log: &mut LogReader<'_>,
    seq: u64,
    timestamp_ms: u64,
    group_id: &Id,
    group_seq: u64,
) -> Result<Option<(crate::message::Entry, Arc<str>, u64)>, StorageError> {
    let entry = log
        .read(group_id, group_seq)
        .map_err(|source| StorageError::GroupLog {
            group: group_id.to_string(),
            group_seq,
            source,
        })?;
    let Some(entry) = entry else {
        tracing::warn!(group = %group_id, group_seq, "a member's copy names a group entry not (yet) in the group's log");
        return Ok(None);
    };
    let client_msg_id: Arc<str> = Arc::from(format!("#{group_id}/{group_seq}"));
    let server_id = entry.server_id;
    Ok(Some((
        copy_of(seq, timestamp_ms, entry),
        client_msg_id,
        server_id,
    )))
}

fn apply(
    rebuilt: &mut Rebuilt<'_>,
    dedup_window: usize,
    record: Record,
) -> Result<(), StorageError> {
    let owner = match &record {
        Record::Appended { owner, .. }
        | Record::Cursor { owner, .. }
        | Record::Revoked { owner, .. }
        | Record::Push { owner, .. }
        | Record::GroupCopy { owner, .. } => owner.clone(),
        Record::GroupAppended(entry) => {
            let group_id = entry.group_id.clone();
            let entry = Arc::new(entry_of(record));
            rebuilt.log.remember(&entry);
            rebuilt.group(&group_id).replay(entry);
            return Ok(());
        }
        Record::GroupFannedOut {
            group_id,
            group_seq,
        } => {
            rebuilt.group(group_id).fanned_out(*group_seq);
            return Ok(());
        }
    };
    let index = rebuilt.index(&owner);
    let owner_for_log = owner.clone();
    let record = match record {
        Record::GroupCopy {
            seq,
            timestamp_ms,
            group_id,
            group_seq,
            ..
        } => match resolve_copy(&mut rebuilt.log, seq, timestamp_ms, &group_id, group_seq)? {
            Some((entry, client_msg_id, server_id)) => Record::Appended {
                owner: owner.clone(),
                entry,
                client_msg_id,
                server_id,
            },
            None => {
                // Pruned from the group's log: every device acked it. Its seq stays taken.
                let slot = rebuilt.mailboxes[index].entry(owner.clone()).or_default();
                slot.mailbox.raise_last_seq(seq);
                slot.account.note_copy(&group_id, group_seq);
                return Ok(());
            }
        },
        other => other,
    };
    let slot = rebuilt.mailboxes[index].entry(owner.clone()).or_default();
    match record {
        Record::Appended {
            entry,
            client_msg_id,
            server_id,
            ..
        } => {
            if let Payload::Group(group_entry) = &entry.payload {
                note_membership(&mut slot.account, &owner, group_entry);
                slot.account
                    .note_copy(&group_entry.group_id, group_entry.group_seq);
            }
            slot.mailbox
                .restore(entry, &client_msg_id, server_id, dedup_window);
        }
        Record::Cursor { device, cursor, .. } => {
            slot.mailbox.restore_cursor(&device, cursor);
            tracing::trace!(owner = %owner_for_log, device = %device, record = cursor, now = ?slot.mailbox.cursor(&device), held = slot.mailbox.len(), "replayed cursor");
        }
        Record::Revoked {
            device, not_before, ..
        } => {
            slot.account.revoke(device.as_ref(), not_before);
        }
        Record::Push { device, pusher, .. } => {
            *slot.account.pusher_mut(&device) = pusher;
        }
        Record::GroupAppended(_) | Record::GroupFannedOut { .. } | Record::GroupCopy { .. } => {}
    }
    slot.dirty = true;
    Ok(())
}

/// Applies `records` (another node's leader committed them) to one live worker's `mailboxes`
/// and `groups`, exactly as recovery applies journal records; a mailbox's entries are durable
/// as soon as they are applied (they are committed).
pub(super) fn apply_live(
    mailboxes: &mut HashMap<Id, Slot>,
    groups: &mut HashMap<Id, GroupSlot>,
    stores: &Stores,
    dedup_window: usize,
    records: Vec<Record>,
) -> Result<(), StorageError> {
    let mut rebuilt = Rebuilt {
        mailboxes: std::slice::from_mut(mailboxes),
        groups: std::slice::from_mut(groups),
        workers_per_shard: 1,
        single: true,
        log: LogReader::new(stores),
    };
    for record in records {
        let owner = match &record {
            Record::Appended { owner, .. }
            | Record::Cursor { owner, .. }
            | Record::Revoked { owner, .. }
            | Record::Push { owner, .. }
            | Record::GroupCopy { owner, .. } => Some(owner.clone()),
            Record::GroupAppended(_) | Record::GroupFannedOut { .. } => None,
        };
        apply(&mut rebuilt, dedup_window, record)?;
        if let Some(slot) = owner.and_then(|owner| rebuilt.mailboxes[0].get_mut(&owner)) {
            slot.durable
                .fetch_max(slot.mailbox.last_seq(), std::sync::atomic::Ordering::AcqRel);
        }
    }
    Ok(())
}

/// The group entry of a `GroupAppended` record.
fn entry_of(record: Record) -> crate::message::GroupEntry {
    match record {
        Record::GroupAppended(entry) => entry,
        _ => unreachable!("called on GroupAppended only"),
    }
}
