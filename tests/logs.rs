//! The node's log as an operator's tooling reads it: `tern serve` runs as a child process with
//! stderr to a pipe (so not a terminal): no colour codes, JSON lines with `--log-format json`,
//! refused logins with their reason and the phone's address (in the connection's span at debug,
//! in the line itself at the default level, where a flood of them writes a bounded number of
//! lines), an invalid `RUST_LOG` refused, and one recovery summary at start rather than a line
//! per mailbox.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use tern::client::Client;
use tern::proto::v1::{ServerFrame, server_frame::Frame};

/// A `tern serve` child whose stderr lines are gathered as they come.
struct LoggingNode {
    child: Child,
    client: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LoggingNode {
    /// Starts a node with `RUST_LOG` set to `rust_log`, or unset for `None` (the default filter).
    fn start(files: &ChildFiles, rust_log: Option<&str>, args: &[&str]) -> Self {
        let mut child = spawn(&files.config_path, &files.data, rust_log, args);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let gathered = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                gathered.lock().unwrap().push(line);
            }
        });
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready line");
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("no ready line: {ready:?}"))
                .parse()
                .expect("address")
        };
        Self {
            child,
            client: field("client="),
            admin: field("admin="),
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (generously) for a line that satisfies `matches`; returns it.
    async fn line_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let mut found = None;
        eventually(what, async || {
            found = self.lines().into_iter().find(|line| matches(line));
            found.is_some()
        })
        .await;
        found.unwrap_or_default()
    }
}

impl Drop for LoggingNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, data: &Path, rust_log: Option<&str>, args: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    command
        .env_remove("NO_COLOR")
        .arg("serve")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern")
}

/// Logs in with a token the node cannot verify; the node answers with an error and closes.
async fn refused_login(addr: SocketAddr) {
    let refused = tokio::time::timeout(WAIT, Client::login(addr, "not-a-token", 0))
        .await
        .expect("login answered");
    assert!(refused.is_err(), "a bad token was accepted");
}

/// Like [`refused_login`], from a socket of the test's own; returns that socket's port.
async fn refused_login_from_port(addr: SocketAddr) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let port = stream.local_addr().expect("local address").port();
    let mut client = Client::from_stream(stream);
    client
        .writer
        .login("not-a-token", 0)
        .await
        .expect("send Login");
    let answer = tokio::time::timeout(WAIT, client.reader.recv())
        .await
        .expect("login answered");
    assert!(
        matches!(
            answer,
            Ok(Some(ServerFrame {
                frame: Some(Frame::Error(_))
            }))
        ),
        "a bad token was answered with {answer:?}"
    );
    port
}

