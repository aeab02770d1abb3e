//! Open connections per source address (`limits.max_connections_per_ip`): counted when the
//! accept loop takes a connection, released when the connection's reader ends.
//!
//! 32 shards of a map from [`SourceKey`] to its count; a source's entry goes when its count
//! reaches zero, so the table holds at most one entry per open connection (bounded by
//! `limits.max_connections`). An accept and a close take one shard lock each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashMap;

use super::SourceKey;
use super::rate_table::shard_index;
use crate::shard::SHARDS;

type Shard = Mutex<HashMap<SourceKey, u32>>;

/// Open connections by source address.
#[derive(Debug)]
pub struct PerIpConnections {
    /// Most connections from one source; 0: off (nothing is counted).
    max: u32,
    shards: Box<[Shard]>,
    /// Sources with at least one open connection.
    sources: AtomicUsize,
}

impl PerIpConnections {
    /// A table allowing `max` connections per source (0: no limit, no table).
    pub fn new(max: u32) -> Self {
        let shards = if max > 0 { SHARDS } else { 0 };
        Self {
            max,
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            sources: AtomicUsize::new(0),
        }
    }

    /// Counts one more connection from `source`; false (nothing counted) when it already has
    /// the maximum. Always true when the limit is off.
    pub fn acquire(&self, source: SourceKey) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut shard = self.shard(source).lock().unwrap_or_else(|e| e.into_inner());
        let count = shard.entry(source).or_insert_with(|| {
            self.sources.fetch_add(1, Ordering::Relaxed);
            0
        });
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// Releases a connection counted by [`PerIpConnections::acquire`].
    pub fn release(&self, source: SourceKey) {
        if self.max == 0 {
            return;
        }
        let mut shard = self.shard(source).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = shard.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&source);
                self.sources.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Sources with at least one open connection.
    pub fn sources(&self) -> usize {
        self.sources.load(Ordering::Relaxed)
    }

    fn shard(&self, source: SourceKey) -> &Shard {
        &self.shards[shard_index(source.get())]
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{PerIpConnections, SourceKey};

    fn source(text: &str) -> SourceKey {
        SourceKey::of(text.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn a_source_at_its_maximum_is_refused_until_one_of_its_connections_ends() {
        let table = PerIpConnections::new(2);
        let (a, b) = (source("10.0.0.1"), source("10.0.0.2"));
        assert!(table.acquire(a) && table.acquire(a));
        assert!(!table.acquire(a));
        assert!(table.acquire(b), "another source has its own count");
        assert_eq!(table.sources(), 2);
        table.release(a);
        assert!(table.acquire(a));
        table.release(a);
        table.release(a);
        table.release(b);
        assert_eq!(table.sources(), 0, "entries go at zero");
        // A refused attempt at zero leaves nothing behind either.
        let none = PerIpConnections::new(1);
        assert!(none.acquire(a));
        assert!(!none.acquire(a));
        none.release(a);
        assert_eq!(none.sources(), 0);
    }

    #[test]
    fn off_counts_nothing() {
        let table = PerIpConnections::new(0);
        for _ in 0..10 {
            assert!(table.acquire(source("10.0.0.1")));
        }
        table.release(source("10.0.0.1"));
        assert_eq!(table.sources(), 0);
    }
}
