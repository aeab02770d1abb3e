//! `tern-load chat-cli` as a person runs it: a login the node refuses ends the client with one
//! readable line on stderr, not a dump of the server's frame.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tern::config::Config;
use tern::server::{Listeners, Server};
use tokio::sync::oneshot;

const TERN_LOAD: &str = env!("CARGO_BIN_EXE_tern-load");

/// The shipped configuration (at the workspace's root).
fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("cluster.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(&shipped_config()).unwrap();
    config.node.client_addr = "127.0.0.1:0".parse().unwrap();
    config.node.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.media.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.node.data_dir = dir.path().to_owned();
    // chat-cli signs its token with the shipped key; the node verifies with another one.
    config.auth.token_key = "a-key-that-chat-cli-does-not-know".to_owned();
    let listeners = Listeners::bind(&config).await.unwrap();
    let server = Server::start(config, listeners).await.unwrap();
    let addr = server.client_addr().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let output = tokio::task::spawn_blocking(move || {
        Command::new(TERN_LOAD)
            // The key from the environment would win over the file's.
            .env_remove("TERN_TOKEN_KEY")
            .args(["chat-cli", "--server", &addr, "--user", "alice", "--config"])
            .arg(shipped_config())
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("tern-load:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(
        line.contains("login refused: UNAUTHENTICATED: invalid token"),
        "{line}"
    );
    assert!(!stderr.contains("ServerFrame"), "{stderr}");

    let _ = stop.send(());
    node.await.unwrap().unwrap();
}
