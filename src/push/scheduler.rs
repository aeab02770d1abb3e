//! The scheduler task: takes the hub's events, keeps the bursts ([`super::bursts`]), and hands
//! each push to the sender when it is due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::sync::mpsc;

use super::PushConfig;
use super::bursts::{Arrived, Bursts, Deferred, Timing};
use super::hub::PushEvent;
use super::notification::Notification;
use super::telemetry;
use crate::message::Id;

/// Events taken from the queue per pass before due pushes are looked at.
const EVENTS_PER_PASS: usize = 256;

/// What the scheduler does with a token that moved to another device: drop it from the device
/// that held it (`owner`, `device`, `token`).
pub type DropToken = Arc<dyn Fn(Id, Id, Arc<str>) + Send + Sync>;

/// The timing of `config`.
pub fn timing(config: &PushConfig) -> Timing {
    Timing {
        offline_delay: Duration::from_millis(config.offline_delay_ms),
        ack_grace: Duration::from_millis(config.ack_grace_ms),
        renotify: Duration::from_secs(config.renotify_secs),
        defer_base: Duration::from_millis(config.retry_base_ms),
        defer_max: Duration::from_millis(config.retry_max_ms),
        give_up: Duration::from_secs(config.retry_for_secs),
    }
}

/// Runs until the hub's queue is closed (every sender of events dropped): events update the
/// bursts, due pushes are offered to `deliver`, which answers false when it has no room (the
/// push is put back in its burst and offered again later).
pub async fn run(
    mut events: mpsc::Receiver<PushEvent>,
    timing: Timing,
    deliver: impl FnMut(Notification) -> bool + Send,
    drop_token: DropToken,
) {
    let mut bursts = Bursts::new(timing);
    let mut handing = Handing {
        deliver,
        deferred: metrics::counter!(telemetry::DEFERRED),
        dead_letters: metrics::counter!(telemetry::DEAD_LETTERS),
    };
    let scheduled = metrics::counter!(telemetry::SCHEDULED);
    let collapsed = metrics::counter!(telemetry::COLLAPSED);
    loop {
        let next = bursts.next_due();
        let event = match next {
            Some(due) => {
                tokio::select! {
                    event = events.recv() => event,
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {
                        handing.hand_due(&mut bursts);
                        continue;
                    }
                }
            }
            None => events.recv().await,
        };
        let Some(event) = event else { break };
        let now = Instant::now();
        handle(&mut bursts, event, now, &scheduled, &collapsed, &drop_token);
        for _ in 0..EVENTS_PER_PASS {
            match events.try_recv() {
                Ok(event) => handle(&mut bursts, event, now, &scheduled, &collapsed, &drop_token),
                Err(_) => break,
            }
        }
        handing.hand_due(&mut bursts);
    }
}

/// Hands due pushes to the sender, putting back those it has no room for.
struct Handing<D> {
    deliver: D,
    deferred: Counter,
    dead_letters: Counter,
}

impl<D: FnMut(Notification) -> bool> Handing<D> {
    fn hand_due(&mut self, bursts: &mut Bursts) {
        let now = Instant::now();
        for push in bursts.take_due(now) {
            let (owner, device) = (push.user.clone(), push.device.clone());
            match (self.deliver)(push) {
                true => bursts.handed(&owner, &device),
                false => match bursts.defer(&owner, &device, now) {
                    Deferred::Later => self.deferred.increment(1),
                    Deferred::GivenUp => self.dead_letters.increment(1),
                    Deferred::Gone => {}
                },
            }
        }
    }
}

fn handle(
    bursts: &mut Bursts,
    event: PushEvent,
    now: Instant,
    scheduled: &Counter,
    collapsed: &Counter,
    drop_token: &DropToken,
) {
    match event {
        PushEvent::Arrived(arrival) => match bursts.arrive(*arrival, now) {
            Arrived::Scheduled => scheduled.increment(1),
            Arrived::Collapsed => collapsed.increment(1),
            Arrived::Ignored => {}
        },
        PushEvent::Acked {
            owner,
            device,
            up_to,
        } => bursts.ack(&owner, &device, up_to),
        PushEvent::Forget { owner, device } => bursts.forget(&owner, &device),
        PushEvent::Moved {
            owner,
            device,
            token,
        } => {
            bursts.forget(&owner, &device);
            drop_token(owner, device, token);
        }
    }
}
