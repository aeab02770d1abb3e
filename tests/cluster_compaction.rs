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
use tern::proto::v1::ErrorCode;
use tern::proto::v1::server_frame::Frame;

const RECIPIENTS: usize = 6;
const BURST: usize = 300;

/// Sends messages `from..from + BURST` as `sender` through `member`, to the recipients in turn;
/// returns the acks.
async fn send_acked(member: &Member, sender: &str, from: usize) -> Acked {
    send_acked_n(member, sender, from, BURST).await
}

/// Sends messages `from..from + count` as `sender` through `member`, to the recipients in
/// turn, as a phone does: a message refused with "retry" (a slot group changing leaders refuses
/// for a moment, or loses what was in flight) is sent again, and so is everything unacked over
/// a new connection when one ends; returns the acks (a retry of an acked id is answered with
/// its original ack).
async fn send_acked_n(member: &Member, sender: &str, from: usize, count: usize) -> Acked {
    let recipients: HashMap<String, String> = (from..from + count)
        .map(|n| (format!("{sender}-{n}"), format!("r{}", n % RECIPIENTS)))
        .collect();
    let mut acked = Acked::new();
    while acked.len() < count {
        let (mut reader, mut writer) = login_at(member, sender, "d").await.split();
        for n in from..from + count {
            let id = format!("{sender}-{n}");
            if !acked.contains_key(&(recipients[&id].clone(), id.clone())) {
                writer.queue(text_frame(&id, &recipients[&id], id.as_bytes()));
            }
        }
        if writer.flush().await.is_err() {
            continue;
        }
        while acked.len() < count {
            let frame = tokio::time::timeout(WAIT, reader.recv_frame())
                .await
                .expect("timed out waiting for a frame");
            match frame {
                Ok(Frame::ServerAck(ack)) => {
                    let recipient = recipients[&ack.client_msg_id].clone();
                    acked.insert((recipient, ack.client_msg_id), ack.seq);
                }
                Ok(Frame::Error(error))
                    if matches!(
                        error.code(),
                        ErrorCode::Overloaded | ErrorCode::StorageFailure
                    ) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    let id = error.client_msg_id;
                    writer.queue(text_frame(&id, &recipients[&id], id.as_bytes()));
                    if writer.flush().await.is_err() {
                        break;
                    }
                }
                Ok(Frame::Error(error)) => panic!("refused: {error:?}"),
                Ok(_) => {}
                // The connection ended: log in again and send what is unacked.
                Err(_) => break,
            }
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
    let mut members = start_cluster_with(dir.path(), 3, 3, &FAST_WRITEBACK, "");
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

/// The summed value of `series` on `member` (0 when absent).
async fn metric_of(member: &Member, series: &str) -> f64 {
    metric_value(&http_get(member.admin(), "/metrics").await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_past_the_retained_log_comes_back_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A member more than 10 entries behind what the stores hold is left to a snapshot, which
    // comes in chunks of 1 KiB.
    let mut members = start_cluster_with(
        dir.path(),
        3,
        3,
        &FAST_WRITEBACK,
        "slot_log_max_lag = 10\nsnapshot_chunk_bytes = 1024\n",
    );
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    let victim = 2;
    // What the victim's log holds when it goes (give or take the entries of a leadership
    // change under way): a group purged well past it needs a snapshot.
    let logged = per_group(&view(members[victim].admin()).await, "logged");
    members[victim].node.take().expect("running").kill();
    eventually_within(SETTLE, "the other two lead every group", async || {
        all_led(&members).await
    })
    .await;

    // Many small rounds: many entries in every group a recipient's slot is in.
    let mut acked = Acked::new();
    for round in 0..40 {
        acked.extend(send_acked_n(&members[round % 2], "early", round * 12, 12).await);
    }
    eventually_within(
        SETTLE,
        "the survivors purged past what the member that is down holds",
        async || {
            views(&members, &[0, 1]).await.iter().all(|view| {
                per_group(view, "purged").iter().any(|(group, purged)| {
                    logged
                        .get(group)
                        .is_some_and(|logged| *purged > logged + 20)
                })
            })
        },
    )
    .await;

    members[victim].node = Some(ChildNode::start(
        &members[victim].config,
        &members[victim].data,
    ));
    eventually_within(
        SETTLE,
        "the returning member installed a snapshot",
        async || metric_of(&members[victim], "tern_slot_snapshots_installed_total").await > 0.0,
    )
    .await;
    eventually_within(SETTLE, "every slot group has a leader", async || {
        all_led(&members).await
    })
    .await;
    acked.extend(send_acked_n(&members[victim], "late", 0, BURST).await);

    // Without the node that never went down, the returning member and the other one serve
    // everything: half of the groups are led by the member that came back from a snapshot.
    members[0].node.take().expect("running").kill();
    eventually_within(
        SETTLE,
        "the returning member routes every group to a live leader",
        async || {
            let view = view(members[victim].admin()).await;
            let leaders = per_group(&view, "leader");
            all_led(&members).await
                && leaders.len() == 6
                && leaders.values().all(|leader| *leader == 2 || *leader == 3)
        },
    )
    .await;
    for (recipient, by_seq) in by_recipient(&acked) {
        let (mut reader, mut writer) = login_at(&members[victim], &recipient, "d").await.split();
        let delivered = drain_acking(&mut reader, &mut writer).await;
        check_drained(&recipient, delivered, &by_seq);
    }
}
