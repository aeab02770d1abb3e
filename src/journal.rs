//! The write-ahead journal: group-committed, fsynced, CRC-checked records that survive kill -9.
//!
//! The mailbox layer appends each accepted message here and acks it only when the journal
//! completes the append; after a crash it replays the records past its last checkpoint, and it
//! releases records once they are checkpointed in the store.
//!
//! # Ownership
//! [`Journal`] is a handle; one OS thread (`tern-journal-N`, the `writer` module) owns the
//! directory lock, the active segment file and the segment list. Appends reach it through a
//! bounded queue (full: [`JournalError::Overloaded`], never blocking); completions come back on a
//! oneshot channel or as a callback run on the journal thread. [`Journal::close`] (or dropping
//! the last handle) stops the thread after what is queued: it is written, fsynced and
//! completed, and the thread is joined. [`Journal::exited`] resolves when the thread has ended,
//! however it ended (the node's supervisor waits on it).
//!
//! # On disk
//! `dir/LOCK` (held with an exclusive file lock while open) and segment files
//! `dir/{first_lsn:020}.wal`, each a sequence of records `len: u32 BE | crc32c: u32 BE |
//! lsn: u64 BE | payload` (the `record` module); the checksum covers the lsn bytes and the
//! payload. Lsns start at 1 and rise by one per record across segments with no gaps.
//!
//! # Invariants
//! - An append completes `Ok(lsn)` only after an fsync covering its record; records complete in
//!   lsn order, which is queue order.
//! - A failed batch is truncated away (and the truncation fsynced) before anything else is
//!   written, and its lsns are reused, so replay never meets a gap or a repeated lsn.
//! - Recovery truncates a torn tail only in the last segment; damage anywhere else is
//!   [`JournalError::Corrupt`].
//! - Segments are deleted oldest first, each deletion fsynced, never the last segment.
//!
//! Caveat: an `Err` completion means "not acknowledged". If a batch fails and its rollback fails
//! too, and the process dies before a fresh segment is created, its records may come back on
//! replay; consumers dedupe (the mailbox does, by `client_msg_id`).

mod config;
mod error;
mod handoff;
mod reaper;
mod record;
mod replay;
mod scan;
mod segment;
pub mod telemetry;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::thread;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

pub use config::JournalConfig;
pub use error::{Damage, JournalError};
pub use handoff::AppendResult;
pub use replay::{Recovery, Replay};

use handoff::{Command, Completion, Shared};
use writer::Writer;

use crate::thread_handle::ThreadHandle;

/// Largest payload accepted, in bytes; checked on append and, before allocating, on replay.
pub const MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;

/// Name of the lock file in the journal directory.
const LOCK_FILE: &str = "LOCK";

/// Numbers the journal threads of this process (`tern-journal-N`).
static NEXT_THREAD_ID: AtomicUsize = AtomicUsize::new(1);

/// Handle to an open journal. `Send + Sync`: share it with `Arc`.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    commands: Option<SyncSender<Command>>,
    thread: ThreadHandle<()>,
    /// Closed (the sender dropped) when the thread ends, however it ends.
    exit: watch::Receiver<()>,
    shared: Arc<Shared>,
}

/// A point-in-time view of the journal's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// `sync_data` calls made since open (records / fsyncs = group-commit factor).
    pub fsyncs: u64,
    /// Batches that failed since open (I/O error, disk full).
    pub failures: u64,
    /// The highest lsn known durable (0 if none).
    pub durable_lsn: u64,
    /// Segment files held.
    pub segments: u64,
    /// Bytes the segment files take.
    pub disk_bytes: u64,
    /// Completion callbacks that panicked (caught; the journal went on).
    pub callback_panics: u64,
}

