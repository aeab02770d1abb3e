//! One group's state and rules, without I/O: who may change what, and how a log entry changes
//! the group. The worker applies an entry the moment it is accepted; recovery applies the same
//! entries replayed from the journal, so both paths share [`Group::apply`].

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::message::{GroupContent, GroupEntry, GroupEvent, GroupEventKind, Id};

/// Authors remembered per group, to route read receipts to them.
const RECENT_AUTHORS: usize = 4096;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May post.
    Member,
    /// May also add, remove, promote, demote and change the subject.
    Admin,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member or admin.
    pub role: Role,
    /// The group seq of the entry that made this user a member.
    pub joined_seq: u64,
    /// The member's delivered position in the group's log.
    pub delivered: u64,
    /// The member's read position in the group's log.
    pub read: u64,
}

/// Why a group operation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// No such group, or the user is not a member.
    #[error("not a member of this group")]
    NotAMember,
    /// The operation needs an admin.
    #[error("only an admin may do this")]
    NotAdmin,
    /// The group would exceed its member limit.
    #[error("the group would exceed {max} members")]
    Full {
        /// The limit.
        max: usize,
    },
    /// A field is invalid.
    #[error("{0}")]
    Invalid(&'static str),
    /// A group with this id exists.
    #[error("a group with this id exists")]
    Exists,
}

/// Why a change is invalid: a group keeps an admin.
const KEEP_AN_ADMIN: &str = "a group keeps at least one admin";
/// Why a change is invalid: the subject is too long.
const SUBJECT_TOO_LONG: &str = "subject over 256 bytes";

impl GroupError {
    /// The `Invalid` reason spelled `text` (as a peer node sends it), or a general one.
    pub fn known_invalid(text: &str) -> &'static str {
        [KEEP_AN_ADMIN, SUBJECT_TOO_LONG]
            .into_iter()
            .find(|known| *known == text)
            .unwrap_or("invalid group request")
    }
}

/// A change a member asks for (before it becomes an event with a seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add users.
    Add(Vec<Id>),
    /// Remove users.
    Remove(Vec<Id>),
    /// The actor leaves.
    Leave,
    /// Make users admins.
    Promote(Vec<Id>),
    /// Make admins plain members.
    Demote(Vec<Id>),
    /// Change the subject.
    Subject(String),
}

/// One group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Group id.
    pub id: Id,
    /// Subject.
    pub subject: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Highest group seq assigned.
    pub last_seq: u64,
    /// Current members.
    pub members: HashMap<Id, Member>,
    /// Entries accepted but not yet copied to every recipient's mailbox, with their recipients.
    pub pending: VecDeque<(Arc<GroupEntry>, Arc<[Id]>)>,
    /// (group seq, author) of recent messages, oldest first.
    pub recent_authors: VecDeque<(u64, Id)>,
    /// Per user whose mailbox may hold copies of this group's entries (members, and those who
    /// left with copies not yet acked): every copy up to this seq is gone from that mailbox.
    pub released: HashMap<Id, u64>,
    /// Users who left (or were removed) at this seq and may still hold copies up to it.
    pub departed: HashMap<Id, u64>,
    /// Runs (first, last) of seqs whose entries were logged and are not pruned yet.
    pub logged: VecDeque<(u64, u64)>,
    /// Entries up to this seq are pruned from the group's log.
    pub log_pruned: u64,
}

impl Group {
    /// An empty group, before its `Created` entry is applied.
    pub fn new(id: Id) -> Self {
        Self {
            id,
            subject: String::new(),
            created_ms: 0,
            last_seq: 0,
            members: HashMap::new(),
            pending: VecDeque::new(),
            recent_authors: VecDeque::new(),
            released: HashMap::new(),
            departed: HashMap::new(),
            logged: VecDeque::new(),
            log_pruned: 0,
        }
    }

