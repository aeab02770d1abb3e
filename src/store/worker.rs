//! [`Store`]: the handle of one database's thread (`tern-store-N`), its bounded queue and its
//! counters; the thread itself, which reopens its database when sled has failed.
//!
//! sled remembers the first I/O error of its log writer (a full disk, say) and answers every
//! later operation with it, for as long as the database is open. So after an operation fails
//! the thread asks sled for a flush: if that fails too, the database has failed and is closed,
//! and the thread opens it again (at once, then with a growing pause while that fails). sled's
//! recovery keeps only what reached its files, so the thread keeps every batch applied since the
//! last flush that succeeded (the *replay* log, bounded by [`REPLAY_BYTES`]: past it the thread
//! flushes first) and applies them again to the reopened database before it serves: what was
//! answered `Ok` stays applied across a reopen.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use metrics::Gauge;
use tokio::sync::watch;

use super::batch::WriteBatch;
use super::config::StoreConfig;
use super::database::Database;
use super::error::StoreError;
use super::telemetry::{self, Telemetry};
use crate::thread_handle::ThreadHandle;

/// Batches kept for a reopen, in bytes, before the thread flushes to start a new log.
const REPLAY_BYTES: usize = 16 * 1024 * 1024;

/// The pause before the first reopen after one failed; doubled after each failure.
const FIRST_REOPEN_PAUSE: Duration = Duration::from_millis(500);

/// The longest pause between two reopens of a failed database.
const MAX_REOPEN_PAUSE: Duration = Duration::from_secs(8);

/// What an operation does to the database; the `op` label of its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// A write batch.
    Write,
    /// Any read or scan.
    Read,
    /// A flush plus fsync.
    Checkpoint,
}

/// An operation bound to its completion, as queued.
type Task = Box<dyn FnOnce(&mut Served) + Send>;

/// What the database thread is asked to do.
enum Message {
    /// Run an operation.
    Run(Task),
    /// Stop after what was queued before: checkpoint and exit ([`Store::close`]).
    Close,
    /// Die of a panic outside any operation (debug builds: tests of the node's supervision).
    #[cfg(debug_assertions)]
    Crash,
    /// Take the database for failed, as if sled had failed (tests of the reopen).
    #[cfg(test)]
    Fail,
}

/// Handle to one sled database and the thread that owns it. Obtained from
/// [`super::Stores::store`]; operations go through [`super::Stores`].
#[derive(Debug)]
pub struct Store {
    index: usize,
    path: PathBuf,
    commands: Option<SyncSender<Message>>,
    thread: ThreadHandle<Result<(), StoreError>>,
    /// Closed (the sender dropped) when the thread ends, however it ends.
    exit: watch::Receiver<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

/// A point-in-time view of one database's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Operations run since open.
    pub operations: u64,
    /// Operations that completed with an error (panics included).
    pub errors: u64,
    /// Operations that panicked (caught; the thread went on).
    pub panics: u64,
    /// Completion callbacks that panicked (caught; the thread went on).
    pub callback_panics: u64,
    /// Checkpoints that succeeded.
    pub checkpoints: u64,
    /// Operations waiting in the queue now.
    pub queue_depth: u64,
    /// Times the database was closed and opened again after sled failed.
    pub reopens: u64,
}

/// Counters shared by the handle and its thread.
#[derive(Debug)]
struct Shared {
    operations: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    callback_panics: AtomicU64,
    checkpoints: AtomicU64,
    queue_depth: AtomicU64,
    reopens: AtomicU64,
    /// The database has failed and is not open again yet.
    failed: AtomicBool,
    queue_depth_gauge: Gauge,
}

/// Where the database lives and how it is opened again.
#[derive(Debug)]
struct Place {
    index: usize,
    count: usize,
    path: PathBuf,
    config: StoreConfig,
}

