//! Groups on their worker: rules checked, entries numbered and journaled, answers sent once the
//! journal holds them, and durable entries handed to the fan-out in group order.
//!
//! Journal completions run on the journal thread: they only raise the group's durable
//! watermark, answer the session, and leave news for the worker (ringing its doorbell), which
//! then hands the newly durable entries to the fan-out, forgets a failed post, or undoes a
//! failed change.
//!
//! A change (creation, members, roles, subject) is applied at once, like a post, but until the
//! journal answers it the group's later operations wait in the slot (`deferred`): if the write
//! fails, the change is undone exactly (nothing was decided on it), and a snapshot written
//! meanwhile stores the group as it was before the change.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::MailboxWorker;
use crate::clock::now_ms;
use crate::group::fanout::{FanOut, FanOutJob};
use crate::group::record as group_record;
use crate::group::slot::DEFERRED_MAX;
use crate::group::{Group, GroupError, GroupSlot};
use crate::mailbox::AckInfo;
use crate::mailbox::AppendFailure;
use crate::mailbox::event::{MailboxEvent, SessionHandle};
use crate::mailbox::group_ops::{
    GroupAnswer, GroupCall, GroupFailure, GroupInfo, GroupJob, on_page,
};
use crate::message::{
    GroupContent, GroupEntry, GroupEvent, GroupEventKind, GroupReceiptNotice, Id, MessageKind,
    ReceiptKind,
};

/// What a completion leaves for the worker.
#[derive(Debug)]
pub(super) enum GroupNews {
    /// Entry `seq` of this group became durable: hand it to the fan-out.
    Durable { group: Id, seq: u64 },
    /// The journal refused entry `seq` of this group: it is never fanned out, and a retry of
    /// the post (author, client_msg_id) is accepted anew.
    Failed {
        group: Id,
        seq: u64,
        from: Id,
        client_msg_id: Arc<str>,
    },
}

/// Who hears about an accepted entry, once the journal answers.
enum Answer {
    /// A group request, answered with `success` once durable.
    Request {
        reply: Option<SessionHandle>,
        request_id: u64,
        success: GroupAnswer,
    },
    /// A post: the session's pending send.
    Post {
        reply: Option<SessionHandle>,
        tag: u64,
        ack: AckInfo,
    },
}

impl Answer {
    fn send(self, durable: bool) {
        match self {
            Answer::Request {
                reply,
                request_id,
                success,
            } => {
                let answer = if durable {
                    Ok(success)
                } else {
                    Err(GroupFailure::Storage)
                };
                answer_request(reply.as_ref(), request_id, answer);
            }
            Answer::Post { reply, tag, ack } => {
                if let Some(session) = reply {
                    let result = if durable {
                        Ok((ack, false))
                    } else {
                        Err(AppendFailure::Storage)
                    };
                    session.send(MailboxEvent::Appended { tag, result });
                }
            }
        }
    }
}

fn answer_request(
    reply: Option<&SessionHandle>,
    request_id: u64,
    answer: Result<GroupAnswer, GroupFailure>,
) {
    if let Some(session) = reply {
        session.send(MailboxEvent::GroupAnswer { request_id, answer });
    }
}

