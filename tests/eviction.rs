//! The mailbox cache budget: past it, huge mailboxes are evicted to the store first, small
//! ones stay in memory, and evicted entries are paged back in, in order, when read, also after
//! a SIGKILL restart.

mod common;

use common::*;
use tern::client::{Client, ClientReader, ClientWriter};
use tern::clock::now_secs;
use tern::token::TokenKey;

/// 1 MiB of cache over 32 workers (32 KiB each, about a hundred small entries); mailboxes of
/// more than 50 entries are huge; the sender's rate limit is lifted.
const SMALL_CACHE: [(&str, &str); 5] = [
    ("frames_per_sec = 200", "frames_per_sec = 100000"),
    ("frame_burst = 400", "frame_burst = 100000"),
    ("cache_bytes = 1073741824", "cache_bytes = 1048576"),
    ("huge_mailbox_entries = 1000", "huge_mailbox_entries = 50"),
    ("workers_per_shard = 2", "workers_per_shard = 1"),
];

const HUGE: usize = 600;

async fn login(node: &ChildNode, key: &TokenKey, user: &str) -> (ClientReader, ClientWriter) {
    let token = key.sign(user, "d", now_secs() + 600).unwrap();
    let (client, _) = Client::login(node.client, &token, 0).await.unwrap();
    client.split()
}

/// Sends `count` messages to `to` with ids `{to}-{n}`, in windows of 64, waiting for every ack.
async fn send(reader: &mut ClientReader, writer: &mut ClientWriter, to: &str, count: usize) {
    let body = "x".repeat(100);
    for window in (0..count).collect::<Vec<_>>().chunks(64) {
        for n in window {
            writer
                .send_text(&format!("{to}-{n}"), to, &body)
                .await
                .unwrap();
        }
        for _ in window {
            next_ack(reader).await;
        }
    }
}

async fn metric(node: &ChildNode, series: &str) -> f64 {
    metric_value(&http_get(node.admin, "/metrics").await, series).unwrap_or(0.0)
}

/// Drains `user`'s mailbox and checks it holds exactly ids `{user}-0..count` at seqs 1..=count.
async fn drain_exactly(node: &ChildNode, key: &TokenKey, user: &str, count: usize) {
    let (mut reader, mut writer) = login(node, key, user).await;
    let delivered = drain_acking(&mut reader, &mut writer).await;
    let expected: Vec<(u64, String)> = (0..count)
        .map(|n| (n as u64 + 1, format!("{user}-{n}")))
        .collect();
    let first_wrong = delivered
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want);
    assert!(
        delivered.len() == count && first_wrong.is_none(),
        "{user}: {} of {count} delivered, first wrong at index {first_wrong:?}",
        delivered.len()
    );
}

/// Entries served from the store.
const FROM_STORE: &str = "tern_mailbox_read_entries_total{source=\"store\"}";

async fn an_eviction(node: &ChildNode) {
    eventually("an eviction", async || {
        metric(node, "tern_mailbox_evictions_total").await >= 1.0
    })
    .await;
}

