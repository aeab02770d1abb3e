//! Sharded dispatchers in the style of WhatsApp's gen_industry/gen_factory.
//!
//! An [`Industry`] runs one keyed service as [`SHARDS`] shards × `workers_per_shard` workers.
//! A key's stable hash picks its shard and its worker ([`crate::shard`]), so every job for one
//! key runs on one worker, in submission order, without locks: the worker owns that key's state.
//! Each worker has three bounded queues: a write lane and a read lane for work from phones, so
//! reads are never stuck behind a backlog of writes and a full lane refuses rather than blocks,
//! and an internal lane for the node's own producers that wait for room (the group fan-out,
//! write-back passes), so their backlog never takes the phones' queue slots.
//!
//! Overflow policy: [`Industry::submit`] never waits. A full lane returns
//! [`DispatchError::Overloaded`] with the job, and the caller answers the phone `OVERLOADED`
//! (the operation is not acked, so the phone retries) or, for reads, retries later.
//!
//! Supervision: a job that panics is caught, counted in `tern_dispatch_job_panics_total` and
//! logged; the worker keeps its queue and goes on with the next job. A worker task that ends
//! anyway (a panic outside a job, in `end_batch` or `rung`) ends its `JoinHandle`, which the
//! node's supervisor watches (`crate::server`). [`Industry::stop`] ends every worker after its
//! current batch, for shutdown; jobs still queued are dropped unanswered.
//!
//! Why not ractor's `factory`: one factory actor routes every job of its factory, a
//! serialization point measured at ~8 µs per job end to end, and each job costs two actor hops
//! (factory, then worker). Here the caller routes with the hash and pushes straight into the
//! worker's bounded channel: one hop, no shared router, and the shard index is by construction
//! the one the store uses. See docs/ARCHITECTURE.md.

use std::panic::AssertUnwindSafe;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::DispatchConfig;
use crate::metrics::{DISPATCH_PANICS, DISPATCH_QUEUE_DEPTH, DISPATCH_REJECTED};
use crate::shard::{SHARDS, shard_of, worker_of};

/// Jobs handled after one another before [`Worker::end_batch`] is called even if more wait.
const MAX_BATCH: usize = 64;

/// The state a worker owns and the jobs it handles.
pub trait Worker: Send + 'static {
    /// The job type.
    type Job: Send + 'static;
    /// Handles one job. Must not block: no disk or network waits.
    fn handle(&mut self, job: Self::Job);
    /// Called when the queues are empty or after a batch of jobs: the place for group commits.
    fn end_batch(&mut self) {}
    /// A doorbell other threads (e.g. I/O completions) ring to have [`Worker::rung`] called
    /// on the worker's task without queuing a job; `None` (the default) for none.
    fn doorbell(&self) -> Option<Arc<Notify>> {
        None
    }
    /// Called on the worker's task after its doorbell rang.
    fn rung(&mut self) {}
    /// True while the worker has work of its own to do in steps (a long pass over its state),
    /// between batches of jobs instead of in one job that would hold the thread.
    fn has_steps(&self) -> bool {
        false
    }
    /// Does one short step of that work.
    fn step(&mut self) {}
}

/// Which queue of a worker a job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Mutations.
    Write,
    /// Queries.
    Read,
    /// The node's own work, queued by producers that wait for room.
    Internal,
}

/// Why a job was not queued; the job is handed back.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError<J> {
    /// The lane is full.
    #[error("dispatcher queue full")]
    Overloaded(J),
    /// The worker has stopped (the node is shutting down).
    #[error("dispatcher stopped")]
    Stopped(J),
}

struct Lanes<J> {
    write: mpsc::Sender<J>,
    read: mpsc::Sender<J>,
    internal: mpsc::Sender<J>,
}

impl<J> Lanes<J> {
    fn get(&self, lane: Lane) -> &mpsc::Sender<J> {
        match lane {
            Lane::Write => &self.write,
            Lane::Read => &self.read,
            Lane::Internal => &self.internal,
        }
    }
}

/// A worker's receiving ends, in the order they are served.
struct Receivers<J> {
    write: mpsc::Receiver<J>,
    read: mpsc::Receiver<J>,
    internal: mpsc::Receiver<J>,
}

