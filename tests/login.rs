//! Login: Welcome and QueueDrained, and every way a login is refused (each closes the connection).

mod common;
use common::*;

use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, GoAwayReason, Ping, client_frame};
use tern::token::TokenKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gets_welcome_then_queue_drained() {
    let server = TestServer::start().await;
    let mut phone = server.phone("alice", "phone").await;
    let welcome = &phone.welcome;
    assert_eq!(welcome.protocol_version, 1);
    assert_eq!(welcome.user, "alice");
    assert_eq!(welcome.device, "phone");
    assert_eq!(welcome.cursor, 0);
    assert_eq!(welcome.last_seq, 0);
    assert_eq!(welcome.node, server.config.node.id);
    assert_eq!(
        welcome.max_frame_bytes,
        server.config.limits.max_frame_bytes
    );
    assert_eq!(welcome.max_body_bytes, server.config.limits.max_body_bytes);
    assert_eq!(
        welcome.idle_timeout_secs,
        server.config.limits.idle_timeout_secs
    );
    assert_eq!(
        welcome.delivery_window,
        server.config.limits.delivery_window
    );
    assert_eq!(welcome.frames_per_sec, server.config.limits.frames_per_sec);
    assert_eq!(welcome.frame_burst, server.config.limits.frame_burst);
    assert!(welcome.server_time_ms > 0);
    match next(&mut phone.reader).await {
        Frame::QueueDrained(q) => assert_eq!(q.last_seq, 0),
        other => panic!("expected QueueDrained after Welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong_carrying_the_nonce() {
    let server = TestServer::start().await;
    let mut phone = server.ready("alice", "phone").await;
    phone.writer.ping(424_242).await.unwrap();
    match next(&mut phone.reader).await {
        Frame::Pong(pong) => {
            assert_eq!(pong.nonce, 424_242);
            assert!(pong.server_time_ms > 0);
        }
        other => panic!("expected Pong, got {other:?}"),
    }
}

/// Sends a Login frame on a fresh connection and expects `code` and then the close.
async fn refused_login(server: &TestServer, protocol_version: u32, token: &str, code: ErrorCode) {
    let mut client = server.connect().await;
    client
        .send(login_frame(protocol_version, token, 0))
        .await
        .unwrap();
    let frames = until_closed(&mut client.reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => assert_eq!(error.code(), code, "{error:?}"),
        other => panic!("expected exactly one Error {code:?} then the close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_with_another_key_is_unauthenticated() {
    let server = TestServer::start().await;
    let forged = TokenKey::new(b"some-other-key-0123456789")
        .sign("alice", "phone", tern::clock::now_secs() + 3600)
        .unwrap();
    refused_login(&server, 1, &forged, ErrorCode::Unauthenticated).await;
    // The server is unaffected: a valid login still works.
    server.ready("alice", "phone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_unauthenticated() {
    let server = TestServer::start().await;
    refused_login(&server, 1, "garbage", ErrorCode::Unauthenticated).await;
    refused_login(&server, 1, "", ErrorCode::Unauthenticated).await;
    // A valid token with its signature tampered with.
    let token = server.token("alice", "phone");
    let mut tampered = token.into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    refused_login(&server, 1, &tampered, ErrorCode::Unauthenticated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let server = TestServer::start().await;
    let token = server.expired_token("alice", "phone", 10);
    refused_login(&server, 1, &token, ErrorCode::TokenExpired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_version_is_refused() {
    let server = TestServer::start().await;
    let token = server.token("alice", "phone");
    refused_login(&server, 2, &token, ErrorCode::UnsupportedVersion).await;
    refused_login(&server, 0, &token, ErrorCode::UnsupportedVersion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_other_than_login_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client
        .send(client_frame::Frame::Ping(Ping { nonce: 1 }))
        .await
        .unwrap();
    let frames = until_closed(&mut client.reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => assert_eq!(error.code(), ErrorCode::ProtocolViolation),
        other => panic!("expected one PROTOCOL_VIOLATION then the close, got {other:?}"),
    }

    let mut client = server.connect().await;
    client
        .send(tern::client::text_frame("m1", "bob", b"hi"))
        .await
        .unwrap();
    closed_with_error(&mut client.reader, ErrorCode::ProtocolViolation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_login_on_a_connection_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut phone = server.ready("alice", "phone").await;
    let token = server.token("alice", "phone");
    phone.writer.send(login_frame(1, &token, 0)).await.unwrap();
    next_error(&mut phone.reader, ErrorCode::ProtocolViolation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_device_logging_in_again_replaces_the_old_connection() {
    let server = TestServer::start().await;
    let mut old = server.ready("alice", "phone").await;
    let mut new = server.ready("alice", "phone").await;
    let frames = until_closed(&mut old.reader).await;
    match frames.as_slice() {
        [Frame::GoAway(go_away)] => assert_eq!(go_away.reason(), GoAwayReason::Replaced),
        other => panic!("expected GoAway REPLACED then the close, got {other:?}"),
    }
    // The new connection works and receives alice's messages.
    let mut bob = server.ready("bob", "phone").await;
    bob.writer.send_text("b1", "alice", "hi").await.unwrap();
    next_ack(&mut bob.reader).await;
    let d = next_deliver(&mut new.reader).await;
    assert_eq!(body(&d), "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_right_after_login_are_handled_once_logged_in() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    // Login, a Send and a Ping in one write, before the Welcome.
    client
        .writer
        .queue(login_frame(1, &server.token("alice", "phone"), 0));
    client
        .writer
        .queue(tern::client::text_frame("early", "bob", b"eager"));
    client
        .writer
        .queue(client_frame::Frame::Ping(Ping { nonce: 77 }));
    client.writer.flush().await.unwrap();
    match next(&mut client.reader).await {
        Frame::Welcome(welcome) => assert_eq!(welcome.user, "alice"),
        other => panic!("Welcome must be the first frame, got {other:?}"),
    }
    let mut ack = None;
    let mut pong = false;
    while ack.is_none() || !pong {
        match next(&mut client.reader).await {
            Frame::ServerAck(a) => ack = Some(a),
            Frame::Pong(p) => {
                assert_eq!(p.nonce, 77);
                pong = true;
            }
            Frame::QueueDrained(_) => {}
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    assert_eq!(ack.unwrap().client_msg_id, "early");
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(body(&delivered[0]), "eager");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_after_a_refused_login_are_discarded() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.writer.queue(login_frame(1, "garbage", 0));
    client
        .writer
        .queue(tern::client::text_frame("sneaky", "bob", b"never stored"));
    client.writer.flush().await.unwrap();
    closed_with_error(&mut client.reader, ErrorCode::Unauthenticated).await;
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.last_seq, 0);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    assert_eq!(last_seq, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_its_token() {
    let server = TestServer::start().await;
    let expires_at = tern::clock::now_secs() + 2;
    let token = server.key.sign("alice", "phone", expires_at).unwrap();
    let (client, welcome) =
        tokio::time::timeout(WAIT, tern::client::Client::login(server.addr, &token, 0))
            .await
            .expect("login timed out")
            .expect("login refused");
    let (reader, writer) = client.split();
    let mut alice = Phone {
        reader,
        writer,
        welcome,
    };
    drain(&mut alice.reader).await;
    eventually("the token expires", async || {
        tern::clock::now_secs() > expires_at
    })
    .await;
    // The token is now expired: a new login with it is refused...
    refused_login(&server, 1, &token, ErrorCode::TokenExpired).await;
    // ...but the session that used it is still up.
    let mut bob = server.ready("bob", "phone").await;
    bob.writer
        .send_text("m1", "alice", "still there?")
        .await
        .unwrap();
    next_ack(&mut bob.reader).await;
    assert_eq!(body(&next_deliver(&mut alice.reader).await), "still there?");
}
