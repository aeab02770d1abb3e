//! One sled database and the trees of the shards it holds; used only by its store thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sled::transaction::{TransactionResult, TransactionalTree, UnabortableTransactionError};
use sled::{IVec, Transactional, Tree};

use super::batch::{Write, WriteBatch};
use super::config::StoreConfig;
use super::error::StoreError;
use super::keys::{self, TreeKind};
use crate::shard::SHARDS;

/// Key, in the database's default tree, of the layout it was created for (`index/count`).
const LAYOUT_KEY: &[u8] = b"tern/layout";

/// Staged writes of one tree: the final value of each key (`None`: delete it).
type Staged = BTreeMap<Vec<u8>, Option<IVec>>;

/// The trees of one logical shard.
#[derive(Debug)]
pub(super) struct ShardTrees {
    pub(super) entries: Tree,
    pub(super) cursors: Tree,
    pub(super) meta: Tree,
    pub(super) records: Tree,
}

/// An open sled database.
#[derive(Debug)]
pub(crate) struct Database {
    path: PathBuf,
    db: sled::Db,
    /// Indexed by logical shard; `Some` for the shards this database holds.
    shards: Vec<Option<ShardTrees>>,
}

/// How long an open waits for the file lock of a database that this process closed a moment
/// ago: sled's flusher thread lets go of it shortly after the last handle is dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_sled(path: &Path, config: &StoreConfig) -> Result<sled::Db, StoreError> {
    remove_unfinished_snapshots(path)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(config.flush_every_ms)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(error))
                if lock_held(&error) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => return Err(StoreError::sled(path, error)),
        }
    }
}

/// Deletes the snapshot files sled left unfinished (`snap.<lsn>.generating`).
///
/// sled writes its snapshot at every open, to `snap.<lsn>.generating`, renaming it to
/// `snap.<lsn>` once complete and fsync'd, and removing older snapshots only after that rename.
/// But it also picks a `.generating` file when it looks for the newest snapshot (it sorts after
/// the finished one), so a snapshot torn by a full disk during an open makes every later open
/// fail with "Read corrupted data" for good. An unfinished snapshot is never needed: the
/// previous one is still there, and sled rebuilds the newer state from its log.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| StoreError::io(path, error))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let file = entry.path();
            tracing::warn!(file = %file.display(), "store: removing an unfinished sled snapshot");
            std::fs::remove_file(&file).map_err(|error| StoreError::io(&file, error))?;
        }
    }
    Ok(())
}

/// Whether opening a sled database failed only because its file lock is still held: sled lets
/// go of it from its background flusher thread shortly after the last handle is dropped, and
/// reports it as an `Other` error naming the lock (wrapping the OS's `WouldBlock`).
pub(crate) fn lock_held(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || error.to_string().contains("could not acquire lock")
}

