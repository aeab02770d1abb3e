//! The journal's settings, their defaults and validation.

use std::path::PathBuf;

use serde::Deserialize;

/// Journal settings; meant to be embedded in the node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Directory holding the segment files and the lock file; created if missing. One journal
    /// per directory. Default: `./data/journal`.
    pub dir: PathBuf,
    /// A segment is rotated when the next batch would take it past this many bytes, so that
    /// released records free disk space in whole files. Default: 67108864 (64 MiB).
    pub segment_bytes: u64,
    /// Most records written and fsynced as one batch; bounds the latency a batch adds. Default:
    /// 4096.
    pub max_batch_records: usize,
    /// Appends that may wait for the journal thread; more are refused with `Overloaded`.
    /// Default: 65536.
    pub queue_capacity: usize,
    /// Most bytes all segments may take together; appends past it fail with `DiskFull` until
    /// [`super::Journal::release`] frees whole segments. `None` means no quota (the device's
    /// own `ENOSPC` still fails appends the same way). Default: none.
    pub max_disk_bytes: Option<u64>,
    /// Least time between the starts of two fsyncs, in microseconds: a batch whose first record
    /// arrives sooner after the previous fsync began waits out the rest, gathering what else
    /// arrives, so a steady stream of lone records shares one fsync per interval instead of
    /// paying one each (the commit delay of database journals). A record arriving after a quiet
    /// spell is written at once. 0 syncs every batch as soon as the previous one is done.
    /// Default: 0.
    pub commit_interval_us: u64,
    /// Allocates each segment's `segment_bytes` on disk when the segment is created (one
    /// `fallocate`, well under a millisecond), so appends write into space the file already has
    /// instead of growing it: an fsync then has no new file size to commit. A zero-filled tail
    /// reads as unwritten at recovery. Where the file system cannot allocate (or has no room),
    /// the segment grows by its appends as without this. Default: false.
    pub preallocate: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("./data/journal"),
            segment_bytes: 64 * 1024 * 1024,
            max_batch_records: 4096,
            queue_capacity: 65536,
            max_disk_bytes: None,
            commit_interval_us: 0,
            preallocate: false,
        }
    }
}

impl JournalConfig {
    /// The default settings with the journal in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            ..JournalConfig::default()
        }
    }

    /// Every problem with these settings, one line each; empty if they are valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("journal.dir must not be empty".to_owned());
        }
        if self.segment_bytes == 0 {
            problems.push("journal.segment_bytes must be at least 1".to_owned());
        }
        if self.max_batch_records == 0 {
            problems.push("journal.max_batch_records must be at least 1".to_owned());
        }
        if self.queue_capacity == 0 {
            problems.push("journal.queue_capacity must be at least 1".to_owned());
        }
        if self.max_disk_bytes == Some(0) {
            problems.push("journal.max_disk_bytes must be at least 1 when set".to_owned());
        }
        problems
    }
}
