//! A slot group's entries as `tern.mesh.v1.Entry` (log ids, votes and memberships convert as the
//! metadata group's do).

use openraft::EntryPayload;

use super::SlotCommand;
use crate::cluster::map::DecodeError;
use crate::cluster::raft::convert::{
    log_id_from_proto, log_id_to_proto, membership_from_proto, membership_to_proto,
};
use crate::cluster::raft::image::LogEntry;
use crate::proto::mesh as pb;

/// A slot group's log entry.
pub type SlotEntry = LogEntry<SlotCommand>;

pub fn entry_to_proto(entry: &SlotEntry) -> pb::Entry {
    use pb::entry::Payload;
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(command) => Payload::Slot(pb::SlotCommand {
            records: command.records.clone(),
            origin: command.origin,
            serial: command.serial,
            media: command.media.clone(),
        }),
        EntryPayload::Membership(membership) => {
            Payload::Membership(membership_to_proto(membership))
        }
    };
    pb::Entry {
        log_id: Some(log_id_to_proto(&entry.log_id)),
        payload: Some(payload),
    }
}

pub fn entry_from_proto(entry: pb::Entry) -> Result<SlotEntry, DecodeError> {
    use pb::entry::Payload;
    let missing = |field| DecodeError::Missing {
        what: "Entry",
        field,
    };
    let log_id = entry
        .log_id
        .as_ref()
        .map(log_id_from_proto)
        .ok_or(missing("log_id"))?;
    let payload = match entry.payload.ok_or(missing("payload"))? {
        Payload::Blank(_) => EntryPayload::Blank,
        Payload::Slot(command) => EntryPayload::Normal(SlotCommand {
            records: command.records,
            origin: command.origin,
            serial: command.serial,
            media: command.media,
        }),
        Payload::Membership(membership) => {
            EntryPayload::Membership(membership_from_proto(&membership)?)
        }
        // The metadata group's entry in a slot group's log.
        Payload::Command(_) => return Err(missing("payload")),
    };
    Ok(SlotEntry { log_id, payload })
}
