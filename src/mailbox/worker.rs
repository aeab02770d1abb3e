//! The mailbox worker: owns the mailboxes of its keys, writes every change to its shard's
//! journal, and acks and pushes an entry only once the journal's fsync covers it.
//!
//! Completions run on the journal's thread, so they touch only shared, thread-safe state: the
//! mailbox's durable watermark, the registry, session handles, and this worker's list of failed
//! appends (drained by the worker before its next job).
//!
//! The worker keeps its mailboxes within its share of the cache budget ([`evict`]) and serves
//! reads from memory or, for evicted entries, from the store ([`read`]).

mod evict;
pub mod group;
mod push;
mod read;
mod writeback;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use hashbrown::HashMap;
use metrics::{Counter, Gauge};

use super::account;
use super::checkpoint::Countdown;
use super::record;
use super::revocation::{RevokeError, Revoked};
use super::{
    AccountInfo, AckInfo, AppendJob, Appended, Content, DeviceInfo, LoginInfo, MailboxOp, Slot,
};
use crate::dispatch::Worker;
use crate::group::GroupSlot;
use crate::group::fanout::FanOut;
use crate::mailbox::AppendFailure;
use crate::mailbox::durability::Durability;
use crate::mailbox::event::{MailboxEvent, SessionHandle};
use crate::message::{ChatMessage, Entry, Id, Payload, ReceiptNotice};
use crate::metrics as names;
use crate::registry::{DeviceSession, Registry};
use crate::store::{Stores, WriteBatch};

/// An append whose journal write failed (owner, author, client_msg_id, seq): the entry is
/// withdrawn (a seq gap nobody is sent) and its dedup record goes, so a retry is stored anew.
type Failed = (Id, Id, Arc<str>, u64);

/// State shared between a worker and its journal completions.
struct Shared {
    registry: Arc<Registry>,
    /// Where arrivals for registered devices and their acks go (with `[push]`).
    push: Option<Arc<crate::push::hub::PushHub>>,
    push_queue: u32,
    pushes_skipped: Counter,
    storage_failures: Counter,
    failed: Mutex<Vec<Failed>>,
    has_failed: AtomicBool,
    /// Store batches of this worker that failed so far; an eviction stands only if none failed
    /// between its submission and its completion.
    store_failures: AtomicU64,
    /// Mailboxes whose eviction batch is applied: (owner, evict up to seq); `None` while none
    /// has finished.
    evicted: Mutex<Option<Vec<(Id, u64)>>>,
    has_evicted: AtomicBool,
    /// What group journal completions left for the worker.
    group_news: Mutex<Vec<group::GroupNews>>,
    has_group_news: AtomicBool,
    /// Rung by completions that leave news.
    doorbell: Arc<Notify>,
}

impl Shared {
    /// Leaves `news` for the worker and rings its doorbell.
    fn group_news(&self, news: group::GroupNews) {
        self.group_news
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(news);
        self.has_group_news.store(true, Ordering::Release);
        self.doorbell.notify_one();
    }

    /// Hands `event` to an online session within its push budget; counts a skip otherwise.
    fn try_push(&self, session: &DeviceSession, event: MailboxEvent) -> bool {
        if !session.pushes.try_reserve(self.push_queue) {
            self.pushes_skipped.increment(1);
            return false;
        }
        if !session.sink.send(event) {
            session.pushes.release();
            return false;
        }
        true
    }
}

/// What the worker needs for the groups it owns.
pub(super) struct GroupSetup {
    /// The recovered groups of this worker.
    pub(super) groups: HashMap<Id, GroupSlot>,
    /// The fan-out lanes.
    pub(super) fanout: FanOut,
    /// Members per group at most.
    pub(super) max_members: usize,
    /// Groups with more members keep their entries in the group's log, copies by reference.
    pub(super) reference_threshold: usize,
    /// The node is in a cluster: no fan-out before it joined (see [`MailboxWorker::pump_all`]).
    pub(super) clustered: bool,
    /// With `[push]`: the node's push hub.
    pub(super) push: Option<Arc<crate::push::hub::PushHub>>,
}