impl Database {
    /// Opens (creating if needed) database `index` of `count` in `path`, checks that it was
    /// created for that position, and opens the trees of its shards. Blocks on disk I/O.
    pub(crate) fn open(
        index: usize,
        count: usize,
        path: &Path,
        config: &StoreConfig,
    ) -> Result<Self, StoreError> {
        create_dir(path)?;
        let db = open_sled(path, config)?;
        check_layout(&db, path, index, count)?;
        let shards = (0..SHARDS)
            .map(|shard| {
                if shard % count == index {
                    ShardTrees::open(&db, path, shard).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Database {
            path: path.to_path_buf(),
            db,
            shards,
        })
    }

    /// The database directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` to `shard`'s trees in one sled transaction.
    pub(crate) fn write(&self, shard: usize, batch: &WriteBatch) -> Result<(), StoreError> {
        let trees = self.trees(shard)?;
        let mut staged: [Staged; 4] = Default::default();
        let [entries, cursors, meta, records] = &mut staged;
        for write in batch.writes() {
            match write? {
                Write::PutEntry { owner, seq, value } => {
                    entries.insert(keys::entry_key(owner, seq), Some(IVec::from(value)));
                }
                Write::DeleteEntriesUpTo { owner, up_to_seq } => {
                    let low = keys::entry_key(owner, 0);
                    let high = keys::entry_key(owner, up_to_seq);
                    for (_, value) in entries.range_mut(low.clone()..=high.clone()) {
                        *value = None;
                    }
                    // Only this thread writes to the database, so what is read here is what
                    // the transaction below deletes.
                    for key in trees.entries.range(low..=high).keys() {
                        let key = key.map_err(|error| self.error(error))?;
                        entries.insert(key.to_vec(), None);
                    }
                }
                Write::PutCursor { owner, device, seq } => {
                    let value = IVec::from(&keys::cursor_value(seq)[..]);
                    cursors.insert(keys::cursor_key(owner, device), Some(value));
                }
                Write::DeleteCursor { owner, device } => {
                    cursors.insert(keys::cursor_key(owner, device), None);
                }
                Write::PutMeta { owner, value } => {
                    meta.insert(owner.to_vec(), Some(IVec::from(value)));
                }
                Write::DeleteMeta { owner } => {
                    meta.insert(owner.to_vec(), None);
                }
                Write::PutRecord { key, value } => {
                    records.insert(key.to_vec(), Some(IVec::from(value)));
                }
                Write::DeleteRecord { key } => {
                    records.insert(key.to_vec(), None);
                }
            }
        }
        if staged.iter().all(BTreeMap::is_empty) {
            return Ok(());
        }
        let result: TransactionResult<(), ()> =
            (&trees.entries, &trees.cursors, &trees.meta, &trees.records).transaction(
                |(entries, cursors, meta, records)| {
                    apply(entries, &staged[0])?;
                    apply(cursors, &staged[1])?;
                    apply(meta, &staged[2])?;
                    apply(records, &staged[3])?;
                    Ok(())
                },
            );
        result.map_err(|error| StoreError::transaction(&self.path, error))
    }

    /// Up to `limit` entries of `owner` with a seq above `after_seq`, in seq order.
    pub(crate) fn read_entries(
        &self,
        shard: usize,
        owner: &[u8],
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let trees = self.trees(shard)?;
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let low = keys::entry_key(owner, first);
        let high = keys::entry_key(owner, u64::MAX);
        trees
            .entries
            .range(low..=high)
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(|error| self.error(error))?;
                Ok((keys::entry_seq(owner.len(), &key)?, bytes(&value)))
            })
            .collect()
    }

