//! The on-disk form of mailbox changes (`proto/tern/storage/v1/mailbox.proto`): journal records
//! and the values of entries written back to the stores.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::dedup::SavedChunk;
use super::log::AckInfo;
use super::pushers::Pusher;
use crate::encode::{
    self, Field,
    Field::{I32, Str, U64},
};
use crate::group::record::{self as group_record, StoredGroup};
use crate::message::{
    ChatMessage, Entry, GroupEntry, GroupReceiptNotice, Id, Payload, ReceiptNotice,
};
use crate::proto::kinds;
use crate::proto::storage::{
    DedupChunk, MailboxRecord, PushChanged, TokensRevoked, entry_appended, mailbox_record,
};

/// A decoded mailbox record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An entry was appended to `owner`'s mailbox.
    Appended {
        /// Mailbox owner.
        owner: Id,
        /// The entry.
        entry: Entry,
        /// The author's id for it (the dedup key with the author).
        client_msg_id: Arc<str>,
        /// Server-wide id.
        server_id: u64,
    },
    /// A copy of a logged group entry was appended to `owner`'s mailbox; the entry itself is
    /// in the group's log.
    GroupCopy {
        /// Mailbox owner.
        owner: Id,
        /// Seq in the mailbox.
        seq: u64,
        /// Time of the copy.
        timestamp_ms: u64,
        /// The group.
        group_id: Id,
        /// The entry in the group's log.
        group_seq: u64,
    },
    /// An entry was appended to a group's log.
    GroupAppended(GroupEntry),
    /// A group entry reached every recipient's mailbox.
    GroupFannedOut {
        /// The group.
        group_id: Id,
        /// The entry.
        group_seq: u64,
    },
    /// A device of `owner` moved its cursor.
    Cursor {
        /// Mailbox owner.
        owner: Id,
        /// The device.
        device: Id,
        /// Its cursor.
        cursor: u64,
    },
    /// An operator revoked `owner`'s tokens issued at or before `not_before` (seconds).
    Revoked {
        /// The user.
        owner: Id,
        /// The device signed out; `None`: every device of the user.
        device: Option<Id>,
        /// Tokens issued at or before this are refused.
        not_before: u64,
    },
    /// A device of `owner` changed its push registration or mutes: its whole push state now.
    Push {
        /// The user.
        owner: Id,
        /// The device.
        device: Id,
        /// Its state.
        pusher: Pusher,
    },
}

/// Why bytes are not a mailbox record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not protobuf of the expected type.
    #[error("undecodable mailbox record: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Decoded, but a required part is missing or out of range.
    #[error("invalid mailbox record: {0}")]
    Invalid(&'static str),
}

/// Encodes an appended entry.
pub fn encode_appended(owner: &str, entry: &Entry, client_msg_id: &str, server_id: u64) -> Bytes {
    let (from_user, from_device) = entry.origin();
    let (message, receipt, group, group_receipt);
    // `EntryAppended.content`, field numbers as in `StoredMessage`, `StoredReceipt`,
    // `StoredGroupEntry` and `StoredGroupReceipt`.
    let content = match &entry.payload {
        Payload::Message(m) => {
            message = [
                Str(1, &m.to_user),
                I32(2, kinds::message_kind_to_wire(m.kind).into()),
                Field::Bytes(3, &m.body),
            ];
            Field::Message(8, &message)
        }
        Payload::Receipt(r) => {
            receipt = [
                I32(1, kinds::receipt_kind_to_wire(r.kind).into()),
                U64(2, r.up_to_seq),
            ];
            Field::Message(9, &receipt)
        }
        Payload::Group(g) => {
            group = group_record::encode_copy(g).encode_to_vec();
            Field::Encoded(10, &group)
        }
        Payload::GroupReceipt(r) => {
            group_receipt = [
                Str(1, &r.group_id),
                I32(2, kinds::receipt_kind_to_wire(r.kind).into()),
                U64(3, r.up_to_group_seq),
            ];
            Field::Message(11, &group_receipt)
        }
    };
    // `MailboxRecord.appended` (`EntryAppended`).
    let appended = [
        Str(1, owner),
        U64(2, entry.seq),
        U64(3, entry.timestamp_ms),
        Str(4, from_user),
        Str(5, from_device),
        Str(6, client_msg_id),
        U64(7, server_id),
        content,
    ];
    Bytes::from(encode::encode_to_vec(&[Field::Message(1, &appended)]))
}

