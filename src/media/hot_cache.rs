//! The hot-object cache: popular small objects held in memory, keyed by content hash, so a
//! photo fetched millions of times is read from disk once.
//!
//! Admission: an object enters on its second request within a window (a one-bit-per-slot
//! "doorkeeper" remembers first requests and is cleared when half full), so objects fetched
//! once never push out popular ones. Eviction: CLOCK (second chance): a hit sets the entry's
//! reference bit under a shared lock; the hand clears bits and evicts the first entry it finds
//! unreferenced. Memory is bounded by `media.hot_cache_bytes`, objects by
//! `media.hot_cache_max_object_bytes`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::HashMap;

use super::layout::Sha256Digest;

/// Doorkeeper size in bits (8 KiB of memory).
const DOORKEEPER_BITS: usize = 1 << 16;

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Served from memory.
    Hit(Bytes),
    /// Not cached, but popular and small enough: read it whole and [`HotCache::admit`] it.
    Admit,
    /// Stream it from disk.
    Miss,
}

#[derive(Debug)]
struct Slot {
    digest: Sha256Digest,
    data: Bytes,
    referenced: AtomicBool,
}

#[derive(Debug, Default)]
struct Clock {
    index: HashMap<Sha256Digest, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: u64,
}

/// The cache.
#[derive(Debug)]
pub struct HotCache {
    budget: u64,
    max_object: u64,
    clock: RwLock<Clock>,
    doorkeeper: Vec<AtomicU64>,
    doorkeeper_marks: AtomicU64,
}

