//! Keeping a worker's mailboxes within its share of the cache budget.
//!
//! Past the budget the worker picks victims (mailboxes holding more than
//! `huge_mailbox_entries` first, largest first; then the others, oldest entry first), writes
//! their durable entries to the store in one batch, and, once that batch is applied, drops
//! those entries from memory. Entries are only ever dropped after the store has them, and no
//! eviction stands if an earlier store batch of this worker failed in between (its entries may
//! be missing from the store until the next write-back pass rewrites them).

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use super::{MailboxWorker, footprint, write_changes, write_entries};
use crate::message::Id;
use crate::store::WriteBatch;

/// Sorts eviction candidates: (not huge, largest first, oldest held entry first).
type VictimOrder = (bool, Reverse<usize>, u64);

impl MailboxWorker {
    /// Starts an eviction when the cache is over budget and none is in flight.
    pub(super) fn evict_if_over_budget(&mut self) {
        if self.usage.bytes <= self.budget.bytes
            || self.evicting
            || self.writeback_failed.load(Ordering::Acquire)
        {
            return;
        }
        // Free down to 90% of the budget, so evictions come in batches, not per append.
        let to_free = self.usage.bytes - self.budget.bytes / 10 * 9;
        let huge = self.budget.huge_entries;
        // Huge ones first, the largest of them first; then the others, oldest entry first.
        let mut candidates: Vec<(VictimOrder, &Id)> = self
            .slots
            .iter()
            .filter_map(|(owner, slot)| {
                let oldest = slot.mailbox.held().next()?.timestamp_ms;
                let key = if slot.mailbox.len() > huge {
                    (false, Reverse(slot.mailbox.held_bytes()), 0)
                } else {
                    (true, Reverse(0), oldest)
                };
                Some((key, owner))
            })
            .collect();
        candidates.sort_unstable_by_key(|&(key, _)| key);
        let victims: Vec<Id> = candidates
            .into_iter()
            .map(|(_, owner)| owner.clone())
            .collect();

        let mut batch = WriteBatch::new();
        let mut evicted = Vec::new();
        let mut freed = 0;
        let mut written = 0;
        for owner in victims {
            if freed >= to_free {
                break;
            }
            let Some(slot) = self.slots.get_mut(&owner) else {
                continue;
            };
            written += write_entries(&owner, slot, &mut batch, u64::MAX);
            // With its metadata (and dedup table), so recovery knows the mailbox without
            // replaying it.
            write_changes(&owner, slot, &mut batch, self.dedup_window, &self.shared);
            let upto = slot.written_upto;
            let bytes: usize = slot
                .mailbox
                .held()
                .take_while(|entry| entry.seq <= upto)
                .map(|entry| entry.cache_bytes())
                .sum();
            if bytes > 0 {
                freed += bytes;
                evicted.push((owner, upto));
            }
        }
        if evicted.is_empty() {
            return;
        }
        self.written_back.increment(written);
        let shared = self.shared.clone();
        let epoch = shared.store_failures.load(Ordering::Acquire);
        let failed = self.writeback_failed.clone();
        let submitted = self
            .stores
            .write_batch_with(self.shard, batch, move |result| {
                let stands =
                    result.is_ok() && shared.store_failures.load(Ordering::Acquire) == epoch;
                if result.is_err() {
                    shared.store_failures.fetch_add(1, Ordering::AcqRel);
                    failed.store(true, Ordering::Release);
                }
                let evicted = if stands { evicted } else { Vec::new() };
                *shared
                    .evicted
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(evicted);
                shared.has_evicted.store(true, Ordering::Release);
            });
        match submitted {
            Ok(()) => self.evicting = true,
            // The batch never ran: its entries must be written again by the next pass.
            Err(_) => self.writeback_failed.store(true, Ordering::Release),
        }
    }

    /// Drops from memory what an applied eviction batch wrote to the store.
    pub(super) fn finish_eviction(&mut self) {
        let evicted = self
            .shared
            .evicted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(evicted) = evicted else {
            return;
        };
        self.evicting = false;
        for (owner, upto) in evicted {
            let Some(slot) = self.slots.get_mut(&owner) else {
                continue;
            };
            let before = footprint(slot);
            let dropped = slot.mailbox.evict_upto(upto);
            self.usage.update(before, footprint(slot));
            self.evictions.increment(1);
            self.evicted_entries.increment(dropped as u64);
        }
        // Appends that arrived meanwhile may have filled the cache again.
        self.evict_if_over_budget();
    }
}
