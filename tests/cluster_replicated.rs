//! Replicated slots (three child-process nodes, replication 3): the node leading the most slot
//! groups is killed with SIGKILL four times in a row while eight senders keep sending through
//! whichever nodes are up; afterwards every recipient drains its mailbox and every acked message
//! is there exactly once, at the seq its ack named, in seq order.

mod common;

use std::time::Duration;

use common::cluster::{
    SETTLE, Senders, all_led, check_every_acked, group_leader, led, login_at, start_cluster,
    start_cluster_with,
};
use common::groups::GroupPhone;
use common::*;
use tern::client::text_frame;
use tern::proto::v1::server_frame::Frame;

const SENDERS: usize = 8;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_four_kills_of_the_busiest_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(dir.path(), 3, 3);
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    let senders = Senders::start(&members, SENDERS);

    for round in 0..KILLS {
        // A different moment in every round (no timing is asserted).
        tokio::time::sleep(Duration::from_millis(1_500 + 400 * round as u64)).await;
        let mut busiest = (0, -1.0);
        for (index, member) in members.iter().enumerate() {
            let led = led(member).await;
            if led > busiest.1 {
                busiest = (index, led);
            }
        }
        let victim = busiest.0;
        senders.set(victim, None);
        members[victim].node.take().expect("running").kill();
        eventually_within(SETTLE, "the other two lead every group", async || {
            all_led(&members).await
        })
        .await;
        let node = ChildNode::start(&members[victim].config, &members[victim].data);
        senders.set(victim, Some(node.client));
        members[victim].node = Some(node);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = senders.stop().await;

    check_every_acked(&members, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_user_led_elsewhere_is_stored_in_the_order_it_was_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = start_cluster(dir.path(), 3, 3);
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    let view = common::cluster::view(members[0].admin()).await;
    let recipient = (0..1000)
        .map(|i| format!("far-{i}"))
        .find(|user| group_leader(&view, user).is_some_and(|leader| leader != 1))
        .expect("a user whose group node 2 or 3 leads");
    let (mut reader, mut writer) = login_at(&members[0], "near", "d").await.split();
    const BURST: usize = 300;
    for n in 0..BURST {
        let id = format!("near-{n}");
        writer.queue(text_frame(&id, &recipient, id.as_bytes()));
    }
    writer.flush().await.expect("flush");
    let mut acked = 0;
    while acked < BURST {
        match next(&mut reader).await {
            Frame::ServerAck(_) => acked += 1,
            Frame::Error(error) => panic!("refused: {error:?}"),
            _ => {}
        }
    }
    let (mut reader, mut writer) = login_at(&members[1], &recipient, "d").await.split();
    let delivered = drain_acking(&mut reader, &mut writer).await;
    let sent_order: Vec<String> = (0..BURST).map(|n| format!("near-{n}")).collect();
    let stored_order: Vec<String> = delivered.into_iter().map(|(_, id)| id).collect();
    assert_eq!(stored_order, sent_order, "stored out of the order sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_entries_a_killed_leader_had_not_fanned_out_reach_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No write-back pass in the test's time: only the new leader's hand-over fans out what the
    // killed one had not.
    let mut members = start_cluster_with(
        dir.path(),
        3,
        3,
        &[(
            "checkpoint_interval_secs = 5",
            "checkpoint_interval_secs = 3600",
        )],
        "",
    );
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    let mut alice = GroupPhone::new(login_at(&members[0], "alice", "phone").await).await;
    let group = alice.create(&["bob", "carol"]).await;
    let view = common::cluster::view(members[0].admin()).await;
    let leader = group_leader(&view, &group).expect("the group's slot has a leader") as usize;
    let victim = leader - 1;
    if victim == 0 {
        alice = GroupPhone::new(login_at(&members[1], "alice", "phone").await).await;
    }
    const POSTS: usize = 200;
    let ids: Vec<String> = (0..POSTS).map(|n| format!("g-{n}")).collect();
    for id in &ids {
        alice
            .writer
            .send_group_text(id, &group, "hello")
            .await
            .expect("send");
    }
    let mut acked = 0;
    while acked < POSTS {
        match next(&mut alice.reader).await {
            Frame::ServerAck(_) => acked += 1,
            Frame::Error(error) => panic!("refused: {error:?}"),
            _ => {}
        }
    }
    // At once: the leader has not fanned out the last posts yet, most likely.
    members[victim].node.take().expect("running").kill();
    let survivor = &members[(victim + 1) % 3];
    for user in ["bob", "carol"] {
        let mut phone = GroupPhone::new(login_at(survivor, user, "phone").await).await;
        let mut got = std::collections::BTreeSet::new();
        eventually_within(SETTLE, "every post reaches every member", async || {
            got.extend(phone.received().await.into_iter().map(|(_, id)| id));
            ids.iter().all(|id| got.contains(id))
        })
        .await;
    }
}
