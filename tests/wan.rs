//! Two clusters in two datacenters linked by their gateways, as child processes on loopback:
//! a message to a user homed in the other datacenter is acked once it is durable in this
//! datacenter's queue, survives a SIGKILL of the gateway holding it and a far side that is down,
//! and reaches its recipient's mailbox exactly once and in order; receipts and typing cross too,
//! and a phone logging in away from home is sent home.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::cluster::free_port;
use common::groups::GroupPhone;
use common::{ChildNode, WAIT, child_config, http_get, metric_value, next, next_ack};
use tern::client::{Client, ClientError, ClientReader, ClientWriter, text_frame};
use tern::clock::now_secs;
use tern::proto::v1::{
    GoAwayReason, GroupRef, ReceiptKind, deliver, group_request::Op, group_response,
    server_frame::Frame,
};
use tern::token::TokenKey;

const WAN_SECRET: &str = "wan-secret-0123456789abcdef0123456789";

/// One datacenter: a one-node cluster whose node is its gateway.
struct Datacenter {
    config: PathBuf,
    data: PathBuf,
    client: SocketAddr,
    key: TokenKey,
    node: Option<ChildNode>,
}

impl Datacenter {
    fn start(&mut self) {
        self.node = Some(ChildNode::start(&self.config, &self.data));
    }

    fn kill(&mut self) {
        if let Some(node) = self.node.take() {
            node.kill();
        }
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let admin = self.node.as_ref().expect("running").admin;
        metric_value(&http_get(admin, "/metrics").await, series)
    }

    fn token(&self, user: &str) -> String {
        self.key.sign(user, "d", now_secs() + 600).expect("token")
    }

    /// Logs `user` in, retrying while the node cannot serve it yet (OVERLOADED while its
    /// cluster map settles), as a phone would.
    async fn phone(&self, user: &str) -> (ClientReader, ClientWriter) {
        for _ in 0..200 {
            match Client::login(self.client, &self.token(user), 0).await {
                Ok((client, _)) => return client.split(),
                Err(ClientError::LoginRefused(refusal)) if matches!(&refusal.frame, Some(Frame::Error(e)) if e.code() == tern::proto::v1::ErrorCode::Overloaded) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("login of {user}: {error}"),
            }
        }
        panic!("{user} could not log in");
    }
}

/// East (node 1) and west (node 2), alice homed east and bob west; neither started.
fn datacenters(dir: &Path) -> [Datacenter; 2] {
    let clients = [free_port(), free_port()];
    let gateways = [free_port(), free_port()];
    let list = format!(
        "[[wan.datacenters]]\nname = \"east\"\nclients = [\"127.0.0.1:{}\"]\n\
         gateways = [{{ node = 1, addr = \"127.0.0.1:{}\" }}]\n\
         [[wan.datacenters]]\nname = \"west\"\nclients = [\"127.0.0.1:{}\"]\n\
         gateways = [{{ node = 2, addr = \"127.0.0.1:{}\" }}]\n",
        clients[0], gateways[0], clients[1], gateways[1]
    );
    let dc = |index: usize, name: &str| {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).expect("dir");
        let client = format!("client_addr = \"127.0.0.1:{}\"", clients[index]);
        let (config, parsed) = child_config(
            &node_dir,
            &[("client_addr = \"127.0.0.1:0\"", client.as_str())],
        );
        let mut text = std::fs::read_to_string(&config).expect("config");
        let mesh = free_port();
        let node = index + 1;
        text.push_str(&format!(
            "\n[cluster]\nname = \"{name}\"\nnode = {node}\nlisten = \"127.0.0.1:{mesh}\"\n\
             seeds = [{{ node = {node}, addr = \"127.0.0.1:{mesh}\" }}]\nsecret = \"{}\"\n\
             replication_factor = 1\nslots = 16\nheartbeat_ms = 100\ndown_after_ms = 1500\n\
             election_timeout_ms = {{ min = 500, max = 1000 }}\n\
             \n[wan]\ndatacenter = \"{name}\"\nlisten = \"127.0.0.1:{}\"\nsecret = \"{WAN_SECRET}\"\n\
             heartbeat_ms = 100\ndown_after_ms = 1000\n\
             homes = {{ alice = \"east\", carol = \"east\", bob = \"west\" }}\n{list}",
            "s".repeat(40),
            gateways[index],
        ));
        std::fs::write(&config, text).expect("write config");
        Datacenter {
            config,
            data: node_dir.join("data"),
            client: format!("127.0.0.1:{}", clients[index])
                .parse()
                .expect("addr"),
            key: TokenKey::new(parsed.auth.token_key.as_bytes()),
            node: None,
        }
    };
    [dc(0, "east"), dc(1, "west")]
}

