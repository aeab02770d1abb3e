//! Push notifications against a stand-in gateway (a real HTTP server started by the test that
//! records every request): one push per burst for a device that is away, none for a device that
//! acks, none for a muted conversation, a retried 500 without a duplicate, a rejected token
//! removed, the Matrix format with and without previews, and registrations that survive a
//! restart of the node.

mod common;

use std::time::Duration;

use common::gateway::{Recorded, StandIn};
use common::*;
use serde_json::Value;
use tern::client::ClientWriter;
use tern::proto::v1::{
    ErrorCode, PushMute, PushPlatform, PushRegister, PushUnregister, push_request::Op,
    server_frame::Frame,
};
use tern::push::{GatewayKind, PushConfig};

fn push_config(gateway: GatewayKind, url: String) -> PushConfig {
    PushConfig {
        gateway,
        url,
        offline_delay_ms: 100,
        ack_grace_ms: 300,
        retry_base_ms: 50,
        retry_max_ms: 200,
        ..PushConfig::default()
    }
}

async fn start(gateway: &StandIn, kind: GatewayKind, path: &str) -> TestServer {
    let config = push_config(kind, gateway.url(path));
    TestServer::start_with(move |c| c.push = Some(config)).await
}

/// Sends a push request and waits for its answer; returns the error code.
async fn request(phone: &mut Phone, request_id: u64, op: Op) -> ErrorCode {
    phone
        .writer
        .push_request(request_id, op)
        .await
        .expect("push request");
    let response = next_matching(&mut phone.reader, |frame| match frame {
        Frame::PushResponse(response) if response.request_id == request_id => Some(response),
        _ => None,
    })
    .await;
    response.error()
}

fn register(token: &str, preview: bool) -> Op {
    Op::Register(PushRegister {
        platform: PushPlatform::Apns.into(),
        token: token.to_owned(),
        app_id: "com.example.chat".to_owned(),
        preview,
    })
}

/// Logs (user, device) in, registers `token` and logs out: the device is away.
async fn away(server: &TestServer, user: &str, device: &str, token: &str, preview: bool) {
    let mut phone = server.phone(user, device).await;
    assert_eq!(
        request(&mut phone, 1, register(token, preview)).await,
        ErrorCode::Unspecified
    );
}

async fn send_acked(
    writer: &mut ClientWriter,
    reader: &mut tern::client::ClientReader,
    id: &str,
    to: &str,
    text: &str,
) {
    writer.send_text(id, to, text).await.expect("send");
    let ack = next_ack(reader).await;
    assert_eq!(ack.client_msg_id, id);
}

/// The gorush notification of a request.
fn gorush(recorded: &Recorded) -> &Value {
    &recorded.body["notifications"][0]
}

/// Registers Dave away, has Alice send him a message and waits for its push: every push due
/// for an earlier message has been sent (or decided against) by then.
async fn marker(server: &TestServer, alice: &mut Phone, gateway: &StandIn) {
    away(server, "dave", "phone", "tok-dave", false).await;
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "marker",
        "dave",
        "marker",
    )
    .await;
    eventually("the marker's push", async || {
        gateway
            .requests()
            .iter()
            .any(|r| gorush(r)["tokens"][0] == "tok-dave")
    })
    .await;
}

/// The gorush requests for `token`.
fn gorush_for(gateway: &StandIn, token: &str) -> Vec<Recorded> {
    gateway
        .requests()
        .into_iter()
        .filter(|r| gorush(r)["tokens"][0] == token)
        .collect()
}

