//! The optional `[cluster]` section: who this node is in the cluster, where the mesh listens,
//! whom to dial first, and the fixed shape of the cluster (replication, slots).
//!
//! Absent, the node is today's single node: nothing here is read on any hot path.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

mod secret;

pub use secret::{CLUSTER_SECRET_ENV, MIN_CLUSTER_SECRET_BYTES, SecretSource};

/// Bits of every id a node mints that carry its ordinal (see `crate::node::ids`).
pub const NODE_ORDINAL_BITS: u32 = 10;
/// The largest node ordinal (`cluster.node`); 0 is the ordinal of a node without `[cluster]`.
pub const MAX_NODE_ORDINAL: u64 = (1 << NODE_ORDINAL_BITS) - 1;
/// The fewest slots a cluster may have: fewer balance badly over even a few islands.
pub const MIN_SLOTS: u32 = 16;
/// The most slots a cluster may have (one Raft group each).
pub const MAX_SLOTS: u32 = 65_536;

/// The `[cluster]` section. Present, the node is one member of a cluster; absent, a single node.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Name of the cluster (1-64 letters, digits, `-`, `_`, `.`); a node refuses mesh links
    /// from another cluster's nodes. Default: `"tern"`.
    pub name: String,
    /// This node's ordinal, 1-1023, unique in the cluster and never reused for another
    /// machine; every id the node mints carries it. No default.
    pub node: u64,
    /// Address the mesh listens on for links from peers. Default: `127.0.0.1:7403`.
    pub listen: SocketAddr,
    /// Address peers dial to reach this node; not a wildcard address. Default: `listen`.
    pub advertise: Option<SocketAddr>,
    /// Nodes dialled to join the cluster, by ordinal and mesh address; this node may be among
    /// them (with its advertised address). Default: none.
    pub seeds: Vec<Seed>,
    /// Copies of every slot: 3 (islands of three nodes, a majority of two acks) or 1 (no
    /// replication). Fixed when the cluster is created. Default: 3.
    pub replication_factor: u32,
    /// Slots users and groups hash to, placed on islands; fixed when the cluster is created,
    /// 16-65536. Default: 512.
    pub slots: u32,
    /// Entries of a slot group's log kept for a member that is down or behind, past what the
    /// stores hold; a member further behind is brought up by a snapshot instead. At least 1.
    /// Default: 100000.
    pub slot_log_max_lag: u64,
    /// Bytes of a slot group's snapshot sent per call, 1 KiB to 15 MiB (a mesh frame holds
    /// 16 MiB; a chunk holds up the link's consensus lane while it is written). Default: 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// The secret written here (used when neither `TERN_CLUSTER_SECRET` nor `secret_file` is
    /// set); it authenticates mesh links. After loading, this field holds the effective secret,
    /// whichever source won. At least 32 bytes. Default: none (a cluster needs a secret).
    pub secret: String,
    /// A file holding the secret (its text up to trailing line breaks); wins over `secret`.
    /// Relative paths are relative to the working directory. Default: none.
    pub secret_file: Option<PathBuf>,
    /// Milliseconds between heartbeats on an idle mesh link and between Raft heartbeats.
    /// Default: 250.
    pub heartbeat_ms: u64,
    /// Milliseconds without a frame from a peer before it is considered down. Default: 3000.
    pub down_after_ms: u64,
    /// Range of the randomised Raft election timeout, in milliseconds.
    /// Default: `{ min = 1000, max = 2000 }`.
    pub election_timeout_ms: ElectionTimeout,
    /// Which source the effective `secret` came from (set by loading, not read from the file).
    #[serde(skip)]
    pub secret_source: SecretSource,
}

/// A node to dial when joining: its ordinal and mesh address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// The node's ordinal (`cluster.node` in its own configuration).
    pub node: u64,
    /// The node's advertised mesh address.
    pub addr: SocketAddr,
}

/// The range a Raft election timeout is drawn from, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionTimeout {
    /// Shortest timeout; above `heartbeat_ms`, so a live leader is never voted out. Default: 1000.
    pub min: u64,
    /// Longest timeout; above `min`, so candidates rarely collide. Default: 2000.
    pub max: u64,
}

impl Default for ElectionTimeout {
    fn default() -> Self {
        Self {
            min: 1000,
            max: 2000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "tern".to_owned(),
            node: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 7403)),
            advertise: None,
            seeds: Vec::new(),
            replication_factor: 3,
            slots: 512,
            slot_log_max_lag: 100_000,
            snapshot_chunk_bytes: 1 << 20,
            secret: String::new(),
            secret_file: None,
            heartbeat_ms: 250,
            down_after_ms: 3000,
            election_timeout_ms: ElectionTimeout::default(),
            secret_source: SecretSource::Missing,
        }
    }
}

