//! The coordinator: starts the parts, measures the server around each phase, prints one
//! progress line per second for all parts, and merges their figures.
//!
//! Phases: baseline sample → parts connect (Ready) → settle → sample, Start → `duration` →
//! sample (held), Stop → parts drain and report Done → sample (end).

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use super::{Command, EVENT_QUEUE, Event, PartLink, Partial, Ready, Tally, child};
use crate::common::CommonArgs;
use crate::error::LoadError;
use crate::procfs::{self, Machine, ProcessSample, SocketSample};

/// How long worker processes get to exit after their last event.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What the coordinator needs to know about a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenario's name, for progress lines.
    pub scenario: &'static str,
    /// Connections in the run.
    pub connections: usize,
    /// Connections that must stay in one part (2 for chat pairs).
    pub align: usize,
    /// Seconds between Start and Stop.
    pub duration: Duration,
    /// Pause between Ready and Start (lets the server's memory settle).
    pub settle: Duration,
    /// How long the parts may take to report after Stop.
    pub finish_timeout: Duration,
    /// Give up when any connection failed to open (otherwise go on with those that did).
    pub abort_on_failure: bool,
}

/// The server process and the kernel's sockets at the phase boundaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSamples {
    /// Before anything connected.
    pub before: Option<ProcessSample>,
    /// At Start.
    pub start: Option<ProcessSample>,
    /// At Stop (connections still open).
    pub held: Option<ProcessSample>,
    /// When every part had finished.
    pub end: Option<ProcessSample>,
    /// Sockets before anything connected.
    pub sockets_before: Option<SocketSample>,
    /// Sockets at Stop.
    pub sockets_held: Option<SocketSample>,
}

impl ServerSamples {
    /// Server CPU time from Start to the end, µs.
    pub fn cpu_us(&self) -> Option<u64> {
        Some(self.end?.cpu_us.saturating_sub(self.start?.cpu_us))
    }

    /// Server RSS growth from before connecting to Stop, bytes (may be negative).
    pub fn rss_growth(&self) -> Option<i64> {
        let before = i64::try_from(self.before?.rss_bytes).ok()?;
        let held = i64::try_from(self.held?.rss_bytes).ok()?;
        Some(held - before)
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The parts' Ready reports, added up (connect_s is the slowest part's).
    pub ready: Ready,
    /// The parts' figures, merged.
    pub partial: Partial,
    /// Parts (worker processes, or 1 for in-process).
    pub parts: usize,
    /// Server samples.
    pub server: ServerSamples,
    /// Seconds from Start to Stop.
    pub run_s: f64,
    /// Seconds from Start to the last part's end (the CPU measurement window).
    pub busy_s: f64,
}

/// Runs a scenario: in this process (`local`, when one part suffices) or over worker processes.
pub async fn coordinate<F, Fut>(
    common: &CommonArgs,
    plan: Plan,
    local: F,
) -> Result<Outcome, LoadError>
where
    F: FnOnce(PartLink) -> Fut,
    Fut: Future<Output = Result<Partial, LoadError>>,
{
    let probe = Probe {
        pid: common.server_pid,
        machine: Machine::read(),
    };
    let mut server = ServerSamples {
        before: probe.process()?,
        sockets_before: probe.sockets(),
        ..ServerSamples::default()
    };
    let parts = common.worker_count(plan.connections, plan.align);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (commands, commands_rx) = watch::channel(Command::Wait);
    let mut children = Vec::new();
    let mut local_part = None;
    if parts == 1 {
        let link = PartLink::new(0, 1, events_tx, commands_rx);
        let finisher = link.clone();
        local_part = Some(async move {
            let result = local(link).await;
            finisher.finish(result).await;
        });
    } else {
        eprintln!(
            "{}: {} connections over {parts} worker processes",
            plan.scenario, plan.connections
        );
        for index in 0..parts {
            children.push(child::spawn(
                index,
                parts,
                events_tx.clone(),
                commands_rx.clone(),
            )?);
        }
        drop(events_tx);
    }
    let mut room = Room::new(plan.scenario, parts, events_rx);
    let steer = steer(&plan, &probe, &mut server, &mut room, &commands);
    let result = match local_part {
        Some(part) => {
            let (mut steer, mut part) = (pin!(steer), pin!(part));
            let mut part_done = false;
            loop {
                tokio::select! {
                    result = &mut steer => break result,
                    () = &mut part, if !part_done => part_done = true,
                }
            }
        }
        None => steer.await,
    };
    commands.send_replace(Command::Stop);
    reap(children).await;
    let (ready, run_s, busy_s) = result?;
    let mut partial = Partial::default();
    for done in room.done.iter().flatten() {
        partial.merge(done);
    }
    Ok(Outcome {
        ready,
        partial,
        parts,
        server,
        run_s,
        busy_s,
    })
}

