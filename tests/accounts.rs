//! Accounts and devices are durable records: after a write-back pass and a SIGKILL, the admin
//! API still lists a user's devices with their login times and cursors.

mod common;

use common::*;
use tern::client::Client;
use tern::clock::now_secs;
use tern::proto::v1::server_frame::Frame;
use tern::token::TokenKey;

async fn account(node: &ChildNode, user: &str) -> serde_json::Value {
    let body = http_get(node.admin, &format!("/accounts/{user}")).await;
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_login_times_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &FAST_WRITEBACK);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let data = dir.path().join("data");
    let node = ChildNode::start(&config_path, &data);

    for device in ["phone", "laptop"] {
        let token = key.sign("alice", device, now_secs() + 600).unwrap();
        let (client, _) = Client::login(node.client, &token, 0).await.unwrap();
        let (mut reader, _writer) = client.split();
        next_matching(&mut reader, |f| {
            matches!(f, Frame::QueueDrained(_)).then_some(())
        })
        .await;
    }
    let before = account(&node, "alice").await;
    let devices: Vec<&str> = before["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["laptop", "phone"]);
    assert!(before["devices"][1]["first_login_ms"].as_u64().unwrap() > 0);
    assert_eq!(before["devices"][1]["cursor"].as_u64(), Some(0));
    assert!(
        http_get(node.admin, "/accounts/nobody")
            .await
            .contains("no such account")
    );

    // A write-back pass stores the account; then the process dies without warning.
    let admin = node.admin;
    let checkpoints = metric_value(&http_get(admin, "/metrics").await, "tern_checkpoints_total");
    eventually("a write-back pass after the logins", async || {
        let now = metric_value(&http_get(admin, "/metrics").await, "tern_checkpoints_total");
        now.unwrap_or(0.0) >= checkpoints.unwrap_or(0.0) + 2.0
    })
    .await;
    node.kill();

    let node = ChildNode::start(&config_path, &data);
    let after = account(&node, "alice").await;
    assert_eq!(after["devices"], before["devices"], "devices or times lost");
    assert_eq!(after["created_ms"], before["created_ms"]);
}
