//! A measured scenario runs as parts, each with a share of the connections, under one
//! coordinator that measures the server and merges what the parts report.
//!
//! A part is an async function of a [`PartLink`]: it opens its connections and reports
//! [`Event::Ready`], waits for [`Command::Start`], does its work until [`Command::Stop`], and
//! returns a [`Partial`]. With one part it runs as a task of this process; with more, each part
//! is a worker process (this binary re-executed with `--workers N --worker-index I`) whose
//! events are JSON lines on its stdout and whose commands are lines on its stdin. Either way the
//! part only sees channels.
//!
//! ```text
//! coordinator ──watch<Command>──▶ part 0 (task)          or  ──stdin──▶ worker 0, 1, ...
//!             ◀──mpsc<(i, Event)>── part 0                   ◀──stdout── worker 0, 1, ...
//! ```

mod child;
mod coordinator;
mod partial;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use self::coordinator::{Outcome, Plan, coordinate};
pub use self::partial::Partial;
use crate::error::LoadError;
use crate::progress::Counters;

/// Events queued from the parts to the coordinator, at most.
const EVENT_QUEUE: usize = 256;

/// What the coordinator tells every part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Connect and report Ready; do not start yet.
    Wait,
    /// Start the measured work.
    Start,
    /// Stop the work, finish (drain), report Done.
    Stop,
}

impl Command {
    /// The line that carries it to a worker process.
    pub fn line(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Start => "start",
            Self::Stop => "stop",
        }
    }

    /// Reads a line written by [`Command::line`].
    pub fn parse(line: &str) -> Option<Self> {
        match line.trim() {
            "wait" => Some(Self::Wait),
            "start" => Some(Self::Start),
            "stop" => Some(Self::Stop),
            _ => None,
        }
    }
}

/// A part's connections are open (or failed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    /// Connections open and logged in.
    pub connected: u64,
    /// Connections that could not be opened or logged in.
    pub failed: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Seconds the part took to connect.
    pub connect_s: f64,
}

/// Running totals of a part, sent once per second for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Connections open now.
    pub open: u64,
    /// Completed logins.
    pub logins: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Extra deliveries.
    pub duplicates: u64,
    /// Errors of any kind.
    pub errors: u64,
    /// Messages sent and not acked yet.
    pub in_flight: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.open += other.open;
        self.logins += other.logins;
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.errors += other.errors;
        self.in_flight += other.in_flight;
    }
}

/// What a part tells the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Connected; waiting for Start.
    Ready(Ready),
    /// Running totals.
    Progress(Tally),
    /// Finished: the part's figures.
    Done(Box<Partial>),
    /// The part could not run.
    Failed {
        /// Why.
        error: String,
    },
}

/// A part's end of the coordination.
#[derive(Debug, Clone)]
pub struct PartLink {
    /// This part's number.
    pub index: usize,
    /// Parts in the run.
    pub count: usize,
    events: mpsc::Sender<(usize, Event)>,
    commands: watch::Receiver<Command>,
}

impl PartLink {
    fn new(
        index: usize,
        count: usize,
        events: mpsc::Sender<(usize, Event)>,
        commands: watch::Receiver<Command>,
    ) -> Self {
        Self {
            index,
            count,
            events,
            commands,
        }
    }

    /// The connection numbers of this part: a contiguous share of `0..total`, cut at
    /// multiples of `align` so that groups (chat pairs) stay in one part.
    pub fn range(&self, total: usize, align: usize) -> std::ops::Range<usize> {
        share(total, align, self.count, self.index)
    }

    /// Reports that the connections are open.
    pub async fn ready(&self, ready: Ready) {
        self.send(Event::Ready(ready)).await;
    }