/// Encodes a cursor move.
pub fn encode_cursor(owner: &str, device: &str, cursor: u64) -> Bytes {
    // `MailboxRecord.cursor` (`CursorMoved`).
    let moved = [Str(1, owner), Str(2, device), U64(3, cursor)];
    Bytes::from(encode::encode_to_vec(&[Field::Message(2, &moved)]))
}

/// Encodes `device`'s push state after a change.
pub fn encode_push(owner: &str, device: &str, pusher: &Pusher) -> Bytes {
    Bytes::from(
        MailboxRecord {
            record: Some(mailbox_record::Record::Push(PushChanged {
                owner: owner.to_owned(),
                pusher: Some(pusher.to_stored(device)),
            })),
        }
        .encode_to_vec(),
    )
}

/// Encodes a revocation of `owner`'s tokens (of `device`, or of every device when `None`).
pub fn encode_revoked(owner: &str, device: Option<&str>, not_before: u64) -> Bytes {
    Bytes::from(
        MailboxRecord {
            record: Some(mailbox_record::Record::Revoked(TokensRevoked {
                owner: owner.to_owned(),
                device: device.unwrap_or_default().to_owned(),
                not_before,
            })),
        }
        .encode_to_vec(),
    )
}

/// Prefix of the dedup table records (in the records tree of the owner's shard).
pub const DEDUP_PREFIX: &str = "dedup/";

/// Key of chunk `chunk` of the dedup window of `sender`'s `device` in `owner`'s mailbox:
/// `dedup/<owner>\0<sender>\0<device>\0<chunk>` (user ids never contain 0x00, so keys of
/// different windows never meet).
pub fn dedup_key(owner: &str, sender: &str, device: &str, chunk: u8) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(DEDUP_PREFIX.len() + owner.len() + sender.len() + device.len() + 4);
    key.extend_from_slice(DEDUP_PREFIX.as_bytes());
    for part in [owner, sender, device] {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    key.push(chunk);
    key
}

/// Encodes one saved chunk of a dedup window.
pub fn encode_dedup(owner: &str, chunk: &SavedChunk<'_>) -> Bytes {
    let ids = chunk.ids;
    Bytes::from(
        DedupChunk {
            owner: owner.to_owned(),
            sender: chunk.sender.to_string(),
            device: chunk.device.to_string(),
            client_msg_ids: ids.iter().map(|(id, _)| id.to_string()).collect(),
            seqs: ids.iter().map(|(_, ack)| ack.seq).collect(),
            server_ids: ids.iter().map(|(_, ack)| ack.server_id).collect(),
            timestamps_ms: ids.iter().map(|(_, ack)| ack.timestamp_ms).collect(),
        }
        .encode_to_vec(),
    )
}

/// A dedup chunk read back: (owner, sender, device, ids with their acks).
pub type DedupRecord = (Id, Id, Id, Vec<(Arc<str>, AckInfo)>);

/// Decodes one saved chunk of a dedup window.
pub fn decode_dedup(bytes: Bytes) -> Result<DedupRecord, RecordError> {
    let chunk = DedupChunk::decode(bytes)?;
    let count = chunk.client_msg_ids.len();
    if [
        chunk.seqs.len(),
        chunk.server_ids.len(),
        chunk.timestamps_ms.len(),
    ] != [count; 3]
    {
        return Err(RecordError::Invalid(
            "dedup chunk lists of different lengths",
        ));
    }
    let ids = chunk
        .client_msg_ids
        .into_iter()
        .zip(chunk.seqs)
        .zip(chunk.server_ids.into_iter().zip(chunk.timestamps_ms))
        .map(|((id, seq), (server_id, timestamp_ms))| {
            (
                Arc::from(id),
                AckInfo {
                    seq,
                    server_id,
                    timestamp_ms,
                },
            )
        })
        .collect();
    Ok((
        Id::from(chunk.owner),
        Id::from(chunk.sender),
        Id::from(chunk.device),
        ids,
    ))
}

