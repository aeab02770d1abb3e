//! Shared harness for the black-box tests: starts a real node in-process on loopback port 0 and
//! logs phones in over TCP.

#![allow(dead_code)]

pub mod cluster;
pub mod gateway;
pub mod groups;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tern::client::{Client, ClientError, ClientReader, ClientWriter};
use tern::clock::now_secs;
use tern::config::Config;
use tern::proto::v1::{
    ChatMessage, Deliver, ErrorCode, Login, ReceiptNotice, ServerAck, ServerFrame, Welcome,
    client_frame, deliver, server_frame::Frame,
};
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
    pub media: SocketAddr,
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
    config.media.listen_addr = "127.0.0.1:0".parse().unwrap();
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
        let media = server.media_addr();
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
            media,
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

/// Waits for a server stopped with `tokio::spawn(server.stop())` to finish (fails after
/// [`WAIT`]).
pub async fn stopped(stopping: JoinHandle<()>) {
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("server did not stop")
        .expect("server task");
}

/// Polls `condition` every 10 ms until it holds (fails after [`WAIT`]).
pub async fn eventually(what: &str, condition: impl AsyncFnMut() -> bool) {
    poll(WAIT, Duration::from_millis(10), what, condition).await;
}

/// Polls `condition` every 200 ms until it holds (fails after `limit`): for conditions that
/// take longer than [`WAIT`], such as several checkpoints.
pub async fn eventually_within(limit: Duration, what: &str, condition: impl AsyncFnMut() -> bool) {
    poll(limit, Duration::from_millis(200), what, condition).await;
}

