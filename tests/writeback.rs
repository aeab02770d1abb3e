//! Write-back: a message read and acked within `writeback_delay_secs` never reaches the store; one
//! left unread is written back, and after a restart it is served from the store.

mod common;

use std::net::SocketAddr;

use common::*;
use tern::client::{Client, ClientReader, ClientWriter};
use tern::clock::now_secs;
use tern::proto::v1::{deliver, server_frame::Frame};
use tern::token::TokenKey;

async fn metric(admin: SocketAddr, name: &str) -> f64 {
    metric_value(&http_get(admin, "/metrics").await, name).unwrap_or(0.0)
}

/// Logs in with `token` and waits until the queue is drained.
async fn drained_login(addr: SocketAddr, token: &str) -> (ClientReader, ClientWriter) {
    let (client, _) = Client::login(addr, token, 0).await.unwrap();
    let (mut reader, writer) = client.split();
    next_matching(&mut reader, |f| {
        matches!(f, Frame::QueueDrained(_)).then_some(())
    })
    .await;
    (reader, writer)
}

/// Waits for `count` ServerAcks, passing over other frames.
async fn server_acks(reader: &mut ClientReader, count: usize) {
    for _ in 0..count {
        next_matching(reader, |f| matches!(f, Frame::ServerAck(_)).then_some(())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unread_messages_reach_the_store_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &[FAST_WRITEBACK[0], FAST_WRITEBACK[1]]);
    assert_eq!(config.mailbox.writeback_delay_secs, 1);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let token = |user: &str| key.sign(user, "d", now_secs() + 600).unwrap();
    let data = dir.path().join("data");

    let node = ChildNode::start(&config_path, &data);
    let (carol, _) = Client::login(node.client, &token("carol"), 0)
        .await
        .unwrap();
    let (mut carol_reader, mut carol_writer) = carol.split();
    assert!(matches!(
        next(&mut carol_reader).await,
        Frame::QueueDrained(_)
    ));
    let (mut alice_reader, mut alice_writer) = drained_login(node.client, &token("alice")).await;

    // carol reads and acks at once; bob is offline and leaves his message unread.
    alice_writer
        .send_text("to-carol", "carol", "read at once")
        .await
        .unwrap();
    alice_writer
        .send_text("to-bob", "bob", "left unread")
        .await
        .unwrap();
    server_acks(&mut alice_reader, 2).await;
    let seq = next_matching(&mut carol_reader, |f| match f {
        Frame::Deliver(d) => Some(d.seq),
        _ => None,
    })
    .await;
    carol_writer.ack(seq).await.unwrap();

    // Wait for checkpoints that cover both messages (the delay is 1 s, passes every second).
    let admin = node.admin;
    eventually("three checkpoints", async || {
        metric(admin, "tern_checkpoints_total").await >= 3.0
    })
    .await;
    assert_eq!(
        metric(admin, "tern_mailbox_written_back_total").await,
        1.0,
        "exactly the unread message is written back"
    );

    // Crash and restart: bob's message comes back from the store.
    node.kill();
    let node = ChildNode::start(&config_path, &data);
    assert_eq!(metric(node.admin, "tern_recovery_store_entries").await, 1.0);
    let (bob, _) = Client::login(node.client, &token("bob"), 0).await.unwrap();
    let (mut bob_reader, _bob_writer) = bob.split();
    let Frame::Deliver(d) = next(&mut bob_reader).await else {
        panic!("expected bob's message");
    };
    let Some(deliver::Payload::Message(m)) = d.payload else {
        panic!("expected a chat message");
    };
    assert_eq!(
        (m.client_msg_id.as_str(), &m.body[..]),
        ("to-bob", &b"left unread"[..])
    );
    assert!(matches!(
        next(&mut bob_reader).await,
        Frame::QueueDrained(_)
    ));
    // carol's message was acked: nothing is redelivered to her.
    let (carol, welcome) = Client::login(node.client, &token("carol"), 0)
        .await
        .unwrap();
    assert_eq!(welcome.cursor, seq);
    let (mut carol_reader, _) = carol.split();
    assert!(matches!(
        next(&mut carol_reader).await,
        Frame::QueueDrained(_)
    ));
}

/// Three offline mailboxes on one mailbox worker, each left hundreds of messages of a kilobyte
/// (what a pass writes of any one of them within a second is more than one step takes): the
/// pass runs in steps with the worker's other jobs between them, and still writes every message
/// back before the journal is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_in_steps_writes_back_every_mailbox_of_its_worker() {
    use tern::shard::{key_hash, shard_of, worker_of};
    const EACH: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(
        dir.path(),
        &[
            FAST_WRITEBACK[0],
            FAST_WRITEBACK[1],
            ("frames_per_sec = 200", "frames_per_sec = 100000"),
            ("frame_burst = 400", "frame_burst = 100000"),
        ],
    );
    let workers = config.dispatch.workers_per_shard as usize;
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let token = |user: &str| key.sign(user, "d", now_secs() + 600).unwrap();
    let data = dir.path().join("data");
    // Three users whose mailboxes the same worker owns.
    let place = |user: &str| {
        let hash = key_hash(user.as_bytes());
        (shard_of(hash), worker_of(hash, workers))
    };
    let target = place("offline-0");
    let recipients: Vec<String> = (0..)
        .map(|n| format!("offline-{n}"))
        .filter(|user| place(user) == target)
        .take(3)
        .collect();

    let node = ChildNode::start(&config_path, &data);
    let (mut alice_reader, mut alice_writer) = drained_login(node.client, &token("alice")).await;
    for round in 0..EACH / 50 {
        for to in &recipients {
            for n in 0..50 {
                let id = format!("{to}-{}", round * 50 + n);
                alice_writer
                    .send_text(&id, to, &format!("message {id} {}", "x".repeat(1000)))
                    .await
                    .unwrap();
            }
        }
        server_acks(&mut alice_reader, 150).await;
    }
    let total = (EACH * recipients.len()) as f64;
    let admin = node.admin;
    eventually("every message written back", async || {
        metric(admin, "tern_mailbox_written_back_total").await >= total
    })
    .await;
    let released = metric(admin, "tern_checkpoints_total").await;
    eventually("two more checkpoints", async || {
        metric(admin, "tern_checkpoints_total").await >= released + 2.0
    })
    .await;
    assert_eq!(
        metric(admin, "tern_mailbox_written_back_total").await,
        total,
        "each message written back once"
    );
    assert!(
        metric(admin, "tern_mailbox_writeback_steps_total").await >= 1.0,
        "some pass took more than one step"
    );

    // Crash: every message comes back, from the store.
    node.kill();
    let node = ChildNode::start(&config_path, &data);
    assert_eq!(
        metric(node.admin, "tern_recovery_store_entries").await,
        total
    );
    for to in &recipients {
        let (phone, _) = Client::login(node.client, &token(to), 0).await.unwrap();
        let (mut reader, _writer) = phone.split();
        let mut ids = Vec::new();
        loop {
            match next(&mut reader).await {
                Frame::Deliver(d) => {
                    let Some(deliver::Payload::Message(m)) = d.payload else {
                        panic!("expected a chat message");
                    };
                    ids.push(m.client_msg_id);
                }
                Frame::QueueDrained(_) => break,
                _ => {}
            }
        }
        let expected: Vec<String> = (0..EACH).map(|n| format!("{to}-{n}")).collect();
        assert_eq!(ids, expected, "{to}'s messages, in order");
    }
}
