//! `tern-load` over TLS against a node whose client port speaks TLS with a certificate from
//! `tern certs`: idle phones and a chatting pair log in, handshakes that fail are counted with
//! the failed connections (a client that trusts another CA cannot run at all), and chat-cli
//! logs in and leaves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tern::certs::{CertsMade, CertsRequest, make};
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

fn certs(dir: &Path) -> CertsMade {
    make(&CertsRequest {
        dir: dir.to_owned(),
        nodes: vec!["tern-1".into()],
        hosts: Vec::new(),
        valid_for: Duration::from_secs(3600),
        backdate: Duration::from_secs(60),
    })
    .unwrap()
}

/// Runs tern-load with `args` (stdin closed) and returns its output.
async fn tern_load(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(TERN_LOAD)
            // The key from the environment would win over the file's.
            .env_remove("TERN_TOKEN_KEY")
            .args(&args)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .unwrap()
}

/// The last line of stdout, parsed.
fn report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}) in: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_chat_and_chat_cli_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs(&dir.path().join("certs"));
    let stranger = certs(&dir.path().join("other"));
    let mut config = Config::load(&shipped_config()).unwrap();
    config.node.client_addr = "127.0.0.1:0".parse().unwrap();
    config.node.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.media.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.node.data_dir = dir.path().join("data");
    config.tls.cert_file = Some(made.nodes[0].1.clone());
    config.tls.key_file = Some(made.nodes[0].2.clone());
    let listeners = Listeners::bind(&config).await.unwrap();
    let server = Server::start(config, listeners).await.unwrap();
    let addr = server.client_addr().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let config_path = shipped_config().to_string_lossy().into_owned();
    let tls_to = |servers: &str, ca: &Path| {
        vec![
            "--server".to_owned(),
            servers.to_owned(),
            "--config".to_owned(),
            config_path.clone(),
            "--tls".to_owned(),
            "--ca-file".to_owned(),
            ca.to_string_lossy().into_owned(),
        ]
    };
    let with_to = |scenario: &[&str], servers: &str, ca: &Path| {
        let mut args: Vec<String> = scenario.iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(tls_to(servers, ca));
        args
    };
    let with = |scenario: &[&str], ca: &Path| with_to(scenario, &addr, ca);

    let idle = tern_load(with(
        &[
            "idle",
            "--connections",
            "6",
            "--duration",
            "0.2",
            "--settle",
            "0",
            "--json",
        ],
        &made.ca_cert,
    ))
    .await;
    let figures = report(&idle);
    assert_eq!(idle.status.code(), Some(0), "{figures}");
    assert_eq!(figures["connected"], 6, "{figures}");
    assert_eq!(figures["tls"], true, "{figures}");
    assert_eq!(figures["tls_handshake_failures"], 0, "{figures}");

    let chat = tern_load(with(
        &[
            "chat",
            "--connections",
            "2",
            "--duration",
            "1",
            "--rate",
            "20",
            "--json",
        ],
        &made.ca_cert,
    ))
    .await;
    let figures = report(&chat);
    assert_eq!(chat.status.code(), Some(0), "{figures}");
    assert!(figures["delivered"].as_u64().unwrap_or(0) > 0, "{figures}");
    assert_eq!(figures["lost"], 0, "{figures}");

    // Every other phone dialed to an address that accepts and hangs up: half the handshakes
    // fail, are counted as such, and the run reports them.
    let hang_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_up_addr = hang_up.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hang_up.accept().await {
            drop(socket);
        }
    });
    let half = tern_load(with_to(
        &[
            "idle",
            "--connections",
            "4",
            "--duration",
            "0",
            "--settle",
            "0",
            "--json",
            "--user-prefix",
            "half-",
        ],
        &format!("{addr},{hang_up_addr}"),
        &made.ca_cert,
    ))
    .await;
    let figures = report(&half);
    assert_eq!(half.status.code(), Some(1), "{figures}");
    assert_eq!(figures["connected"], 2, "{figures}");
    assert_eq!(figures["failed"], 2, "{figures}");
    assert_eq!(figures["tls_handshake_failures"], 2, "{figures}");

    // Trusting another CA, no phone gets in: the run cannot go on and says why.
    let untrusting = tern_load(with(
        &[
            "idle",
            "--connections",
            "3",
            "--duration",
            "0",
            "--settle",
            "0",
            "--user-prefix",
            "untrusting-",
        ],
        &stranger.ca_cert,
    ))
    .await;
    let stderr = String::from_utf8_lossy(&untrusting.stderr);
    assert_eq!(untrusting.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("3 of 3 connections"), "{stderr}");
    assert!(stderr.contains("TLS handshake with"), "{stderr}");

    // chat-cli logs in through Roaming over TLS; stdin is closed, so it leaves at once.
    let cli = tern_load(with(&["chat-cli", "--user", "carol"], &made.ca_cert)).await;
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(
        cli.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(stdout.contains(&format!("connected to {addr}")), "{stdout}");

    let _ = stop.send(());
    node.await.unwrap().unwrap();
}
