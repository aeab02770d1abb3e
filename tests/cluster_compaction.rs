//! Replicated slots release their log after write-back (three child-process nodes, replication
//! 3, write-back and checkpoints every second): once the stores hold what was sent, every node
//! purges every slot group's log up to it; a node killed with SIGKILL afterwards starts its
//! groups from the durable point its stores saved (the entries before it are gone from its log)
//! and, with more sent after, every acked message drains exactly once, in order.

mod common;

use std::collections::HashMap;

use common::cluster::{Member, SETTLE, all_led, login_at, start_cluster_with, view, views};
use common::*;
use tern::client::text_frame;
use tern::proto::v1::server_frame::Frame;

const RECIPIENTS: usize = 6;
const BURST: usize = 300;

/// Sends messages `from..from + BURST` as `sender` through `member`, to the recipients in turn;
/// returns the acks.
async fn send_acked(member: &Member, sender: &str, from: usize) -> Acked {
    let (mut reader, mut writer) = login_at(member, sender, "d").await.split();
    let mut recipients = HashMap::new();
    for n in from..from + BURST {
        let recipient = format!("r{}", n % RECIPIENTS);
        let id = format!("{sender}-{n}");
        writer.queue(text_frame(&id, &recipient, id.as_bytes()));
        recipients.insert(id, recipient);
    }
    writer.flush().await.expect("flush");
    let mut acked = Acked::new();
    while acked.len() < BURST {
        match next(&mut reader).await {
            Frame::ServerAck(ack) => {
                let recipient = recipients[&ack.client_msg_id].clone();
                acked.insert((recipient, ack.client_msg_id), ack.seq);
            }
            Frame::Error(error) => panic!("refused: {error:?}"),
            _ => {}
        }
    }
    acked
}

/// `field` of every slot group in `view`, by group (absent or null as 0).
fn per_group(view: &serde_json::Value, field: &str) -> HashMap<u64, u64> {
    view["slot_groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(|group| {
                    let value = match &group[field] {
                        // `applied` is `term-node-index`.
                        serde_json::Value::String(id) => id.rsplit('-').next()?.parse().ok()?,
                        value => value.as_u64().unwrap_or(0),
                    };
                    Some((group["group"].as_u64()?, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every group of `target` is at least at its index in `field` of every view.
fn all_reach(views: &[serde_json::Value], field: &str, target: &HashMap<u64, u64>) -> bool {
    views.iter().all(|view| {
        let at = per_group(view, field);
        target
            .iter()
            .all(|(group, index)| at.get(group).is_some_and(|at| at >= index))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_log_is_released_after_write_back_and_a_restart_resumes_from_the_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster_with(dir.path(), 3, 3, &FAST_WRITEBACK);
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    let mut acked = send_acked(&members[0], "early", 0).await;

    // What every group had applied anywhere once the burst was acked.
    let mut sent: HashMap<u64, u64> = HashMap::new();
    for view in views(&members, &[0, 1, 2]).await {
        for (group, applied) in per_group(&view, "applied") {
            let at = sent.entry(group).or_default();
            *at = (*at).max(applied);
        }
    }
    assert_eq!(sent.len(), 6, "six slot groups: {sent:?}");
    eventually_within(SETTLE, "every node purged every group's log", async || {
        all_reach(&views(&members, &[0, 1, 2]).await, "purged", &sent)
    })
    .await;
    for member in &members {
        let purges = metric_value(
            &http_get(member.admin(), "/metrics").await,
            "tern_slot_log_purges_total",
        );
        assert!(purges.is_some_and(|purges| purges > 0.0), "{purges:?}");
    }

    // The victim's log no longer has the entries before its durable point: its groups can
    // only start from what its stores saved.
    let victim = 1;
    members[victim].node.take().expect("running").kill();
    members[victim].node = Some(ChildNode::start(
        &members[victim].config,
        &members[victim].data,
    ));
    eventually_within(
        SETTLE,
        "the restarted node is back in every group",
        async || all_reach(&[view(members[victim].admin()).await], "durable", &sent),
    )
    .await;
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    acked.extend(send_acked(&members[victim], "late", BURST).await);

    for (index, (recipient, by_seq)) in by_recipient(&acked).iter().enumerate() {
        let (mut reader, mut writer) = login_at(&members[index % 3], recipient, "d").await.split();
        let delivered = drain_acking(&mut reader, &mut writer).await;
        check_drained(recipient, delivered, by_seq);
    }
}
