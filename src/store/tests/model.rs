//! A randomized test of write batches, reads, checkpoints and reopens against an in-memory
//! model.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::shard::{SHARDS, key_hash, shard_of};

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const OWNERS: [&str; 6] = ["amy", "amy.b", "bo", "c@d", "zed", "x+y"];
const DEVICES: [&str; 3] = ["phone", "laptop", "tab"];
const RECORD_KEYS: [&[u8]; 5] = [b"", b"acct/1", b"acct/2", b"grp/\x00\xff", b"grp/9"];

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<(String, u64), Bytes>,
    cursors: BTreeMap<(String, String), u64>,
    meta: BTreeMap<String, Bytes>,
    records: BTreeMap<(usize, Vec<u8>), Bytes>,
}

fn shard(owner: &str) -> usize {
    shard_of(key_hash(owner.as_bytes()))
}

fn random_value(rng: &mut Rng) -> Bytes {
    let len = match rng.below(10) {
        0 => 0,
        1 => 4000 + rng.below(4000),
        _ => rng.below(40),
    };
    Bytes::from(vec![rng.below(256) as u8; len as usize])
}

/// A random batch for one owner's shard, applied to the model as it is built.
fn random_batch(rng: &mut Rng, model: &mut Model) -> (usize, WriteBatch) {
    let owner = *rng.pick(&OWNERS);
    let shard = shard(owner);
    let mut batch = WriteBatch::new();
    for _ in 0..1 + rng.below(12) {
        // Other owners of the same shard may share the batch.
        let owner = OWNERS
            .iter()
            .copied()
            .filter(|other| self::shard(other) == shard)
            .nth(rng.below(2) as usize)
            .unwrap_or(owner);
        match rng.below(9) {
            0..=2 => {
                let seq = 1 + rng.below(40);
                let value = random_value(rng);
                batch.put_entry(owner.as_bytes(), seq, value.clone());
                model.entries.insert((owner.to_owned(), seq), value);
            }
            3 => {
                let up_to = rng.below(45);
                batch.delete_entries_up_to(owner.as_bytes(), up_to);
                model
                    .entries
                    .retain(|(who, seq), _| who != owner || *seq > up_to);
            }
            4 => {
                let device = *rng.pick(&DEVICES);
                let seq = rng.below(1 << 40);
                batch.put_cursor(owner.as_bytes(), device, seq);
                model
                    .cursors
                    .insert((owner.to_owned(), device.to_owned()), seq);
            }
            5 => {
                let device = *rng.pick(&DEVICES);
                batch.delete_cursor(owner.as_bytes(), device);
                model.cursors.remove(&(owner.to_owned(), device.to_owned()));
            }
            6 => {
                let value = random_value(rng);
                batch.put_meta(owner.as_bytes(), value.clone());
                model.meta.insert(owner.to_owned(), value);
            }
            7 => {
                let key = *rng.pick(&RECORD_KEYS);
                if rng.below(3) == 0 {
                    batch.delete_record(key);
                    model.records.remove(&(shard, key.to_vec()));
                } else {
                    let value = random_value(rng);
                    batch.put_record(key, value.clone());
                    model.records.insert((shard, key.to_vec()), value);
                }
            }
            _ => {
                batch.delete_meta(owner.as_bytes());
                model.meta.remove(owner);
            }
        }
    }
    (shard, batch)
}

/// Reads everything back and compares it with the model.
async fn check(stores: &Stores, model: &Model, rng: &mut Rng, context: &str) {
    for owner in OWNERS {
        let shard = shard(owner);
        let expected: Entries = model
            .entries
            .range((owner.to_owned(), 0)..=(owner.to_owned(), u64::MAX))
            .map(|((_, seq), value)| (*seq, value.clone()))
            .collect();
        let after = rng.below(45);
        let limit = rng.below(8) as usize;
        let windowed: Entries = expected
            .iter()
            .filter(|(seq, _)| *seq > after)
            .take(limit)
            .cloned()
            .collect();
        assert_eq!(
            entries(stores, shard, owner.as_bytes(), 0, usize::MAX).await,
            expected,
            "{context}: entries of {owner}"
        );
        assert_eq!(
            entries(stores, shard, owner.as_bytes(), after, limit).await,
            windowed,
            "{context}: entries of {owner} after {after} limit {limit}"
        );
        let cursors: Cursors = model
            .cursors
            .iter()
            .filter(|((who, _), _)| who == owner)
            .map(|((_, device), seq)| (device.clone(), *seq))
            .collect();
        let read = stores
            .read_cursors(shard, owner.as_bytes())
            .expect("queued")
            .await;
        assert_eq!(
            read.expect("read"),
            cursors,
            "{context}: cursors of {owner}"
        );
        let read = stores
            .read_meta(shard, owner.as_bytes())
            .expect("queued")
            .await;
        assert_eq!(
            read.expect("read"),
            model.meta.get(owner).cloned(),
            "{context}: meta of {owner}"
        );
    }
    for shard in 0..SHARDS {
        let meta: Pairs = model
            .meta
            .iter()
            .filter(|(owner, _)| self::shard(owner) == shard)
            .map(|(owner, value)| (Bytes::copy_from_slice(owner.as_bytes()), value.clone()))
            .collect();
        let scanned = stores
            .scan_meta(shard)
            .expect("queued")
            .await
            .expect("scan");
        assert_eq!(scanned, meta, "{context}: meta of shard {shard}");
        let records: Pairs = model
            .records
            .iter()
            .filter(|((at, _), _)| *at == shard)
            .map(|((_, key), value)| (Bytes::copy_from_slice(key), value.clone()))
            .collect();
        let scanned = stores
            .scan_records(shard, b"", usize::MAX)
            .expect("queued")
            .await;
        assert_eq!(
            scanned.expect("scan"),
            records,
            "{context}: records of shard {shard}"
        );
        for key in RECORD_KEYS {
            let read = stores.get_record(shard, key).expect("queued").await;
            assert_eq!(
                read.expect("read"),
                model.records.get(&(shard, key.to_vec())).cloned(),
                "{context}: record {key:?} of shard {shard}"
            );
        }
    }
}

/// Random batches, checkpoints and reopens (closing cleanly or just dropping), checked against
/// a model after every reopen and at random points.
#[tokio::test]
async fn randomized_operations_match_a_model_across_reopens() {
    for seed in 1..=6u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            flush_every_ms: if seed % 2 == 0 { None } else { Some(50) },
            ..super::config(dir.path(), 1 + (seed % 4) as usize)
        };
        let mut model = Model::default();
        let mut stores = open(&config);
        for step in 0..40 {
            let context = format!("seed {seed} step {step}");
            match rng.below(10) {
                0..=5 => {
                    // Several batches in flight at once, to different databases.
                    let mut pending = Vec::new();
                    for _ in 0..1 + rng.below(4) {
                        let (shard, batch) = random_batch(&mut rng, &mut model);
                        pending.push(stores.write_batch(shard, batch).expect("queued"));
                    }
                    for waiting in pending {
                        waiting.await.expect("written");
                    }
                }
                6 => check(&stores, &model, &mut rng, &context).await,
                7 => stores.checkpoint_all().await.expect("checkpoint"),
                _ => {
                    if rng.below(2) == 0 {
                        stores.close().expect("close");
                    } else {
                        drop(stores);
                    }
                    stores = open(&config);
                    check(&stores, &model, &mut rng, &context).await;
                }
            }
        }
        check(&stores, &model, &mut rng, &format!("seed {seed} end")).await;
    }
}
