//! Push metrics: names, descriptions, start-time registration, and the handles the sender
//! counts with. No labels: a push's user, device and token stay out of metrics.

use metrics::{Counter, Gauge, Histogram, Unit};

/// Pushes the scheduler handed to the sender (counted by the scheduler).
pub const SCHEDULED: &str = "tern_push_scheduled_total";
/// Messages folded into a push already outstanding for their device instead of a push of
/// their own (counted by the scheduler).
pub const COLLAPSED: &str = "tern_push_collapsed_total";
/// Pushes the gateway took.
pub const SENT: &str = "tern_push_sent_total";
/// Pushes the gateway refused for good (a bad request, a platform it cannot push to).
pub const FAILED: &str = "tern_push_failed_total";
/// Pushes sent again after a transient failure (one per new attempt).
pub const RETRIES: &str = "tern_push_retries_total";
/// Tokens the gateway reported dead, handed back for removal.
pub const TOKENS_REMOVED: &str = "tern_push_tokens_removed_total";
/// Pushes given up: put back for longer than their retry time because the queue stayed full,
/// still failing when their retry time ran out, or (direct submits) refused by the full queue.
pub const DEAD_LETTERS: &str = "tern_push_dead_letters_total";
/// Pushes the scheduler put back because the sender's queue was full, to offer again later.
pub const DEFERRED: &str = "tern_push_deferred_total";
/// Pushes waiting in the sender's queue.
pub const QUEUE_DEPTH: &str = "tern_push_queue_depth";
/// Time of each gateway request that delivered a push, connecting included.
pub const GATEWAY_SECONDS: &str = "tern_push_gateway_seconds";

const COUNTERS: &[&str] = &[
    SCHEDULED,
    COLLAPSED,
    SENT,
    FAILED,
    RETRIES,
    TOKENS_REMOVED,
    DEAD_LETTERS,
    DEFERRED,
];

/// Registers descriptions and units of the push metrics with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        SCHEDULED,
        Unit::Count,
        "Pushes scheduled for devices without a live session."
    );
    metrics::describe_counter!(
        COLLAPSED,
        Unit::Count,
        "Messages folded into a push already outstanding for their device."
    );
    metrics::describe_counter!(SENT, Unit::Count, "Pushes the push gateway took.");
    metrics::describe_counter!(
        FAILED,
        Unit::Count,
        "Pushes the push gateway refused for good."
    );
    metrics::describe_counter!(
        RETRIES,
        Unit::Count,
        "Pushes sent again after a transient gateway failure."
    );
    metrics::describe_counter!(
        TOKENS_REMOVED,
        Unit::Count,
        "Push tokens the gateway reported dead, removed."
    );
    metrics::describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Pushes given up: the queue stayed full or retries ran out."
    );
    metrics::describe_counter!(
        DEFERRED,
        Unit::Count,
        "Pushes put back because the queue to the gateway was full, offered again later."
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Pushes waiting in the queue to the push gateway."
    );
    metrics::describe_histogram!(
        GATEWAY_SECONDS,
        Unit::Seconds,
        "Push gateway request latency of delivered pushes."
    );
}

/// Creates every push series at zero, so that alarms have a series before the first push.
pub fn register() {
    for name in COUNTERS {
        let _ = metrics::counter!(*name);
    }
    let _ = metrics::gauge!(QUEUE_DEPTH);
    let _ = metrics::histogram!(GATEWAY_SECONDS);
}

/// The handles the sender counts with.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    pub(crate) sent: Counter,
    pub(crate) failed: Counter,
    pub(crate) retries: Counter,
    pub(crate) tokens_removed: Counter,
    pub(crate) dead_letters: Counter,
    pub(crate) queue_depth: Gauge,
    pub(crate) gateway_seconds: Histogram,
}

impl Telemetry {
    /// Handles from the installed recorder (no-ops without one).
    pub(crate) fn new() -> Telemetry {
        Telemetry {
            sent: metrics::counter!(SENT),
            failed: metrics::counter!(FAILED),
            retries: metrics::counter!(RETRIES),
            tokens_removed: metrics::counter!(TOKENS_REMOVED),
            dead_letters: metrics::counter!(DEAD_LETTERS),
            queue_depth: metrics::gauge!(QUEUE_DEPTH),
            gateway_seconds: metrics::histogram!(GATEWAY_SECONDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_described_and_there_at_zero() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register();
        });
        let text = handle.render();
        for name in COUNTERS {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(
                text.lines().any(|line| line == format!("{name} 0")),
                "{text}"
            );
        }
        assert!(text.contains(&format!("# HELP {QUEUE_DEPTH} ")), "{text}");
        assert!(
            text.lines().any(|line| line == format!("{QUEUE_DEPTH} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("# HELP {GATEWAY_SECONDS} ")),
            "{text}"
        );
    }
}
