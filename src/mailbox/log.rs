//! One user's mailbox: an ordered log of entries, a cursor per device, and the dedup table.
//!
//! Invariants: sequence numbers start at 1 and increase along the log (a gap only where a write
//! failed: that seq was never acked and is never reused); `entries` ends at `last_seq`; an entry
//! is dropped only once every known device's cursor has passed it, or evicted once it is in the
//! store; a known device's cursor never moves backwards.
//!
//! The dedup table ([`Dedup`]) remembers recent `client_msg_id`s of each sending device with
//! their original acks.
//!
//! Eviction keeps the log a suffix: the entries above every cursor and at or below
//! `spilled_upto` live only in the store, everything above `spilled_upto` is held here.

use std::collections::VecDeque;
use std::sync::Arc;

use super::dedup::Dedup;
use super::device_map::DeviceMap;
use crate::message::{Entry, Id, Payload};

/// What the sender's ServerAck carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    /// Seq in this mailbox.
    pub seq: u64,
    /// Server-wide id of the message.
    pub server_id: u64,
    /// Acceptance time, ms since the epoch.
    pub timestamp_ms: u64,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored now.
    New(Arc<Entry>),
    /// This (sender, client_msg_id) was stored before; here is its original ack.
    Duplicate(AckInfo),
}

/// Where a read is served from.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// From the held entries.
    Cache(Vec<Arc<Entry>>),
    /// The entries after the read position were evicted: read the store after it, up to and
    /// including `upto` (everything above that is held).
    Store {
        /// The last evicted seq.
        upto: u64,
    },
}

/// One user's mailbox.
#[derive(Debug, Default)]
pub struct Mailbox {
    last_seq: u64,
    entries: VecDeque<Arc<Entry>>,
    /// Sum of [`Entry::cache_bytes`] over `entries`.
    held_bytes: usize,
    /// Entries above every cursor and at or below this seq are only in the store.
    spilled_upto: u64,
    cursors: DeviceMap<u64>,
    dedup: Dedup,
}

impl Mailbox {
    /// Highest seq ever assigned (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate memory of the held entries.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// True when some retained entries live only in the store.
    pub fn is_spilled(&self) -> bool {
        self.spilled_upto > self.min_cursor().unwrap_or(0)
    }

    /// The seq of the oldest retained entry (held or evicted), or `last_seq + 1` when none is.
    fn first_held_seq(&self) -> u64 {
        if self.is_spilled() {
            return self.min_cursor().unwrap_or(0) + 1;
        }
        self.entries.front().map_or(self.last_seq + 1, |e| e.seq)
    }

    /// Drops held entries up to `upto` from memory: they are in the store and are read from
    /// there. Returns the number dropped.
    pub fn evict_upto(&mut self, upto: u64) -> usize {
        self.spilled_upto = self.spilled_upto.max(upto);
        self.drop_front_upto(upto)
    }

    /// Marks entries up to `upto` as held only in the store (recovery of a mailbox that is not
    /// loaded into memory); nothing may be held yet.
    pub fn restore_spilled(&mut self, upto: u64) {
        debug_assert!(self.entries.is_empty());
        self.spilled_upto = self.spilled_upto.max(upto);
        self.last_seq = self.last_seq.max(upto);
    }

    /// Registers `device` (if new) and applies its resume cursor; returns the cursor delivery
    /// resumes after. A new device starts before the oldest held entry, so it receives
    /// everything still queued; a known device resumes at max(its cursor, `resume_after`).
    pub fn login(&mut self, device: &Id, resume_after: u64) -> u64 {
        let start = self.first_held_seq() - 1;
        let cursor = self.cursors.get_or_insert_with(device, || start);
        *cursor = (*cursor).max(resume_after.min(self.last_seq));
        let cursor = *cursor;
        self.prune();
        cursor
    }

    /// Entries currently held, oldest first.
    pub fn held(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.iter()
    }

    /// Every known device and its cursor.
    pub fn cursors(&self) -> impl Iterator<Item = (&Id, u64)> {
        self.cursors
            .iter()
            .map(|(device, cursor)| (device, *cursor))
    }

    /// The lowest cursor of all known devices (entries at or below it are gone).
    pub fn min_cursor(&self) -> Option<u64> {
        self.cursors.values().min().copied()
    }

    /// Raises `last_seq` to at least `seq` (recovery of a mailbox whose entries were all acked).
    pub fn raise_last_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Devices known to this mailbox.
    pub fn devices(&self) -> usize {
        self.cursors.len()
    }

    /// The cursor of `device`, if it is known.
    pub fn cursor(&self, device: &str) -> Option<u64> {
        self.cursors.get(device).copied()
    }