impl MailboxWorker {
    /// Handles one group operation, or queues it behind the group's change in flight.
    pub(super) fn group(&mut self, job: GroupJob) {
        if let Some(slot) = self.groups.get_mut(&job.group)
            && slot.blocked()
        {
            if slot.deferred.len() < DEFERRED_MAX {
                slot.deferred.push_back(job);
            } else {
                busy(job);
            }
            return;
        }
        let GroupJob {
            group,
            actor,
            device,
            call,
            request_id,
            reply,
        } = job;
        let refuse = |error: GroupError| {
            answer_request(
                reply.as_ref(),
                request_id,
                Err(GroupFailure::Refused(error)),
            );
        };
        let max = self.max_members;
        match call {
            GroupCall::Create { subject, members } => {
                if self.groups.contains_key(&group) {
                    return refuse(GroupError::Exists);
                }
                match Group::creation(&actor, subject, members, max) {
                    Err(error) => refuse(error),
                    Ok(event) => {
                        self.groups
                            .insert(group.clone(), GroupSlot::new(Group::new(group.clone())));
                        let entry = self.next_entry(&group, &actor, &device, event);
                        // The creator learns the new group's id and members.
                        let mut created = Group::new(group.clone());
                        created.apply(&entry);
                        let success = GroupAnswer::Info(info_of(&created));
                        self.accept(
                            entry,
                            Answer::Request {
                                reply,
                                request_id,
                                success,
                            },
                        );
                    }
                }
            }
            GroupCall::Change(change) => {
                let Some(slot) = self.groups.get(&group) else {
                    return refuse(GroupError::NotAMember);
                };
                match slot.group.check(&actor, change, max) {
                    Err(error) => refuse(error),
                    Ok(None) => answer_request(reply.as_ref(), request_id, Ok(GroupAnswer::Done)),
                    Ok(Some(event)) => {
                        let heir = match event.kind {
                            GroupEventKind::Left => slot.group.heir_of(&actor),
                            _ => None,
                        };
                        if let Some(heir) = heir {
                            // The only admin leaves: its heir's promotion is an entry of its
                            // own, just before the LEFT (which would promote it anyway, so a
                            // log that lost this entry still agrees).
                            let promoted = GroupEvent {
                                kind: GroupEventKind::Promoted,
                                users: vec![heir],
                                subject: String::new(),
                            };
                            let entry = self.next_entry(&group, &actor, &device, promoted);
                            let unanswered = Answer::Request {
                                reply: None,
                                request_id,
                                success: GroupAnswer::Done,
                            };
                            self.accept(entry, unanswered);
                        }
                        let entry = self.next_entry(&group, &actor, &device, event);
                        let success = GroupAnswer::Done;
                        self.accept(
                            entry,
                            Answer::Request {
                                reply,
                                request_id,
                                success,
                            },
                        );
                    }
                }
            }
            GroupCall::Info { after } => match self.member_view(&group, &actor) {
                Err(error) => refuse(error),
                Ok(slot) => {
                    let mut info = info_of(&slot.group);
                    info.members
                        .retain(|(user, _, _)| on_page(after.as_ref(), user));
                    answer_request(reply.as_ref(), request_id, Ok(GroupAnswer::Info(info)));
                }
            },
            GroupCall::ReadBy { group_seq, after } => match self.member_view(&group, &actor) {
                Err(error) => refuse(error),
                Ok(slot) => {
                    let (mut read, mut delivered) = slot.group.read_by(group_seq);
                    read.retain(|user| on_page(after.as_ref(), user));
                    delivered.retain(|user| on_page(after.as_ref(), user));
                    let answer = GroupAnswer::ReadBy {
                        group_id: group.clone(),
                        group_seq,
                        read,
                        delivered,
                    };
                    answer_request(reply.as_ref(), request_id, Ok(answer));
                }
            },
            GroupCall::Post {
                client_msg_id,
                server_id,
                kind,
                body,
                tag,
            } => self.post(
                &group,
                actor,
                device,
                client_msg_id,
                server_id,
                kind,
                body,
                tag,
                reply,
            ),
            GroupCall::Receipt { kind, up_to } => {
                if let Err(error) = self.group_receipt(&group, actor, device, kind, up_to)
                    && let Some(session) = reply
                {
                    session.send(MailboxEvent::GroupRefused { group, error });
                }
            }
            GroupCall::Typing(typing) => self.group_typing(&group, &actor, typing),
        }
    }

    fn member_view(&self, group: &Id, actor: &Id) -> Result<&GroupSlot, GroupError> {
        self.groups
            .get(group)
            .filter(|slot| slot.group.is_member(actor))
            .ok_or(GroupError::NotAMember)
    }