/// The phases, from the coordinator's side: the merged Ready, and the run and busy seconds.
async fn steer(
    plan: &Plan,
    probe: &Probe,
    server: &mut ServerSamples,
    room: &mut Room,
    commands: &watch::Sender<Command>,
) -> Result<(Ready, f64, f64), LoadError> {
    room.until(Room::all_ready, None).await?;
    let ready = room.merged_ready();
    room.phase = "settling";
    eprintln!(
        "{}: {} connected, {} failed in {:.2} s",
        plan.scenario, ready.connected, ready.failed, ready.connect_s
    );
    if ready.failed > 0 && (plan.abort_on_failure || ready.connected == 0) {
        return Err(LoadError::Setup {
            failed: usize::try_from(ready.failed).unwrap_or(usize::MAX),
            total: plan.connections,
            first: ready.first_error.clone().unwrap_or_default(),
        });
    }
    if !plan.settle.is_zero() {
        room.until(Room::never, Some(Instant::now() + plan.settle))
            .await?;
    }
    server.start = probe.process()?;
    let start = Instant::now();
    commands.send_replace(Command::Start);
    room.phase = "running";
    room.until(Room::never, Some(start + plan.duration)).await?;
    server.held = probe.process()?;
    server.sockets_held = probe.sockets();
    let run_s = start.elapsed().as_secs_f64();
    commands.send_replace(Command::Stop);
    room.phase = "finishing";
    let deadline = Instant::now() + plan.finish_timeout;
    if !room.until(Room::all_done, Some(deadline)).await? {
        let missing = room.done.iter().filter(|d| d.is_none()).count();
        return Err(LoadError::Parts(format!(
            "{missing} part(s) did not report within {} s of the stop",
            plan.finish_timeout.as_secs()
        )));
    }
    server.end = probe.process()?;
    let busy_s = start.elapsed().as_secs_f64();
    Ok((ready, run_s, busy_s))
}

