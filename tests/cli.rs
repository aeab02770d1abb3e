//! The `tern` binary as an operator runs it: the ready line, token printing, config errors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use tern::client::Client;
use tern::proto::v1::server_frame::Frame;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

#[test]
fn invalid_config_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[node]\nid = \"\"\n[auth]\ntoken_key = \"short\"\n[dispatch]\nworkers_per_shard = 0\n",
    )
    .unwrap();
    let output = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in ["node.id", "auth.token_key", "dispatch.workers_per_shard"] {
        assert!(stderr.contains(problem), "{problem} missing from: {stderr}");
    }
}

#[test]
fn token_command_signs_with_the_configured_key() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.toml");
    let output = Command::new(TERN)
        .args([
            "token", "--config", config, "--user", "alice", "--device", "cli", "--ttl", "60",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    let parsed = tern::config::Config::load(std::path::Path::new(config)).unwrap();
    let key = tern::token::TokenKey::new(parsed.auth.token_key.as_bytes());
    let claims = key.verify(token.trim(), tern::clock::now_secs()).unwrap();
    assert_eq!(
        (claims.user.as_str(), claims.device.as_str()),
        ("alice", "cli")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_ready_line_accepts_phones_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.toml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:7400", "127.0.0.1:0")
        .replace("127.0.0.1:7401", "127.0.0.1:0")
        .replace("127.0.0.1:7402", "127.0.0.1:0");
    let path = dir.path().join("node.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let mut child = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let client_addr = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix("client="))
        .unwrap_or_else(|| panic!("no client= in ready line {line:?}"))
        .to_owned();
    assert!(
        line.starts_with("tern ready client=")
            && line.contains(" admin=")
            && line.contains(" media="),
        "{line}"
    );
    assert!(dir.path().join("data").is_dir(), "--data-dir was not used");

    let parsed = tern::config::Config::parse(&path, &config).unwrap();
    let key = tern::token::TokenKey::new(parsed.auth.token_key.as_bytes());
    let token = key
        .sign("alice", "phone", tern::clock::now_secs() + 60)
        .unwrap();
    let (client, welcome) = Client::login(client_addr.as_str(), &token, 0)
        .await
        .unwrap();
    assert_eq!(welcome.user, "alice");
    let (mut reader, _writer) = client.split();
    assert!(matches!(next(&mut reader).await, Frame::QueueDrained(_)));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let frames = until_closed(&mut reader).await;
    assert!(
        frames.iter().any(|f| matches!(f, Frame::GoAway(_))),
        "expected GoAway before the close, got {frames:?}"
    );
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "tern exited with {exit}");
}
