//! `tern-load chat`: pairs of phones message each other; every delivery is checked by id for
//! loss and duplication and timed from send to delivery.
//!
//! Phases: all phones log in; they send for `--duration` seconds (closed loop with at most
//! `--window` unacked sends each, or paced at `--rate` in total); then they stop sending new
//! messages and wait up to `--drain-timeout` seconds for acks, retries and deliveries to finish.
//!
//! With `--wan-config` the run spans linked clusters in several datacenters: each phone logs in
//! at its user's home datacenter (the `[wan]` section's client addresses, instead of
//! `--server`), and latencies are also reported separately for pairs homed in one datacenter
//! and pairs homed in two (whose messages cross the link between the datacenters).
//!
//! With `--target mqtt` each phone is an MQTT client instead: it subscribes to its own topic
//! with QoS 1 and publishes to its partner's with QoS 1 (PUBACK counts as acked), with the same
//! bodies, window, rate and accounting. Pairs are spread over worker processes like any
//! connections, a pair always in one process.

mod mqtt_phone;
mod outbox;
mod phone;
mod report;
mod wan;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use self::phone::{ClassLatency, Phase, Phone, Shared};
use self::wan::Datacenters;
use super::Verdict;
use crate::body::new_run_id;
use crate::common::{CommonArgs, TargetKind};
use crate::error::LoadError;
use crate::latency::{Latency, SharedLatency};
use crate::parts::{self, PartLink, Partial, Plan, Ready};
use crate::progress::Counters;
use crate::target::Endpoint;
use crate::tracker::{Counts, Tracker};

/// How often the drain phase checks whether everything arrived.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long stopped phones get to close their connections.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Largest body sent to an MQTT broker (tern's default `max_body_bytes`, for equal sizes).
const MQTT_MAX_BODY: u32 = 16_384;

/// Arguments of `tern-load chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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
    /// Prefix of the user names (`<prefix>a<i>` chats with `<prefix>b<i>`).
    #[arg(long, default_value = "load-")]
    user_prefix: String,
    /// Seconds to wait after sending for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Frames per second each phone sends at most (acks excluded: the server never refuses
    /// acks of new deliveries); defaults to 90% of the limit the server announces; 0 disables the self-limit.
    #[arg(long)]
    frame_rate: Option<f64>,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// A tern node's configuration with a `[wan]` section (only that section is read): each
    /// phone logs in at its user's home datacenter's client addresses instead of `--server`,
    /// and latencies are reported for same- and cross-datacenter pairs apart. `--config` still
    /// gives the token key, which every datacenter must share.
    #[arg(long)]
    wan_config: Option<PathBuf>,
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
        } else if self.window == 0 || self.window > 60_000 {
            Some("--window must be between 1 and 60000".to_owned())
        } else if !(self.drain_timeout >= 0.0 && self.drain_timeout.is_finite()) {
            Some("--drain-timeout must be 0 or positive".to_owned())
        } else if self
            .frame_rate
            .is_some_and(|r| !(r >= 0.0 && r.is_finite()))
        {
            Some("--frame-rate must be 0 or positive".to_owned())
        } else if self.connect_concurrency == 0 {
            Some("--connect-concurrency must be at least 1".to_owned())
        } else if self.wan_config.is_some() && self.common.target == TargetKind::Mqtt {
            Some("--wan-config needs --target tern".to_owned())
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(LoadError::Args(p)))
    }
}

