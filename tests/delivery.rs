//! Sending and delivery: online, offline then login, and retry deduplication.

mod common;
use common::*;

use std::collections::HashMap;

use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{MessageKind, Send, client_frame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_message_is_acked_to_sender_and_delivered_to_recipient() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;

    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    let ack = next_ack(&mut alice.reader).await;
    assert_eq!(ack.client_msg_id, "m1");
    assert!(!ack.duplicate);
    assert_eq!(ack.seq, 1, "first entry of bob's mailbox");
    assert!(ack.server_id > 0);
    assert!(ack.timestamp_ms > 0);

    let d = next_deliver(&mut bob.reader).await;
    assert_eq!(d.seq, ack.seq);
    assert_eq!(d.timestamp_ms, ack.timestamp_ms);
    let m = chat(&d);
    assert_eq!(m.server_id, ack.server_id);
    assert_eq!(m.from_user, "alice");
    assert_eq!(m.from_device, "phone");
    assert_eq!(m.to_user, "bob");
    assert_eq!(m.client_msg_id, "m1");
    assert_eq!(m.kind(), MessageKind::Text);
    assert_eq!(&m.body[..], b"hello");

    // A binary body arrives byte for byte with its kind.
    let binary = vec![0u8, 0xff, 0x10, 0x80, 0x00];
    alice
        .writer
        .send(client_frame::Frame::Send(Send {
            client_msg_id: "m2".into(),
            to_user: "bob".into(),
            kind: MessageKind::Binary.into(),
            body: binary.clone().into(),
        }))
        .await
        .unwrap();
    let ack2 = next_ack(&mut alice.reader).await;
    assert_eq!(ack2.client_msg_id, "m2");
    assert_eq!(ack2.seq, 2);
    assert_ne!(ack2.server_id, ack.server_id);
    let d2 = next_deliver(&mut bob.reader).await;
    assert_eq!(d2.seq, 2);
    assert_eq!(chat(&d2).kind(), MessageKind::Binary);
    assert_eq!(&chat(&d2).body[..], &binary[..]);
    assert_eq!(chat(&d2).server_id, ack2.server_id);

    // Nothing else reached either side (alice in particular does not get her message back).
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(rest.is_empty(), "alice got extra frames: {rest:?}");
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "bob got extra frames: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_never_seen_user_wait_and_arrive_in_order_at_first_login() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    const N: u64 = 50;
    for i in 1..=N {
        alice.writer.queue(tern::client::text_frame(
            &format!("m{i}"),
            "bob",
            format!("body {i}").as_bytes(),
        ));
    }
    alice.writer.flush().await.unwrap();
    let mut acks = HashMap::new();
    for _ in 0..N {
        let ack = next_ack(&mut alice.reader).await;
        assert!(!ack.duplicate);
        assert!(acks.insert(ack.client_msg_id.clone(), ack).is_none());
    }
    for i in 1..=N {
        assert_eq!(acks[&format!("m{i}")].seq, i, "seqs follow send order");
    }

    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, 0);
    assert_eq!(bob.welcome.last_seq, N);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(last_seq, N);
    let seqs: Vec<u64> = delivered.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    for (i, d) in (1..=N).zip(&delivered) {
        assert_eq!(body(d), format!("body {i}"));
        let m = chat(d);
        assert_eq!(m.client_msg_id, format!("m{i}"));
        assert_eq!(m.from_user, "alice");
        assert_eq!(m.server_id, acks[&m.client_msg_id].server_id);
    }
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "bob got extra frames: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_the_same_client_msg_id_is_a_duplicate_and_stored_once() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    alice.writer.send_text("x", "bob", "once").await.unwrap();
    let first = next_ack(&mut alice.reader).await;
    assert!(!first.duplicate);
    alice.writer.send_text("x", "bob", "once").await.unwrap();
    let second = next_ack(&mut alice.reader).await;
    assert_eq!(second.client_msg_id, "x");
    assert!(second.duplicate, "retry must be acked as a duplicate");
    assert_eq!(second.seq, first.seq);
    assert_eq!(second.server_id, first.server_id);
    assert_eq!(second.timestamp_ms, first.timestamp_ms);

    // A different id is a new message.
    alice.writer.send_text("y", "bob", "twice").await.unwrap();
    let third = next_ack(&mut alice.reader).await;
    assert!(!third.duplicate);
    assert_eq!(third.seq, first.seq + 1);

    let mut bob = server.phone("bob", "phone").await;
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(last_seq, 2);
    let ids: Vec<&str> = delivered
        .iter()
        .map(|d| chat(d).client_msg_id.as_str())
        .collect();
    assert_eq!(ids, ["x", "y"], "x stored exactly once");
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "bob got extra frames: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_while_recipient_is_online_is_delivered_once() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    for _ in 0..3 {
        alice.writer.send_text("x", "bob", "hello").await.unwrap();
    }
    let acks = [
        next_ack(&mut alice.reader).await,
        next_ack(&mut alice.reader).await,
        next_ack(&mut alice.reader).await,
    ];
    assert_eq!(acks.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(
        acks.iter()
            .all(|a| a.seq == acks[0].seq && a.server_id == acks[0].server_id)
    );
    let d = next_deliver(&mut bob.reader).await;
    assert_eq!(chat(&d).client_msg_id, "x");
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(
        !rest.iter().any(|f| matches!(f, Frame::Deliver(_))),
        "retry delivered twice: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_msg_id_from_two_senders_is_two_messages() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut carol = server.ready("carol", "phone").await;
    alice
        .writer
        .send_text("same", "bob", "from alice")
        .await
        .unwrap();
    let a = next_ack(&mut alice.reader).await;
    carol
        .writer
        .send_text("same", "bob", "from carol")
        .await
        .unwrap();
    let c = next_ack(&mut carol.reader).await;
    assert!(!a.duplicate && !c.duplicate);
    assert_ne!(a.seq, c.seq);
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, _) = drain(&mut bob.reader).await;
    let from: Vec<&str> = delivered
        .iter()
        .map(|d| chat(d).from_user.as_str())
        .collect();
    assert_eq!(from, ["alice", "carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_max_size_messages_is_delivered_at_login() {
    // Shipped defaults: 16 KiB bodies, fetch_batch 128, outbound_max_bytes 1 MiB.
    let server = TestServer::start().await;
    let max_body = server.config.limits.max_body_bytes as usize;
    let mut alice = server.ready("alice", "phone").await;
    const N: u64 = 200;
    for i in 1..=N {
        let mut body = format!("body {i} ").into_bytes();
        body.resize(max_body, b'.');
        alice
            .writer
            .send(tern::client::text_frame(&format!("m{i}"), "bob", &body))
            .await
            .unwrap();
    }
    for _ in 0..N {
        next_ack(&mut alice.reader).await;
    }

    // bob reads promptly and acks every entry.
    let mut bob = server.connect().await;
    bob.writer
        .send(login_frame(1, &server.token("bob", "phone"), 0))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, bob.reader.recv_frame()).await {
        Ok(Ok(Frame::Welcome(_))) => {}
        other => panic!("expected Welcome before the backlog, got {other:?}"),
    }
    let mut expected = 1;
    loop {
        let frame = tokio::time::timeout(WAIT, bob.reader.recv_frame())
            .await
            .expect("timed out waiting for the backlog");
        match frame {
            Ok(Frame::Deliver(d)) => {
                assert_eq!(d.seq, expected);
                assert_eq!(chat(&d).body.len(), max_body);
                assert!(body(&d).starts_with(&format!("body {expected} ")));
                bob.writer.ack(d.seq).await.unwrap();
                expected += 1;
            }
            Ok(Frame::QueueDrained(q)) => {
                assert_eq!(q.last_seq, N);
                break;
            }
            Ok(other) => panic!("unexpected frame after {} entries: {other:?}", expected - 1),
            Err(error) => panic!(
                "connection ended ({error}) after {} of {N} entries although bob reads and \
                 acks every entry",
                expected - 1
            ),
        }
    }
    assert_eq!(expected, N + 1);
}
