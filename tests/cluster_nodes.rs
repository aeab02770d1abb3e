//! Three real nodes (child processes) with `[cluster]` sections on loopback: they link over the
//! mesh, agree on one cluster map through the metadata Raft group and show it on `GET /cluster`;
//! a SIGKILLed metadata leader is replaced, marked down without moving a slot, and rejoins with
//! the same map when restarted on its data directory.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_one_map_and_survive_a_killed_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = start_three(dir.path());
    let active = [(1, "active"), (2, "active"), (3, "active")];
    let mut settled = Vec::new();
    eventually_within(SETTLE, "one map on all three nodes", async || {
        settled = views(&members, &[0, 1, 2]).await;
        agree(&settled, &active)
    })
    .await;
    let map = settled[0]["map"].clone();
    let slots = map["slots"].as_array().expect("slots");
    assert_eq!(slots.len(), 512, "the default slot count");
    let islands = map["islands"].as_array().expect("islands");
    assert_eq!(islands.len(), 1, "three nodes, replication 3: one island");
    assert_eq!(islands[0]["members"], serde_json::json!([1, 2, 3]));
    assert!(slots.iter().all(|slot| *slot == islands[0]["id"]));
    for view in &settled {
        let links = view["links"].as_array().expect("links");
        assert_eq!(links.len(), 2, "a link to each peer: {view}");
        assert!(links.iter().all(|link| link["up"] == true), "{view}");
    }
    // The same, as gauges on the leader's /metrics.
    let leader = settled[0]["leader"].as_u64().expect("leader");
    let leader_admin = members[usize::try_from(leader - 1).expect("index")].admin();
    let metrics = http_get(leader_admin, "/metrics").await;
    assert_eq!(metric_value(&metrics, "tern_cluster_is_leader"), Some(1.0));
    assert_eq!(
        metric_value(&metrics, "tern_cluster_leader"),
        Some(leader as f64)
    );
    assert_eq!(
        metric_value(&metrics, "tern_cluster_nodes{state=\"active\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&metrics, "tern_cluster_map_version"),
        map["version"].as_f64()
    );
    // Settled means settled: nothing keeps rewriting the map.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = view(members[0].admin()).await;
    assert_eq!(
        later["map"]["version"], map["version"],
        "the map kept changing"
    );

    // SIGKILL the metadata leader.
    let term = settled[0]["term"].as_u64().expect("term");
    let killed = usize::try_from(leader - 1).expect("index");
    members[killed].node.take().expect("running").kill();
    let survivors: Vec<usize> = (0..3).filter(|index| *index != killed).collect();
    let mut down: Vec<(u64, &str)> = active.to_vec();
    down[killed].1 = "down";
    let mut after = Vec::new();
    eventually_within(
        SETTLE,
        "a new leader that marks the old one down",
        async || {
            after = views(&members, &survivors).await;
            agree(&after, &down)
                && after[0]["term"].as_u64().is_some_and(|t| t > term)
                && after[0]["leader"].as_u64() != Some(leader)
        },
    )
    .await;
    assert_eq!(
        after[0]["map"]["slots"], map["slots"],
        "a node that is down keeps its place"
    );
    assert_eq!(after[0]["map"]["islands"], map["islands"]);

    // Restarted on its data directory, it rejoins with the same map and is active again.
    let restarted = &mut members[killed];
    restarted.node = Some(ChildNode::start(&restarted.config, &restarted.data));
    eventually_within(
        SETTLE,
        "the restarted node back with the same map",
        async || agree(&views(&members, &[0, 1, 2]).await, &active),
    )
    .await;
    let back = view(members[killed].admin()).await;
    assert_eq!(back["map"]["slots"], map["slots"]);
    assert_eq!(back["map"]["islands"], map["islands"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_section_has_no_cluster_view() {
    let files = ChildFiles::new(&[]);
    let node = files.start();
    let body = http_get(node.admin, "/cluster").await;
    assert!(body.contains("not part of a cluster"), "{body}");
}