    /// The dedup table.
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// The dedup table, to restore or save it.
    pub fn dedup_mut(&mut self) -> &mut Dedup {
        &mut self.dedup
    }

    /// Appends an entry unless (`from_user`, `client_msg_id`) was already appended; `payload`
    /// is only called for a new entry. The id is remembered in `from_device`'s window.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        from_user: &Id,
        from_device: &Id,
        client_msg_id: &Arc<str>,
        server_id: u64,
        timestamp_ms: u64,
        dedup_window: usize,
        payload: impl FnOnce() -> Payload,
    ) -> Appended {
        let ack = AckInfo {
            seq: self.last_seq + 1,
            server_id,
            timestamp_ms,
        };
        // One lookup of the sender and of the id both checks and remembers.
        if let Some(original) =
            self.dedup
                .remember(from_user, from_device, client_msg_id, ack, dedup_window)
        {
            return Appended::Duplicate(original);
        }
        Appended::New(self.push_new(timestamp_ms, payload()))
    }

    /// Appends a copy of a group entry: no dedup record here, the caller knows copies by their
    /// group position ([`crate::mailbox::account::Account::has_copy`]).
    pub fn append_copy(&mut self, timestamp_ms: u64, payload: Payload) -> Arc<Entry> {
        self.push_new(timestamp_ms, payload)
    }

    /// Holds a new entry at the next seq, stamped with the monotonic clock for write-back.
    fn push_new(&mut self, timestamp_ms: u64, payload: Payload) -> Arc<Entry> {
        self.last_seq += 1;
        let entry = Arc::new(Entry {
            seq: self.last_seq,
            timestamp_ms,
            accepted_ms: crate::clock::monotonic_ms(),
            payload,
        });
        self.held_bytes += entry.cache_bytes();
        self.entries.push_back(entry.clone());
        entry
    }

    /// Re-inserts an entry read back from disk at recovery (entries come in seq order; older or
    /// repeated ones are ignored).
    pub fn restore(
        &mut self,
        entry: Entry,
        client_msg_id: &Arc<str>,
        server_id: u64,
        dedup_window: usize,
    ) {
        // Held entries and the seq counter may come from the store first (its metadata can be
        // ahead of this entry); only order against what is held. The dedup key is kept even for
        // an entry already acked or evicted, so a retry after the restart is still recognized.
        // Copies of group entries ('#' ids, never a phone's) are known by their group position.
        if !client_msg_id.starts_with('#') {
            let (from_user, from_device) = entry.origin();
            self.dedup.restore(
                from_user,
                from_device,
                client_msg_id,
                AckInfo {
                    seq: entry.seq,
                    server_id,
                    timestamp_ms: entry.timestamp_ms,
                },
                dedup_window,
            );
        }
        self.last_seq = self.last_seq.max(entry.seq);
        if self
            .entries
            .back()
            .is_some_and(|last| entry.seq <= last.seq)
            || self.min_cursor().is_some_and(|cursor| entry.seq <= cursor)
            || entry.seq <= self.spilled_upto
        {
            return;
        }
        self.held_bytes += entry.cache_bytes();
        self.entries.push_back(Arc::new(entry));
        self.prune();
    }

    /// Re-applies a device cursor read back from disk at recovery: exactly that value for a
    /// device not seen yet (unlike [`Mailbox::ack`], which starts unknown devices at the oldest
    /// held entry), never moving a known cursor backwards.
    pub fn restore_cursor(&mut self, device: &Id, cursor: u64) {
        let known = self.cursors.get_or_insert_with(device, || cursor);
        *known = (*known).max(cursor);
        self.prune();
    }

    /// Removes the held entry `seq`, whose write failed: it is never read, pushed or written
    /// back (a gap in the seqs).
    pub fn withdraw(&mut self, seq: u64) {
        let index = self.entries.partition_point(|entry| entry.seq < seq);
        if self
            .entries
            .get(index)
            .is_some_and(|entry| entry.seq == seq)
            && let Some(entry) = self.entries.remove(index)
        {
            self.held_bytes -= entry.cache_bytes();
        }
    }

    /// Forgets the dedup record of an append whose write failed, so a retry is stored anew.
    pub fn forget(&mut self, from_user: &Id, client_msg_id: &Arc<str>) {
        self.dedup.forget(from_user, client_msg_id);
    }

    /// Moves `device`'s cursor forward to `up_to` (never past `last_seq`, never backwards) and
    /// drops entries every device has acked. Returns the number of entries dropped.
    pub fn ack(&mut self, device: &Id, up_to: u64) -> usize {
        let up_to = up_to.min(self.last_seq);
        let start = self.first_held_seq() - 1;
        let cursor = self.cursors.get_or_insert_with(device, || start);
        *cursor = (*cursor).max(up_to);
        self.prune()
    }

    /// Entries with seq > `after`, in order: at most `limit` of them and, past the first, no
    /// more than `max_bytes` of bodies in all; or, when the entries after `after` were evicted,
    /// where to read them in the store.
    pub fn fetch(&self, after: u64, limit: usize, max_bytes: usize) -> Read {
        if after < self.spilled_upto && self.is_spilled() {
            return Read::Store {
                upto: self.spilled_upto,
            };
        }
        // Seqs increase along the log; a write that failed leaves a gap, so search.
        let skip = self.entries.partition_point(|entry| entry.seq <= after);
        Read::Cache(within_budget(
            self.entries.iter().skip(skip).take(limit),
            max_bytes,
        ))
    }

    fn prune(&mut self) -> usize {
        match self.cursors.values().min().copied() {
            Some(min_cursor) => self.drop_front_upto(min_cursor),
            None => 0,
        }
    }

    fn drop_front_upto(&mut self, upto: u64) -> usize {
        let mut dropped = 0;
        while let Some(entry) = self.entries.front() {
            if entry.seq > upto {
                break;
            }
            self.held_bytes -= entry.cache_bytes();
            self.entries.pop_front();
            dropped += 1;
        }
        dropped
    }
}

