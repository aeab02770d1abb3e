//! Segments allocated whole when created: records go into the allocated space, the unwritten
//! rest is no damage, and a crash inside it loses nothing durable.

use std::fs;

use bytes::Bytes;

use super::*;

fn preallocated(dir: &Path) -> JournalConfig {
    JournalConfig {
        segment_bytes: 4096,
        preallocate: true,
        ..JournalConfig::new(dir)
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

#[tokio::test]
async fn segments_are_allocated_whole_and_their_zero_tails_are_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = preallocated(dir.path());
    let (journal, _) = open(&config);
    let first = segment_files(dir.path());
    assert_eq!(first.len(), 1);
    assert_eq!(
        file_len(&first[0]),
        4096,
        "the first segment is allocated whole"
    );

    let lsns = append_each(&journal, (1..=200).map(payload)).await;
    assert_eq!(lsns, (1..=200).collect::<Vec<_>>());
    let stats = journal.stats();
    assert!(stats.segments >= 3, "expected rotation, got {stats:?}");
    let files = segment_files(dir.path());
    for file in &files {
        assert_eq!(file_len(file), 4096, "{file:?} is not allocated whole");
    }
    // Record bytes, not allocated bytes.
    assert!(stats.disk_bytes < 4096 * stats.segments, "{stats:?}");
    journal.close().expect("close");

    let (journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 201);
    assert_eq!(
        recovery.dropped_bytes(),
        0,
        "an unwritten tail counted as dropped"
    );
    assert_eq!(
        records(&recovery, 0),
        (1..=200).map(|i| (i, payload(i))).collect::<Vec<_>>()
    );
    // The active segment is allocated whole again after its tail was cut at open.
    let files = segment_files(dir.path());
    let last = files.last().expect("a segment");
    assert_eq!(file_len(last), 4096);
    let next = append_each(&journal, [Bytes::from_static(b"after")]).await;
    assert_eq!(next, vec![201]);
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(
        records(&recovery, 200),
        vec![(201, Bytes::from_static(b"after"))]
    );
}

#[tokio::test]
async fn a_torn_batch_inside_allocated_space_is_cut_and_not_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = preallocated(dir.path());
    let (journal, _) = open(&config);
    append_each(&journal, (1..=5).map(payload)).await;
    let durable = journal.stats().disk_bytes;
    drop(journal);
    // A batch that a crash tore inside the allocated space: its first page lost (still zeros),
    // a later record complete and valid, as a disk may write pages out of order.
    let files = segment_files(dir.path());
    let last = files.last().expect("a segment").clone();
    let mut stale = Vec::new();
    crate::journal::record::encode(&mut stale, 7, b"never acked");
    let mut bytes = fs::read(&last).expect("read");
    let at = durable as usize + 64;
    bytes[at..at + stale.len()].copy_from_slice(&stale);
    fs::write(&last, &bytes).expect("write");

    let (journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 6);
    assert_eq!(
        records(&recovery, 0),
        (1..=5).map(|i| (i, payload(i))).collect::<Vec<_>>()
    );
    // The new lsns 6 and 7 are written over the old bytes; a crash now must not bring the stale
    // record 7 back after the new 6: the tail was cut, and the file allocated afresh.
    let bytes = fs::read(&last).expect("read");
    assert!(
        bytes[durable as usize..].iter().all(|&b| b == 0),
        "the torn batch is still in the file"
    );
    let next = append_each(&journal, [Bytes::from_static(b"six")]).await;
    assert_eq!(next, vec![6]);
    drop(journal);
    let (_journal, recovery) = open(&config);
    assert_eq!(records(&recovery, 5), vec![(6, Bytes::from_static(b"six"))]);
}

/// A segment whose records end fewer than a header's bytes before its allocated end: the zeros
/// left are unwritten space, not a short record.
#[tokio::test]
async fn zeros_shorter_than_a_header_at_a_segment_end_are_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = preallocated(dir.path());
    let (journal, _) = open(&config);
    // One record of 4096 - 10 bytes with its header, then one that cannot fit beside it.
    let big = Bytes::from(vec![7u8; 4096 - 10 - super::super::record::HEADER_BYTES]);
    let small = Bytes::from_static(b"next");
    assert_eq!(
        append_each(&journal, [big.clone(), small.clone()]).await,
        vec![1, 2]
    );
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2, "the second record starts a new segment");
    assert_eq!(file_len(&files[0]), 4096);
    journal.close().expect("close");
    drop(journal);

    let (_journal, recovery) = open(&config);
    assert_eq!(recovery.dropped_bytes(), 0, "zeros counted as a torn tail");
    assert_eq!(records(&recovery, 0), vec![(1, big), (2, small)]);
}
