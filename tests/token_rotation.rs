//! Rotating the token key without logging every phone out: tokens signed with the old key keep
//! working while the old key is listed in `auth.verify_keys`, tokens of the new key work at
//! once, and once the old key is removed its tokens are refused with a clear error.

mod common;

use std::path::Path;

use common::*;
use tern::client::{Client, ClientError};
use tern::clock::now_secs;
use tern::proto::v1::{ErrorCode, server_frame::Frame};
use tern::token::TokenKey;

const SHIPPED_KEY: &str = "token_key = \"tern-development-key-change-me\"";
const SHIPPED_ID: &str = "token_key_id = \"k1\"";
const OLD: &str = "the-old-key-0123456789";
const NEW: &str = "the-new-key-0123456789";

/// Starts a node on `dir`'s data with the shipped configuration's key replaced by `key` and
/// its key id line by `id` (which may add `verify_keys`).
fn start(dir: &Path, key: &str, id: &str) -> ChildNode {
    let key = format!("token_key = \"{key}\"");
    let (config, _) = child_config(dir, &[(SHIPPED_KEY, key.as_str()), (SHIPPED_ID, id)]);
    ChildNode::start(&config, &dir.join("data"))
}

/// Logs in with `token`: Ok, or the refusal's error code and message.
async fn login(node: &ChildNode, token: &str) -> Result<(), (i32, String)> {
    match Client::login(node.client, token, 0).await {
        Ok(_) => Ok(()),
        Err(ClientError::LoginRefused(frame)) => match frame.frame {
            Some(Frame::Error(error)) => Err((error.code, error.message)),
            other => panic!("a refusal that is not an Error: {other:?}"),
        },
        Err(other) => panic!("login failed: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_listed_old_key_work_and_stop_once_it_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expiry = now_secs() + 600;
    let old_token = TokenKey::with_id("k1", OLD.as_bytes())
        .sign("alice", "phone", expiry)
        .expect("sign");
    let new_token = TokenKey::with_id("k2", NEW.as_bytes())
        .sign("bob", "phone", expiry)
        .expect("sign");

    // Before: the old key signs (as k1, the default id).
    let node = start(dir.path(), OLD, SHIPPED_ID);
    login(&node, &old_token).await.expect("old key, before");
    node.kill();

    // During: the new key signs as k2, the old one is still accepted.
    let node = start(
        dir.path(),
        NEW,
        &format!("token_key_id = \"k2\"\nverify_keys = [{{ id = \"k1\", key = \"{OLD}\" }}]"),
    );
    login(&node, &old_token)
        .await
        .expect("old key, while listed");
    login(&node, &new_token).await.expect("new key");
    node.kill();

    // After: the old key is gone, and its tokens with it.
    let node = start(dir.path(), NEW, "token_key_id = \"k2\"");
    let (code, message) = login(&node, &old_token)
        .await
        .expect_err("a token of a removed key is refused");
    assert_eq!(code, ErrorCode::Unauthenticated as i32);
    assert!(message.contains("does not accept"), "{message}");
    login(&node, &new_token).await.expect("new key, after");
    node.kill();
}