    /// The event creating a group of `creator` and `members` (deduplicated, the creator first).
    pub fn creation(
        creator: &Id,
        subject: String,
        members: Vec<Id>,
        max: usize,
    ) -> Result<GroupEvent, GroupError> {
        let mut users = vec![creator.clone()];
        for user in members {
            if !users.contains(&user) {
                users.push(user);
            }
        }
        if users.len() > max {
            return Err(GroupError::Full { max });
        }
        Ok(GroupEvent {
            kind: GroupEventKind::Created,
            users,
            subject,
        })
    }

    /// True when `user` is a member.
    pub fn is_member(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }

    /// Checks that `actor` may make `change` and returns the event it becomes; `None` when it
    /// changes nothing (adding members already in, removing users not in).
    pub fn check(
        &self,
        actor: &Id,
        change: Change,
        max: usize,
    ) -> Result<Option<GroupEvent>, GroupError> {
        let role = self.members.get(actor).ok_or(GroupError::NotAMember)?.role;
        let admin_only = !matches!(change, Change::Leave);
        if admin_only && role != Role::Admin {
            return Err(GroupError::NotAdmin);
        }
        let (kind, users, subject) = match change {
            Change::Add(users) => {
                let new: Vec<Id> = dedup(users)
                    .into_iter()
                    .filter(|u| !self.is_member(u))
                    .collect();
                if self.members.len() + new.len() > max {
                    return Err(GroupError::Full { max });
                }
                (GroupEventKind::Added, new, String::new())
            }
            Change::Remove(users) => {
                let gone = dedup(users)
                    .into_iter()
                    .filter(|u| self.is_member(u) && u != actor)
                    .collect();
                (GroupEventKind::Removed, gone, String::new())
            }
            Change::Leave => (GroupEventKind::Left, vec![actor.clone()], String::new()),
            Change::Promote(users) => {
                let promoted = dedup(users)
                    .into_iter()
                    .filter(|u| self.members.get(u).is_some_and(|m| m.role == Role::Member))
                    .collect();
                (GroupEventKind::Promoted, promoted, String::new())
            }
            Change::Demote(users) => {
                let demoted: Vec<Id> = dedup(users)
                    .into_iter()
                    .filter(|u| self.members.get(u).is_some_and(|m| m.role == Role::Admin))
                    .collect();
                let admins = self
                    .members
                    .values()
                    .filter(|m| m.role == Role::Admin)
                    .count();
                if !demoted.is_empty() && demoted.len() >= admins {
                    return Err(GroupError::Invalid(KEEP_AN_ADMIN));
                }
                (GroupEventKind::Demoted, demoted, String::new())
            }
            Change::Subject(subject) => {
                if subject.len() > 256 {
                    return Err(GroupError::Invalid(SUBJECT_TOO_LONG));
                }
                (GroupEventKind::Subject, Vec::new(), subject)
            }
        };
        if users.is_empty() && kind != GroupEventKind::Subject {
            return Ok(None);
        }
        Ok(Some(GroupEvent {
            kind,
            users,
            subject,
        }))
    }

    /// Applies an accepted (or replayed) entry; returns who receives it: the members after it,
    /// plus those it removes. Entries at or below `last_seq` were applied already: `None`.
    pub fn apply(&mut self, entry: &GroupEntry) -> Option<Vec<Id>> {
        if entry.group_seq <= self.last_seq {
            return None;
        }
        self.last_seq = entry.group_seq;
        let seq = entry.group_seq;
        if entry.logged {
            self.note_logged(seq);
        }
        let mut also = Vec::new();
        match &entry.content {
            GroupContent::Message { .. } => {
                if self.recent_authors.len() == RECENT_AUTHORS {
                    self.recent_authors.pop_front();
                }
                self.recent_authors
                    .push_back((seq, entry.from_user.clone()));
            }
            GroupContent::Event(event) => match event.kind {
                GroupEventKind::Created => {
                    self.subject = event.subject.clone();
                    self.created_ms = entry.timestamp_ms;
                    for (index, user) in event.users.iter().enumerate() {
                        let role = if index == 0 {
                            Role::Admin
                        } else {
                            Role::Member
                        };
                        self.members.insert(user.clone(), member(role, seq));
                        self.joined(user, seq);
                    }
                }
                GroupEventKind::Added => {
                    for user in &event.users {
                        if !self.members.contains_key(user) {
                            self.members.insert(user.clone(), member(Role::Member, seq));
                            self.joined(user, seq);
                        }
                    }
                }
                GroupEventKind::Removed | GroupEventKind::Left => {
                    for user in &event.users {
                        if self.members.remove(user).is_some() {
                            // Its copies, up to this event's, may still be unacked.
                            self.departed.insert(user.clone(), seq);
                            also.push(user.clone());
                        }
                    }
                    self.keep_an_admin();
                }
                GroupEventKind::Promoted | GroupEventKind::Demoted => {
                    let role = if event.kind == GroupEventKind::Promoted {
                        Role::Admin
                    } else {
                        Role::Member
                    };
                    for user in &event.users {
                        if let Some(m) = self.members.get_mut(user) {
                            m.role = role;
                        }
                    }
                }
                GroupEventKind::Subject => self.subject = event.subject.clone(),
            },
        }
        let mut recipients: Vec<Id> = self.members.keys().cloned().collect();
        recipients.extend(also);
        Some(recipients)
    }

