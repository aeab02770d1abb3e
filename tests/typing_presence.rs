//! Typing indicators (relayed live, never stored) and presence subscriptions.

mod common;
use common::*;

use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{ErrorCode, PresenceUpdate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_an_online_recipient() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    alice.writer.typing("bob", true).await.unwrap();
    match next(&mut bob.reader).await {
        Frame::Typing(notice) => {
            assert_eq!(notice.from_user, "alice");
            assert!(notice.typing);
        }
        other => panic!("expected TypingNotice, got {other:?}"),
    }
    alice.writer.typing("bob", false).await.unwrap();
    match next(&mut bob.reader).await {
        Frame::Typing(notice) => {
            assert_eq!(notice.from_user, "alice");
            assert!(!notice.typing);
        }
        other => panic!("expected TypingNotice, got {other:?}"),
    }
    // Typing is not a stored entry and is not acked.
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(rest.is_empty(), "typing was answered: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_every_device_of_the_recipient() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut phone = server.ready("bob", "phone").await;
    let mut laptop = server.ready("bob", "laptop").await;
    alice.writer.typing("bob", true).await.unwrap();
    for device in [&mut phone, &mut laptop] {
        match next(&mut device.reader).await {
            Frame::Typing(notice) => assert_eq!(notice.from_user, "alice"),
            other => panic!("expected TypingNotice, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_to_an_offline_user_is_not_stored() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    // bob has a mailbox and a known device, but is offline.
    drop(server.ready("bob", "phone").await);
    alice.writer.typing("bob", true).await.unwrap();
    alice.writer.typing("carol", true).await.unwrap();
    // The Pong proves alice's session handled both Typing frames.
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(rest.is_empty(), "{rest:?}");

    for user in ["bob", "carol"] {
        let mut phone = server.phone(user, "phone").await;
        assert_eq!(phone.welcome.last_seq, 0);
        match next(&mut phone.reader).await {
            Frame::QueueDrained(q) => assert_eq!(q.last_seq, 0),
            other => panic!("{user}: expected QueueDrained, got {other:?}"),
        }
        let rest = sync(&mut phone.reader, &mut phone.writer).await;
        assert!(rest.is_empty(), "{user} got frames: {rest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_to_an_invalid_user_is_refused() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    alice.writer.typing("not a user!", true).await.unwrap();
    next_error(&mut alice.reader, ErrorCode::InvalidArgument).await;
}

/// Waits for the next PresenceUpdate, skipping other frames.
async fn next_presence(phone: &mut Phone) -> PresenceUpdate {
    next_matching(&mut phone.reader, |f| match f {
        Frame::Presence(p) => Some(p),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_subscription_follows_login_and_logout() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    let p = next_presence(&mut carol).await;
    assert_eq!(p.user, "dave");
    assert!(!p.online);

    let dave = server.ready("dave", "phone").await;
    let p = next_presence(&mut carol).await;
    assert_eq!(p.user, "dave");
    assert!(p.online);
    assert_eq!(p.last_seen_ms, 0);

    drop(dave);
    let p = next_presence(&mut carol).await;
    assert_eq!(p.user, "dave");
    assert!(!p.online);
    assert!(p.last_seen_ms > 0);

    // A new subscription reports the last-seen time of an offline user.
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    let again = next_presence(&mut carol).await;
    assert!(!again.online);
    assert_eq!(again.last_seen_ms, p.last_seen_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reports_users_already_online() {
    let server = TestServer::start().await;
    let _dave = server.ready("dave", "phone").await;
    let mut carol = server.ready("carol", "phone").await;
    carol
        .writer
        .subscribe_presence(&["dave", "erin"])
        .await
        .unwrap();
    let mut updates = [
        next_presence(&mut carol).await,
        next_presence(&mut carol).await,
    ];
    updates.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(updates[0].user, "dave");
    assert!(updates[0].online);
    assert_eq!(updates[1].user, "erin");
    assert!(!updates[1].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_offline_only_when_the_last_device_leaves() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    assert!(!next_presence(&mut carol).await.online);
    let phone = server.ready("dave", "phone").await;
    assert!(next_presence(&mut carol).await.online);
    let laptop = server.ready("dave", "laptop").await;
    // The phone leaves: the server closes it for a bad frame (so the close is observed).
    let mut phone = phone;
    phone.writer.send_raw_frame(&[0xff; 10]).await.unwrap();
    closed_with_error(&mut phone.reader, ErrorCode::BadFrame).await;
    // A pause, not a barrier: none exists. Presence is decided when the phone's session state
    // is dropped (`SessionState::drop`: out of the registry, then a presence change if that was
    // dave's last device), after its connection was closed; nothing a phone can see comes after
    // that drop. Its only trace is the process-wide tern_sessions gauge, which the tests running
    // beside this one move too, and a presence change by another user may be sent before it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let frames = sync(&mut carol.reader, &mut carol.writer).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Presence(_))),
        "dave still has the laptop online: {frames:?}"
    );
    drop(laptop);
    let p = next_presence(&mut carol).await;
    assert!(!p.online);
    assert!(p.last_seen_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_replaces_the_subscriptions() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    next_presence(&mut carol).await;
    carol.writer.subscribe_presence(&["erin"]).await.unwrap();
    assert_eq!(next_presence(&mut carol).await.user, "erin");
    let _dave = server.ready("dave", "phone").await;
    let _erin = server.ready("erin", "phone").await;
    let p = next_presence(&mut carol).await;
    assert_eq!(p.user, "erin", "dave is no longer watched");
    assert!(p.online);
    let rest = sync(&mut carol.reader, &mut carol.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_replacing_its_own_connection_is_not_a_presence_change() {
    let server = TestServer::start().await;
    let mut carol = server.ready("carol", "phone").await;
    carol.writer.subscribe_presence(&["dave"]).await.unwrap();
    assert!(!next_presence(&mut carol).await.online);
    let mut old = server.ready("dave", "phone").await;
    assert!(next_presence(&mut carol).await.online);
    let _new = server.ready("dave", "phone").await;
    // The old connection is told it was replaced and closed.
    let frames = until_closed(&mut old.reader).await;
    assert!(
        matches!(frames.last(), Some(Frame::GoAway(g)) if g.reason() == tern::proto::v1::GoAwayReason::Replaced),
        "{frames:?}"
    );
    drop(old);
    // A pause, not a barrier: the replaced session decides on presence when its state is
    // dropped, after it closed its connection, and nothing a phone can see orders after that
    // (see presence_goes_offline_only_when_the_last_device_leaves).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let frames = sync(&mut carol.reader, &mut carol.writer).await;
    assert!(
        frames.is_empty(),
        "dave never went offline, yet carol got {frames:?}"
    );
}
