//! A background thread that dies takes the node down: it logs which one, and `tern serve`
//! exits with code 70 instead of taking phones it can no longer serve; after a restart the
//! acked messages are all there.
//!
//! The threads are killed through the admin port's `/debug/crash/{task}` route, which only
//! debug builds (the ones tests run) have.

mod common;

use std::net::SocketAddr;

use common::*;
use tern::clock::now_secs;
use tern::token::TokenKey;

/// The exit code of a node whose background task died (see `src/main.rs`).
const EXIT_TASK_DIED: i32 = 70;

/// Starts a node whose log (at level info) is kept, for [`ChildNode::exited`].
fn start_node(files: &ChildFiles) -> ChildNode {
    ChildNode::start_keeping_log(
        &files.config_path,
        &files.data,
        &[("RUST_LOG", std::ffi::OsStr::new("info"))],
    )
}

async fn post(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// Sends one message from `from` to `to` and returns the seq its ack names.
async fn send_acked(addr: SocketAddr, key: &TokenKey, from: &str, to: &str, id: &str) -> u64 {
    let token = key.sign(from, "d", now_secs() + 600).expect("token");
    let (client, _) = tokio::time::timeout(WAIT, tern::client::Client::login(addr, &token, 0))
        .await
        .expect("login timed out")
        .expect("login");
    let (mut reader, mut writer) = client.split();
    writer.send_text(id, to, id).await.expect("send");
    next_ack(&mut reader).await.seq
}

async fn thread_death_stops_the_node(task: &str) {
    let files = ChildFiles::new(&[]);

    let node = start_node(&files);
    let seq = send_acked(node.client, &files.key, "alice", "bob", "before").await;
    let answer = post(node.admin, &format!("/debug/crash/{task}")).await;
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "crash refused: {answer}"
    );
    let (code, log) = node.exited();
    assert_eq!(
        code,
        Some(EXIT_TASK_DIED),
        "the node must exit with 70 when a {task} thread dies; log:\n{log}"
    );
    assert!(
        log.contains("background task died") && log.contains(&format!("background task {task} ")),
        "the log must say that a {task} thread died:\n{log}"
    );

    // Restarted, the node recovers what was acked.
    let node = start_node(&files);
    let (mut reader, mut writer) = child_login(node.client, &files.key, "bob", "d")
        .await
        .split();
    let delivered = drain_acking(&mut reader, &mut writer).await;
    assert_eq!(delivered, vec![(seq, "before".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_journal_thread_makes_the_node_exit_with_70() {
    thread_death_stops_the_node("journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_thread_makes_the_node_exit_with_70() {
    thread_death_stops_the_node("store").await;
}

/// The store threads, and the threads sled starts from them, run at a lower CPU priority than
/// the runtime's workers and the journal thread, whose delays every ack waits on.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_threads_run_at_a_lower_priority_than_the_phones_path() {
    let files = ChildFiles::new(&[]);
    let node = ChildNode::start(&files.config_path, &files.data);
    send_acked(node.client, &files.key, "alice", "bob", "hello").await;
    // (thread name, nice value) of every thread of the node, from /proc.
    let tasks = format!("/proc/{}/task", node.child.id());
    let threads: Vec<(String, i64)> = std::fs::read_dir(&tasks)
        .expect("the node's threads")
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: the nice value is the 19th field, the 17th after ")".
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect();
    let nice_of = |prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let stores = nice_of("tern-store-");
    assert_eq!(
        stores.len(),
        files.config.store.count as usize,
        "{threads:?}"
    );
    assert!(stores.iter().all(|&nice| nice == 10), "{threads:?}");
    let sled = nice_of("sled-io");
    assert!(
        !sled.is_empty() && sled.iter().all(|&nice| nice == 10),
        "{threads:?}"
    );
    for front in ["tokio-rt-worker", "tern-journal"] {
        let nices = nice_of(front);
        assert!(
            !nices.is_empty() && nices.iter().all(|&nice| nice == 0),
            "{front}: {threads:?}"
        );
    }
}