/// The refused logins' lines among `lines`, and how many more their `suppressed=N` fields say
/// were held back.
fn refusal_lines(lines: &[String]) -> (usize, usize) {
    let mut written = 0;
    let mut held_back = 0;
    for line in lines.iter().filter(|line| line.contains("login refused")) {
        written += 1;
        if let Some((_, rest)) = line.split_once("suppressed=") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            held_back += digits.parse::<usize>().expect("a count after suppressed=");
        }
    }
    (written, held_back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_level_a_refused_login_is_logged_with_its_reason_and_the_peer() {
    let files = ChildFiles::new(&[]);
    let node = LoggingNode::start(&files, None, &[]);
    let port = refused_login_from_port(node.client).await;
    let line = node
        .line_where("the refused login's line", |line| {
            line.contains("login refused")
        })
        .await;
    for part in [
        " INFO ",
        "bad_token",
        "invalid token",
        "ip=127.0.0.1",
        &format!("port={port}"),
    ] {
        assert!(line.contains(part), "no {part:?} in {line}");
    }
    assert!(!line.contains("suppressed"), "{line}");
    // No span per connection at this level: the line itself names the peer.
    assert!(!line.contains("conn{"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_logins_writes_a_bounded_number_of_lines() {
    const REFUSALS: usize = 1_000;
    const PHONES: usize = 4;
    /// The node's limit: REFUSED_LOGIN_LINES_PER_SEC in src/connection/reader.rs.
    const LINES_PER_SEC: u64 = 10;
    let files = ChildFiles::new(&[]);
    let node = LoggingNode::start(&files, None, &[]);
    let started = std::time::Instant::now();
    let mut phones = tokio::task::JoinSet::new();
    for _ in 0..PHONES {
        let addr = node.client;
        phones.spawn(async move {
            for _ in 0..REFUSALS / PHONES {
                refused_login(addr).await;
            }
        });
    }
    while let Some(done) = phones.join_next().await {
        done.expect("a refusing phone");
    }
    let flood = started.elapsed();
    // One more refusal in a later second of the node's clock: its line is written whatever the
    // flood left of the allowance, and reports what the flood held back since its last line.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    refused_login(node.client).await;

    let mut counted = (0, 0);
    eventually(
        "every refusal written or counted as held back",
        async || {
            counted = refusal_lines(&node.lines());
            counted.0 + counted.1 == REFUSALS + 1
        },
    )
    .await;
    let (written, held_back) = counted;
    // The flood's lines fit in the seconds of the node's clock it touched: at most one more
    // than its whole seconds, and one more for a start mid-second; then the last line.
    let allowed = LINES_PER_SEC * (flood.as_secs() + 2) + 1;
    assert!(
        written as u64 <= allowed,
        "{written} lines for {REFUSALS} refusals in {flood:?} ({held_back} held back)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_on_a_pipe_has_no_colour_codes() {
    let files = ChildFiles::new(&[]);
    let node = LoggingNode::start(&files, Some("tern=debug"), &[]);
    let _phone = child_login(node.client, &files.key, "alice", "phone").await;
    refused_login(node.client).await;
    node.line_where("the refused login's line", |line| {
        line.contains("login refused")
    })
    .await;
    let lines = node.lines();
    let coloured: Vec<&String> = lines.iter().filter(|line| line.contains("\x1b[")).collect();
    assert!(coloured.is_empty(), "ANSI codes in the log: {coloured:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_is_logged_with_its_reason_and_the_peer() {
    let files = ChildFiles::new(&[]);
    let node = LoggingNode::start(&files, Some("tern=debug"), &[]);
    refused_login(node.client).await;
    let line = node
        .line_where("the refused login's line", |line| {
            line.contains("login refused")
        })
        .await;
    assert!(line.contains("bad_token"), "{line}");
    assert!(line.contains("ip=127.0.0.1"), "{line}");
    assert!(line.contains("port="), "{line}");
    assert!(line.contains("conn="), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_writes_one_object_per_line() {
    let files = ChildFiles::new(&[]);
    let node = LoggingNode::start(&files, Some("tern=debug"), &["--log-format", "json"]);
    let phone = child_login(node.client, &files.key, "alice", "phone").await;
    refused_login(node.client).await;
    node.line_where("the refused login's line", |line| {
        line.contains("login refused")
    })
    .await;
    node.line_where("the login's line", |line| line.contains("\"logged in\""))
        .await;
    drop(phone);
    let mut refusal = None;
    let mut login = None;
    for line in node.lines() {
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"].is_object(), "{line}");
        if value["fields"]["message"] == "login refused" {
            refusal = Some(value);
        } else if value["fields"]["message"] == "logged in" {
            login = Some(value);
        }
    }
    // Once logged in, the connection's span names the user and device.
    let login = login.expect("login line");
    assert_eq!(login["span"]["user"], "alice", "{login}");
    assert_eq!(login["span"]["device"], "phone", "{login}");
    assert_eq!(login["span"]["ip"], "127.0.0.1", "{login}");
    let refusal = refusal.expect("refusal line");
    assert_eq!(refusal["fields"]["result"], "bad_token", "{refusal}");
    let span = &refusal["span"];
    assert_eq!(span["name"], "conn", "{refusal}");
    assert_eq!(span["ip"], "127.0.0.1", "{refusal}");
    assert!(span["port"].is_u64(), "{refusal}");
    assert!(span["conn"].is_u64(), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rust_log_is_reported_and_exits_64() {
    let files = ChildFiles::new(&[]);
    let mut child = spawn(&files.config_path, &files.data, Some("tern=loud"), &[]);
    // Generous: it exits at once; a node that starts instead is killed and fails the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
    assert!(stderr.contains("tern=loud"), "{stderr}");
    assert!(output.stdout.is_empty(), "the node started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_logs_one_summary_not_a_line_per_mailbox() {
    let files = ChildFiles::new(&FAST_WRITEBACK);
    let node = LoggingNode::start(&files, Some("info"), &[]);
    let (mut reader, mut writer) = child_login(node.client, &files.key, "alice", "phone")
        .await
        .split();
    for (index, to) in ["bob", "carol", "dave"].into_iter().enumerate() {
        writer
            .send_text(&format!("m{index}"), to, "hello")
            .await
            .unwrap();
        next_ack(&mut reader).await;
    }
    // Written back to the stores: the next start loads these mailboxes from there.
    eventually_within(
        std::time::Duration::from_secs(60),
        "the entries written back",
        async || {
            let text = http_get(node.admin, "/metrics").await;
            metric_value(&text, "tern_mailbox_written_back_total").unwrap_or(0.0) >= 3.0
        },
    )
    .await;
    drop(node);
    let node = LoggingNode::start(&files, Some("debug"), &[]);
    node.line_where("the recovery summary", |line| {
        line.contains("mailboxes recovered")
    })
    .await;
    let lines = node.lines();
    let per_mailbox: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("owner="))
        .collect();
    assert!(
        per_mailbox.is_empty(),
        "a line per mailbox at start: {per_mailbox:?}"
    );
    let summaries = lines
        .iter()
        .filter(|line| line.contains("mailboxes recovered"))
        .count();
    assert_eq!(summaries, 1, "{lines:?}");
}
