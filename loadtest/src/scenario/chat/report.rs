//! The figures of a chat run: one JSON object (the last line on stdout with `--json`) or a few
//! readable lines.

use serde::Serialize;

use crate::latency::LatencySummary;
use crate::progress::{Counters, get};
use crate::tracker::Counts;

/// Everything a chat run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// Always `"chat"`.
    pub scenario: &'static str,
    /// Phones connected.
    pub connections: usize,
    /// Length of the sending phase, seconds.
    pub duration_s: f64,
    /// Requested total rate, messages per second (0: as fast as the window allows).
    pub rate: f64,
    /// Body size, bytes.
    pub size: usize,
    /// Unacked sends per phone, at most.
    pub window: usize,
    /// Distinct messages sent.
    pub sent: u64,
    /// Distinct messages acked by the server.
    pub acked: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Acked messages never delivered.
    pub lost: u64,
    /// Extra deliveries of a message.
    pub duplicates: u64,
    /// Sent and never acked (refused until the end, or in flight when the run stopped).
    pub unacked: u64,
    /// Refusals (RATE_LIMITED, OVERLOADED, STORAGE_FAILURE), each retried.
    pub refused: u64,
    /// Sends repeated after a refusal or reconnect.
    pub retries: u64,
    /// ServerAcks flagged as answering a retry.
    pub duplicate_acks: u64,
    /// Other Error frames.
    pub errors: u64,
    /// GoAway frames.
    pub go_aways: u64,
    /// Connections lost without GoAway.
    pub disconnects: u64,
    /// Reconnects (each resumed after the last seq received).
    pub reconnects: u64,
    /// Deliveries that were not this run's messages from the partner.
    pub unexpected: u64,
    /// Deliver frames whose seq did not increase.
    pub seq_regressions: u64,
    /// Entries from earlier runs skipped at login.
    pub backlog_skipped: u64,
    /// Delivered messages per second of the sending phase.
    pub msgs_per_sec: f64,
    /// End-to-end latency (send to delivery at the partner), median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Seconds to connect and log in every phone.
    pub connect_s: f64,
    /// Seconds the drain phase took.
    pub drain_s: f64,
    /// False when the drain timed out with messages outstanding.
    pub drained: bool,
}

/// The settings of a run, echoed in the report.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo {
    /// Phones.
    pub connections: usize,
    /// Sending phase, seconds.
    pub duration_s: f64,
    /// Requested total rate.
    pub rate: f64,
    /// Body size.
    pub size: usize,
    /// Window per phone.
    pub window: usize,
    /// Login phase, seconds.
    pub connect_s: f64,
    /// Drain phase, seconds.
    pub drain_s: f64,
    /// Whether the drain finished.
    pub drained: bool,
}

impl ChatReport {
    /// Builds the report from the run settings, the trackers' totals, the live counters and the
    /// latency histogram.
    pub fn new(
        info: RunInfo,
        counts: Counts,
        counters: &Counters,
        latency: LatencySummary,
    ) -> Self {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            scenario: "chat",
            connections: info.connections,
            duration_s: info.duration_s,
            rate: info.rate,
            size: info.size,
            window: info.window,
            sent: counts.sent,
            acked: counts.acked,
            delivered: counts.delivered,
            lost: counts.undelivered,
            duplicates: counts.duplicates,
            unacked: counts.unacked,
            refused: get(&counters.refused),
            retries: get(&counters.retries),
            duplicate_acks: get(&counters.duplicate_acks),
            errors: get(&counters.errors),
            go_aways: get(&counters.go_aways),
            disconnects: get(&counters.disconnects),
            reconnects: get(&counters.reconnects),
            unexpected: get(&counters.unexpected),
            seq_regressions: get(&counters.seq_regressions),
            backlog_skipped: get(&counters.backlog_skipped),
            msgs_per_sec: round(counts.delivered as f64 / info.duration_s.max(1e-3)),
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
            p999_ms: latency.p999_ms,
            max_ms: latency.max_ms,
            mean_ms: latency.mean_ms,
            connect_s: round3(info.connect_s),
            drain_s: round3(info.drain_s),
            drained: info.drained,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers, strings and booleans always serializes.
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }

    /// A few readable lines.
    pub fn to_text(&self) -> String {
        format!(
            "chat: {} connections, {} s\n\
             sent {}  acked {}  delivered {}  lost {}  duplicates {}  unacked {}\n\
             refused {}  retries {}  errors {}  goaways {}  disconnects {}  reconnects {}  unexpected {}\n\
             throughput {} msgs/s delivered\n\
             latency ms: p50 {}  p99 {}  p99.9 {}  max {}  mean {}\n\
             connect {} s  drain {} s{}  (skipped {} entries of earlier runs)",
            self.connections,
            self.duration_s,
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicates,
            self.unacked,
            self.refused,
            self.retries,
            self.errors,
            self.go_aways,
            self.disconnects,
            self.reconnects,
            self.unexpected,
            self.msgs_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.mean_ms,
            self.connect_s,
            self.drain_s,
            if self.drained { "" } else { " (timed out)" },
            self.backlog_skipped,
        )
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
