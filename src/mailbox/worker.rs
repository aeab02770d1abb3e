//! The mailbox worker: owns the mailboxes of its keys, writes every change to its shard's
//! journal, and acks and pushes an entry only once the journal's fsync covers it.
//!
//! Completions run on the journal's thread, so they touch only shared, thread-safe state: the
//! mailbox's durable watermark, the registry, session handles, and this worker's list of failed
//! appends (drained by the worker before its next job).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::HashMap;
use metrics::{Counter, Gauge};
use ractor::ActorRef;

use super::checkpoint::Countdown;
use super::record;
use super::{AckInfo, AppendJob, Appended, Content, LoginInfo, MailboxOp, Slot};
use crate::dispatch::Worker;
use crate::journal::Journal;
use crate::message::{ChatMessage, Entry, Id, Payload, ReceiptNotice};
use crate::metrics as names;
use crate::registry::Registry;
use crate::session::{AppendFailure, SessionMsg};
use crate::store::{Stores, WriteBatch};

/// An append whose journal write failed: its dedup record must go, so a retry is stored anew.
type Failed = (Id, Id, Arc<str>);

/// State shared between a worker and its journal completions.
struct Shared {
    registry: Arc<Registry>,
    push_queue: u32,
    pushes_skipped: Counter,
    storage_failures: Counter,
    failed: Mutex<Vec<Failed>>,
    has_failed: AtomicBool,
}

pub(super) struct MailboxWorker {
    shard: usize,
    slots: HashMap<Id, Slot>,
    journal: Arc<Journal>,
    stores: Arc<Stores>,
    /// Set by a failed write-back batch: the next pass rewrites everything it holds.
    writeback_failed: Arc<AtomicBool>,
    written_back: Counter,
    shared: Arc<Shared>,
    dedup_window: usize,
    entries: Gauge,
}

impl MailboxWorker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shard: usize,
        slots: HashMap<Id, Slot>,
        journal: Arc<Journal>,
        stores: Arc<Stores>,
        registry: Arc<Registry>,
        dedup_window: usize,
        push_queue: u32,
    ) -> Self {
        let entries = metrics::gauge!(names::MAILBOX_ENTRIES);
        entries.increment(slots.values().map(|s| s.mailbox.len()).sum::<usize>() as f64);
        Self {
            shard,
            slots,
            journal,
            stores,
            writeback_failed: Arc::new(AtomicBool::new(false)),
            written_back: metrics::counter!(names::WRITTEN_BACK),
            shared: Arc::new(Shared {
                registry,
                push_queue,
                pushes_skipped: metrics::counter!(names::PUSHES_SKIPPED),
                storage_failures: metrics::counter!(names::STORAGE_FAILURES),
                failed: Mutex::new(Vec::new()),
                has_failed: AtomicBool::new(false),
            }),
            dedup_window,
            entries,
        }
    }
}

impl Worker for MailboxWorker {
    type Job = MailboxOp;

    fn handle(&mut self, job: MailboxOp) {
        if self.shared.has_failed.swap(false, Ordering::AcqRel) {
            self.forget_failed();
        }
        match job {
            MailboxOp::Login {
                owner,
                device,
                resume_after,
                reply,
            } => self.login(owner, &device, resume_after, reply),
            MailboxOp::Append(job) => self.append(*job),
            MailboxOp::WriteBack {
                older_than_ms,
                done,
            } => self.write_back(older_than_ms, done),
            MailboxOp::Ack {
                owner,
                device,
                up_to,
            } => {
                if let Some(slot) = self.slots.get_mut(&owner) {
                    slot.dirty = true;
                    let dropped = slot.mailbox.ack(&device, up_to);
                    self.entries.decrement(dropped as f64);
                    // Fire and forget: a lost cursor record only means redelivery.
                    let _ = self
                        .journal
                        .append_with(record::encode_cursor(&owner, &device, up_to), |_| {});
                }
            }
            MailboxOp::Fetch {
                owner,
                after,
                limit,
                max_bytes,
                reply,
            } => {
                let (entries, durable) = self.slots.get(&owner).map_or((Vec::new(), 0), |slot| {
                    let durable = slot.durable.load(Ordering::Acquire);
                    let mut entries = slot.mailbox.fetch(after, limit, max_bytes);
                    entries.retain(|entry| entry.seq <= durable);
                    (entries, durable)
                });
                let _ = reply.cast(SessionMsg::Batch {
                    entries,
                    last_seq: durable,
                });
            }
        }
    }
}

