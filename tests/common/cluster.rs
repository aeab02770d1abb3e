//! Clusters of child-process nodes on loopback (every node a seed) for the tests that need
//! several nodes, and what their `GET /cluster` views say.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tern::client::{Client, ClientError, ClientReader, ClientWriter, text_frame};
use tern::clock::now_secs;
use tern::config::Config;
use tern::proto::v1::{ErrorCode, server_frame::Frame};
use tern::token::TokenKey;

use super::{
    Acked, ChildNode, WAIT, book, child_config, drain, eventually_within, http_get, metric_value,
};

/// How long a cluster may take to settle (elections, registration, the controller's ticks).
pub const SETTLE: Duration = Duration::from_secs(60);

/// A free loopback port for a mesh listener the seeds must name: below Linux's ephemeral range
/// (32768 and up), so that the port-0 listeners of nodes started meanwhile by other tests
/// cannot take it between this check and the node's bind. Spread by process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    loop {
        let port = 20_000 + (base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000);
        let port = u16::try_from(port).expect("port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One node of a test cluster: its files and, while it runs, its process.
pub struct Member {
    pub config: PathBuf,
    pub data: PathBuf,
    pub key: TokenKey,
    pub node: Option<ChildNode>,
}

impl Member {
    /// Its admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.node.as_ref().expect("running").admin
    }

    /// Its phone listener.
    pub fn client(&self) -> SocketAddr {
        self.node.as_ref().expect("running").client
    }
}

/// Three nodes with replication 3 (one island), as [`start_cluster`] starts them.
pub fn start_three(dir: &Path) -> Vec<Member> {
    start_cluster(dir, 3, 3)
}

/// Writes `count` configurations (the shipped file with ports 0, node ids `tern-1`...,
/// plus `[cluster]` with every node a seed at a free mesh port and `replication`) under `dir`
/// and starts the nodes.
pub fn start_cluster(dir: &Path, count: usize, replication: u32) -> Vec<Member> {
    start_cluster_with(dir, count, replication, &[], "")
}

/// [`start_cluster`] with each (from, to) replacement also applied to the shipped file, and
/// `cluster_lines` added to every node's `[cluster]` section.
pub fn start_cluster_with(
    dir: &Path,
    count: usize,
    replication: u32,
    replacements: &[(&str, &str)],
    cluster_lines: &str,
) -> Vec<Member> {
    start_cluster_each(dir, count, replication, replacements, cluster_lines, |_| {
        String::new()
    })
}

