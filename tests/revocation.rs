//! Revoking tokens before they expire (`POST /users/{user}[/devices/{device}]/revoke`, `tern
//! revoke`): a signed-out device's tokens issued up to the revocation are refused at login with
//! TOKEN_REVOKED and its live session is closed, while the user's other devices stay; a token
//! issued after the revocation works; revoking the user refuses every device; the revocation
//! survives a SIGKILL right after its answer, and later restarts that load it from the store;
//! the endpoints need the admin token.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use tern::admin::request::request;
use tern::client::{Client, ClientError};
use tern::clock::now_secs;
use tern::proto::v1::{ErrorCode, server_frame::Frame};
use tern::token::TokenKey;

/// Logs in with `token`: Ok, or the refusal's error code and message.
async fn login(addr: SocketAddr, token: &str) -> Result<(), (ErrorCode, String)> {
    match tokio::time::timeout(WAIT, Client::login(addr, token, 0))
        .await
        .expect("login timed out")
    {
        Ok(_) => Ok(()),
        Err(ClientError::LoginRefused(frame)) => match frame.frame {
            Some(Frame::Error(error)) => Err((error.code(), error.message)),
            other => panic!("a refusal that is not an Error: {other:?}"),
        },
        Err(other) => panic!("login failed: {other}"),
    }
}

/// A token of `key` for (user, device) issued at `issued_at`, good for an hour.
fn token_issued_at(key: &TokenKey, user: &str, device: &str, issued_at: u64) -> String {
    key.sign_at(user, device, issued_at, now_secs() + 3600)
        .expect("token")
}

/// An in-process node whose admin token is [`ADMIN_TOKEN`].
async fn server() -> TestServer {
    TestServer::start_with(|config| config.auth.admin_token = ADMIN_TOKEN.to_owned()).await
}