/// Decodes a record.
pub fn decode(bytes: Bytes) -> Result<Record, RecordError> {
    let record = MailboxRecord::decode(bytes)?;
    match record.record.ok_or(RecordError::Invalid("empty record"))? {
        mailbox_record::Record::Cursor(c) => Ok(Record::Cursor {
            owner: Id::from(c.owner),
            device: Id::from(c.device),
            cursor: c.cursor,
        }),
        mailbox_record::Record::Revoked(r) => Ok(Record::Revoked {
            owner: Id::from(r.owner),
            device: (!r.device.is_empty()).then(|| Id::from(r.device)),
            not_before: r.not_before,
        }),
        mailbox_record::Record::Push(p) => {
            let (device, pusher) =
                Pusher::from_stored(p.pusher.ok_or(RecordError::Invalid("no push state"))?);
            Ok(Record::Push {
                owner: Id::from(p.owner),
                device,
                pusher,
            })
        }
        mailbox_record::Record::GroupAppended(g) => Ok(Record::GroupAppended(
            group_record::decode_entry(g.entry.ok_or(RecordError::Invalid("no group entry"))?)?,
        )),
        mailbox_record::Record::GroupFannedOut(f) => Ok(Record::GroupFannedOut {
            group_id: Id::from(f.group_id),
            group_seq: f.group_seq,
        }),
        mailbox_record::Record::Appended(a) => {
            if a.seq == 0 {
                return Err(RecordError::Invalid("seq 0"));
            }
            let from_user = Id::from(a.from_user);
            let from_device = Id::from(a.from_device);
            let client_msg_id: Arc<str> = Arc::from(a.client_msg_id);
            let payload = match a.content.ok_or(RecordError::Invalid("no content"))? {
                entry_appended::Content::Message(m) => Payload::Message(ChatMessage {
                    server_id: a.server_id,
                    from_user,
                    from_device,
                    to_user: Id::from(m.to_user),
                    client_msg_id: client_msg_id.clone(),
                    kind: kinds::message_kind_from_wire(m.kind)
                        .ok_or(RecordError::Invalid("message kind"))?,
                    body: m.body,
                }),
                entry_appended::Content::Receipt(r) => Payload::Receipt(ReceiptNotice {
                    from_user,
                    from_device,
                    kind: kinds::receipt_kind_from_wire(r.kind)
                        .ok_or(RecordError::Invalid("receipt kind"))?,
                    up_to_seq: r.up_to_seq,
                }),
                entry_appended::Content::Group(g) => match group_record::decode_stored(g)? {
                    StoredGroup::Entry(entry) => Payload::Group(Arc::new(entry)),
                    StoredGroup::Reference {
                        group_id,
                        group_seq,
                    } => {
                        return Ok(Record::GroupCopy {
                            owner: Id::from(a.owner),
                            seq: a.seq,
                            timestamp_ms: a.timestamp_ms,
                            group_id,
                            group_seq,
                        });
                    }
                },
                entry_appended::Content::GroupReceipt(r) => {
                    Payload::GroupReceipt(GroupReceiptNotice {
                        group_id: Id::from(r.group_id),
                        from_user,
                        from_device,
                        kind: kinds::receipt_kind_from_wire(r.kind)
                            .ok_or(RecordError::Invalid("receipt kind"))?,
                        up_to_group_seq: r.up_to_group_seq,
                    })
                }
            };
            Ok(Record::Appended {
                owner: Id::from(a.owner),
                entry: Entry {
                    seq: a.seq,
                    timestamp_ms: a.timestamp_ms,
                    accepted_ms: 0,
                    payload,
                },
                client_msg_id,
                server_id: a.server_id,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageKind, ReceiptKind};

    /// Entry 7 of bob's mailbox: alice's message "m-1" (server id 99) with `body`.
    fn message_to_bob(body: &'static [u8]) -> Entry {
        Entry {
            seq: 7,
            timestamp_ms: 1_700,
            accepted_ms: 0,
            payload: Payload::Message(ChatMessage {
                server_id: 99,
                from_user: Id::from("alice"),
                from_device: Id::from("phone"),
                to_user: Id::from("bob"),
                client_msg_id: Arc::from("m-1"),
                kind: MessageKind::Binary,
                body: Bytes::from_static(body),
            }),
        }
    }

    #[test]
    fn messages_receipts_and_cursors_round_trip() {
        let message = message_to_bob(b"\x00\xffbody");
        let decoded = decode(encode_appended("bob", &message, "m-1", 99)).unwrap();
        assert_eq!(
            decoded,
            Record::Appended {
                owner: Id::from("bob"),
                entry: message,
                client_msg_id: Arc::from("m-1"),
                server_id: 99
            }
        );

        let receipt = Entry {
            seq: 3,
            timestamp_ms: 5,
            accepted_ms: 0,
            payload: Payload::Receipt(ReceiptNotice {
                from_user: Id::from("bob"),
                from_device: Id::from("phone"),
                kind: ReceiptKind::Read,
                up_to_seq: 7,
            }),
        };
        let decoded = decode(encode_appended("alice", &receipt, "r-1", 5)).unwrap();
        assert!(matches!(decoded, Record::Appended { entry, .. } if entry == receipt));

        let decoded = decode(encode_cursor("alice", "laptop", 42)).unwrap();
        assert_eq!(
            decoded,
            Record::Cursor {
                owner: Id::from("alice"),
                device: Id::from("laptop"),
                cursor: 42
            }
        );
    }

    #[test]
    fn revocations_round_trip() {
        assert_eq!(
            decode(encode_revoked("alice", Some("phone"), 1_700_000_000)).unwrap(),
            Record::Revoked {
                owner: Id::from("alice"),
                device: Some(Id::from("phone")),
                not_before: 1_700_000_000
            }
        );
        assert_eq!(
            decode(encode_revoked("alice", None, 5)).unwrap(),
            Record::Revoked {
                owner: Id::from("alice"),
                device: None,
                not_before: 5
            }
        );
    }

    #[test]
    fn records_are_byte_for_byte_what_prost_writes() {
        use crate::proto::storage::{CursorMoved, EntryAppended, StoredMessage, StoredReceipt};
        let appended = |content| MailboxRecord {
            record: Some(mailbox_record::Record::Appended(EntryAppended {
                owner: "bob".to_owned(),
                seq: 7,
                timestamp_ms: 1_700,
                from_user: "alice".to_owned(),
                from_device: "phone".to_owned(),
                client_msg_id: "m-1".to_owned(),
                server_id: 99,
                content: Some(content),
            })),
        };
        let entry = |payload| Entry {
            seq: 7,
            timestamp_ms: 1_700,
            accepted_ms: 0,
            payload,
        };
        let message = message_to_bob(b"body");
        let expected = appended(entry_appended::Content::Message(StoredMessage {
            to_user: "bob".to_owned(),
            kind: kinds::message_kind_to_wire(MessageKind::Binary).into(),
            body: Bytes::from_static(b"body"),
        }));
        assert_eq!(
            encode_appended("bob", &message, "m-1", 99),
            expected.encode_to_vec()
        );
        let receipt = entry(Payload::Receipt(ReceiptNotice {
            from_user: Id::from("alice"),
            from_device: Id::from("phone"),
            kind: ReceiptKind::Delivered,
            up_to_seq: 0,
        }));
        let expected = appended(entry_appended::Content::Receipt(StoredReceipt {
            kind: kinds::receipt_kind_to_wire(ReceiptKind::Delivered).into(),
            up_to_seq: 0,
        }));
        assert_eq!(
            encode_appended("bob", &receipt, "m-1", 99),
            expected.encode_to_vec()
        );
        let expected = MailboxRecord {
            record: Some(mailbox_record::Record::Cursor(CursorMoved {
                owner: "alice".to_owned(),
                device: String::new(),
                cursor: 3,
            })),
        };
        assert_eq!(encode_cursor("alice", "", 3), expected.encode_to_vec());
    }

    #[test]
    fn dedup_chunks_round_trip() {
        let ids = vec![(
            Arc::from("m-1"),
            AckInfo {
                seq: 7,
                server_id: 99,
                timestamp_ms: 1_700,
            },
        )];
        let (sender, device) = (Id::from("alice"), Id::from("phone"));
        let chunk = SavedChunk {
            sender: &sender,
            device: &device,
            chunk: 3,
            ids: &ids,
        };
        let decoded = decode_dedup(encode_dedup("bob", &chunk)).unwrap();
        assert_eq!(decoded, (Id::from("bob"), sender, device, ids));
        assert_eq!(
            dedup_key("bob", "alice", "phone", 3),
            b"dedup/bob\0alice\0phone\0\x03"
        );
    }

    #[test]
    fn garbage_and_incomplete_records_are_refused() {
        assert!(matches!(
            decode(Bytes::from_static(&[0xff, 0xff])),
            Err(RecordError::Decode(_))
        ));
        assert!(matches!(decode(Bytes::new()), Err(RecordError::Invalid(_))));
    }
}