impl Store {
    /// Starts the thread that owns `database` (number `index` of `count`, opened with
    /// `config`).
    pub(crate) fn start(
        index: usize,
        count: usize,
        database: Database,
        config: &StoreConfig,
    ) -> Result<Store, StoreError> {
        let path = database.path().to_path_buf();
        let shared = Arc::new(Shared {
            operations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            queue_depth_gauge: telemetry::queue_depth(index),
        });
        let (commands, queue) = mpsc::sync_channel(config.queue_capacity);
        let (alive, exit) = watch::channel(());
        let place = Place {
            index,
            count,
            path: path.clone(),
            config: config.clone(),
        };
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("tern-store-{index}"))
            .spawn(move || {
                // Dropped when the thread ends, by a return or a panic: the node's supervisor
                // waits on it.
                let _alive = alive;
                crate::background::lower_priority();
                let mut served = Served::new(place, database, thread_shared);
                serve(&mut served, queue)
            })
            .map_err(|error| StoreError::io(&path, error))?;
        Ok(Store {
            index,
            path,
            commands: Some(commands),
            thread: ThreadHandle::new(thread),
            exit,
            shared,
        })
    }

    /// Queues `job` without blocking; `done` gets its outcome on the database thread. Fails at
    /// once with [`StoreError::Overloaded`] when the queue is full or [`StoreError::Closed`];
    /// `done` is then dropped without being called.
    pub(crate) fn submit<T, J, F>(&self, kind: OpKind, job: J, done: F) -> Result<(), StoreError>
    where
        T: Send + 'static,
        J: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
        F: FnOnce(Result<T, StoreError>) + Send + 'static,
    {
        self.queue(Box::new(move |served| {
            let result = served.execute(kind, job);
            served.complete(done, result);
        }))
    }

    /// Queues the write of `batch` to `shard`, kept for a replay once applied.
    pub(crate) fn submit_write<F>(
        &self,
        shard: usize,
        batch: WriteBatch,
        done: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Result<(), StoreError>) + Send + 'static,
    {
        self.queue(Box::new(move |served| {
            let result = served.write(shard, batch);
            served.complete(done, result);
        }))
    }

    fn queue(&self, task: Task) -> Result<(), StoreError> {
        let commands = self.commands.as_ref().ok_or(StoreError::Closed)?;
        self.shared.enqueued();
        commands.try_send(Message::Run(task)).map_err(|error| {
            self.shared.dequeued();
            match error {
                TrySendError::Full(_) => StoreError::Overloaded,
                TrySendError::Disconnected(_) => StoreError::Closed,
            }
        })
    }

    /// Position of this database in `store.paths`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False once the thread is gone (closed, or died) or while its database has failed and is
    /// not open again.
    pub fn healthy(&self) -> bool {
        self.commands.is_some()
            && !self.shared.failed.load(Ordering::SeqCst)
            && self.thread.running()
    }

    /// Resolves when the database thread has ended, however it ended.
    pub fn exited(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut exit = self.exit.clone();
        async move { while exit.changed().await.is_ok() {} }
    }

    /// The database's counters now.
    pub fn stats(&self) -> StoreStats {
        let shared = &self.shared;
        StoreStats {
            operations: shared.operations.load(Ordering::Relaxed),
            errors: shared.errors.load(Ordering::Relaxed),
            panics: shared.panics.load(Ordering::Relaxed),
            callback_panics: shared.callback_panics.load(Ordering::Relaxed),
            checkpoints: shared.checkpoints.load(Ordering::Relaxed),
            queue_depth: shared.queue_depth.load(Ordering::SeqCst),
            reopens: shared.reopens.load(Ordering::Relaxed),
        }
    }

    /// Asks the thread to stop after what is queued now (waiting for room in a full queue):
    /// it runs it, checkpoints and exits. Blocks.
    pub(crate) fn request_close(&self) {
        if let Some(commands) = &self.commands {
            // Gone: the thread has already ended.
            let _ = commands.send(Message::Close);
        }
    }

    /// Makes the thread die of a panic (debug builds; for tests of the node's supervision).
    #[cfg(debug_assertions)]
    pub fn crash(&self) {
        if let Some(commands) = &self.commands {
            let _ = commands.try_send(Message::Crash);
        }
    }

    /// Makes the thread take its database for failed, as if sled had failed.
    #[cfg(test)]
    pub(crate) fn fail(&self) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Message::Fail);
        }
    }

    /// Closes the queue; the thread runs what is queued, checkpoints and exits.
    pub(crate) fn hang_up(&mut self) {
        drop(self.commands.take());
    }

    /// Waits for the thread to end; returns its final checkpoint's outcome (`Ok` if it was
    /// joined before). Blocks.
    pub(crate) fn wait(&self) -> Result<(), StoreError> {
        match self.thread.join() {
            Some(ended) => ended.unwrap_or(Err(StoreError::ThreadPanicked)),
            None => Ok(()),
        }
    }

    /// Closes the queue and waits for the thread; returns its final checkpoint's outcome.
    pub(crate) fn join(&mut self) -> Result<(), StoreError> {
        self.hang_up();
        self.wait()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.join() {
            tracing::error!(%error, path = %self.path.display(), "store: unclean close");
        }
    }
}

