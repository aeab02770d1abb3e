//! The ids a node mints (message server ids, connection ids), unique across the cluster
//! because each carries the node's ordinal.
//!
//! Server id layout, most significant bit first:
//!
//! ```text
//!  63                          22 21              10 9          0
//! +------------------------------+------------------+------------+
//! | milliseconds since the epoch | counter (12 bits)| ordinal    |
//! +------------------------------+------------------+------------+
//! ```
//!
//! The timestamp sits where it sat before clusters existed (ids then were `ms << 22 | counter`),
//! so an id minted after an upgrade is above every id minted before it, as long as the clock
//! moved on between the two (a restart takes longer than a millisecond). The counter and the
//! timestamp together form one sequence: a node minting more than 4096 ids in a millisecond runs
//! ahead of the clock rather than repeating, and a clock stepping back never lowers it. The
//! ordinal (`cluster.node`, 0 without `[cluster]`) makes two nodes' ids differ even when minted
//! in the same millisecond. Group ids (`g` + the hex of a server id) inherit all of this.
//!
//! Connection ids keep a plain counter in the low bits (connection tables shard on them) and
//! the ordinal in the top bits, so a node without `[cluster]` numbers its connections 1, 2, 3...

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::config::{MAX_NODE_ORDINAL, NODE_ORDINAL_BITS};

/// Bits of a server id below the millisecond timestamp.
const SERVER_ID_TIME_SHIFT: u32 = 22;
/// The difference between two consecutive server ids of one node within a millisecond: one
/// step of the counter, above the ordinal.
const SERVER_ID_STEP: u64 = 1 << NODE_ORDINAL_BITS;
/// Where the ordinal sits in a connection id.
pub const CONN_ID_ORDINAL_SHIFT: u32 = 64 - NODE_ORDINAL_BITS;

/// Mints this node's server ids: strictly increasing, each carrying the node's ordinal.
#[derive(Debug)]
pub struct ServerIds {
    /// The last id minted (its low bits are always the ordinal).
    last: AtomicU64,
    ordinal: u64,
}

impl ServerIds {
    /// The minter of a node with `ordinal` (0 without `[cluster]`; only the low 10 bits count).
    pub fn new(ordinal: u64) -> Self {
        let ordinal = ordinal & MAX_NODE_ORDINAL;
        Self {
            last: AtomicU64::new(ordinal),
            ordinal,
        }
    }

    /// A new id, above every id this minter returned before.
    pub fn next(&self, now_ms: u64) -> u64 {
        let floor = (now_ms << SERVER_ID_TIME_SHIFT) | self.ordinal;
        let mut current = self.last.load(Ordering::Relaxed);
        loop {
            // Both candidates carry the ordinal in their low bits.
            let next = floor.max(current.wrapping_add(SERVER_ID_STEP));
            match self.last.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The ordinal of the node that minted server id `id`.
pub fn server_id_ordinal(id: u64) -> u64 {
    id & MAX_NODE_ORDINAL
}

/// The first connection id of a node with `ordinal`; later ones count up by one.
pub fn first_conn_id(ordinal: u64) -> u64 {
    ((ordinal & MAX_NODE_ORDINAL) << CONN_ID_ORDINAL_SHIFT) | 1
}

/// The ordinal of the node that numbered connection `id`.
pub fn conn_id_ordinal(id: u64) -> u64 {
    id >> CONN_ID_ORDINAL_SHIFT
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The id scheme of nodes before clusters: `ms << 22 | counter`, strictly increasing.
    fn legacy_ids(start_ms: u64, count: u64) -> u64 {
        let mut last = 0u64;
        for _ in 0..count {
            last = (start_ms << SERVER_ID_TIME_SHIFT).max(last + 1);
        }
        last
    }

    #[test]
    fn a_million_ids_on_each_of_three_nodes_never_collide_and_rise_per_node() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 250_000;
        let now = crate::clock::now_ms();
        let mut all = Vec::with_capacity(3 * THREADS * PER_THREAD);
        for ordinal in 1..=3u64 {
            let ids = Arc::new(ServerIds::new(ordinal));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let ids = ids.clone();
                    std::thread::spawn(move || {
                        // The clock is read as the node reads it, a few ids per millisecond
                        // or many: both paths of the floor are taken.
                        (0..PER_THREAD)
                            .map(|_| ids.next(crate::clock::now_ms()))
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            let mut node_ids = Vec::with_capacity(THREADS * PER_THREAD);
            for thread in threads {
                let minted = thread.join().expect("minting thread");
                assert!(
                    minted.windows(2).all(|pair| pair[0] < pair[1]),
                    "ids seen by one thread rise"
                );
                node_ids.extend(minted);
            }
            assert!(node_ids.iter().all(|id| server_id_ordinal(*id) == ordinal));
            assert!(node_ids.iter().all(|id| *id >> SERVER_ID_TIME_SHIFT >= now));
            let count = node_ids.len();
            node_ids.sort_unstable();
            node_ids.dedup();
            assert_eq!(node_ids.len(), count, "node {ordinal} minted an id twice");
            // One more from the same node is above all of them.
            let last = ids.next(0);
            assert!(node_ids.last().is_some_and(|max| *max < last));
            all.extend(node_ids);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "two nodes minted the same id");
    }

    #[test]
    fn ids_rise_when_the_clock_steps_back_or_a_millisecond_overflows() {
        let ids = ServerIds::new(5);
        let first = ids.next(1_000_000);
        let burst: Vec<u64> = (0..10_000).map(|_| ids.next(1_000_000)).collect();
        assert!(
            burst
                .iter()
                .all(|id| *id > first && server_id_ordinal(*id) == 5)
        );
        assert!(burst.windows(2).all(|pair| pair[0] < pair[1]));
        let after_step_back = ids.next(999_000);
        assert!(burst.last().is_some_and(|last| *last < after_step_back));
    }

    #[test]
    fn ids_after_an_upgrade_are_above_every_id_minted_before_it() {
        let start_ms = 1_800_000_000_000;
        // A node of the old scheme minted a burst in its last millisecond.
        let old_last = legacy_ids(start_ms, 100_000);
        for ordinal in [0, 1, 1023] {
            let ids = ServerIds::new(ordinal);
            assert!(ids.next(start_ms + 1) > old_last);
        }
    }

    #[test]
    fn connection_ids_carry_the_ordinal_in_their_top_bits() {
        assert_eq!(first_conn_id(0), 1);
        assert_eq!(conn_id_ordinal(first_conn_id(1023)), 1023);
        assert_eq!(conn_id_ordinal(first_conn_id(7) + 1_000_000), 7);
        assert_ne!(first_conn_id(1), first_conn_id(2));
    }
}
