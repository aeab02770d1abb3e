//! Recovery tests: torn and corrupt tails are cut, damage elsewhere is reported.

use std::fs;

use bytes::Bytes;

use super::*;
use crate::journal::record::HEADER_BYTES;

/// Damage done to the tail of the last segment, and how many of 10 records survive it.
#[derive(Debug, Clone, Copy)]
enum TailDamage {
    CutInsidePayload,
    CutInsideHeader,
    FlipPayloadByte,
    FlipLsnByte,
    FlipLengthByte,
    AppendZeros,
    AppendGarbage,
}

#[tokio::test]
async fn torn_or_corrupt_tail_is_dropped_and_appends_continue() {
    for damage in [
        TailDamage::CutInsidePayload,
        TailDamage::CutInsideHeader,
        TailDamage::FlipPayloadByte,
        TailDamage::FlipLsnByte,
        TailDamage::FlipLengthByte,
        TailDamage::AppendZeros,
        TailDamage::AppendGarbage,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig::new(dir.path());
        let (journal, _) = open(&config);
        append_each(&journal, (1..=10).map(payload)).await;
        drop(journal);
        let files = segment_files(dir.path());
        let last = files.last().expect("a segment");
        let len = fs::metadata(last).expect("metadata").len();
        let last_record = (HEADER_BYTES + payload(10).len()) as u64;
        let survivors = match damage {
            TailDamage::CutInsidePayload => {
                cut(last, len - 3);
                9
            }
            TailDamage::CutInsideHeader => {
                cut(last, len - last_record + 5);
                9
            }
            TailDamage::FlipPayloadByte => {
                flip_byte(last, 1);
                9
            }
            TailDamage::FlipLsnByte => {
                flip_byte(last, last_record - 15);
                9
            }
            TailDamage::FlipLengthByte => {
                flip_byte(last, last_record - 3);
                9
            }
            TailDamage::AppendZeros | TailDamage::AppendGarbage => {
                let mut bytes = fs::read(last).expect("read");
                let fill = if matches!(damage, TailDamage::AppendZeros) {
                    0
                } else {
                    0x5a
                };
                bytes.extend(std::iter::repeat_n(fill, 100));
                fs::write(last, bytes).expect("write");
                10
            }
        };
        let (journal, recovery) = open(&config);
        assert_eq!(recovery.next_lsn(), survivors + 1, "{damage:?}");
        if matches!(damage, TailDamage::AppendZeros) {
            // Zeros are space allocated ahead and never written, not damage; cut all the same.
            assert_eq!(recovery.dropped_bytes(), 0);
            assert_eq!(fs::metadata(last).expect("metadata").len(), len);
        } else {
            assert!(recovery.dropped_bytes() > 0, "{damage:?}");
        }
        let found = records(&recovery, 0);
        assert_eq!(
            found,
            (1..=survivors).map(|i| (i, payload(i))).collect::<Vec<_>>(),
            "{damage:?}"
        );
        let next = append_each(&journal, [Bytes::from_static(b"after")]).await;
        assert_eq!(next, vec![survivors + 1], "{damage:?}");
        drop(journal);
        let (_journal, recovery) = open(&config);
        assert_eq!(recovery.dropped_bytes(), 0, "{damage:?}");
        let found = records(&recovery, survivors);
        assert_eq!(
            found,
            vec![(survivors + 1, Bytes::from_static(b"after"))],
            "{damage:?}"
        );
    }
}

#[tokio::test]
async fn corruption_in_a_middle_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let (journal, _) = open(&config);
    append_each(&journal, (1..=40).map(payload)).await;
    drop(journal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let middle = &files[1];
    let len = fs::metadata(middle).expect("metadata").len();
    flip_byte(middle, len - 20);
    match Journal::open(config.clone()) {
        Err(JournalError::Corrupt {
            segment,
            offset,
            damage,
        }) => {
            assert_eq!(&segment, middle);
            assert!(offset < len, "offset {offset} of {len}");
            assert!(
                matches!(damage, Damage::BadChecksum | Damage::BadLength(_)),
                "{damage:?}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was truncated by the failed open.
    assert_eq!(fs::metadata(middle).expect("metadata").len(), len);

    // A missing middle segment is a gap.
    fs::remove_file(middle).expect("remove");
    match Journal::open(config) {
        Err(JournalError::Corrupt {
            segment,
            damage: Damage::Gap { .. },
            ..
        }) => assert_eq!(segment, files[0]),
        other => panic!("expected a gap, got {other:?}"),
    }
}
