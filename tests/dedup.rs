//! Retries are stored once: whatever a device may still have unacked is covered by the
//! recipient's dedup table, for each device of the sender, and across a restart after the
//! journal records of the originals were released.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use tern::client::{Client, ClientReader, ClientWriter, text_frame};
use tern::clock::now_secs;
use tern::proto::v1::{ErrorCode, ServerAck, server_frame::Frame};

/// Sends every id of `ids` (to `to`) until each has its ServerAck, as a client's outbox does:
/// in order, at most `batch` at a time, again after RATE_LIMITED or OVERLOADED (after a second,
/// so the rate limit refills). Returns the acks by id.
async fn send_all(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    to: &str,
    ids: &[String],
    batch: usize,
) -> HashMap<String, ServerAck> {
    let mut acks = HashMap::new();
    let mut outbox: Vec<&String> = ids.iter().collect();
    while !outbox.is_empty() {
        let sent: Vec<&String> = outbox.iter().take(batch).copied().collect();
        for id in &sent {
            writer.queue(text_frame(id, to, id.as_bytes()));
        }
        writer.flush().await.expect("send");
        let mut waiting: HashSet<&str> = sent.iter().map(|id| id.as_str()).collect();
        let mut refused = HashSet::new();
        while !waiting.is_empty() {
            match next(reader).await {
                Frame::ServerAck(ack) => {
                    waiting.remove(ack.client_msg_id.as_str());
                    acks.insert(ack.client_msg_id.clone(), ack);
                }
                Frame::Error(error)
                    if matches!(error.code(), ErrorCode::RateLimited | ErrorCode::Overloaded) =>
                {
                    waiting.remove(error.client_msg_id.as_str());
                    refused.insert(error.client_msg_id);
                }
                Frame::Error(error) => panic!("unexpected error {error:?}"),
                Frame::GoAway(go_away) => panic!("unexpected GoAway {go_away:?}"),
                _ => {}
            }
        }
        outbox.retain(|id| !acks.contains_key(*id));
        if !refused.is_empty() {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    acks
}

/// Logs `user` in on a device that has never acked anything and reads its whole mailbox,
/// acking as it goes: (client_msg_id, seq, server_id) of every chat message, in order.
async fn mailbox_of(addr: SocketAddr, token: &str) -> Vec<(String, u64, u64)> {
    let (client, _) = tokio::time::timeout(WAIT, Client::login(addr, token, 0))
        .await
        .expect("login timed out")
        .expect("login");
    let (mut reader, mut writer) = client.split();
    let mut entries = Vec::new();
    loop {
        match next(&mut reader).await {
            Frame::Deliver(d) => {
                let message = chat(&d);
                entries.push((message.client_msg_id.clone(), d.seq, message.server_id));
                writer.ack(d.seq).await.expect("ack");
            }
            Frame::QueueDrained(_) => return entries,
            Frame::Presence(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame while draining: {other:?}"),
        }
    }
}

/// Checks that the mailbox holds each of `ids` exactly once, and that `acks` (the answers to
/// the last sends) name, for every id, the entry that was stored.
fn exactly_once(entries: &[(String, u64, u64)], ids: &[String], acks: &HashMap<String, ServerAck>) {
    let mut stored: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for (id, seq, server_id) in entries {
        stored
            .entry(id.as_str())
            .or_default()
            .push((*seq, *server_id));
    }
    let twice = stored.values().filter(|copies| copies.len() > 1).count();
    assert_eq!(
        (entries.len(), twice),
        (ids.len(), 0),
        "the recipient holds {} entries for {} distinct ids ({twice} stored more than once)",
        entries.len(),
        ids.len()
    );
    for id in ids {
        let copies = &stored[id.as_str()];
        let ack = &acks[id];
        assert_eq!(
            copies[0],
            (ack.seq, ack.server_id),
            "the retry of {id} was not answered with its original ack"
        );
    }
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_stored_before_a_flood_cut_are_not_stored_again_when_resent() {
    let server = TestServer::start().await;
    let ids = ids("flood", 2000);
    let mut alice = server.ready("alice", "phone").await;
    // 2,000 Sends in one write: some are stored, the rest are refused, then the node cuts the
    // connection for flooding, usually before the acks of what it stored are written.
    for id in &ids {
        alice.writer.queue(text_frame(id, "bob", id.as_bytes()));
    }
    alice.writer.flush().await.expect("send");
    let mut acked: HashMap<String, ServerAck> = HashMap::new();
    let mut reconnect_after_ms = 0;
    for frame in until_closed(&mut alice.reader).await {
        match frame {
            Frame::ServerAck(ack) => {
                acked.insert(ack.client_msg_id.clone(), ack);
            }
            Frame::GoAway(go_away) => reconnect_after_ms = go_away.reconnect_after_ms,
            _ => {}
        }
    }
    // A well-behaved client waits as long as the GoAway says before it comes back.
    tokio::time::sleep(std::time::Duration::from_millis(reconnect_after_ms.into())).await;
    // The client's outbox: every id without an ack, resent in order after reconnecting.
    let unacked: Vec<String> = ids
        .iter()
        .filter(|id| !acked.contains_key(*id))
        .cloned()
        .collect();
    let mut alice = server.phone("alice", "phone").await;
    let mut acks = send_all(&mut alice.reader, &mut alice.writer, "bob", &unacked, 150).await;
    acks.extend(acked);
    let entries = mailbox_of(server.addr, &server.token("bob", "phone")).await;
    exactly_once(&entries, &ids, &acks);
    server.stop().await;
}

/// A node whose rate limit does not slow the test down.
async fn unthrottled() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.frames_per_sec = 100_000;
        config.limits.frame_burst = 100_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_sends_resent_oldest_first_are_stored_once() {
    let server = unthrottled().await;
    let ids = ids("acked", 300);
    let mut alice = server.ready("alice", "phone").await;
    let first = send_all(&mut alice.reader, &mut alice.writer, "bob", &ids, 100).await;
    // The acks were lost (as far as the client knows): everything is sent again, oldest first.
    let retries = send_all(&mut alice.reader, &mut alice.writer, "bob", &ids, 100).await;
    for id in &ids {
        let (original, retry) = (&first[id], &retries[id]);
        assert!(retry.duplicate, "{id} was stored again");
        assert_eq!(
            (retry.seq, retry.server_id, retry.timestamp_ms),
            (original.seq, original.server_id, original.timestamp_ms)
        );
    }
    let entries = mailbox_of(server.addr, &server.token("bob", "phone")).await;
    exactly_once(&entries, &ids, &first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_of_a_sender_has_its_whole_window() {
    // Two devices of one user, each with as many sends as a device may have unacked: the
    // dedup key is the user's, but one device's sends never push out the other's.
    let server = unthrottled().await;
    let window = server.config.mailbox.dedup_window as usize;
    let phone_ids = ids("phone", window);
    let laptop_ids = ids("laptop", window);
    let mut phone = server.ready("alice", "phone").await;
    let mut laptop = server.phone("alice", "laptop").await;
    let first = send_all(&mut phone.reader, &mut phone.writer, "bob", &phone_ids, 256).await;
    let mut all = first.clone();
    all.extend(
        send_all(
            &mut laptop.reader,
            &mut laptop.writer,
            "bob",
            &laptop_ids,
            256,
        )
        .await,
    );
    let retries = send_all(&mut phone.reader, &mut phone.writer, "bob", &phone_ids, 256).await;
    let stored_again = phone_ids
        .iter()
        .filter(|id| !retries[*id].duplicate)
        .count();
    assert_eq!(stored_again, 0, "retries of the phone stored again");
    for id in &phone_ids {
        assert_eq!(retries[id].seq, first[id].seq);
    }
    let entries = mailbox_of(server.addr, &server.token("bob", "phone")).await;
    let every: Vec<String> = phone_ids.iter().chain(&laptop_ids).cloned().collect();
    exactly_once(&entries, &every, &all);
    server.stop().await;
}

/// The segment files (`*.wal`) of `data/journal-0`.
fn segments(data: &Path) -> HashSet<std::ffi::OsString> {
    std::fs::read_dir(data.join("journal-0"))
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
                .filter(|name| name.to_string_lossy().ends_with(".wal"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_a_restart_are_deduplicated_once_the_journal_is_released() {
    let files = ChildFiles::new(&[
        FAST_WRITEBACK[0],
        FAST_WRITEBACK[1],
        ("segment_bytes = 67108864", "segment_bytes = 4096"),
    ]);
    let token = |user: &str| files.key.sign(user, "d", now_secs() + 600).unwrap();
    let data = &files.data;
    let ids = ids("restart", 60);

    let node = files.start();
    let login = async |user: &str| {
        let (client, _) = Client::login(node.client, &token(user), 0).await.unwrap();
        let (mut reader, writer) = client.split();
        next_matching(&mut reader, |f| {
            matches!(f, Frame::QueueDrained(_)).then_some(())
        })
        .await;
        (reader, writer)
    };
    let (mut alice_reader, mut alice_writer) = login("alice").await;
    let first = send_all(&mut alice_reader, &mut alice_writer, "bob", &ids, 60).await;
    // bob reads and acks everything at once: nothing of it is ever written back.
    let entries = mailbox_of(node.client, &token("bob")).await;
    exactly_once(&entries, &ids, &first);

    // Traffic between others until every journal segment holding those records is released.
    let holding = segments(data);
    let (mut carol_reader, mut carol_writer) = login("carol").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for round in 0.. {
        if segments(data).is_disjoint(&holding) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal segments were never released"
        );
        let filler: Vec<String> = (0..20).map(|n| format!("filler-{round}-{n}")).collect();
        send_all(&mut carol_reader, &mut carol_writer, "dave", &filler, 20).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Twice: the second time from the table as the restarted node saved it again.
    let mut node = node;
    for restart in 1..=2 {
        node.kill();
        node = files.start();
        let (client, _) = Client::login(node.client, &token("alice"), 0)
            .await
            .unwrap();
        let (mut alice_reader, mut alice_writer) = client.split();
        let retries = send_all(&mut alice_reader, &mut alice_writer, "bob", &ids, 60).await;
        let stored_again = ids.iter().filter(|id| !retries[*id].duplicate).count();
        assert_eq!(
            stored_again, 0,
            "retries stored again after restart {restart}"
        );
        for id in &ids {
            let (original, retry) = (&first[id], &retries[id]);
            assert_eq!(
                (retry.seq, retry.server_id, retry.timestamp_ms),
                (original.seq, original.server_id, original.timestamp_ms)
            );
        }
        let admin = node.admin;
        eventually("two checkpoints after the restart", async || {
            metric_value(&http_get(admin, "/metrics").await, "tern_checkpoints_total")
                .unwrap_or(0.0)
                >= 2.0
        })
        .await;
    }
    // bob's device acked everything before the crash: nothing new is queued for it.
    let (client, welcome) = Client::login(node.client, &token("bob"), 0).await.unwrap();
    let (mut bob_reader, _) = client.split();
    let (delivered, _) = drain(&mut bob_reader).await;
    assert!(
        delivered.is_empty(),
        "bob got {} entries again after cursor {}",
        delivered.len(),
        welcome.cursor
    );
}