    /// The highest seq of `owner`'s entries, if it has any.
    pub(crate) fn last_entry_seq(
        &self,
        shard: usize,
        owner: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let trees = self.trees(shard)?;
        let low = keys::entry_key(owner, 0);
        let high = keys::entry_key(owner, u64::MAX);
        match trees.entries.range(low..=high).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item.map_err(|error| self.error(error))?;
                Ok(Some(keys::entry_seq(owner.len(), &key)?))
            }
        }
    }

    /// Every cursor of `owner`, ordered by device.
    pub(crate) fn read_cursors(
        &self,
        shard: usize,
        owner: &[u8],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let trees = self.trees(shard)?;
        trees
            .cursors
            .scan_prefix(keys::owner_prefix(owner))
            .map(|item| {
                let (key, value) = item.map_err(|error| self.error(error))?;
                Ok((
                    keys::cursor_device(owner.len(), &key)?,
                    keys::cursor_seq(&value)?,
                ))
            })
            .collect()
    }

    /// `owner`'s metadata.
    pub(crate) fn read_meta(
        &self,
        shard: usize,
        owner: &[u8],
    ) -> Result<Option<Bytes>, StoreError> {
        let trees = self.trees(shard)?;
        let value = trees.meta.get(owner).map_err(|error| self.error(error))?;
        Ok(value.as_ref().map(bytes))
    }

    /// Every owner's metadata in the shard, ordered by owner.
    pub(crate) fn scan_meta(&self, shard: usize) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let trees = self.trees(shard)?;
        collect_pairs(trees.meta.iter(), usize::MAX, self)
    }

    /// One record.
    pub(crate) fn get_record(&self, shard: usize, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let trees = self.trees(shard)?;
        let value = trees.records.get(key).map_err(|error| self.error(error))?;
        Ok(value.as_ref().map(bytes))
    }

    /// Up to `limit` records whose key starts with `prefix`, ordered by key.
    pub(crate) fn scan_records(
        &self,
        shard: usize,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let trees = self.trees(shard)?;
        collect_pairs(trees.records.scan_prefix(prefix), limit, self)
    }

    /// Makes everything applied so far durable: sled's flush, then an fsync of every file of
    /// the database (`conf`, `db`, `snap.*`, `blobs/*`) and of its directories.
    pub(crate) fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|error| self.error(error))?;
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            sync_tree(&blobs)?;
        }
        sync_tree(&self.path)
    }

    /// sled's flush alone (no fsync): what it covers survives closing and reopening the
    /// database. Fails for good once sled has failed.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|error| self.error(error))
    }

    pub(super) fn trees(&self, shard: usize) -> Result<&ShardTrees, StoreError> {
        self.shards
            .get(shard)
            .and_then(Option::as_ref)
            .ok_or(StoreError::InvalidShard { shard, max: SHARDS })
    }

    fn error(&self, error: sled::Error) -> StoreError {
        StoreError::sled(&self.path, error)
    }
}

impl ShardTrees {
    fn open(db: &sled::Db, path: &Path, shard: usize) -> Result<Self, StoreError> {
        let open = |kind| {
            db.open_tree(keys::tree_name(shard, kind))
                .map_err(|error| StoreError::sled(path, error))
        };
        Ok(ShardTrees {
            entries: open(TreeKind::Entries)?,
            cursors: open(TreeKind::Cursors)?,
            meta: open(TreeKind::Meta)?,
            records: open(TreeKind::Records)?,
        })
    }
}

/// Records the layout in a new database, or checks the one recorded.
fn check_layout(db: &sled::Db, path: &Path, index: usize, count: usize) -> Result<(), StoreError> {
    let expected = format!("{index}/{count}");
    let sled_error = |error| StoreError::sled(path, error);
    match db.get(LAYOUT_KEY).map_err(sled_error)? {
        Some(found) if found.as_ref() == expected.as_bytes() => Ok(()),
        Some(found) => Err(StoreError::LayoutMismatch {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&found).into_owned(),
            expected,
        }),
        None => {
            db.insert(LAYOUT_KEY, expected.as_bytes())
                .map_err(sled_error)?;
            db.flush().map_err(sled_error)?;
            Ok(())
        }
    }
}

/// Writes `staged` through a transaction view.
fn apply(tree: &TransactionalTree, staged: &Staged) -> Result<(), UnabortableTransactionError> {
    for (key, value) in staged {
        match value {
            Some(value) => tree.insert(key.as_slice(), value.clone())?,
            None => tree.remove(key.as_slice())?,
        };
    }
    Ok(())
}

fn collect_pairs(
    iter: sled::Iter,
    limit: usize,
    database: &Database,
) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
    iter.take(limit)
        .map(|item| {
            let (key, value) = item.map_err(|error| database.error(error))?;
            Ok((bytes(&key), bytes(&value)))
        })
        .collect()
}

fn bytes(value: &IVec) -> Bytes {
    Bytes::copy_from_slice(value)
}

/// Creates the database directory (and parents) and makes its entry durable.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    crate::fsync::create_dir_durably(dir).map_err(|error| StoreError::io(dir, error))
}

/// [`crate::fsync::sync_tree`], as a store error.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    crate::fsync::sync_tree(dir).map_err(|error| StoreError::io(error.path, error.source))
}