    /// `user` joined at `seq`: it holds no copy from before (or, rejoining, keeps what it
    /// still held from before).
    fn joined(&mut self, user: &Id, seq: u64) {
        self.departed.remove(user);
        self.released
            .entry(user.clone())
            .or_insert(seq.saturating_sub(1));
    }

    /// Notes that entry `seq` is kept in the group's log.
    fn note_logged(&mut self, seq: u64) {
        match self.logged.back_mut() {
            Some((_, last)) if *last + 1 >= seq => *last = seq,
            _ => self.logged.push_back((seq, seq)),
        }
    }

    /// `user`'s mailbox holds no copy of this group's entries up to `upto` any more.
    pub fn release(&mut self, user: &Id, upto: u64) {
        if !self.members.contains_key(user) && !self.departed.contains_key(user) {
            return;
        }
        let released = self.released.entry(user.clone()).or_insert(0);
        *released = (*released).max(upto);
        if self.departed.get(user).is_some_and(|left| *left <= upto) {
            // Gone with every copy it had: it no longer holds the log back.
            self.departed.remove(user);
            self.released.remove(user);
        }
    }

    /// The group's low-water mark: the highest seq that no mailbox holds a copy of any more
    /// (up to it, and below `durable_below`, nothing needs the group's log). A user that never
    /// reported counts as holding everything.
    pub fn low_water(&self, durable_below: u64) -> u64 {
        let mut low = durable_below;
        if let Some((entry, _)) = self.pending.front() {
            // Still to be copied.
            low = low.min(entry.group_seq - 1);
        }
        for user in self.members.keys().chain(self.departed.keys()) {
            low = low.min(self.released.get(user).copied().unwrap_or(0));
        }
        low
    }

    /// Prunes the log up to `upto`: the logged seqs to delete (`log_pruned` moves to `upto`).
    pub fn prune_log(&mut self, upto: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        if upto <= self.log_pruned {
            return seqs;
        }
        while let Some((first, last)) = self.logged.front_mut() {
            if *first > upto {
                break;
            }
            let end = (*last).min(upto);
            seqs.extend(*first..=end);
            if end == *last {
                self.logged.pop_front();
            } else {
                *first = end + 1;
            }
        }
        self.log_pruned = upto;
        seqs
    }

    /// When the last admin is gone, the longest-standing member becomes admin.
    fn keep_an_admin(&mut self) {
        if self.members.values().any(|m| m.role == Role::Admin) {
            return;
        }
        if let Some(user) = self.eldest_except(None)
            && let Some(m) = self.members.get_mut(&user)
        {
            m.role = Role::Admin;
        }
    }

