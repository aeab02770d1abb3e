//! Disk space tests: the quota, and releasing segments.

use bytes::Bytes;

use super::*;
use crate::journal::record::HEADER_BYTES;

#[tokio::test]
async fn quota_fails_appends_with_disk_full_until_release_frees_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = (HEADER_BYTES + 50) as u64;
    let config = JournalConfig {
        segment_bytes: 3 * record,
        max_disk_bytes: Some(10 * record),
        ..JournalConfig::new(dir.path())
    };
    let body = |i: u64| Bytes::from(format!("{i:050}"));
    let (journal, _) = open(&config);
    let acked = append_each(&journal, (1..=10).map(body)).await;
    assert_eq!(acked, (1..=10).collect::<Vec<_>>());
    assert!(journal.healthy());
    assert!(matches!(
        journal.append(body(11)).expect("queued").await,
        Err(JournalError::DiskFull)
    ));
    assert!(!journal.healthy());
    assert_eq!(journal.stats().failures, 1);
    assert_eq!(journal.stats().disk_bytes, 10 * record);
    drop(journal);

    let (journal, recovery) = open(&config);
    assert_eq!(
        records(&recovery, 0),
        (1..=10).map(|i| (i, body(i))).collect::<Vec<_>>()
    );
    assert!(matches!(
        journal.append(body(11)).expect("queued").await,
        Err(JournalError::DiskFull)
    ));
    // Records 1..=6 fill the first two segments; releasing them frees 6 records of space.
    journal.release(6);
    wait_for("release", || journal.stats().segments == 2);
    assert_eq!(journal.stats().disk_bytes, 4 * record);
    let lsns = append_each(&journal, (11..=16).map(body)).await;
    assert_eq!(lsns, (11..=16).collect::<Vec<_>>(), "no lsn was skipped");
    assert!(journal.healthy());
    assert!(matches!(
        journal.append(body(17)).expect("queued").await,
        Err(JournalError::DiskFull)
    ));
    drop(journal);

    let (_journal, recovery) = open(&config);
    assert_eq!(recovery.oldest_lsn(), 7);
    assert!(matches!(
        recovery.records_after(0),
        Err(JournalError::Released {
            after: 0,
            oldest: 7
        })
    ));
    assert_eq!(
        records(&recovery, 6),
        (7..=16).map(|i| (i, body(i))).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_batch_is_split_at_the_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = (HEADER_BYTES + 10) as u64;
    let config = JournalConfig {
        max_disk_bytes: Some(5 * record),
        ..JournalConfig::new(dir.path())
    };
    let (journal, _) = open(&config);
    let pending: Vec<Pending> = (0..8)
        .map(|_| {
            journal
                .append(Bytes::from_static(b"0123456789"))
                .expect("queued")
        })
        .collect();
    let mut results = Vec::new();
    for waiting in pending {
        results.push(waiting.await);
    }
    let ok: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok, vec![1, 2, 3, 4, 5]);
    assert!(
        results[5..]
            .iter()
            .all(|r| matches!(r, Err(JournalError::DiskFull)))
    );
}

#[tokio::test]
async fn release_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let (journal, _) = open(&config);
    append_each(&journal, (1..=40).map(payload)).await;
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    // Up to one record before the third segment: only the first segment goes.
    let third_first = segment_first_lsn(&files[2]);
    journal.release(third_first - 2);
    let before = journal.stats().segments as usize;
    assert_eq!(before, files.len());
    wait_for("first segment deleted", || {
        journal.stats().segments as usize == before - 1
    });
    assert!(!files[0].exists());
    assert_eq!(segment_files(dir.path()), files[1..].to_vec());

    journal.release(u64::MAX);
    wait_for("all but the active deleted", || {
        journal.stats().segments == 1
    });
    let left = segment_files(dir.path());
    assert_eq!(left, vec![files.last().expect("active").clone()]);
    assert_eq!(append_each(&journal, [payload(41)]).await, vec![41]);
    drop(journal);

    let (_journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 42);
    let kept = records(&recovery, recovery.oldest_lsn() - 1);
    assert_eq!(kept.last(), Some(&(41, payload(41))));
    assert_eq!(kept.first().map(|r| r.0), Some(segment_first_lsn(&left[0])));
}

/// Released segments are renamed into `released/` by the journal thread and unlinked by the
/// reaper: none is left once the journal closed. Files a crash left in `released/` (the rename
/// was durable, the unlink had not happened) are deleted at the next open and never replayed.
#[tokio::test]
async fn released_segments_are_unlinked_and_leftovers_go_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let released = dir.path().join("released");
    let (journal, _) = open(&config);
    append_each(&journal, (1..=40).map(payload)).await;
    assert!(segment_files(dir.path()).len() >= 4);
    journal.release(u64::MAX);
    wait_for("all but the active retired", || {
        journal.stats().segments == 1
    });
    journal.close().expect("close");
    drop(journal);
    let left: Vec<_> = fs::read_dir(&released).expect("released dir").collect();
    assert!(left.is_empty(), "not unlinked: {left:?}");

    // A retired segment a crash left behind, with a name that would sort first.
    let stray = released.join("00000000000000000001.wal");
    fs::write(&stray, b"records of a released segment").expect("write stray");
    let (_journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 41);
    assert!(
        records(&recovery, recovery.oldest_lsn() - 1)
            .iter()
            .all(|(lsn, _)| *lsn > 1)
    );
    wait_for("leftover unlinked", || !stray.exists());
}
