//! Phones follow the cluster, over real TCP: a node's Welcome lists the client addresses of the
//! other nodes that are not down; when a phone's node is SIGKILLed, the client library logs it
//! in at another announced address; a node without `[cluster]` announces none.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use tern::client::{ClientError, Roaming, ServerList};
use tern::clock::now_secs;
use tern::proto::v1::Welcome;
use tern::token::TokenKey;

/// A token for (user, device) valid ten minutes.
fn token(key: &TokenKey, user: &str, device: &str) -> String {
    key.sign(user, device, now_secs() + 600).expect("token")
}

/// The Welcome's announced addresses, sorted.
fn announced(welcome: &Welcome) -> Vec<String> {
    let mut addrs = welcome.peer_addrs.clone();
    addrs.sort();
    addrs
}

fn sorted(mut addrs: Vec<String>) -> Vec<String> {
    addrs.sort();
    addrs
}

/// Quick retries: the test waits for the cluster, not for the backoff.
fn roaming(servers: &[String], token: String) -> Roaming {
    Roaming::new(ServerList::new(servers.iter().cloned()), token)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_attempt_timeout(WAIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_learns_the_other_nodes_and_moves_to_one_when_its_node_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Replication 1: each node owns a third of the users, so users owned by nodes 2 and 3 stay
    // served while node 1 is gone.
    let mut members = start_cluster(dir.path(), 3, 1);
    let active = [(1, "active"), (2, "active"), (3, "active")];
    let mut settled = Vec::new();
    eventually_within(SETTLE, "one map with three active nodes", async || {
        settled = views(&members, &[0, 1, 2]).await;
        agree(&settled, &active)
            && settled[0]["map"]["islands"]
                .as_array()
                .is_some_and(|islands| islands.len() == 3)
    })
    .await;
    let alice = user_owned_by(&settled[0], 2, "alice");
    let bob = user_owned_by(&settled[0], 3, "bob");
    let carol = user_owned_by(&settled[0], 2, "carol");
    let clients: Vec<String> = members.iter().map(|m| m.client().to_string()).collect();
    let key = &members[0].key.clone();

    // Logged in at node 1 only, the phone learns nodes 2 and 3 from the Welcome (node 1 refreshes
    // its list from the map it just showed; a login may come before the refresh ran).
    let mut phone = roaming(&clients[..1], token(key, &alice, "phone"));
    let mut connected = None;
    eventually_within(SETTLE, "a Welcome listing nodes 2 and 3", async || {
        let (client, welcome, addr) = phone.login(0).await.expect("login at node 1");
        let listed = announced(&welcome) == sorted(clients[1..].to_vec());
        connected = Some((client, welcome, addr));
        listed
    })
    .await;
    let (mut client, welcome, addr) = connected.expect("logged in");
    assert_eq!(addr, clients[0]);
    assert_eq!(welcome.node, "tern-1");
    assert_eq!(welcome.user, alice);
    let known = phone.servers().addrs().to_vec();
    assert_eq!(known[0], clients[0], "the given address first");
    assert_eq!(
        sorted(known[1..].to_vec()),
        sorted(clients[1..].to_vec()),
        "then the announced ones"
    );

    // SIGKILL node 1: the connection ends without a GoAway.
    members[0].node.take().expect("running").kill();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match client.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(ClientError::Io(_)) => return,
                Err(other) => panic!("unexpected end: {other}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection outlived its node");

    // The library moves to the next announced address and logs in there (alice's mailbox is on
    // node 2, which stays up).
    let (_client, welcome, addr) = tokio::time::timeout(WAIT, phone.reconnect(0, Duration::ZERO))
        .await
        .expect("reconnect timed out")
        .expect("reconnect");
    assert_eq!(addr, known[1], "the address after node 1's");
    let index = clients
        .iter()
        .position(|c| *c == addr)
        .expect("a node's address");
    assert_eq!(welcome.node, format!("tern-{}", index + 1));
    assert_eq!(welcome.user, alice);
    assert_eq!(welcome.device, "phone");

    // A phone given the dead node first fails over on the refused connect.
    let mut late = roaming(
        &[clients[0].clone(), clients[2].clone()],
        token(key, &bob, "phone"),
    );
    let (_late_client, welcome, addr) = tokio::time::timeout(WAIT, late.login(0))
        .await
        .expect("login timed out")
        .expect("login after a refused connect");
    assert_eq!(addr, clients[2]);
    assert_eq!(welcome.node, "tern-3");

    // Once the cluster marks node 1 down, it is no longer announced.
    let mut down = active.to_vec();
    down[0].1 = "down";
    eventually_within(SETTLE, "node 1 marked down", async || {
        agree(&views(&members, &[1, 2]).await, &down)
    })
    .await;
    let mut listed = Vec::new();
    eventually_within(SETTLE, "node 2 announcing node 3 only", async || {
        let mut check = roaming(&clients[1..2], token(key, &carol, "phone"));
        let (_client, welcome, _) = check.login(0).await.expect("login at node 2");
        listed = welcome.peer_addrs;
        listed == [clients[2].clone()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_section_announces_no_other_nodes() {
    let files = ChildFiles::new(&[]);
    let node = files.start();
    let mut phone = roaming(
        &[node.client.to_string()],
        token(&files.key, "alice", "phone"),
    );
    let (_client, welcome, addr) = phone.login(0).await.expect("login");
    assert_eq!(addr, node.client.to_string());
    assert!(welcome.peer_addrs.is_empty(), "{welcome:?}");
    assert_eq!(phone.servers().addrs(), [node.client.to_string()]);
}
