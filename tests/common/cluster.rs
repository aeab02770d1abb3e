//! Three real nodes (child processes) with `[cluster]` sections on loopback, every node a seed,
//! and what their `GET /cluster` views say.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tern::token::TokenKey;

use super::{ChildNode, child_config, http_get};

/// How long a cluster may take to settle (elections, registration, the controller's ticks).
pub const SETTLE: Duration = Duration::from_secs(60);

/// A free loopback port (bound, then released) for a mesh listener the seeds must name.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// One node of the cluster: its files and, while it runs, its process.
pub struct Member {
    pub config: PathBuf,
    pub data: PathBuf,
    /// Signs tokens its phones log in with (the same key on every node).
    pub key: TokenKey,
    pub node: Option<ChildNode>,
}

impl Member {
    pub fn admin(&self) -> SocketAddr {
        self.node.as_ref().expect("running").admin
    }

    pub fn client(&self) -> SocketAddr {
        self.node.as_ref().expect("running").client
    }
}

/// Writes three configurations (the shipped file with ports 0, node ids `tern-1` to `tern-3`,
/// plus `[cluster]` with every node a seed at a free mesh port) under `dir` and starts the
/// three nodes.
pub fn start_three(dir: &Path) -> Vec<Member> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let seeds: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("    {{ node = {}, addr = \"127.0.0.1:{port}\" }},\n", i + 1))
        .collect();
    (1..=3)
        .map(|node| {
            let node_dir = dir.join(format!("node-{node}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let id = format!("id = \"tern-{node}\"");
            let (config, parsed) = child_config(&node_dir, &[("id = \"tern-1\"", id.as_str())]);
            let mut text = std::fs::read_to_string(&config).expect("config");
            text.push_str(&format!(
                "\n[cluster]\nname = \"test\"\nnode = {node}\nlisten = \"127.0.0.1:{}\"\n\
                 seeds = [\n{seeds}]\nsecret = \"{}\"\nheartbeat_ms = 100\n\
                 down_after_ms = 1500\nelection_timeout_ms = {{ min = 500, max = 1000 }}\n",
                ports[node - 1],
                "s".repeat(40),
            ));
            std::fs::write(&config, text).expect("write config");
            let data = node_dir.join("data");
            let child = ChildNode::start(&config, &data);
            Member {
                config,
                data,
                key: TokenKey::new(parsed.auth.token_key.as_bytes()),
                node: Some(child),
            }
        })
        .collect()
}

/// A node's `GET /cluster` (`Null` when it does not answer with JSON).
pub async fn view(admin: SocketAddr) -> Value {
    serde_json::from_str(&http_get(admin, "/cluster").await).unwrap_or(Value::Null)
}

/// The views of the members at the indexes `which`.
pub async fn views(members: &[Member], which: &[usize]) -> Vec<Value> {
    let mut views = Vec::new();
    for index in which {
        views.push(view(members[*index].admin()).await);
    }
    views
}

/// Every view names the same leader, term and map, with the nodes in the given states.
pub fn agree(views: &[Value], states: &[(u64, &str)]) -> bool {
    let first = &views[0];
    let same = views.iter().all(|view| {
        !view["leader"].is_null()
            && view["leader"] == first["leader"]
            && view["term"] == first["term"]
            && view["map"] == first["map"]
    });
    same && states.iter().all(|(node, state)| {
        first["map"]["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["id"] == *node && n["state"] == *state)
        })
    })
}