impl HotCache {
    /// A cache of at most `budget` bytes holding objects of at most `max_object` bytes.
    pub fn new(budget: u64, max_object: u64) -> Self {
        Self {
            budget,
            max_object: max_object.min(budget),
            clock: RwLock::new(Clock::default()),
            doorkeeper: (0..DOORKEEPER_BITS / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            doorkeeper_marks: AtomicU64::new(0),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Clock> {
        self.clock
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Clock> {
        self.clock
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Looks an object of `size` bytes up, and decides whether a miss should be admitted.
    pub fn lookup(&self, digest: &Sha256Digest, size: u64) -> Lookup {
        if size > self.max_object || self.budget == 0 {
            return Lookup::Miss;
        }
        {
            let clock = self.read();
            if let Some(slot) = clock
                .index
                .get(digest)
                .and_then(|&at| clock.slots[at].as_ref())
            {
                slot.referenced.store(true, Ordering::Relaxed);
                return Lookup::Hit(slot.data.clone());
            }
        }
        if self.seen_before(digest) {
            Lookup::Admit
        } else {
            Lookup::Miss
        }
    }

    /// Remembers a first request; true if the object was requested before.
    fn seen_before(&self, digest: &Sha256Digest) -> bool {
        let bit = usize::from(u16::from_le_bytes([digest[0], digest[1]])) % DOORKEEPER_BITS;
        let mask = 1u64 << (bit % 64);
        let before = self.doorkeeper[bit / 64].fetch_or(mask, Ordering::Relaxed);
        if before & mask != 0 {
            return true;
        }
        let marks = self.doorkeeper_marks.fetch_add(1, Ordering::Relaxed) + 1;
        if marks >= (DOORKEEPER_BITS / 2) as u64 {
            // Half full: start a new window so the filter keeps meaning "requested recently".
            self.doorkeeper_marks.store(0, Ordering::Relaxed);
            for word in &self.doorkeeper {
                word.store(0, Ordering::Relaxed);
            }
        }
        false
    }

    /// Holds `data`, evicting unreferenced entries until it fits. Returns the change in bytes
    /// held (for the gauge).
    pub fn admit(&self, digest: Sha256Digest, data: Bytes) -> i64 {
        let size = data.len() as u64;
        if size > self.max_object || self.budget == 0 {
            return 0;
        }
        let mut clock = self.write();
        if clock.index.contains_key(&digest) {
            return 0;
        }
        let before = clock.bytes;
        // Two sweeps clear every reference bit, so this loop ends.
        let mut steps = 2 * clock.slots.len() + 1;
        while clock.bytes + size > self.budget && steps > 0 {
            steps -= 1;
            if clock.slots.is_empty() {
                break;
            }
            let at = clock.hand % clock.slots.len();
            clock.hand = at + 1;
            let evict = match &clock.slots[at] {
                Some(slot) => !slot.referenced.swap(false, Ordering::Relaxed),
                None => false,
            };
            if evict {
                clock.remove_at(at);
            }
        }
        if clock.bytes + size > self.budget {
            return clock.bytes as i64 - before as i64;
        }
        let slot = Slot {
            digest,
            data,
            referenced: AtomicBool::new(false),
        };
        let at = match clock.free.pop() {
            Some(at) => {
                clock.slots[at] = Some(slot);
                at
            }
            None => {
                clock.slots.push(Some(slot));
                clock.slots.len() - 1
            }
        };
        clock.index.insert(digest, at);
        clock.bytes += size;
        clock.bytes as i64 - before as i64
    }

    /// Drops an object (its last reference was deleted). Returns the bytes freed.
    pub fn remove(&self, digest: &Sha256Digest) -> u64 {
        let mut clock = self.write();
        match clock.index.get(digest).copied() {
            Some(at) => clock.remove_at(at),
            None => 0,
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.read().bytes
    }
}

impl Clock {
    fn remove_at(&mut self, at: usize) -> u64 {
        let Some(slot) = self.slots[at].take() else {
            return 0;
        };
        self.index.remove(&slot.digest);
        self.free.push(at);
        let size = slot.data.len() as u64;
        self.bytes -= size;
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Sha256Digest {
        let mut digest = [0; 32];
        digest[0] = n;
        digest[31] = n;
        digest
    }

    #[test]
    fn second_request_admits_then_hits() {
        let cache = HotCache::new(1000, 100);
        let key = digest(1);
        assert!(matches!(cache.lookup(&key, 10), Lookup::Miss));
        assert!(matches!(cache.lookup(&key, 10), Lookup::Admit));
        assert_eq!(cache.admit(key, Bytes::from_static(b"0123456789")), 10);
        match cache.lookup(&key, 10) {
            Lookup::Hit(data) => assert_eq!(&data[..], b"0123456789"),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert_eq!(cache.remove(&key), 10);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn large_objects_are_never_cached() {
        let cache = HotCache::new(1000, 100);
        let key = digest(2);
        for _ in 0..3 {
            assert!(matches!(cache.lookup(&key, 101), Lookup::Miss));
        }
        assert_eq!(cache.admit(key, Bytes::from(vec![0; 101])), 0);
    }

    #[test]
    fn the_budget_holds_and_referenced_entries_survive() {
        let cache = HotCache::new(300, 100);
        for n in 0..3 {
            cache.admit(digest(n), Bytes::from(vec![n; 100]));
        }
        // Touch 0 and 2: 1 is the first unreferenced entry the hand meets.
        assert!(matches!(cache.lookup(&digest(0), 100), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(&digest(2), 100), Lookup::Hit(_)));
        cache.admit(digest(3), Bytes::from(vec![3; 100]));
        assert_eq!(cache.bytes(), 300);
        assert!(matches!(cache.lookup(&digest(0), 100), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(&digest(3), 100), Lookup::Hit(_)));
        assert!(!matches!(cache.lookup(&digest(1), 100), Lookup::Hit(_)));
        for n in 10..40 {
            cache.admit(digest(n), Bytes::from(vec![n; 100]));
            assert!(cache.bytes() <= 300);
        }
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let cache = HotCache::new(0, 0);
        let key = digest(4);
        for _ in 0..3 {
            assert!(matches!(cache.lookup(&key, 1), Lookup::Miss));
        }
    }
}
