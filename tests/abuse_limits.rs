//! Abuse limits over TCP: connections and logins per source address, group creations and
//! member adds per user. Each refusal is its documented error, counted in
//! `tern_abuse_refusals_total{limit}`, and leaves other addresses and users alone.

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::groups::GroupPhone;
use tern::client::Client;
use tern::proto::v1::group_request::Op;
use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{CreateGroup, ErrorCode, GroupMembers, GroupRef, GroupResponse};
use tokio::net::TcpSocket;

/// A second loopback address: another source for the per-address limits.
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Opens a connection to `server` from `from` (no login yet).
async fn connect_from(server: SocketAddr, from: Ipv4Addr) -> Client {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind the source address");
    let stream = tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .expect("connect timed out")
        .expect("connect");
    Client::from_stream(stream)
}

/// Logs (user, device) in from `from`: the Welcome, or what the server answered instead.
async fn login_from(
    server: &TestServer,
    from: Ipv4Addr,
    user: &str,
    device: &str,
) -> Result<Client, Frame> {
    login_with(server, from, &server.token(user, device)).await
}

/// Sends Login with `token` from `from`: the client once welcomed, or the frame the server
/// answered instead.
async fn login_with(server: &TestServer, from: Ipv4Addr, token: &str) -> Result<Client, Frame> {
    let mut client = connect_from(server.addr, from).await;
    client
        .send(login_frame(1, token, 0))
        .await
        .expect("send Login");
    match next(&mut client.reader).await {
        Frame::Welcome(_) => Ok(client),
        other => {
            let rest = until_closed(&mut client.reader).await;
            assert!(rest.is_empty(), "frames after a refusal: {rest:?}");
            Err(other)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_limit_are_refused_until_one_closes() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut phones = vec![
        server.ready("u1", "phone").await,
        server.ready("u2", "phone").await,
        server.ready("u3", "phone").await,
    ];
    // The fourth connection from 127.0.0.1 is told why, and closed.
    let mut fourth = server.connect().await;
    let frames = until_closed(&mut fourth.reader).await;
    match frames.as_slice() {
        [Frame::Error(error)] => {
            assert_eq!(error.code(), ErrorCode::TooManyConnections, "{error:?}");
            assert_eq!(error.message, "too many connections from this address");
        }
        other => panic!("expected Error TOO_MANY_CONNECTIONS then the close, got {other:?}"),
    }
    // Another address is not affected, nor are the three.
    let mut other = login_from(&server, OTHER, "u4", "phone")
        .await
        .expect("a connection from another address is accepted");
    other
        .send(tern::client::text_frame("m1", "u1", b"hi"))
        .await
        .unwrap();
    let (mut reader, _writer) = other.split();
    next_ack(&mut reader).await;
    for phone in &mut phones {
        let rest = sync(&mut phone.reader, &mut phone.writer).await;
        assert!(
            rest.iter().all(|frame| matches!(frame, Frame::Deliver(_))),
            "{rest:?}"
        );
    }
    let refused = server
        .metric("tern_abuse_refusals_total{limit=\"connections_per_ip\"}")
        .await;
    assert!(refused >= Some(1.0), "the refusal is counted: {refused:?}");

    // Once one of the three leaves, a new connection from 127.0.0.1 gets in.
    drop(phones.pop());
    let token = server.token("u5", "phone");
    eventually("a slot of 127.0.0.1 frees up", async || {
        Client::login(server.addr, &token, 0).await.is_ok()
    })
    .await;
}

/// Logs in from 127.0.0.1 with `token` until a login is refused `RATE_LIMITED`; returns how
/// many were answered otherwise first (Welcome or another refusal), and that refusal.
async fn until_rate_limited(server: &TestServer, token: &str) -> (u32, tern::proto::v1::Error) {
    let mut answered = 0;
    for _ in 0..1_000 {
        match login_with(server, Ipv4Addr::LOCALHOST, token).await {
            Err(Frame::Error(error)) if error.code() == ErrorCode::RateLimited => {
                return (answered, error);
            }
            Ok(_) | Err(Frame::Error(_)) => answered += 1,
            Err(other) => panic!("unexpected answer to Login: {other:?}"),
        }
    }
    panic!("1000 logins from one address in a row, none refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_past_the_per_address_burst_are_refused_before_the_token_is_checked() {
    let server = TestServer::start_with(|c| {
        c.limits.logins_per_ip_per_sec = 1;
        c.limits.login_burst_per_ip = 3;
    })
    .await;
    // Forged tokens use up the burst (each refused for its token) and are then refused for
    // their rate: the token is not even verified.
    let (forged, error) = until_rate_limited(&server, "not-a-token").await;
    assert!(
        forged >= 3,
        "the burst of 3 passed to the token check: {forged}"
    );
    assert_eq!(
        error.message,
        "too many logins from this address; retry later"
    );

    // Good tokens are refused all the same, with the delay until the next login passes.
    let (_, error) = until_rate_limited(&server, &server.token("ann", "phone")).await;
    assert!(
        (1..=1_000).contains(&error.retry_after_ms),
        "a login a second: the next within a second, {error:?}"
    );
    // Another address has its own allowance.
    login_from(&server, OTHER, "ann", "tablet")
        .await
        .expect("a login from another address passes");

    let refused = server
        .metric("tern_abuse_refusals_total{limit=\"logins_per_ip\"}")
        .await;
    assert!(
        refused >= Some(2.0),
        "both refusals are counted: {refused:?}"
    );
    let results = server
        .metric("tern_logins_total{result=\"logins_per_ip\"}")
        .await;
    assert!(results >= Some(2.0), "{results:?}");

    // After the delay it announced, a login from 127.0.0.1 passes again.
    tokio::time::sleep(Duration::from_millis(error.retry_after_ms.into())).await;
    login_from(&server, Ipv4Addr::LOCALHOST, "ann", "phone")
        .await
        .expect("a login after the announced delay passes");
}

/// A logged-in group phone of `user`.
async fn group_phone(server: &TestServer, user: &str, device: &str) -> GroupPhone {
    let (client, _) = server.login(user, device).await;
    GroupPhone::new(client).await
}

fn create_op(subject: &str) -> Op {
    Op::Create(CreateGroup {
        subject: subject.into(),
        members: Vec::new(),
    })
}

fn add_op(group: &str, user: &str) -> Op {
    Op::Add(GroupMembers {
        group_id: group.into(),
        users: vec![user.into()],
    })
}

/// Checks that `response` is a refusal by the per-user limit named `what`.
fn assert_limited(response: &GroupResponse, what: &str) {
    assert_eq!(
        response.error,
        i32::from(ErrorCode::RateLimited),
        "{response:?}"
    );
    assert!(response.message.contains(what), "{response:?}");
    assert!(response.retry_after_ms > 0, "{response:?}");
    assert!(response.result.is_none(), "{response:?}");
}

/// A Send from `phone` to `to` is still acked: the refusal left the connection working.
async fn send_still_works(phone: &mut GroupPhone, to: &str) {
    phone
        .writer
        .send_text("after-refusal", to, "still here")
        .await
        .unwrap();
    let ack = next_matching(&mut phone.reader, |frame| match frame {
        Frame::ServerAck(ack) => Some(ack),
        Frame::Error(error) => panic!("the Send was refused: {error:?}"),
        _ => None,
    })
    .await;
    assert_eq!(ack.client_msg_id, "after-refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_creations_past_the_per_user_limit_are_refused_and_the_connection_goes_on() {
    let server = TestServer::start_with(|c| c.limits.group_creates_per_min = 2).await;
    let mut ann = group_phone(&server, "ann", "phone").await;
    ann.create(&[]).await;
    ann.create(&[]).await;
    let refused = ann.request(create_op("third")).await;
    assert_limited(&refused, "at most 2 a minute");
    // The limit is the user's, not the connection's: ann's tablet is refused too.
    let mut tablet = group_phone(&server, "ann", "tablet").await;
    assert_limited(
        &tablet.request(create_op("fourth")).await,
        "group creations",
    );
    // Another user creates freely, and ann's other requests are not limited.
    let mut bob = group_phone(&server, "bob", "phone").await;
    bob.create(&[]).await;
    let listed = ann.request(Op::List(Default::default())).await;
    assert_eq!(
        listed.error,
        i32::from(ErrorCode::Unspecified),
        "{listed:?}"
    );

    send_still_works(&mut ann, "bob").await;
    let counted = server
        .metric("tern_abuse_refusals_total{limit=\"group_creates\"}")
        .await;
    assert!(counted >= Some(2.0), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_adds_past_the_per_user_limit_are_refused_and_the_connection_goes_on() {
    let server = TestServer::start_with(|c| c.limits.group_adds_per_min = 2).await;
    let mut ann = group_phone(&server, "ann", "phone").await;
    let group = ann.create(&["bob"]).await;
    assert_eq!(ann.change(add_op(&group, "cid")).await, 0);
    assert_eq!(ann.change(add_op(&group, "dan")).await, 0);
    let refused = ann.request(add_op(&group, "eve")).await;
    assert_limited(&refused, "member adds");
    assert!(
        refused.message.contains("at most 2 requests a minute"),
        "{refused:?}"
    );

    // Eve was not added: the group has ann, bob, cid and dan.
    let info = ann
        .request(Op::Info(GroupRef {
            group_id: group.clone(),
            after: String::new(),
        }))
        .await;
    let Some(tern::proto::v1::group_response::Result::Info(info)) = info.result else {
        panic!("no group info: {info:?}");
    };
    let members: Vec<&str> = info.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(members, ["ann", "bob", "cid", "dan"]);
    // Another admin of the group adds on their own allowance.
    let mut bob = group_phone(&server, "bob", "phone").await;
    let promoted = ann
        .change(Op::Promote(GroupMembers {
            group_id: group.clone(),
            users: vec!["bob".into()],
        }))
        .await;
    assert_eq!(promoted, 0);
    assert_eq!(bob.change(add_op(&group, "eve")).await, 0);

    send_still_works(&mut ann, "bob").await;
    let counted = server
        .metric("tern_abuse_refusals_total{limit=\"group_adds\"}")
        .await;
    assert!(counted >= Some(1.0), "{counted:?}");
}