async fn poll(
    limit: Duration,
    every: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers added for the topic test files.
// ---------------------------------------------------------------------------------------------

/// A logged-in phone with its two halves and the Welcome it got.
pub struct Phone {
    pub reader: ClientReader,
    pub writer: ClientWriter,
    pub welcome: Welcome,
}

impl TestServer {
    /// Logs in (user, device) with a resume cursor; nothing after Welcome is read.
    pub async fn phone_at(&self, user: &str, device: &str, resume_after: u64) -> Phone {
        let (client, welcome) = self.login_at(user, device, resume_after).await;
        let (reader, writer) = client.split();
        Phone {
            reader,
            writer,
            welcome,
        }
    }

    /// Logs in (user, device) from the server's cursor; nothing after Welcome is read.
    pub async fn phone(&self, user: &str, device: &str) -> Phone {
        self.phone_at(user, device, 0).await
    }

    /// Logs in a device that has nothing queued: Welcome, then QueueDrained with no Deliver before
    /// it. The phone is ready for live traffic when this returns.
    pub async fn ready(&self, user: &str, device: &str) -> Phone {
        let mut phone = self.phone(user, device).await;
        let (delivered, _) = drain(&mut phone.reader).await;
        assert!(
            delivered.is_empty(),
            "{user}/{device} expected an empty queue, got {delivered:?}"
        );
        phone
    }

    /// A token for (user, device) that expired `ago` seconds before now.
    pub fn expired_token(&self, user: &str, device: &str, ago: u64) -> String {
        self.key
            .sign(user, device, now_secs() - ago)
            .expect("token")
    }

    /// Opens a TCP connection without logging in.
    pub async fn connect(&self) -> Client {
        tokio::time::timeout(WAIT, Client::connect(self.addr))
            .await
            .expect("connect timed out")
            .expect("connect failed")
    }

    /// The value of one exact metric series (`name{labels}` as rendered), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }
}

/// The value of one exact series (`name` or `name{label="x"}`) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A Login frame with an explicit protocol version.
pub fn login_frame(protocol_version: u32, token: &str, resume_after: u64) -> client_frame::Frame {
    client_frame::Frame::Login(Login {
        protocol_version,
        token: token.to_owned(),
        resume_after,
        user_agent: "tern-tests".to_owned(),
    })
}

/// Reads Deliver frames until QueueDrained; returns them and QueueDrained's `last_seq`. Any other
/// frame fails the test (Presence and Pong excepted).
pub async fn drain(reader: &mut ClientReader) -> (Vec<Deliver>, u64) {
    let mut delivered = Vec::new();
    loop {
        match next(reader).await {
            Frame::Deliver(d) => delivered.push(d),
            Frame::QueueDrained(q) => return (delivered, q.last_seq),
            Frame::Presence(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame while draining the queue: {other:?}"),
        }
    }
}

/// Reads chat messages until QueueDrained, acking each one; returns (seq, client_msg_id) in the
/// order received. Any other frame fails the test.
pub async fn drain_acking(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
) -> Vec<(u64, String)> {
    let mut delivered = Vec::new();
    loop {
        match next(reader).await {
            Frame::Deliver(d) => {
                let Some(deliver::Payload::Message(m)) = d.payload else {
                    panic!("unexpected payload {:?}", d.payload);
                };
                delivered.push((d.seq, m.client_msg_id));
                writer.ack(d.seq).await.expect("ack");
            }
            Frame::QueueDrained(_) => return delivered,
            other => panic!("unexpected frame while draining the queue: {other:?}"),
        }
    }
}

static NONCE: AtomicU64 = AtomicU64::new(1);

/// Sends a Ping and returns every frame received before its Pong. Frames the server queued for
/// this connection before handling the Ping arrive before the Pong, so this proves what was (and
/// was not) sent up to now.
pub async fn sync(reader: &mut ClientReader, writer: &mut ClientWriter) -> Vec<Frame> {
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    writer.ping(nonce).await.expect("ping");
    let mut before = Vec::new();
    loop {
        match next(reader).await {
            Frame::Pong(pong) if pong.nonce == nonce => return before,
            other => before.push(other),
        }
    }
}

/// Waits for the next ServerAck, skipping Deliver/Typing/Presence/Pong; an Error fails the test.
pub async fn next_ack(reader: &mut ClientReader) -> ServerAck {
    loop {
        match next(reader).await {
            Frame::ServerAck(ack) => return ack,
            Frame::Error(error) => panic!("expected a ServerAck, got {error:?}"),
            Frame::GoAway(go_away) => panic!("expected a ServerAck, got {go_away:?}"),
            _ => {}
        }
    }
}

/// Waits for the next Deliver, skipping ServerAck/Typing/Presence/Pong; an Error fails the test.
pub async fn next_deliver(reader: &mut ClientReader) -> Deliver {
    loop {
        match next(reader).await {
            Frame::Deliver(d) => return d,
            Frame::Error(error) => panic!("expected a Deliver, got {error:?}"),
            Frame::GoAway(go_away) => panic!("expected a Deliver, got {go_away:?}"),
            _ => {}
        }
    }
}

/// Waits for the next Error frame (skipping anything else) and checks its code.
pub async fn next_error(reader: &mut ClientReader, code: ErrorCode) -> tern::proto::v1::Error {
    let error = next_matching(reader, |f| match f {
        Frame::Error(e) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(error.code(), code, "unexpected error frame: {error:?}");
    error
}

/// Waits until the server closes the connection and checks that the last frame before the close
/// was an Error with `code`; returns it.
pub async fn closed_with_error(
    reader: &mut ClientReader,
    code: ErrorCode,
) -> tern::proto::v1::Error {
    let frames = until_closed(reader).await;
    match frames.last() {
        Some(Frame::Error(error)) => {
            assert_eq!(error.code(), code, "wrong error before close: {frames:?}");
            error.clone()
        }
        _ => panic!("expected an Error {code:?} before the close, got {frames:?}"),
    }
}

/// The chat message a Deliver carries (fails the test for a receipt).
pub fn chat(d: &Deliver) -> &ChatMessage {
    match &d.payload {
        Some(deliver::Payload::Message(m)) => m,
        other => panic!("expected a chat message at seq {}, got {other:?}", d.seq),
    }
}

/// The receipt notice a Deliver carries (fails the test for a chat message).
pub fn receipt_notice(d: &Deliver) -> &ReceiptNotice {
    match &d.payload {
        Some(deliver::Payload::Receipt(r)) => r,
        other => panic!("expected a receipt at seq {}, got {other:?}", d.seq),
    }
}

/// The body of a delivered chat message as text.
pub fn body(d: &Deliver) -> String {
    String::from_utf8(chat(d).body.to_vec()).expect("utf-8 body")
}

/// A node running as a child process (`tern serve`), killed when dropped so a failing test
/// leaves nothing behind.
pub struct ChildNode {
    pub child: std::process::Child,
    pub client: SocketAddr,
    pub admin: SocketAddr,
    pub media: SocketAddr,
}

/// Where a child node's log goes unless `TERN_CHILD_LOG` names a file: beside its data
/// directory.
fn stderr_file(data: &Path) -> std::path::PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".stderr.log");
    std::path::PathBuf::from(name)
}

impl ChildNode {
    /// Starts `tern serve --config CONFIG --data-dir DATA` and waits for its ready line.
    pub fn start(config: &Path, data: &Path) -> Self {
        Self::start_with_env(config, data, &[])
    }

    /// [`ChildNode::start`] with extra environment variables for the child.
    pub fn start_with_env(config: &Path, data: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let log = match std::env::var_os("TERN_CHILD_LOG") {
            // Debugging aid: TERN_CHILD_LOG=FILE appends the children's logs to FILE.
            Some(file) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .expect("log file"),
            ),
            // Kept beside the data directory, so that a node that fails to start says why.
            None => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(stderr_file(data))
                    .expect("log file"),
            ),
        };
        Self::spawn(config, data, env, log)
    }

    /// [`ChildNode::start_with_env`] with the child's log kept in a pipe, for
    /// [`ChildNode::exited`] to read.
    pub fn start_keeping_log(config: &Path, data: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::spawn(config, data, env, std::process::Stdio::piped())
    }

    fn spawn(
        config: &Path,
        data: &Path,
        env: &[(&str, &std::ffi::OsStr)],
        log: std::process::Stdio,
    ) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .envs(env.iter().copied())
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn tern");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| {
                    let log = std::fs::read_to_string(stderr_file(data)).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "no {name} in {line:?}; the node's log ends with:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .parse()
                .expect("address")
        };
        Self {
            client: field("client="),
            admin: field("admin="),
            media: field("media="),
            child,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (generously) for the process to exit on its own; returns its exit code and its log
    /// (empty unless started with [`ChildNode::start_keeping_log`]).
    pub fn exited(mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node kept running; it was expected to exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut log);
        }
        (status.code(), log)
    }
}