impl Shared {
    fn enqueued(&self) {
        self.queue_depth.fetch_add(1, Ordering::SeqCst);
        self.queue_depth_gauge.increment(1.0);
    }

    fn dequeued(&self) {
        self.queue_depth.fetch_sub(1, Ordering::SeqCst);
        self.queue_depth_gauge.decrement(1.0);
    }

    /// Counts one operation (before its completion runs, so its caller sees the counts).
    fn count(&self, telemetry: &Telemetry, kind: OpKind, elapsed: Duration, failed: bool) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        telemetry.op_seconds(kind).record(elapsed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            telemetry.errors.increment(1);
        } else if kind == OpKind::Checkpoint {
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
            telemetry.checkpoints.increment(1);
        }
    }
}

/// Batches applied since the last flush that succeeded, in order: what a reopened database
/// may have lost.
#[derive(Debug, Default)]
struct Replay {
    batches: Vec<(usize, WriteBatch)>,
    bytes: usize,
}

impl Replay {
    fn clear(&mut self) {
        self.batches = Vec::new();
        self.bytes = 0;
    }
}

/// The state of a database thread.
struct Served {
    place: Place,
    /// `None` while the database has failed and is not open again.
    database: Option<Database>,
    /// Why the database is closed (answered to every operation meanwhile).
    failure: Option<StoreError>,
    replay: Replay,
    /// When to try the next reopen, and the pause after that one if it fails.
    next_reopen: Instant,
    pause: Duration,
    shared: Arc<Shared>,
    telemetry: Telemetry,
}

impl Served {
    fn new(place: Place, database: Database, shared: Arc<Shared>) -> Self {
        let telemetry = Telemetry::new(place.index);
        Served {
            place,
            database: Some(database),
            failure: None,
            replay: Replay::default(),
            next_reopen: Instant::now(),
            pause: FIRST_REOPEN_PAUSE,
            shared,
            telemetry,
        }
    }

    /// The open database, reopening a failed one when a reopen is due.
    fn database(&mut self) -> Result<&Database, StoreError> {
        if self.database.is_none() && Instant::now() >= self.next_reopen {
            self.reopen();
        }
        match &self.database {
            Some(database) => Ok(database),
            None => Err(self.failure.clone().unwrap_or(StoreError::Closed)),
        }
    }

    /// Runs `job` on the database, catching a panic; counts it; checks the database after a
    /// failure.
    fn execute<T, J>(&mut self, kind: OpKind, job: J) -> Result<T, StoreError>
    where
        J: FnOnce(&Database) -> Result<T, StoreError>,
    {
        let started = Instant::now();
        let result = match self.database() {
            Err(error) => Err(error),
            Ok(database) => match panic::catch_unwind(AssertUnwindSafe(|| job(database))) {
                Ok(result) => result,
                Err(_) => {
                    self.shared.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(path = %self.place.path.display(), ?kind,
                        "store: operation panicked; thread continues");
                    Err(StoreError::Panicked)
                }
            },
        };
        self.shared
            .count(&self.telemetry, kind, started.elapsed(), result.is_err());
        match &result {
            Ok(_) if kind == OpKind::Checkpoint => self.replay.clear(),
            Ok(_) => {}
            Err(error) if error.is_storage_failure() && self.database.is_some() => {
                self.check();
            }
            Err(_) => {}
        }
        result
    }

    /// Applies `batch` to `shard`; keeps it for a replay once applied.
    fn write(&mut self, shard: usize, batch: WriteBatch) -> Result<(), StoreError> {
        let bytes = batch.approximate_bytes();
        if self.replay.bytes + bytes > REPLAY_BYTES && self.database.is_some() {
            // A flush makes everything applied so far survive a reopen: start a new log.
            self.check();
        }
        let result = self.execute(OpKind::Write, |database| database.write(shard, &batch));
        if result.is_ok() {
            self.replay.bytes += bytes;
            self.replay.batches.push((shard, batch));
        }
        result
    }

