//! The figures every scenario prints: one shared set of fields (null where a scenario does not
//! measure one), then the scenario's own fields. With `--json` it is one line of JSON, the last
//! line on stdout; without, one `name: value` line per field.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::latency::LatencySummary;
use crate::procfs::Watched;

/// The common figures, in the order they are printed; `extra` follows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The scenario (`idle`, `chat`, `storm`, `offline-send`, `offline-drain`).
    pub scenario: String,
    /// The server kind (`tern` or `mqtt`).
    pub target: String,
    /// Connections (phones, loops, senders or recipients, by scenario).
    pub connections: Option<u64>,
    /// Seconds of the measured phase.
    pub duration_s: Option<f64>,
    /// Distinct messages sent.
    pub sent: Option<u64>,
    /// Distinct messages acked by the server.
    pub acked: Option<u64>,
    /// Distinct messages delivered.
    pub delivered: Option<u64>,
    /// Acked messages never delivered.
    pub lost: Option<u64>,
    /// Extra deliveries of a message.
    pub duplicates: Option<u64>,
    /// Messages per second of the measured phase (delivered, or acked where nothing is
    /// delivered).
    pub msgs_per_sec: Option<f64>,
    /// Median latency of the scenario's operation (message send to delivery; login), ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<f64>,
    /// Completed logins per second.
    pub logins_per_sec: Option<f64>,
    /// Server resident memory at the end of the measured phase, bytes.
    pub server_rss_bytes: Option<u64>,
    /// Server memory growth per connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Server CPU (user + system) over the measured phase, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server CPU time per message counted in `msgs_per_sec`, µs.
    pub server_cpu_us_per_msg: Option<f64>,
    /// The scenario's own figures.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Report {
    /// A report with every common figure null.
    pub fn new(scenario: &str, target: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            ..Self::default()
        }
    }

    /// Fills the three percentiles (nothing when no value was recorded).
    pub fn set_latency(&mut self, latency: &LatencySummary) {
        if latency.count > 0 {
            self.p50_ms = Some(latency.p50_ms);
            self.p99_ms = Some(latency.p99_ms);
            self.p999_ms = Some(latency.p999_ms);
        }
    }

    /// Fills the server figures from a watch over the whole run; `messages` are those counted
    /// in `msgs_per_sec`.
    pub fn set_watched(&mut self, watched: &Watched, messages: u64) {
        self.server_rss_bytes = Some(watched.rss_bytes);
        self.server_cpu_pct = Some(round1(
            watched.cpu_us as f64 / 1e4 / watched.wall_s.max(1e-3),
        ));
        if messages > 0 {
            self.server_cpu_us_per_msg = Some(round3(watched.cpu_us as f64 / messages as f64));
        }
    }

    /// Adds a scenario field; values that do not serialize are left out.
    pub fn put(&mut self, name: &str, value: impl Serialize) {
        if let Ok(value) = serde_json::to_value(value) {
            self.extra.insert(name.to_owned(), value);
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        // Numbers, strings, booleans and maps of them always serialize.
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }

    /// `name: value` per field, the measured ones only.
    pub fn to_text(&self) -> String {
        let Ok(Value::Object(fields)) = serde_json::to_value(self) else {
            return self.to_json();
        };
        let mut text = String::new();
        for (name, value) in ordered(&fields, self) {
            if !value.is_null() {
                text.push_str(&format!("{name}: {value}\n"));
            }
        }
        text.pop();
        text
    }

    /// Prints the report on stdout: JSON or text.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            println!("{}", self.to_text());
        }
    }
}

/// Fields in printing order: the common ones as declared, then the extra ones by name.
fn ordered<'a>(fields: &'a Map<String, Value>, report: &Report) -> Vec<(&'a String, &'a Value)> {
    let mut common: Vec<(&String, &Value)> = fields
        .iter()
        .filter(|(name, _)| !report.extra.contains_key(*name))
        .collect();
    common.sort_by_key(|(name, _)| COMMON.iter().position(|c| c == name));
    let extra = fields
        .iter()
        .filter(|(name, _)| report.extra.contains_key(*name));
    common.into_iter().chain(extra).collect()
}

/// The common field names, in order.
pub const COMMON: [&str; 18] = [
    "scenario",
    "target",
    "connections",
    "duration_s",
    "sent",
    "acked",
    "delivered",
    "lost",
    "duplicates",
    "msgs_per_sec",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "logins_per_sec",
    "server_rss_bytes",
    "rss_per_conn_bytes",
    "server_cpu_pct",
    "server_cpu_us_per_msg",
];

/// Rounds to one decimal.
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Rounds to three decimals.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_common_field_is_present_even_when_not_measured() {
        let mut r = Report::new("idle", "tern");
        r.connections = Some(3);
        r.put("failed", 0u64);
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        let object = v.as_object().unwrap();
        for name in COMMON {
            assert!(object.contains_key(name), "{name} missing");
        }
        assert_eq!(object["connections"], 3);
        assert!(object["lost"].is_null());
        assert_eq!(object["failed"], 0);
        assert!(!object.contains_key("extra"), "extra fields are flattened");
    }

    #[test]
    fn text_lists_measured_fields_common_ones_first() {
        let mut r = Report::new("chat", "mqtt");
        r.put("a_extra", 1u64);
        r.lost = Some(0);
        r.sent = Some(5);
        let text = r.to_text();
        let names: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(names, ["scenario", "target", "sent", "lost", "a_extra"]);
    }

    #[test]
    fn watched_figures_give_cpu_share_and_cost_per_message() {
        let mut r = Report::new("offline-send", "tern");
        let watched = Watched {
            cpu_us: 1_500_000,
            wall_s: 2.0,
            rss_bytes: 4096,
        };
        r.set_watched(&watched, 300_000);
        assert_eq!(r.server_cpu_pct, Some(75.0));
        assert_eq!(r.server_cpu_us_per_msg, Some(5.0));
        assert_eq!(r.server_rss_bytes, Some(4096));
        let mut none = Report::new("offline-drain", "tern");
        none.set_watched(&watched, 0);
        assert_eq!(none.server_cpu_us_per_msg, None);
    }

    #[test]
    fn empty_latency_leaves_percentiles_null() {
        let mut r = Report::new("storm", "tern");
        r.set_latency(&LatencySummary::default());
        assert_eq!(r.p50_ms, None);
        let summary = LatencySummary {
            count: 1,
            p50_ms: 1.5,
            p99_ms: 2.0,
            p999_ms: 3.0,
            max_ms: 3.0,
            mean_ms: 1.6,
        };
        r.set_latency(&summary);
        assert_eq!(
            (r.p50_ms, r.p99_ms, r.p999_ms),
            (Some(1.5), Some(2.0), Some(3.0))
        );
    }
}
