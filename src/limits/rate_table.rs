//! A bounded table of token buckets by key (a source address, a user): 32 shards, each a map
//! from the key to its bucket's arrival time ([`Rate`]), so one check takes one shard lock.
//!
//! Bounded: a bucket back to full is the same as no bucket, so the sweeper drops them
//! ([`RateTable::sweep`]); a shard that is full of busy buckets forgets an arbitrary one to
//! make room. An attacker with more keys than the table holds then gets fresh buckets for some
//! of them, which it could have had anyway from that many keys; the table never grows.

use std::sync::Mutex;

use hashbrown::HashMap;

use super::rate::Rate;
use crate::shard::SHARDS;

type Shard = Mutex<HashMap<u64, u64>>;

/// Buckets of one limit by key.
#[derive(Debug)]
pub struct RateTable {
    /// `None`: the limit is off, and the table holds nothing.
    rate: Option<Rate>,
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl RateTable {
    /// A table for `rate` (`None`: off) holding at most `capacity` keys (rounded up to a
    /// multiple of the shard count).
    pub fn new(rate: Option<Rate>, capacity: usize) -> Self {
        let shards = if rate.is_some() { SHARDS } else { 0 };
        Self {
            rate,
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// True when the limit is on.
    pub fn is_on(&self) -> bool {
        self.rate.is_some()
    }

    /// One event of `key` at `now` (microseconds, monotonic): `Ok` when admitted, else `Err`
    /// with the microseconds until it would be.
    pub fn admit(&self, key: u64, now: u64) -> Result<(), u64> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let known = shard.get(&key).copied();
        let next = rate.admit(known.unwrap_or(0), now)?;
        if known.is_none() && shard.len() >= self.per_shard {
            // Full of buckets the sweeper has not dropped yet: make room for this one.
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
            }
        }
        shard.insert(key, next);
        Ok(())
    }

    /// Drops the buckets that are full again at `now`; returns how many are left.
    pub fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                if !shard.is_empty() {
                    shard.retain(|_, tat| !Rate::is_idle(*tat, now));
                }
                shard.len()
            })
            .sum()
    }

    fn shard(&self, key: u64) -> &Shard {
        &self.shards[shard_index(key)]
    }
}

/// The shard of a key: the top bits of a multiplicative hash, so keys that differ only in their
/// high bits (IPv6 prefixes whose subnet bits are zero) still spread over every shard.
pub(super) fn shard_index(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARDS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::{Rate, RateTable, SHARDS, shard_index};

    #[test]
    fn keys_have_buckets_of_their_own_and_idle_ones_are_swept() {
        let table = RateTable::new(Rate::per_second(1, 2), 1_000);
        let now = 1_000_000;
        assert!(table.admit(1, now).is_ok());
        assert!(table.admit(1, now).is_ok());
        assert_eq!(table.admit(1, now), Err(1_000_000));
        assert!(table.admit(2, now).is_ok(), "another key is not limited");
        assert_eq!(table.sweep(now), 2);
        // Key 2's bucket is full again after a second, key 1's after two.
        assert_eq!(table.sweep(now + 1_000_000), 1);
        assert_eq!(table.sweep(now + 2_000_000), 0);
        assert!(table.admit(1, now + 2_000_000).is_ok());
    }

    #[test]
    fn a_full_table_stays_at_its_capacity() {
        let table = RateTable::new(Rate::per_minute(1), SHARDS * 4);
        for key in 0..10_000u64 {
            assert!(table.admit(key, 1).is_ok());
        }
        assert_eq!(table.sweep(1), SHARDS * 4);
    }

    #[test]
    fn an_off_table_admits_everything_and_holds_nothing() {
        let table = RateTable::new(None, 1_000);
        assert!(!table.is_on());
        for _ in 0..100 {
            assert!(table.admit(7, 1).is_ok());
        }
        assert_eq!(table.sweep(1), 0);
    }

    #[test]
    fn prefixes_with_zero_low_bits_spread_over_the_shards() {
        let mut used = [false; SHARDS];
        for prefix in 0..256u64 {
            used[shard_index(prefix << 32)] = true;
        }
        assert!(used.iter().all(|used| *used));
    }
}