    /// Hands `result` to `done`, catching a panic there.
    fn complete<T, F>(&self, done: F, result: Result<T, StoreError>)
    where
        F: FnOnce(Result<T, StoreError>),
    {
        if panic::catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
            self.shared.callback_panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("store: completion callback panicked; thread continues");
        }
    }

    /// Asks sled for a flush: success starts a new replay log; failure means sled keeps
    /// failing (it answers every operation with its first I/O error), so the database is
    /// closed, to be opened again.
    fn check(&mut self) {
        let Some(database) = &self.database else {
            return;
        };
        let flushed = panic::catch_unwind(AssertUnwindSafe(|| database.flush()))
            .unwrap_or(Err(StoreError::Panicked));
        match flushed {
            Ok(()) => self.replay.clear(),
            Err(error) => self.fail(error),
        }
    }

    /// Closes the failed database, to be opened again at once.
    fn fail(&mut self, error: StoreError) {
        tracing::error!(%error, path = %self.place.path.display(),
            replay_batches = self.replay.batches.len(),
            "store: database failed; closing it to open it again");
        self.shared.failed.store(true, Ordering::SeqCst);
        self.failure = Some(error);
        // Dropping the handle closes sled (its own final flush fails and is logged).
        self.database = None;
        self.next_reopen = Instant::now();
        self.pause = FIRST_REOPEN_PAUSE;
    }

    /// Opens the failed database again, applies the replay log to it and checkpoints it; on
    /// failure tries again after a longer pause.
    fn reopen(&mut self) {
        let place = &self.place;
        let replay = &self.replay;
        let reopened = panic::catch_unwind(AssertUnwindSafe(|| {
            let database = Database::open(place.index, place.count, &place.path, &place.config)?;
            for (shard, batch) in &replay.batches {
                database.write(*shard, batch)?;
            }
            database.checkpoint()?;
            Ok::<_, StoreError>(database)
        }))
        .unwrap_or(Err(StoreError::Panicked));
        match reopened {
            Ok(database) => {
                tracing::info!(path = %self.place.path.display(),
                    replayed_batches = self.replay.batches.len(), "store: database reopened");
                self.database = Some(database);
                self.failure = None;
                self.replay.clear();
                self.pause = FIRST_REOPEN_PAUSE;
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                self.shared.failed.store(false, Ordering::SeqCst);
                self.telemetry.reopens.increment(1);
            }
            Err(error) => {
                tracing::warn!(%error, path = %self.place.path.display(),
                    retry_in_ms = self.pause.as_millis() as u64, "store: reopen failed");
                self.telemetry.reopen_failures.increment(1);
                self.failure = Some(error);
                self.next_reopen = Instant::now() + self.pause;
                self.pause = (self.pause * 2).min(MAX_REOPEN_PAUSE);
            }
        }
    }
}

/// The database thread: runs queued operations in order until the queue is closed and empty
/// (or a close is asked for), reopening a failed database meanwhile; then checkpoints and drops
/// the database (sled flushes once more on drop).
fn serve(served: &mut Served, queue: Receiver<Message>) -> Result<(), StoreError> {
    loop {
        let message = if served.database.is_some() {
            match queue.recv() {
                Ok(message) => message,
                Err(_) => break,
            }
        } else {
            // Failed: wake up for the next reopen even when nothing is asked.
            let wait = served.next_reopen.saturating_duration_since(Instant::now());
            match queue.recv_timeout(wait) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    served.reopen();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        match message {
            Message::Run(task) => {
                served.shared.dequeued();
                task(served);
            }
            Message::Close => break,
            #[cfg(debug_assertions)]
            Message::Crash => panic!("store thread crashed on request"),
            #[cfg(test)]
            Message::Fail => served.fail(StoreError::Sled("failed on purpose".to_owned())),
        }
    }
    // Operations queued after a close are dropped unanswered (their callers see `Closed`).
    while let Ok(message) = queue.try_recv() {
        if matches!(message, Message::Run(_)) {
            served.shared.dequeued();
        }
    }
    drop(queue);
    // A last try for a failed database, so that what the replay log holds is not lost.
    served.next_reopen = Instant::now();
    let result = served.execute(OpKind::Checkpoint, Database::checkpoint);
    if let Err(error) = &result {
        tracing::error!(%error, path = %served.place.path.display(), "store: final checkpoint failed");
    }
    served.database = None;
    result
}
