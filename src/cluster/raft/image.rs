//! The in-memory image of a Raft log as its records describe it (entries, vote, committed and
//! purged ids), whatever file the records live in: the metadata group's own file
//! (`log_store.rs`) or the node's journal shared by the slot groups (`slot/log_engine.rs`).

use std::collections::BTreeMap;
use std::io;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{AppData, BasicNode, Entry, EntryPayload};

use super::MetaTypes;
use super::convert;
use crate::cluster::map::DecodeError;
use crate::proto::mesh as pb;

/// A log entry whose application data is `D` (the same ids and nodes for every group).
pub type LogEntry<D> = Entry<LeaderId<u64, u64>, EntryPayload<D, u64, BasicNode>>;

/// Log ids and votes are the same types for every group of this crate (terms and node ids are
/// `u64`s); the metadata group's aliases name them.
pub type LogId = LogIdOf<MetaTypes>;
/// See [`LogId`].
pub type Vote = VoteOf<MetaTypes>;

/// What the records of one group's log say.
pub struct LogImage<D: AppData> {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub entries: BTreeMap<u64, LogEntry<D>>,
    /// Records that no longer describe state (replaced, truncated or purged).
    pub dead_records: usize,
}

impl<D: AppData> Default for LogImage<D> {
    fn default() -> Self {
        LogImage {
            vote: None,
            committed: None,
            purged: None,
            entries: BTreeMap::new(),
            dead_records: 0,
        }
    }
}

impl<D: AppData> LogImage<D> {
    /// Applies one record, decoding an entry with `entry_from`.
    pub fn apply(
        &mut self,
        record: pb::LogRecord,
        entry_from: impl FnOnce(pb::Entry) -> Result<LogEntry<D>, DecodeError>,
    ) -> Result<(), io::Error> {
        use pb::log_record::Record;
        match record.record {
            Some(Record::Entry(entry)) => {
                let entry = entry_from(entry).map_err(invalid)?;
                if self.entries.insert(entry.log_id.index, entry).is_some() {
                    self.dead_records += 1;
                }
            }
            Some(Record::Vote(vote)) => {
                if self.vote.replace(convert::vote_from_proto(&vote)).is_some() {
                    self.dead_records += 1;
                }
            }
            Some(Record::Committed(log_id)) => {
                if self
                    .committed
                    .replace(convert::log_id_from_proto(&log_id))
                    .is_some()
                {
                    self.dead_records += 1;
                }
            }
            Some(Record::Truncate(truncate)) => {
                let keep_through = truncate.after.map(|log_id| log_id.index);
                let removed = match keep_through {
                    Some(index) => self.entries.split_off(&(index + 1)).len(),
                    None => std::mem::take(&mut self.entries).len(),
                };
                self.dead_records += removed + 1;
            }
            Some(Record::Purge(log_id)) => {
                let upto = convert::log_id_from_proto(&log_id);
                let kept = self.entries.split_off(&(upto.index + 1));
                let removed = std::mem::replace(&mut self.entries, kept).len();
                self.dead_records += removed + usize::from(self.purged.is_some());
                self.purged = Some(upto);
            }
            None => return Err(invalid("empty log record")),
        }
        Ok(())
    }

    /// The last entry's id, or the last purged one when no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(self.purged)
    }

    /// Records that state the image and nothing else: the vote, the purged and committed ids,
    /// then every entry (encoded with `entry_to`).
    pub fn live_records(
        &self,
        entry_to: impl Fn(&LogEntry<D>) -> pb::Entry,
    ) -> Vec<pb::log_record::Record> {
        use pb::log_record::Record;
        let mut records = Vec::new();
        if let Some(vote) = &self.vote {
            records.push(Record::Vote(convert::vote_to_proto(vote)));
        }
        if let Some(purged) = &self.purged {
            records.push(Record::Purge(convert::log_id_to_proto(purged)));
        }
        if let Some(committed) = &self.committed {
            records.push(Record::Committed(convert::log_id_to_proto(committed)));
        }
        records.extend(
            self.entries
                .values()
                .map(|entry| Record::Entry(entry_to(entry))),
        );
        records
    }
}

/// A record that cannot be part of a log.
pub fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

/// A record of `record`.
pub fn record(record: pb::log_record::Record) -> pb::LogRecord {
    pb::LogRecord {
        record: Some(record),
    }
}
