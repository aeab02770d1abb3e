//! `tern-load chat`: pairs of phones message each other; every delivery is checked by id for
//! loss and duplication and timed from send to delivery.
//!
//! Phases: all phones log in; they send for `--duration` seconds (closed loop with at most
//! `--window` unacked sends each, or paced at `--rate` in total); then they stop sending new
//! messages and wait up to `--drain-timeout` seconds for acks, retries and deliveries to finish.

mod outbox;
mod phone;
mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use self::phone::{Phase, Phone, Shared};
use self::report::{ChatReport, RunInfo};
use super::Verdict;
use crate::body::new_run_id;
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::latency::SharedLatency;
use crate::progress::Counters;
use crate::target::{ServerArgs, Target};
use crate::tracker::{Counts, Tracker};

/// How often the drain phase checks whether everything arrived.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long stopped phones get to close their connections.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `tern-load chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Phones (an even number: half of them send to the other half and back).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per second in total; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Body size in bytes (at least the ~50-byte id and timestamp header).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Unacked sends per phone, at most.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Print the figures as one JSON object (the last line on stdout).
    #[arg(long)]
    json: bool,
    /// Prefix of the user names (`<prefix>a<i>` chats with `<prefix>b<i>`).
    #[arg(long, default_value = "load-")]
    user_prefix: String,
    /// Seconds to wait after sending for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Frames per second each phone sends at most (acks excluded: the server never refuses
    /// them); defaults to 90% of the limit the server announces; 0 disables the self-limit.
    #[arg(long)]
    frame_rate: Option<f64>,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

impl ChatArgs {
    fn check(&self, max_body_bytes: u32) -> Result<(), LoadError> {
        let problem = if self.connections < 2 || !self.connections.is_multiple_of(2) {
            Some(format!(
                "--connections must be an even number of at least 2, not {}",
                self.connections
            ))
        } else if !(self.duration > 0.0 && self.duration.is_finite()) {
            Some("--duration must be a positive number of seconds".to_owned())
        } else if !(self.rate >= 0.0 && self.rate.is_finite()) {
            Some("--rate must be 0 or positive".to_owned())
        } else if self.size > max_body_bytes as usize {
            Some(format!(
                "--size {} exceeds the server's limits.max_body_bytes {max_body_bytes}",
                self.size
            ))
        } else if self.window == 0 {
            Some("--window must be at least 1".to_owned())
        } else if !(self.drain_timeout >= 0.0 && self.drain_timeout.is_finite()) {
            Some("--drain-timeout must be 0 or positive".to_owned())
        } else if self
            .frame_rate
            .is_some_and(|r| !(r >= 0.0 && r.is_finite()))
        {
            Some("--frame-rate must be 0 or positive".to_owned())
        } else if self.connect_concurrency == 0 {
            Some("--connect-concurrency must be at least 1".to_owned())
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(LoadError::Args(p)))
    }
}

