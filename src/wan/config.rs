//! The optional `[wan]` section: which datacenter this cluster is, the other datacenters and
//! their gateways, the home directory's rule and overrides, and the gateway's own settings.
//!
//! Every node of every linked cluster carries the same `datacenters` list and `homes` (the
//! directory is this configuration: see [`super::directory`]); each cluster names its own
//! `datacenter`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{SecretSource, SecretSpec};

/// The environment variable that carries the WAN secret; it wins over both config fields.
pub const WAN_SECRET_ENV: &str = "TERN_WAN_SECRET";

/// Datacenters a WAN links at most (each one's gateways get mesh ids in its own block of 32).
pub const MAX_DATACENTERS: usize = 31;
/// Gateways per datacenter at most.
pub const MAX_GATEWAYS: usize = 32;

const WAN_SECRET: SecretSpec = SecretSpec {
    what: "WAN secret",
    noun: "secret",
    env: WAN_SECRET_ENV,
    file_field: "wan.secret_file",
    inline_field: "wan.secret",
    min_bytes: 32,
    missing_hint: " (at least 32 bytes, the same in every datacenter)",
};

/// The `[wan]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WanConfig {
    /// This cluster's datacenter: one of `datacenters`. No default.
    pub datacenter: String,
    /// Name of the linked clusters as a whole; a gateway refuses links from gateways of
    /// another one. Default: `"tern-wan"`.
    pub name: String,
    /// Address this node's gateway listens on for links from other datacenters' gateways (read
    /// only on a node listed as a gateway of its datacenter). Default: `127.0.0.1:7404`.
    pub listen: SocketAddr,
    /// The secret written here (after loading: the effective secret, whichever source won); it
    /// authenticates gateway links and is the same in every datacenter. At least 32 bytes.
    pub secret: String,
    /// A file holding the secret; wins over `secret`. Default: none.
    pub secret_file: Option<PathBuf>,
    /// Bytes the outbound queue to one datacenter may hold (in memory and on disk); past it,
    /// sends to that datacenter are refused with OVERLOADED until the link drains it. Default:
    /// 256 MiB.
    pub queue_max_bytes: u64,
    /// Records sent to the far gateway per delivery call. Default: 256.
    pub batch_records: usize,
    /// Delivery calls in flight on one link (each waits for its records to be stored at the
    /// far side). Default: 8.
    pub window: usize,
    /// Milliseconds between heartbeats on an idle gateway link. Default: 1000.
    pub heartbeat_ms: u64,
    /// Milliseconds without a frame before a gateway link is taken as down. Default: 5000.
    pub down_after_ms: u64,
    /// Every datacenter, this one included, in the same order on every node.
    pub datacenters: Vec<Datacenter>,
    /// Users whose home is not the one the rule gives them: user id -> datacenter name.
    pub homes: BTreeMap<String, String>,
    /// Which source the effective `secret` came from (set by loading).
    #[serde(skip)]
    pub secret_source: SecretSource,
}

/// One datacenter: its cluster's gateways, client addresses and phone-number prefixes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    /// Its name (1-16 letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The addresses phones connect to there: a phone homed there that connects elsewhere is
    /// sent to them.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Its gateways: the cluster ordinal of each and the address its gateway listens on, as
    /// the other datacenters reach it.
    pub gateways: Vec<Gateway>,
    /// User-id prefixes homed there (e.g. country codes of phone numbers, `"+49"`); the
    /// longest prefix of any datacenter wins. Default: none.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// One gateway of a datacenter.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Its ordinal in its datacenter's cluster (`cluster.node` there).
    pub node: u64,
    /// Where its gateway listens (`wan.listen` there, or the address that reaches it).
    pub addr: SocketAddr,
}

impl Default for WanConfig {
    fn default() -> Self {
        WanConfig {
            datacenter: String::new(),
            name: "tern-wan".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7404)),
            secret: String::new(),
            secret_file: None,
            queue_max_bytes: 256 << 20,
            batch_records: 256,
            window: 8,
            heartbeat_ms: 1000,
            down_after_ms: 5000,
            datacenters: Vec::new(),
            homes: BTreeMap::new(),
            secret_source: SecretSource::Missing,
        }
    }
}

impl std::fmt::Debug for WanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WanConfig")
            .field("datacenter", &self.datacenter)
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .field("secret_source", &self.secret_source)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("datacenters", &self.datacenters)
            .field("homes", &self.homes.len())
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

impl WanConfig {
    /// Replaces `secret` with the secret of the winning source and records that source.
    pub fn resolve_secret(&mut self, environment: Option<std::ffi::OsString>) {
        let (secret, source) =
            WAN_SECRET.resolve(environment, self.secret_file.as_deref(), &self.secret);
        self.secret = secret;
        self.secret_source = source;
    }

    /// The index of this cluster's datacenter in `datacenters`.
    pub fn local_index(&self) -> Option<usize> {
        self.datacenters
            .iter()
            .position(|dc| dc.name == self.datacenter)
    }

    /// The mesh id of gateway `position` of datacenter `index` on the gateways' own mesh.
    pub fn gateway_id(index: usize, position: usize) -> u64 {
        ((index as u64 + 1) << 5) | position as u64
    }

    /// Whether node `ordinal` of this cluster is one of its gateways, and its position.
    pub fn gateway_position(&self, ordinal: u64) -> Option<usize> {
        let index = self.local_index()?;
        self.datacenters[index]
            .gateways
            .iter()
            .position(|gateway| gateway.node == ordinal)
    }