impl<J> Receivers<J> {
    /// A job already queued on any lane (write, read, then internal), without waiting.
    fn try_next(&mut self) -> Option<J> {
        [&mut self.write, &mut self.read, &mut self.internal]
            .into_iter()
            .find_map(|lane| lane.try_recv().ok())
    }
}

/// One keyed service: 32 shards of workers with bounded lanes.
pub struct Industry<J> {
    name: &'static str,
    workers_per_shard: usize,
    lanes: Box<[Lanes<J>]>,
    /// Cancelled by [`Industry::stop`].
    stop: CancellationToken,
}

impl<J: Send + 'static> Industry<J> {
    /// Starts `SHARDS * workers_per_shard` workers made by `make(shard, worker)`.
    pub fn start<W, F>(
        name: &'static str,
        config: &DispatchConfig,
        mut make: F,
    ) -> (Self, Vec<JoinHandle<()>>)
    where
        W: Worker<Job = J>,
        F: FnMut(usize, usize) -> W,
    {
        let workers_per_shard = config.workers_per_shard as usize;
        let capacity = config.queue_capacity as usize;
        let mut lanes = Vec::with_capacity(SHARDS * workers_per_shard);
        let mut handles = Vec::with_capacity(SHARDS * workers_per_shard);
        let stop = CancellationToken::new();
        for shard in 0..SHARDS {
            for index in 0..workers_per_shard {
                let (write, write_rx) = mpsc::channel(capacity);
                let (read, read_rx) = mpsc::channel(capacity);
                let (internal, internal_rx) = mpsc::channel(capacity);
                lanes.push(Lanes {
                    write,
                    read,
                    internal,
                });
                let receivers = Receivers {
                    write: write_rx,
                    read: read_rx,
                    internal: internal_rx,
                };
                let worker = make(shard, index);
                handles.push(tokio::spawn(run_worker(
                    name,
                    worker,
                    receivers,
                    stop.clone(),
                )));
            }
        }
        let industry = Self {
            name,
            workers_per_shard,
            lanes: lanes.into_boxed_slice(),
            stop,
        };
        (industry, handles)
    }

    /// The queue of `lane` of the worker that owns `key_hash`.
    fn sender(&self, key_hash: u64, lane: Lane) -> &mpsc::Sender<J> {
        let index = shard_of(key_hash) * self.workers_per_shard
            + worker_of(key_hash, self.workers_per_shard);
        self.lanes[index].get(lane)
    }

    /// Queues `job` for the worker that owns `key_hash`, without waiting.
    pub fn submit(&self, key_hash: u64, lane: Lane, job: J) -> Result<(), DispatchError<J>> {
        self.sender(key_hash, lane).try_send(job).map_err(|error| match error {
            TrySendError::Full(job) => {
                metrics::counter!(DISPATCH_REJECTED, "service" => self.name, "lane" => lane_name(lane))
                    .increment(1);
                DispatchError::Overloaded(job)
            }
            TrySendError::Closed(job) => DispatchError::Stopped(job),
        })
    }

    /// Queues `job` for the worker that owns `key_hash`, waiting while its lane is full (for
    /// internal producers that must not drop work, such as the group fan-out).
    pub async fn submit_wait(
        &self,
        key_hash: u64,
        lane: Lane,
        job: J,
    ) -> Result<(), DispatchError<J>> {
        self.sender(key_hash, lane)
            .send(job)
            .await
            .map_err(|error| DispatchError::Stopped(error.0))
    }

    /// Queues a job made by `make` on every worker's `lane`, waiting where a lane is full (so
    /// other waiting producers cannot keep it from ever getting a slot); returns how many
    /// workers have stopped.
    pub async fn submit_all_wait(&self, lane: Lane, mut make: impl FnMut() -> J) -> usize {
        let mut stopped = 0;
        for lanes in &self.lanes {
            if lanes.get(lane).send(make()).await.is_err() {
                stopped += 1;
            }
        }
        stopped
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.lanes.len()
    }

    /// Ends every worker after the batch it is running (shutdown); queued jobs are dropped
    /// unanswered and later submissions wait or fail with [`DispatchError::Stopped`] once the
    /// workers are gone.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Publishes the depth of every queue, summed per shard, as gauges.
    pub fn report_depths(&self) {
        for (shard, workers) in self.lanes.chunks(self.workers_per_shard).enumerate() {
            for lane in [Lane::Write, Lane::Read, Lane::Internal] {
                let depth: usize = workers
                    .iter()
                    .map(|l| {
                        let sender = l.get(lane);
                        sender.max_capacity() - sender.capacity()
                    })
                    .sum();
                metrics::gauge!(
                    DISPATCH_QUEUE_DEPTH,
                    "service" => self.name,
                    "shard" => SHARD_LABELS[shard],
                    "lane" => lane_name(lane)
                )
                .set(depth as f64);
            }
        }
    }

    /// Total jobs waiting in all queues.
    pub fn depth(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                (l.write.max_capacity() - l.write.capacity())
                    + (l.read.max_capacity() - l.read.capacity())
            })
            .sum()
    }
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Write => "write",
        Lane::Read => "read",
        Lane::Internal => "internal",
    }
}

