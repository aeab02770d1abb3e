//! The operations of [`Stores`]: each routes to its shard's database and comes in two forms,
//! a callback run on the database thread (`*_with`) and a [`Pending`] future.
//!
//! Keys and sizes are checked before anything is queued. Every `Err` returned at once
//! (`Overloaded`, `Closed`, `InvalidShard`, `InvalidKey`, `ValueTooLarge`) means nothing was
//! queued and the callback was dropped without being called.

use std::sync::Arc;

use bytes::Bytes;

use super::countdown::Countdown;
use super::database::Database;
use super::error::StoreError;
use super::keys;
use super::pending::Pending;
use super::worker::{OpKind, Store};
use super::{SHARDS, Stores, WriteBatch};

/// Entries as read: `(seq, value)` in seq order.
pub type Entries = Vec<(u64, Bytes)>;
/// Cursors as read: `(device, acked seq)` ordered by device.
pub type Cursors = Vec<(String, u64)>;
/// Key-value pairs as scanned, ordered by key.
pub type Pairs = Vec<(Bytes, Bytes)>;

impl Stores {
    /// Applies `batch` to `shard` atomically (see the module documentation).
    pub fn write_batch(&self, shard: usize, batch: WriteBatch) -> Result<Pending<()>, StoreError> {
        let (done, pending) = Pending::channel();
        self.write_batch_with(shard, batch, done)?;
        Ok(pending)
    }

    /// [`Self::write_batch`], completing through `done` on the database thread.
    pub fn write_batch_with<F>(
        &self,
        shard: usize,
        batch: WriteBatch,
        done: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Result<(), StoreError>) + Send + 'static,
    {
        batch.check()?;
        self.route(shard)?.submit_write(shard, batch, done)
    }

    /// Up to `limit` entries of `owner` with a seq above `after_seq`, in seq order.
    pub fn read_entries(
        &self,
        shard: usize,
        owner: &[u8],
        after_seq: u64,
        limit: usize,
    ) -> Result<Pending<Entries>, StoreError> {
        let (done, pending) = Pending::channel();
        self.read_entries_with(shard, owner, after_seq, limit, done)?;
        Ok(pending)
    }

    /// [`Self::read_entries`], completing through `done` on the database thread.
    pub fn read_entries_with<F>(
        &self,
        shard: usize,
        owner: &[u8],
        after_seq: u64,
        limit: usize,
        done: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Entries, StoreError>) + Send + 'static,
    {
        keys::check_owner(owner)?;
        let owner = owner.to_vec();
        self.route(shard)?.submit(
            OpKind::Read,
            move |db| db.read_entries(shard, &owner, after_seq, limit),
            done,
        )
    }

    /// The highest seq of `owner`'s entries, if it has any.
    pub fn last_entry_seq(
        &self,
        shard: usize,
        owner: &[u8],
    ) -> Result<Pending<Option<u64>>, StoreError> {
        keys::check_owner(owner)?;
        let owner = owner.to_vec();
        let (done, pending) = Pending::channel();
        self.route(shard)?.submit(
            OpKind::Read,
            move |db| db.last_entry_seq(shard, &owner),
            done,
        )?;
        Ok(pending)
    }

    /// Every device cursor of `owner`, ordered by device.
    pub fn read_cursors(&self, shard: usize, owner: &[u8]) -> Result<Pending<Cursors>, StoreError> {
        let (done, pending) = Pending::channel();
        self.read_cursors_with(shard, owner, done)?;
        Ok(pending)
    }

    /// [`Self::read_cursors`], completing through `done` on the database thread.
    pub fn read_cursors_with<F>(
        &self,
        shard: usize,
        owner: &[u8],
        done: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Cursors, StoreError>) + Send + 'static,
    {
        keys::check_owner(owner)?;
        let owner = owner.to_vec();
        self.route(shard)?
            .submit(OpKind::Read, move |db| db.read_cursors(shard, &owner), done)
    }

    /// `owner`'s metadata, if any.
    pub fn read_meta(
        &self,
        shard: usize,
        owner: &[u8],
    ) -> Result<Pending<Option<Bytes>>, StoreError> {
        let (done, pending) = Pending::channel();
        self.read_meta_with(shard, owner, done)?;
        Ok(pending)
    }

