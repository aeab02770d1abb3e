//! A group as its worker holds it: the group's state plus what the worker needs around it: the
//! durable watermark of its log, the entries whose journal write is still out, the change in
//! flight (with what undoes it) and the operations waiting behind it, how far its pending
//! entries were handed to the fan-out, and the deduplication of retried posts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use hashbrown::HashMap;

use super::record;
use super::state::{Group, Member};
use crate::mailbox::AckInfo;
use crate::mailbox::group_ops::GroupJob;
use crate::message::{GroupContent, GroupEntry, Id};

/// Posts remembered per group for retry deduplication.
const DEDUP_WINDOW: usize = 1024;

/// Operations that may wait behind a change in flight; more are answered busy.
pub const DEFERRED_MAX: usize = 1024;

/// What a change replaced, to put back if its journal write fails.
#[derive(Debug, Clone)]
pub struct Before {
    /// The subject.
    pub subject: String,
    /// The creation time.
    pub created_ms: u64,
    /// The members with their roles and positions.
    pub members: HashMap<Id, Member>,
    /// What each user's mailbox released.
    pub released: HashMap<Id, u64>,
    /// Who left when, still holding copies.
    pub departed: HashMap<Id, u64>,
}

/// A membership or subject change whose journal write is still out. Until it is answered,
/// the group's other operations wait (`deferred`), so nothing is decided on a change that may
/// yet be undone.
#[derive(Debug)]
pub struct InFlightChange {
    /// The change's group seq.
    pub seq: u64,
    /// The state it replaced; `None` for the creation (undoing it removes the group).
    pub before: Option<Before>,
}

/// One group on its worker.
#[derive(Debug)]
pub struct GroupSlot {
    /// The group.
    pub group: Group,
    /// Highest group seq known durable in the journal.
    pub durable: Arc<AtomicU64>,
    /// Pending entries up to this seq were handed to the fan-out.
    pub queued_upto: u64,
    /// Changed since the last write-back pass.
    pub dirty: bool,
    /// Logged entries not yet written to the group's log in the store.
    pub unlogged: Vec<Arc<GroupEntry>>,
    /// Logged entries in the last write-back pass's batch, until the next pass knows it was
    /// applied.
    pub logging: Vec<Arc<GroupEntry>>,
    /// Seqs pruned from the log in the last write-back pass's batch, deleted again if that
    /// batch failed.
    pub pruning: Vec<u64>,
    /// Seqs of accepted entries whose journal answer the worker has not heard yet, in order.
    pub in_flight: VecDeque<u64>,
    /// The change in flight, if any.
    pub change: Option<InFlightChange>,
    /// Operations on this group waiting for the change in flight, in arrival order.
    pub deferred: VecDeque<GroupJob>,
    acks: HashMap<(Id, Arc<str>), AckInfo>,
    order: VecDeque<(Id, Arc<str>)>,
}

impl GroupSlot {
    /// A slot for `group`, durable up to its last seq (as recovered).
    pub fn new(group: Group) -> Self {
        let durable = Arc::new(AtomicU64::new(group.last_seq));
        Self {
            group,
            durable,
            queued_upto: 0,
            dirty: false,
            unlogged: Vec::new(),
            logging: Vec::new(),
            pruning: Vec::new(),
            in_flight: VecDeque::new(),
            change: None,
            deferred: VecDeque::new(),
            acks: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The original ack of a post by `from` named `client_msg_id`, if remembered.
    pub fn recall(&self, from: &Id, client_msg_id: &Arc<str>) -> Option<AckInfo> {
        self.acks
            .get(&(from.clone(), client_msg_id.clone()))
            .copied()
    }

    /// Remembers a post's ack, forgetting the oldest past the window.
    pub fn remember(&mut self, from: &Id, client_msg_id: &Arc<str>, ack: AckInfo) {
        let key = (from.clone(), client_msg_id.clone());
        if self.acks.insert(key.clone(), ack).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.acks.remove(&old);
            }
        }
    }

    /// Forgets a post whose journal write failed, so a retry is accepted anew.
    pub fn forget(&mut self, from: &Id, client_msg_id: &Arc<str>) {
        self.acks.remove(&(from.clone(), client_msg_id.clone()));
    }

    /// Re-applies an entry read back from the journal at recovery; it waits for the fan-out
    /// (the copies already made are recognized by the recipients' mailboxes).
    pub fn replay(&mut self, entry: Arc<GroupEntry>) {
        let Some(recipients) = self.group.apply(&entry) else {
            return;
        };
        // An entry already pruned from the log is not written to it again.
        let logged = entry.logged && entry.group_seq > self.group.log_pruned;
        if matches!(entry.content, GroupContent::Message { .. }) {
            self.remember(
                &entry.from_user.clone(),
                &entry.client_msg_id.clone(),
                AckInfo {
                    seq: entry.group_seq,
                    server_id: entry.server_id,
                    timestamp_ms: entry.timestamp_ms,
                },
            );
        }
        self.durable
            .store(entry.group_seq, std::sync::atomic::Ordering::Release);
        if logged {
            self.unlogged.push(entry.clone());
        }
        self.group.pending.push_back((entry, recipients.into()));
        self.dirty = true;
    }

    /// True while operations on the group must wait (a change is in flight, or others wait).
    pub fn blocked(&self) -> bool {
        self.change.is_some() || !self.deferred.is_empty()
    }

    /// Notes entry `entry` accepted (applied, its journal write out); a change also saves what
    /// undoes it.
    pub fn accepted(&mut self, entry: &GroupEntry, before: Option<Before>) {
        self.in_flight.push_back(entry.group_seq);
        if matches!(entry.content, GroupContent::Event(_)) {
            self.change = Some(InFlightChange {
                seq: entry.group_seq,
                before,
            });
        }
    }