const SHARD_LABELS: [&str; SHARDS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

async fn run_worker<W: Worker>(
    name: &'static str,
    mut worker: W,
    mut lanes: Receivers<W::Job>,
    stop: CancellationToken,
) {
    let doorbell = worker.doorbell();
    let mut open = [true; 3];
    loop {
        if worker.has_steps() {
            // Queued jobs first; with none, one step of the worker's own work, then the
            // thread's other tasks (the doorbell's permit waits for the next `select!`).
            if stop.is_cancelled() {
                break;
            }
            match lanes.try_next() {
                Some(job) => run_batch(name, &mut worker, &mut lanes, job).await,
                None => {
                    run_step(name, &mut worker);
                    tokio::task::yield_now().await;
                }
            }
            continue;
        }
        // Wait for the first job from any lane (or the doorbell); stop when every lane is
        // closed or the industry is stopped.
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            job = lanes.write.recv(), if open[0] => match job {
                Some(job) => job,
                None => {
                    open[0] = false;
                    continue;
                }
            },
            job = lanes.read.recv(), if open[1] => match job {
                Some(job) => job,
                None => {
                    open[1] = false;
                    continue;
                }
            },
            job = lanes.internal.recv(), if open[2] => match job {
                Some(job) => job,
                None => {
                    open[2] = false;
                    continue;
                }
            },
            () = rung(doorbell.as_deref()), if doorbell.is_some() && open.contains(&true) => {
                worker.rung();
                continue;
            }
            else => break,
        };
        run_batch(name, &mut worker, &mut lanes, first).await;
    }
}

