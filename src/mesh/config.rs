//! The mesh's configuration and its fixed limits.

use std::time::Duration;

use super::NodeId;

/// Largest frame a link accepts or sends (length prefix excluded); a bigger one is a protocol
/// error that closes the link.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The writer coalesces queued frames into one buffer of up to this many bytes per write.
pub const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Inbound calls whose handlers may run at once on one link; beyond it calls are answered "busy".
pub const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// Handshakes waiting on the listener at once; further connections are closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// A handshake (dial or accept) that takes longer than this is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The mesh protocol version sent in Hello; a peer with another one is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// How one node joins the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Cluster name; a peer of another cluster is refused.
    pub cluster: String,
    /// This node's id (1..=1023).
    pub node: NodeId,
    /// `host:port` to listen on (port 0 picks a free port, for tests).
    pub listen: String,
    /// The cluster secret: the HMAC key of the handshake proofs.
    pub secret: Vec<u8>,
    /// Known peers and their mesh addresses; this node dials those with a higher id.
    pub peers: Vec<(NodeId, String)>,
    /// Frames each lane of a link holds (Consensus, Call, Cast); a full lane refuses at once.
    pub lane_capacity: [usize; 3],
    /// A link with nothing to send for this long sends a heartbeat (RTT is measured from them).
    pub heartbeat: Duration,
    /// A link that received nothing for this long is closed (and redialed by its dialer).
    pub dead_after: Duration,
    /// First reconnect delay (then doubled per failure, with jitter).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Seeds the reconnect jitter (per peer) instead of the OS, so that a simulated run
    /// repeats exactly; `None` (the default) in production.
    pub jitter_seed: Option<u64>,
    /// Put before the peer's id in the `peer` label of the link metrics (`"wan-"` on the
    /// gateways' mesh, so its links never share a series with a cluster link). Default: empty.
    pub peer_label: &'static str,
}

impl MeshConfig {
    /// A configuration with the default timings and lane sizes: heartbeat 250 ms, dead after 3 s,
    /// reconnect 50 ms..5 s, lanes of 4096 / 4096 / 1024 frames.
    pub fn new(
        cluster: impl Into<String>,
        node: NodeId,
        listen: impl Into<String>,
        secret: impl Into<Vec<u8>>,
    ) -> Self {
        MeshConfig {
            cluster: cluster.into(),
            node,
            listen: listen.into(),
            secret: secret.into(),
            peers: Vec::new(),
            lane_capacity: [4096, 4096, 1024],
            heartbeat: Duration::from_millis(250),
            dead_after: Duration::from_secs(3),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            jitter_seed: None,
            peer_label: "",
        }
    }

    /// Every problem with this configuration, empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=1023).contains(&self.node) {
            problems.push(format!("node id {} is outside 1..=1023", self.node));
        }
        if self.cluster.is_empty() {
            problems.push("cluster name is empty".to_owned());
        }
        if self.secret.len() < 16 {
            problems.push("cluster secret is shorter than 16 bytes".to_owned());
        }
        if self.lane_capacity.contains(&0) {
            problems.push("a lane capacity is 0".to_owned());
        }
        if self.heartbeat.is_zero() || self.dead_after <= self.heartbeat {
            problems.push("heartbeat must be non-zero and shorter than dead_after".to_owned());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            problems.push("backoff_min must be non-zero and at most backoff_max".to_owned());
        }
        for (peer, _) in &self.peers {
            if *peer == self.node {
                problems.push(format!("peer {peer} has this node's own id"));
            } else if !(1..=1023).contains(peer) {
                problems.push(format!("peer id {peer} is outside 1..=1023"));
            }
        }
        problems
    }
}
