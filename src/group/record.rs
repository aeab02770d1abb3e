//! The on-disk form of groups (`proto/tern/storage/v1/mailbox.proto`): group log entries (in
//! journal records and in members' stored mailbox entries) and the group snapshot written back
//! to the store.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::slot::Before;
use super::state::{Group, Member, Role};
use crate::mailbox::record::RecordError;
use crate::message::{GroupContent, GroupEntry, GroupEvent, Id};
use crate::proto::kinds;
use crate::proto::storage::{
    GroupFannedOut, GroupSnapshot, MailboxRecord, PendingGroupEntry, StoredGroupEntry,
    StoredGroupEvent, StoredMember, StoredMessage, mailbox_record, stored_group_entry,
};

/// Key of a group's snapshot among its shard's records.
pub fn snapshot_key(group_id: &str) -> Vec<u8> {
    format!("{SNAPSHOT_PREFIX}{group_id}").into_bytes()
}

/// Prefix of every group snapshot key.
pub const SNAPSHOT_PREFIX: &str = "group/";

/// Prefix of every logged group entry's key.
pub const LOG_PREFIX: &str = "glog/";

/// Key of a logged group entry among its group's shard's records.
pub fn log_key(group_id: &str, group_seq: u64) -> Vec<u8> {
    format!("{LOG_PREFIX}{group_id}/{group_seq:020}").into_bytes()
}

/// Prefix of the keys of how far groups' logs are pruned.
pub const PRUNED_PREFIX: &str = "glogpruned/";

/// Key of the record holding how far a group's log is pruned (a big-endian u64): a reference
/// at or below it whose entry is gone was acked by every member.
pub fn pruned_key(group_id: &str) -> Vec<u8> {
    format!("{PRUNED_PREFIX}{group_id}").into_bytes()
}

/// A stored group entry: whole, or a reference to the group's log.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredGroup {
    /// The entry itself.
    Entry(GroupEntry),
    /// A reference: read entry `group_seq` from group `group_id`'s log.
    Reference {
        /// The group.
        group_id: Id,
        /// The entry.
        group_seq: u64,
    },
}

/// The stored form of a member's copy: a reference when the entry is in the group's log.
pub fn encode_copy(entry: &GroupEntry) -> StoredGroupEntry {
    if !entry.logged {
        return encode_entry(entry);
    }
    StoredGroupEntry {
        group_id: entry.group_id.to_string(),
        group_seq: entry.group_seq,
        server_id: entry.server_id,
        logged: true,
        reference: true,
        ..StoredGroupEntry::default()
    }
}

/// A stored group entry or reference.
pub fn decode_stored(stored: StoredGroupEntry) -> Result<StoredGroup, RecordError> {
    if stored.reference {
        if stored.group_seq == 0 {
            return Err(RecordError::Invalid("group seq 0"));
        }
        return Ok(StoredGroup::Reference {
            group_id: Id::from(stored.group_id),
            group_seq: stored.group_seq,
        });
    }
    decode_entry(stored).map(StoredGroup::Entry)
}

/// A logged entry as read from the group's log.
pub fn decode_logged(bytes: Bytes) -> Result<GroupEntry, RecordError> {
    decode_entry(StoredGroupEntry::decode(bytes)?)
}

/// A logged entry's value in the group's log.
pub fn encode_logged(entry: &GroupEntry) -> Bytes {
    Bytes::from(encode_entry(entry).encode_to_vec())
}

/// The stored form of a group log entry.
pub fn encode_entry(entry: &GroupEntry) -> StoredGroupEntry {
    let content = match &entry.content {
        GroupContent::Message { kind, body } => {
            stored_group_entry::Content::Message(StoredMessage {
                to_user: String::new(),
                kind: kinds::message_kind_to_wire(*kind).into(),
                body: body.clone(),
            })
        }
        GroupContent::Event(event) => stored_group_entry::Content::Event(StoredGroupEvent {
            kind: kinds::event_kind_to_wire(event.kind).into(),
            users: event.users.iter().map(ToString::to_string).collect(),
            subject: event.subject.clone(),
        }),
    };
    StoredGroupEntry {
        group_id: entry.group_id.to_string(),
        group_seq: entry.group_seq,
        server_id: entry.server_id,
        from_user: entry.from_user.to_string(),
        from_device: entry.from_device.to_string(),
        client_msg_id: entry.client_msg_id.to_string(),
        timestamp_ms: entry.timestamp_ms,
        content: Some(content),
        logged: entry.logged,
        reference: false,
    }
}

