//! Shared harness for the black-box tests: starts a real node in-process on loopback port 0 and
//! logs phones in over TCP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern::client::{Client, ClientError, ClientReader};
use tern::clock::now_secs;
use tern::config::Config;
use tern::proto::v1::{ServerFrame, Welcome, server_frame::Frame};
use tern::server::{Listeners, Server};
use tern::token::TokenKey;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for an expected frame before failing (generous: CI machines are slow;
/// this bounds a hang, it is not a timing assertion).
pub const WAIT: Duration = Duration::from_secs(20);

/// A node running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub key: TokenKey,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The shipped configuration with ports set to 0 and data in a temporary directory.
pub fn test_config(dir: &Path) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
    let mut config = Config::load(&path).expect("cluster.toml");
    config.node.client_addr = "127.0.0.1:0".parse().unwrap();
    config.node.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.node.data_dir = dir.to_owned();
    config
}

impl TestServer {
    /// Starts a node with the shipped defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `edit` adjusts the configuration.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        edit(&mut config);
        let problems = config.validate();
        assert!(problems.is_empty(), "test config invalid: {problems:?}");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let server = Server::start(config.clone(), listeners)
            .await
            .expect("start");
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.client_addr();
        let admin = server.admin_addr();
        let task = tokio::spawn(async move {
            server
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server stopped with an error");
        });
        Self {
            addr,
            admin,
            key: TokenKey::new(config.auth.token_key.as_bytes()),
            config,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A valid token for (user, device), good for an hour.
    pub fn token(&self, user: &str, device: &str) -> String {
        self.key
            .sign(user, device, now_secs() + 3600)
            .expect("token")
    }

    /// Connects and logs in (user, device) with a resume cursor.
    pub async fn login_at(&self, user: &str, device: &str, resume_after: u64) -> (Client, Welcome) {
        tokio::time::timeout(
            WAIT,
            Client::login(self.addr, &self.token(user, device), resume_after),
        )
        .await
        .expect("login timed out")
        .expect("login failed")
    }

    /// Connects and logs in (user, device) from the server's cursor.
    pub async fn login(&self, user: &str, device: &str) -> (Client, Welcome) {
        self.login_at(user, device, 0).await
    }

    /// The admin server's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await
    }

    /// Stops the node gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

/// A minimal HTTP/1.1 GET over a raw TCP socket; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("admin write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("admin read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Waits for the next frame (fails the test after [`WAIT`]).
pub async fn next(reader: &mut ClientReader) -> Frame {
    tokio::time::timeout(WAIT, reader.recv_frame())
        .await
        .expect("timed out waiting for a frame")
        .expect("connection failed")
}

/// Waits for the next frame for which `pick` returns `Some`, skipping others (Pong, Presence...).
pub async fn next_matching<T>(
    reader: &mut ClientReader,
    mut pick: impl FnMut(Frame) -> Option<T>,
) -> T {
    loop {
        if let Some(found) = pick(next(reader).await) {
            return found;
        }
    }
}

/// Waits until the server closes the connection; returns the frames received before that.
pub async fn until_closed(reader: &mut ClientReader) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, reader.recv())
            .await
            .expect("timed out waiting for close")
        {
            Ok(Some(ServerFrame { frame: Some(frame) })) => frames.push(frame),
            Ok(Some(ServerFrame { frame: None })) => {}
            Ok(None) | Err(ClientError::Io(_)) | Err(ClientError::Closed) => return frames,
            Err(error) => panic!("unexpected client error: {error}"),
        }
    }
}

/// Polls `condition` every 10 ms until it holds (fails after [`WAIT`]).
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