impl MailboxWorker {
    fn login(
        &mut self,
        owner: Id,
        device: &Id,
        resume_after: u64,
        reply: tokio::sync::oneshot::Sender<LoginInfo>,
    ) {
        let slot = self.slots.entry(owner.clone()).or_default();
        slot.dirty = true;
        let durable = slot.durable.load(Ordering::Acquire);
        let (before, devices_before) = (slot.mailbox.len(), slot.mailbox.devices());
        let known = slot.mailbox.cursor(device);
        let cursor = slot.mailbox.login(device, resume_after.min(durable));
        tracing::debug!(owner = %owner, device = %device, ?known, cursor, durable, held = slot.mailbox.len(), "mailbox login");
        let devices = slot.mailbox.devices();
        self.entries.decrement((before - slot.mailbox.len()) as f64);
        let _ = reply.send(LoginInfo {
            cursor,
            last_seq: durable,
            devices,
        });
        if devices != devices_before || cursor > 0 {
            let _ = self
                .journal
                .append_with(record::encode_cursor(&owner, device, cursor), |_| {});
        }
        if devices != devices_before {
            // A new device: the user's online sessions start copying own messages.
            self.shared.registry.for_each(&owner, |session| {
                let _ = session.actor.cast(SessionMsg::Devices(devices));
            });
        }
    }

    fn append(&mut self, job: AppendJob) {
        let AppendJob {
            owner,
            from_user,
            from_device,
            client_msg_id,
            server_id,
            timestamp_ms,
            content,
            reply,
        } = job;
        let slot = self.slots.entry(owner.clone()).or_default();
        let outcome = slot.mailbox.append(
            &from_user,
            &client_msg_id,
            server_id,
            timestamp_ms,
            self.dedup_window,
            || payload(content, server_id, &from_user, &from_device, &client_msg_id),
        );
        let entry = match outcome {
            Appended::Duplicate(ack) => {
                // A retry: answer with the original ack, but only once that one is durable.
                let Some((session, tag)) = reply else {
                    return;
                };
                let durable = slot.durable.clone();
                if ack.seq <= durable.load(Ordering::Acquire) {
                    let _ = session.cast(SessionMsg::Appended {
                        tag,
                        result: Ok((ack, true)),
                    });
                    return;
                }
                // Still in flight: an empty barrier record completes after the original's, by
                // which time the watermark tells whether the original became durable.
                let refused = session.clone();
                let barrier = self.journal.append_with(bytes::Bytes::new(), move |_| {
                    let result = if ack.seq <= durable.load(Ordering::Acquire) {
                        Ok((ack, true))
                    } else {
                        Err(AppendFailure::Storage)
                    };
                    let _ = session.cast(SessionMsg::Appended { tag, result });
                });
                if barrier.is_err() {
                    let _ = refused.cast(SessionMsg::Appended {
                        tag,
                        result: Err(AppendFailure::Busy),
                    });
                }
                return;
            }
            Appended::New(entry) => entry,
        };
        slot.dirty = true;
        self.entries.increment(1.0);
        let ack = AckInfo {
            seq: entry.seq,
            server_id,
            timestamp_ms,
        };
        let payload = record::encode_appended(&owner, &entry, &client_msg_id, server_id);
        let completion = Completion(Some(Pending {
            shared: self.shared.clone(),
            durable: slot.durable.clone(),
            owner,
            entry,
            client_msg_id,
            ack,
            reply,
        }));
        // If the journal refuses the record outright, the callback is dropped unrun and the
        // completion's Drop reports the failure.
        let refused = self
            .journal
            .append_with(payload, move |result| completion.finish(result.is_ok()))
            .is_err();
        if refused {
            self.forget_failed();
        }
    }