#[tokio::test]
async fn an_away_device_gets_one_push_for_a_burst_and_nothing_of_its_text() {
    let gateway = StandIn::gorush().await;
    let server = start(&gateway, GatewayKind::Gorush, "/api/push").await;
    away(&server, "bob", "phone", "tok-bob", false).await;
    let mut alice = server.ready("alice", "phone").await;
    for n in 1..=50 {
        send_acked(
            &mut alice.writer,
            &mut alice.reader,
            &format!("m{n}"),
            "bob",
            &format!("secret {n}"),
        )
        .await;
    }
    eventually("the burst's push", async || !gateway.requests().is_empty()).await;
    // Dave's push is scheduled after every one of Bob's messages was seen.
    marker(&server, &mut alice, &gateway).await;
    let requests = gorush_for(&gateway, "tok-bob");
    assert_eq!(requests.len(), 1, "{requests:?}");
    let push = gorush(&requests[0]);
    assert_eq!(push["tokens"][0], "tok-bob");
    assert_eq!(push["platform"], 1);
    let text = requests[0].body.to_string();
    assert!(
        !text.contains("secret"),
        "message text left the node: {text}"
    );
    // Ids only: the conversation (the peer's id) so the app knows what to fetch; no title.
    assert!(
        push.get("title").is_none(),
        "a title without previews: {text}"
    );
    assert_eq!(push["data"]["conversation"], "alice");
    assert_eq!(push["data"]["seq"], 50, "{push}");
    assert_eq!(push["data"]["count"], 50, "{push}");
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_acks_in_time_and_a_muted_conversation_get_no_push() {
    let gateway = StandIn::gorush().await;
    let server = start(&gateway, GatewayKind::Gorush, "/api/push").await;
    // Bob is online and acks; Carol is away but muted Alice; Dave is away: the marker.
    let mut bob = server.ready("bob", "phone").await;
    assert_eq!(
        request(&mut bob, 1, register("tok-bob", true)).await,
        ErrorCode::Unspecified
    );
    {
        let mut carol = server.phone("carol", "phone").await;
        assert_eq!(
            request(&mut carol, 1, register("tok-carol", true)).await,
            ErrorCode::Unspecified
        );
        let mute = Op::Mute(PushMute {
            user: "alice".to_owned(),
            group_id: String::new(),
            until_ms: u64::MAX,
        });
        assert_eq!(request(&mut carol, 2, mute).await, ErrorCode::Unspecified);
    }
    away(&server, "dave", "phone", "tok-dave", true).await;

    let mut alice = server.ready("alice", "phone").await;
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "to-bob",
        "bob",
        "hi bob",
    )
    .await;
    let deliver = next_deliver(&mut bob.reader).await;
    bob.writer.ack(deliver.seq).await.expect("ack");
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "to-carol",
        "carol",
        "hi carol",
    )
    .await;
    // Past Bob's grace: a push due for him would come before the marker's.
    tokio::time::sleep(Duration::from_millis(400)).await;
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "to-dave",
        "dave",
        "hi dave",
    )
    .await;
    eventually("the marker's push", async || !gateway.requests().is_empty()).await;
    let requests = gateway.requests();
    let tokens: Vec<&Value> = requests.iter().map(|r| &gorush(r)["tokens"][0]).collect();
    assert_eq!(tokens, ["tok-dave"], "{requests:?}");
    // Dave asked for previews.
    assert_eq!(gorush(&requests[0])["message"], "hi dave");
    assert_eq!(gorush(&requests[0])["title"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_gateway_error_is_retried_once_without_a_duplicate() {
    let gateway = StandIn::gorush().await;
    gateway.script(500, "gorush broke");
    let server = start(&gateway, GatewayKind::Gorush, "/api/push").await;
    away(&server, "bob", "phone", "tok-bob", false).await;
    let mut alice = server.ready("alice", "phone").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m1", "bob", "hello").await;
    eventually("the retried push", async || gateway.requests().len() >= 2).await;
    marker(&server, &mut alice, &gateway).await;
    let requests = gorush_for(&gateway, "tok-bob");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        gorush(&requests[0])["notif_id"],
        gorush(&requests[1])["notif_id"]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_the_gateway_calls_unregistered_is_removed() {
    let gateway = StandIn::matrix().await;
    gateway.script(200, r#"{"rejected":["tok-bob"]}"#);
    let server = start(&gateway, GatewayKind::Matrix, "/_matrix/push/v1/notify").await;
    away(&server, "bob", "phone", "tok-bob", false).await;
    let mut alice = server.ready("alice", "phone").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m1", "bob", "hello").await;
    eventually("the token removed from the account", async || {
        let account = http_get(server.admin, "/accounts/bob").await;
        account.contains(r#""push":null"#)
    })
    .await;
    // No push for what comes next.
    away(&server, "dave", "phone", "tok-dave", false).await;
    send_acked(&mut alice.writer, &mut alice.reader, "m2", "bob", "again").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m3", "dave", "marker").await;
    eventually("the marker's push", async || gateway.requests().len() >= 2).await;
    let requests = gateway.requests();
    let keys: Vec<&Value> = requests
        .iter()
        .map(|r| &r.body["notification"]["devices"][0]["pushkey"])
        .collect();
    assert_eq!(keys, ["tok-bob", "tok-dave"], "{requests:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_matrix_format_carries_ids_and_a_preview_only_when_asked() {
    let gateway = StandIn::matrix().await;
    let server = start(&gateway, GatewayKind::Matrix, "/_matrix/push/v1/notify").await;
    away(&server, "bob", "phone", "tok-bob", true).await;
    away(&server, "carol", "phone", "tok-carol", false).await;
    let mut alice = server.ready("alice", "phone").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m1", "bob", "lunch?").await;
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "m2",
        "carol",
        "dinner?",
    )
    .await;
    eventually("both pushes", async || gateway.requests().len() >= 2).await;
    let requests = gateway.requests();
    let of = |key: &str| {
        requests
            .iter()
            .map(|r| &r.body["notification"])
            .find(|n| n["devices"][0]["pushkey"] == key)
            .expect("a push for the key")
            .clone()
    };
    let bob = of("tok-bob");
    assert_eq!(bob["content"]["body"], "lunch?");
    assert_eq!(bob["sender"], "alice");
    assert_eq!(bob["room_id"], "alice");
    assert_eq!(bob["counts"]["unread"], 1);
    let carol = of("tok-carol");
    assert!(
        carol.get("content").is_none() && carol.get("type").is_none(),
        "{carol}"
    );
    assert!(!carol.to_string().contains("dinner"), "{carol}");
    assert!(carol["event_id"].as_str().is_some_and(|id| !id.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_and_unregistering_stops_pushes() {
    let gateway = StandIn::gorush().await;
    let server = start(&gateway, GatewayKind::Gorush, "/api/push").await;
    let mut bob = server.phone("bob", "phone").await;
    let no_platform = Op::Register(PushRegister {
        platform: PushPlatform::Unspecified.into(),
        token: "t".to_owned(),
        app_id: String::new(),
        preview: false,
    });
    assert_eq!(
        request(&mut bob, 1, no_platform).await,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        request(&mut bob, 2, register("", false)).await,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        request(&mut bob, 3, register(&"t".repeat(5000), false)).await,
        ErrorCode::InvalidArgument
    );
    let both = Op::Mute(PushMute {
        user: "alice".to_owned(),
        group_id: "team".to_owned(),
        until_ms: u64::MAX,
    });
    assert_eq!(request(&mut bob, 4, both).await, ErrorCode::InvalidArgument);
    assert_eq!(
        request(&mut bob, 5, register("tok-bob", false)).await,
        ErrorCode::Unspecified
    );
    assert_eq!(
        request(&mut bob, 6, Op::Unregister(PushUnregister {})).await,
        ErrorCode::Unspecified
    );
    drop(bob);
    away(&server, "dave", "phone", "tok-dave", false).await;
    let mut alice = server.ready("alice", "phone").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m1", "bob", "hello").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m2", "dave", "marker").await;
    eventually("the marker's push", async || !gateway.requests().is_empty()).await;
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(gorush(&requests[0])["tokens"][0], "tok-dave");
    server.stop().await;
}

#[tokio::test]
async fn a_token_registered_by_another_user_moves_there() {
    let gateway = StandIn::gorush().await;
    let server = start(&gateway, GatewayKind::Gorush, "/api/push").await;
    away(&server, "bob", "phone", "shared-token", false).await;
    // The phone changed hands: the same token, now Dave's.
    away(&server, "dave", "phone", "shared-token", false).await;
    eventually("the token dropped from Bob's device", async || {
        http_get(server.admin, "/accounts/bob")
            .await
            .contains(r#""push":null"#)
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    send_acked(&mut alice.writer, &mut alice.reader, "m1", "bob", "for bob").await;
    send_acked(
        &mut alice.writer,
        &mut alice.reader,
        "m2",
        "dave",
        "for dave",
    )
    .await;
    eventually("Dave's push", async || !gateway.requests().is_empty()).await;
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(gorush(&requests[0])["data"]["user"], "dave");
    server.stop().await;
}

#[tokio::test]
async fn registrations_and_mutes_survive_a_kill() {
    let gateway = StandIn::gorush().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let section = format!(
        "[push]\ngateway = \"gorush\"\nurl = \"{}\"\noffline_delay_ms = 100\n",
        gateway.url("/api/push")
    );
    let (config_path, config) = child_config(dir.path(), &[("# [push]\n", section.as_str())]);
    let key = tern::token::TokenKey::new(config.auth.token_key.as_bytes());
    let data = dir.path().join("data");
    let node = ChildNode::start(&config_path, &data);
    {
        let client = child_login(node.client, &key, "bob", "phone").await;
        let (reader, writer) = client.split();
        let mut bob = Phone {
            reader,
            writer,
            welcome: Default::default(),
        };
        assert_eq!(
            request(&mut bob, 1, register("tok-bob", false)).await,
            ErrorCode::Unspecified
        );
        let mute = Op::Mute(PushMute {
            user: "carol".to_owned(),
            group_id: String::new(),
            until_ms: u64::MAX,
        });
        assert_eq!(request(&mut bob, 2, mute).await, ErrorCode::Unspecified);
    }
    node.kill();
    let node = ChildNode::start(&config_path, &data);
    let (mut carol_reader, mut carol_writer) = child_login(node.client, &key, "carol", "phone")
        .await
        .split();
    send_acked(&mut carol_writer, &mut carol_reader, "c1", "bob", "muted").await;
    let (mut alice_reader, mut alice_writer) = child_login(node.client, &key, "alice", "phone")
        .await
        .split();
    send_acked(
        &mut alice_writer,
        &mut alice_reader,
        "a1",
        "bob",
        "not muted",
    )
    .await;
    eventually("Bob's push after the restart", async || {
        !gateway.requests().is_empty()
    })
    .await;
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let push = gorush(&requests[0]);
    assert_eq!(push["tokens"][0], "tok-bob");
    assert_eq!(push["data"]["conversation"], "alice");
    assert_eq!(push["data"]["count"], 1);
    node.kill();
}