/// Waits for the worker processes to exit; kills those that do not.
async fn reap(children: Vec<Child>) {
    for mut child in children {
        if tokio::time::timeout(EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Reads the server under test.
struct Probe {
    pid: Option<u32>,
    machine: Machine,
}

impl Probe {
    fn process(&self) -> Result<Option<ProcessSample>, LoadError> {
        self.pid
            .map(|pid| procfs::sample_process(pid, self.machine))
            .transpose()
            .map_err(LoadError::from)
    }

    fn sockets(&self) -> Option<SocketSample> {
        procfs::sample_sockets(self.machine).ok()
    }
}

/// The parts' latest reports.
struct Room {
    scenario: &'static str,
    phase: &'static str,
    events: mpsc::Receiver<(usize, Event)>,
    ready: Vec<Option<Ready>>,
    done: Vec<Option<Partial>>,
    tallies: Vec<Tally>,
    begun: Instant,
    shown: Tally,
    shown_at: Instant,
}

impl Room {
    fn new(scenario: &'static str, parts: usize, events: mpsc::Receiver<(usize, Event)>) -> Self {
        let now = Instant::now();
        Self {
            scenario,
            phase: "connecting",
            events,
            ready: vec![None; parts],
            done: vec![None; parts],
            tallies: vec![Tally::default(); parts],
            begun: now,
            shown: Tally::default(),
            shown_at: now,
        }
    }

    fn all_ready(&self) -> bool {
        self.ready.iter().all(Option::is_some)
    }

    fn all_done(&self) -> bool {
        self.done.iter().all(Option::is_some)
    }

    fn never(&self) -> bool {
        false
    }

    fn merged_ready(&self) -> Ready {
        let mut total = Ready::default();
        for ready in self.ready.iter().flatten() {
            total.connected += ready.connected;
            total.failed += ready.failed;
            total.connect_s = total.connect_s.max(ready.connect_s);
            if total.first_error.is_none() {
                total.first_error.clone_from(&ready.first_error);
            }
        }
        total
    }

    /// Handles events until `done` holds (true) or the deadline passes (false); a part's
    /// failure is an error.
    async fn until(
        &mut self,
        done: fn(&Room) -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool, LoadError> {
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        let deadline = deadline.unwrap_or(far);
        loop {
            if done(self) {
                return Ok(true);
            }
            let tick = self.shown_at + Duration::from_secs(1);
            tokio::select! {
                event = self.events.recv() => match event {
                    Some((index, event)) => self.on_event(index, event)?,
                    None => {
                        return Err(LoadError::Parts("every part ended without reporting".to_owned()))
                    }
                },
                () = tokio::time::sleep_until(tick.into()) => self.print_progress(),
                () = tokio::time::sleep_until(deadline.into()) => return Ok(false),
            }
        }
    }

    fn on_event(&mut self, index: usize, event: Event) -> Result<(), LoadError> {
        let Some(slot) = self.ready.get_mut(index) else {
            return Err(LoadError::Parts(format!(
                "an event from unknown part {index}"
            )));
        };
        match event {
            Event::Ready(ready) => *slot = Some(ready),
            Event::Progress(tally) => self.tallies[index] = tally,
            Event::Done(partial) => self.done[index] = Some(*partial),
            Event::Failed { error } => return Err(LoadError::Part { index, error }),
        }
        Ok(())
    }

    /// One line: totals and rates since the last line, all parts together.
    fn print_progress(&mut self) {
        let mut now = Tally::default();
        for tally in &self.tallies {
            now += *tally;
        }
        let secs = self.shown_at.elapsed().as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        eprintln!(
            "[{} {:>4.0}s {}] open {} logins {:.0}/s sent {:.0}/s acked {:.0}/s delivered {:.0}/s | in flight {} dup {} errors {}",
            self.scenario,
            self.begun.elapsed().as_secs_f64(),
            self.phase,
            now.open,
            rate(now.logins, self.shown.logins),
            rate(now.sent, self.shown.sent),
            rate(now.acked, self.shown.acked),
            rate(now.delivered, self.shown.delivered),
            now.in_flight,
            now.duplicates,
            now.errors,
        );
        self.shown = now;
        self.shown_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn common(args: &[&str]) -> CommonArgs {
        Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).common
    }

    fn plan() -> Plan {
        Plan {
            scenario: "test",
            connections: 4,
            align: 2,
            duration: Duration::from_millis(50),
            settle: Duration::from_millis(10),
            finish_timeout: Duration::from_secs(5),
            abort_on_failure: true,
        }
    }

    #[tokio::test]
    async fn a_local_part_goes_through_every_phase_and_its_figures_come_back() {
        let me = std::process::id().to_string();
        let common = common(&["--workers", "1", "--server-pid", &me]);
        let outcome = coordinate(&common, plan(), |mut link| async move {
            assert_eq!(link.range(4, 2), 0..4);
            link.ready(Ready {
                connected: 4,
                connect_s: 0.25,
                ..Ready::default()
            })
            .await;
            assert!(link.started().await);
            link.stopped().await;
            let mut partial = Partial::default();
            partial.counts.sent = 7;
            partial.latency.record(2_000);
            Ok(partial)
        })
        .await
        .unwrap();
        assert_eq!(outcome.parts, 1);
        assert_eq!(
            (outcome.ready.connected, outcome.ready.connect_s),
            (4, 0.25)
        );
        assert_eq!(outcome.partial.counts.sent, 7);
        assert_eq!(outcome.partial.latency.count(), 1);
        assert!(outcome.run_s >= 0.05 && outcome.busy_s >= outcome.run_s);
        // This test process stood in for the server: every sample was taken.
        let s = outcome.server;
        assert!(s.before.is_some() && s.start.is_some() && s.held.is_some() && s.end.is_some());
        assert!(s.cpu_us().is_some() && s.rss_growth().is_some());
    }

    #[tokio::test]
    async fn a_failing_part_ends_the_run_with_its_error() {
        let result = coordinate(&common(&["--workers", "1"]), plan(), |_link| async {
            Err(LoadError::Args("boom".to_owned()))
        })
        .await;
        match result {
            Err(LoadError::Part { index: 0, error }) => assert!(error.contains("boom"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn failed_connections_abort_the_run_when_the_plan_says_so() {
        let result = coordinate(&common(&["--workers", "1"]), plan(), |link| async move {
            link.ready(Ready {
                connected: 3,
                failed: 1,
                first_error: Some("refused".to_owned()),
                connect_s: 0.1,
            })
            .await;
            // The coordinator gives up instead of starting the run.
            link.stopped().await;
            Ok(Partial::default())
        })
        .await;
        assert!(matches!(result, Err(LoadError::Setup { failed: 1, .. })));
    }

    #[tokio::test]
    async fn a_part_that_never_reports_after_the_stop_times_out() {
        let mut plan = plan();
        plan.finish_timeout = Duration::from_millis(100);
        let result = coordinate(&common(&["--workers", "1"]), plan, |link| async move {
            link.ready(Ready::default()).await;
            std::future::pending::<()>().await;
            Ok(Partial::default())
        })
        .await;
        assert!(matches!(result, Err(LoadError::Parts(_))), "{result:?}");
    }
}