/// [`start_cluster_with`] with `sections(node)` (whole TOML sections, such as `[tls]`) added
/// to node `node`'s file (1-based).
pub fn start_cluster_each(
    dir: &Path,
    count: usize,
    replication: u32,
    replacements: &[(&str, &str)],
    cluster_lines: &str,
    sections: impl Fn(usize) -> String,
) -> Vec<Member> {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let seeds: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("    {{ node = {}, addr = \"127.0.0.1:{port}\" }},\n", i + 1))
        .collect();
    (1..=count)
        .map(|node| {
            let node_dir = dir.join(format!("node-{node}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let id = format!("id = \"tern-{node}\"");
            let mut edits = vec![("id = \"tern-1\"", id.as_str())];
            edits.extend_from_slice(replacements);
            let (config, parsed): (PathBuf, Config) = child_config(&node_dir, &edits);
            let mut text = std::fs::read_to_string(&config).expect("config");
            text.push('\n');
            text.push_str(&sections(node));
            text.push_str(&format!(
                "\n[cluster]\nname = \"test\"\nnode = {node}\nlisten = \"127.0.0.1:{}\"\n\
                 seeds = [\n{seeds}]\nsecret = \"{}\"\nheartbeat_ms = 100\n\
                 down_after_ms = 1500\nelection_timeout_ms = {{ min = 500, max = 1000 }}\n\
                 replication_factor = {replication}\n{cluster_lines}",
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

/// A node's `GET /cluster`.
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

/// The node that owns `user`'s slot in the map of a `GET /cluster` view.
pub fn owner_in(view: &Value, user: &str) -> Option<u64> {
    let slots = view["map"]["slots"].as_array()?;
    let slot = tern::cluster::route::slot_of(user.as_bytes(), slots.len() as u32) as usize;
    let island = slots.get(slot)?;
    view["map"]["islands"]
        .as_array()?
        .iter()
        .find(|candidate| candidate["id"] == *island)?["members"]
        .as_array()?
        .first()?
        .as_u64()
}

/// The leader of `key`'s slot group in `view` (a `GET /cluster` with replicated slots).
pub fn group_leader(view: &Value, key: &str) -> Option<u64> {
    let slots = view["map"]["slots"].as_array()?;
    let slot = tern::cluster::route::slot_of(key.as_bytes(), slots.len() as u32);
    let island = slots.get(slot as usize)?.as_u64()?;
    let group = tern::cluster::leaders::slot_group(u32::try_from(island).ok()?, slot);
    view["slot_groups"]
        .as_array()?
        .iter()
        .find(|entry| entry["group"] == group)?["leader"]
        .as_u64()
}

/// A user name (`prefix-N`) whose slot node `owner` owns in `view`'s map.
pub fn user_owned_by(view: &Value, owner: u64, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|user| owner_in(view, user) == Some(owner))
        .expect("a user owned by the node")
}

/// Logs (user, device) in at `member`'s phone listener, retrying a login the cluster cannot
/// serve yet (the user's owner is restarting, or this node's map still says it is down: refused
/// with OVERLOADED), as a phone would.
pub async fn login_at(member: &Member, user: &str, device: &str) -> Client {
    let token = member
        .key
        .sign(user, device, now_secs() + 600)
        .expect("token");
    let mut attempts = 0;
    loop {
        attempts += 1;
        match tokio::time::timeout(WAIT, Client::login(member.client(), &token, 0))
            .await
            .expect("login timed out")
        {
            Ok((client, _)) => return client,
            Err(ClientError::LoginRefused(refusal)) if attempts < 100 => {
                assert!(
                    matches!(&refusal.frame, Some(Frame::Error(error)) if error.code() == ErrorCode::Overloaded),
                    "login refused: {refusal:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("login: {error}"),
        }
    }
}

/// [`login_at`], then reads up to QueueDrained: the halves and what was delivered before it.
pub async fn phone(
    member: &Member,
    user: &str,
    device: &str,
) -> (ClientReader, ClientWriter, Vec<tern::proto::v1::Deliver>) {
    let (mut reader, writer) = login_at(member, user, device).await.split();
    let (delivered, _) = drain(&mut reader).await;
    (reader, writer, delivered)
}

/// Three nodes with replication 1, settled; the directory that holds them goes with them.
pub async fn three_islands() -> (tempfile::TempDir, Vec<Member>, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = start_cluster(dir.path(), 3, 1);
    let map = settled(&members).await;
    (dir, members, map)
}

pub async fn settled(members: &[Member]) -> serde_json::Value {
    let active = [(1, "active"), (2, "active"), (3, "active")];
    let mut last = Vec::new();
    eventually_within(SETTLE, "one map with three islands", async || {
        last = Vec::new();
        for member in members {
            last.push(view(member.admin()).await);
        }
        agree(&last, &active)
            && last[0]["map"]["islands"]
                .as_array()
                .is_some_and(|islands| islands.len() == 3)
    })
    .await;
    last.swap_remove(0)
}

/// Slot groups of one island (`tern::cluster::leaders::GROUPS_PER_ISLAND`).
pub const ISLAND_GROUPS: f64 = 6.0;

/// Slot groups led by `member` (0 when it does not answer).
pub async fn led(member: &Member) -> f64 {
    let text = http_get(member.admin(), "/metrics").await;
    metric_value(&text, "tern_slot_groups_led").unwrap_or(0.0)
}

/// Every slot group of a one-island cluster is led by a member that is up.
pub async fn all_led(members: &[Member]) -> bool {
    let mut total = 0.0;
    for member in members.iter().filter(|member| member.node.is_some()) {
        total += led(member).await;
    }
    total >= ISLAND_GROUPS
}

/// Recipients of [`send`]: `r0` .. `r4`.
pub const SEND_RECIPIENTS: usize = 5;

/// The phone listeners of the nodes that are up.
pub type Up = Arc<Mutex<Vec<Option<SocketAddr>>>>;

/// Sends as sender `sender` (user `s{sender}`) to recipients `r0`..`r4` until `stop`, 16 in
/// flight, through node `sender % nodes` first and through the next node that is up whenever
/// its connection ends; returns what was acked.
pub async fn send(sender: usize, key: TokenKey, up: Up, stop: Arc<AtomicBool>) -> Acked {
    let token = key
        .sign(&format!("s{sender}"), "d", now_secs() + 600)
        .expect("token");
    let mut acked = Acked::new();
    let mut n = 0u64;
    let mut node = sender;
    while !stop.load(Ordering::Relaxed) {
        node += 1;
        let addr = {
            let up = up.lock().expect("lock");
            up[node % up.len()]
        };
        let Some(addr) = addr else {
            continue;
        };
        let Ok(Ok((client, _))) =
            tokio::time::timeout(Duration::from_secs(5), Client::login(addr, &token, 0)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut reader, mut writer) = client.split();
        let mut in_flight: HashMap<String, String> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            while in_flight.len() < 16 {
                n += 1;
                let recipient = format!("r{}", (sender as u64 + n) % SEND_RECIPIENTS as u64);
                let id = format!("s{sender}-{n}");
                writer.queue(text_frame(&id, &recipient, id.as_bytes()));
                in_flight.insert(id, recipient);
            }
            if writer.flush().await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
                // A refusal (a slot without a leader for a moment) is not acked, not counted.
                Ok(Ok(Some(frame))) => book(frame.frame, &mut in_flight, &mut acked),
                // Closed, failed or silent: on to another node; what was in flight is unacked.
                _ => break,
            }
        }
    }
    acked
}

/// Senders ([`send`]) running against a cluster's nodes, until [`Senders::stop`].
pub struct Senders {
    up: Up,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Acked>>,
}

impl Senders {
    /// Starts `count` senders over every node of `members` (all up).
    pub fn start(members: &[Member], count: usize) -> Senders {
        let key = members[0].key.clone();
        let up: Up = Arc::new(Mutex::new(
            members.iter().map(|member| Some(member.client())).collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|sender| tokio::spawn(send(sender, key.clone(), up.clone(), stop.clone())))
            .collect();
        Senders { up, stop, tasks }
    }

    /// The senders leave node `index` alone (`None`: it is down) or use it at `addr` again.
    pub fn set(&self, index: usize, addr: Option<SocketAddr>) {
        self.up.lock().expect("lock")[index] = addr;
    }

    /// Stops them and gathers what they were acked ([`super::stop_senders`]).
    pub async fn stop(self) -> Acked {
        super::stop_senders(&self.stop, self.tasks).await
    }
}

/// Every recipient of `acked` logs in at one of the running members (in turn) and drains its
/// mailbox: each acked message must be there exactly once, at the seq its ack named.
pub async fn check_every_acked(members: &[Member], acked: &Acked) {
    let running: Vec<&Member> = members
        .iter()
        .filter(|member| member.node.is_some())
        .collect();
    for (index, (recipient, by_seq)) in super::by_recipient(acked).iter().enumerate() {
        let member = running[index % running.len()];
        let (mut reader, mut writer) = login_at(member, recipient, "d").await.split();
        let delivered = super::drain_acking(&mut reader, &mut writer).await;
        super::check_drained(recipient, delivered, by_seq);
    }
}

/// Three nodes with replication 3 and write-back every second ([`super::FAST_WRITEBACK`]),
/// once every slot group has a leader.
pub async fn replicated_three(dir: &Path) -> Vec<Member> {
    let members = start_cluster_with(dir, 3, 3, &super::FAST_WRITEBACK, "");
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    members
}

/// [`replicated_three`] with `sections` (whole TOML sections) added to every node's file.
pub async fn replicated_three_with(dir: &Path, sections: &str) -> Vec<Member> {
    let members = start_cluster_each(dir, 3, 3, &super::FAST_WRITEBACK, "", |_| {
        sections.to_owned()
    });
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    members
}

/// The members of the cluster's one island in `view`.
pub fn island_of(view: &Value) -> Vec<u64> {
    view["map"]["islands"][0]["members"]
        .as_array()
        .map(|members| members.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// The state of `node` in `view`'s map.
pub fn state_of(view: &Value, node: u64) -> String {
    view["map"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|entry| entry["id"] == node))
        .and_then(|entry| entry["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}