/// Runs the scenario; fails the verdict when an acked message was never delivered.
pub async fn run(args: ChatArgs) -> Result<Verdict, LoadError> {
    let endpoint = Endpoint::open(&args.common, 60).await?;
    let max_body = match &endpoint {
        Endpoint::Tern(target) => target.config.limits.max_body_bytes,
        Endpoint::Mqtt(_) => MQTT_MAX_BODY,
    };
    args.check(max_body)?;
    let datacenters = match &args.wan_config {
        Some(path) => {
            let section = wan::load_section(path)?;
            Some(Datacenters::new(&section, endpoint.dialer().tls()).await?)
        }
        None => None,
    };
    let census = datacenters
        .as_ref()
        .map(|dcs| dcs.census(&args.user_prefix, args.connections / 2));
    let destination = match &datacenters {
        Some(dcs) => {
            let names: Vec<&str> = (0..dcs.len()).map(|index| dcs.name(index)).collect();
            format!("their home datacenters ({})", names.join(", "))
        }
        None => endpoint.dialer().describe(),
    };
    eprintln!(
        "chat: {} phones to {} ({}), {} s, rate {}, {} B bodies, window {}",
        args.connections,
        destination,
        args.common.target.name(),
        args.duration,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "max".to_owned()
        },
        args.size,
        args.window,
    );
    if let (Some(dcs), Some((same, cross))) = (&datacenters, census) {
        eprintln!(
            "chat: {} pairs: {same} homed in one datacenter, {cross} in two",
            args.connections / 2
        );
        let missing = dcs.without_clients();
        if !missing.is_empty() {
            eprintln!(
                "chat: {} list no client addresses: their phones log in at --server",
                missing.join(", ")
            );
        }
    }
    let plan = Plan {
        scenario: "chat",
        connections: args.connections,
        align: 2,
        duration: Duration::from_secs_f64(args.duration),
        settle: Duration::ZERO,
        finish_timeout: Duration::from_secs_f64(args.drain_timeout) + STOP_GRACE * 2,
        abort_on_failure: true,
    };
    let outcome = parts::coordinate(&args.common, plan, |link| part(args.clone(), link)).await?;
    let report = report::build(&args, &outcome, census);
    report.print(args.common.json);
    Ok(if report.lost.unwrap_or(0) > 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

/// One part: its share of the pairs log in, send from Start to Stop, then drain.
pub async fn part(args: ChatArgs, mut link: PartLink) -> Result<Partial, LoadError> {
    let ttl = (args.duration + args.drain_timeout) as u64 + 3600;
    let endpoint = Endpoint::open(&args.common, ttl).await?;
    let range = link.range(args.connections, 2);
    let counters = Arc::new(Counters::default());
    link.report_progress(counters.clone());
    let (config_frames_per_sec, target) = match &endpoint {
        Endpoint::Tern(target) => (target.config.limits.frames_per_sec, Some(target.clone())),
        Endpoint::Mqtt(_) => (0, None),
    };
    let datacenters = match &args.wan_config {
        Some(path) => {
            let section = wan::load_section(path)?;
            Some(Datacenters::new(&section, endpoint.dialer().tls()).await?)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        run: new_run_id(),
        size: args.size,
        window: args.window,
        rate_per_phone: args.rate / args.connections as f64,
        frame_rate: args.frame_rate,
        config_frames_per_sec,
        phones: args.connections,
        counters: counters.clone(),
        latency: SharedLatency::new(64),
        by_class: datacenters.as_ref().map(|_| ClassLatency::default()),
        reconnect: SharedLatency::new(64),
        dial_gate: Semaphore::new(args.connect_concurrency),
        errors_shown: AtomicU64::new(0),
    });
    let trackers: Vec<Arc<Mutex<Tracker>>> = range
        .clone()
        .map(|_| Arc::new(Mutex::new(Tracker::new())))
        .collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::channel(range.len().clamp(1, 1024));
    let mut tasks = JoinSet::new();
    let connect_start = Instant::now();
    for index in range.clone() {
        // Phone 2i is user a<i>, phone 2i+1 is b<i>; each one's partner is the other.
        let pair = index / 2;
        let (a, b) = wan::pair_users(&args.user_prefix, pair);
        let (user, partner) = if index % 2 == 0 { (a, b) } else { (b, a) };
        let token = match &target {
            Some(target) => target.token(&user, "d")?,
            None => String::new(),
        };
        // With datacenters: the home's addresses, and whether the partner shares the home.
        let (dialer, class) = match &datacenters {
            Some(dcs) => (
                dcs.dialer(dcs.home(&user))
                    .unwrap_or(endpoint.dialer())
                    .clone(),
                Some(dcs.classify(&args.user_prefix, pair)),
            ),
            None => (endpoint.dialer().clone(), None),
        };
        let phone = Phone {
            index,
            dialer,
            class,
            token,
            user,
            partner,
            outgoing: trackers[index - range.start].clone(),
            incoming: trackers[(index ^ 1) - range.start].clone(),
        };
        let (shared, phase, ready) = (shared.clone(), phase_rx.clone(), ready_tx.clone());
        match args.common.target {
            TargetKind::Tern => tasks.spawn(phone::run(phone, shared, phase, ready)),
            TargetKind::Mqtt => tasks.spawn(mqtt_phone::run(phone, shared, phase, ready)),
        };
    }
    drop(ready_tx);

    let mut ready = Ready::default();
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => ready.connected += 1,
            Err(error) => {
                ready.failed += 1;
                ready.first_error.get_or_insert(error.to_string());
            }
        }
    }
    ready.connect_s = connect_start.elapsed().as_secs_f64();
    link.ready(ready).await;
    if !link.started().await {
        let _ = phase_tx.send(Phase::Stopped);
        stop(&mut tasks).await;
        return Ok(Partial::default());
    }
    let _ = phase_tx.send(Phase::Sending);
    link.stopped().await;

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
    };
    let drain_s = drain_start.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Stopped);
    stop(&mut tasks).await;

    let mut counts = Counts::default();
    for (offset, tracker) in trackers.iter().enumerate() {
        let tracker = tracker.lock().unwrap_or_else(PoisonError::into_inner);
        counts += tracker.counts();
        // Which messages were lost, for the server's logs (message ids are per sending phone).
        let lost = tracker.lost_ids(10);
        if !lost.is_empty() {
            let index = range.start + offset;
            let (mine, theirs) = if index.is_multiple_of(2) {
                ('a', 'b')
            } else {
                ('b', 'a')
            };
            eprintln!(
                "chat: acked, never delivered: {prefix}{mine}{pair} -> {prefix}{theirs}{pair}, \
                 message ids {lost:?}",
                prefix = args.user_prefix,
                pair = index / 2,
            );
        }
    }
    Ok(Partial {
        counts,
        counters: shared.counters.to_map(),
        latency: shared.latency.collect(),
        reconnect: shared.reconnect.collect(),
        same_dc: shared
            .by_class
            .as_ref()
            .map_or_else(Latency::new, |by_class| by_class.same.collect()),
        cross_dc: shared
            .by_class
            .as_ref()
            .map_or_else(Latency::new, |by_class| by_class.cross.collect()),
        drain_s,
        drained,
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
