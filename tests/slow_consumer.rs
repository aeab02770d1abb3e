//! Slow consumers: a phone that neither reads nor acks is disconnected, and loses nothing.

mod common;
use common::*;

use std::collections::HashMap;

use tern::client::text_frame;
use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{GoAwayReason, ServerAck};

/// alice sends `n` messages with bodies of `size` bytes to `to` and waits for every ack.
async fn send_all(alice: &mut Phone, to: &str, n: u64, size: usize) -> HashMap<String, ServerAck> {
    for i in 1..=n {
        let mut body = format!("body {i} ").into_bytes();
        body.resize(size.max(body.len()), b'.');
        alice.writer.queue(text_frame(&format!("m{i}"), to, &body));
        if i % 50 == 0 {
            alice.writer.flush().await.unwrap();
        }
    }
    alice.writer.flush().await.unwrap();
    let mut acks = HashMap::new();
    for _ in 0..n {
        let ack = next_ack(&mut alice.reader).await;
        assert!(acks.insert(ack.client_msg_id.clone(), ack).is_none());
    }
    acks
}

/// Reads everything queued for the phone, acking each entry as it arrives, until QueueDrained;
/// checks the entries are exactly seq 1..=n with alice's bodies, in order.
async fn receive_all_acking(phone: &mut Phone, n: u64, acks: &HashMap<String, ServerAck>) {
    let mut expected = 1;
    loop {
        let frame = match tokio::time::timeout(WAIT, phone.reader.recv_frame())
            .await
            .expect("timed out waiting for the backlog")
        {
            Ok(frame) => frame,
            Err(error) => panic!(
                "connection ended ({error}) after {} of {n} entries, while reading and acking \
                 each one",
                expected - 1
            ),
        };
        match frame {
            Frame::Deliver(d) => {
                assert_eq!(d.seq, expected, "entries in order, none lost, none twice");
                let m = chat(&d);
                assert_eq!(m.client_msg_id, format!("m{expected}"));
                assert_eq!(m.server_id, acks[&m.client_msg_id].server_id);
                assert!(body(&d).starts_with(&format!("body {expected} ")));
                phone.writer.ack(d.seq).await.unwrap();
                expected += 1;
            }
            Frame::QueueDrained(q) => {
                assert_eq!(q.last_seq, n);
                break;
            }
            other => panic!(
                "unexpected frame after {} of {n} entries, while reading and acking each one: \
                 {other:?}",
                expected - 1
            ),
        }
    }
    assert_eq!(
        expected,
        n + 1,
        "QueueDrained before every entry was delivered"
    );
}

/// Checks what a cut slow consumer received before the close: a prefix of its mailbox and, if
/// anything else, a GoAway SLOW_CONSUMER as the last frame.
fn check_cut(frames: &[Frame]) {
    let mut expected = 1;
    for (i, frame) in frames.iter().enumerate() {
        match frame {
            Frame::QueueDrained(_) => {}
            Frame::Deliver(d) => {
                assert_eq!(d.seq, expected, "{frames:?}");
                expected += 1;
            }
            Frame::GoAway(go_away) => {
                assert_eq!(go_away.reason(), GoAwayReason::SlowConsumer);
                assert_eq!(i, frames.len() - 1, "GoAway must be the last frame");
            }
            other => panic!("unexpected frame before the slow-consumer close: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_that_never_acks_is_cut_and_gets_everything_after_reconnecting() {
    let server = TestServer::start_with(|c| {
        c.limits.delivery_window = 32;
        c.limits.slow_consumer_secs = 1;
        c.limits.sweep_interval_ms = 100;
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    // bob logs in (the Welcome is read) and then neither reads nor acks.
    let mut bob = server.phone("bob", "phone").await;
    const N: u64 = 200;
    let acks = send_all(&mut alice, "bob", N, 20).await;
    assert_eq!(acks.len(), N as usize, "every message acked to alice");

    // The server gives up on bob: its socket ends, possibly after some entries and a GoAway.
    let frames = until_closed(&mut bob.reader).await;
    let delivered = frames
        .iter()
        .filter(|f| matches!(f, Frame::Deliver(_)))
        .count();
    assert!(
        delivered <= 32,
        "no more than delivery_window unacked entries are sent, got {delivered}"
    );
    check_cut(&frames);
    drop(bob);

    // Nothing is lost: a new connection gets all 200, in order, acking as it goes.
    let mut bob = server.phone_at("bob", "phone", 0).await;
    assert_eq!(bob.welcome.cursor, 0);
    assert_eq!(bob.welcome.last_seq, N);
    receive_all_acking(&mut bob, N, &acks).await;
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_whose_socket_is_full_is_cut_and_loses_nothing() {
    // A large window, so the socket and the outbound buffer fill up before the window does.
    const N: u64 = 600;
    const SIZE: usize = 16_000;
    let server = TestServer::start_with(|c| {
        c.limits.delivery_window = 1024;
        c.limits.outbound_max_bytes = 256 * 1024;
        c.limits.slow_consumer_secs = 1;
        c.limits.sweep_interval_ms = 100;
        c.limits.frames_per_sec = 10_000;
        c.limits.frame_burst = 10_000;
        c.mailbox.fetch_batch = 8;
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.phone("bob", "phone").await;
    let acks = send_all(&mut alice, "bob", N, SIZE).await;
    assert_eq!(acks.len(), N as usize);
    // Give the server time to notice (a settle delay, not an assertion): bob still reads nothing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let frames = until_closed(&mut bob.reader).await;
    let delivered = frames
        .iter()
        .filter(|f| matches!(f, Frame::Deliver(_)))
        .count();
    assert!(
        (delivered as u64) < N,
        "bob was never cut: it received all {N} entries without reading"
    );
    check_cut(&frames);
    drop(bob);

    let mut bob = server.phone_at("bob", "phone", 0).await;
    receive_all_acking(&mut bob, N, &acks).await;
}