    /// [`Self::read_meta`], completing through `done` on the database thread.
    pub fn read_meta_with<F>(&self, shard: usize, owner: &[u8], done: F) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Option<Bytes>, StoreError>) + Send + 'static,
    {
        keys::check_owner(owner)?;
        let owner = owner.to_vec();
        self.route(shard)?
            .submit(OpKind::Read, move |db| db.read_meta(shard, &owner), done)
    }

    /// Every owner's metadata in `shard`, ordered by owner (for recovery and listing; reads the
    /// whole tree).
    pub fn scan_meta(&self, shard: usize) -> Result<Pending<Pairs>, StoreError> {
        let (done, pending) = Pending::channel();
        self.scan_meta_with(shard, done)?;
        Ok(pending)
    }

    /// [`Self::scan_meta`], completing through `done` on the database thread.
    pub fn scan_meta_with<F>(&self, shard: usize, done: F) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Pairs, StoreError>) + Send + 'static,
    {
        self.route(shard)?
            .submit(OpKind::Read, move |db| db.scan_meta(shard), done)
    }

    /// The record under `key`, if any.
    pub fn get_record(
        &self,
        shard: usize,
        key: &[u8],
    ) -> Result<Pending<Option<Bytes>>, StoreError> {
        let (done, pending) = Pending::channel();
        self.get_record_with(shard, key, done)?;
        Ok(pending)
    }

    /// [`Self::get_record`], completing through `done` on the database thread.
    pub fn get_record_with<F>(&self, shard: usize, key: &[u8], done: F) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Option<Bytes>, StoreError>) + Send + 'static,
    {
        keys::check_record_key(key)?;
        let key = key.to_vec();
        self.route(shard)?
            .submit(OpKind::Read, move |db| db.get_record(shard, &key), done)
    }

    /// Up to `limit` records of `shard` whose key starts with `prefix`, ordered by key.
    pub fn scan_records(
        &self,
        shard: usize,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Pending<Pairs>, StoreError> {
        let (done, pending) = Pending::channel();
        self.scan_records_with(shard, prefix, limit, done)?;
        Ok(pending)
    }

    /// [`Self::scan_records`], completing through `done` on the database thread.
    pub fn scan_records_with<F>(
        &self,
        shard: usize,
        prefix: &[u8],
        limit: usize,
        done: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Result<Pairs, StoreError>) + Send + 'static,
    {
        keys::check_record_key(prefix)?;
        let prefix = prefix.to_vec();
        self.route(shard)?.submit(
            OpKind::Read,
            move |db| db.scan_records(shard, &prefix, limit),
            done,
        )
    }

    /// Checkpoints database `index`: everything submitted to it before is durable once this
    /// completes `Ok`.
    pub fn checkpoint(&self, index: usize) -> Result<Pending<()>, StoreError> {
        let (done, pending) = Pending::channel();
        self.checkpoint_with(index, done)?;
        Ok(pending)
    }

    /// [`Self::checkpoint`], completing through `done` on the database thread.
    pub fn checkpoint_with<F>(&self, index: usize, done: F) -> Result<(), StoreError>
    where
        F: FnOnce(Result<(), StoreError>) + Send + 'static,
    {
        let store = self.stores.get(index).ok_or(StoreError::InvalidDatabase {
            index,
            count: self.stores.len(),
        })?;
        store.submit(OpKind::Checkpoint, Database::checkpoint, done)
    }

    /// Checkpoints every database: resolves when all have, to the first error if any failed
    /// or could not be queued (`Overloaded`: retry). Everything submitted before is durable
    /// once this resolves `Ok`.
    pub fn checkpoint_all(&self) -> Pending<()> {
        let (done, pending) = Pending::channel();
        self.checkpoint_all_with(done);
        pending
    }

    /// [`Self::checkpoint_all`], calling `done` exactly once: on the thread of the last
    /// database to finish, or right here if none could be queued.
    pub fn checkpoint_all_with<F>(&self, done: F)
    where
        F: FnOnce(Result<(), StoreError>) + Send + 'static,
    {
        let countdown = Arc::new(Countdown::new(self.stores.len(), Box::new(done)));
        for store in &self.stores {
            let arrival = Arc::clone(&countdown);
            let queued = store.submit(OpKind::Checkpoint, Database::checkpoint, move |result| {
                arrival.arrive(result);
            });
            if let Err(error) = queued {
                countdown.arrive(Err(error));
            }
        }
    }

    /// The database of `shard`.
    pub(super) fn route(&self, shard: usize) -> Result<&Store, StoreError> {
        if shard >= SHARDS {
            return Err(StoreError::InvalidShard { shard, max: SHARDS });
        }
        self.stores
            .get(self.database_of(shard))
            .ok_or(StoreError::Closed)
    }
}
