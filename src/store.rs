//! The store: sharded sled databases holding the indexed copy of mailboxes and keyed records.
//!
//! The journal makes an acked message durable; the mailbox writes what stays unacked past the
//! write-back delay here, and releases journal records once a checkpoint covers them. sled's
//! flush is not an fsync, so nothing here is durable until a checkpoint completes after it.
//!
//! # Ownership
//! [`Stores`] owns one [`Store`] per directory in [`StoreConfig::paths`]; each `Store` is a
//! handle to one OS thread (`tern-store-N`, the `worker` module) that owns one `sled::Db` and
//! runs operations from a bounded queue (`std::sync::mpsc::sync_channel`), one at a time, in
//! submission order. So a read sees every write submitted to its database before it, and a
//! checkpoint covers them. Submitting never blocks: a full queue is
//! [`StoreError::Overloaded`]. An operation completes through a callback run on the database
//! thread (the `*_with` methods: quick, non-blocking, e.g. an actor cast) or a [`Pending`]
//! future. A panic in an operation or callback is caught, counted and answered with
//! [`StoreError::Panicked`]; the thread goes on. A database that sled has failed (after an
//! I/O error such as a full disk sled answers every operation with that error) is closed and
//! opened again by its thread, which first applies again every batch applied since its last
//! flush (see the `worker` module). Closing (or dropping) [`Stores`] stops the threads; each
//! runs what is queued, checkpoints, drops its database and exits, and the close joins them.
//! Each thread's end (however it ends) is visible through [`Store::exited`]. [`Stores::open`] and [`Stores::close`] block on disk I/O: call them before
//! serving or on a blocking thread, never on a tokio worker.
//!
//! # Placement
//! Logical shard `s` (0..[`SHARDS`], from [`crate::shard`]) lives in database
//! `s % paths.len()` ([`database_of`]): stable for a given number of paths. Each database
//! records its place as `index/count` under the key `tern/layout` of its default tree and
//! refuses to open elsewhere ([`StoreError::LayoutMismatch`]), so a changed `paths` list
//! cannot silently misplace shards.
//!
//! # Trees and keys
//! Each shard has four trees in its database, named `s{shard:02}/{kind}`. Integers are
//! big-endian, so byte order is numeric order and ranges work:
//! - `s07/entries`: `owner ‖ 0x00 ‖ seq: u64` → the entry (opaque bytes). One owner's entries
//!   are contiguous and sorted by seq.
//! - `s07/cursors`: `owner ‖ 0x00 ‖ device` → acked seq `u64`.
//! - `s07/meta`: `owner` → opaque bytes (the caller's encoding, e.g. the mailbox's last seq).
//! - `s07/records`: arbitrary key → opaque bytes (accounts, groups).
//!
//! Owners (user or group ids) are 1 to [`MAX_OWNER_BYTES`] bytes without 0x00 (user ids are
//! `[A-Za-z0-9._@+-]`), so `owner ‖ 0x00` is a prefix of that owner's keys alone. Devices
//! are 1 to [`MAX_DEVICE_BYTES`] bytes, record keys at most [`MAX_RECORD_KEY_BYTES`], values
//! at most [`MAX_VALUE_BYTES`] ([`StoreError::ValueTooLarge`]): sled writes pages over about
//! 128 KiB to blob files its flushes never fsync, so values stay small (and checkpoints
//! fsync the blob files as well).
//!
//! # Atomicity and durability
//! - A [`WriteBatch`] is applied in the order of its writes, as one sled transaction over the
//!   four trees of its shard: after a crash either all of it is there or none. A range delete
//!   also removes entries put earlier in the same batch. Nothing is atomic across shards.
//! - `Ok` from a write means applied and visible to later reads. It is durable once a
//!   checkpoint submitted after it completes `Ok`: sled's flush (`sync_file_range`), then
//!   `sync_all` of every file of the database (`conf`, `db`, `snap.*`, `blobs/*`) and of its
//!   directories. sled's background flusher (`flush_every_ms`) gives no such promise.

mod batch;
mod config;
mod countdown;
mod database;
pub(crate) use database::lock_held as sled_lock_held;
mod error;
mod keys;
mod ops;
mod pending;
mod rows;
pub mod telemetry;
mod worker;

#[cfg(test)]
mod tests;

use std::thread;

