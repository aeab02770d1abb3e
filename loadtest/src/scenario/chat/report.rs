//! The figures of a chat run: the common report fields, plus the chat's own counters.

use super::ChatArgs;
use crate::parts::Outcome;
use crate::report::{Report, round1, round3};

/// Builds the report of a chat run from the merged figures of its parts.
pub fn build(args: &ChatArgs, outcome: &Outcome) -> Report {
    let mut r = Report::new("chat", args.common.target.name());
    let p = &outcome.partial;
    let counts = p.counts;
    let latency = p.latency.summary();
    r.connections = Some(args.connections as u64);
    r.duration_s = Some(round3(outcome.run_s));
    r.sent = Some(counts.sent);
    r.acked = Some(counts.acked);
    r.delivered = Some(counts.delivered);
    r.lost = Some(counts.undelivered);
    r.duplicates = Some(counts.duplicates);
    r.msgs_per_sec = Some(round1(counts.delivered as f64 / outcome.run_s.max(1e-3)));
    r.set_latency(&latency);
    r.server_rss_bytes = outcome.server.held.map(|s| s.rss_bytes);
    if let Some(cpu_us) = outcome.server.cpu_us() {
        r.server_cpu_pct = Some(round1(cpu_us as f64 / 1e4 / outcome.busy_s.max(1e-3)));
        if counts.delivered > 0 {
            r.server_cpu_us_per_msg = Some(round3(cpu_us as f64 / counts.delivered as f64));
        }
    }
    r.put("latency_of", "message");
    r.put("rate", args.rate);
    r.put("size", args.size);
    r.put("window", args.window);
    r.put("unacked", counts.unacked);
    for name in [
        "refused",
        "retries",
        "duplicate_acks",
        "errors",
        "go_aways",
        "disconnects",
        "reconnects",
        "unexpected",
        "seq_regressions",
        "backlog_skipped",
        "ack_wait_max_ms",
        "ack_pause_max_ms",
    ] {
        r.put(name, p.counter(name));
    }
    r.put("max_ms", latency.max_ms);
    let reconnect = p.reconnect.summary();
    r.put("reconnect_count", reconnect.count);
    r.put("reconnect_p50_ms", reconnect.p50_ms);
    r.put("reconnect_p99_ms", reconnect.p99_ms);
    r.put("reconnect_max_ms", reconnect.max_ms);
    r.put("mean_ms", latency.mean_ms);
    r.put("connect_s", round3(outcome.ready.connect_s));
    r.put("drain_s", round3(p.drain_s));
    r.put("drained", p.drained);
    r.put("workers", outcome.parts);
    r.put(
        "server_cpu_s",
        outcome.server.cpu_us().map(|us| round3(us as f64 / 1e6)),
    );
    r
}
