//! Making what is on disk durable: fsync of a directory's files and of the directory itself.
//! sled's `flush` stops at `sync_file_range`, which neither syncs file metadata nor flushes the
//! drive's cache, so a database is made durable against power loss by fsyncing its files.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// An fsync (or the directory listing before it) failed.
#[derive(Debug, thiserror::Error)]
#[error("fsync {path}: {source}")]
pub struct SyncError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Runs `io`, blocking file work such as an fsync, from async code: on a multi-threaded tokio
/// runtime the worker hands its other tasks to the rest first (`block_in_place`), so a slow disk
/// stalls only the caller; elsewhere (a current-thread runtime, as in the simulations, or no
/// runtime) it runs inline.
pub fn off_the_runtime<R>(io: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(io)
        }
        _ => io(),
    }
}

/// fsyncs a directory, making its entries (new files, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) and fsyncs its parent so the new entry survives a crash.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// fsyncs every regular file directly in `dir`, then `dir` itself. Files that vanish meanwhile
/// (sled replaces its snapshots) are skipped.
pub fn sync_tree(dir: &Path) -> Result<(), SyncError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| SyncError { path, source }
    };
    for entry in fs::read_dir(dir).map_err(failed(dir))? {
        let entry = entry.map_err(failed(dir))?;
        let path = entry.path();
        if !entry.file_type().map_err(failed(&path))?.is_file() {
            continue;
        }
        match File::open(&path).and_then(|file| file.sync_all()) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed(&path)(error)),
        }
    }
    sync_dir(dir).map_err(failed(dir))
}