/// The secret is left out, so a configuration can be logged.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("replication_factor", &self.replication_factor)
            .field("slots", &self.slots)
            .field("slot_log_max_lag", &self.slot_log_max_lag)
            .field("snapshot_chunk_bytes", &self.snapshot_chunk_bytes)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("secret_file", &self.secret_file)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("down_after_ms", &self.down_after_ms)
            .field("election_timeout_ms", &self.election_timeout_ms)
            .field("secret_source", &self.secret_source)
            .finish()
    }
}

impl ClusterConfig {
    /// The address peers dial: `advertise`, or `listen` when it is not set.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Every problem with the `[cluster]` values, one line each (listener collisions with the
    /// node's other ports are checked with those, in `Config::validate`).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(
            (1..=64).contains(&self.name.len())
                && self
                    .name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)),
            format!(
                "cluster.name must be 1-64 letters, digits, '-', '_' or '.' (got {:?})",
                self.name
            ),
        );
        check(
            (1..=MAX_NODE_ORDINAL).contains(&self.node),
            format!(
                "cluster.node must be between 1 and {MAX_NODE_ORDINAL} (got {})",
                self.node
            ),
        );
        let advertised = self.advertised();
        check(
            !advertised.ip().is_unspecified(),
            format!(
                "cluster.advertise must be set to an address peers can dial: {advertised} is a \
                 wildcard address"
            ),
        );
        check(
            matches!(self.replication_factor, 1 | 3),
            format!(
                "cluster.replication_factor must be 1 or 3 (got {})",
                self.replication_factor
            ),
        );
        check(
            self.slot_log_max_lag >= 1,
            "cluster.slot_log_max_lag must be at least 1".to_owned(),
        );
        check(
            (1024..=15 << 20).contains(&self.snapshot_chunk_bytes),
            format!(
                "cluster.snapshot_chunk_bytes must be between 1024 and {} (got {})",
                15 << 20,
                self.snapshot_chunk_bytes
            ),
        );
        check(
            (MIN_SLOTS..=MAX_SLOTS).contains(&self.slots),
            format!(
                "cluster.slots must be between {MIN_SLOTS} and {MAX_SLOTS} (got {})",
                self.slots
            ),
        );
        check(
            (10..=60_000).contains(&self.heartbeat_ms),
            "cluster.heartbeat_ms must be between 10 and 60000".to_owned(),
        );
        check(
            self.down_after_ms >= 2 * self.heartbeat_ms,
            "cluster.down_after_ms must be at least twice cluster.heartbeat_ms".to_owned(),
        );
        let election = self.election_timeout_ms;
        check(
            election.min > self.heartbeat_ms,
            "cluster.election_timeout_ms.min must be above cluster.heartbeat_ms".to_owned(),
        );
        check(
            election.max > election.min,
            "cluster.election_timeout_ms.max must be above cluster.election_timeout_ms.min"
                .to_owned(),
        );
        problems.extend(self.seed_problems(advertised));
        problems.extend(self.secret_problem());
        problems
    }

    fn seed_problems(&self, advertised: SocketAddr) -> Vec<String> {
        let mut problems = Vec::new();
        let mut by_node: HashMap<u64, SocketAddr> = HashMap::new();
        let mut by_addr: HashMap<SocketAddr, u64> = HashMap::new();
        for seed in &self.seeds {
            let Seed { node, addr } = *seed;
            if !(1..=MAX_NODE_ORDINAL).contains(&node) {
                problems.push(format!(
                    "cluster.seeds: node {node} must be between 1 and {MAX_NODE_ORDINAL}"
                ));
            }
            if addr.ip().is_unspecified() || addr.port() == 0 {
                problems.push(format!(
                    "cluster.seeds: node {node} has {addr}, which cannot be dialled"
                ));
            }
            if let Some(first) = by_node.insert(node, addr) {
                problems.push(format!(
                    "cluster.seeds: node {node} is listed twice ({first} and {addr})"
                ));
            }
            if let Some(first) = by_addr.insert(addr, node)
                && first != node
            {
                problems.push(format!(
                    "cluster.seeds: nodes {first} and {node} have the same address {addr}"
                ));
            }
            if node == self.node && addr != advertised {
                problems.push(format!(
                    "cluster.seeds: this node ({node}) is listed with {addr}, but advertises \
                     {advertised}"
                ));
            }
            if node != self.node && addr == advertised {
                problems.push(format!(
                    "cluster.seeds: node {node} has this node's address {addr}"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn cluster(text: &str) -> ClusterConfig {
        let mut cluster: ClusterConfig = toml::from_str(text).expect("parses");
        cluster.resolve_secret(None);
        cluster
    }

    #[test]
    fn a_minimal_section_takes_the_documented_defaults() {
        let cluster = cluster(&format!("node = 1\nsecret = \"{SECRET}\"\n"));
        assert_eq!(cluster.validate(), Vec::<String>::new());
        assert_eq!(cluster.replication_factor, 3);
        assert_eq!(cluster.slots, 512);
        assert_eq!(cluster.heartbeat_ms, 250);
        assert_eq!(cluster.down_after_ms, 3000);
        assert_eq!(cluster.election_timeout_ms, ElectionTimeout::default());
        assert_eq!(cluster.advertised(), cluster.listen);
        assert_eq!(
            cluster.secret_source,
            SecretSource::Inline("cluster.secret")
        );
    }

    #[test]
    fn every_seed_problem_is_listed() {
        let cluster = cluster(&format!(
            r#"
            node = 2
            listen = "127.0.0.1:7413"
            secret = "{SECRET}"
            seeds = [
                {{ node = 1, addr = "127.0.0.1:7403" }},
                {{ node = 1, addr = "127.0.0.1:7423" }},
                {{ node = 3, addr = "127.0.0.1:7403" }},
                {{ node = 2, addr = "127.0.0.1:7433" }},
                {{ node = 4, addr = "127.0.0.1:7413" }},
                {{ node = 2000, addr = "0.0.0.0:7443" }},
            ]
            "#
        ));
        let problems = cluster.validate();
        for expected in [
            "node 1 is listed twice (127.0.0.1:7403 and 127.0.0.1:7423)",
            "nodes 1 and 3 have the same address 127.0.0.1:7403",
            "this node (2) is listed with 127.0.0.1:7433, but advertises 127.0.0.1:7413",
            "node 4 has this node's address 127.0.0.1:7413",
            "node 2000 must be between 1 and 1023",
            "node 2000 has 0.0.0.0:7443, which cannot be dialled",
        ] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{expected:?} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn this_node_may_be_a_seed_with_its_advertised_address() {
        let cluster = cluster(&format!(
            "node = 1\nlisten = \"0.0.0.0:7403\"\nadvertise = \"10.0.0.1:7403\"\n\
             secret = \"{SECRET}\"\n\
             seeds = [{{ node = 1, addr = \"10.0.0.1:7403\" }}, {{ node = 2, addr = \"10.0.0.2:7403\" }}]\n"
        ));
        assert_eq!(cluster.validate(), Vec::<String>::new());
    }

    #[test]
    fn shape_and_timing_problems_are_listed_together() {
        let cluster = cluster(
            "node = 0\nname = \"a b\"\nlisten = \"0.0.0.0:7403\"\nreplication_factor = 2\n\
             slots = 8\nheartbeat_ms = 500\ndown_after_ms = 600\n\
             election_timeout_ms = { min = 400, max = 400 }\n",
        );
        let problems = cluster.validate();
        for expected in [
            "cluster.name",
            "cluster.node must be between 1 and 1023 (got 0)",
            "cluster.advertise",
            "cluster.replication_factor must be 1 or 3 (got 2)",
            "cluster.slots must be between 16 and 65536 (got 8)",
            "cluster.down_after_ms",
            "cluster.election_timeout_ms.min",
            "cluster.election_timeout_ms.max",
            "no cluster secret",
        ] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{expected:?} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 9, "{problems:#?}");
    }

    #[test]
    fn the_secret_comes_from_the_environment_then_the_file_then_the_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cluster.secret");
        std::fs::write(&file, format!("{SECRET}-file\n")).expect("write");
        let text = format!(
            "node = 1\nsecret = \"{SECRET}-inline\"\nsecret_file = {:?}\n",
            file.display().to_string()
        );
        let mut parsed: ClusterConfig = toml::from_str(&text).expect("parses");
        parsed.resolve_secret(Some(format!("{SECRET}-env").into()));
        assert_eq!(parsed.secret, format!("{SECRET}-env"));
        assert_eq!(
            parsed.secret_source,
            SecretSource::Environment(CLUSTER_SECRET_ENV)
        );

        let mut parsed: ClusterConfig = toml::from_str(&text).expect("parses");
        parsed.resolve_secret(None);
        assert_eq!(parsed.secret, format!("{SECRET}-file"));
        assert_eq!(
            parsed.secret_source,
            SecretSource::File {
                field: "cluster.secret_file",
                path: file.clone()
            }
        );

        std::fs::write(&file, "short\n").expect("write");
        let mut parsed: ClusterConfig = toml::from_str(&text).expect("parses");
        parsed.resolve_secret(None);
        let problems = parsed.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("at least 32 bytes"), "{problems:?}");

        let mut parsed = cluster(&format!("node = 1\nsecret = \"{SECRET}\"\n"));
        parsed.resolve_secret(Some("short".into()));
        assert_eq!(
            parsed.validate(),
            vec![format!("{CLUSTER_SECRET_ENV} must be at least 32 bytes")]
        );
    }

    #[test]
    fn debug_output_leaves_the_secret_out() {
        let cluster = cluster(&format!("node = 1\nsecret = \"{SECRET}\"\n"));
        let printed = format!("{cluster:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("<32 bytes>"), "{printed}");
    }
}
