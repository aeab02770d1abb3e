//! A wall clock that steps backwards loses nothing: write-back and journal release age entries
//! on the process's monotonic clock, so a message accepted just before the step is written back
//! before the journal segment that holds it is released.
//!
//! The node runs as a child process with `tests/fixtures/wall_clock_shift.c` preloaded (built
//! here with the C compiler), which shifts its wall clock (not its monotonic clock) by the
//! seconds written in a file the test rewrites.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use tern::client::Client;
use tern::clock::now_secs;
use tern::proto::v1::server_frame::Frame;
use tern::token::TokenKey;

/// Builds the preload library into `dir` with `$CC` (default `cc`).
fn build_shift_library(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wall_clock_shift.c");
    let library = dir.join("wall_clock_shift.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = std::process::Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|error| panic!("running the C compiler {compiler:?}: {error}"));
    assert!(status.success(), "{compiler} could not build {source:?}");
    library
}

/// The journal segments of `journal-0`, sorted (names are the first LSN, zero-padded).
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data.join("journal-0"))
        .expect("journal directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_backwards_releases_nothing_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_shift_library(dir.path());
    // Write-back after 1 s, passes every 3 s: a message appended well over a second after a
    // pass's sample is still too young to be written back by the pass that releases that
    // sample, and only clock order protects it from the release of the samples after it.
    let (config_path, config) = child_config(
        dir.path(),
        &[
            FAST_WRITEBACK[0],
            (
                "checkpoint_interval_secs = 5",
                "checkpoint_interval_secs = 3",
            ),
            // Small segments, so the one holding the message is closed and can be released.
            ("segment_bytes = 67108864", "segment_bytes = 4096"),
        ],
    );
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let token = |user: &str| key.sign(user, "d", now_secs() + 7200).unwrap();
    let data = dir.path().join("data");
    let shift = dir.path().join("wall-clock-shift");
    std::fs::write(&shift, "0").unwrap();
    let env: [(&str, &OsStr); 2] = [
        ("LD_PRELOAD", library.as_os_str()),
        ("WALL_CLOCK_SHIFT_FILE", shift.as_os_str()),
    ];
    let node = ChildNode::start_with_env(&config_path, &data, &env);

    let (alice, _) = Client::login(node.client, &token("alice"), 0)
        .await
        .unwrap();
    let (mut alice_reader, mut alice_writer) = alice.split();
    let acked = async |reader: &mut tern::client::ClientReader| {
        next_matching(reader, |f| matches!(f, Frame::ServerAck(_)).then_some(())).await
    };
    // Right after a checkpoint (its pass sampled the journal), wait 1.5 s.
    let admin = node.admin;
    let checkpoints = async || {
        metric_value(&http_get(admin, "/metrics").await, "tern_checkpoints_total").unwrap_or(0.0)
    };
    let before = checkpoints().await;
    eventually("a checkpoint", async || checkpoints().await > before).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    alice_writer
        .send_text(
            "before-step",
            "bob",
            "sent just before the clock stepped back",
        )
        .await
        .unwrap();
    acked(&mut alice_reader).await;
    // The segment that holds bob's message, and every one before it.
    let held = segments(&data);

    // The wall clock steps back 10 s; more traffic rolls the journal onto new segments.
    std::fs::write(&shift, "-10").unwrap();
    for n in 0..120 {
        alice_writer
            .send_text(&format!("filler-{n}"), "carol", "after the step")
            .await
            .unwrap();
        acked(&mut alice_reader).await;
    }
    // Checkpoints release the segment that held bob's message.
    eventually(
        "the segments holding the message are released",
        async || {
            let now = segments(&data);
            held.iter().all(|segment| !now.contains(segment))
        },
    )
    .await;

    node.kill();
    let node = ChildNode::start(&config_path, &data);
    let (bob, _) = Client::login(node.client, &token("bob"), 0).await.unwrap();
    let (mut bob_reader, _bob_writer) = bob.split();
    let (delivered, _) = drain(&mut bob_reader).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|d| chat(d).client_msg_id.as_str())
        .collect();
    assert_eq!(ids, ["before-step"], "bob's acked message must survive");
}