/// Runs the scenario; fails the verdict when an acked message was never delivered.
pub async fn run(args: ChatArgs) -> Result<Verdict, LoadError> {
    let ttl = (args.duration + args.drain_timeout) as u64 + 3600;
    let target = Target::open(&args.server, ttl).await?;
    args.check(target.config.limits.max_body_bytes)?;
    let shared = Arc::new(Shared {
        run: new_run_id(),
        dialer: Dialer::new(target.addr),
        size: args.size,
        window: args.window,
        rate_per_phone: args.rate / args.connections as f64,
        frame_rate: args.frame_rate,
        config_frames_per_sec: target.config.limits.frames_per_sec,
        phones: args.connections,
        counters: Counters::default(),
        latency: SharedLatency::new(64),
        dial_gate: Semaphore::new(args.connect_concurrency),
        errors_shown: AtomicU64::new(0),
    });
    eprintln!(
        "chat: {} phones to {}, {} s, rate {}, {} B bodies, window {}, frame limit {} per phone, run {:x}",
        args.connections,
        target.addr,
        args.duration,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "max".to_owned()
        },
        args.size,
        args.window,
        match args.frame_rate {
            None => format!("{:.0}% of the server's", phone::FRAME_RATE_SHARE * 100.0),
            Some(rate) if rate > 0.0 => format!("{rate:.0}/s"),
            Some(_) => "none".to_owned(),
        },
        shared.run,
    );

    let trackers: Vec<Arc<Mutex<Tracker>>> = (0..args.connections)
        .map(|_| Arc::new(Mutex::new(Tracker::new())))
        .collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::channel(args.connections.min(1024));
    let mut tasks = JoinSet::new();
    let connect_start = Instant::now();
    for index in 0..args.connections {
        // Phone 2i is user a<i>, phone 2i+1 is b<i>; each one's partner is the other.
        let pair = index / 2;
        let (mine, theirs) = if index % 2 == 0 {
            ('a', 'b')
        } else {
            ('b', 'a')
        };
        let user = format!("{}{mine}{pair}", args.user_prefix);
        let partner = format!("{}{theirs}{pair}", args.user_prefix);
        let phone = Phone {
            index,
            token: target.token(&user, "d")?,
            user,
            partner,
            outgoing: trackers[index].clone(),
            incoming: trackers[index ^ 1].clone(),
        };
        tasks.spawn(phone::run(
            phone,
            shared.clone(),
            phase_rx.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);

    let mut failed = 0;
    let mut first_error = None;
    let mut logged_in = 0;
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => logged_in += 1,
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    if let Some(first) = first_error {
        let _ = phase_tx.send(Phase::Stopped);
        stop(&mut tasks).await;
        return Err(LoadError::Setup {
            failed,
            total: args.connections,
            first: Box::new(first),
        });
    }
    eprintln!("chat: {logged_in} phones logged in in {connect_s:.2} s; sending");

    let _ = phase_tx.send(Phase::Sending);
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut progress = Progress::new(&shared.counters, start);
    while start.elapsed() < duration {
        let left = duration.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(progress.until_next())).await;
        progress.tick(&shared.counters, start);
    }

    let _ = phase_tx.send(Phase::Draining);
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs_f64(args.drain_timeout);
    let drained = loop {
        if outstanding(&shared.counters, &trackers) == 0 {
            break true;
        }
        if drain_start.elapsed() >= drain_limit {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
        progress.tick(&shared.counters, start);
    };
    let drain_s = drain_start.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Stopped);
    stop(&mut tasks).await;

    let mut counts = Counts::default();
    for tracker in &trackers {
        counts += tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts();
    }
    let info = RunInfo {
        connections: args.connections,
        duration_s: args.duration,
        rate: args.rate,
        size: args.size,
        window: args.window,
        connect_s,
        drain_s,
        drained,
    };
    let report = ChatReport::new(
        info,
        counts,
        &shared.counters,
        shared.latency.collect().summary(),
    );
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text());
    }
    Ok(if report.lost > 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

/// Messages still unacked plus acked messages not delivered yet.
fn outstanding(counters: &Counters, trackers: &[Arc<Mutex<Tracker>>]) -> u64 {
    let in_flight = counters.in_flight.load(Ordering::Relaxed).max(0) as u64;
    let undelivered: u64 = trackers
        .iter()
        .map(|t| {
            t.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .counts()
                .undelivered
        })
        .sum();
    in_flight + undelivered
}

/// Waits for the phones to close their connections (they were told to stop).
async fn stop(tasks: &mut JoinSet<()>) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
        eprintln!("chat: some phones did not stop in time; aborting them");
        tasks.abort_all();
    }
}

/// The once-per-second progress line.
struct Progress {
    last: Instant,
    before: crate::progress::Snapshot,
}

impl Progress {
    fn new(counters: &Counters, now: Instant) -> Self {
        Self {
            last: now,
            before: counters.snapshot(),
        }
    }

    fn until_next(&self) -> Duration {
        Duration::from_secs(1).saturating_sub(self.last.elapsed())
    }

    /// Prints a line if a second has passed since the last one.
    fn tick(&mut self, counters: &Counters, start: Instant) {
        let interval = self.last.elapsed();
        if interval < Duration::from_secs(1) {
            return;
        }
        let label = format!("{:>4.0}s", start.elapsed().as_secs_f64());
        eprintln!("{}", counters.progress_line(&label, self.before, interval));
        self.before = counters.snapshot();
        self.last = Instant::now();
    }
}
