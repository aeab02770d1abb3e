//! A randomized test of appends, releases, reopens and torn tails against a model.

use std::fs;

use bytes::Bytes;

use super::*;
use crate::journal::record::HEADER_BYTES;

/// A small deterministic generator for the randomized test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Random appends, releases, reopens, and crashes that tear the last segment at a random byte,
/// checked against a model of every durable record: replay yields exactly the model's records
/// from the oldest kept one, no unreleased record is ever deleted, lsns never skip, and a tear
/// loses only the records of the last segment past the tear.
#[tokio::test]
async fn randomized_operations_match_a_model() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            segment_bytes: 64 + rng.below(512),
            max_batch_records: 1 + rng.below(16) as usize,
            ..JournalConfig::new(dir.path())
        };
        let mut model: Vec<(u64, Bytes)> = Vec::new();
        let mut released = 0u64;
        let (mut journal, _) = open(&config);
        for step in 0..40 {
            match rng.below(9) {
                0..=5 => {
                    let count = 1 + rng.below(20);
                    let mut pending = Vec::new();
                    for _ in 0..count {
                        let data = Bytes::from(vec![rng.below(256) as u8; rng.below(100) as usize]);
                        pending.push((data.clone(), journal.append(data).expect("queued")));
                    }
                    for (data, waiting) in pending {
                        let lsn = waiting.await.expect("durable");
                        let expected = model.last().map_or(1, |record| record.0 + 1);
                        assert_eq!(lsn, expected, "seed {seed} step {step}");
                        model.push((lsn, data));
                    }
                }
                6 => {
                    let durable = journal.stats().durable_lsn;
                    released = released.max(rng.below(durable + 1));
                    journal.release(released);
                }
                _ => {
                    drop(journal);
                    if rng.below(2) == 0 {
                        // Crash: tear the last segment at a random byte.
                        let files = segment_files(dir.path());
                        let last = files.last().expect("segment");
                        let len = fs::metadata(last).expect("metadata").len();
                        let keep = rng.below(len + 1);
                        cut(last, keep);
                        let first = segment_first_lsn(last);
                        let mut offset = 0;
                        model.retain(|(lsn, data)| {
                            if *lsn < first {
                                return true;
                            }
                            offset += (HEADER_BYTES + data.len()) as u64;
                            offset <= keep
                        });
                        released = released.min(model.last().map_or(0, |record| record.0));
                    }
                    let (reopened, recovery) = open(&config);
                    journal = reopened;
                    let oldest = recovery.oldest_lsn();
                    assert!(
                        oldest <= released + 1,
                        "seed {seed} step {step}: lost records"
                    );
                    let expected: Vec<(u64, Bytes)> = model
                        .iter()
                        .filter(|record| record.0 >= oldest)
                        .cloned()
                        .collect();
                    assert_eq!(
                        records(&recovery, oldest - 1),
                        expected,
                        "seed {seed} step {step}"
                    );
                    let next = model.last().map_or(1, |record| record.0 + 1);
                    assert_eq!(recovery.next_lsn(), next, "seed {seed} step {step}");
                }
            }
        }
    }
}
