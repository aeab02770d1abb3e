//! Revocations in a cluster (three child-process nodes, replication 3): a device revoked on one
//! node's admin port is signed out on another node and refused at every node's login, also
//! after the leader of the user's slot group is killed (the revocation went through the slot's
//! replicated log), while the user's other devices and tokens issued afterwards log in.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{SETTLE, all_led, group_leader, replicated_three, view};
use common::*;
use tern::client::{Client, ClientError};
use tern::clock::now_secs;
use tern::proto::v1::{ErrorCode, server_frame::Frame};
use tern::token::TokenKey;

/// Logs in with `token` at `addr`, retrying while the cluster answers OVERLOADED (a slot group
/// without a leader for a moment, as a phone would): Ok, or the refusal's code and message.
async fn login(addr: SocketAddr, token: &str) -> Result<Client, (ErrorCode, String)> {
    for _ in 0..100 {
        match tokio::time::timeout(WAIT, Client::login(addr, token, 0))
            .await
            .expect("login timed out")
        {
            Ok((client, _)) => return Ok(client),
            Err(ClientError::LoginRefused(refusal)) => match refusal.frame {
                Some(Frame::Error(error)) if error.code() == ErrorCode::Overloaded => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some(Frame::Error(error)) => return Err((error.code(), error.message)),
                other => panic!("a refusal that is not an Error: {other:?}"),
            },
            Err(other) => panic!("login failed: {other}"),
        }
    }
    panic!("the cluster kept answering OVERLOADED")
}

fn token(key: &TokenKey, user: &str, device: &str, issued_at: u64) -> String {
    key.sign_at(user, device, issued_at, now_secs() + 3600)
        .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_on_one_node_is_refused_on_the_others_and_after_its_leader_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    let key = members[0].key.clone();
    let map = view(members[0].admin()).await;
    // A user whose slot group node 2 or 3 leads: the revocation asked on node 1 crosses the
    // mesh to it.
    let (user, leader) = (0..1000)
        .map(|i| format!("grace-{i}"))
        .find_map(|user| {
            let leader = group_leader(&map, &user).filter(|leader| *leader != 1)?;
            Some((user, leader as usize))
        })
        .expect("a user whose group node 2 or 3 leads");
    // The phone is online on the third node, neither the one asked nor the leader: it is told
    // across the mesh.
    let third = if leader == 2 { 2 } else { 1 };
    let phone_token = token(&key, &user, "phone", now_secs());
    let tablet_token = token(&key, &user, "tablet", now_secs());
    let (mut phone, _phone_out) = login(members[third].client(), &phone_token)
        .await
        .expect("before the revocation")
        .split();

    let (status, body) = admin_post(
        members[0].admin(),
        &format!("/users/{user}/devices/phone/revoke"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let not_before = answer["not_before"].as_u64().expect("not_before");

    closed_with_error(&mut phone, ErrorCode::TokenRevoked).await;
    for member in &members {
        assert_eq!(
            login(member.client(), &phone_token)
                .await
                .err()
                .map(|e| e.0),
            Some(ErrorCode::TokenRevoked),
            "at {}",
            member.client()
        );
    }

    // The leader of the user's slot group dies; another member leads it with the revocation.
    members[leader - 1].node.take().expect("running").kill();
    eventually_within(SETTLE, "the other two lead every group", async || {
        all_led(&members).await
    })
    .await;
    let survivor = members
        .iter()
        .find(|member| member.node.is_some())
        .expect("a node that is up");
    let (code, message) = login(survivor.client(), &phone_token)
        .await
        .err()
        .expect("refused after the leader died");
    assert_eq!(code, ErrorCode::TokenRevoked);
    assert!(message.contains("this device was signed out"), "{message}");
    login(survivor.client(), &tablet_token)
        .await
        .expect("another device of the user");
    login(
        survivor.client(),
        &token(&key, &user, "phone", not_before + 1),
    )
    .await
    .expect("a token issued after the revocation");
}