    /// Every problem with the `[wan]` values, one line each (`cluster_node` is `cluster.node`,
    /// `None` without `[cluster]`).
    pub fn validate(&self, cluster_node: Option<u64>) -> Vec<String> {
        let mut problems = Vec::new();
        if cluster_node.is_none() {
            problems.push(
                "[wan] needs a [cluster] section (a one-node cluster is enough): the gateway \
                 is reached over the cluster's mesh"
                    .to_owned(),
            );
        }
        if !valid_name(&self.name) {
            problems.push(format!(
                "wan.name must be 1-64 letters, digits, '-', '_' or '.' (got {:?})",
                self.name
            ));
        }
        if self.datacenters.len() < 2 || self.datacenters.len() > MAX_DATACENTERS {
            problems.push(format!(
                "wan.datacenters must list between 2 and {MAX_DATACENTERS} datacenters (got {})",
                self.datacenters.len()
            ));
        }
        if self.local_index().is_none() {
            problems.push(format!(
                "wan.datacenter {:?} is not one of wan.datacenters",
                self.datacenter
            ));
        }
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        for dc in &self.datacenters {
            // Group ids carry their home's name (`g<id>@<name>`) within 64 bytes.
            if !valid_name(&dc.name) || dc.name.len() > 16 {
                problems.push(format!(
                    "wan.datacenters: name {:?} must be 1-16 letters, digits, '-', '_' or '.'",
                    dc.name
                ));
            }
            if !names.insert(dc.name.as_str()) {
                problems.push(format!("wan.datacenters: {} is listed twice", dc.name));
            }
            if dc.clients.is_empty() {
                problems.push(format!(
                    "wan.datacenters: {} lists no clients (its users' phones are sent there)",
                    dc.name
                ));
            }
            if dc.gateways.is_empty() || dc.gateways.len() > MAX_GATEWAYS {
                problems.push(format!(
                    "wan.datacenters: {} must have between 1 and {MAX_GATEWAYS} gateways",
                    dc.name
                ));
            }
            let mut nodes = HashSet::new();
            for gateway in &dc.gateways {
                if !nodes.insert(gateway.node) {
                    problems.push(format!(
                        "wan.datacenters: {} lists gateway node {} twice",
                        dc.name, gateway.node
                    ));
                }
                if gateway.addr.ip().is_unspecified() || gateway.addr.port() == 0 {
                    problems.push(format!(
                        "wan.datacenters: {} gateway {} has {}, which cannot be dialled",
                        dc.name, gateway.node, gateway.addr
                    ));
                }
            }
            for prefix in &dc.prefixes {
                if prefix.is_empty() || !prefixes.insert(prefix.as_str()) {
                    problems.push(format!(
                        "wan.datacenters: prefix {prefix:?} of {} is empty or listed twice",
                        dc.name
                    ));
                }
            }
        }
        for (user, home) in &self.homes {
            if !names.contains(home.as_str()) {
                problems.push(format!(
                    "wan.homes: {user:?} is homed in {home:?}, which is not a datacenter"
                ));
            }
        }
        if self.queue_max_bytes < 1 << 20 {
            problems.push("wan.queue_max_bytes must be at least 1 MiB".to_owned());
        }
        if !(1..=4096).contains(&self.batch_records) {
            problems.push("wan.batch_records must be between 1 and 4096".to_owned());
        }
        if !(1..=64).contains(&self.window) {
            problems.push("wan.window must be between 1 and 64".to_owned());
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) || self.down_after_ms < 2 * self.heartbeat_ms
        {
            problems.push(
                "wan.heartbeat_ms must be 10-60000 and wan.down_after_ms at least twice it"
                    .to_owned(),
            );
        }
        problems.extend(WAN_SECRET.problem(&self.secret, &self.secret_source));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        datacenter = "east"
        secret = "0123456789abcdef0123456789abcdef"
        homes = { alice = "west" }
        [[datacenters]]
        name = "east"
        clients = ["127.0.0.1:7400"]
        gateways = [{ node = 1, addr = "127.0.0.1:7404" }]
        [[datacenters]]
        name = "west"
        clients = ["127.0.0.2:7400"]
        gateways = [{ node = 4, addr = "127.0.0.2:7404" }]
        prefixes = ["+1"]
    "#;

    fn parsed(text: &str) -> WanConfig {
        let mut wan: WanConfig = toml::from_str(text).expect("parses");
        wan.resolve_secret(None);
        wan
    }

    #[test]
    fn a_valid_section_has_no_problems_and_names_its_gateway() {
        let wan = parsed(TEXT);
        assert_eq!(wan.validate(Some(1)), Vec::<String>::new());
        assert_eq!(wan.local_index(), Some(0));
        assert_eq!(wan.gateway_position(1), Some(0));
        assert_eq!(wan.gateway_position(2), None);
        assert_eq!(WanConfig::gateway_id(0, 0), 32);
        assert_eq!(WanConfig::gateway_id(1, 3), 67);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = TEXT
            .replace("datacenter = \"east\"", "datacenter = \"north\"")
            .replace("alice = \"west\"", "alice = \"south\"")
            .replace("secret = \"0123456789abcdef0123456789abcdef\"", "");
        let problems = parsed(&text).validate(None);
        for expected in ["[cluster]", "north", "south", "WAN secret"] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }
}
