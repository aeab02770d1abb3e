//! `tern-load storm`: many loops, each its own user, log in and out as fast as they can (or at
//! `--rate` in total): connect, Login with the last seq seen (a resume), Welcome, read up to
//! QueueDrained, disconnect, again. Reports logins per second, login latency (connect to
//! Welcome; CONNACK for MQTT) and errors. The measured window is Start to Stop; a login
//! cut off by the stop is not counted.

mod attempt;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use self::attempt::Storm;
use super::Verdict;
use crate::common::CommonArgs;
use crate::error::LoadError;
use crate::latency::SharedLatency;
use crate::parts::{self, Outcome, PartLink, Partial, Plan, Ready};
use crate::progress::Counters;
use crate::report::{Report, round1, round3};
use crate::target::Endpoint;

/// How long loops get to finish after the stop.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Arguments of `tern-load storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent login loops (each logs in as its own user, one connection at a time).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Seconds of logging in.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Logins per second in total; 0 logs in as fast as the loops go.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Prefix of the user names (`<prefix><i>`).
    #[arg(long, default_value = "storm-")]
    user_prefix: String,
}

impl StormArgs {
    fn check(&self) -> Result<(), LoadError> {
        let problem = if self.connections == 0 {
            "--connections must be at least 1"
        } else if !(self.duration > 0.0 && self.duration.is_finite()) {
            "--duration must be a positive number of seconds"
        } else if !(self.rate >= 0.0 && self.rate.is_finite()) {
            "--rate must be 0 or positive"
        } else {
            return Ok(());
        };
        Err(LoadError::Args(problem.to_owned()))
    }
}

/// Runs the scenario; fails when any login failed (or none succeeded).
pub async fn run(args: StormArgs) -> Result<Verdict, LoadError> {
    args.check()?;
    let plan = Plan {
        scenario: "storm",
        connections: args.connections,
        align: 1,
        duration: Duration::from_secs_f64(args.duration),
        settle: Duration::ZERO,
        finish_timeout: STOP_GRACE + Duration::from_secs(10),
        abort_on_failure: true,
    };
    let outcome = parts::coordinate(&args.common, plan, |link| part(args.clone(), link)).await?;
    let report = report(&args, &outcome);
    report.print(args.common.json);
    let logins = outcome.partial.counter("logins");
    Ok(if outcome.partial.counter("errors") > 0 || logins == 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

fn report(args: &StormArgs, outcome: &Outcome) -> Report {
    let mut r = Report::new("storm", args.common.target.name());
    let p = &outcome.partial;
    let logins = p.counter("logins");
    r.connections = Some(args.connections as u64);
    r.duration_s = Some(round3(outcome.run_s));
    r.set_latency(&p.latency.summary());
    r.logins_per_sec = Some(round1(logins as f64 / outcome.run_s.max(1e-3)));
    r.server_rss_bytes = outcome.server.held.map(|s| s.rss_bytes);
    if let Some(cpu_us) = outcome.server.cpu_us() {
        r.server_cpu_pct = Some(round1(cpu_us as f64 / 1e4 / outcome.busy_s.max(1e-3)));
        if logins > 0 {
            r.put(
                "server_cpu_us_per_login",
                round3(cpu_us as f64 / logins as f64),
            );
        }
    }
    r.put("latency_of", "login");
    r.put("logins", logins);
    r.put("errors", p.counter("errors"));
    r.put("timeouts", p.counter("timeouts"));
    r.put("tls", args.common.server.tls.tls);
    r.put("tls_handshake_failures", p.counter("handshake_failures"));
    r.put("rate", args.rate);
    r.put("workers", outcome.parts);
    r
}

/// One part: its share of the loops run from Start to Stop.
pub async fn part(args: StormArgs, mut link: PartLink) -> Result<Partial, LoadError> {
    let range = link.range(args.connections, 1);
    let ttl = args.duration as u64 + 3600;
    let endpoint = Endpoint::open(&args.common, ttl).await?;
    let counters = Arc::new(Counters::default());
    link.report_progress(counters.clone());
    let storm = Arc::new(Storm {
        endpoint,
        prefix: args.user_prefix.clone(),
        loops: args.connections,
        rate_per_loop: args.rate / args.connections as f64,
        counters: counters.clone(),
        latency: SharedLatency::new(16),
        timeouts: AtomicU64::new(0),
        errors_shown: AtomicU64::new(0),
    });
    link.ready(Ready::default()).await;
    if !link.started().await {
        return Ok(Partial::default());
    }
    let mut tasks = JoinSet::new();
    for index in range {
        tasks.spawn(attempt::run_loop(index, storm.clone(), link.commands()));
    }
    link.stopped().await;
    let stop = Instant::now();
    let finished = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let mut counters_map = counters.to_map();
    counters_map.insert(
        "timeouts".to_owned(),
        storm.timeouts.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(Partial {
        counts: Default::default(),
        counters: counters_map,
        latency: storm.latency.collect(),
        drain_s: stop.elapsed().as_secs_f64(),
        drained: finished,
        ..Partial::default()
    })
}