/// `POST path` with the admin token, answered 200: the `not_before` of the answer.
async fn revoke(admin: SocketAddr, path: &str) -> u64 {
    let (status, body) = admin_post(admin, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    answer["not_before"].as_u64().expect("not_before")
}

/// The frames before a Pong hold no Error and no GoAway: the session is still open.
async fn still_open(phone: &mut Phone) {
    let frames = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(
        !frames
            .iter()
            .any(|frame| matches!(frame, Frame::Error(_) | Frame::GoAway(_))),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_and_signed_out_while_the_other_devices_stay() {
    let server = server().await;
    let mut phone = server.ready("alice", "phone").await;
    let mut tablet = server.ready("alice", "tablet").await;
    let before = now_secs();
    let phone_token = server.token("alice", "phone");
    let tablet_token = server.token("alice", "tablet");

    let not_before = revoke(server.admin, "/users/alice/devices/phone/revoke").await;
    assert!(not_before >= before, "{not_before} < {before}");

    // The phone's session is closed; the tablet's is not.
    let error = closed_with_error(&mut phone.reader, ErrorCode::TokenRevoked).await;
    assert!(error.message.contains("token revoked"), "{error:?}");
    still_open(&mut tablet).await;

    // The phone's token, issued before, is refused; the tablet's works.
    let (code, message) = login(server.addr, &phone_token)
        .await
        .expect_err("a token issued before the revocation");
    assert_eq!(code, ErrorCode::TokenRevoked);
    assert_eq!(
        message,
        "token revoked: issued before this device was signed out"
    );
    login(server.addr, &tablet_token)
        .await
        .expect("another device of the user");
    // A token issued in the second of the revocation is refused too; one after it works.
    let same_second = token_issued_at(&server.key, "alice", "phone", not_before);
    assert_eq!(
        login(server.addr, &same_second).await.map_err(|e| e.0),
        Err(ErrorCode::TokenRevoked)
    );
    let fresh = token_issued_at(&server.key, "alice", "phone", not_before + 1);
    login(server.addr, &fresh)
        .await
        .expect("a token issued after the revocation");

    // Revoking again moves the time on: the fresh token is refused now.
    let again = revoke(server.admin, "/users/alice/devices/phone/revoke").await;
    assert!(again >= not_before);
    let later = token_issued_at(&server.key, "alice", "phone", again);
    assert_eq!(
        login(server.addr, &later).await.map_err(|e| e.0),
        Err(ErrorCode::TokenRevoked)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_refuses_every_device_and_signs_them_all_out() {
    let server = server().await;
    let mut phone = server.ready("carol", "phone").await;
    let mut tablet = server.ready("carol", "tablet").await;
    let mut other = server.ready("dave", "phone").await;
    let tokens: Vec<String> = ["phone", "tablet", "laptop"]
        .iter()
        .map(|device| server.token("carol", device))
        .collect();

    let (status, body) = admin_post(server.admin, "/users/carol/revoke").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["user"], "carol");
    assert!(answer["device"].is_null(), "{answer}");
    let not_before = answer["not_before"].as_u64().expect("not_before");

    for reader in [&mut phone.reader, &mut tablet.reader] {
        closed_with_error(reader, ErrorCode::TokenRevoked).await;
    }
    still_open(&mut other).await;
    // Every device's token issued before is refused, one never seen before included.
    for token in &tokens {
        let (code, message) = login(server.addr, token)
            .await
            .expect_err("a token of the revoked user");
        assert_eq!(code, ErrorCode::TokenRevoked);
        assert_eq!(
            message,
            "token revoked: issued before this user was signed out"
        );
    }
    login(server.addr, &server.token("dave", "tablet"))
        .await
        .expect("another user");
    for device in ["phone", "laptop"] {
        let fresh = token_issued_at(&server.key, "carol", device, not_before + 1);
        login(server.addr, &fresh)
            .await
            .expect("a token issued after the revocation");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_endpoints_need_the_admin_token() {
    let server = server().await;
    let token = server.token("erin", "phone");
    for path in ["/users/erin/revoke", "/users/erin/devices/phone/revoke"] {
        let missing = request(server.admin, "POST", path, None).await;
        assert_eq!(missing.expect("answers").0, 401, "{path}");
        let wrong = request(server.admin, "POST", path, Some("not-the-admin-token")).await;
        assert_eq!(wrong.expect("answers").0, 401, "{path}");
    }
    assert_eq!(
        server
            .metric("tern_admin_refusals_total{reason=\"bad_token\"}")
            .await,
        Some(4.0)
    );
    // An invalid id is refused before anything is stored.
    let (status, body) = admin_post(server.admin, "/users/erin/devices/a:b/revoke").await;
    assert_eq!(status, 400, "{body}");
    login(server.addr, &token)
        .await
        .expect("nothing was revoked");
    server.stop().await;

    // A node without an admin token takes no revocation at all.
    let open = TestServer::start().await;
    let (status, _) = admin_post(open.admin, "/users/erin/revoke").await;
    assert_eq!(status, 403);
    login(open.addr, &open.token("erin", "phone"))
        .await
        .expect("nothing was revoked");
    open.stop().await;
}

/// Runs `tern revoke` for the node with `config` at `admin`: its exit code and its output.
async fn tern_revoke(
    config: &Path,
    admin: SocketAddr,
    user: &str,
    device: &str,
) -> (Option<i32>, String) {
    let (config, user, device) = (config.to_owned(), user.to_owned(), device.to_owned());
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["revoke", "--config"])
            .arg(&config)
            .args(["--admin", &admin.to_string(), "--user", &user])
            .args(["--device", &device])
            .output()
            .expect("tern revoke");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    })
    .await
    .expect("revoke runner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_a_kill_right_after_its_answer_and_later_restarts() {
    // No checkpoint at first: the revocation is only in the journal when the node is killed.
    const NO_CHECKPOINT: (&str, &str) = (
        "checkpoint_interval_secs = 5",
        "checkpoint_interval_secs = 3600",
    );
    let files = ChildFiles::new(&[NO_CHECKPOINT]);
    let node = files.start();
    let phone_token = token_issued_at(&files.key, "frank", "phone", now_secs());
    let tablet_token = token_issued_at(&files.key, "frank", "tablet", now_secs());
    login(node.client, &phone_token)
        .await
        .expect("before the revocation");

    let (code, output) = tern_revoke(&files.config_path, node.admin, "frank", "phone").await;
    assert_eq!(code, Some(0), "{output}");
    let not_before: u64 = output
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no time in {output:?}"));
    assert!(output.contains("revoked frank/phone"), "{output}");
    // Killed as soon as the answer came: the revocation is only as durable as its record.
    node.kill();

    let node = files.start();
    assert_eq!(
        login(node.client, &phone_token).await.map_err(|e| e.0),
        Err(ErrorCode::TokenRevoked)
    );
    login(node.client, &tablet_token)
        .await
        .expect("another device of the user");
    let text = http_get(node.admin, "/metrics").await;
    assert_eq!(
        metric_value(&text, "tern_logins_total{result=\"revoked\"}"),
        Some(1.0)
    );
    node.kill();

    // With checkpoints every second, the revocation is saved in the stored account and its
    // journal record is released: it holds across another kill.
    let config = std::fs::read_to_string(&files.config_path).expect("config");
    let config = [FAST_WRITEBACK[0], (NO_CHECKPOINT.1, FAST_WRITEBACK[1].1)]
        .iter()
        .fold(config, |text, (from, to)| text.replace(from, to));
    std::fs::write(&files.config_path, config).expect("config");
    let node = files.start();
    let text = http_get(node.admin, "/metrics").await;
    let checkpoints = |text: &str| metric_value(text, "tern_checkpoints_total").unwrap_or(0.0);
    let first = checkpoints(&text);
    eventually("two more checkpoints", async || {
        checkpoints(&http_get(node.admin, "/metrics").await) >= first + 2.0
    })
    .await;
    node.kill();
    let node = files.start();
    assert_eq!(
        login(node.client, &phone_token).await.map_err(|e| e.0),
        Err(ErrorCode::TokenRevoked)
    );
    let fresh = token_issued_at(&files.key, "frank", "phone", not_before + 1);
    login(node.client, &fresh)
        .await
        .expect("a token issued after the revocation");
    node.kill();
}
