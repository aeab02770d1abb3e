//! Replacing a dead node (four child-process nodes, replication 3: one island and a spare):
//! an island member is killed with SIGKILL and stays dead; once it is down an operator removes
//! it (`POST /cluster/nodes/{id}/remove`); the spare takes its place in the island, every slot
//! group adds it as a learner, catches it up (from a snapshot: the logs were released after
//! write-back) and makes it a voter in place of the dead node. Then a second original member is
//! killed: the survivor and the newcomer are a majority of every group, and every message acked
//! at any time — before the newcomer joined too — drains exactly once, at its acked seq.

mod common;

use std::time::Duration;

use common::cluster::{
    SETTLE, Senders, all_led, check_every_acked, island_of, replicated_three, start_cluster_with,
    state_of, view,
};
use common::*;
use serde_json::Value;

const SENDERS: usize = 6;

/// Every slot group in `view` has exactly `voters` as its voters, no learner and no joint
/// configuration.
fn groups_have(view: &Value, voters: &[u64]) -> bool {
    let mut voters = voters.to_vec();
    voters.sort_unstable();
    view["slot_groups"].as_array().is_some_and(|groups| {
        groups.len() == common::cluster::ISLAND_GROUPS as usize
            && groups.iter().all(|group| {
                group["voters"] == serde_json::json!(voters)
                    && group["learners"] == serde_json::json!([])
                    && group["joint"] == false
            })
    })
}

/// Four nodes with replication 3 (write-back every second, so the groups' logs are released and
/// a newcomer needs snapshots), once they settled: the members, the island's members, the spare.
async fn island_and_spare(dir: &std::path::Path) -> (Vec<common::cluster::Member>, Vec<u64>, u64) {
    let members = start_cluster_with(dir, 4, 3, &FAST_WRITEBACK, "");
    let mut island = Vec::new();
    eventually_within(SETTLE, "one island of three, every group led", async || {
        island = island_of(&view(members[0].admin()).await);
        island.len() == 3 && all_led(&members).await
    })
    .await;
    let spare = (1..=4)
        .find(|node| !island.contains(node))
        .expect("a spare");
    (members, island, spare)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_the_spare_and_nothing_acked_is_lost_when_another_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, island, spare) = island_and_spare(dir.path()).await;
    let index = |node: u64| (node - 1) as usize;

    let senders = Senders::start(&members, SENDERS);
    // Long enough for write-back passes to release the logs' beginnings.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The island's second member dies for good.
    let dead = island[1];
    senders.set(index(dead), None);
    members[index(dead)].node.take().expect("running").kill();
    let asked = &members[index(island[0])];
    // Refused: without the admin token, a node that is not down, an unknown node, the node
    // asked itself.
    let path = format!("/cluster/nodes/{dead}/remove");
    let untokened = tern::admin::request::request(asked.admin(), "POST", &path, None).await;
    assert_eq!(untokened.expect("answers").0, 401);
    let wrong =
        tern::admin::request::request(asked.admin(), "POST", &path, Some("x".repeat(20).as_str()))
            .await;
    assert_eq!(wrong.expect("answers").0, 401);
    assert_eq!(
        admin_post(asked.admin(), &format!("/cluster/nodes/{spare}/remove"))
            .await
            .0,
        409
    );
    assert_eq!(
        admin_post(asked.admin(), "/cluster/nodes/99/remove")
            .await
            .0,
        404
    );
    let me = island[0];
    assert_eq!(
        admin_post(asked.admin(), &format!("/cluster/nodes/{me}/remove"))
            .await
            .0,
        409
    );
    eventually_within(SETTLE, "the dead node is marked down", async || {
        state_of(&view(asked.admin()).await, dead) == "down"
    })
    .await;
    let (status, body) = admin_post(asked.admin(), &format!("/cluster/nodes/{dead}/remove")).await;
    assert_eq!(status, 200, "{body}");

    // The spare takes the dead node's place; every group makes it a voter.
    let replaced: Vec<u64> = island
        .iter()
        .map(|node| if *node == dead { spare } else { *node })
        .collect();
    let newcomer = &members[index(spare)];
    eventually_within(
        SETTLE,
        "every group's voters are the new island",
        async || {
            let seen = view(newcomer.admin()).await;
            island_of(&seen) == replaced
                && state_of(&seen, dead) == "removed"
                && groups_have(&seen, &replaced)
                && seen["voters"]
                    .as_array()
                    .is_some_and(|voters| !voters.contains(&serde_json::json!(dead)))
        },
    )
    .await;
    let installed = metric_value(
        &http_get(newcomer.admin(), "/metrics").await,
        "tern_slot_snapshots_installed_total",
    )
    .unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "the newcomer caught up without a snapshot"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A second original member dies: the survivor and the newcomer lead every group.
    let second = island[0];
    senders.set(index(second), None);
    members[index(second)].node.take().expect("running").kill();
    eventually_within(
        SETTLE,
        "the survivor and the newcomer lead every group",
        async || all_led(&members).await,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = senders.stop().await;

    check_every_acked(&members, &acked).await;
}

/// A node whose island peers are both gone still stops on SIGTERM: its drain cannot mark it in
/// the map (no majority), and gives up at its deadline instead of waiting for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_node_of_an_island_still_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    for member in &mut members[..2] {
        member.node.take().expect("running").kill();
    }
    let last = members[2].node.take().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &last.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // wait_for_exit fails the test if the node is still running after a minute.
    let exit = wait_for_exit(last).await;
    assert!(exit.success(), "a SIGTERM shutdown exits 0, got {exit:?}");
}

/// A dead member removed before any spare is up: the island goes on with two, and the spare
/// that comes later still becomes a voter of every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_comes_after_the_removal_still_takes_the_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, island, spare) = island_and_spare(dir.path()).await;
    let index = |node: u64| (node - 1) as usize;
    // The spare is away; an island member dies and is removed.
    members[index(spare)].node.take().expect("running").kill();
    let dead = island[2];
    members[index(dead)].node.take().expect("running").kill();
    let asked = &members[index(island[0])];
    eventually_within(SETTLE, "the dead node is marked down", async || {
        state_of(&view(asked.admin()).await, dead) == "down"
    })
    .await;
    let (status, body) = admin_post(asked.admin(), &format!("/cluster/nodes/{dead}/remove")).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The spare comes back and takes the place.
    let member = &mut members[index(spare)];
    member.node = Some(ChildNode::start(&member.config, &member.data));
    let replaced: Vec<u64> = island
        .iter()
        .map(|node| if *node == dead { spare } else { *node })
        .collect();
    let asked = &members[index(island[0])];
    eventually_within(
        SETTLE,
        "every group's voters are the new island",
        async || {
            let seen = view(asked.admin()).await;
            island_of(&seen) == replaced && groups_have(&seen, &replaced)
        },
    )
    .await;
}
