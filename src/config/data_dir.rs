//! The data directory's lock file: one node per data directory, checked at start-up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside `node.data_dir`. It holds the pid of the node that has it, for
/// the operator; the lock itself is an exclusive `flock`, released by the kernel when the
/// process ends however it ends, so a stale file never blocks a restart.
pub const LOCK_FILE: &str = "LOCK";

/// Why a node cannot use its data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory does not exist and cannot be created.
    #[error("node.data_dir {path} cannot be created: {source}")]
    Create {
        /// The data directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The lock file cannot be opened or locked (permissions, read-only file system).
    #[error("node.data_dir lock file {path} cannot be used: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Another process (another tern node) holds the lock.
    #[error("node.data_dir {path} is in use by another tern node{holder}")]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// `" (pid N)"` when the lock file names the holder, else empty.
        holder: String,
    },
}

/// The held lock on a data directory; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `data_dir` if needed and takes its exclusive lock without waiting.
    pub fn acquire(data_dir: &Path) -> Result<Self, DataDirError> {
        std::fs::create_dir_all(data_dir).map_err(|source| DataDirError::Create {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(LOCK_FILE);
        let lock_error = |source| DataDirError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(DataDirError::InUse {
                    path: data_dir.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(source)) => return Err(lock_error(source)),
        }
        // Only the holder writes the pid; a failure here loses a diagnostic, not the lock.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let second = DataDirLock::acquire(dir.path());
        let Err(DataDirError::InUse { holder, .. }) = second else {
            panic!("expected InUse, got {second:?}");
        };
        assert_eq!(holder, format!(" (pid {})", std::process::id()));
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after release");
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        let result = DataDirLock::acquire(&file.join("data"));
        assert!(
            matches!(result, Err(DataDirError::Create { .. })),
            "{result:?}"
        );
    }
}
