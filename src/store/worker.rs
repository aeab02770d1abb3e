//! [`Store`]: the handle of one database's thread (`tern-store-N`), its bounded queue and its
//! counters.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use metrics::Gauge;

use super::database::Database;
use super::error::StoreError;
use super::telemetry::{self, Telemetry};

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
type Task = Box<dyn FnOnce(&Context<'_>) + Send>;

/// What a task runs with on the database thread.
struct Context<'a> {
    database: &'a Database,
    shared: &'a Shared,
    telemetry: &'a Telemetry,
}

/// Handle to one sled database and the thread that owns it. Obtained from
/// [`super::Stores::store`]; operations go through [`super::Stores`].
#[derive(Debug)]
pub struct Store {
    index: usize,
    path: PathBuf,
    commands: Option<SyncSender<Task>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    shared: Arc<Shared>,
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
    queue_depth_gauge: Gauge,
}

impl Store {
    /// Starts the thread that owns `database`, with a queue of `capacity` operations.
    pub(crate) fn start(
        index: usize,
        database: Database,
        capacity: usize,
    ) -> Result<Store, StoreError> {
        let path = database.path().to_path_buf();
        let shared = Arc::new(Shared {
            operations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_depth_gauge: telemetry::queue_depth(index),
        });
        let (commands, queue) = mpsc::sync_channel(capacity);
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(format!("tern-store-{index}"))
            .spawn(move || serve(index, database, queue, &thread_shared))
            .map_err(|error| StoreError::io(&path, error))?;
        Ok(Store {
            index,
            path,
            commands: Some(commands),
            thread: Some(thread),
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
        let commands = self.commands.as_ref().ok_or(StoreError::Closed)?;
        let task: Task = Box::new(move |context| run(kind, context, job, done));
        self.shared.enqueued();
        commands.try_send(task).map_err(|error| {
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

    /// False once the thread is gone (closed, or died).
    pub fn healthy(&self) -> bool {
        self.commands.is_some()
            && self
                .thread
                .as_ref()
                .is_some_and(|thread| !thread.is_finished())
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
        }
    }

    /// Closes the queue; the thread runs what is queued, checkpoints and exits.
    pub(crate) fn hang_up(&mut self) {
        drop(self.commands.take());
    }

    /// Closes the queue and waits for the thread; returns its final checkpoint's outcome.
    pub(crate) fn join(&mut self) -> Result<(), StoreError> {
        self.hang_up();
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(StoreError::ThreadPanicked)),
            None => Ok(()),
        }
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

/// The database thread: runs queued operations in order until the queue is closed and empty,
/// then checkpoints, and drops the database (sled flushes once more on drop).
fn serve(
    index: usize,
    database: Database,
    queue: Receiver<Task>,
    shared: &Shared,
) -> Result<(), StoreError> {
    let telemetry = Telemetry::new(index);
    let context = Context {
        database: &database,
        shared,
        telemetry: &telemetry,
    };
    while let Ok(task) = queue.recv() {
        shared.dequeued();
        task(&context);
    }
    let mut result = Ok(());
    run(
        OpKind::Checkpoint,
        &context,
        Database::checkpoint,
        |outcome| {
            result = outcome;
        },
    );
    if let Err(error) = &result {
        tracing::error!(%error, path = %database.path().display(), "store: final checkpoint failed");
    }
    result
}

/// Runs `job`, catching a panic, counts it, then hands its outcome to `done`, catching a panic
/// there too.
fn run<T, J, F>(kind: OpKind, context: &Context<'_>, job: J, done: F)
where
    J: FnOnce(&Database) -> Result<T, StoreError>,
    F: FnOnce(Result<T, StoreError>),
{
    let Context {
        database,
        shared,
        telemetry,
    } = *context;
    let started = Instant::now();
    let result = match panic::catch_unwind(AssertUnwindSafe(|| job(database))) {
        Ok(result) => result,
        Err(_) => {
            shared.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %database.path().display(), ?kind,
                "store: operation panicked; thread continues");
            Err(StoreError::Panicked)
        }
    };
    shared.count(telemetry, kind, started.elapsed(), result.is_err());
    if panic::catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        shared.callback_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!("store: completion callback panicked; thread continues");
    }
}