/// Runs `first`, then what is already queued, alternating lanes, up to a batch; then one step
/// of the worker's own work if it has some, so that a steady stream of jobs never starves it.
async fn run_batch<W: Worker>(
    name: &'static str,
    worker: &mut W,
    lanes: &mut Receivers<W::Job>,
    first: W::Job,
) {
    run_job(name, worker, first);
    let mut handled = 1;
    while handled < MAX_BATCH {
        let mut progressed = false;
        for lane in [&mut lanes.write, &mut lanes.read, &mut lanes.internal] {
            if let Ok(job) = lane.try_recv() {
                run_job(name, worker, job);
                handled += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    worker.end_batch();
    if worker.has_steps() {
        run_step(name, worker);
    }
    if handled >= MAX_BATCH {
        // Let other tasks on this thread run between batches.
        tokio::task::yield_now().await;
    }
}

/// Resolves when `doorbell` rings; never without one.
async fn rung(doorbell: Option<&Notify>) {
    match doorbell {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

fn run_step<W: Worker>(name: &'static str, worker: &mut W) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| worker.step())).is_err() {
        metrics::counter!(DISPATCH_PANICS, "service" => name).increment(1);
        tracing::error!(service = name, "dispatcher step panicked; worker continues");
    }
}

fn run_job<W: Worker>(name: &'static str, worker: &mut W, job: W::Job) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| worker.handle(job))).is_err() {
        metrics::counter!(DISPATCH_PANICS, "service" => name).increment(1);
        tracing::error!(service = name, "dispatcher job panicked; worker continues");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::key_hash;
    use tokio::sync::oneshot;

    #[derive(Default)]
    struct Recorder {
        seen: Vec<(u64, u32)>,
        /// Steps of its own work left, and done.
        steps: (u32, u32),
    }

    #[derive(Debug)]
    enum Job {
        Record(u64, u32),
        Dump(oneshot::Sender<Vec<(u64, u32)>>),
        Panic,
        Steps(u32),
        StepsDone(oneshot::Sender<u32>),
    }

    impl Worker for Recorder {
        type Job = Job;
        fn handle(&mut self, job: Job) {
            match job {
                Job::Record(key, n) => self.seen.push((key, n)),
                Job::Dump(reply) => {
                    let _ = reply.send(self.seen.clone());
                }
                Job::Panic => panic!("job panicked on purpose"),
                Job::Steps(n) => self.steps.0 += n,
                Job::StepsDone(reply) => {
                    let _ = reply.send(self.steps.1);
                }
            }
        }

        fn has_steps(&self) -> bool {
            self.steps.0 > 0
        }

        fn step(&mut self) {
            self.steps = (self.steps.0 - 1, self.steps.1 + 1);
            if self.steps.1 == 3 {
                panic!("step panicked on purpose");
            }
        }
    }

    fn config(capacity: u32) -> DispatchConfig {
        DispatchConfig {
            workers_per_shard: 2,
            queue_capacity: capacity,
        }
    }

    #[tokio::test]
    async fn jobs_of_one_key_run_in_order_and_survive_a_panic() {
        let (industry, _handles) =
            Industry::start("test", &config(1024), |_, _| Recorder::default());
        let hash = key_hash(b"alice");
        for n in 0..100 {
            industry
                .submit(hash, Lane::Write, Job::Record(hash, n))
                .unwrap();
            if n == 50 {
                industry.submit(hash, Lane::Write, Job::Panic).unwrap();
            }
        }
        let (tx, rx) = oneshot::channel();
        industry.submit(hash, Lane::Write, Job::Dump(tx)).unwrap();
        let seen = rx.await.unwrap();
        let mine: Vec<u32> = seen
            .iter()
            .filter(|(k, _)| *k == hash)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(mine, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_lane_refuses_instead_of_blocking() {
        let (industry, _handles) = Industry::start("test", &config(16), |_, _| Recorder::default());
        let hash = key_hash(b"bob");
        // The worker cannot run before we yield, so the 17th job finds the lane full.
        for n in 0..16 {
            industry
                .submit(hash, Lane::Write, Job::Record(hash, n))
                .unwrap();
        }
        let refused = industry.submit(hash, Lane::Write, Job::Record(hash, 16));
        assert!(matches!(refused, Err(DispatchError::Overloaded(_))));
        // The read lane of the same worker is separate and still has room.
        let (tx, _rx) = oneshot::channel();
        assert!(industry.submit(hash, Lane::Read, Job::Dump(tx)).is_ok());
        assert_eq!(industry.depth(), 17);
    }

    #[tokio::test]
    async fn jobs_run_between_the_steps_of_a_workers_own_work() {
        const STEPS: u32 = 100_000;
        let (industry, _handles) = Industry::start("test", &config(16), |_, _| Recorder::default());
        let hash = key_hash(b"carol");
        industry
            .submit(hash, Lane::Write, Job::Steps(STEPS))
            .unwrap();
        let done = async || {
            let (tx, rx) = oneshot::channel();
            industry
                .submit(hash, Lane::Read, Job::StepsDone(tx))
                .unwrap();
            rx.await.unwrap()
        };
        // Answered while steps are left: the jobs did not wait for all of them.
        let mut first = 0;
        while first == 0 {
            first = done().await;
        }
        assert!(first < STEPS, "{first} steps done before a job ran");
        // A step that panics (the third) does not stop the worker: the rest still run.
        while done().await < STEPS {
            tokio::task::yield_now().await;
        }
        let (tx, rx) = oneshot::channel();
        industry
            .submit(hash, Lane::Write, Job::Record(hash, 1))
            .unwrap();
        industry.submit(hash, Lane::Write, Job::Dump(tx)).unwrap();
        assert_eq!(rx.await.unwrap(), vec![(hash, 1)]);
    }
}