/// The small mailboxes (5 entries each) were left in memory: reading them touches no store.
async fn small_mailboxes_stay_cached(node: &ChildNode, key: &TokenKey, small: &[String]) {
    for user in small {
        drain_exactly(node, key, user, 5).await;
    }
    assert_eq!(
        metric(node, FROM_STORE).await,
        0.0,
        "small mailboxes were evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_mailbox_is_evicted_first_and_paged_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &SMALL_CACHE);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let node = ChildNode::start(&config_path, &dir.path().join("data"));
    let (mut reader, mut writer) = login(&node, &key, "alice").await;
    next_matching(&mut reader, |f| {
        matches!(f, tern::proto::v1::server_frame::Frame::QueueDrained(_)).then_some(())
    })
    .await;

    // Small mailboxes first, then one huge one that overflows its worker's budget.
    let small: Vec<String> = (0..20).map(|n| format!("carol{n}")).collect();
    for user in &small {
        send(&mut reader, &mut writer, user, 5).await;
    }
    send(&mut reader, &mut writer, "bob", HUGE).await;
    an_eviction(&node).await;
    assert!(metric(&node, "tern_mailbox_cache_bytes").await <= 1_048_576.0);
    small_mailboxes_stay_cached(&node, &key, &small).await;
    assert_eq!(
        metric(&node, "tern_mailbox_read_entries_total{source=\"cache\"}").await,
        (small.len() * 5) as f64
    );

    // The huge one comes back from the store and the cache, in order, without a gap.
    drain_exactly(&node, &key, "bob", HUGE).await;
    assert!(
        metric(&node, FROM_STORE).await > 0.0,
        "bob was not paged in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_entries_survive_a_sigkill_and_are_paged_in_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &SMALL_CACHE);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let data = dir.path().join("data");
    let node = ChildNode::start(&config_path, &data);
    let (mut reader, mut writer) = login(&node, &key, "alice").await;
    send(&mut reader, &mut writer, "bob", HUGE).await;
    eventually("an eviction", async || {
        metric(&node, "tern_mailbox_evicted_entries_total").await >= 100.0
    })
    .await;
    send(&mut reader, &mut writer, "dave", 3).await;
    node.kill();

    // Recovery leaves the huge mailbox in the store and replays the rest from the journal.
    let node = ChildNode::start(&config_path, &data);
    drain_exactly(&node, &key, "dave", 3).await;
    drain_exactly(&node, &key, "bob", HUGE).await;
    assert!(metric(&node, FROM_STORE).await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_many_busy_groups_is_evicted_before_everyone_else() {
    use tern::proto::v1::{CreateGroup, group_request::Op, group_response};
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &SMALL_CACHE);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let node = ChildNode::start(&config_path, &dir.path().join("data"));
    let (mut reader, mut writer) = login(&node, &key, "alice").await;

    // Small 1:1 mailboxes, then bob in five busy groups (with no one else).
    let small: Vec<String> = (0..20).map(|n| format!("carol{n}")).collect();
    for user in &small {
        send(&mut reader, &mut writer, user, 5).await;
    }
    let body = "x".repeat(100);
    let mut posted = 0;
    for g in 0..5u64 {
        writer
            .group_request(
                g,
                Op::Create(CreateGroup {
                    subject: format!("busy {g}"),
                    members: vec!["bob".into()],
                }),
            )
            .await
            .unwrap();
        let group = next_matching(&mut reader, |f| match f {
            tern::proto::v1::server_frame::Frame::GroupResponse(r) if r.request_id == g => {
                match &r.result {
                    Some(group_response::Result::Info(info)) => Some(info.group_id.clone()),
                    _ => panic!("create refused: {r:?}"),
                }
            }
            _ => None,
        })
        .await;
        for n in 0..120 {
            writer
                .send_group_text(&format!("{group}-{n}"), &group, &body)
                .await
                .unwrap();
            next_ack(&mut reader).await;
            posted += 1;
        }
    }
    an_eviction(&node).await;
    small_mailboxes_stay_cached(&node, &key, &small).await;

    // bob gets every group entry (5 creations and the posts), paged back in order. The
    // fan-out may still be copying the last posts when bob logs in: they follow as pushes.
    let (mut bob_reader, mut bob_writer) = login(&node, &key, "bob").await;
    let mut seqs = Vec::new();
    while seqs.len() < posted + 5 {
        if let tern::proto::v1::server_frame::Frame::Deliver(d) = next(&mut bob_reader).await {
            seqs.push(d.seq);
            bob_writer.ack(d.seq).await.unwrap();
        }
    }
    assert_eq!(seqs.len(), posted + 5, "bob's entries");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "bob: out of order");
    assert!(
        metric(&node, FROM_STORE).await > 0.0,
        "bob was not paged in"
    );
}