/// Logs `user`'s `device` in to the node at `addr` with a token of `key` valid ten minutes.
pub async fn child_login(addr: SocketAddr, key: &TokenKey, user: &str, device: &str) -> Client {
    let token = key.sign(user, device, now_secs() + 600).expect("token");
    let (client, _) = Client::login(addr, &token, 0).await.expect("login");
    client
}

/// What a child node runs from, in a temporary directory: its config file (the shipped
/// `cluster.toml` with edits), its data directory, and the key that signs its tokens.
pub struct ChildFiles {
    pub config_path: std::path::PathBuf,
    pub config: Config,
    pub data: std::path::PathBuf,
    pub key: TokenKey,
    _dir: tempfile::TempDir,
}

impl ChildFiles {
    /// The shipped config with each (from, to) replacement applied (see [`child_config`]).
    pub fn new(replacements: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config_path, config) = child_config(dir.path(), replacements);
        let key = TokenKey::new(config.auth.token_key.as_bytes());
        let data = dir.path().join("data");
        Self {
            config_path,
            config,
            data,
            key,
            _dir: dir,
        }
    }

    /// Starts a node from these files.
    pub fn start(&self) -> ChildNode {
        ChildNode::start(&self.config_path, &self.data)
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config edits that run write-back and checkpoints every second (instead of 20 s / 5 s).
pub const FAST_WRITEBACK: [(&str, &str); 2] = [
    ("writeback_delay_secs = 20", "writeback_delay_secs = 1"),
    (
        "checkpoint_interval_secs = 5",
        "checkpoint_interval_secs = 1",
    ),
];

/// Writes the shipped `cluster.toml` with ports 0 and each (from, to) replacement applied to
/// `dir/node.toml`; returns its path and the parsed config.
pub fn child_config(dir: &Path, replacements: &[(&str, &str)]) -> (std::path::PathBuf, Config) {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml"))
            .expect("cluster.toml");
    let mut text = shipped
        .replace("127.0.0.1:7400", "127.0.0.1:0")
        .replace("127.0.0.1:7401", "127.0.0.1:0")
        .replace("127.0.0.1:7402", "127.0.0.1:0")
        .replacen(
            "[auth]\n",
            &format!("[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
            1,
        );
    for (from, to) in replacements {
        assert!(text.contains(from), "cluster.toml has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::parse(&path, &text).expect("test config");
    (path, config)
}

/// Waits (at most a minute) for the node to exit and returns how it ended.
pub async fn wait_for_exit(mut node: ChildNode) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = node.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .expect("waiter")
}

/// The admin token of every node [`child_config`] writes.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Sends an admin action (`POST path`) to `admin` with [`ADMIN_TOKEN`]: the status and body.
pub async fn admin_post(admin: SocketAddr, path: &str) -> (u16, String) {
    tern::admin::request::request(admin, "POST", path, Some(ADMIN_TOKEN))
        .await
        .expect("admin port answers")
}

/// (recipient, client_msg_id) -> the seq its ack named.
pub type Acked = std::collections::HashMap<(String, String), u64>;

/// Books one answer to a send (`recipient` by `client_msg_id` in `in_flight`): an ack moves it
/// to `acked` with its seq; a refusal drops it (not acked, not counted); anything else is
/// ignored.
pub fn book(
    frame: Option<tern::proto::v1::server_frame::Frame>,
    in_flight: &mut std::collections::HashMap<String, String>,
    acked: &mut Acked,
) {
    use tern::proto::v1::server_frame::Frame;
    match frame {
        Some(Frame::ServerAck(ack)) => {
            let recipient = in_flight
                .remove(&ack.client_msg_id)
                .expect("ack of a known send");
            acked.insert((recipient, ack.client_msg_id), ack.seq);
        }
        Some(Frame::Error(error)) => {
            in_flight.remove(&error.client_msg_id);
        }
        _ => {}
    }
}

/// Stops the senders and gathers what they were acked; fails with fewer than 100 acks (too
/// few to prove anything).
pub async fn stop_senders(
    stop: &std::sync::atomic::AtomicBool,
    senders: Vec<tokio::task::JoinHandle<Acked>>,
) -> Acked {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Acked::new();
    for sender in senders {
        acked.extend(sender.await.expect("sender"));
    }
    assert!(
        acked.len() > 100,
        "too few acks to prove anything: {}",
        acked.len()
    );
    acked
}

/// The acked ids of each recipient by seq; panics if two acks named one seq of a recipient.
pub fn by_recipient(
    acked: &Acked,
) -> std::collections::HashMap<String, std::collections::BTreeMap<u64, String>> {
    let mut expected: std::collections::HashMap<String, std::collections::BTreeMap<u64, String>> =
        std::collections::HashMap::new();
    for ((recipient, id), seq) in acked {
        let previous = expected
            .entry(recipient.clone())
            .or_default()
            .insert(*seq, id.clone());
        assert!(
            previous.is_none(),
            "two acks named seq {seq} of {recipient}"
        );
    }
    expected
}

/// Checks what `recipient` drained against what was acked to it: in seq order, no id twice,
/// every acked id at the seq its ack named.
pub fn check_drained(
    recipient: &str,
    delivered: Vec<(u64, String)>,
    acked: &std::collections::BTreeMap<u64, String>,
) {
    let seqs: Vec<u64> = delivered.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{recipient}: out of order {seqs:?}"
    );
    let mut ids: Vec<&String> = delivered.iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "{recipient}: duplicates");
    let delivered: std::collections::HashMap<u64, String> = delivered.into_iter().collect();
    for (seq, id) in acked {
        assert_eq!(
            delivered.get(seq),
            Some(id),
            "{recipient}: acked {id} at seq {seq} was lost"
        );
    }
}
