//! Ids a node mints carry its cluster ordinal: message server ids (and so group ids) in their
//! low bits; a node without `[cluster]` mints ids with ordinal 0, as before clusters.

mod common;

use common::*;
use tern::cluster::config::{ClusterConfig, Seed};
use tern::node::ids::server_id_ordinal;
use tern::proto::v1::{CreateGroup, group_request::Op, group_response, server_frame::Frame};

/// A `[cluster]` section for a cluster of node `node` alone (its own seed, so it founds the
/// cluster map and owns every slot).
fn cluster(node: u64) -> ClusterConfig {
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
        .parse()
        .unwrap();
    let mut cluster = ClusterConfig {
        node,
        listen,
        seeds: vec![Seed { node, addr: listen }],
        replication_factor: 1,
        secret: "test-cluster-secret-0123456789abcdef".to_owned(),
        ..ClusterConfig::default()
    };
    cluster.resolve_secret(None);
    cluster
}

/// Server ids of `count` messages alice sends bob, and the id of a group alice creates.
async fn minted(server: &TestServer, count: usize) -> (Vec<u64>, u64) {
    // A cluster node serves once its map places the slots (at once without one).
    eventually("the node serves logins", async || {
        let token = server.token("alice", "phone");
        tern::client::Client::login(server.addr, &token, 0)
            .await
            .is_ok()
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    let mut ids = Vec::new();
    for index in 0..count {
        alice
            .writer
            .send_text(&format!("m{index}"), "bob", "hi")
            .await
            .unwrap();
        ids.push(next_ack(&mut alice.reader).await.server_id);
    }
    alice
        .writer
        .group_request(
            1,
            Op::Create(CreateGroup {
                subject: "team".into(),
                members: vec!["bob".to_owned()],
            }),
        )
        .await
        .unwrap();
    let group = loop {
        if let Frame::GroupResponse(response) = next(&mut alice.reader).await {
            match response.result {
                Some(group_response::Result::Info(info)) => break info.group_id,
                other => panic!("create answered {other:?}"),
            }
        }
    };
    let hex = group.strip_prefix('g').expect("group ids are g + hex");
    (ids, u64::from_str_radix(hex, 16).expect("hex"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_stamps_its_ordinal_into_server_and_group_ids() {
    let server = TestServer::start_with(|config| config.cluster = Some(cluster(5))).await;
    let (ids, group) = minted(&server, 20).await;
    assert!(ids.iter().all(|id| server_id_ordinal(*id) == 5), "{ids:x?}");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(server_id_ordinal(group), 5);
    assert!(ids.last().is_some_and(|last| *last < group));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_section_mints_ordinal_zero() {
    let server = TestServer::start().await;
    assert!(server.config.cluster.is_none());
    let (ids, group) = minted(&server, 5).await;
    assert!(ids.iter().all(|id| server_id_ordinal(*id) == 0), "{ids:x?}");
    assert_eq!(server_id_ordinal(group), 0);
}
