//! The store's settings, their defaults and validation.

use std::collections::HashSet;
use std::path::{Component, PathBuf};

use serde::Deserialize;

use crate::shard::SHARDS;

/// Store settings; meant to be embedded in the node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// One directory per sled database, so that databases can sit on different disks. Logical
    /// shard `s` lives in database `s % paths.len()`: changing the number of paths moves shards,
    /// so an existing database refuses to open under another count (its layout is recorded in
    /// it). 1 to 32 distinct paths. Default: `./data/store-0` .. `./data/store-3`.
    pub paths: Vec<PathBuf>,
    /// sled's page cache per database, in bytes. Set explicitly because sled's own default is
    /// 1 GiB per database; sled may use several times this much memory. Default: 67108864
    /// (64 MiB).
    pub cache_bytes: u64,
    /// Operations that may wait for one database's thread; more are refused with `Overloaded`.
    /// Default: 4096.
    pub queue_capacity: usize,
    /// Period of sled's background flusher in milliseconds, or `None` to flush only on
    /// checkpoints. Either way, only a checkpoint is a full fsync. Default: 500.
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            paths: (0..4)
                .map(|index| PathBuf::from(format!("./data/store-{index}")))
                .collect(),
            cache_bytes: 64 * 1024 * 1024,
            queue_capacity: 4096,
            flush_every_ms: Some(500),
        }
    }
}

impl StoreConfig {
    /// The default settings with one database in each of `paths`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        StoreConfig {
            paths: paths.into_iter().map(Into::into).collect(),
            ..StoreConfig::default()
        }
    }

    /// Every problem with these settings, one line each; empty if they are valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.paths.is_empty() || self.paths.len() > SHARDS {
            problems.push(format!(
                "store.paths must list 1 to {SHARDS} directories, not {}",
                self.paths.len()
            ));
        }
        let mut seen = HashSet::new();
        for path in &self.paths {
            if path.as_os_str().is_empty() {
                problems.push("store.paths must not contain an empty path".to_owned());
            } else if !seen.insert(normalized(path)) {
                problems.push(format!(
                    "store.paths lists {} more than once",
                    path.display()
                ));
            }
        }
        if self.cache_bytes == 0 {
            problems.push("store.cache_bytes must be at least 1".to_owned());
        }
        if self.queue_capacity == 0 {
            problems.push("store.queue_capacity must be at least 1".to_owned());
        }
        if self.flush_every_ms == Some(0) {
            problems.push("store.flush_every_ms must be at least 1 when set".to_owned());
        }
        problems
    }
}

/// `path` without `.` components, so that `a`, `./a` and `a/` compare equal.
fn normalized(path: &std::path::Path) -> PathBuf {
    path.components()
        .filter(|component| *component != Component::CurDir)
        .collect()
}
