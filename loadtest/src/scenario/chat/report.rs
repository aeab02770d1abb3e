//! The figures of a chat run: the common report fields, plus the chat's own counters.

use super::ChatArgs;
use crate::parts::{Outcome, Partial};
use crate::report::{Report, round1, round3};

/// Builds the report of a chat run from the merged figures of its parts; `census` is the number
/// of (same-datacenter, cross-datacenter) pairs of a run with `--wan-config`.
pub fn build(args: &ChatArgs, outcome: &Outcome, census: Option<(usize, usize)>) -> Report {
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
    r.put("out_of_order", counts.out_of_order);
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
        "seq_gaps",
        "backlog_skipped",
        "ack_wait_max_ms",
        "ack_pause_max_ms",
    ] {
        r.put(name, p.counter(name));
    }
    r.put("tls", args.common.server.tls.tls);
    r.put("tls_handshake_failures", p.counter("handshake_failures"));
    r.put("max_ms", latency.max_ms);
    let reconnect = p.reconnect.summary();
    r.put("reconnect_count", reconnect.count);
    r.put("reconnect_p50_ms", reconnect.p50_ms);
    r.put("reconnect_p99_ms", reconnect.p99_ms);
    r.put("reconnect_max_ms", reconnect.max_ms);
    r.put("mean_ms", latency.mean_ms);
    if let Some((same, cross)) = census {
        put_datacenters(&mut r, p, same, cross);
    }
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

/// The figures of a run across datacenters: pairs and latencies, same and cross apart, and
/// the logins sent home and the acks of queued messages.
fn put_datacenters(r: &mut Report, p: &Partial, same_pairs: usize, cross_pairs: usize) {
    r.put("same_dc_pairs", same_pairs);
    r.put("cross_dc_pairs", cross_pairs);
    for (name, latency) in [("same_dc", &p.same_dc), ("cross_dc", &p.cross_dc)] {
        let summary = latency.summary();
        r.put(&format!("{name}_count"), summary.count);
        // No value recorded: null, as the common percentiles are.
        let measured = |ms: f64| (summary.count > 0).then_some(ms);
        r.put(&format!("{name}_p50_ms"), measured(summary.p50_ms));
        r.put(&format!("{name}_p99_ms"), measured(summary.p99_ms));
    }
    r.put("elsewhere", p.counter("elsewhere"));
    r.put("queued_acks", p.counter("queued_acks"));
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::Value;

    use super::*;
    use crate::parts::Ready;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        chat: ChatArgs,
    }

    fn outcome() -> Outcome {
        let mut partial = Partial::default();
        partial.counts.sent = 4;
        partial.counts.delivered = 4;
        partial.counts.out_of_order = 1;
        for micros in [1_000, 2_000, 3_000] {
            partial.latency.record(micros);
            partial.same_dc.record(micros);
        }
        partial.latency.record(90_000);
        partial.cross_dc.record(90_000);
        partial.counters.insert("queued_acks".to_owned(), 1);
        Outcome {
            ready: Ready::default(),
            partial,
            parts: 1,
            server: Default::default(),
            run_s: 1.0,
            busy_s: 1.0,
        }
    }

    fn json(report: &Report) -> serde_json::Map<String, Value> {
        match serde_json::from_str(&report.to_json()).unwrap() {
            Value::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn without_datacenters_only_out_of_order_is_new() {
        let args = Cli::parse_from(["chat"]).chat;
        let fields = json(&build(&args, &outcome(), None));
        assert_eq!(fields["out_of_order"], 1);
        for name in [
            "same_dc_count",
            "cross_dc_p50_ms",
            "same_dc_pairs",
            "elsewhere",
        ] {
            assert!(!fields.contains_key(name), "{name}");
        }
    }

    #[test]
    fn with_datacenters_same_and_cross_pairs_are_reported_apart() {
        let args = Cli::parse_from(["chat", "--connections", "4"]).chat;
        let report = build(&args, &outcome(), Some((1, 1)));
        let fields = json(&report);
        assert_eq!(fields["same_dc_pairs"], 1);
        assert_eq!(fields["cross_dc_pairs"], 1);
        assert_eq!(fields["same_dc_count"], 3);
        assert_eq!(fields["cross_dc_count"], 1);
        let ms = |name: &str| fields[name].as_f64().unwrap();
        assert!((ms("same_dc_p50_ms") - 2.0).abs() < 0.01);
        assert!((ms("same_dc_p99_ms") - 3.0).abs() < 0.01);
        assert!((ms("cross_dc_p50_ms") - 90.0).abs() < 0.1);
        assert_eq!(fields["queued_acks"], 1);
        assert!(report.to_text().contains("cross_dc_p99_ms: "));
        // A run with no cross pair has no cross latency: null in JSON, absent from the text.
        let mut only_same = outcome();
        only_same.partial.cross_dc = crate::latency::Latency::new();
        let report = build(&args, &only_same, Some((2, 0)));
        assert_eq!(json(&report)["cross_dc_count"], 0);
        assert!(json(&report)["cross_dc_p50_ms"].is_null());
        assert!(!report.to_text().contains("cross_dc_p50_ms"));
    }
}
