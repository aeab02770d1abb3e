//! A real full disk that is freed again: the node refuses sends while it is full, and once there
//! is room again it acks sends, writes back, checkpoints and releases journal segments by
//! itself (a failed sled database is reopened), and nothing acked is lost.
//!
//! The data directory is a 48 MB tmpfs mounted by the test (root only: the test fails, loudly,
//! when it cannot mount) and unmounted at the end, also when the test fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tern::client::{Client, ClientReader, ClientWriter};
use tern::clock::now_secs;
use tern::proto::v1::{ErrorCode, server_frame::Frame};
use tern::token::TokenKey;

/// A tmpfs mounted for the test's lifetime.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Self {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test needs root to mount a {size} tmpfs on {} (uid {}): {}",
            dir.display(),
            String::from_utf8_lossy(
                &Command::new("id")
                    .arg("-u")
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
            .trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Mount(dir.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` with a file there; returns once a write found no room.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
}

async fn login(addr: SocketAddr, key: &TokenKey, user: &str) -> (ClientReader, ClientWriter) {
    let token = key.sign(user, "d", now_secs() + 3600).expect("token");
    let (client, _) = tokio::time::timeout(WAIT, Client::login(addr, &token, 0))
        .await
        .expect("login timed out")
        .expect("login");
    client.split()
}

/// Sends one message and waits for its answer: `Ok(seq)` when acked, `Err(code)` when refused.
async fn send(reader: &mut ClientReader, writer: &mut ClientWriter, id: &str) -> Result<u64, i32> {
    writer
        .send_text(id, "bob", &format!("{id}:{}", "x".repeat(4000)))
        .await
        .expect("send");
    loop {
        match next(reader).await {
            Frame::ServerAck(ack) if ack.client_msg_id == id => return Ok(ack.seq),
            Frame::Error(error) if error.client_msg_id == id => return Err(error.code),
            Frame::GoAway(go_away) => panic!("unexpected GoAway {go_away:?}"),
            _ => {}
        }
    }
}

/// Prints the figures this test watches (seen in the output of a failed run).
async fn report(admin: SocketAddr, phase: &str) {
    let text = http_get(admin, "/metrics").await;
    let watched: Vec<&str> = text
        .lines()
        .filter(|line| {
            !line.starts_with('#')
                && [
                    "tern_checkpoint",
                    "tern_journal_segments",
                    "tern_journal_failures",
                    "tern_store_errors",
                    "tern_store_reopen",
                ]
                .iter()
                .any(|name| line.starts_with(name))
        })
        .collect();
    eprintln!("{phase}: {watched:?}");
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    metric_value(&http_get(admin, "/metrics").await, series).unwrap_or(0.0)
}

/// Sends `count` messages, each acked, numbering them on from `n`; keeps (seq, id) in `acked`.
async fn send_all(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    count: usize,
    n: &mut u64,
    acked: &mut Vec<(u64, String)>,
) {
    for _ in 0..count {
        *n += 1;
        let id = format!("m{n}");
        let seq = send(reader, writer, &id).await.expect("acked");
        acked.push((seq, id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_disk_is_written_back_and_released_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount_point = dir.path().join("disk");
    std::fs::create_dir(&mount_point).expect("mount point");
    let _mount = Mount::tmpfs(&mount_point, "48m");
    let (config_path, config) = child_config(
        dir.path(),
        &[
            FAST_WRITEBACK[0],
            FAST_WRITEBACK[1],
            ("segment_bytes = 67108864", "segment_bytes = 262144"),
            ("frames_per_sec = 200", "frames_per_sec = 100000"),
            ("frame_burst = 400", "frame_burst = 100000"),
        ],
    );
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let node = ChildNode::start(&config_path, &mount_point.join("data"));
    let (mut reader, mut writer) = login(node.client, &key, "alice").await;

    // Messages to an offline recipient: written back after a second, kept in the journal
    // until a checkpoint covers them.
    let mut acked = Vec::new();
    let mut n = 0;
    send_all(&mut reader, &mut writer, 20, &mut n, &mut acked).await;
    eventually_within(Duration::from_secs(60), "a first checkpoint", async || {
        metric(node.admin, "tern_checkpoints_total").await >= 1.0
    })
    .await;
    // A burst that the next write-back pass, after the disk is full, has to write to the
    // stores (about 8 MB).
    send_all(&mut reader, &mut writer, 2_000, &mut n, &mut acked).await;
    report(node.admin, "before filling").await;
    // Fill the disk; sends are refused once the journal finds no room.
    let filler = mount_point.join("filler");
    fill(&filler);
    let mut refused = false;
    for _ in 0..5_000 {
        n += 1;
        let id = format!("m{n}");
        match send(&mut reader, &mut writer, &id).await {
            Ok(seq) => acked.push((seq, id)),
            Err(code) => {
                assert_eq!(code, i32::from(ErrorCode::StorageFailure));
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "sends were never refused on a full disk");
    // Write-back meets the full disk too, and sled fails.
    eventually_within(
        Duration::from_secs(60),
        "a failed write-back or checkpoint",
        async || metric(node.admin, "tern_checkpoint_failures_total").await >= 1.0,
    )
    .await;
    eventually_within(
        Duration::from_secs(60),
        "a failed store operation",
        async || {
            let text = http_get(node.admin, "/metrics").await;
            (0..4).any(|store| {
                metric_value(
                    &text,
                    &format!("tern_store_errors_total{{store=\"{store}\"}}"),
                )
                .unwrap_or(0.0)
                    >= 1.0
            })
        },
    )
    .await;

    report(node.admin, "full").await;
    // Free the disk.
    std::fs::remove_file(&filler).expect("remove filler");
    let failures_when_freed = metric(node.admin, "tern_checkpoint_failures_total").await;
    let checkpoints_when_freed = metric(node.admin, "tern_checkpoints_total").await;

    // Sends are acked again.
    eventually_within(
        Duration::from_secs(60),
        "a send acked after the disk was freed",
        async || {
            n += 1;
            let id = format!("m{n}");
            match send(&mut reader, &mut writer, &id).await {
                Ok(seq) => {
                    acked.push((seq, id));
                    true
                }
                Err(_) => false,
            }
        },
    )
    .await;
    // More to write back, now that there is room.
    send_all(&mut reader, &mut writer, 50, &mut n, &mut acked).await;
    let segments_before = metric(node.admin, "tern_journal_segments").await;
    report(node.admin, "freed").await;

    // Checkpoints succeed again, by themselves, and journal segments are released.
    eventually_within(
        Duration::from_secs(90),
        "two checkpoints after the disk was freed",
        async || metric(node.admin, "tern_checkpoints_total").await >= checkpoints_when_freed + 2.0,
    )
    .await;
    report(node.admin, "checkpointed").await;
    eventually_within(
        Duration::from_secs(60),
        "journal segments released",
        async || metric(node.admin, "tern_journal_segments").await < segments_before,
    )
    .await;
    // And they stay successful: three more checkpoints with no new failure in between.
    let failures = metric(node.admin, "tern_checkpoint_failures_total").await;
    let checkpoints = metric(node.admin, "tern_checkpoints_total").await;
    eventually_within(
        Duration::from_secs(60),
        "three more checkpoints",
        async || metric(node.admin, "tern_checkpoints_total").await >= checkpoints + 3.0,
    )
    .await;
    assert_eq!(
        metric(node.admin, "tern_checkpoint_failures_total").await,
        failures,
        "checkpoints kept failing after the disk was freed (failures when freed: {failures_when_freed})"
    );

    // Nothing acked is lost.
    let (mut bob_reader, mut bob_writer) = login(node.client, &key, "bob").await;
    let delivered = drain_acking(&mut bob_reader, &mut bob_writer).await;
    for (seq, id) in &acked {
        assert!(
            delivered.iter().any(|(s, i)| s == seq && i == id),
            "acked {id} at seq {seq} was lost"
        );
    }
    drop(node);
}