pub use batch::WriteBatch;
pub use config::StoreConfig;
pub use error::StoreError;
pub use keys::{
    MAX_DEVICE_BYTES, MAX_OWNER_BYTES, MAX_RECORD_KEY_BYTES, MAX_VALUE_BYTES, TreeKind,
};
pub use ops::{Cursors, Entries, Pairs};
pub use pending::Pending;
pub use rows::{ROWS_PER_PAGE, Row, RowFilter, RowPosition, RowsPage, row_owner};
pub use worker::{Store, StoreStats};

use crate::shard::SHARDS;
use database::Database;

/// The database (index into `paths`) that holds logical `shard` when there are `databases`
/// of them: `shard % databases`.
pub fn database_of(shard: usize, databases: usize) -> usize {
    shard % databases.max(1)
}

/// All the store's databases. `Send + Sync`: share it with `Arc`.
#[derive(Debug)]
pub struct Stores {
    stores: Vec<Store>,
}

impl Stores {
    /// Opens (creating if needed) every database in `config.paths`, in parallel, checks each
    /// one's layout, and starts their threads. Blocks on disk I/O for as long as sled's
    /// recovery takes (about a second per database after an unclean stop): call it before
    /// serving, or on a blocking thread.
    pub fn open(config: StoreConfig) -> Result<Stores, StoreError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StoreError::InvalidConfig { problems });
        }
        let count = config.paths.len();
        let opened: Vec<Result<Database, StoreError>> = thread::scope(|scope| {
            let openers: Vec<_> = config
                .paths
                .iter()
                .enumerate()
                .map(|(index, path)| {
                    let config = &config;
                    thread::Builder::new()
                        .name(format!("tern-store-open-{index}"))
                        .spawn_scoped(scope, move || {
                            // sled's own threads, started by the open, inherit it.
                            crate::background::lower_priority();
                            Database::open(index, count, path, config)
                        })
                })
                .collect();
            openers
                .into_iter()
                .zip(&config.paths)
                .map(|(opener, path)| match opener {
                    Ok(handle) => handle.join().unwrap_or(Err(StoreError::ThreadPanicked)),
                    Err(error) => Err(StoreError::io(path, error)),
                })
                .collect()
        });
        let mut databases = Vec::with_capacity(count);
        let mut first_error = None;
        for result in opened {
            match result {
                Ok(database) => databases.push(database),
                Err(error) => {
                    tracing::error!(%error, "store: cannot open database");
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let mut stores = Stores {
            stores: Vec::with_capacity(count),
        };
        for (index, database) in databases.into_iter().enumerate() {
            stores
                .stores
                .push(Store::start(index, count, database, &config)?);
        }
        Ok(stores)
    }

    /// The number of databases.
    pub fn databases(&self) -> usize {
        self.stores.len()
    }

    /// The database (index into `paths`) that holds logical `shard`.
    pub fn database_of(&self, shard: usize) -> usize {
        database_of(shard, self.stores.len())
    }

    /// Database `index`, for its path and counters.
    pub fn store(&self, index: usize) -> Option<&Store> {
        self.stores.get(index)
    }

    /// False if any database thread is gone.
    pub fn healthy(&self) -> bool {
        self.stores.iter().all(Store::healthy)
    }

    /// Stops every database thread after what is queued now: each runs it, checkpoints, drops
    /// its database and exits; joins them and returns the first failure. Later operations are
    /// refused with [`StoreError::Closed`]. Blocks: from async code, call it on a blocking
    /// thread. Dropping the last handle does the same.
    pub fn close(&self) -> Result<(), StoreError> {
        for store in &self.stores {
            store.request_close();
        }
        let mut outcome = Ok(());
        for store in &self.stores {
            if let Err(error) = store.wait() {
                tracing::error!(%error, path = %store.path().display(), "store: unclean close");
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }

    fn shut_down(&mut self) -> Result<(), StoreError> {
        // Hang up every queue first, so the databases drain and checkpoint in parallel.
        for store in &mut self.stores {
            store.hang_up();
        }
        let mut outcome = Ok(());
        for store in &mut self.stores {
            if let Err(error) = store.join() {
                tracing::error!(%error, path = %store.path().display(), "store: unclean close");
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        // Errors were logged per database.
        let _ = self.shut_down();
    }
}
