//! The mesh's metrics: names, descriptions, and handles created once per link (label `peer`, the
//! peer's node id).

use metrics::{Counter, Gauge, Unit};

use super::NodeId;
use super::lanes::Lane;

/// 1 while the link to `peer` is up, else 0.
pub const LINK_UP: &str = "tern_mesh_link_up";
/// Frames sent and received, by `peer` and `direction` (`in`, `out`).
pub const FRAMES: &str = "tern_mesh_frames_total";
/// Bytes sent and received, by `peer` and `direction`.
pub const BYTES: &str = "tern_mesh_bytes_total";
/// Casts dropped and calls refused because a lane to `peer` was full.
pub const DROPPED: &str = "tern_mesh_dropped_total";
/// Calls to `peer` that got no reply within their deadline.
pub const CALL_TIMEOUTS: &str = "tern_mesh_call_timeouts_total";
/// Links to `peer` that came up again after an earlier one went down.
pub const RECONNECTS: &str = "tern_mesh_reconnects_total";
/// Frames queued on a lane to `peer`, by `lane`.
pub const LANE_DEPTH: &str = "tern_mesh_lane_depth";
/// Handshakes refused, by `reason` (cluster, secret, version, same_id, ...).
pub const HANDSHAKE_REFUSED: &str = "tern_mesh_handshake_refused_total";

/// Registers descriptions and units of the mesh's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(
        LINK_UP,
        Unit::Count,
        "Mesh link to the peer is up (1) or down (0)."
    );
    metrics::describe_counter!(FRAMES, Unit::Count, "Mesh frames sent and received.");
    metrics::describe_counter!(BYTES, Unit::Bytes, "Mesh bytes sent and received.");
    metrics::describe_counter!(
        DROPPED,
        Unit::Count,
        "Mesh casts dropped and calls refused on a full lane."
    );
    metrics::describe_counter!(
        CALL_TIMEOUTS,
        Unit::Count,
        "Mesh calls that got no reply within their deadline."
    );
    metrics::describe_counter!(RECONNECTS, Unit::Count, "Mesh links that came up again.");
    metrics::describe_gauge!(LANE_DEPTH, Unit::Count, "Frames queued on a mesh lane.");
    metrics::describe_counter!(
        HANDSHAKE_REFUSED,
        Unit::Count,
        "Mesh handshakes refused, by reason."
    );
}

/// Counts one refused handshake (rare: a handle per event is fine).
pub(crate) fn handshake_refused(reason: &'static str) {
    metrics::counter!(HANDSHAKE_REFUSED, "reason" => reason).increment(1);
}

/// Handles to one link's metrics.
#[derive(Debug)]
pub(crate) struct LinkTelemetry {
    pub(crate) up: Gauge,
    pub(crate) frames_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) dropped: Counter,
    pub(crate) call_timeouts: Counter,
    pub(crate) reconnects: Counter,
    pub(crate) lane_depth: [Gauge; 3],
}

impl LinkTelemetry {
    pub(crate) fn new(label: &str, peer: NodeId) -> Self {
        let peer = format!("{label}{peer}");
        LinkTelemetry {
            up: metrics::gauge!(LINK_UP, "peer" => peer.clone()),
            frames_in: metrics::counter!(FRAMES, "peer" => peer.clone(), "direction" => "in"),
            frames_out: metrics::counter!(FRAMES, "peer" => peer.clone(), "direction" => "out"),
            bytes_in: metrics::counter!(BYTES, "peer" => peer.clone(), "direction" => "in"),
            bytes_out: metrics::counter!(BYTES, "peer" => peer.clone(), "direction" => "out"),
            dropped: metrics::counter!(DROPPED, "peer" => peer.clone()),
            call_timeouts: metrics::counter!(CALL_TIMEOUTS, "peer" => peer.clone()),
            reconnects: metrics::counter!(RECONNECTS, "peer" => peer.clone()),
            lane_depth: Lane::ALL.map(
                |lane| metrics::gauge!(LANE_DEPTH, "peer" => peer.clone(), "lane" => lane.label()),
            ),
        }
    }
}
