//! Graceful shutdown: connected phones are told to go away, then the connection closes.

mod common;
use common::*;

use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, GoAwayReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_go_away_shutdown_then_closes() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "laptop").await;
    let stopping = tokio::spawn(server.stop());
    for phone in [&mut alice, &mut bob] {
        let frames = until_closed(&mut phone.reader).await;
        match frames.as_slice() {
            [Frame::GoAway(go_away)] => {
                assert_eq!(go_away.reason(), GoAwayReason::Shutdown);
                assert!(
                    go_away.reconnect_after_ms <= 5_000,
                    "reconnect delay is spread over a bounded window: {go_away:?}"
                );
            }
            other => panic!("expected GoAway SHUTDOWN then the close, got {other:?}"),
        }
    }
    drop(alice);
    drop(bob);
    stopped(stopping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_connections_that_never_logged_in() {
    let server = TestServer::start().await;
    let mut raw = server.connect().await;
    let mut alice = server.ready("alice", "phone").await;
    let stopping = tokio::spawn(server.stop());
    // Without sending anything, the connection reads the refusal and EOF.
    let frames = until_closed(&mut raw.reader).await;
    assert!(
        frames.iter().all(|f| !matches!(f, Frame::Deliver(_))),
        "{frames:?}"
    );
    match frames.as_slice() {
        [Frame::Error(error)] => assert_eq!(error.code(), ErrorCode::Overloaded, "{error:?}"),
        other => panic!("expected Error OVERLOADED then EOF, got {other:?}"),
    }
    let frames = until_closed(&mut alice.reader).await;
    assert!(
        matches!(frames.last(), Some(Frame::GoAway(g)) if g.reason() == GoAwayReason::Shutdown),
        "{frames:?}"
    );
    drop(raw);
    drop(alice);
    stopped(stopping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_right_after_logins_tells_every_logged_in_phone() {
    const PHONES: usize = 200;
    let server = TestServer::start().await;
    // Log in many phones at once and stop as soon as the last Welcome arrived.
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..PHONES {
        let token = server.token(&format!("u{i}"), "phone");
        let addr = server.addr;
        logins.spawn(async move {
            let (client, _) = tern::client::Client::login(addr, &token, 0)
                .await
                .expect("login");
            client
        });
    }
    let mut phones = Vec::new();
    while let Some(client) = logins.join_next().await {
        phones.push(client.expect("login task"));
    }
    let stopping = tokio::spawn(server.stop());
    let mut without_go_away = 0;
    for phone in &mut phones {
        let frames = until_closed(&mut phone.reader).await;
        let told = matches!(
            frames.last(),
            Some(Frame::GoAway(g)) if g.reason() == GoAwayReason::Shutdown
        );
        if !told {
            without_go_away += 1;
        }
    }
    drop(phones);
    assert_eq!(
        without_go_away, 0,
        "{without_go_away} of {PHONES} logged-in phones were closed without GoAway SHUTDOWN"
    );
    stopped(stopping).await;
}