/// Sends `ids` from `writer` to `to`; every one must be acked as queued for the other
/// datacenter (seq 0).
async fn send_queued(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    to: &str,
    ids: &[String],
) {
    for id in ids {
        writer
            .send(text_frame(id, to, id.as_bytes()))
            .await
            .expect("send");
        let ack = next_ack(reader).await;
        assert_eq!(ack.client_msg_id, *id);
        assert!(ack.queued, "{ack:?}");
        assert_eq!(ack.seq, 0);
    }
}

/// Reads chat messages (acking them) until `count` arrived; their client_msg_ids in order.
async fn receive(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let frame = tokio::time::timeout(WAIT * 3, next(reader))
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} arrived: {ids:?}", ids.len()));
        if let Frame::Deliver(d) = frame
            && let Some(deliver::Payload::Message(m)) = d.payload
        {
            ids.push(m.client_msg_id);
            writer.ack(d.seq).await.expect("ack");
        }
    }
    ids
}

async fn eventually_metric(dc: &Datacenter, series: &str, value: f64) {
    common::eventually(&format!("{series} = {value}"), async || {
        dc.metric(series).await == Some(value)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_killed_gateway_and_cross_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [mut east, mut west] = datacenters(dir.path());
    east.start();

    // Every series the WAN alert rules watch is exported by a gateway from its start.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus/wan.yml"),
    )
    .expect("wan.yml");
    let metrics = http_get(east.node.as_ref().expect("running").admin, "/metrics").await;
    for expr in rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
    {
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if name.starts_with("tern_") {
                let series = format!("{name}{{datacenter=\"west\"}}");
                assert!(
                    metrics.contains(&series),
                    "{series} not exported:\n{metrics}"
                );
            }
        }
    }

    // West is down: alice's messages to bob wait in east's queue, acked.
    let ids: Vec<String> = (0..30).map(|i| format!("m-{i:03}")).collect();
    let (mut reader, mut writer) = east.phone("alice").await;
    send_queued(&mut reader, &mut writer, "bob", &ids).await;
    assert_eq!(
        east.metric("tern_wan_queue_records{datacenter=\"west\"}")
            .await,
        Some(30.0)
    );
    assert_eq!(
        east.metric("tern_wan_link_up{datacenter=\"west\"}").await,
        Some(0.0)
    );
    drop((reader, writer));

    // SIGKILL of the gateway holding them: the queue is on disk.
    east.kill();
    east.start();
    assert_eq!(
        east.metric("tern_wan_queue_records{datacenter=\"west\"}")
            .await,
        Some(30.0)
    );

    // West comes up: the link resumes, bob gets each message once, in order.
    west.start();
    let (mut bob_reader, mut bob_writer) = west.phone("bob").await;
    assert_eq!(receive(&mut bob_reader, &mut bob_writer, 30).await, ids);
    eventually_metric(&east, "tern_wan_queue_records{datacenter=\"west\"}", 0.0).await;
    assert_eq!(
        east.metric("tern_wan_link_up{datacenter=\"west\"}").await,
        Some(1.0)
    );
    assert_eq!(
        west.metric("tern_wan_received_total{datacenter=\"east\"}")
            .await,
        Some(30.0)
    );

    // The far side killed while more cross: resent after its restart, stored once.
    let (mut reader, mut writer) = east.phone("alice").await;
    west.kill();
    drop((bob_reader, bob_writer));
    let more: Vec<String> = (30..50).map(|i| format!("m-{i:03}")).collect();
    send_queued(&mut reader, &mut writer, "bob", &more).await;
    west.start();
    let (mut bob_reader, mut bob_writer) = west.phone("bob").await;
    let mut rest = receive(&mut bob_reader, &mut bob_writer, 20).await;
    // Nothing more than the twenty (a duplicate would follow them).
    let extra =
        tokio::time::timeout(std::time::Duration::from_secs(2), next(&mut bob_reader)).await;
    if let Ok(Frame::Deliver(d)) = &extra
        && let Some(deliver::Payload::Message(m)) = &d.payload
    {
        rest.push(m.client_msg_id.clone());
    }
    assert_eq!(rest, more);

    // Back the other way: bob's reply and his read receipt reach alice at east.
    bob_writer
        .send(text_frame("r-1", "alice", b"hello east"))
        .await
        .expect("send");
    assert!(next_ack(&mut bob_reader).await.queued);
    bob_writer
        .receipt("rc-1", "alice", ReceiptKind::Read, 50)
        .await
        .expect("receipt");
    assert!(next_ack(&mut bob_reader).await.queued);
    let mut got_reply = false;
    let mut got_receipt = false;
    while !(got_reply && got_receipt) {
        let frame = tokio::time::timeout(WAIT * 3, next(&mut reader))
            .await
            .expect("bob's reply and receipt");
        if let Frame::Deliver(d) = frame {
            match d.payload {
                Some(deliver::Payload::Message(m)) => {
                    assert_eq!(m.from_user, "bob");
                    assert_eq!(m.client_msg_id, "r-1");
                    got_reply = true;
                }
                Some(deliver::Payload::Receipt(r)) => {
                    assert_eq!((r.from_user.as_str(), r.up_to_seq), ("bob", 50));
                    got_receipt = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // East's queue lost with its disk (a gateway rebuilt from nothing): its new queue counts
    // from 1 again, and west does not take its records for ones it already has.
    drop((reader, writer));
    east.kill();
    std::fs::remove_dir_all(east.data.join("wan/out/west")).expect("queue dir");
    east.start();
    let (mut reader, mut writer) = east.phone("alice").await;
    let last: Vec<String> = (50..53).map(|i| format!("m-{i:03}")).collect();
    send_queued(&mut reader, &mut writer, "bob", &last).await;
    assert_eq!(receive(&mut bob_reader, &mut bob_writer, 3).await, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_away_from_home_is_sent_home_and_typing_and_presence_cross() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [mut east, mut west] = datacenters(dir.path());
    east.start();
    west.start();
    // Both serve their own users.
    drop(east.phone("alice").await);
    drop(west.phone("bob").await);

    // Bob (homed west) at east: sent to west's address at once.
    match Client::login(east.client, &east.token("bob"), 0).await {
        Err(ClientError::LoginRefused(refusal)) => match refusal.frame {
            Some(Frame::GoAway(go_away)) => {
                assert_eq!(go_away.reason(), GoAwayReason::Elsewhere);
                assert_eq!(go_away.alternate_addrs, vec![west.client.to_string()]);
                assert_eq!(go_away.reconnect_after_ms, 0);
            }
            other => panic!("expected GoAway, got {other:?}"),
        },
        Ok(_) => panic!("bob logged in away from home"),
        Err(error) => panic!("login: {error}"),
    }
    // The roaming client follows it.
    let mut roaming = tern::client::Roaming::new(
        tern::client::ServerList::new([east.client.to_string()]),
        east.token("bob"),
    );
    let (_client, welcome, addr) = roaming.login(0).await.expect("roams home");
    assert_eq!(addr, west.client.to_string());
    assert_eq!(welcome.user, "bob");
    drop(_client);

    // Typing crosses once the link is up (typing is never queued: retried until it shows).
    let (mut bob_reader, _bob_writer) = west.phone("bob").await;
    let (_alice_reader, mut alice_writer) = east.phone("alice").await;
    eventually_metric(&east, "tern_wan_link_up{datacenter=\"west\"}", 1.0).await;
    let typed = async {
        loop {
            alice_writer.typing("bob", true).await.expect("typing");
            if let Ok(Frame::Typing(notice)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), next(&mut bob_reader))
                    .await
            {
                return notice;
            }
        }
    };
    let notice = tokio::time::timeout(WAIT, typed)
        .await
        .expect("typing arrived");
    assert_eq!(notice.from_user, "alice");
    assert!(notice.typing);

    // Presence crosses: alice watches bob (online at west), then bob leaves.
    let (mut alice_reader, _) = (_alice_reader, ());
    let presence = async |reader: &mut ClientReader| loop {
        if let Frame::Presence(update) = next(reader).await {
            return update;
        }
    };
    alice_writer
        .subscribe_presence(&["bob"])
        .await
        .expect("subscribe");
    let update = tokio::time::timeout(WAIT, presence(&mut alice_reader))
        .await
        .expect("bob's presence");
    assert_eq!((update.user.as_str(), update.online), ("bob", true));
    drop((bob_reader, _bob_writer));
    let update = tokio::time::timeout(WAIT, presence(&mut alice_reader))
        .await
        .expect("bob went offline");
    assert_eq!((update.user.as_str(), update.online), ("bob", false));
    assert!(update.last_seen_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_span_datacenters_each_post_crossing_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [mut east, mut west] = datacenters(dir.path());
    east.start();
    west.start();
    drop(east.phone("alice").await);
    drop(west.phone("bob").await);
    let login = |dc: &Datacenter, user: &'static str| {
        let (addr, token) = (dc.client, dc.token(user));
        async move { Client::login(addr, &token, 0).await.expect("login").0 }
    };
    // Whatever a hash of its id would say, a group created east is served east.
    let mut alice = GroupPhone::new(login(&east, "alice").await).await;
    let group = alice.create(&["carol", "bob"]).await;
    assert!(group.ends_with("@east"), "{group}");
    let mut carol = GroupPhone::new(login(&east, "carol").await).await;

    // West is down while alice posts: its member's copies wait in east's queue.
    west.kill();
    let posts: Vec<String> = (0..5).map(|i| format!("p-{i}")).collect();
    for post in &posts {
        assert!(alice.post(&group, post).await.expect("posted") > 0);
    }
    let mut got = Vec::new();
    common::eventually("carol has the five posts", async || {
        got.extend(carol.received().await);
        got.iter().filter(|(_, id)| id.starts_with("p-")).count() == 5
    })
    .await;
    // One record per post batch for west, whatever its number of members there.
    let queued = east
        .metric("tern_wan_queue_records{datacenter=\"west\"}")
        .await
        .expect("queue gauge");
    assert!((1.0..=6.0).contains(&queued), "{queued}");

    // West back: bob gets the group's entries once each, in group order.
    west.start();
    let mut bob = GroupPhone::new(login(&west, "bob").await).await;
    let mut bob_got = Vec::new();
    common::eventually("bob has the five posts", async || {
        bob_got.extend(bob.received().await);
        bob_got
            .iter()
            .filter(|(_, id)| id.starts_with("p-"))
            .count()
            >= 5
    })
    .await;
    let seqs: Vec<u64> = bob_got.iter().map(|(seq, _)| *seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "in group order, once each: {bob_got:?}");
    let bob_posts: Vec<&String> = bob_got
        .iter()
        .map(|(_, id)| id)
        .filter(|id| id.starts_with("p-"))
        .collect();
    assert_eq!(bob_posts, posts.iter().collect::<Vec<_>>());

    // Bob posts from west: acked once queued (no group seq yet), stored east, fanned out.
    for i in 0..3 {
        assert_eq!(bob.post(&group, &format!("b-{i}")).await, Ok(0));
    }
    let mut carol_got = Vec::new();
    common::eventually("carol has bob's three posts", async || {
        carol_got.extend(carol.received().await);
        carol_got
            .iter()
            .filter(|(_, id)| id.starts_with("b-"))
            .count()
            == 3
    })
    .await;
    let bobs: Vec<&String> = carol_got
        .iter()
        .map(|(_, id)| id)
        .filter(|id| id.starts_with("b-"))
        .collect();
    assert_eq!(bobs, ["b-0", "b-1", "b-2"]);

    // Typing in the group crosses both ways (a notice: repeated until it shows).
    async fn typed(from: &mut GroupPhone, to: &mut GroupPhone, group: &str, who: &str) -> String {
        let typed = async {
            loop {
                from.writer.group_typing(group, true).await.expect("typing");
                let wait = std::time::Duration::from_millis(500);
                // Others' notices (alice's reach carol too) are not the one awaited.
                if let Ok(Frame::Typing(notice)) =
                    tokio::time::timeout(wait, next(&mut to.reader)).await
                    && notice.from_user == who
                {
                    return notice.group_id;
                }
            }
        };
        tokio::time::timeout(WAIT, typed)
            .await
            .expect("group typing")
    }
    assert_eq!(typed(&mut alice, &mut bob, &group, "alice").await, group);
    assert_eq!(typed(&mut bob, &mut carol, &group, "bob").await, group);

    // Requests to the group from west are carried there and answered at once.
    let response = bob
        .request(Op::Info(GroupRef {
            group_id: group.clone(),
            after: String::new(),
        }))
        .await;
    let Some(group_response::Result::Info(info)) = response.result else {
        panic!("info from west: {response:?}");
    };
    let members: Vec<&str> = info.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(members, ["alice", "bob", "carol"]);
    assert!(info.last_seq >= 8, "{info:?}");
    let response = bob
        .request(Op::Leave(GroupRef {
            group_id: group.clone(),
            after: String::new(),
        }))
        .await;
    assert_eq!(response.error, 0, "{response:?}");
    let response = alice
        .request(Op::Info(GroupRef {
            group_id: group.clone(),
            after: String::new(),
        }))
        .await;
    let Some(group_response::Result::Info(info)) = response.result else {
        panic!("info: {response:?}");
    };
    assert_eq!(info.members.len(), 2, "bob left: {info:?}");
}
