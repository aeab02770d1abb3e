//! Bad input: every malformed or refused frame is answered precisely, closes only the offending
//! connection when the protocol says so, and never disturbs other sessions.

mod common;
use common::*;

use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, MessageKind, Send, client_frame};

/// carol and dave, online, exchange one message each way: proof the node still serves them.
async fn exchange(carol: &mut Phone, dave: &mut Phone, id: &str) {
    carol.writer.send_text(id, "dave", id).await.unwrap();
    let ack = next_ack(&mut carol.reader).await;
    assert_eq!(ack.client_msg_id, id);
    let d = next_deliver(&mut dave.reader).await;
    assert_eq!(d.seq, ack.seq);
    assert_eq!(body(&d), id);
    dave.writer.ack(d.seq).await.unwrap();
    dave.writer.send_text(id, "carol", id).await.unwrap();
    let ack = next_ack(&mut dave.reader).await;
    let d = next_deliver(&mut carol.reader).await;
    assert_eq!(d.seq, ack.seq);
    carol.writer.ack(d.seq).await.unwrap();
}

fn counter(text: &str, kind: &str) -> f64 {
    metric_value(text, &format!("tern_errors_total{{kind=\"{kind}\"}}")).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_the_offending_connection() {
    let server = TestServer::start().await;
    let before = server.metrics().await;
    let mut carol = server.ready("carol", "phone").await;
    let mut dave = server.ready("dave", "phone").await;
    exchange(&mut carol, &mut dave, "warm-up").await;

    // Undecodable payload after login.
    let mut alice = server.ready("alice", "phone").await;
    alice.writer.send_raw_frame(&[0xff; 10]).await.unwrap();
    closed_with_error(&mut alice.reader, ErrorCode::BadFrame).await;
    exchange(&mut carol, &mut dave, "after-garbage").await;

    // An empty envelope (no oneof case) as the first frame.
    let mut raw = server.connect().await;
    raw.writer.send_raw_frame(&[]).await.unwrap();
    closed_with_error(&mut raw.reader, ErrorCode::BadFrame).await;
    exchange(&mut carol, &mut dave, "after-empty").await;

    // A length prefix far above max_frame_bytes after login (nothing follows it).
    let mut alice = server.ready("alice", "phone").await;
    alice
        .writer
        .send_raw(&10_000_000u32.to_be_bytes())
        .await
        .unwrap();
    let error = closed_with_error(&mut alice.reader, ErrorCode::FrameTooLarge).await;
    assert!(!error.message.is_empty());
    exchange(&mut carol, &mut dave, "after-oversized").await;

    // One byte above the limit is already too large.
    let mut alice = server.ready("alice", "phone").await;
    let max = server.config.limits.max_frame_bytes;
    alice
        .writer
        .send_raw(&(max + 1).to_be_bytes())
        .await
        .unwrap();
    closed_with_error(&mut alice.reader, ErrorCode::FrameTooLarge).await;

    // The same before login.
    let mut raw = server.connect().await;
    raw.writer.send_raw_frame(&[0xff; 10]).await.unwrap();
    closed_with_error(&mut raw.reader, ErrorCode::BadFrame).await;
    let mut raw = server.connect().await;
    raw.writer.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    closed_with_error(&mut raw.reader, ErrorCode::FrameTooLarge).await;
    exchange(&mut carol, &mut dave, "after-pre-login").await;

    // Wrong protocol version.
    let mut raw = server.connect().await;
    raw.writer
        .send(login_frame(2, &server.token("alice", "phone"), 0))
        .await
        .unwrap();
    closed_with_error(&mut raw.reader, ErrorCode::UnsupportedVersion).await;
    exchange(&mut carol, &mut dave, "after-version").await;

    // A well-behaved alice can still log in and talk to carol.
    let mut alice = server.ready("alice", "phone").await;
    alice
        .writer
        .send_text("fine", "carol", "fine")
        .await
        .unwrap();
    let ack = next_ack(&mut alice.reader).await;
    let d = next_deliver(&mut carol.reader).await;
    assert_eq!(d.seq, ack.seq);
    assert_eq!(chat(&d).from_user, "alice");

    // The errors are counted (the recorder is process-wide, so compare with before).
    let after = server.metrics().await;
    assert!(
        after.contains("tern_errors_total{kind=\"bad_frame\"}"),
        "no bad_frame series in /metrics"
    );
    assert!(
        after.contains("tern_errors_total{kind=\"frame_too_large\"}"),
        "no frame_too_large series in /metrics"
    );
    // bad_frame: garbage after login, garbage before login, empty first frame.
    assert!(counter(&after, "bad_frame") >= counter(&before, "bad_frame") + 3.0);
    assert!(counter(&after, "frame_too_large") >= counter(&before, "frame_too_large") + 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_with_no_known_case_are_refused_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    // A zero-length frame: a ClientFrame with no case set.
    alice.writer.send_raw_frame(&[]).await.unwrap();
    next_error(&mut alice.reader, ErrorCode::ProtocolViolation).await;
    // A case number this server does not know (field 19, length-delimited, empty), as a newer
    // client would send: decoders skip it, leaving the oneof empty.
    alice
        .writer
        .send_raw_frame(&[0x9a, 0x01, 0x00])
        .await
        .unwrap();
    next_error(&mut alice.reader, ErrorCode::ProtocolViolation).await;
    // Unknown fields inside a known message are ignored: Ping{nonce: 9, field 15: 1}.
    alice
        .writer
        .send_raw_frame(&[0x3a, 0x04, 0x08, 0x09, 0x78, 0x01])
        .await
        .unwrap();
    match next(&mut alice.reader).await {
        Frame::Pong(pong) => assert_eq!(pong.nonce, 9),
        other => panic!("expected Pong, got {other:?}"),
    }
    // Still logged in and working.
    alice
        .writer
        .send_text("after", "bob", "still here")
        .await
        .unwrap();
    next_ack(&mut alice.reader).await;
    assert_eq!(body(&next_deliver(&mut bob.reader).await), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_split_across_writes_is_reassembled() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    let mut dave = server.ready("dave", "phone").await;
    let mut bytes = bytes::BytesMut::new();
    tern::frame::encode(
        &tern::proto::v1::ClientFrame {
            frame: Some(tern::client::text_frame("split", "dave", b"in pieces")),
        },
        &mut bytes,
    );
    for chunk in bytes.chunks(3) {
        carol.writer.send_raw(chunk).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ack = next_ack(&mut carol.reader).await;
    assert_eq!(ack.client_msg_id, "split");
    assert_eq!(body(&next_deliver(&mut dave.reader).await), "in pieces");
}

fn send(
    client_msg_id: &str,
    to_user: &str,
    kind: MessageKind,
    body: Vec<u8>,
) -> client_frame::Frame {
    client_frame::Frame::Send(Send {
        client_msg_id: client_msg_id.to_owned(),
        to_user: to_user.to_owned(),
        kind: kind.into(),
        body: body.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sends_are_refused_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let max_body = server.config.limits.max_body_bytes as usize;
    let long_id = "i".repeat(129);
    let cases = [
        send("", "bob", MessageKind::Text, b"x".to_vec()),
        send(&long_id, "bob", MessageKind::Text, b"x".to_vec()),
        send("bad-to", "", MessageKind::Text, b"x".to_vec()),
        send("bad-to2", "bob smith", MessageKind::Text, b"x".to_vec()),
        send("bad-to3", &"b".repeat(65), MessageKind::Text, b"x".to_vec()),
        send("bad-kind", "bob", MessageKind::Unspecified, b"x".to_vec()),
        send("too-big", "bob", MessageKind::Binary, vec![7; max_body + 1]),
    ];
    for frame in cases {
        let id = match &frame {
            client_frame::Frame::Send(s) => s.client_msg_id.clone(),
            _ => unreachable!(),
        };
        alice.writer.send(frame).await.unwrap();
        let error = next_error(&mut alice.reader, ErrorCode::InvalidArgument).await;
        assert_eq!(error.client_msg_id, id);
    }
    // A body of exactly max_body_bytes is fine, and nothing refused was stored.
    alice
        .writer
        .send(send("max", "bob", MessageKind::Binary, vec![7; max_body]))
        .await
        .unwrap();
    let ack = next_ack(&mut alice.reader).await;
    assert_eq!(ack.client_msg_id, "max");
    assert_eq!(ack.seq, 1, "refused sends took no seq");
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(last_seq, 1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(chat(&delivered[0]).body.len(), max_body);
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(
        !rest.iter().any(|f| matches!(f, Frame::Error(_))),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_presence_subscriptions_are_refused() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    let p = next_presence(&mut carol.reader).await;
    assert_eq!(p.user, "dave");

    carol
        .writer
        .subscribe_presence(&["ok", "not ok"])
        .await
        .unwrap();
    next_error(&mut carol.reader, ErrorCode::InvalidArgument).await;
    let max = server.config.limits.max_presence_subscriptions as usize;
    let users: Vec<String> = (0..=max).map(|i| format!("u{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    carol.writer.subscribe_presence(&users).await.unwrap();
    next_error(&mut carol.reader, ErrorCode::InvalidArgument).await;
    let rest = sync(&mut carol.reader, &mut carol.writer).await;
    assert!(
        rest.is_empty(),
        "refused subscriptions were answered: {rest:?}"
    );

    // The previous subscription stays in force.
    let _dave = server.ready("dave", "phone").await;
    let p = next_presence(&mut carol.reader).await;
    assert_eq!(p.user, "dave");
    assert!(p.online);
}

async fn next_presence(reader: &mut tern::client::ClientReader) -> tern::proto::v1::PresenceUpdate {
    next_matching(reader, |f| match f {
        Frame::Presence(p) => Some(p),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_that_keeps_writing_is_dropped_after_a_bounded_drain() {
    let server = TestServer::start().await;
    let before = counter(&server.metrics().await, "linger_overflow");
    // Refused at once (an empty first frame), then a megabyte more, as a flooder would: the
    // node discards a bounded amount while it lingers, then drops the socket.
    let mut raw = server.connect().await;
    raw.writer.send_raw_frame(&[]).await.unwrap();
    let garbage = vec![0u8; 16 * 1024];
    for _ in 0..64 {
        if raw.writer.send_raw(&garbage).await.is_err() {
            break;
        }
    }
    eventually("the lingering drain gives up", async || {
        counter(&server.metrics().await, "linger_overflow") > before
    })
    .await;
}
