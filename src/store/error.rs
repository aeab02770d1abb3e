//! Why a store operation failed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the store. Cloneable: `checkpoint_all` hands one database's error to its caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database's queue is full; the caller should shed load or retry later.
    #[error("store queue is full")]
    Overloaded,
    /// The database thread is not running: the store was closed, or its thread died.
    #[error("store is closed")]
    Closed,
    /// The shard is not one of the 32 logical shards.
    #[error("shard {shard} does not exist (shards are 0..{max})")]
    InvalidShard {
        /// The shard asked for.
        shard: usize,
        /// The number of shards.
        max: usize,
    },
    /// There is no database with this index.
    #[error("store database {index} does not exist (there are {count})")]
    InvalidDatabase {
        /// The index asked for.
        index: usize,
        /// The number of databases.
        count: usize,
    },
    /// A value larger than [`super::MAX_VALUE_BYTES`] was refused before being queued.
    #[error("store value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Size of the refused value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An owner, device or record key breaks the key rules (see the module documentation).
    #[error("invalid store key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// sled reported an error other than I/O (a bug report, an unsupported operation,
    /// corruption it detected).
    #[error("sled error: {0}")]
    Sled(String),
    /// A file operation failed (sled's own I/O, or the checkpoint's fsyncs).
    #[error("store I/O error on {path}: {source}")]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error.
        source: Arc<io::Error>,
    },
    /// A stored key or value does not have the documented layout.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The database was created for another position or number of databases: opening it
    /// would misplace shards. Restore the original `store.paths`.
    #[error(
        "store database {} holds layout {found:?}, but the configuration needs {expected:?}",
        path.display()
    )]
    LayoutMismatch {
        /// The database directory.
        path: PathBuf,
        /// The layout recorded in it (`index/count`).
        found: String,
        /// The layout this configuration gives it.
        expected: String,
    },
    /// The configuration is invalid; every problem is listed.
    #[error("invalid store configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The operation panicked on the database thread; the panic was caught and counted, and
    /// the thread went on. A write batch that panicked was not applied.
    #[error("store operation panicked")]
    Panicked,
    /// A database thread died of a panic outside any operation (seen on close).
    #[error("store thread panicked")]
    ThreadPanicked,
}

impl StoreError {
    /// Wraps an I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// Wraps an error of the sled database in `path`.
    pub(crate) fn sled(path: &Path, error: sled::Error) -> Self {
        match error {
            sled::Error::Io(source) => StoreError::io(path, source),
            other => StoreError::Sled(other.to_string()),
        }
    }

    /// Wraps the error of a sled transaction (which never aborts on purpose here).
    pub(crate) fn transaction(path: &Path, error: sled::transaction::TransactionError<()>) -> Self {
        match error {
            sled::transaction::TransactionError::Storage(error) => StoreError::sled(path, error),
            sled::transaction::TransactionError::Abort(()) => {
                StoreError::Sled("transaction aborted".to_owned())
            }
        }
    }

    /// True for failures of the database itself (I/O, sled, a panic inside it), after which
    /// its thread checks whether sled still works.
    pub(crate) fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. } | StoreError::Sled(_) | StoreError::Panicked
        )
    }

    /// An invalid key, with its reason.
    pub(crate) fn invalid_key(reason: impl Into<String>) -> Self {
        StoreError::InvalidKey {
            reason: reason.into(),
        }
    }
}