/// A group log entry from its stored form.
pub fn decode_entry(stored: StoredGroupEntry) -> Result<GroupEntry, RecordError> {
    if stored.group_seq == 0 {
        return Err(RecordError::Invalid("group seq 0"));
    }
    if stored.reference {
        return Err(RecordError::Invalid("a reference where an entry belongs"));
    }
    let content = match stored
        .content
        .ok_or(RecordError::Invalid("no group content"))?
    {
        stored_group_entry::Content::Message(m) => GroupContent::Message {
            kind: kinds::message_kind_from_wire(m.kind)
                .ok_or(RecordError::Invalid("message kind"))?,
            body: m.body,
        },
        stored_group_entry::Content::Event(e) => GroupContent::Event(GroupEvent {
            kind: kinds::event_kind_from_wire(e.kind)
                .ok_or(RecordError::Invalid("group event kind"))?,
            users: e.users.into_iter().map(Id::from).collect(),
            subject: e.subject,
        }),
    };
    Ok(GroupEntry {
        group_id: Id::from(stored.group_id),
        group_seq: stored.group_seq,
        server_id: stored.server_id,
        from_user: Id::from(stored.from_user),
        from_device: Id::from(stored.from_device),
        client_msg_id: Arc::from(stored.client_msg_id),
        timestamp_ms: stored.timestamp_ms,
        content,
        logged: stored.logged,
    })
}

/// The journal record of an entry appended to a group's log.
pub fn encode_appended(entry: &GroupEntry) -> Bytes {
    let record = MailboxRecord {
        record: Some(mailbox_record::Record::GroupAppended(
            crate::proto::storage::GroupAppended {
                entry: Some(encode_entry(entry)),
            },
        )),
    };
    Bytes::from(record.encode_to_vec())
}

/// The journal record of an entry that reached all its recipients.
pub fn encode_fanned_out(group_id: &str, group_seq: u64) -> Bytes {
    let record = MailboxRecord {
        record: Some(mailbox_record::Record::GroupFannedOut(GroupFannedOut {
            group_id: group_id.to_owned(),
            group_seq,
        })),
    };
    Bytes::from(record.encode_to_vec())
}

/// The snapshot of a group written back to the store, as of its seq `upto` (entries above it
/// are left out); `before`: the members, subject and creation time to store instead of the
/// group's (those before a change that is not durable yet).
pub fn encode_snapshot(group: &Group, upto: u64, before: Option<&Before>) -> Bytes {
    let (subject, created_ms, members, released, departed) = match before {
        Some(before) => (
            &before.subject,
            before.created_ms,
            &before.members,
            &before.released,
            &before.departed,
        ),
        None => (
            &group.subject,
            group.created_ms,
            &group.members,
            &group.released,
            &group.departed,
        ),
    };
    let (released_users, released_seqs) = released
        .iter()
        .map(|(user, seq)| (user.to_string(), *seq))
        .unzip();
    let (departed_users, departed_seqs) = departed
        .iter()
        .map(|(user, seq)| (user.to_string(), *seq))
        .unzip();
    let (logged_firsts, logged_lasts) = group
        .logged
        .iter()
        .filter(|(first, _)| *first <= upto)
        .map(|(first, last)| (*first, (*last).min(upto)))
        .unzip();
    let mut stored: Vec<StoredMember> = members
        .iter()
        .map(|(user, m)| StoredMember {
            user: user.to_string(),
            admin: m.role == Role::Admin,
            joined_seq: m.joined_seq,
            delivered: m.delivered,
            read: m.read,
        })
        .collect();
    stored.sort_by(|a, b| a.user.cmp(&b.user));
    let recent = || {
        group
            .recent_authors
            .iter()
            .take_while(|(seq, _)| *seq <= upto)
    };
    let snapshot = GroupSnapshot {
        group_id: group.id.to_string(),
        subject: subject.clone(),
        created_ms,
        last_seq: upto,
        members: stored,
        pending: group
            .pending
            .iter()
            .take_while(|(entry, _)| entry.group_seq <= upto)
            .map(|(entry, recipients)| {
                let (extra, excluded) = recipient_delta(members, entry.group_seq, recipients);
                PendingGroupEntry {
                    entry: Some(encode_entry(entry)),
                    extra,
                    excluded,
                }
            })
            .collect(),
        recent_seqs: recent().map(|(seq, _)| *seq).collect(),
        recent_authors: recent().map(|(_, author)| author.to_string()).collect(),
        released_users,
        released_seqs,
        departed_users,
        departed_seqs,
        logged_firsts,
        logged_lasts,
        log_pruned: group.log_pruned,
    };
    Bytes::from(snapshot.encode_to_vec())
}

