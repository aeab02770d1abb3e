//! Per-connection limits: rate limit and flood, idle and login timeouts, connection cap.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tern::client::{Client, text_frame};
use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, GoAwayReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_above_the_rate_limit_are_refused_and_nothing_acked_is_lost() {
    let server = TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10;
        c.limits.frame_burst = 20;
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    const N: usize = 25;
    for i in 0..N {
        alice.writer.queue(text_frame(
            &format!("r{i}"),
            "bob",
            format!("body {i}").as_bytes(),
        ));
    }
    alice.writer.flush().await.unwrap();

    let mut acked = HashMap::new();
    let mut refused = HashSet::new();
    while acked.len() + refused.len() < N {
        match next(&mut alice.reader).await {
            Frame::ServerAck(ack) => {
                assert!(!ack.duplicate);
                assert!(acked.insert(ack.client_msg_id.clone(), ack).is_none());
            }
            Frame::Error(error) => {
                assert_eq!(error.code(), ErrorCode::RateLimited, "{error:?}");
                assert!(
                    error.client_msg_id.starts_with('r'),
                    "RATE_LIMITED must name the refused message: {error:?}"
                );
                assert!(refused.insert(error.client_msg_id));
            }
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "25 frames at once must exceed a burst of 20"
    );
    assert!(!acked.is_empty());
    assert!(acked.keys().all(|id| !refused.contains(id)));

    // Everything acked is in bob's mailbox, once; nothing refused is.
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(last_seq, acked.len() as u64);
    let ids: HashSet<String> = delivered
        .iter()
        .map(|d| chat(d).client_msg_id.clone())
        .collect();
    assert_eq!(delivered.len(), acked.len());
    assert_eq!(ids, acked.keys().cloned().collect::<HashSet<_>>());
    for d in &delivered {
        assert_eq!(acked[&chat(d).client_msg_id].seq, d.seq);
    }

    // Retrying the refused ones later succeeds, and bob receives them live.
    let mut pending: Vec<String> = refused.into_iter().collect();
    pending.sort();
    let retried = pending.len();
    while let Some(id) = pending.pop() {
        let i: usize = id[1..].parse().unwrap();
        alice
            .writer
            .send_text(&id, "bob", &format!("body {i}"))
            .await
            .unwrap();
        match next(&mut alice.reader).await {
            Frame::ServerAck(ack) => {
                assert_eq!(ack.client_msg_id, id);
                assert!(!ack.duplicate, "a refused frame must not have been stored");
            }
            Frame::Error(error) if error.code() == ErrorCode::RateLimited => {
                pending.push(id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    for _ in 0..retried {
        next_deliver(&mut bob.reader).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_flooding_closes_the_connection_with_go_away_flood() {
    let server = TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10;
        c.limits.frame_burst = 20;
    })
    .await;
    let mut carol = server.ready("carol", "phone").await;
    let mut alice = server.ready("alice", "phone").await;
    for nonce in 0..200 {
        alice
            .writer
            .queue(tern::proto::v1::client_frame::Frame::Ping(
                tern::proto::v1::Ping { nonce },
            ));
    }
    // The server may close before reading everything; a failed write is fine.
    let _ = alice.writer.flush().await;
    let frames = until_closed(&mut alice.reader).await;
    match frames.last() {
        Some(Frame::GoAway(go_away)) => {
            assert_eq!(go_away.reason(), GoAwayReason::Flood);
            assert_eq!(go_away.reconnect_after_ms, 5_000);
        }
        _ => panic!("expected GoAway FLOOD before the close, got {frames:?}"),
    }
    // Others are not affected.
    let rest = sync(&mut carol.reader, &mut carol.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_gets_go_away_idle_and_is_closed() {
    let server = TestServer::start_with(|c| {
        c.limits.idle_timeout_secs = 1;
        c.limits.sweep_interval_ms = 100;
    })
    .await;
    let mut phone = server.ready("alice", "phone").await;
    assert_eq!(phone.welcome.idle_timeout_secs, 1);
    let frames = until_closed(&mut phone.reader).await;
    match frames.as_slice() {
        [Frame::GoAway(go_away)] => {
            assert_eq!(go_away.reason(), GoAwayReason::Idle);
            assert_eq!(go_away.reconnect_after_ms, 0);
        }
        other => panic!("expected GoAway IDLE then the close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_pings_well_within_the_idle_timeout_stays_open() {
    let server = TestServer::start_with(|c| {
        c.limits.idle_timeout_secs = 2;
        c.limits.sweep_interval_ms = 100;
    })
    .await;
    let mut phone = server.ready("alice", "phone").await;
    // docs/protocol.md: timeouts have whole-second resolution (may fire up to about a second
    // early); send Ping after half of idle_timeout_secs of silence. Ping every 500 ms for 4 s.
    for round in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        phone.writer.ping(round).await.unwrap();
        let mut before_pong = Vec::new();
        loop {
            let received = tokio::time::timeout(WAIT, phone.reader.recv())
                .await
                .expect("timed out waiting for Pong");
            match received {
                Ok(Some(tern::proto::v1::ServerFrame {
                    frame: Some(Frame::Pong(pong)),
                })) if pong.nonce == round => break,
                Ok(Some(frame)) => before_pong.push(frame),
                Ok(None) | Err(_) => panic!(
                    "connection closed after {round} pings sent 500 ms apart; frames before \
                     the close: {before_pong:?}"
                ),
            }
        }
        assert!(
            before_pong.is_empty(),
            "active connection got {before_pong:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_never_logs_in_times_out() {
    let server = TestServer::start_with(|c| {
        c.limits.login_timeout_secs = 1;
        c.limits.sweep_interval_ms = 100;
    })
    .await;
    let mut raw = server.connect().await;
    let frames = until_closed(&mut raw.reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => assert_eq!(error.code(), ErrorCode::Timeout),
        other => panic!("expected Error TIMEOUT then the close, got {other:?}"),
    }
    // A connection that logs in is not subject to the login timeout.
    let mut phone = server.ready("alice", "phone").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(frames.is_empty(), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 3).await;
    let mut phones = vec![
        server.ready("u1", "phone").await,
        server.ready("u2", "phone").await,
        server.ready("u3", "phone").await,
    ];
    let mut fourth = server.connect().await;
    let frames = until_closed(&mut fourth.reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => assert_eq!(error.code(), ErrorCode::TooManyConnections),
        other => panic!("expected Error TOO_MANY_CONNECTIONS then the close, got {other:?}"),
    }
    // The three are unaffected.
    for phone in &mut phones {
        let rest = sync(&mut phone.reader, &mut phone.writer).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
    // Once one leaves, a new connection gets in.
    drop(phones.pop());
    let token = server.token("u4", "phone");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Client::login(server.addr, &token, 0).await {
            Ok((_, welcome)) => {
                assert_eq!(welcome.user, "u4");
                break;
            }
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a slot never freed up: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_of_new_deliveries_are_never_rate_limited_and_refused_pings_get_no_pong() {
    let server = TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10;
        c.limits.frame_burst = 20;
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    for i in 1..=3 {
        alice
            .writer
            .send_text(&format!("m{i}"), "bob", "x")
            .await
            .unwrap();
        next_ack(&mut alice.reader).await;
    }
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(delivered.len(), 3);
    // Use up the bucket with pings in one write, then ack in the same write.
    for nonce in 0..25 {
        bob.writer.queue(tern::proto::v1::client_frame::Frame::Ping(
            tern::proto::v1::Ping { nonce },
        ));
    }
    bob.writer.queue(tern::proto::v1::client_frame::Frame::Ack(
        tern::proto::v1::DeviceAck { up_to_seq: 3 },
    ));
    bob.writer.flush().await.unwrap();
    let mut pongs = HashSet::new();
    let mut limited = 0;
    while pongs.len() + limited < 25 {
        match next(&mut bob.reader).await {
            Frame::Pong(pong) => assert!(pongs.insert(pong.nonce)),
            Frame::Error(error) => {
                assert_eq!(error.code(), ErrorCode::RateLimited, "{error:?}");
                assert!(error.client_msg_id.is_empty());
                limited += 1;
            }
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    assert!(limited > 0, "25 pings at once must exceed a burst of 20");
    assert_eq!(pongs.len() + limited, 25, "each refused ping gets no pong");
    // The ack got through although the bucket was empty: a new connection resumes after 3.
    drop(bob);
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, 3, "the DeviceAck was rate-limited");
    let (delivered, _) = drain(&mut bob.reader).await;
    assert!(delivered.is_empty(), "{delivered:?}");
}