    /// The member that becomes admin when `leaving`, the group's only admin, leaves: the
    /// longest-standing other member (lowest `joined_seq`, then lowest id). `None` when
    /// `leaving` is not the only admin, or is the last member. The worker announces it with a
    /// `PROMOTED` event just before the `LEFT`, so members learn who is in charge.
    pub fn heir_of(&self, leaving: &str) -> Option<Id> {
        let only_admin = self
            .members
            .get(leaving)
            .is_some_and(|m| m.role == Role::Admin)
            && self
                .members
                .iter()
                .all(|(user, m)| m.role != Role::Admin || user.as_ref() == leaving);
        if !only_admin {
            return None;
        }
        self.eldest_except(Some(leaving))
    }

    /// The longest-standing member other than `except`.
    fn eldest_except(&self, except: Option<&str>) -> Option<Id> {
        self.members
            .iter()
            .filter(|(user, _)| except != Some(user.as_ref()))
            .min_by(|a, b| (a.1.joined_seq, a.0).cmp(&(b.1.joined_seq, b.0)))
            .map(|(user, _)| user.clone())
    }

    /// Moves `user`'s delivered or read position forward (clamped to `last_seq`); returns the
    /// distinct authors (other than `user`) of messages in the range newly covered. Refused for
    /// a user not in the group.
    pub fn receipt(&mut self, user: &str, read: bool, up_to: u64) -> Result<Vec<Id>, GroupError> {
        let up_to = up_to.min(self.last_seq);
        let m = self.members.get_mut(user).ok_or(GroupError::NotAMember)?;
        let before = if read { m.read } else { m.delivered };
        if up_to <= before {
            return Ok(Vec::new());
        }
        if read {
            m.read = up_to;
            m.delivered = m.delivered.max(up_to);
        } else {
            m.delivered = up_to;
        }
        let mut authors: Vec<Id> = Vec::new();
        let start = self
            .recent_authors
            .partition_point(|(seq, _)| *seq <= before);
        for (seq, author) in self.recent_authors.iter().skip(start) {
            if *seq > up_to {
                break;
            }
            if author.as_ref() != user
                && self.members.contains_key(author)
                && !authors.contains(author)
            {
                authors.push(author.clone());
            }
        }
        Ok(authors)
    }

    /// Members whose read position, and those whose delivered (but not read) position, covers
    /// `seq`.
    pub fn read_by(&self, seq: u64) -> (Vec<Id>, Vec<Id>) {
        let mut read = Vec::new();
        let mut delivered = Vec::new();
        for (user, m) in &self.members {
            if m.read >= seq {
                read.push(user.clone());
            } else if m.delivered >= seq {
                delivered.push(user.clone());
            }
        }
        read.sort();
        delivered.sort();
        (read, delivered)
    }
}

fn member(role: Role, joined_seq: u64) -> Member {
    Member {
        role,
        joined_seq,
        delivered: joined_seq,
        read: joined_seq,
    }
}