/// How `recipients` of the entry at `group_seq` differ from the group's members that joined at
/// or before it: (extra recipients, excluded members).
fn recipient_delta(
    members: &hashbrown::HashMap<Id, Member>,
    group_seq: u64,
    recipients: &[Id],
) -> (Vec<String>, Vec<String>) {
    let counted = |user: &Id| members.get(user).is_some_and(|m| m.joined_seq <= group_seq);
    let extra = recipients
        .iter()
        .filter(|user| !counted(user))
        .map(ToString::to_string)
        .collect();
    let listed: hashbrown::HashSet<&Id> = recipients.iter().collect();
    let excluded = members
        .iter()
        .filter(|(user, m)| m.joined_seq <= group_seq && !listed.contains(user))
        .map(|(user, _)| user.to_string())
        .collect();
    (extra, excluded)
}

/// A group from its snapshot.
pub fn decode_snapshot(bytes: Bytes) -> Result<Group, RecordError> {
    let snapshot = GroupSnapshot::decode(bytes)?;
    let mut group = Group::new(Id::from(snapshot.group_id));
    group.subject = snapshot.subject;
    group.created_ms = snapshot.created_ms;
    group.last_seq = snapshot.last_seq;
    for m in snapshot.members {
        let role = if m.admin { Role::Admin } else { Role::Member };
        group.members.insert(
            Id::from(m.user),
            Member {
                role,
                joined_seq: m.joined_seq,
                delivered: m.delivered,
                read: m.read,
            },
        );
    }
    for pending in snapshot.pending {
        let entry = decode_entry(pending.entry.ok_or(RecordError::Invalid("pending entry"))?)?;
        let excluded: hashbrown::HashSet<String> = pending.excluded.into_iter().collect();
        let recipients: Arc<[Id]> = group
            .members
            .iter()
            .filter(|(user, m)| {
                m.joined_seq <= entry.group_seq && !excluded.contains(user.as_ref())
            })
            .map(|(user, _)| user.clone())
            .chain(pending.extra.into_iter().map(Id::from))
            .collect();
        group.pending.push_back((Arc::new(entry), recipients));
    }
    group.recent_authors = snapshot
        .recent_seqs
        .into_iter()
        .zip(snapshot.recent_authors.into_iter().map(Id::from))
        .collect();
    group.released = snapshot
        .released_users
        .into_iter()
        .map(Id::from)
        .zip(snapshot.released_seqs)
        .collect();
    group.departed = snapshot
        .departed_users
        .into_iter()
        .map(Id::from)
        .zip(snapshot.departed_seqs)
        .collect();
    group.logged = snapshot
        .logged_firsts
        .into_iter()
        .zip(snapshot.logged_lasts)
        .collect();
    group.log_pruned = snapshot.log_pruned;
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GroupEventKind, MessageKind};

    #[test]
    fn entries_and_snapshots_round_trip() {
        let mut group = Group::new(Id::from("g1"));
        let created = GroupEntry {
            group_id: Id::from("g1"),
            group_seq: 1,
            server_id: 5,
            from_user: Id::from("ann"),
            from_device: Id::from("phone"),
            client_msg_id: Arc::from(""),
            timestamp_ms: 9,
            logged: false,
            content: GroupContent::Event(GroupEvent {
                kind: GroupEventKind::Created,
                users: vec![Id::from("ann"), Id::from("bob")],
                subject: "s".into(),
            }),
        };
        group.apply(&created).unwrap();
        let message = GroupEntry {
            group_seq: 2,
            client_msg_id: Arc::from("m1"),
            content: GroupContent::Message {
                kind: MessageKind::Text,
                body: Bytes::from_static(b"hi"),
            },
            ..created.clone()
        };
        let message_recipients = group.apply(&message).unwrap();
        group
            .pending
            .push_back((Arc::new(message.clone()), message_recipients.into()));
        // Later, cat joins and bob is removed: the pending message still goes to ann and bob.
        let change = |seq: u64, kind: GroupEventKind, user: &str| GroupEntry {
            group_seq: seq,
            content: GroupContent::Event(GroupEvent {
                kind,
                users: vec![Id::from(user)],
                subject: String::new(),
            }),
            ..created.clone()
        };
        group
            .apply(&change(3, GroupEventKind::Added, "cat"))
            .unwrap();
        group
            .apply(&change(4, GroupEventKind::Removed, "bob"))
            .unwrap();
        assert_eq!(decode_entry(encode_entry(&message)).unwrap(), message);
        assert_eq!(decode_entry(encode_entry(&created)).unwrap(), created);
        let mut decoded = decode_snapshot(encode_snapshot(&group, group.last_seq, None)).unwrap();
        let sorted = |group: &mut Group| {
            for (_, recipients) in &mut group.pending {
                let mut list = recipients.to_vec();
                list.sort();
                *recipients = list.into();
            }
        };
        sorted(&mut decoded);
        sorted(&mut group);
        assert_eq!(decoded, group);
        let (_, pending) = &decoded.pending[0];
        assert_eq!(&pending[..], &[Id::from("ann"), Id::from("bob")]);
    }
}
