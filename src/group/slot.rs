//! A group as its worker holds it: the group's state plus what the worker needs around it: the
//! durable watermark of its log, how far its pending entries were handed to the fan-out, and
//! the deduplication of retried posts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hashbrown::HashMap;

use super::state::Group;
use crate::mailbox::AckInfo;
use crate::message::{GroupContent, GroupEntry, Id};

/// Posts remembered per group for retry deduplication.
const DEDUP_WINDOW: usize = 1024;

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
        if entry.logged {
            self.unlogged.push(entry.clone());
        }
        self.group.pending.push_back((entry, recipients.into()));
        self.dirty = true;
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
