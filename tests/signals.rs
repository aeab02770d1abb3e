//! Signals a running node gets from its supervisor or a terminal: SIGHUP does not stop the node
//! (logged; it reloads TLS files, tested in tests/tls.rs), so it keeps serving; SIGTERM drains and exits 0, also when its stderr is gone (the
//! terminal that sent SIGHUP closed). `tern serve --help` documents both.

mod common;

use std::io::BufRead;
use std::process::Command;

use common::*;
use tern::proto::v1::server_frame::Frame;

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_stop_the_node_and_sigterm_still_drains_with_exit_0() {
    let files = ChildFiles::new(&[]);
    let info = std::ffi::OsString::from("info");
    let mut node = ChildNode::start_keeping_log(
        &files.config_path,
        &files.data,
        &[("RUST_LOG", info.as_os_str())],
    );
    let pid = node.child.id();
    // The log is read on a thread: each line goes to the test, so it can wait for the one that
    // says SIGHUP was handled (or for the end of the log, if the signal ended the node).
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = node.child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let mut bob = child_login(node.client, &files.key, "bob", "phone")
        .await
        .split();
    let mut alice = child_login(node.client, &files.key, "alice", "phone")
        .await
        .split();
    assert!(matches!(next(&mut bob.0).await, Frame::QueueDrained(_)));
    assert!(matches!(next(&mut alice.0).await, Frame::QueueDrained(_)));

    send_signal(pid, "-HUP");
    let handled = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match log.recv_timeout(left) {
                Ok(line) if line.contains("SIGHUP: the node keeps serving") => return Ok(log),
                Ok(_) => {}
                Err(error) => return Err(format!("no SIGHUP line in the log: {error}")),
            }
        }
        Err("no SIGHUP line in the log in time".to_owned())
    })
    .await
    .expect("log reader");
    let log = handled.expect("the node logs that SIGHUP did not stop it");
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "the node exited on SIGHUP"
    );

    // Still serving: a message goes through, on the connections opened before the signal.
    alice
        .1
        .send_text("after-hup", "bob", "still here")
        .await
        .unwrap();
    assert_eq!(next_ack(&mut alice.0).await.client_msg_id, "after-hup");
    assert_eq!(body(&next_deliver(&mut bob.0).await), "still here");

    send_signal(pid, "-TERM");
    let frames = until_closed(&mut bob.0).await;
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::GoAway(_))),
        "SIGTERM drains: GoAway before the close, got {frames:?}"
    );
    drop(log);
    let status = wait_for_exit(node).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_stderr_is_closed_keeps_serving_and_drains_with_exit_0() {
    let files = ChildFiles::new(&[]);
    let info = std::ffi::OsString::from("info");
    let mut node = ChildNode::start_keeping_log(
        &files.config_path,
        &files.data,
        &[("RUST_LOG", info.as_os_str())],
    );
    // The terminal (or log pipe) goes away: every log line from now on fails to be written.
    drop(node.child.stderr.take());
    let mut bob = child_login(node.client, &files.key, "bob", "phone")
        .await
        .split();
    assert!(matches!(next(&mut bob.0).await, Frame::QueueDrained(_)));
    send_signal(node.child.id(), "-TERM");
    let frames = until_closed(&mut bob.0).await;
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::GoAway(_))),
        "SIGTERM drains: GoAway before the close, got {frames:?}"
    );
    let status = wait_for_exit(node).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn serve_help_documents_signals_and_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--help"])
        .output()
        .expect("tern serve --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["SIGTERM", "SIGINT", "SIGHUP", "reloads the TLS", "64", "70"] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}
