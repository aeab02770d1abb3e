//! One sender task: takes a push from the shared queue, sends it through its own gateway
//! connection, retries it with backoff until it is settled or its retry time runs out, then
//! takes the next.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::OnUnregistered;
use super::backoff::Backoff;
use super::stats::{Counters, Queued};
use crate::push::gateway::{Gateway, Outcome};
use crate::push::notification::Notification;

/// What every task of one sender shares.
pub(super) struct Shared {
    /// First retry pause's ceiling.
    pub(super) retry_base: Duration,
    /// Largest retry pause.
    pub(super) retry_max: Duration,
    /// Time after the first attempt past which a failing push is given up.
    pub(super) retry_for: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) unregistered: OnUnregistered,
}

/// Runs until `stop` is cancelled or the queue is closed and empty. A push in flight or
/// waiting for its retry when `stop` comes is dropped.
pub(super) async fn run(
    mut gateway: Gateway,
    queue: Arc<Mutex<mpsc::Receiver<Queued>>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            next = async { queue.lock().await.recv().await } => next,
        };
        let Some(queued) = next else { return };
        let notification = queued.take();
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = deliver(&mut gateway, &notification, &shared) => {}
        }
    }
}

/// Sends `notification` until the gateway settles it (sent, dead token, refused) or it has
/// been failing for `retry_for`; every attempt carries the same id.
async fn deliver(gateway: &mut Gateway, notification: &Notification, shared: &Shared) {
    let first = Instant::now();
    let mut backoff = Backoff::new(shared.retry_base, shared.retry_max);
    loop {
        let started = Instant::now();
        match gateway.send(notification).await {
            Outcome::Sent => {
                shared.counters.sent(started.elapsed());
                return;
            }
            Outcome::Unregistered => {
                tracing::debug!(
                    id = %notification.id,
                    platform = notification.platform.label(),
                    "push gateway reports the token dead"
                );
                shared.counters.token_removed();
                let callback = AssertUnwindSafe(|| (shared.unregistered)(notification));
                if std::panic::catch_unwind(callback).is_err() {
                    tracing::error!(id = %notification.id, "the dead-token callback panicked");
                }
                return;
            }
            Outcome::Failed(why) => {
                tracing::debug!(
                    id = %notification.id,
                    platform = notification.platform.label(),
                    %why,
                    "push refused by the gateway"
                );
                shared.counters.failed();
                return;
            }
            Outcome::Retry(why) => {
                let failing_for = first.elapsed();
                if failing_for >= shared.retry_for {
                    tracing::debug!(
                        id = %notification.id,
                        %why,
                        ?failing_for,
                        "push given up after retrying"
                    );
                    shared.counters.dead_letter();
                    return;
                }
                // The last attempt comes when the retry time runs out, not after it.
                let pause = backoff.next_pause().min(shared.retry_for - failing_for);
                tracing::debug!(id = %notification.id, %why, ?pause, "push to be retried");
                shared.counters.retry();
                tokio::time::sleep(pause).await;
            }
        }
    }
}
