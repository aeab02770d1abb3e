//! `tern-load idle`: opens and logs in `--connections` phones (or MQTT clients), holds them
//! idle for `--duration` seconds, and reports the server's memory growth per connection
//! (`--server-pid`) and the kernel's TCP socket memory, separately.
//!
//! Memory: the server's VmRSS is read before anything connects and again at the end of the
//! hold, after `--settle` seconds of quiet; the growth is divided by the connections open.

mod hold;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use self::hold::Holder;
pub use self::hold::MQTT_KEEP_ALIVE;
use super::Verdict;
use crate::common::CommonArgs;
use crate::error::LoadError;
use crate::latency::SharedLatency;
use crate::parts::{self, Outcome, PartLink, Partial, Plan, Ready};
use crate::progress::Counters;
use crate::report::{Report, round1, round3};
use crate::target::Endpoint;

/// How long the connections get to close after the stop.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// Arguments of `tern-load idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open, each logged in as its own user.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Seconds to hold the connections once all are open (after --settle).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Logins per second while connecting, in total; 0 opens as fast as
    /// --connect-concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of quiet between the last login and the start of the hold.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Connection attempts in progress at once, per process.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Prefix of the user names (`<prefix><i>`).
    #[arg(long, default_value = "idle-")]
    user_prefix: String,
}

impl IdleArgs {
    fn check(&self) -> Result<(), LoadError> {
        let positive = |v: f64| v >= 0.0 && v.is_finite();
        let problem = if self.connections == 0 {
            "--connections must be at least 1"
        } else if !positive(self.duration) || !positive(self.settle) || !positive(self.rate) {
            "--duration, --settle and --rate must be 0 or positive"
        } else if self.connect_concurrency == 0 {
            "--connect-concurrency must be at least 1"
        } else {
            return Ok(());
        };
        Err(LoadError::Args(problem.to_owned()))
    }
}

/// Runs the scenario; fails when a connection could not be opened or dropped during the hold.
pub async fn run(args: IdleArgs) -> Result<Verdict, LoadError> {
    args.check()?;
    let plan = Plan {
        scenario: "idle",
        connections: args.connections,
        align: 1,
        duration: Duration::from_secs_f64(args.duration),
        settle: Duration::from_secs_f64(args.settle),
        finish_timeout: CLOSE_GRACE + Duration::from_secs(10),
        abort_on_failure: false,
    };
    let outcome = parts::coordinate(&args.common, plan, |link| part(args.clone(), link)).await?;
    let report = report(&args, &outcome);
    report.print(args.common.json);
    let dropped = outcome.partial.counter("dropped");
    Ok(if outcome.ready.failed > 0 || dropped > 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

fn report(args: &IdleArgs, outcome: &Outcome) -> Report {
    let mut r = Report::new("idle", args.common.target.name());
    let connected = outcome.ready.connected;
    let server = &outcome.server;
    r.connections = Some(args.connections as u64);
    r.duration_s = Some(round3(outcome.run_s));
    r.set_latency(&outcome.partial.latency.summary());
    if outcome.ready.connect_s > 0.0 {
        r.logins_per_sec = Some(round1(connected as f64 / outcome.ready.connect_s));
    }
    r.server_rss_bytes = server.held.map(|s| s.rss_bytes);
    if connected > 0 {
        r.rss_per_conn_bytes = server
            .rss_growth()
            .map(|g| round1(g as f64 / connected as f64));
    }
    if let (Some(start), Some(held)) = (server.start, server.held) {
        let cpu_us = held.cpu_us.saturating_sub(start.cpu_us);
        r.server_cpu_pct = Some(round1(cpu_us as f64 / 1e4 / outcome.run_s.max(1e-3)));
    }
    r.put("latency_of", "login");
    r.put("connected", connected);
    r.put("failed", outcome.ready.failed);
    r.put("dropped", outcome.partial.counter("dropped"));
    r.put("tls", args.common.server.tls.tls);
    r.put(
        "tls_handshake_failures",
        outcome.partial.counter("handshake_failures"),
    );
    r.put("connect_s", round3(outcome.ready.connect_s));
    r.put("settle_s", args.settle);
    r.put("workers", outcome.parts);
    r.put(
        "server_rss_before_bytes",
        server.before.map(|s| s.rss_bytes),
    );
    if let (Some(before), Some(held)) = (server.sockets_before, server.sockets_held) {
        let growth = held.tcp_mem_bytes as i64 - before.tcp_mem_bytes as i64;
        r.put("kernel_tcp_mem_bytes", growth);
        if connected > 0 {
            r.put(
                "kernel_tcp_mem_per_conn_bytes",
                round1(growth as f64 / connected as f64),
            );
        }
        r.put(
            "tcp_sockets_added",
            held.tcp_inuse as i64 - before.tcp_inuse as i64,
        );
    }
    r
}

/// One part: opens its share of the connections, reports Ready, holds them until Stop.
pub async fn part(args: IdleArgs, link: PartLink) -> Result<Partial, LoadError> {
    let range = link.range(args.connections, 1);
    let ttl = (args.duration + args.settle) as u64 + 3600;
    let endpoint = Endpoint::open(&args.common, ttl).await?;
    let counters = Arc::new(Counters::default());
    link.report_progress(counters.clone());
    let holder = Arc::new(Holder {
        endpoint,
        prefix: args.user_prefix.clone(),
        counters: counters.clone(),
        latency: SharedLatency::new(16),
        gate: Semaphore::new(args.connect_concurrency),
        first_error: Mutex::new(None),
        dropped: AtomicU64::new(0),
    });
    let (ready_tx, mut ready_rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    let begin = Instant::now();
    let rate = args.rate / link.count as f64;
    for (k, index) in range.clone().enumerate() {
        if rate > 0.0 {
            tokio::time::sleep_until((begin + Duration::from_secs_f64(k as f64 / rate)).into())
                .await;
        }
        tasks.spawn(hold::run(
            index,
            holder.clone(),
            ready_tx.clone(),
            link.commands(),
        ));
    }
    drop(ready_tx);
    let mut ready = Ready::default();
    while let Some(ok) = ready_rx.recv().await {
        if ok {
            ready.connected += 1;
        } else {
            ready.failed += 1;
        }
    }
    ready.connect_s = begin.elapsed().as_secs_f64();
    ready.first_error = holder
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    link.ready(ready).await;
    link.stopped().await;
    let stop = Instant::now();
    let closed = tokio::time::timeout(CLOSE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let mut counters_map = counters.to_map();
    counters_map.insert("dropped".to_owned(), holder.dropped.load(Ordering::Relaxed));
    Ok(Partial {
        counts: Default::default(),
        counters: counters_map,
        latency: holder.latency.collect(),
        drain_s: stop.elapsed().as_secs_f64(),
        drained: closed,
        ..Partial::default()
    })
}
