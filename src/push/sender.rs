//! The node's push queue: pushes wait in one bounded queue ([`Sender::offer`] never blocks;
//! over `push.queue` it hands the push back, and the scheduler offers it again later) and
//! `push.connections` tasks send them, each through its own keep-alive gateway connection.
//!
//! Supervision: the [`Sender`] owns the queue's sending side, a stop token and the tasks
//! (`worker`). Each task owns one [`Gateway`] and, while it works on a push, that push,
//! through all of its retries. [`Sender::close`] (or dropping the sender) cancels the token:
//! each task ends at its next await, dropping the push it held; pushes still queued are dropped
//! with the queue. The tasks contain no panicking code, and a panic in the dead-token callback
//! is caught and logged.

mod backoff;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::PushConfig;
use super::gateway::{Gateway, GatewayError};
use super::notification::Notification;
pub use stats::Stats;
use stats::{Counters, Queued};
use worker::Shared;

/// Called with a push whose token the gateway reported dead, so that the token is removed
/// from its account. Called on a sender task: it must not block (hand the work on).
pub type OnUnregistered = Arc<dyn Fn(&Notification) + Send + Sync>;

/// The push queue and the tasks that empty it into the gateway.
pub struct Sender {
    queue: mpsc::Sender<Queued>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Sender {
    /// Starts `config.connections` tasks, each with its own gateway client, pulling from one
    /// queue of `config.queue` pushes. Must be called inside a tokio runtime.
    pub fn start(
        config: &PushConfig,
        unregistered: Arc<dyn Fn(&Notification) + Send + Sync>,
    ) -> Result<Sender, GatewayError> {
        if config.queue == 0 {
            return Err(GatewayError::Settings("push.queue must be at least 1"));
        }
        if config.connections == 0 {
            return Err(GatewayError::Settings(
                "push.connections must be at least 1",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GatewayError::NoRuntime)?;
        let gateways = (0..config.connections)
            .map(|_| Gateway::new(config))
            .collect::<Result<Vec<_>, _>>()?;
        let (queue, receiver) = mpsc::channel(config.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::new());
        let shared = Arc::new(Shared {
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            retry_for: Duration::from_secs(config.retry_for_secs),
            counters: Arc::clone(&counters),
            unregistered,
        });
        let stop = CancellationToken::new();
        let tasks = gateways
            .into_iter()
            .map(|gateway| {
                runtime.spawn(worker::run(
                    gateway,
                    Arc::clone(&receiver),
                    Arc::clone(&shared),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(Sender {
            queue,
            counters,
            stop,
            tasks,
        })
    }

    /// Queues `notification` without waiting if there is room. False when the queue is full:
    /// nothing is counted, the caller keeps what the push stands for and offers it again
    /// later. A closed sender takes it as a dead letter.
    pub fn offer(&self, notification: Notification) -> bool {
        !matches!(self.enqueue(notification), Enqueued::Full)
    }

    /// Tries the queue once; a closed sender counts the push as a dead letter.
    pub(super) fn enqueue(&self, notification: Notification) -> Enqueued {
        if self.stop.is_cancelled() {
            self.counters.dead_letter();
            return Enqueued::Closed;
        }
        match self
            .queue
            .try_send(Queued::new(notification, &self.counters))
        {
            Ok(()) => Enqueued::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Enqueued::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.dead_letter();
                Enqueued::Closed
            }
        }
    }

    /// This sender's counts so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops the tasks: each ends at its next await, dropping the push it held. Later submits
    /// are refused.
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// Closes the sender and waits until every task has ended.
    pub async fn shutdown(mut self) {
        self.close();
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(%error, "a push sender task panicked");
            }
        }
    }
}

/// What became of one try at the queue.
pub(super) enum Enqueued {
    /// In the queue.
    Queued,
    /// No room: nothing counted.
    Full,
    /// The sender is closed; the push was counted as a dead letter.
    Closed,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("tasks", &self.tasks.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