    /// What a change of the group may have to undo.
    pub fn before(&self) -> Before {
        Before {
            subject: self.group.subject.clone(),
            created_ms: self.group.created_ms,
            members: self.group.members.clone(),
            released: self.group.released.clone(),
            departed: self.group.departed.clone(),
        }
    }

    /// The journal holds entry `seq`. True when it was the change in flight (what waited may
    /// run).
    pub fn durable_entry(&mut self, seq: u64) -> bool {
        self.in_flight.retain(|s| *s != seq);
        if self.change.as_ref().is_some_and(|c| c.seq == seq) {
            self.change = None;
            return true;
        }
        false
    }

    /// The journal refused entry `seq`: it is withdrawn (a gap in the group's log nobody
    /// receives), and a change is undone. Returns `Some(true)` when it was the change in flight
    /// and the group must be removed (its creation failed), `Some(false)` when it was the change
    /// in flight, `None` otherwise.
    pub fn failed_entry(&mut self, seq: u64) -> Option<bool> {
        self.in_flight.retain(|s| *s != seq);
        self.unlogged.retain(|entry| entry.group_seq != seq);
        self.fanned_out(seq);
        if self.change.as_ref().is_none_or(|c| c.seq != seq) {
            return None;
        }
        let change = self.change.take()?;
        let Some(before) = change.before else {
            return Some(true);
        };
        self.group.subject = before.subject;
        self.group.created_ms = before.created_ms;
        self.group.members = before.members;
        self.group.departed = before.departed;
        // Releases reported meanwhile stay; users the change brought in go.
        for (user, upto) in before.released {
            self.group.released.entry(user).or_insert(upto);
        }
        let group = &mut self.group;
        group.released.retain(|user, _| {
            group.members.contains_key(user) || group.departed.contains_key(user)
        });
        self.dirty = true;
        Some(false)
    }

    /// The highest seq up to which the group is known durable: below its first entry still in
    /// flight.
    pub fn settled(&self) -> u64 {
        self.in_flight
            .front()
            .map_or(self.group.last_seq, |seq| seq - 1)
    }

    /// The group's snapshot as far as it is durable (entries in flight, and a change in flight,
    /// left out: recovery replays them from the journal if they became durable); `None` while
    /// its creation is in flight.
    pub fn snapshot(&self) -> Option<Bytes> {
        let before = match &self.change {
            Some(InFlightChange { before: None, .. }) => return None,
            Some(InFlightChange {
                before: Some(before),
                ..
            }) => Some(before),
            None => None,
        };
        Some(record::encode_snapshot(&self.group, self.settled(), before))
    }

    /// Drops the pending entry `group_seq` (it reached every recipient).
    pub fn fanned_out(&mut self, group_seq: u64) {
        if let Some(index) = self
            .group
            .pending
            .iter()
            .position(|(entry, _)| entry.group_seq == group_seq)
        {
            self.group.pending.remove(index);
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GroupEvent, GroupEventKind, MessageKind};

    fn entry(seq: u64, content: GroupContent) -> GroupEntry {
        GroupEntry {
            group_id: Id::from("g"),
            group_seq: seq,
            server_id: 0,
            from_user: Id::from("ann"),
            from_device: Id::from("d"),
            client_msg_id: Arc::from(""),
            timestamp_ms: 1,
            content,
            logged: false,
        }
    }

    fn event(seq: u64, kind: GroupEventKind, users: &[&str]) -> GroupEntry {
        entry(
            seq,
            GroupContent::Event(GroupEvent {
                kind,
                users: users.iter().map(|u| Id::from(*u)).collect(),
                subject: "s".into(),
            }),
        )
    }

    fn accept(slot: &mut GroupSlot, entry: GroupEntry) {
        let before = match &entry.content {
            GroupContent::Event(e) if e.kind != GroupEventKind::Created => Some(slot.before()),
            _ => None,
        };
        slot.group.apply(&entry).unwrap();
        slot.accepted(&entry, before);
    }

    #[test]
    fn a_failed_change_is_undone_and_snapshots_leave_out_what_is_in_flight() {
        let mut slot = GroupSlot::new(Group::new(Id::from("g")));
        accept(
            &mut slot,
            event(1, GroupEventKind::Created, &["ann", "bob"]),
        );
        assert!(slot.blocked());
        assert!(
            slot.snapshot().is_none(),
            "no group before its creation is durable"
        );
        assert!(slot.durable_entry(1));
        let post = entry(
            2,
            GroupContent::Message {
                kind: MessageKind::Text,
                body: Bytes::from_static(b"hi"),
            },
        );
        accept(&mut slot, post);
        assert!(!slot.blocked(), "a post does not hold the group");
        accept(&mut slot, event(3, GroupEventKind::Added, &["cat"]));
        assert!(slot.group.is_member("cat"));
        let stored = record::decode_snapshot(slot.snapshot().unwrap()).unwrap();
        assert_eq!(
            stored.last_seq, 1,
            "the post and the change are still in flight"
        );
        assert!(!stored.is_member("cat"));
        assert!(!slot.durable_entry(2));
        assert_eq!(slot.failed_entry(3), Some(false));
        assert!(!slot.group.is_member("cat"), "undone");
        assert!(!slot.blocked());
        assert_eq!(slot.group.last_seq, 3, "a gap, never reused");
        let stored = record::decode_snapshot(slot.snapshot().unwrap()).unwrap();
        assert_eq!((stored.last_seq, stored.members.len()), (3, 2));

        let mut created = GroupSlot::new(Group::new(Id::from("h")));
        accept(&mut created, event(1, GroupEventKind::Created, &["ann"]));
        assert_eq!(created.failed_entry(1), Some(true), "the group goes");
    }
}