    /// The next entry of `group` carrying `event` by `actor`.
    fn next_entry(&self, group: &Id, actor: &Id, device: &Id, event: GroupEvent) -> GroupEntry {
        let last_seq = self.groups.get(group).map_or(0, |slot| slot.group.last_seq);
        GroupEntry {
            group_id: group.clone(),
            group_seq: last_seq + 1,
            server_id: 0,
            from_user: actor.clone(),
            from_device: device.clone(),
            client_msg_id: Arc::from(""),
            timestamp_ms: now_ms(),
            content: GroupContent::Event(event),
            logged: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        group: &Id,
        actor: Id,
        device: Id,
        client_msg_id: Arc<str>,
        server_id: u64,
        kind: MessageKind,
        body: bytes::Bytes,
        tag: u64,
        reply: Option<SessionHandle>,
    ) {
        let failed = |failure: AppendFailure| {
            if let Some(session) = &reply {
                session.send(MailboxEvent::Appended {
                    tag,
                    result: Err(failure),
                });
            }
        };
        let Some(slot) = self.groups.get(group) else {
            return failed(AppendFailure::NotAMember);
        };
        if !slot.group.is_member(&actor) {
            return failed(AppendFailure::NotAMember);
        }
        if slot.group.pending.len() >= self.fanout.capacity() {
            // The fan-out is behind: the phone retries later.
            return failed(AppendFailure::Busy);
        }
        if let Some(ack) = slot.recall(&actor, &client_msg_id) {
            // A retry: the original ack, once the original is durable.
            if ack.seq <= slot.durable.load(Ordering::Acquire) {
                if let Some(session) = &reply {
                    session.send(MailboxEvent::Appended {
                        tag,
                        result: Ok((ack, true)),
                    });
                }
            } else {
                failed(AppendFailure::Busy);
            }
            return;
        }
        let entry = GroupEntry {
            group_id: group.clone(),
            group_seq: slot.group.last_seq + 1,
            server_id,
            from_user: actor,
            from_device: device,
            client_msg_id,
            timestamp_ms: now_ms(),
            content: GroupContent::Message { kind, body },
            logged: false,
        };
        let ack = AckInfo {
            seq: entry.group_seq,
            server_id,
            timestamp_ms: entry.timestamp_ms,
        };
        if let Some(slot) = self.groups.get_mut(group) {
            slot.remember(&entry.from_user, &entry.client_msg_id, ack);
        }
        self.accept(entry, Answer::Post { reply, tag, ack });
    }

    /// Applies `entry` to its group, journals it, and answers once the journal has.
    fn accept(&mut self, mut entry: GroupEntry, answer: Answer) {
        let Some(slot) = self.groups.get_mut(&entry.group_id) else {
            return answer.send(false);
        };
        // Large groups keep the entry once, in the group's log; members' copies refer to it.
        entry.logged = slot.group.members.len() > self.reference_threshold;
        let before = match &entry.content {
            GroupContent::Event(event) if event.kind != GroupEventKind::Created => {
                Some(slot.before())
            }
            _ => None,
        };
        let Some(recipients) = slot.group.apply(&entry) else {
            return answer.send(false);
        };
        slot.accepted(&entry, before);
        slot.dirty = true;
        let entry = Arc::new(entry);
        if entry.logged {
            slot.unlogged.push(entry.clone());
        }
        slot.group
            .pending
            .push_back((entry.clone(), recipients.into()));
        let record = group_record::encode_appended(&entry);
        let group_key = entry.group_id.clone();
        let completion = GroupCompletion(Some(Accepted {
            shared: self.shared.clone(),
            watermark: slot.durable.clone(),
            entry,
            answer,
        }));
        // Refused outright, the callback is dropped unrun and the completion's Drop reports it.
        let _ = self
            .journal
            .append_with(&group_key, record, move |durable| {
                completion.finish(durable)
            });
    }

    /// A member's receipt: moves its position and tells the authors of the covered messages.
    /// Refused for a group that does not exist or that the actor is not in.
    fn group_receipt(
        &mut self,
        group: &Id,
        actor: Id,
        device: Id,
        kind: ReceiptKind,
        up_to: u64,
    ) -> Result<(), GroupError> {
        let slot = self.groups.get_mut(group).ok_or(GroupError::NotAMember)?;
        let authors = slot
            .group
            .receipt(&actor, kind == ReceiptKind::Read, up_to)?;
        slot.dirty = true;
        if authors.is_empty() {
            return Ok(());
        }
        let notice = GroupReceiptNotice {
            group_id: group.clone(),
            from_user: actor,
            from_device: device,
            kind,
            up_to_group_seq: up_to.min(slot.group.last_seq),
        };
        match self.fanout.reserve(group) {
            Some(permit) => {
                permit.send(FanOutJob::Receipt { notice, authors });
            }
            None => self.shared.pushes_skipped.increment(1),
        }
        Ok(())
    }

    /// Relays a typing notice to the group's online members (never stored).
    fn group_typing(&mut self, group: &Id, actor: &Id, typing: bool) {
        let Some(slot) = self.groups.get(group) else {
            return;
        };
        if !slot.group.is_member(actor) {
            return;
        }
        let members = slot.group.members.keys().filter(|member| *member != actor);
        let tell = |member: &Id| {
            self.shared.registry.for_each(member, |session| {
                let notice = MailboxEvent::Typing {
                    from_user: actor.clone(),
                    typing,
                    group: Some(group.clone()),
                };
                self.shared.try_push(session, notice);
            });
        };
        match self.fanout.elsewhere().get() {
            // In a cluster, members another node owns hear it through their owner.
            Some(elsewhere) => elsewhere
                .typing(group, actor, typing, members.cloned().collect())
                .iter()
                .for_each(tell),
            None => members.for_each(tell),
        }
    }

    /// Takes the news the journal completions left.
    pub(super) fn group_news(&mut self) {
        let news = std::mem::take(
            &mut *self
                .shared
                .group_news
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for item in news {
            match item {
                GroupNews::Durable { group, seq } => {
                    let settled = self
                        .groups
                        .get_mut(&group)
                        .is_some_and(|slot| slot.durable_entry(seq));
                    if settled {
                        self.resume(&group, false);
                    }
                    self.pump(&group);
                }
                GroupNews::Failed {
                    group,
                    seq,
                    from,
                    client_msg_id,
                } => {
                    let Some(slot) = self.groups.get_mut(&group) else {
                        continue;
                    };
                    // Never fanned out: a gap in the group's log that nobody was sent.
                    slot.forget(&from, &client_msg_id);
                    if let Some(remove) = slot.failed_entry(seq) {
                        self.resume(&group, remove);
                    }
                }
            }
        }
    }

    /// Runs the operations that waited for `group`'s change, in order (the group removed first
    /// when its creation failed); one that is a change makes the rest wait again.
    fn resume(&mut self, group: &Id, remove: bool) {
        let Some(slot) = self.groups.get_mut(group) else {
            return;
        };
        let waiting = std::mem::take(&mut slot.deferred);
        if remove {
            self.groups.remove(group);
        }
        for job in waiting {
            self.group(job);
        }
    }

    /// Hands `group`'s durable pending entries not yet handed over to the fan-out, in order,
    /// while its lane has room (the rest wait for the next news or write-back pass).
    pub(super) fn pump(&mut self, group: &Id) {
        if self.shared.has_group_news.load(Ordering::Acquire) {
            // Unread news may withdraw an entry below the durable watermark (a failed write
            // before a successful one); the doorbell has rung, and reading it pumps again.
            return;
        }
        if let Some(elsewhere) = self.fanout.elsewhere().get()
            && !elsewhere.serves(group)
        {
            // Another node leads the group's slot: it fans out; this node keeps the entries
            // (and hands them over if it comes to lead).
            return;
        }
        let Some(slot) = self.groups.get_mut(group) else {
            return;
        };
        let durable = slot.durable.load(Ordering::Acquire);
        for (entry, recipients) in &slot.group.pending {
            if entry.group_seq <= slot.queued_upto {
                continue;
            }
            if entry.group_seq > durable {
                break;
            }
            let Some(permit) = self.fanout.reserve(group) else {
                break;
            };
            permit.send(FanOutJob::Entry {
                entry: entry.clone(),
                recipients: recipients.clone(),
                accepted: Instant::now(),
            });
            slot.queued_upto = entry.group_seq;
        }
    }

    /// The fan-out finished an entry: forget it, or hand it over again if a copy failed.
    pub(super) fn group_fanned_out(&mut self, group: &Id, group_seq: u64, complete: bool) {
        let Some(slot) = self.groups.get_mut(group) else {
            return;
        };
        if complete {
            slot.fanned_out(group_seq);
            let _ = self.journal.append_with(
                group,
                group_record::encode_fanned_out(group, group_seq),
                |_| {},
            );
        } else {
            // Copies already made are recognized by the recipients' mailboxes. The entry is
            // handed over again by the next write-back pass (or the group's next entry), not at
            // once: a journal that refused a copy (disk full) would refuse it again at once.
            slot.queued_upto = slot.queued_upto.min(group_seq - 1);
            return;
        }
        // A lane slot is free again: hand over what waits.
        self.pump(group);
    }

    /// Hands over what waits in every group (after recovery, or when a lane was full).
    pub(super) fn pump_all(&mut self) {
        if self.clustered && self.fanout.elsewhere().get().is_none() {
            // Not joined yet: which recipients are this node's is not known (a later pass
            // hands them over).
            return;
        }
        let groups: Vec<Id> = self
            .groups
            .iter()
            .filter(|(_, slot)| {
                slot.group
                    .pending
                    .back()
                    .is_some_and(|(entry, _)| entry.group_seq > slot.queued_upto)
            })
            .map(|(group, _)| group.clone())
            .collect();
        for group in groups {
            self.pump(&group);
        }
    }

    /// Adds the snapshot of every changed group to this worker's write-back batch.
    /// (`rewrite`: the previous pass failed; its entries are written again.)
    pub(super) fn write_back_groups(
        &mut self,
        batch: &mut crate::store::WriteBatch,
        rewrite: bool,
    ) {
        for (group, slot) in &mut self.groups {
            let mut pruned = Vec::new();
            if rewrite {
                // The last pass failed: write its log entries, deletions and the snapshot again.
                slot.unlogged.append(&mut slot.logging);
                pruned = std::mem::take(&mut slot.pruning);
                slot.dirty = true;
            }
            slot.logging.clear();
            slot.pruning.clear();
            // Entries every mailbox with a copy has acked leave the log (the record saying how
            // far is in the same batch, with the snapshot).
            let low = slot.group.low_water(slot.settled());
            if low > slot.group.log_pruned {
                let newly = slot.group.prune_log(low);
                metrics::counter!(crate::metrics::GROUP_LOG_PRUNED).increment(newly.len() as u64);
                pruned.extend(newly);
                slot.unlogged.retain(|entry| entry.group_seq > low);
                slot.dirty = true;
            }
            if !pruned.is_empty() {
                for seq in &pruned {
                    batch.delete_record(&group_record::log_key(group, *seq));
                }
                batch.put_record(
                    &group_record::pruned_key(group),
                    bytes::Bytes::copy_from_slice(&slot.group.log_pruned.to_be_bytes()),
                );
                slot.pruning = pruned;
            }
            // Only durable entries: one whose journal write fails is never in the log.
            let settled = slot.settled();
            let (durable, later): (Vec<_>, Vec<_>) = slot
                .unlogged
                .drain(..)
                .partition(|entry| entry.group_seq <= settled);
            slot.unlogged = later;
            for entry in &durable {
                batch.put_record(
                    &group_record::log_key(group, entry.group_seq),
                    group_record::encode_logged(entry),
                );
            }
            slot.logging = durable;
            if slot.dirty
                && let Some(snapshot) = slot.snapshot()
            {
                // Written again by the next pass while entries are in flight.
                slot.dirty = !slot.in_flight.is_empty();
                batch.put_record(&group_record::snapshot_key(group), snapshot);
            }
        }
    }

    /// `member`'s mailbox released its copies of `group`'s entries up to `upto`.
    pub(super) fn group_released(&mut self, group: &Id, member: &Id, upto: u64) {
        if let Some(slot) = self.groups.get_mut(group) {
            slot.group.release(member, upto);
            tracing::debug!(group = %group, member = %member, upto, "a mailbox released group copies");
            slot.dirty = true;
        }
    }

    /// Answers the groups `user` belongs to, from the user's account, from the page cursor on.
    pub(super) fn list_groups(
        &self,
        user: &Id,
        after: Option<&Id>,
        request_id: u64,
        reply: &SessionHandle,
    ) {
        let mut groups: Vec<Id> = self
            .slots
            .get(user)
            .map(|slot| {
                let groups = slot.account.groups();
                groups
                    .filter(|group| on_page(after, group))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        groups.sort();
        answer_request(Some(reply), request_id, Ok(GroupAnswer::List(groups)));
    }
}

/// An accepted group entry waiting for the journal.
struct Accepted {
    shared: Arc<super::Shared>,
    watermark: Arc<std::sync::atomic::AtomicU64>,
    entry: Arc<GroupEntry>,
    answer: Answer,
}

/// An [`Accepted`] entry's completion. Dropped without [`GroupCompletion::finish`] (the journal
/// refused the record), it reports a failure, so every entry is answered once.
struct GroupCompletion(Option<Accepted>);

impl GroupCompletion {
    fn finish(mut self, durable: bool) {
        if let Some(accepted) = self.0.take() {
            accepted.complete(durable);
        }
    }
}

impl Drop for GroupCompletion {
    fn drop(&mut self) {
        if let Some(accepted) = self.0.take() {
            accepted.complete(false);
        }
    }
}

impl Accepted {
    fn complete(self, durable: bool) {
        let Accepted {
            shared,
            watermark,
            entry,
            answer,
        } = self;
        if durable {
            watermark.fetch_max(entry.group_seq, Ordering::AcqRel);
            shared.group_news(GroupNews::Durable {
                group: entry.group_id.clone(),
                seq: entry.group_seq,
            });
        } else {
            shared.storage_failures.increment(1);
            shared.group_news(GroupNews::Failed {
                group: entry.group_id.clone(),
                seq: entry.group_seq,
                from: entry.from_user.clone(),
                client_msg_id: entry.client_msg_id.clone(),
            });
        }
        answer.send(durable);
    }
}

/// Answers an operation that could not wait behind a change in flight: busy, retry later.
fn busy(job: GroupJob) {
    match job.call {
        GroupCall::Post { tag, .. } => {
            if let Some(session) = &job.reply {
                session.send(MailboxEvent::Appended {
                    tag,
                    result: Err(AppendFailure::Busy),
                });
            }
        }
        GroupCall::Receipt { .. } | GroupCall::Typing(_) => {}
        _ => answer_request(job.reply.as_ref(), job.request_id, Err(GroupFailure::Busy)),
    }
}

/// A group's details as answered to members.
fn info_of(group: &Group) -> GroupInfo {
    let mut members: Vec<_> = group
        .members
        .iter()
        .map(|(user, m)| (user.clone(), m.role, m.joined_seq))
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    GroupInfo {
        group_id: group.id.clone(),
        subject: group.subject.clone(),
        created_ms: group.created_ms,
        last_seq: group.last_seq,
        members,
    }
}

/// Adds or drops `group` in a member's account when a group event concerns the member.
pub fn note_membership(
    account: &mut crate::mailbox::account::Account,
    owner: &Id,
    entry: &GroupEntry,
) {
    use crate::message::GroupEventKind as Kind;
    let GroupContent::Event(event) = &entry.content else {
        return;
    };
    let concerned = event.users.iter().any(|user| user == owner);
    match event.kind {
        Kind::Created | Kind::Added if concerned => {
            account.join(&entry.group_id);
        }
        Kind::Removed | Kind::Left if concerned => {
            account.leave(&entry.group_id);
        }
        _ => {}
    }
}

/// Copies of group entries in `slot`'s mailbox not yet durable: (group, group seq).
pub(super) fn unsure_copies(slot: &crate::mailbox::Slot) -> Vec<(Id, u64)> {
    let durable = slot.durable.load(Ordering::Acquire);
    if slot.mailbox.last_seq() <= durable {
        // Nothing in flight (the usual case).
        return Vec::new();
    }
    slot.mailbox
        .held()
        .skip_while(|entry| entry.seq <= durable)
        .filter_map(|entry| match &entry.payload {
            crate::message::Payload::Group(copy) => Some((copy.group_id.clone(), copy.group_seq)),
            _ => None,
        })
        .collect()
}

/// Unacked entries past which a mailbox does not look for the copies it still holds (it
/// reports nothing until it holds fewer: a mailbox that far behind releases nothing anyway).
const RELEASE_SCAN: usize = 256;

/// Tells the groups of `owner` (through their fan-out lanes) how far its mailbox released their
/// copies: every copy up to that group seq is acked by every device and gone, and none failed.
/// Only after a change of the mailbox, and only what grew since last told.
pub(super) fn report_released(fanout: &FanOut, owner: &Id, slot: &mut crate::mailbox::Slot) {
    if !slot.dirty || slot.mailbox.is_spilled() || slot.mailbox.len() > RELEASE_SCAN {
        return;
    }
    let marks: Vec<(Id, u64)> = slot
        .account
        .copy_marks()
        .map(|(group, mark)| (group.clone(), mark))
        .collect();
    if marks.is_empty() {
        return;
    }
    // The held entries are those some device has not acked (or not yet durable).
    let mut held: hashbrown::HashMap<&Id, u64> = hashbrown::HashMap::new();
    for entry in slot.mailbox.held() {
        if let crate::message::Payload::Group(copy) = &entry.payload {
            let low = held.entry(&copy.group_id).or_insert(copy.group_seq);
            *low = (*low).min(copy.group_seq);
        }
    }
    let mut reports = Vec::new();
    for (group, mark) in marks {
        let mut released = mark;
        if let Some(low) = held.get(&group) {
            released = released.min(low - 1);
        }
        if let Some(hole) = slot.account.lowest_hole(&group) {
            released = released.min(hole - 1);
        }
        if released > slot.account.reported(&group) {
            reports.push((group, released));
        }
    }
    drop(held);
    for (group, upto) in reports {
        // A full lane: told at a later pass.
        let Some(permit) = fanout.reserve(&group) else {
            continue;
        };
        slot.account.note_reported(&group, upto);
        permit.send(FanOutJob::Released {
            group,
            member: owner.clone(),
            upto,
        });
    }
}