    /// Writes back entries accepted before `older_than_ms` and still unacked, deletes written-back
    /// entries every device has acked since, and saves changed last seqs and cursors, in one
    /// store batch for this worker's shard.
    fn write_back(&mut self, older_than_ms: u64, done: Arc<Countdown>) {
        let rewrite = self.writeback_failed.swap(false, Ordering::AcqRel);
        let mut batch = WriteBatch::new();
        let mut written = 0u64;
        for (owner, slot) in &mut self.slots {
            if rewrite {
                slot.written_upto = 0;
                slot.dirty = true;
            }
            let durable = slot.durable.load(Ordering::Acquire);
            for entry in slot.mailbox.held() {
                if entry.seq <= slot.written_upto {
                    continue;
                }
                if entry.seq > durable || entry.timestamp_ms >= older_than_ms {
                    break;
                }
                let (client_msg_id, server_id) = match &entry.payload {
                    Payload::Message(m) => (m.client_msg_id.as_ref(), m.server_id),
                    Payload::Receipt(_) => ("", 0),
                };
                let value = record::encode_appended(owner, entry, client_msg_id, server_id);
                batch.put_entry(owner.as_bytes(), entry.seq, value);
                slot.written_upto = entry.seq;
                written += 1;
            }
            let acked = slot
                .mailbox
                .min_cursor()
                .unwrap_or(0)
                .min(slot.written_upto);
            if acked > slot.deleted_upto {
                batch.delete_entries_up_to(owner.as_bytes(), acked);
                slot.deleted_upto = acked;
            }
            if slot.dirty {
                slot.dirty = false;
                let last_seq = slot.mailbox.last_seq();
                batch.put_meta(
                    owner.as_bytes(),
                    bytes::Bytes::copy_from_slice(&last_seq.to_be_bytes()),
                );
                for (device, cursor) in slot.mailbox.cursors() {
                    batch.put_cursor(owner.as_bytes(), device, cursor);
                }
            }
        }
        self.written_back.increment(written);
        if batch.is_empty() {
            done.finish(true);
            return;
        }
        let failed = self.writeback_failed.clone();
        let finish = done.clone();
        let submitted = self
            .stores
            .write_batch_with(self.shard, batch, move |result| {
                if result.is_err() {
                    failed.store(true, Ordering::Release);
                }
                finish.finish(result.is_ok());
            });
        if submitted.is_err() {
            self.writeback_failed.store(true, Ordering::Release);
            done.finish(false);
        }
    }

    /// Drops the dedup records of appends whose journal write failed.
    fn forget_failed(&mut self) {
        let failed = std::mem::take(
            &mut *self
                .shared
                .failed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (owner, from_user, client_msg_id) in failed {
            if let Some(slot) = self.slots.get_mut(&owner) {
                slot.mailbox.forget(&from_user, &client_msg_id);
            }
        }
    }
}

fn payload(
    content: Content,
    server_id: u64,
    from_user: &Id,
    from_device: &Id,
    client_msg_id: &Arc<str>,
) -> Payload {
    match content {
        Content::Message {
            to_user,
            kind,
            body,
        } => Payload::Message(ChatMessage {
            server_id,
            from_user: from_user.clone(),
            from_device: from_device.clone(),
            to_user,
            client_msg_id: client_msg_id.clone(),
            kind,
            body,
        }),
        Content::Receipt { kind, up_to_seq } => Payload::Receipt(ReceiptNotice {
            from_user: from_user.clone(),
            from_device: from_device.clone(),
            kind,
            up_to_seq,
        }),
    }
}

/// An appended entry waiting for the journal.
struct Pending {
    shared: Arc<Shared>,
    durable: Arc<AtomicU64>,
    owner: Id,
    entry: Arc<Entry>,
    client_msg_id: Arc<str>,
    ack: AckInfo,
    reply: Option<(ActorRef<SessionMsg>, u64)>,
}

/// What happens once the journal has (or has not) made an appended entry durable. Dropped
/// without [`Completion::finish`] (the journal refused or discarded the record), it reports a
/// failure, so every append is answered exactly once.
struct Completion(Option<Pending>);

impl Completion {
    fn finish(mut self, durable: bool) {
        if let Some(pending) = self.0.take() {
            pending.run(durable);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.run(false);
        }
    }
}

impl Pending {
    fn run(self, durable: bool) {
        let Pending {
            shared,
            durable: watermark,
            owner,
            entry,
            client_msg_id,
            ack,
            reply,
        } = self;
        if durable {
            watermark.fetch_max(entry.seq, Ordering::AcqRel);
            push(&shared, &owner, &entry);
            if let Some((session, tag)) = reply {
                let _ = session.cast(SessionMsg::Appended {
                    tag,
                    result: Ok((ack, false)),
                });
            }
        } else {
            shared.storage_failures.increment(1);
            let (from_user, _) = entry.origin();
            shared
                .failed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((owner, from_user.clone(), client_msg_id));
            shared.has_failed.store(true, Ordering::Release);
            if let Some((session, tag)) = reply {
                let _ = session.cast(SessionMsg::Appended {
                    tag,
                    result: Err(AppendFailure::Storage),
                });
            }
        }
    }
}

/// Sends a durable entry to the owner's online devices, except the one it came from.
fn push(shared: &Shared, owner: &Id, entry: &Arc<Entry>) {
    let (origin_user, origin_device) = entry.origin();
    let own_copy = origin_user == owner;
    shared.registry.for_each(owner, |session| {
        if own_copy && &session.device == origin_device {
            return;
        }
        if session.pushes.try_reserve(shared.push_queue) {
            if session.actor.cast(SessionMsg::Push(entry.clone())).is_err() {
                session.pushes.release();
            }
        } else {
            shared.pushes_skipped.increment(1);
        }
    });
}
