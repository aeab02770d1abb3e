//! Tests of the store: shared helpers, round trips of every operation, configuration; the rest
//! by topic.

mod failures;
mod lifecycle;
mod model;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::*;

/// A config of `count` databases under `dir`, with a small cache.
fn config(dir: &Path, count: usize) -> StoreConfig {
    StoreConfig {
        cache_bytes: 4 * 1024 * 1024,
        ..StoreConfig::new(paths(dir, count))
    }
}

fn paths(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|index| dir.join(format!("store-{index}")))
        .collect()
}

fn open(config: &StoreConfig) -> Stores {
    // sled lets go of a database's file lock from its background flusher thread shortly after
    // the last handle is dropped, so a reopen in the same process may have to wait a moment (a
    // restarted process never does).
    for _ in 0..250 {
        match Stores::open(config.clone()) {
            Ok(stores) => return stores,
            Err(error) if error.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("open stores: {error:?}"),
        }
    }
    panic!("the stores stayed locked for 5 s after they were closed")
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

async fn write(stores: &Stores, shard: usize, batch: WriteBatch) {
    stores
        .write_batch(shard, batch)
        .expect("queued")
        .await
        .expect("written");
}

async fn entries(stores: &Stores, shard: usize, owner: &[u8], after: u64, limit: usize) -> Entries {
    stores
        .read_entries(shard, owner, after, limit)
        .expect("queued")
        .await
        .expect("read")
}

fn seqs(entries: &Entries) -> Vec<u64> {
    entries.iter().map(|(seq, _)| *seq).collect()
}

#[test]
fn handles_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Stores>();
    shareable::<Store>();
    shareable::<StoreError>();
    fn sendable<T: Send>() {}
    sendable::<Pending<Entries>>();
    sendable::<WriteBatch>();
}

#[tokio::test]
async fn entries_read_back_in_seq_order_after_a_seq_and_up_to_a_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 2));
    let mut batch = WriteBatch::new();
    // Out of order, across the 255/256 byte boundary, with a neighbour owner around it.
    for seq in [300, 2, 256, 1, 255, 3] {
        batch.put_entry(b"alice", seq, value(&format!("m{seq}")));
    }
    batch.put_entry(b"alic", 7, value("other"));
    batch.put_entry(b"alicea", 1, value("other"));
    write(&stores, 5, batch).await;

    let all = entries(&stores, 5, b"alice", 0, usize::MAX).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 255, 256, 300]);
    assert_eq!(all[3].1, value("m255"));
    assert_eq!(
        seqs(&entries(&stores, 5, b"alice", 2, 2).await),
        vec![3, 255]
    );
    assert_eq!(
        seqs(&entries(&stores, 5, b"alice", 256, 10).await),
        vec![300]
    );
    assert!(entries(&stores, 5, b"alice", 300, 10).await.is_empty());
    assert!(entries(&stores, 5, b"alice", u64::MAX, 10).await.is_empty());
    assert!(entries(&stores, 5, b"alice", 0, 0).await.is_empty());
    // Another shard's trees are separate, even in the same database.
    assert!(entries(&stores, 7, b"alice", 0, 10).await.is_empty());
    // Replacing an entry keeps one copy.
    let mut batch = WriteBatch::new();
    batch.put_entry(b"alice", 2, value("again"));
    write(&stores, 5, batch).await;
    let all = entries(&stores, 5, b"alice", 1, 1).await;
    assert_eq!(all, vec![(2, value("again"))]);
    stores.close().expect("close");
}

