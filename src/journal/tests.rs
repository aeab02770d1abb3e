//! Tests of the journal: shared helpers, basic round trips and configuration; the rest by topic.

mod commit;
mod failures;
mod model;
mod preallocate;
mod recovery;
mod space;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn small_config(dir: &Path) -> JournalConfig {
    JournalConfig {
        segment_bytes: 256,
        ..JournalConfig::new(dir)
    }
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}-{}", "x".repeat((i % 37) as usize)))
}

fn open(config: &JournalConfig) -> (Journal, Recovery) {
    Journal::open(config.clone()).expect("open journal")
}

fn records(recovery: &Recovery, after: u64) -> Vec<(u64, Bytes)> {
    recovery
        .records_after(after)
        .expect("replay")
        .collect::<Result<Vec<_>, _>>()
        .expect("replay records")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// Appends `payloads` one at a time, awaiting each; returns the lsns.
async fn append_each(journal: &Journal, payloads: impl IntoIterator<Item = Bytes>) -> Vec<u64> {
    let mut lsns = Vec::new();
    for payload in payloads {
        lsns.push(
            journal
                .append(payload)
                .expect("queued")
                .await
                .expect("durable"),
        );
    }
    lsns
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn flip_byte(path: &Path, offset_from_end: u64) {
    let mut bytes = fs::read(path).expect("read segment");
    let index = bytes.len() - offset_from_end as usize;
    bytes[index] ^= 0x40;
    fs::write(path, bytes).expect("write segment");
}

fn cut(path: &Path, len: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    file.set_len(len).expect("truncate segment");
}

fn segment_first_lsn(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .expect("segment name")
}

#[test]
fn handles_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Journal>();
    shareable::<JournalError>();
    fn sendable<T: Send>() {}
    sendable::<Pending>();
    sendable::<Replay>();
}

#[tokio::test]
async fn round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let (journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 1);
    assert!(records(&recovery, 0).is_empty());
    let lsns = append_each(&journal, (1..=60).map(payload)).await;
    assert_eq!(lsns, (1..=60).collect::<Vec<_>>());
    let stats = journal.stats();
    assert_eq!(stats.durable_lsn, 60);
    assert!(stats.segments >= 5, "expected rotation, got {stats:?}");
    journal.close().expect("close");

    let files = segment_files(dir.path());
    assert_eq!(files.len() as u64, stats.segments);
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some("00000000000000000001.wal")
    );
    for file in &files {
        let len = fs::metadata(file).expect("metadata").len();
        assert!(len <= 256, "segment {file:?} is {len} bytes");
    }

    let (journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 61);
    assert_eq!(recovery.oldest_lsn(), 1);
    assert_eq!(recovery.dropped_bytes(), 0);
    let all = records(&recovery, 0);
    assert_eq!(all.len(), 60);
    for (lsn, data) in &all {
        assert_eq!(data, &payload(*lsn));
    }
    let tail: Vec<u64> = records(&recovery, 41).iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(tail, (42..=60).collect::<Vec<_>>());
    assert!(records(&recovery, 60).is_empty());
    assert!(records(&recovery, 1000).is_empty());
    assert_eq!(append_each(&journal, [payload(61)]).await, vec![61]);
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(records(&recovery, 60), vec![(61, payload(61))]);
}

#[tokio::test]
async fn empty_payloads_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    assert_eq!(
        append_each(&journal, [Bytes::new(), payload(2), Bytes::new()]).await,
        [1, 2, 3]
    );
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(
        records(&recovery, 0),
        vec![(1, Bytes::new()), (2, payload(2)), (3, Bytes::new())]
    );
}

#[tokio::test]
async fn a_directory_is_opened_by_one_journal_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    assert!(matches!(
        Journal::open(config.clone()),
        Err(JournalError::Locked { .. })
    ));
    drop(journal);
    assert!(Journal::open(config).is_ok());
}

#[test]
fn config_defaults_validation_and_parsing() {
    let defaults = JournalConfig::default();
    assert_eq!(defaults.segment_bytes, 64 * 1024 * 1024);
    assert_eq!(defaults.max_batch_records, 4096);
    assert_eq!(defaults.queue_capacity, 65536);
    assert_eq!(defaults.max_disk_bytes, None);
    assert!(defaults.validate().is_empty());

    let parsed: JournalConfig =
        toml::from_str("dir = \"/var/tern/journal\"\nmax_disk_bytes = 1000").expect("parse");
    assert_eq!(parsed.dir, Path::new("/var/tern/journal"));
    assert_eq!(parsed.max_disk_bytes, Some(1000));
    assert_eq!(parsed.segment_bytes, defaults.segment_bytes);
    assert!(toml::from_str::<JournalConfig>("segment_size = 1").is_err());

    let bad = JournalConfig {
        segment_bytes: 0,
        max_batch_records: 0,
        queue_capacity: 0,
        max_disk_bytes: Some(0),
        ..JournalConfig::default()
    };
    assert_eq!(bad.validate().len(), 4);
    match Journal::open(bad) {
        Err(JournalError::InvalidConfig { problems }) => assert_eq!(problems.len(), 4),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