/// What the worker's mailboxes hold, for the cache budget and its gauges. The gauges are
/// shared by all workers, so they are moved once per batch of jobs, not per append.
struct Usage {
    entries: usize,
    bytes: usize,
    /// What the gauges were last moved to, from this worker.
    published: (usize, usize),
    entries_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl Usage {
    /// Accounts a mailbox that held `before` (entries, bytes) and now holds `after`.
    fn update(&mut self, before: (usize, usize), after: (usize, usize)) {
        self.entries = self.entries + after.0 - before.0;
        self.bytes = self.bytes + after.1 - before.1;
    }

    /// Moves the shared gauges by what changed since the last call.
    fn publish(&mut self) {
        let (entries, bytes) = self.published;
        if (entries, bytes) == (self.entries, self.bytes) {
            return;
        }
        self.entries_gauge
            .increment(self.entries as f64 - entries as f64);
        self.bytes_gauge.increment(self.bytes as f64 - bytes as f64);
        self.published = (self.entries, self.bytes);
    }
}

/// Clears `flag` and says whether it was set; reads first, so the common case (not set) does
/// not write the cache line the journal and store threads also use.
fn take(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Acquire) && flag.swap(false, Ordering::AcqRel)
}

/// What a mailbox holds: (entries, bytes).
fn footprint(slot: &Slot) -> (usize, usize) {
    (slot.mailbox.len(), slot.mailbox.held_bytes())
}

/// The cache budget of one worker.
pub(super) struct Budget {
    /// Bytes this worker's mailboxes may hold.
    pub(super) bytes: usize,
    /// Mailboxes holding more entries than this are evicted first.
    pub(super) huge_entries: usize,
}

pub(super) struct MailboxWorker {
    shard: usize,
    slots: HashMap<Id, Slot>,
    journal: Durability,
    stores: Arc<Stores>,
    /// Set by a failed write-back batch: the next pass rewrites everything it holds.
    writeback_failed: Arc<AtomicBool>,
    written_back: Counter,
    writeback_steps: Counter,
    shared: Arc<Shared>,
    dedup_window: usize,
    usage: Usage,
    budget: Budget,
    /// An eviction batch is in flight.
    evicting: bool,
    /// The write-back pass under way, between its steps.
    pass: Option<writeback::Pass>,
    evictions: Counter,
    evicted_entries: Counter,
    read_from_cache: Counter,
    read_from_store: Counter,
    page_in_failures: Counter,
    groups: HashMap<Id, GroupSlot>,
    fanout: FanOut,
    max_members: usize,
    reference_threshold: usize,
    /// In a cluster: the fan-out waits until the node joined.
    clustered: bool,
}

impl MailboxWorker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shard: usize,
        slots: HashMap<Id, Slot>,
        journal: Durability,
        stores: Arc<Stores>,
        registry: Arc<Registry>,
        dedup_window: usize,
        push_queue: u32,
        budget: Budget,
        setup: GroupSetup,
    ) -> Self {
        let mut usage = Usage {
            entries: 0,
            bytes: 0,
            published: (0, 0),
            entries_gauge: metrics::gauge!(names::MAILBOX_ENTRIES),
            bytes_gauge: metrics::gauge!(names::MAILBOX_CACHE_BYTES),
        };
        for slot in slots.values() {
            usage.update((0, 0), footprint(slot));
        }
        usage.publish();
        let mut worker = Self {
            shard,
            slots,
            journal,
            stores,
            writeback_failed: Arc::new(AtomicBool::new(false)),
            written_back: metrics::counter!(names::WRITTEN_BACK),
            writeback_steps: metrics::counter!(names::WRITEBACK_STEPS),
            shared: Arc::new(Shared {
                registry,
                push: setup.push,
                push_queue,
                pushes_skipped: metrics::counter!(names::PUSHES_SKIPPED),
                storage_failures: metrics::counter!(names::STORAGE_FAILURES),
                failed: Mutex::new(Vec::new()),
                has_failed: AtomicBool::new(false),
                store_failures: AtomicU64::new(0),
                evicted: Mutex::new(None),
                has_evicted: AtomicBool::new(false),
                group_news: Mutex::new(Vec::new()),
                has_group_news: AtomicBool::new(false),
                doorbell: Arc::new(Notify::new()),
            }),
            dedup_window,
            usage,
            budget,
            evicting: false,
            pass: None,
            evictions: metrics::counter!(names::EVICTIONS),
            evicted_entries: metrics::counter!(names::EVICTED_ENTRIES),
            read_from_cache: metrics::counter!(names::MAILBOX_READ_ENTRIES, "source" => "cache"),
            read_from_store: metrics::counter!(names::MAILBOX_READ_ENTRIES, "source" => "store"),
            page_in_failures: metrics::counter!(names::PAGE_IN_FAILURES),
            groups: setup.groups,
            fanout: setup.fanout,
            max_members: setup.max_members,
            reference_threshold: setup.reference_threshold,
            clustered: setup.clustered,
        };
        // Recovered group entries still waiting for the fan-out (in a cluster, once it joined).
        worker.pump_all();
        worker.claim_recovered_tokens();
        worker
    }
}

