//! I/O failure tests: failed writes, fsyncs and rollbacks, with injected faults.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;

#[tokio::test]
async fn failed_fsync_fails_the_batch_and_its_lsn_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    assert_eq!(append_each(&journal, [payload(1)]).await, vec![1]);
    journal.faults().syncs.store(1, Ordering::SeqCst);
    let failed = journal
        .append(Bytes::from_static(b"lost"))
        .expect("queued")
        .await;
    assert!(matches!(failed, Err(JournalError::Io { .. })), "{failed:?}");
    assert!(!journal.healthy());
    assert_eq!(journal.stats().durable_lsn, 1);
    assert_eq!(append_each(&journal, [payload(2)]).await, vec![2]);
    assert!(journal.healthy());
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(
        recovery.dropped_bytes(),
        0,
        "the failed batch was truncated at once"
    );
    assert_eq!(
        records(&recovery, 0),
        vec![(1, payload(1)), (2, payload(2))]
    );
}

#[tokio::test]
async fn failed_write_is_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    assert_eq!(append_each(&journal, [payload(1)]).await, vec![1]);
    journal.faults().writes.store(1, Ordering::SeqCst);
    let failed = journal.append(payload(99)).expect("queued").await;
    assert!(matches!(failed, Err(JournalError::Io { .. })), "{failed:?}");
    assert_eq!(append_each(&journal, [payload(2)]).await, vec![2]);
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(
        records(&recovery, 0),
        vec![(1, payload(1)), (2, payload(2))]
    );
}

#[tokio::test]
async fn failed_rollback_moves_to_a_fresh_segment_that_supersedes_the_failed_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    assert_eq!(append_each(&journal, [payload(1)]).await, vec![1]);
    journal.faults().syncs.store(1, Ordering::SeqCst);
    journal.faults().truncates.store(1, Ordering::SeqCst);
    let failed = journal
        .append(Bytes::from_static(b"lost"))
        .expect("queued")
        .await;
    assert!(matches!(failed, Err(JournalError::Io { .. })), "{failed:?}");
    assert_eq!(append_each(&journal, [payload(2)]).await, vec![2]);
    assert_eq!(journal.stats().segments, 2);
    drop(journal);
    assert_eq!(segment_files(dir.path()).len(), 2);
    let (_journal, recovery) = open(&config);
    assert!(
        recovery.dropped_bytes() > 0,
        "the failed record was cut at recovery"
    );
    assert_eq!(
        records(&recovery, 0),
        vec![(1, payload(1)), (2, payload(2))]
    );
}

#[tokio::test]
async fn failed_rollback_of_an_empty_segment_recreates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    journal.faults().syncs.store(1, Ordering::SeqCst);
    journal.faults().truncates.store(1, Ordering::SeqCst);
    let failed = journal
        .append(Bytes::from_static(b"lost"))
        .expect("queued")
        .await;
    assert!(failed.is_err());
    assert_eq!(append_each(&journal, [payload(1)]).await, vec![1]);
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(records(&recovery, 0), vec![(1, payload(1))]);
}