#[tokio::test]
async fn range_delete_removes_seqs_up_to_n_including_ones_put_in_the_same_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 1));
    let mut batch = WriteBatch::new();
    for seq in 1..=10 {
        batch.put_entry(b"bob", seq, value("x"));
    }
    batch.put_entry(b"bobby", 1, value("neighbour"));
    write(&stores, 3, batch).await;

    let mut batch = WriteBatch::new();
    batch
        .put_entry(b"bob", 11, value("x"))
        .delete_entries_up_to(b"bob", 4)
        .put_entry(b"bob", 12, value("x"))
        .put_entry(b"bob", 2, value("put after the delete"));
    write(&stores, 3, batch).await;
    assert_eq!(
        seqs(&entries(&stores, 3, b"bob", 0, 100).await),
        vec![2, 5, 6, 7, 8, 9, 10, 11, 12]
    );

    let mut batch = WriteBatch::new();
    batch
        .put_entry(b"bob", 13, value("x"))
        .delete_entries_up_to(b"bob", 13);
    write(&stores, 3, batch).await;
    assert!(entries(&stores, 3, b"bob", 0, 100).await.is_empty());
    assert_eq!(seqs(&entries(&stores, 3, b"bobby", 0, 100).await), vec![1]);
    // Deleting nothing is fine.
    let mut batch = WriteBatch::new();
    batch.delete_entries_up_to(b"nobody", u64::MAX);
    write(&stores, 3, batch).await;
    write(&stores, 3, WriteBatch::new()).await;
}

#[tokio::test]
async fn cursors_meta_and_records_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 3));
    let mut batch = WriteBatch::new();
    batch
        .put_cursor(b"carol", "phone", 7)
        .put_cursor(b"carol", "laptop", 3)
        .put_cursor(b"carol", "tablet", 1)
        .put_cursor(b"carola", "phone", 99)
        .put_meta(b"carol", value("last_seq=7"))
        .put_meta(b"carola", value("last_seq=99"))
        .put_record(b"account/carol", value("{}"))
        .put_record(b"account/dave", value("{\"d\":1}"))
        .put_record(b"group/g1", value("members"));
    write(&stores, 9, batch).await;

    let cursors = stores.read_cursors(9, b"carol").expect("queued").await;
    assert_eq!(
        cursors.expect("read"),
        vec![
            ("laptop".to_owned(), 3),
            ("phone".to_owned(), 7),
            ("tablet".to_owned(), 1)
        ]
    );
    let meta = stores.read_meta(9, b"carol").expect("queued").await;
    assert_eq!(meta.expect("read"), Some(value("last_seq=7")));
    let missing = stores.read_meta(9, b"nobody").expect("queued").await;
    assert_eq!(missing.expect("read"), None);
    let scanned = stores.scan_meta(9).expect("queued").await.expect("scan");
    assert_eq!(
        scanned,
        vec![
            (value("carol"), value("last_seq=7")),
            (value("carola"), value("last_seq=99"))
        ]
    );
    let record = stores.get_record(9, b"account/dave").expect("queued").await;
    assert_eq!(record.expect("read"), Some(value("{\"d\":1}")));
    let accounts = stores
        .scan_records(9, b"account/", 10)
        .expect("queued")
        .await;
    assert_eq!(
        accounts.expect("scan"),
        vec![
            (value("account/carol"), value("{}")),
            (value("account/dave"), value("{\"d\":1}"))
        ]
    );
    let first = stores.scan_records(9, b"", 1).expect("queued").await;
    assert_eq!(first.expect("scan").len(), 1);

    let mut batch = WriteBatch::new();
    batch
        .put_cursor(b"carol", "phone", 8)
        .delete_cursor(b"carol", "tablet")
        .delete_meta(b"carola")
        .delete_record(b"account/carol");
    write(&stores, 9, batch).await;
    let cursors = stores.read_cursors(9, b"carol").expect("queued").await;
    assert_eq!(
        cursors.expect("read"),
        vec![("laptop".to_owned(), 3), ("phone".to_owned(), 8)]
    );
    let scanned = stores.scan_meta(9).expect("queued").await.expect("scan");
    assert_eq!(scanned, vec![(value("carol"), value("last_seq=7"))]);
    let record = stores
        .get_record(9, b"account/carol")
        .expect("queued")
        .await;
    assert_eq!(record.expect("read"), None);
}

#[tokio::test]
async fn callbacks_complete_on_the_database_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 2));
    let (sender, receiver) = std::sync::mpsc::channel();
    let mut batch = WriteBatch::new();
    batch.put_entry(b"erin", 1, value("hi"));
    let written = sender.clone();
    stores
        .write_batch_with(4, batch, move |result| {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = written.send((result.map(|()| Vec::new()), thread));
        })
        .expect("queued");
    stores
        .read_entries_with(4, b"erin", 0, 10, move |result| {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = sender.send((result, thread));
        })
        .expect("queued");
    let (first, thread) = receiver.recv().expect("write completed");
    assert!(first.expect("written").is_empty());
    assert_eq!(thread.as_deref(), Some("tern-store-0"));
    let (second, _) = receiver.recv().expect("read completed");
    assert_eq!(second.expect("read"), vec![(1, value("hi"))]);
}

