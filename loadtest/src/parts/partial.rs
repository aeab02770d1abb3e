//! What a part hands to the coordinator at the end, and how the parts' figures merge: counts
//! add, histograms merge, the drain took as long as the slowest part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::Latency;
use crate::tracker::Counts;

/// One part's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// Loss and duplicate accounting of the part's messages.
    pub counts: Counts,
    /// Named event counters (refused, reconnects, logins...), summed over parts.
    pub counters: BTreeMap<String, u64>,
    /// Latencies of the scenario's operation, µs.
    pub latency: Latency,
    /// Times from a GoAway to the next login, µs (the phones' reconnect delays).
    #[serde(default = "Latency::new")]
    pub reconnect: Latency,
    /// Latencies of messages between users homed in the same datacenter, µs (chat with
    /// `--wan-config`; empty otherwise).
    #[serde(default = "Latency::new")]
    pub same_dc: Latency,
    /// Latencies of messages between users homed in different datacenters, µs.
    #[serde(default = "Latency::new")]
    pub cross_dc: Latency,
    /// Seconds between Stop and the part's end (the drain).
    pub drain_s: f64,
    /// False when the part stopped with work outstanding (the drain timed out).
    pub drained: bool,
}

impl Default for Partial {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            counters: BTreeMap::new(),
            latency: Latency::new(),
            reconnect: Latency::new(),
            same_dc: Latency::new(),
            cross_dc: Latency::new(),
            drain_s: 0.0,
            drained: true,
        }
    }
}

impl Partial {
    /// Adds another part's figures.
    pub fn merge(&mut self, other: &Partial) {
        self.counts += other.counts;
        for (name, value) in &other.counters {
            let total = self.counters.entry(name.clone()).or_default();
            if name.ends_with("_max_ms") {
                *total = (*total).max(*value);
            } else {
                *total += value;
            }
        }
        self.latency.merge(&other.latency);
        self.reconnect.merge(&other.reconnect);
        self.same_dc.merge(&other.same_dc);
        self.cross_dc.merge(&other.cross_dc);
        self.drain_s = self.drain_s.max(other.drain_s);
        self.drained &= other.drained;
    }

    /// A counter by name (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_merge_after_crossing_json() {
        let mut a = Partial::default();
        a.counts.sent = 10;
        a.counts.delivered = 9;
        a.counts.undelivered = 1;
        a.counters.insert("refused".to_owned(), 2);
        a.latency.record(1_000);
        a.drain_s = 0.5;
        let mut b = Partial::default();
        b.counts.sent = 5;
        b.counts.delivered = 5;
        b.counters.insert("refused".to_owned(), 1);
        b.counters.insert("reconnects".to_owned(), 4);
        b.latency.record(3_000);
        b.latency.record(5_000);
        b.cross_dc.record(5_000);
        b.drain_s = 1.5;
        b.drained = false;
        let mut total = Partial::default();
        for part in [&a, &b] {
            let line = serde_json::to_string(part).unwrap();
            total.merge(&serde_json::from_str(&line).unwrap());
        }
        assert_eq!((total.counts.sent, total.counts.delivered), (15, 14));
        assert_eq!(total.counts.undelivered, 1);
        assert_eq!(total.counter("refused"), 3);
        assert_eq!(total.counter("reconnects"), 4);
        assert_eq!(total.counter("absent"), 0);
        assert_eq!(total.latency.count(), 3);
        assert_eq!((total.same_dc.count(), total.cross_dc.count()), (0, 1));
        assert!((total.latency.summary().p50_ms - 3.0).abs() < 0.01);
        assert_eq!(total.drain_s, 1.5);
        assert!(!total.drained);
    }
}
