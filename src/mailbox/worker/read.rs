//! Mailbox reads: held entries are served from memory; evicted ones are paged in from the
//! store, in order, on the store's thread, and the session reads on from there.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::Counter;

use super::MailboxWorker;
use crate::group::log::{Logged, copy_of};
use crate::mailbox::event::{MailboxEvent, SessionHandle};
use crate::mailbox::log::{Read, within_budget};
use crate::mailbox::record::{self, Record};
use crate::message::{Entry, Id};
use crate::store::Stores;

impl MailboxWorker {
    /// Answers a read of `owner`'s entries after `after` with [`MailboxEvent::Batch`].
    pub(super) fn fetch(
        &mut self,
        owner: Id,
        after: u64,
        limit: usize,
        max_bytes: usize,
        reply: SessionHandle,
    ) {
        let Some(slot) = self.slots.get(&owner) else {
            reply.send(MailboxEvent::Batch {
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
                reply.send(MailboxEvent::Batch {
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
        reply: SessionHandle,
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
        let stores = self.stores.clone();
        let runtime = tokio::runtime::Handle::current();
        let submitted = self.stores.read_entries_with(
            self.shard,
            owner.as_bytes(),
            after,
            limit,
            move |result| {
                let rows = match result {
                    Ok(rows) => rows,
                    Err(error) => {
                        failures.increment(1);
                        tracing::warn!(owner = %owner_name, %error, "mailbox read from the store failed");
                        reply.send(MailboxEvent::FetchFailed);
                        return;
                    }
                };
                let (paged, read_upto) = decode(&owner_name, rows, upto, &failures);
                let retry = reply.clone();
                let answer = move |entries: Vec<Arc<Entry>>| {
                    let entries = within_budget(entries.iter(), max_bytes);
                    counted.increment(entries.len() as u64);
                    reply.send(MailboxEvent::Batch {
                        entries,
                        last_seq,
                        read_upto,
                    });
                };
                if paged.iter().all(|p| matches!(p, Paged::Ready(_))) {
                    answer(paged.into_iter().filter_map(Paged::ready).collect());
                    return;
                }
                // Copies of logged group entries: read them from their groups' logs, off this
                // database's thread.
                runtime.spawn(async move {
                    match resolve(&stores, paged, &failures).await {
                        Some(entries) => answer(entries),
                        None => {
                            retry.send(MailboxEvent::FetchFailed);
                        }
                    }
                });
            },
        );
        if submitted.is_err() {
            self.page_in_failures.increment(1);
            session.send(MailboxEvent::FetchFailed);
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

/// A stored entry as read: ready, or a copy of a logged group entry still to be read.
enum Paged {
    Ready(Arc<Entry>),
    Copy {
        seq: u64,
        timestamp_ms: u64,
        group_id: Id,
        group_seq: u64,
    },
}

impl Paged {
    fn ready(self) -> Option<Arc<Entry>> {
        match self {
            Paged::Ready(entry) => Some(entry),
            Paged::Copy { .. } => None,
        }
    }
}

/// Decodes stored entries up to `upto`, and how far the read saw: `upto`, or, when every row
/// read was corrupt, the last of them. A corrupt entry is reported, counted and left out, so
/// the session skips it instead of stalling on it.
fn decode(
    owner: &Id,
    rows: Vec<(u64, bytes::Bytes)>,
    upto: u64,
    failures: &Counter,
) -> (Vec<Paged>, u64) {
    let mut paged = Vec::with_capacity(rows.len());
    let mut last_corrupt = None;
    for (seq, value) in rows {
        if seq > upto {
            break;
        }
        match record::decode(value) {
            Ok(Record::Appended { entry, .. }) if entry.seq == seq => {
                paged.push(Paged::Ready(Arc::new(entry)));
            }
            Ok(Record::GroupCopy {
                seq: copy_seq,
                timestamp_ms,
                group_id,
                group_seq,
                ..
            }) if copy_seq == seq => paged.push(Paged::Copy {
                seq,
                timestamp_ms,
                group_id,
                group_seq,
            }),
            Ok(_) | Err(_) => {
                failures.increment(1);
                tracing::error!(owner = %owner, seq, "undecodable mailbox entry in the store");
                last_corrupt = Some(seq);
            }
        }
    }
    match last_corrupt {
        Some(seq) if paged.is_empty() => (paged, seq),
        _ => (paged, upto),
    }
}

/// Reads the copies' entries from their groups' logs; `None` when the store failed or a log
/// does not have the entry yet (the session retries).
async fn resolve(
    stores: &Stores,
    paged: Vec<Paged>,
    failures: &Counter,
) -> Option<Vec<Arc<Entry>>> {
    let mut entries = Vec::with_capacity(paged.len());
    for item in paged {
        match item {
            Paged::Ready(entry) => entries.push(entry),
            Paged::Copy {
                seq,
                timestamp_ms,
                group_id,
                group_seq,
            } => match crate::group::log::read(stores, &group_id, group_seq).await {
                Ok(Logged::Entry(entry)) => {
                    entries.push(Arc::new(copy_of(seq, timestamp_ms, entry)));
                }
                // Every copy of it was acked (this one too, by a cursor a crash lost): skipped.
                Ok(Logged::Pruned) => {}
                Ok(Logged::Missing) => {
                    // Not in the group's log yet (the next write-back pass writes it): the
                    // session retries rather than skip an acked entry.
                    failures.increment(1);
                    tracing::warn!(group = %group_id, group_seq, "a member's copy names a group entry not yet in the group's log");
                    return None;
                }
                Err(error) => {
                    failures.increment(1);
                    tracing::warn!(group = %group_id, group_seq, %error, "group log read failed");
                    return None;
                }
            },
        }
    }
    Some(entries)
}