    /// Sends `counters`' totals once per second until the coordinator is gone.
    pub fn report_progress(&self, counters: Arc<Counters>) {
        let events = self.events.clone();
        let index = self.index;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                // Progress is best effort: a full queue skips a second, a closed one ends.
                let event = (index, Event::Progress(counters.tally()));
                if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event) {
                    break;
                }
            }
        });
    }

    /// Waits for Start; false when the run was stopped (or the coordinator is gone) first.
    pub async fn started(&mut self) -> bool {
        let mut commands = self.commands.clone();
        match commands.wait_for(|c| *c != Command::Wait).await {
            Ok(command) => *command == Command::Start,
            Err(_) => false,
        }
    }

    /// Waits for Stop (or for the coordinator to be gone).
    pub async fn stopped(&self) {
        let mut commands = self.commands.clone();
        let _ = commands.wait_for(|c| *c == Command::Stop).await;
    }

    /// A receiver of the commands, for parts that select on them.
    pub fn commands(&self) -> watch::Receiver<Command> {
        self.commands.clone()
    }

    /// Reports the part's end: its figures, or why it could not run.
    pub async fn finish(&self, result: Result<Partial, LoadError>) {
        let event = match result {
            Ok(partial) => Event::Done(Box::new(partial)),
            Err(error) => Event::Failed {
                error: error.to_string(),
            },
        };
        self.send(event).await;
    }

    async fn send(&self, event: Event) {
        // The coordinator only drops its receiver once it has given up on the run.
        let _ = self.events.send((self.index, event)).await;
    }
}

/// Part `index` of `count` of `0..total`, cut at multiples of `align`.
fn share(total: usize, align: usize, count: usize, index: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let groups = total.div_ceil(align);
    let count = count.max(1);
    let cut = |i: usize| (groups * i / count * align).min(total);
    cut(index)..cut(index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once_and_keep_groups_whole() {
        for (total, align, count) in [
            (10, 1, 3),
            (200, 2, 3),
            (15_000, 1, 2),
            (7, 2, 4),
            (4, 2, 1),
        ] {
            let mut next = 0;
            for index in 0..count {
                let r = share(total, align, count, index);
                assert_eq!(r.start, next, "{total} {align} {count} {index}");
                assert!(r.start.is_multiple_of(align));
                next = r.end;
            }
            assert_eq!(next, total);
        }
        assert_eq!(share(200, 2, 3, 0), 0..66);
        assert_eq!(share(200, 2, 3, 1), 66..132);
        assert_eq!(share(200, 2, 3, 2), 132..200);
    }

    #[test]
    fn commands_and_events_round_trip_as_lines() {
        for c in [Command::Wait, Command::Start, Command::Stop] {
            assert_eq!(Command::parse(c.line()), Some(c));
        }
        assert_eq!(Command::parse("go"), None);
        let ready = Event::Ready(Ready {
            connected: 5,
            failed: 1,
            first_error: Some("refused".to_owned()),
            connect_s: 0.5,
        });
        let line = serde_json::to_string(&ready).unwrap();
        assert!(line.starts_with(r#"{"event":"ready""#), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Event::Ready(r) if r.connected == 5 && r.failed == 1));
    }

    #[tokio::test]
    async fn a_part_sees_start_and_stop() {
        let (tx, mut rx) = mpsc::channel(4);
        let (commands, command_rx) = watch::channel(Command::Wait);
        let mut link = PartLink::new(1, 2, tx, command_rx);
        assert_eq!(link.range(10, 1), 5..10);
        link.ready(Ready::default()).await;
        assert!(matches!(rx.recv().await, Some((1, Event::Ready(_)))));
        commands.send(Command::Start).unwrap();
        assert!(link.started().await);
        commands.send(Command::Stop).unwrap();
        link.stopped().await;
        assert_eq!(*link.commands().borrow(), Command::Stop);
        // Stopped before starting: `started` says so.
        let (tx, _rx) = mpsc::channel(4);
        let (commands, command_rx) = watch::channel(Command::Wait);
        let mut link = PartLink::new(0, 1, tx, command_rx);
        commands.send(Command::Stop).unwrap();
        assert!(!link.started().await);
    }
}
