//! Failure tests: a full queue, panics in operations and callbacks, a closed queue.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::worker::OpKind;

/// Occupies database `index`'s thread until the returned sender is dropped or sent to; returns
/// once the thread has taken the job, so the queue is empty.
fn block(stores: &Stores, index: usize) -> mpsc::Sender<()> {
    let (release, wait) = mpsc::channel::<()>();
    let (started, has_started) = mpsc::channel::<()>();
    stores
        .store(index)
        .expect("store")
        .submit(
            OpKind::Read,
            move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            },
            |_: Result<(), StoreError>| {},
        )
        .expect("queued");
    has_started.recv().expect("blocker started");
    release
}

fn small_queue(dir: &Path) -> StoreConfig {
    StoreConfig {
        queue_capacity: 2,
        ..config(dir, 2)
    }
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_other_databases_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&small_queue(dir.path()));
    let release = block(&stores, 0);
    let started = Instant::now();
    let first = stores.read_meta(0, b"ivan").expect("queued");
    let second = stores.read_meta(2, b"ivan").expect("queued");
    assert_eq!(stores.store(0).expect("store").stats().queue_depth, 2);
    assert!(matches!(
        stores.read_meta(4, b"ivan"),
        Err(StoreError::Overloaded)
    ));
    let mut batch = WriteBatch::new();
    batch.put_meta(b"ivan", value("x"));
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&called);
    assert!(matches!(
        stores.write_batch_with(0, batch, move |_| flag
            .store(true, std::sync::atomic::Ordering::SeqCst)),
        Err(StoreError::Overloaded)
    ));
    // A checkpoint of everything reports the database it could not queue on.
    assert!(matches!(
        stores.checkpoint_all().await,
        Err(StoreError::Overloaded)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "submitting blocked"
    );
    // Database 1 (odd shards) is not held up.
    let mut batch = WriteBatch::new();
    batch.put_meta(b"ivan", value("odd"));
    write(&stores, 1, batch).await;

    drop(release);
    assert_eq!(first.await.expect("read"), None);
    assert_eq!(second.await.expect("read"), None);
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "refused callback was called"
    );
    assert_eq!(stores.store(0).expect("store").stats().queue_depth, 0);
    stores.checkpoint_all().await.expect("checkpoint");
}

#[tokio::test]
async fn a_panicking_operation_is_answered_with_an_error_and_the_thread_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 1));
    let store = stores.store(0).expect("store");
    let (done, pending) = Pending::<()>::channel();
    store
        .submit(
            OpKind::Write,
            |_| -> Result<(), StoreError> { panic!("injected") },
            done,
        )
        .expect("queued");
    assert!(matches!(pending.await, Err(StoreError::Panicked)));
    // A panicking callback is caught too.
    store
        .submit(
            OpKind::Read,
            |_| Ok(()),
            |_: Result<(), StoreError>| panic!("injected"),
        )
        .expect("queued");
    let mut batch = WriteBatch::new();
    batch.put_entry(b"judy", 1, value("still works"));
    write(&stores, 0, batch).await;
    assert_eq!(
        entries(&stores, 0, b"judy", 0, 1).await,
        vec![(1, value("still works"))]
    );
    let stats = store.stats();
    assert_eq!(stats.panics, 1);
    assert_eq!(stats.callback_panics, 1);
    assert_eq!(stats.errors, 1);
    assert_eq!(stats.operations, 4);
    assert!(stores.healthy());
}

#[tokio::test]
async fn a_closed_queue_refuses_with_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = open(&config(dir.path(), 2));
    stores.stores[1].hang_up();
    assert!(!stores.healthy());
    assert!(matches!(
        stores.read_meta(1, b"ken"),
        Err(StoreError::Closed)
    ));
    assert!(stores.read_meta(0, b"ken").expect("queued").await.is_ok());
    assert!(matches!(
        stores.checkpoint_all().await,
        Err(StoreError::Closed)
    ));
    stores.close().expect("close");
}

#[tokio::test]
async fn a_failed_database_is_reopened_with_every_batch_applied_since_its_last_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = open(&config(dir.path(), 2));
    let mut batch = WriteBatch::new();
    batch
        .put_entry(b"lena", 1, value("one"))
        .put_entry(b"lena", 2, value("two"))
        .put_entry(b"lena", 3, value("three"));
    write(&stores, 0, batch).await;
    let mut batch = WriteBatch::new();
    batch
        .delete_entries_up_to(b"lena", 2)
        .put_meta(b"lena", value("meta"));
    write(&stores, 0, batch).await;
    let mut batch = WriteBatch::new();
    batch.put_entry(b"lena", 4, value("four"));
    write(&stores, 0, batch).await;
    let store = stores.store(0).expect("store");
    store.fail();
    // The next operation finds the database closed, opens it again, replays the batches and
    // then runs.
    assert_eq!(
        entries(&stores, 0, b"lena", 0, 10).await,
        vec![(3, value("three")), (4, value("four"))]
    );
    assert_eq!(
        stores
            .read_meta(0, b"lena")
            .expect("queued")
            .await
            .expect("read"),
        Some(value("meta"))
    );
    assert_eq!(store.stats().reopens, 1);
    assert!(stores.healthy());
    stores.checkpoint_all().await.expect("checkpoint");
    stores.close().expect("close");
}
