//! Logins during a graceful shutdown: while the node drains it keeps accepting, and every
//! connection that is not logged in (opened before the shutdown or during it) gets
//! `Error{OVERLOADED}` as its last frame, then EOF (one idle since before the shutdown:
//! `tests/shutdown.rs::stop_closes_connections_that_never_logged_in`).

mod common;
use common::*;

use tern::client::Client;
use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, GoAwayReason};

/// Waits for the GoAway SHUTDOWN that proves the drain has begun (the connection stays open on
/// the phone's side, so the server lingers on it).
async fn shutdown_began(phone: &mut Phone) {
    let frame = next(&mut phone.reader).await;
    assert!(
        matches!(&frame, Frame::GoAway(g) if g.reason() == GoAwayReason::Shutdown),
        "expected GoAway SHUTDOWN, got {frame:?}"
    );
}

/// Sends a Login and checks that the answer is `Error{OVERLOADED}` and then the close.
async fn login_is_refused_as_shutting_down(client: Client, token: &str) {
    let (mut reader, mut writer) = client.split();
    // The server may already have written its last frame and shut its side: the Login is
    // read and discarded then, and the answer is the same.
    let _ = writer.send(login_frame(1, token, 0)).await;
    let frames = until_closed(&mut reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => {
            assert_eq!(error.code(), ErrorCode::Overloaded, "{error:?}");
            assert_eq!(error.message, "server shutting down");
        }
        other => panic!("expected Error OVERLOADED then EOF, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_the_shutdown_that_logs_in_during_the_drain_is_refused() {
    let server = TestServer::start().await;
    let early = server.connect().await;
    let token = server.token("bob", "phone");
    let mut alice = server.ready("alice", "phone").await;
    let stopping = tokio::spawn(server.stop());
    shutdown_began(&mut alice).await;
    login_is_refused_as_shutting_down(early, &token).await;
    drop(alice);
    stopped(stopping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_during_the_drain_is_answered_then_closed() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let token = server.token("bob", "phone");
    let mut alice = server.ready("alice", "phone").await;
    let stopping = tokio::spawn(server.stop());
    shutdown_began(&mut alice).await;
    // alice's connection is still open on her side: the node is draining and still accepts.
    let late = tokio::time::timeout(WAIT, Client::connect(addr))
        .await
        .expect("connect timed out")
        .expect("the node accepts connections during its drain");
    login_is_refused_as_shutting_down(late, &token).await;
    drop(alice);
    stopped(stopping).await;
}
