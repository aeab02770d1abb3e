//! The stable key hash that places every key (user, group...) on one of 32 shards.
//!
//! The hash decides where data lives on disk, so it must never change and never be seeded:
//! FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the key's UTF-8
//! bytes. The shard is `hash % 32`; within a shard the worker is `(hash >> 32) % workers`.

/// Shards per keyed service. Fixed: changing it would move data between stores.
pub const SHARDS: usize = 32;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a 64 of `key`.
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (0..32) of a key hash.
pub fn shard_of(hash: u64) -> usize {
    (hash % SHARDS as u64) as usize
}

/// The worker (0..workers) of a key hash within its shard.
pub fn worker_of(hash: u64, workers: usize) -> usize {
    ((hash >> 32) % workers.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_documented_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_are_used_evenly() {
        let mut counts = [0u32; SHARDS];
        for i in 0..32_000 {
            counts[shard_of(key_hash(format!("user{i}").as_bytes()))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
    }
}
