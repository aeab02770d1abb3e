//! The WAN's metrics: per linked datacenter (label `datacenter`), the link's state, the queue's
//! depth and the age of its oldest record (the partition alarms in `docs/operations.md`), and
//! what crossed.

use metrics::{Counter, Gauge, Unit};

/// 1 while this gateway's link to `datacenter` is up (Resume answered), else 0.
pub const LINK_UP: &str = "tern_wan_link_up";
/// Records queued for `datacenter` and not yet stored there.
pub const QUEUE_RECORDS: &str = "tern_wan_queue_records";
/// Bytes of those records.
pub const QUEUE_BYTES: &str = "tern_wan_queue_bytes";
/// Seconds since the oldest of those records was queued (0 when the queue is empty).
pub const QUEUE_OLDEST_SECONDS: &str = "tern_wan_queue_oldest_seconds";
/// Records `datacenter` confirmed stored (they left the queue).
pub const SENT: &str = "tern_wan_sent_total";
/// Records from `datacenter` stored here.
pub const RECEIVED: &str = "tern_wan_received_total";
/// Records from `datacenter` dropped because they were already stored (resends after a drop).
pub const DUPLICATES: &str = "tern_wan_duplicates_total";
/// Records refused by this gateway's queue to `datacenter` because it was full.
pub const REFUSED: &str = "tern_wan_refused_total";
/// Links to `datacenter` that came up (first or again).
pub const RESUMES: &str = "tern_wan_resumes_total";

/// Registers descriptions and units of the WAN's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(
        LINK_UP,
        Unit::Count,
        "Gateway link to the datacenter is up (1) or down (0)."
    );
    metrics::describe_gauge!(
        QUEUE_RECORDS,
        Unit::Count,
        "Records queued for the datacenter, not yet stored there."
    );
    metrics::describe_gauge!(QUEUE_BYTES, Unit::Bytes, "Bytes queued for the datacenter.");
    metrics::describe_gauge!(
        QUEUE_OLDEST_SECONDS,
        Unit::Seconds,
        "Age of the oldest record queued for the datacenter."
    );
    metrics::describe_counter!(SENT, Unit::Count, "Records the datacenter stored.");
    metrics::describe_counter!(
        RECEIVED,
        Unit::Count,
        "Records from the datacenter stored here."
    );
    metrics::describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Records from the datacenter dropped as already stored."
    );
    metrics::describe_counter!(
        REFUSED,
        Unit::Count,
        "Records refused because the queue to the datacenter was full."
    );
    metrics::describe_counter!(
        RESUMES,
        Unit::Count,
        "Links to the datacenter that came up."
    );
}

/// Handles to one queue's metrics.
#[derive(Debug)]
pub struct QueueTelemetry {
    records: Gauge,
    bytes: Gauge,
    oldest: Gauge,
    /// Enqueues refused (full).
    pub refused_full: Counter,
}

impl QueueTelemetry {
    /// The handles for the queue to `datacenter`.
    pub fn new(datacenter: &str) -> Self {
        let dc = datacenter.to_owned();
        QueueTelemetry {
            records: metrics::gauge!(QUEUE_RECORDS, "datacenter" => dc.clone()),
            bytes: metrics::gauge!(QUEUE_BYTES, "datacenter" => dc.clone()),
            oldest: metrics::gauge!(QUEUE_OLDEST_SECONDS, "datacenter" => dc.clone()),
            refused_full: metrics::counter!(REFUSED, "datacenter" => dc),
        }
    }

    /// Sets the depth gauges, and the age from the oldest record's queueing time.
    pub fn report(&self, records: usize, bytes: u64, oldest_at_ms: Option<u64>) {
        self.records.set(records as f64);
        self.bytes.set(bytes as f64);
        self.age(oldest_at_ms);
    }

    /// Sets the age gauge from the oldest record's queueing time.
    pub fn age(&self, oldest_at_ms: Option<u64>) {
        let age = oldest_at_ms.map_or(0.0, |at| {
            crate::clock::now_ms().saturating_sub(at) as f64 / 1000.0
        });
        self.oldest.set(age);
    }
}

/// Handles to one link's metrics (both directions).
#[derive(Debug)]
pub struct LinkTelemetry {
    /// Up or down.
    pub up: Gauge,
    /// Records the far side stored.
    pub sent: Counter,
    /// Links that came up.
    pub resumes: Counter,
    /// Records from the far side stored here.
    pub received: Counter,
    /// Records from the far side already stored.
    pub duplicates: Counter,
}

impl LinkTelemetry {
    /// The handles for the link to `datacenter`.
    pub fn new(datacenter: &str) -> Self {
        let dc = datacenter.to_owned();
        LinkTelemetry {
            up: metrics::gauge!(LINK_UP, "datacenter" => dc.clone()),
            sent: metrics::counter!(SENT, "datacenter" => dc.clone()),
            resumes: metrics::counter!(RESUMES, "datacenter" => dc.clone()),
            received: metrics::counter!(RECEIVED, "datacenter" => dc.clone()),
            duplicates: metrics::counter!(DUPLICATES, "datacenter" => dc),
        }
    }
}