/// The leading `entries` that fit in `max_bytes` of bodies (always at least one).
pub fn within_budget<'a>(
    entries: impl Iterator<Item = &'a Arc<Entry>>,
    max_bytes: usize,
) -> Vec<Arc<Entry>> {
    let mut bytes = 0;
    entries
        .take_while(|entry| {
            let fits = bytes == 0 || bytes + entry.approximate_bytes() <= max_bytes;
            bytes += entry.approximate_bytes();
            fits
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ChatMessage, MessageKind};

    fn id(s: &str) -> Id {
        Arc::from(s)
    }

    fn append(mailbox: &mut Mailbox, from: &str, client_msg_id: &str) -> Appended {
        let from = id(from);
        mailbox.append(&from, &id("d"), &Arc::from(client_msg_id), 7, 1, 4, || {
            Payload::Message(ChatMessage {
                server_id: 7,
                from_user: from.clone(),
                from_device: id("d"),
                to_user: id("me"),
                client_msg_id: Arc::from(client_msg_id),
                kind: MessageKind::Text,
                body: bytes::Bytes::from_static(b"hi"),
            })
        })
    }

    fn seqs(read: &Read) -> Vec<u64> {
        match read {
            Read::Cache(entries) => entries.iter().map(|e| e.seq).collect(),
            Read::Store { upto } => panic!("read from the store up to {upto}"),
        }
    }

    #[test]
    fn entries_wait_for_a_first_device_then_for_every_device() {
        let mut mailbox = Mailbox::default();
        for n in 0..3 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        // No device yet: everything is kept, and a new device starts before the first entry.
        assert_eq!(mailbox.login(&id("phone"), 0), 0);
        assert_eq!(seqs(&mailbox.fetch(0, 10, usize::MAX)), vec![1, 2, 3]);
        assert_eq!(mailbox.login(&id("laptop"), 0), 0);
        mailbox.ack(&id("phone"), 3);
        assert_eq!(mailbox.len(), 3, "laptop has not acked yet");
        mailbox.ack(&id("laptop"), 2);
        assert_eq!(seqs(&mailbox.fetch(0, 10, usize::MAX)), vec![3]);
        assert_eq!(seqs(&mailbox.fetch(2, 10, usize::MAX)), vec![3]);
    }

    #[test]
    fn retries_are_stored_once_and_the_window_is_bounded() {
        let mut mailbox = Mailbox::default();
        let Appended::New(first) = append(&mut mailbox, "alice", "m1") else {
            panic!("first append must be new");
        };
        assert_eq!(
            append(&mut mailbox, "alice", "m1"),
            Appended::Duplicate(AckInfo {
                seq: first.seq,
                server_id: 7,
                timestamp_ms: 1
            })
        );
        // The same id from another sender is a different message.
        assert!(matches!(
            append(&mut mailbox, "bob", "m1"),
            Appended::New(_)
        ));
        // The window keeps the last 4 ids of a sender.
        for n in 2..=5 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        assert!(matches!(
            append(&mut mailbox, "alice", "m1"),
            Appended::New(_)
        ));
        assert_eq!(mailbox.last_seq(), 7);
    }

    #[test]
    fn fetch_respects_the_byte_budget_but_returns_at_least_one() {
        let mut mailbox = Mailbox::default();
        for n in 0..5 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        let Read::Cache(all) = mailbox.fetch(0, 10, usize::MAX) else {
            panic!("nothing was evicted");
        };
        let one = all[0].approximate_bytes();
        assert_eq!(seqs(&mailbox.fetch(0, 10, 2 * one)), vec![1, 2]);
        assert_eq!(seqs(&mailbox.fetch(0, 10, 1)), vec![1]);
        assert_eq!(seqs(&mailbox.fetch(3, 1, usize::MAX)), vec![4]);
    }

    #[test]
    fn a_withdrawn_entry_is_never_read() {
        let mut mailbox = Mailbox::default();
        for n in 0..3 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        mailbox.withdraw(2);
        mailbox.withdraw(9);
        assert_eq!(seqs(&mailbox.fetch(0, 10, usize::MAX)), vec![1, 3]);
        assert_eq!(mailbox.last_seq(), 3, "the seq is not reused");
    }

    #[test]
    fn a_restored_cursor_is_taken_as_recorded() {
        // Recovery order: the seq counter from metadata first, nothing held, then cursors.
        let mut mailbox = Mailbox::default();
        mailbox.raise_last_seq(14);
        mailbox.restore_cursor(&id("phone"), 11);
        assert_eq!(
            mailbox.cursor("phone"),
            Some(11),
            "not moved to the end of an empty log"
        );
        mailbox.restore_cursor(&id("phone"), 3);
        assert_eq!(mailbox.cursor("phone"), Some(11), "never backwards");
    }

    #[test]
    fn resume_cursor_moves_forward_only_and_is_clamped() {
        let mut mailbox = Mailbox::default();
        for n in 0..5 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        assert_eq!(mailbox.login(&id("phone"), 3), 3);
        assert_eq!(mailbox.login(&id("phone"), 1), 3, "never backwards");
        assert_eq!(mailbox.login(&id("phone"), 99), 5, "never past last_seq");
        assert!(mailbox.is_empty());
        assert_eq!(seqs(&mailbox.fetch(0, 10, usize::MAX)), Vec::<u64>::new());
    }

    #[test]
    fn evicted_entries_are_read_from_the_store_until_every_device_passes_them() {
        let mut mailbox = Mailbox::default();
        for n in 0..5 {
            append(&mut mailbox, "alice", &format!("m{n}"));
        }
        let all_bytes = mailbox.held_bytes();
        assert_eq!(mailbox.evict_upto(3), 3);
        assert_eq!(mailbox.len(), 2);
        assert!(mailbox.held_bytes() < all_bytes);
        assert_eq!(mailbox.fetch(0, 10, usize::MAX), Read::Store { upto: 3 });
        assert_eq!(mailbox.fetch(2, 10, usize::MAX), Read::Store { upto: 3 });
        assert_eq!(seqs(&mailbox.fetch(3, 10, usize::MAX)), vec![4, 5]);
        // A new device starts before the evicted entries.
        assert_eq!(mailbox.login(&id("phone"), 0), 0);
        mailbox.ack(&id("phone"), 3);
        assert!(!mailbox.is_spilled());
        assert_eq!(seqs(&mailbox.fetch(3, 10, usize::MAX)), vec![4, 5]);
        // Acking everything leaves nothing held and nothing accounted.
        mailbox.ack(&id("phone"), 5);
        assert_eq!(mailbox.held_bytes(), 0);
    }

    #[test]
    fn a_mailbox_recovered_spilled_holds_only_what_comes_after() {
        let mut mailbox = Mailbox::default();
        mailbox.restore_cursor(&id("phone"), 2);
        mailbox.restore_spilled(6);
        assert_eq!(mailbox.last_seq(), 6);
        assert_eq!(mailbox.fetch(2, 10, usize::MAX), Read::Store { upto: 6 });
        // Replayed journal records: those already in the store are ignored.
        for seq in 5..=8 {
            let Appended::New(entry) = append(&mut Mailbox::default(), "alice", "x") else {
                panic!("new");
            };
            let mut entry = (*entry).clone();
            entry.seq = seq;
            mailbox.restore(entry, &Arc::from(format!("r{seq}")), 7, 4);
        }
        assert_eq!(mailbox.len(), 2);
        assert_eq!(seqs(&mailbox.fetch(6, 10, usize::MAX)), vec![7, 8]);
        assert_eq!(
            mailbox.login(&id("laptop"), 0),
            2,
            "starts at the oldest retained"
        );
    }
}
