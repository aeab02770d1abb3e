//! Mailbox reads: held entries are served from memory; evicted ones are paged in from the
//! store, in order, on the store's thread, and the session reads on from there.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::Counter;
use ractor::ActorRef;

use super::MailboxWorker;
use crate::mailbox::log::{Read, within_budget};
use crate::mailbox::record::{self, Record};
use crate::message::{Entry, Id};
use crate::session::SessionMsg;

impl MailboxWorker {
    /// Answers a read of `owner`'s entries after `after` with [`SessionMsg::Batch`].
    pub(super) fn fetch(
        &mut self,
        owner: Id,
        after: u64,
        limit: usize,
        max_bytes: usize,
        reply: ActorRef<SessionMsg>,
    ) {
        let Some(slot) = self.slots.get(&owner) else {
            let _ = reply.cast(SessionMsg::Batch {
                entries: Vec::new(),
                last_seq: 0,
                read_upto: 0,
            });
            return;
        };
        let durable = slot.durable.load(Ordering::Acquire);
        match slot.mailbox.fetch(after, limit, max_bytes) {
            Read::Cache(mut entries) => {
                entries.retain(|entry| entry.seq <= durable);
                self.read_from_cache.increment(entries.len() as u64);
                let _ = reply.cast(SessionMsg::Batch {
                    entries,
                    last_seq: durable,
                    read_upto: durable,
                });
            }
            Read::Store { upto } => {
                let range = PageIn {
                    after,
                    upto,
                    last_seq: durable,
                };
                self.page_in(&owner, range, limit, max_bytes, reply);
            }
        }
    }

    /// Reads evicted entries in (`after`, `upto`] from the store; the session reads on (from
    /// the store or the cache) after what it got. Seqs in that range the store does not have
    /// were acked by every device or never stored.
    fn page_in(
        &self,
        owner: &Id,
        range: PageIn,
        limit: usize,
        max_bytes: usize,
        reply: ActorRef<SessionMsg>,
    ) {
        let PageIn {
            after,
            upto,
            last_seq,
        } = range;
        let counted = self.read_from_store.clone();
        let failures = self.page_in_failures.clone();
        let session = reply.clone();
        let owner_name = owner.clone();
        let submitted = self.stores.read_entries_with(
            self.shard,
            owner.as_bytes(),
            after,
            limit,
            move |result| {
                let message = match result {
                    Ok(rows) => {
                        let (entries, read_upto) =
                            decode(&owner_name, rows, upto, max_bytes, &failures);
                        counted.increment(entries.len() as u64);
                        SessionMsg::Batch {
                            entries,
                            last_seq,
                            read_upto,
                        }
                    }
                    Err(error) => {
                        failures.increment(1);
                        tracing::warn!(owner = %owner_name, %error, "mailbox read from the store failed");
                        SessionMsg::FetchFailed
                    }
                };
                let _ = reply.cast(message);
            },
        );
        if submitted.is_err() {
            self.page_in_failures.increment(1);
            let _ = session.cast(SessionMsg::FetchFailed);
        }
    }
}

/// A read of evicted entries: those in (`after`, `upto`], from a mailbox whose highest durable
/// seq is `last_seq`.
struct PageIn {
    after: u64,
    upto: u64,
    last_seq: u64,
}

/// Decodes stored entries up to `upto` that fit in `max_bytes` (at least one), and how far the
/// read saw: `upto`, or, when every row read was corrupt, the last of them. A corrupt entry is
/// reported, counted and left out, so the session skips it instead of stalling on it.
fn decode(
    owner: &Id,
    rows: Vec<(u64, bytes::Bytes)>,
    upto: u64,
    max_bytes: usize,
    failures: &Counter,
) -> (Vec<Arc<Entry>>, u64) {
    let mut entries = Vec::with_capacity(rows.len());
    let mut last_corrupt = None;
    for (seq, value) in rows {
        if seq > upto {
            break;
        }
        match record::decode(value) {
            Ok(Record::Appended { entry, .. }) if entry.seq == seq => {
                entries.push(Arc::new(entry));
            }
            Ok(_) | Err(_) => {
                failures.increment(1);
                tracing::error!(owner = %owner, seq, "undecodable mailbox entry in the store");
                last_corrupt = Some(seq);
            }
        }
    }
    match last_corrupt {
        Some(seq) if entries.is_empty() => (entries, seq),
        _ => (within_budget(entries.iter(), max_bytes), upto),
    }
}