impl Worker for MailboxWorker {
    type Job = MailboxOp;

    fn end_batch(&mut self) {
        self.usage.publish();
    }

    fn doorbell(&self) -> Option<Arc<Notify>> {
        Some(self.shared.doorbell.clone())
    }

    fn rung(&mut self) {
        if take(&self.shared.has_group_news) {
            self.group_news();
        }
    }

    fn has_steps(&self) -> bool {
        self.pass.is_some()
    }

    fn step(&mut self) {
        self.catch_up();
        self.write_back_step();
        self.usage.publish();
    }

    fn handle(&mut self, job: MailboxOp) {
        self.catch_up();
        match job {
            MailboxOp::Group(job) => self.group(*job),
            MailboxOp::ListGroups {
                user,
                after,
                request_id,
                reply,
            } => self.list_groups(&user, after.as_ref(), request_id, &reply),
            MailboxOp::GroupFannedOut {
                group,
                group_seq,
                complete,
            } => self.group_fanned_out(&group, group_seq, complete),
            MailboxOp::GroupReleased {
                group,
                member,
                upto,
            } => self.group_released(&group, &member, upto),
            MailboxOp::Login {
                owner,
                device,
                resume_after,
                token_issued_at,
                reply,
                ..
            } => {
                match self.slots.get(&owner).map_or(Ok(()), |slot| {
                    slot.account.check_token(&device, token_issued_at)
                }) {
                    Ok(()) => self.login(owner, &device, resume_after, reply),
                    Err(revoked) => {
                        tracing::debug!(owner = %owner, device = %device, token_issued_at, %revoked, "login refused");
                        let _ = reply.send(Err(revoked));
                    }
                }
            }
            MailboxOp::Revoke {
                owner,
                device,
                not_before,
                reply,
            } => self.revoke(owner, device, not_before, reply),
            MailboxOp::Push {
                owner,
                device,
                change,
                reply,
            } => self.push_change(owner, device, change, reply),
            MailboxOp::Append(job) => {
                self.append(*job);
                self.evict_if_over_budget();
            }
            MailboxOp::WriteBack {
                older_than_ms,
                done,
            } => self.write_back(older_than_ms, done),
            MailboxOp::PumpGroups => self.pump_all(),
            MailboxOp::Forget { owners, done } => {
                self.forget(&owners);
                done.finish(true);
            }
            MailboxOp::Restore(restored) => self.restore(*restored),
            MailboxOp::Ack {
                owner,
                device,
                up_to,
            } => {
                if let Some(slot) = self.slots.get_mut(&owner) {
                    slot.dirty = true;
                    let before = footprint(slot);
                    slot.mailbox.ack(&device, up_to);
                    self.usage.update(before, footprint(slot));
                    // Fire and forget: a lost cursor record only means redelivery.
                    let _ = self.journal.append_with(
                        &owner,
                        record::encode_cursor(&owner, &device, up_to),
                        |_| {},
                    );
                    self.push_acked(&owner, &device, up_to);
                }
            }
            MailboxOp::Fetch {
                owner,
                after,
                limit,
                max_bytes,
                reply,
            } => self.fetch(owner, after, limit, max_bytes, reply),
            MailboxOp::Account { owner, reply } => {
                let _ = reply.send(self.slots.get(&owner).map(account_info));
            }
            MailboxOp::Replay {
                key,
                records,
                pending,
            } => {
                self.replay(&key, records);
                pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl MailboxWorker {
    /// Takes in what completions left since the last job: failed appends, applied evictions,
    /// group news.
    fn catch_up(&mut self) {
        if take(&self.shared.has_failed) {
            self.forget_failed();
        }
        if take(&self.shared.has_evicted) {
            self.finish_eviction();
        }
        if take(&self.shared.has_group_news) {
            self.group_news();
        }
    }

    fn login(
        &mut self,
        owner: Id,
        device: &Id,
        resume_after: u64,
        reply: tokio::sync::oneshot::Sender<Result<LoginInfo, Revoked>>,
    ) {
        let slot = self.slots.entry(owner.clone()).or_default();
        slot.dirty = true;
        let durable = slot.durable.load(Ordering::Acquire);
        let (before, devices_before) = (footprint(slot), slot.mailbox.devices());
        let known = slot.mailbox.cursor(device);
        let cursor = slot.mailbox.login(device, resume_after.min(durable));
        slot.account.login(device, crate::clock::now_ms());
        tracing::debug!(owner = %owner, device = %device, ?known, cursor, durable, held = slot.mailbox.len(), "mailbox login");
        let devices = slot.mailbox.devices();
        self.usage.update(before, footprint(slot));
        let _ = reply.send(Ok(LoginInfo {
            cursor,
            last_seq: durable,
            devices,
        }));
        if devices != devices_before || cursor > 0 {
            let _ = self.journal.append_with(
                &owner,
                record::encode_cursor(&owner, device, cursor),
                |_| {},
            );
        }
        self.push_acked(&owner, device, cursor);
        if devices != devices_before {
            // A new device: the user's online sessions start copying own messages.
            self.shared.registry.for_each(&owner, |session| {
                session.sink.send(MailboxEvent::Devices(devices));
            });
        }
    }

    /// Revokes `owner`'s tokens of `device` (`None`: of every device) issued at or before
    /// `not_before`: at once in the account (logins from now on are refused, and the sessions
    /// it concerns on this node and, through their sinks, on others are told to close), then
    /// journaled (or replicated); `reply` is answered once that is durable. A record that
    /// fails leaves the revocation in force here until a restart: the caller is told to retry.
    fn revoke(
        &mut self,
        owner: Id,
        device: Option<Id>,
        not_before: u64,
        reply: tokio::sync::oneshot::Sender<Result<u64, RevokeError>>,
    ) {
        let slot = self.slots.entry(owner.clone()).or_default();
        let in_force = slot.account.revoke(device.as_ref(), not_before);
        slot.dirty = true;
        tracing::info!(owner = %owner, device = device.as_deref().unwrap_or("*"), not_before = in_force, "tokens revoked");
        let scope = match device {
            Some(_) => Revoked::Device,
            None => Revoked::User,
        };
        self.shared.registry.for_each(&owner, |session| {
            if device
                .as_ref()
                .is_none_or(|device| *device == session.device)
            {
                session.sink.send(MailboxEvent::Revoked(scope));
            }
        });
        let record = record::encode_revoked(&owner, device.as_deref(), in_force);
        let storage_failures = self.shared.storage_failures.clone();
        // Refused outright, the callback is dropped with `reply`: the caller hears that no
        // node could take it.
        let _ = self.journal.append_with(&owner, record, move |durable| {
            let answer = if durable {
                Ok(in_force)
            } else {
                storage_failures.increment(1);
                Err(RevokeError::Storage)
            };
            let _ = reply.send(answer);
        });
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
            done,
        } = job;
        let slot = self.slots.entry(owner.clone()).or_default();
        let before = footprint(slot);
        slot.account.touch(timestamp_ms);
        let outcome = match content {
            Content::Copy(Payload::Group(entry)) => {
                // A group copy: known by its group position, exactly.
                if slot.account.has_copy(&entry.group_id, entry.group_seq) {
                    if let Some(done) = done {
                        done.finish(true);
                    }
                    return;
                }
                group::note_membership(&mut slot.account, &owner, &entry);
                slot.account.note_copy(&entry.group_id, entry.group_seq);
                Appended::New(
                    slot.mailbox
                        .append_copy(timestamp_ms, Payload::Group(entry)),
                )
            }
            content => slot.mailbox.append(
                &from_user,
                &from_device,
                &client_msg_id,
                server_id,
                timestamp_ms,
                self.dedup_window,
                || payload(content, server_id, &from_user, &from_device, &client_msg_id),
            ),
        };
        let entry = match outcome {
            Appended::Duplicate(ack) => {
                // A retry: answer with the original ack, but only once that one is durable.
                let Some((session, tag)) = reply else {
                    return;
                };
                let durable = slot.durable.clone();
                if ack.seq <= durable.load(Ordering::Acquire) {
                    session.send(MailboxEvent::Appended {
                        tag,
                        result: Ok((ack, true)),
                    });
                    return;
                }
                // Still in flight: an empty barrier record completes after the original's, by
                // which time the watermark tells whether the original became durable.
                let refused = session.clone();
                let barrier = self
                    .journal
                    .append_with(&owner, bytes::Bytes::new(), move |_| {
                        let result = if ack.seq <= durable.load(Ordering::Acquire) {
                            Ok((ack, true))
                        } else {
                            Err(AppendFailure::Storage)
                        };
                        session.send(MailboxEvent::Appended { tag, result });
                    });
                if barrier.is_err() {
                    refused.send(MailboxEvent::Appended {
                        tag,
                        result: Err(AppendFailure::Busy),
                    });
                }
                return;
            }
            Appended::New(entry) => entry,
        };
        slot.dirty = true;
        self.usage.update(before, footprint(slot));
        let ack = AckInfo {
            seq: entry.seq,
            server_id,
            timestamp_ms,
        };
        let payload = record::encode_appended(&owner, &entry, &client_msg_id, server_id);
        let push = match &self.shared.push {
            Some(_) => push::PushTargets::of(&owner, &slot.account, &entry),
            None => None,
        };
        let key = owner.clone();
        let completion = Completion(Some(Pending {
            shared: self.shared.clone(),
            durable: slot.durable.clone(),
            owner,
            entry,
            client_msg_id,
            ack,
            reply,
            done,
            push,
        }));
        // If the journal refuses the record outright, the callback is dropped unrun and the
        // completion's Drop reports the failure.
        let refused = self
            .journal
            .append_with(&key, payload, move |durable| completion.finish(durable))
            .is_err();
        if refused {
            self.forget_failed();
        }
    }

    /// Applies records another node's leader committed (this node follows the key's slot
    /// group): as recovery would, with the usage accounted.
    fn replay(&mut self, key: &Id, records: Vec<record::Record>) {
        let before = self.slots.get(key).map(footprint).unwrap_or((0, 0));
        if let Err(error) = super::recovery::apply_live(
            &mut self.slots,
            &mut self.groups,
            &self.stores,
            self.dedup_window,
            records,
        ) {
            self.shared.storage_failures.increment(1);
            tracing::error!(key = %key, %error, "a committed record could not be applied");
        }
        if let Some(slot) = self.slots.get(key) {
            self.usage.update(before, footprint(slot));
        }
    }

    /// Drops the mailboxes and groups of `owners` (a snapshot replaces them).
    fn forget(&mut self, owners: &super::snapshot::Owners) {
        let usage = &mut self.usage;
        self.slots.retain(|owner, slot| {
            let keep = !owners.contains(owner.as_bytes());
            if !keep {
                usage.update(footprint(slot), (0, 0));
            }
            keep
        });
        self.groups
            .retain(|group, _| !owners.contains(group.as_bytes()));
    }

    /// Takes the mailboxes and groups reloaded after a snapshot.
    fn restore(&mut self, restored: super::Restored) {
        let super::Restored {
            slots,
            groups,
            done,
        } = restored;
        for (owner, slot) in slots {
            self.usage.update((0, 0), footprint(&slot));
            if let Some(old) = self.slots.insert(owner, slot) {
                self.usage.update(footprint(&old), (0, 0));
            }
        }
        self.groups.extend(groups);
        done.finish(true);
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
        for (owner, from_user, client_msg_id, seq) in failed {
            if let Some(slot) = self.slots.get_mut(&owner) {
                let before = footprint(slot);
                slot.mailbox.withdraw(seq);
                self.usage.update(before, footprint(slot));
                slot.mailbox.forget(&from_user, &client_msg_id);
                // Its dedup chunks are saved again without it.
                slot.dirty = true;
                // A group copy ("#<group>/<seq>") that failed: a copy made again is new.
                if let Some((group, seq)) = client_msg_id
                    .strip_prefix('#')
                    .and_then(|rest| rest.rsplit_once('/'))
                    .and_then(|(group, seq)| Some((Id::from(group), seq.parse::<u64>().ok()?)))
                {
                    slot.account.note_hole(group, seq);
                    slot.dirty = true;
                }
            }
        }
    }
}

/// Adds to `batch` the held entries of `owner` not yet written back, durable, and accepted
/// before `older_than_ms` (the monotonic clock, as [`Entry::accepted_ms`]); returns how many.
fn write_entries(owner: &Id, slot: &mut Slot, batch: &mut WriteBatch, older_than_ms: u64) -> u64 {
    let durable = slot.durable.load(Ordering::Acquire);
    let mut written = 0;
    for entry in slot.mailbox.held() {
        if entry.seq <= slot.written_upto {
            continue;
        }
        if entry.seq > durable || entry.accepted_ms >= older_than_ms {
            break;
        }
        let (client_msg_id, server_id) = dedup_id(entry);
        let value = record::encode_appended(owner, entry, &client_msg_id, server_id);
        batch.put_entry(owner.as_bytes(), entry.seq, value);
        slot.written_upto = entry.seq;
        written += 1;
    }
    written
}

/// The dedup id and server id an entry was appended with (copies of group entries and group
/// receipts have ids of their own making; 1:1 receipts are not deduplicated after a restart).
fn dedup_id(entry: &Entry) -> (std::borrow::Cow<'_, str>, u64) {
    match &entry.payload {
        Payload::Message(m) => (m.client_msg_id.as_ref().into(), m.server_id),
        Payload::Receipt(_) => ("".into(), 0),
        Payload::Group(g) => (
            format!("#{}/{}", g.group_id, g.group_seq).into(),
            g.server_id,
        ),
        Payload::GroupReceipt(r) => (
            format!("#{}/{:?}/{}", r.group_id, r.kind, r.up_to_group_seq).into(),
            0,
        ),
    }
}

/// Adds `owner`'s metadata and the changed chunks of its dedup table to `batch` if the mailbox
/// changed since last written. False when the dedup table could not be saved now (an append
/// failure is not handled yet); the slot then stays dirty.
fn write_changes(
    owner: &Id,
    slot: &mut Slot,
    batch: &mut WriteBatch,
    dedup_window: usize,
    shared: &Shared,
) -> bool {
    if !slot.dirty {
        return true;
    }
    write_meta(owner, slot, batch);
    // The watermark first, then the failures: an append that failed at or below this
    // watermark has already reported it, so no failed id is ever saved.
    let durable = slot.durable.load(Ordering::Acquire);
    if shared.has_failed.load(Ordering::Acquire) {
        slot.dirty = true;
        return false;
    }
    write_dedup(owner, slot, durable, dedup_window, batch);
    true
}

/// Adds the changed chunks of `owner`'s dedup table to `batch`, with the ids durable up to
/// `durable`; the slot stays dirty while some chunk holds an id not durable yet.
fn write_dedup(
    owner: &Id,
    slot: &mut Slot,
    durable: u64,
    dedup_window: usize,
    batch: &mut WriteBatch,
) {
    let dedup = slot.mailbox.dedup_mut();
    dedup.save(durable, dedup_window, |chunk| {
        let key = record::dedup_key(owner, chunk.sender, chunk.device, chunk.chunk);
        if chunk.ids.is_empty() {
            batch.delete_record(&key);
        } else {
            batch.put_record(&key, record::encode_dedup(owner, &chunk));
        }
    });
    if dedup.has_unsaved() {
        slot.dirty = true;
    }
}

/// Adds `owner`'s last seq and cursors to `batch` if they changed since last written.
fn write_meta(owner: &Id, slot: &mut Slot, batch: &mut WriteBatch) {
    if !slot.dirty {
        return;
    }
    // Copies not yet durable are stored as holes; the next pass writes what became of them.
    let unsure = group::unsure_copies(slot);
    slot.dirty = !unsure.is_empty();
    batch.put_meta(
        owner.as_bytes(),
        account::encode(slot.mailbox.last_seq(), &slot.account, &unsure),
    );
    for (device, cursor) in slot.mailbox.cursors() {
        batch.put_cursor(owner.as_bytes(), device, cursor);
    }
}

/// The admin view of a mailbox's account: devices from the account record and the cursors.
fn account_info(slot: &Slot) -> AccountInfo {
    let mut devices: Vec<DeviceInfo> = slot
        .account
        .devices
        .iter()
        .map(|(device, times)| DeviceInfo {
            device: device.to_string(),
            cursor: slot.mailbox.cursor(device),
            first_login_ms: times.first_login_ms,
            last_login_ms: times.last_login_ms,
            push: push_platform(slot, device),
            muted: muted(slot, device),
        })
        .collect();
    for (device, cursor) in slot.mailbox.cursors() {
        if !slot.account.devices.contains_key(device) {
            devices.push(DeviceInfo {
                device: device.to_string(),
                cursor: Some(cursor),
                first_login_ms: 0,
                last_login_ms: 0,
                push: push_platform(slot, device),
                muted: muted(slot, device),
            });
        }
    }
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    AccountInfo {
        last_seq: slot.mailbox.last_seq(),
        held: slot.mailbox.len(),
        created_ms: slot.account.created_ms,
        devices,
    }
}

/// The platform `device` registered a push token with.
fn push_platform(slot: &Slot, device: &str) -> Option<&'static str> {
    let pusher = slot.account.pushers()?.device(device)?;
    pusher.target.as_ref().map(|target| target.platform.label())
}

/// How many conversations `device` muted.
fn muted(slot: &Slot, device: &str) -> usize {
    slot.account
        .pushers()
        .and_then(|pushers| pushers.device(device))
        .map_or(0, |pusher| pusher.muted_count(crate::clock::now_ms()))
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
        Content::Copy(payload) => payload,
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
    reply: Option<(SessionHandle, u64)>,
    done: Option<Arc<Countdown>>,
    /// The registered devices to tell the push hub about once durable.
    push: Option<Box<push::PushTargets>>,
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
            done,
            push: push_targets,
        } = self;
        if durable {
            watermark.fetch_max(entry.seq, Ordering::AcqRel);
            push(&shared, &owner, &entry);
            if let Some(targets) = push_targets {
                targets.tell(&shared, &owner, &entry);
            }
            if let Some((session, tag)) = reply {
                session.send(MailboxEvent::Appended {
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
                .push((owner, from_user.clone(), client_msg_id, entry.seq));
            shared.has_failed.store(true, Ordering::Release);
            if let Some((session, tag)) = reply {
                session.send(MailboxEvent::Appended {
                    tag,
                    result: Err(AppendFailure::Storage),
                });
            }
        }
        // Last: whoever waits on the countdown acts on the failure recorded above.
        if let Some(done) = done {
            done.finish(durable);
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
        shared.try_push(session, MailboxEvent::Push(entry.clone()));
    });
}
