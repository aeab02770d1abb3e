//! Deleting released segments off the journal thread.
//!
//! Unlinking a full segment makes the file system free every extent of it: 15-25 ms for a
//! 64 MiB segment on a virtual disk, and a checkpoint after a burst releases several at once.
//! Done on the journal thread, that time stalled every ack behind it. So the writer only
//! *retires* a released segment: one rename into the journal's `released/` directory, made
//! durable with the directory's fsync (a retired segment is gone from the journal's point of
//! view, and retirements reach the disk in order, oldest first, as deletions had to). This
//! module's thread then unlinks the retired files. Files a crash left in `released/` are
//! deleted at the next open.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::{self, JoinHandle};

use super::error::JournalError;
use super::segment;

/// Name of the directory, inside the journal's, holding retired segments until unlinked.
pub(crate) const RELEASED_DIR: &str = "released";

/// Retired files waiting for the reaper, at most; past it the writer unlinks them itself.
const QUEUE: usize = 1024;

/// The reaper thread of one journal, started with the first retirement.
#[derive(Debug)]
pub(crate) struct Reaper {
    released: PathBuf,
    queue: Option<(SyncSender<PathBuf>, JoinHandle<()>)>,
}

impl Reaper {
    /// Makes sure `dir/released` exists (durably) and queues what a crash left in it.
    pub(crate) fn open(dir: &Path) -> Result<Self, JournalError> {
        let released = dir.join(RELEASED_DIR);
        if !released.is_dir() {
            fs::create_dir_all(&released).map_err(|error| JournalError::io(&released, error))?;
            segment::sync_dir(dir)?;
        }
        let mut reaper = Reaper {
            released,
            queue: None,
        };
        let leftovers = fs::read_dir(&reaper.released)
            .map_err(|error| JournalError::io(&reaper.released, error))?;
        for entry in leftovers.flatten() {
            reaper.unlink(entry.path());
        }
        Ok(reaper)
    }

    /// Takes `path` out of the journal: renames it into `released/` and makes the rename
    /// durable. The file is unlinked later, off this thread.
    pub(crate) fn retire(&mut self, dir: &Path, path: &Path) -> io::Result<()> {
        let Some(name) = path.file_name() else {
            return Err(io::Error::other("segment path without a file name"));
        };
        let target = self.released.join(name);
        match fs::rename(path, &target) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        }
        crate::fsync::sync_dir(dir)?;
        self.unlink(target);
        Ok(())
    }

    /// Hands `path` to the reaper thread (started on first use); unlinks it here when the
    /// thread cannot take it.
    fn unlink(&mut self, path: PathBuf) {
        if self.queue.is_none() {
            let (sender, receiver) = sync_channel(QUEUE);
            match thread::Builder::new()
                .name("tern-reaper".to_owned())
                .spawn(move || {
                    crate::background::lower_priority();
                    reap(receiver)
                }) {
                Ok(thread) => self.queue = Some((sender, thread)),
                Err(error) => {
                    tracing::warn!(%error, "journal: cannot start the reaper thread");
                }
            }
        }
        let path = match &self.queue {
            Some((sender, _)) => match sender.try_send(path) {
                Ok(()) => return,
                Err(TrySendError::Full(path) | TrySendError::Disconnected(path)) => path,
            },
            None => path,
        };
        remove(&path);
    }

    /// Waits until every handed-over file is unlinked (the journal is closing).
    pub(crate) fn finish(&mut self) {
        if let Some((sender, thread)) = self.queue.take() {
            drop(sender);
            if thread.join().is_err() {
                tracing::error!("journal: the reaper thread panicked");
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The reaper thread: unlinks files in the order they were retired.
fn reap(queue: Receiver<PathBuf>) {
    for path in queue {
        remove(&path);
    }
}

/// Unlinks a retired file; one already gone is fine, another failure is logged (the file is
/// retried at the next open).
fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "journal: cannot delete a released segment");
        }
    }
}