fn dedup(users: Vec<Id>) -> Vec<Id> {
    let mut out: Vec<Id> = Vec::with_capacity(users.len());
    for user in users {
        if !out.contains(&user) {
            out.push(user);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageKind;

    fn id(s: &str) -> Id {
        Id::from(s)
    }

    fn entry(group: &Group, from: &str, content: GroupContent) -> GroupEntry {
        GroupEntry {
            group_id: group.id.clone(),
            group_seq: group.last_seq + 1,
            server_id: 1,
            from_user: id(from),
            from_device: id("d"),
            client_msg_id: Arc::from(""),
            timestamp_ms: 5,
            content,
            logged: false,
        }
    }

    fn change(group: &mut Group, actor: &str, c: Change) -> Result<Option<Vec<Id>>, GroupError> {
        let event = group.check(&id(actor), c, 4)?;
        Ok(event.and_then(|e| {
            let entry = entry(group, actor, GroupContent::Event(e));
            group.apply(&entry)
        }))
    }

    fn created() -> Group {
        let mut group = Group::new(id("g"));
        let event = Group::creation(&id("ann"), "s".into(), vec![id("bob"), id("ann")], 4).unwrap();
        assert_eq!(event.users, vec![id("ann"), id("bob")]);
        let e = entry(&group, "ann", GroupContent::Event(event));
        group.apply(&e).unwrap();
        group
    }

    #[test]
    fn only_admins_change_members_and_the_limit_holds() {
        let mut group = created();
        assert_eq!(
            change(&mut group, "bob", Change::Add(vec![id("cat")])),
            Err(GroupError::NotAdmin)
        );
        assert_eq!(
            change(&mut group, "eve", Change::Leave),
            Err(GroupError::NotAMember)
        );
        change(&mut group, "ann", Change::Add(vec![id("cat"), id("dan")])).unwrap();
        assert_eq!(group.members.len(), 4);
        assert_eq!(
            change(&mut group, "ann", Change::Add(vec![id("eve")])),
            Err(GroupError::Full { max: 4 })
        );
        assert_eq!(
            change(&mut group, "ann", Change::Add(vec![id("cat")])),
            Ok(None)
        );
        let recipients = change(&mut group, "ann", Change::Remove(vec![id("cat")]))
            .unwrap()
            .unwrap();
        assert!(
            recipients.contains(&id("cat")),
            "the removed member hears of it"
        );
        assert!(!group.is_member("cat"));
    }

    #[test]
    fn the_last_admin_leaving_promotes_the_eldest_member() {
        let mut group = created();
        change(&mut group, "ann", Change::Add(vec![id("cat")])).unwrap();
        assert_eq!(group.heir_of("ann"), Some(id("bob")));
        assert_eq!(group.heir_of("bob"), None, "not an admin");
        change(&mut group, "ann", Change::Leave).unwrap();
        assert_eq!(group.heir_of("cat"), None, "not an admin");
        assert_eq!(group.members[&id("bob")].role, Role::Admin);
        assert_eq!(group.members[&id("cat")].role, Role::Member);
        assert_eq!(
            change(&mut group, "bob", Change::Demote(vec![id("bob")])),
            Err(GroupError::Invalid("a group keeps at least one admin"))
        );
    }

    #[test]
    fn the_log_is_pruned_below_what_every_holder_released() {
        let mut group = created();
        let post = |group: &Group| {
            let mut e = entry(
                group,
                "ann",
                GroupContent::Message {
                    kind: MessageKind::Text,
                    body: bytes::Bytes::from_static(b"hi"),
                },
            );
            e.logged = true;
            e
        };
        for _ in 0..3 {
            let e = post(&group);
            group.apply(&e).unwrap();
        }
        assert_eq!(group.logged, VecDeque::from([(2, 4)]));
        assert_eq!(group.low_water(4), 0, "nobody released anything");
        group.release(&id("ann"), 4);
        group.release(&id("bob"), 3);
        assert_eq!(group.low_water(4), 3);
        // bob leaves at 5 still holding 4 and 5: he holds the log back until he releases them.
        change(&mut group, "bob", Change::Leave).unwrap();
        group.release(&id("ann"), 5);
        assert_eq!(group.low_water(5), 3);
        assert_eq!(group.prune_log(3), vec![2, 3]);
        assert_eq!(group.logged, VecDeque::from([(4, 4)]));
        group.release(&id("bob"), 5);
        assert!(!group.released.contains_key("bob"), "gone with every copy");
        assert_eq!(group.low_water(5), 5);
        assert_eq!(group.prune_log(5), vec![4]);
        assert!(group.logged.is_empty());
    }

    #[test]
    fn replayed_entries_apply_once_and_receipts_name_authors() {
        let mut group = created();
        let message = entry(
            &group,
            "bob",
            GroupContent::Message {
                kind: MessageKind::Text,
                body: bytes::Bytes::from_static(b"hi"),
            },
        );
        assert!(group.apply(&message).is_some());
        assert!(group.apply(&message).is_none(), "applied twice");
        assert_eq!(group.receipt("ann", true, 99), Ok(vec![id("bob")]));
        assert_eq!(
            group.receipt("ann", true, 2),
            Ok(Vec::<Id>::new()),
            "no news"
        );
        assert_eq!(group.read_by(2), (vec![id("ann")], vec![]));
    }
}