#[tokio::test]
async fn bad_keys_values_and_shards_are_refused_before_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 1));
    let mut batch = WriteBatch::new();
    batch.put_entry(b"frank", 1, Bytes::from(vec![0; MAX_VALUE_BYTES + 1]));
    assert!(matches!(
        stores.write_batch(0, batch),
        Err(StoreError::ValueTooLarge { len, max }) if len == MAX_VALUE_BYTES + 1 && max == MAX_VALUE_BYTES
    ));
    let mut batch = WriteBatch::new();
    batch.put_record(b"r", Bytes::from(vec![0; MAX_VALUE_BYTES + 1]));
    assert!(matches!(
        stores.write_batch(0, batch),
        Err(StoreError::ValueTooLarge { .. })
    ));
    let mut batch = WriteBatch::new();
    batch.put_meta(b"frank", Bytes::from(vec![0; MAX_VALUE_BYTES]));
    assert!(stores.write_batch(0, batch).expect("queued").await.is_ok());

    let mut batch = WriteBatch::new();
    batch.put_cursor(b"fr\0nk", "phone", 1);
    assert!(matches!(
        stores.write_batch(0, batch),
        Err(StoreError::InvalidKey { .. })
    ));
    let mut batch = WriteBatch::new();
    batch.put_cursor(b"frank", "", 1);
    assert!(matches!(
        stores.write_batch(0, batch),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        stores.read_entries(0, b"", 0, 1),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        stores.read_meta(32, b"frank"),
        Err(StoreError::InvalidShard { shard: 32, max: 32 })
    ));
    assert!(matches!(
        stores.checkpoint(1),
        Err(StoreError::InvalidDatabase { index: 1, count: 1 })
    ));
    let stats = stores.store(0).expect("store 0").stats();
    assert_eq!((stats.operations, stats.errors), (1, 0));
}

#[test]
fn config_defaults_validation_and_parsing() {
    let defaults = StoreConfig::default();
    assert_eq!(defaults.paths.len(), 4);
    assert_eq!(defaults.paths[3], Path::new("./data/store-3"));
    assert_eq!(defaults.cache_bytes, 64 * 1024 * 1024);
    assert_eq!(defaults.queue_capacity, 4096);
    assert_eq!(defaults.flush_every_ms, Some(500));
    assert!(defaults.validate().is_empty());

    let parsed: StoreConfig =
        toml::from_str("paths = [\"/disk1/store\", \"/disk2/store\"]\nflush_every_ms = 100")
            .expect("parse");
    assert_eq!(parsed.paths.len(), 2);
    assert_eq!(parsed.flush_every_ms, Some(100));
    assert_eq!(parsed.cache_bytes, defaults.cache_bytes);
    assert!(toml::from_str::<StoreConfig>("cache_capacity = 1").is_err());

    let bad = StoreConfig {
        paths: vec![
            PathBuf::from("a"),
            PathBuf::from("./a"),
            PathBuf::from("a/"),
            PathBuf::new(),
        ],
        cache_bytes: 0,
        queue_capacity: 0,
        flush_every_ms: Some(0),
    };
    // "./a" and "a/" repeat "a"; one empty path; three zeros.
    assert_eq!(bad.validate().len(), 6, "{:?}", bad.validate());
    assert_eq!(StoreConfig::new(Vec::<PathBuf>::new()).validate().len(), 1);
    assert_eq!(
        StoreConfig::new(paths(Path::new("x"), 33)).validate().len(),
        1
    );
    assert!(
        StoreConfig::new(paths(Path::new("x"), 32))
            .validate()
            .is_empty()
    );
    match Stores::open(bad) {
        Err(StoreError::InvalidConfig { problems }) => assert_eq!(problems.len(), 6),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
