//! Lifecycle tests: close and reopen, checkpoints, placement of shards, layout checks.

use std::fs;

use bytes::Bytes;

use super::*;
use crate::shard::SHARDS;

/// One record per shard, whose value names the shard.
async fn record_in_every_shard(stores: &Stores) {
    for shard in 0..SHARDS {
        let mut batch = WriteBatch::new();
        batch.put_record(b"where", value(&format!("shard {shard}")));
        write(stores, shard, batch).await;
    }
}

async fn record(stores: &Stores, shard: usize, key: &[u8]) -> Option<Bytes> {
    stores
        .get_record(shard, key)
        .expect("queued")
        .await
        .expect("read")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 3);
    let stores = open(&config);
    let mut batch = WriteBatch::new();
    batch
        .put_entry(b"grace", 1, value("one"))
        .put_entry(b"grace", 2, value("two"))
        .put_cursor(b"grace", "phone", 1)
        .put_meta(b"grace", value("2"));
    write(&stores, 11, batch).await;
    record_in_every_shard(&stores).await;
    stores.close().expect("close");

    let stores = open(&config);
    assert_eq!(
        entries(&stores, 11, b"grace", 0, 10).await,
        vec![(1, value("one")), (2, value("two"))]
    );
    let cursors = stores.read_cursors(11, b"grace").expect("queued").await;
    assert_eq!(cursors.expect("read"), vec![("phone".to_owned(), 1)]);
    let meta = stores.read_meta(11, b"grace").expect("queued").await;
    assert_eq!(meta.expect("read"), Some(value("2")));
    for shard in 0..SHARDS {
        assert_eq!(
            record(&stores, shard, b"where").await,
            Some(value(&format!("shard {shard}")))
        );
    }
    // Dropping instead of closing also drains, checkpoints and joins.
    let mut batch = WriteBatch::new();
    batch.put_entry(b"grace", 3, value("three"));
    stores
        .write_batch(11, batch)
        .expect("queued")
        .await
        .expect("written");
    drop(stores);
    let stores = open(&config);
    assert_eq!(
        seqs(&entries(&stores, 11, b"grace", 0, 10).await),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn a_snapshot_torn_by_a_full_disk_does_not_stop_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1);
    let stores = open(&config);
    let mut batch = WriteBatch::new();
    batch.put_entry(b"ivan", 1, value("kept"));
    write(&stores, 4, batch).await;
    stores.close().expect("close");
    // What an open that met ENOSPC while writing its snapshot leaves: a short file that sorts
    // after every finished snapshot.
    let torn = config.paths[0].join("snap.7FFFFFFFFFFFFFFF.generating");
    fs::write(&torn, b"torn snapshot").expect("write torn snapshot");

    let stores = open(&config);
    assert_eq!(
        entries(&stores, 4, b"ivan", 0, 10).await,
        vec![(1, value("kept"))]
    );
    assert!(!torn.exists(), "the unfinished snapshot is still there");
    stores.close().expect("close");
}

#[tokio::test]
async fn a_checkpointed_copy_of_the_files_opens_with_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 2);
    let stores = open(&config);
    let mut batch = WriteBatch::new();
    for seq in 1..=200 {
        batch.put_entry(b"heidi", seq, Bytes::from(vec![seq as u8; 1000]));
    }
    write(&stores, 6, batch).await;
    record_in_every_shard(&stores).await;
    stores.checkpoint_all().await.expect("checkpoint");
    let checkpoints: u64 = (0..2)
        .map(|index| stores.store(index).expect("store").stats().checkpoints)
        .sum();
    assert_eq!(checkpoints, 2);

    // The files as they are now, with the stores still open: what a crash would leave.
    let copy = dir.path().join("copy");
    for (index, path) in config.paths.iter().enumerate() {
        copy_dir(path, &copy.join(format!("store-{index}")));
    }
    let copied = open(&super::config(&copy, 2));
    let read = entries(&copied, 6, b"heidi", 0, usize::MAX).await;
    assert_eq!(seqs(&read), (1..=200).collect::<Vec<_>>());
    assert_eq!(read[41].1, Bytes::from(vec![42u8; 1000]));
    for shard in 0..SHARDS {
        assert_eq!(
            record(&copied, shard, b"where").await,
            Some(value(&format!("shard {shard}")))
        );
    }
    copied.close().expect("close copy");
    stores.close().expect("close");
}

#[tokio::test]
async fn shards_live_in_database_shard_mod_count_under_their_tree_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 3);
    let stores = open(&config);
    assert_eq!(stores.databases(), 3);
    for shard in 0..SHARDS {
        assert_eq!(stores.database_of(shard), shard % 3);
        assert_eq!(database_of(shard, 3), shard % 3);
    }
    record_in_every_shard(&stores).await;
    stores.close().expect("close");

    for (index, path) in config.paths.iter().enumerate() {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(1024 * 1024)
            .open()
            .expect("open sled directly");
        let layout = db
            .get(b"tern/layout")
            .expect("get")
            .expect("layout recorded");
        assert_eq!(layout.as_ref(), format!("{index}/3").as_bytes());
        let names: Vec<String> = db
            .tree_names()
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        for shard in 0..SHARDS {
            let here = shard % 3 == index;
            for kind in ["entries", "cursors", "meta", "records"] {
                let name = format!("s{shard:02}/{kind}");
                assert_eq!(names.contains(&name), here, "{name} in database {index}");
            }
            if here {
                let tree = db.open_tree(format!("s{shard:02}/records")).expect("tree");
                let stored = tree.get(b"where").expect("get").expect("record");
                assert_eq!(stored.as_ref(), format!("shard {shard}").as_bytes());
            }
        }
    }
}

#[test]
fn a_database_refuses_another_layout_and_a_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let two = config(dir.path(), 2);
    let stores = open(&two);
    assert!(matches!(
        Stores::open(two.clone()),
        Err(StoreError::Io { .. })
    ));
    stores.close().expect("close");

    let mut one = two.clone();
    one.paths.truncate(1);
    assert!(matches!(
        Stores::open(one),
        Err(StoreError::LayoutMismatch { found, expected, .. }) if found == "0/2" && expected == "0/1"
    ));
    let mut swapped = two.clone();
    swapped.paths.reverse();
    assert!(matches!(
        Stores::open(swapped),
        Err(StoreError::LayoutMismatch { .. })
    ));
    let stores = open(&two);
    assert!(stores.healthy());
    stores.close().expect("close");
}