/// The completion of one append: resolves to its lsn once durable, or to the reason it is not.
#[derive(Debug)]
#[must_use = "the record is durable only when this resolves to Ok"]
pub struct Pending {
    receiver: oneshot::Receiver<AppendResult>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `config.dir`: locks the directory, validates
    /// every segment, truncates a torn tail, and starts the journal thread. The [`Recovery`]
    /// replays what is on disk. Blocks on disk I/O for as long as the scan takes: call it before
    /// serving, or on a blocking thread.
    pub fn open(config: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(JournalError::InvalidConfig { problems });
        }
        create_dir(&config.dir)?;
        let lock = lock_dir(&config.dir)?;
        let scan = scan::scan(&config.dir)?;
        let next_lsn = scan.spans.last().map_or(1, |span| span.end_lsn);
        let recovery = Recovery::new(scan.spans.clone(), next_lsn, scan.dropped_bytes);
        let shared = Arc::new(Shared::default());
        let writer = Writer::new(&config, scan.spans, next_lsn, lock, Arc::clone(&shared))?;
        let (commands, queue) = mpsc::sync_channel(config.queue_capacity);
        let name = format!(
            "tern-journal-{}",
            NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed)
        );
        let (alive, exit) = watch::channel(());
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Dropped when the thread ends, by a return or a panic: the node's supervisor
                // waits on it.
                let _alive = alive;
                writer.run(queue);
            })
            .map_err(|error| JournalError::io(&config.dir, error))?;
        let journal = Journal {
            dir: config.dir,
            commands: Some(commands),
            thread: ThreadHandle::new(thread),
            exit,
            shared,
        };
        Ok((journal, recovery))
    }

    /// Queues `payload` for the next batch without blocking; the [`Pending`] resolves after the
    /// fsync that covers it. Fails at once with [`JournalError::Overloaded`] when the queue is
    /// full, [`JournalError::PayloadTooLarge`], or [`JournalError::Closed`].
    pub fn append(&self, payload: Bytes) -> Result<Pending, JournalError> {
        let (sender, receiver) = oneshot::channel();
        self.submit(payload, Completion::Channel(sender))?;
        Ok(Pending { receiver })
    }

    /// Like [`Self::append`], but calls `done` with the outcome instead. `done` runs on the
    /// journal thread, in lsn order, so it must be quick and must not block (an actor cast is
    /// right; a panic in it is caught and counted). If this returns `Err`, `done` is dropped
    /// without being called.
    pub fn append_with<F>(&self, payload: Bytes, done: F) -> Result<(), JournalError>
    where
        F: FnOnce(AppendResult) + Send + 'static,
    {
        self.submit(payload, Completion::Callback(Box::new(done)))
    }

    fn submit(&self, payload: Bytes, done: Completion) -> Result<(), JournalError> {
        if payload.len() > MAX_PAYLOAD_BYTES as usize {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let commands = self.commands.as_ref().ok_or(JournalError::Closed)?;
        commands
            .try_send(Command::Append { payload, done })
            .map_err(|error| match error {
                TrySendError::Full(_) => JournalError::Overloaded,
                TrySendError::Disconnected(_) => JournalError::Closed,
            })
    }

    /// Declares every record with an lsn up to `up_to_lsn` checkpointed elsewhere. The journal
    /// thread then deletes, oldest first, each segment whose records all qualify, never the
    /// active one. Does not block; marks only move forward.
    pub fn release(&self, up_to_lsn: u64) {
        self.shared
            .release_up_to
            .fetch_max(up_to_lsn, Ordering::SeqCst);
        if let Some(commands) = &self.commands {
            // A full queue means the thread is busy: it looks at the mark after every batch.
            let _ = commands.try_send(Command::Wake);
        }
    }

    /// False after a batch failed (until one succeeds) or if the journal thread is gone: the
    /// alarm for "acks are failing".
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst) && self.thread.running()
    }

    /// Resolves when the journal thread has ended, however it ended.
    pub fn exited(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut exit = self.exit.clone();
        async move { while exit.changed().await.is_ok() {} }
    }

    /// Makes the journal thread die of a panic (debug builds; for tests of the node's
    /// supervision).
    #[cfg(debug_assertions)]
    pub fn crash(&self) {
        if let Some(commands) = &self.commands {
            let _ = commands.try_send(Command::Crash);
        }
    }

    /// The journal's counters now.
    pub fn stats(&self) -> JournalStats {
        let shared = &self.shared;
        JournalStats {
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            failures: shared.failures.load(Ordering::Relaxed),
            durable_lsn: shared.durable_lsn.load(Ordering::SeqCst),
            segments: shared.segments.load(Ordering::SeqCst),
            disk_bytes: shared.disk_bytes.load(Ordering::SeqCst),
            callback_panics: shared.callback_panics.load(Ordering::Relaxed),
        }
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the journal after what is queued now: it is written, fsynced and completed, the
    /// thread exits and is joined; later appends are refused with [`JournalError::Closed`]
    /// (waits for room in a full queue). Blocks: from async code, call it on a blocking thread.
    /// Dropping the last handle does the same.
    pub fn close(&self) -> Result<(), JournalError> {
        if let Some(commands) = &self.commands {
            // Gone: the thread has already ended.
            let _ = commands.send(Command::Close);
        }
        self.join()
    }

    fn shut_down(&mut self) -> Result<(), JournalError> {
        drop(self.commands.take());
        self.join()
    }

    fn join(&self) -> Result<(), JournalError> {
        match self.thread.join() {
            Some(ended) => ended.map_err(|_| JournalError::WriterPanicked),
            None => Ok(()),
        }
    }

    /// Failures to inject into the journal thread's I/O (tests of the error paths).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &handoff::Faults {
        &self.shared.faults
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::error!(%error, dir = %self.dir.display(), "journal: unclean close");
        }
    }
}

impl Pending {
    /// The raw channel the outcome arrives on (closed without a value if the journal thread
    /// died).
    pub fn into_receiver(self) -> oneshot::Receiver<AppendResult> {
        self.receiver
    }
}

impl Future for Pending {
    type Output = AppendResult;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<AppendResult> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|received| received.unwrap_or(Err(JournalError::Closed)))
    }
}

/// Creates the journal directory (and parents) and makes its entry durable.
fn create_dir(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|error| JournalError::io(dir, error))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => segment::sync_dir(parent),
        _ => Ok(()),
    }
}

/// Takes the directory's exclusive lock; the returned file holds it until dropped.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| JournalError::io(&path, error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(error)) => Err(JournalError::io(&path, error)),
    }
}
