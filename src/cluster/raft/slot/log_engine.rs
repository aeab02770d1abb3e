//! One log for all the slot groups of a node: their records go to one journal (group commit,
//! fsync, CRC, torn-tail cut; `crate::journal`), so one fsync covers the appends of every group
//! written in the same batch; each group keeps the image of its own log in memory
//! ([`LogImage`]) and reads from it.
//!
//! A record is a `SlotLogRecord`: the group and one `LogRecord` (an entry, a vote, a truncation,
//! a purge or the committed id), applied in journal order on open exactly as when it was
//! written. What must be durable before openraft hears back (appended entries, votes,
//! truncations) is; the committed id and purges ride on the next fsync.
//!
//! Retention: [`LogEngine::compact`] restates every group's log at the journal's end and
//! releases the segments before it, so the journal holds about what the groups hold (their
//! unpurged entries), whatever they purged, truncated or replaced. A group's image stays locked
//! while its records are queued, so the journal has each group's records in the order its image
//! took them and a restatement cannot slip between a change and its record.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};
use prost::Message;

use super::SlotTypes;
use super::convert::{self as slot_convert, SlotEntry};
use crate::cluster::raft::convert;
use crate::cluster::raft::image::{LogImage, invalid, record};
use crate::journal::{Journal, JournalConfig, JournalError, Pending};
use crate::proto::mesh as pb;

type LogId = LogIdOf<SlotTypes>;
type Vote = VoteOf<SlotTypes>;

/// Opening the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum LogEngineError {
    /// The journal could not be opened or read.
    #[error("slot log journal: {0}")]
    Journal(#[from] JournalError),
    /// A record is not a slot group's log record.
    #[error("slot log journal: record {lsn}: {source}")]
    Record {
        /// Its lsn.
        lsn: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The slot groups' shared log.
pub struct LogEngine {
    journal: Journal,
    groups: Mutex<HashMap<u64, Arc<Mutex<LogImage<super::SlotCommand>>>>>,
}

impl LogEngine {
    /// Opens (or creates) the journal in `config.dir` and replays every group's records.
    /// Blocks on disk I/O: call it before serving, or on a blocking thread.
    pub fn open(config: JournalConfig) -> Result<Arc<LogEngine>, LogEngineError> {
        let (journal, recovery) = Journal::open(config)?;
        let mut groups: HashMap<u64, LogImage<super::SlotCommand>> = HashMap::new();
        // Everything the journal still holds: what a compaction released is restated after it.
        let after = recovery.oldest_lsn().saturating_sub(1);
        for item in recovery.records_after(after)? {
            let (lsn, payload) = item?;
            if payload.is_empty() {
                // A compaction's barrier.
                continue;
            }
            let failed = |source| LogEngineError::Record { lsn, source };
            let slot_record = pb::SlotLogRecord::decode(payload).map_err(|e| failed(invalid(e)))?;
            let record = slot_record
                .record
                .ok_or_else(|| failed(invalid("slot log record without a record")))?;
            groups
                .entry(slot_record.group)
                .or_default()
                .apply(record, slot_convert::entry_from_proto)
                .map_err(failed)?;
        }
        let groups = groups
            .into_iter()
            .map(|(group, image)| (group, Arc::new(Mutex::new(image))))
            .collect();
        Ok(Arc::new(LogEngine {
            journal,
            groups: Mutex::new(groups),
        }))
    }

    /// The log of `group` (empty if it has none yet).
    pub fn group(self: &Arc<Self>, group: u64) -> GroupLog {
        let image = self
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(group)
            .or_default()
            .clone();
        GroupLog {
            engine: self.clone(),
            group,
            image,
        }
    }

    /// The groups with a log here, in order.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .copied()
            .collect();
        groups.sort_unstable();
        groups
    }

    /// Entries held in every group's log (what purges have not released).
    pub fn entries(&self) -> usize {
        self.images()
            .iter()
            .map(|image| lock(image).entries.len())
            .sum()
    }

    /// Records in the journal that no longer describe any group's state.
    pub fn dead_records(&self) -> usize {
        self.images()
            .iter()
            .map(|image| lock(image).dead_records)
            .sum()
    }

    /// Restates every group's log (vote, purged and committed ids, live entries) at the
    /// journal's end, then releases everything before: the journal holds what the groups hold,
    /// whatever they purged, truncated or replaced. Returns the records written.
    pub async fn compact(&self) -> Result<usize, JournalError> {
        // Everything queued before the barrier is restated below (an image includes what its
        // records did), so once the restatement is durable the journal up to the barrier can go.
        let barrier = self.journal.append(Bytes::new())?.await?;
        let mut written = 0;
        let mut last = None;
        for (group, image) in self.all() {
            let mut image = lock(&image);
            let records: Vec<pb::LogRecord> = image
                .live_records(slot_convert::entry_to_proto)
                .into_iter()
                .map(record)
                .collect();
            written += records.len();
            if let Some(pending) = self.write(group, records)? {
                last = Some(pending);
            }
            image.dead_records = 0;
        }
        if let Some(last) = last {
            last.await?;
        }
        self.journal.release(barrier);
        Ok(written)
    }

    fn all(&self) -> Vec<(u64, Arc<Mutex<LogImage<super::SlotCommand>>>)> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(group, image)| (*group, image.clone()))
            .collect()
    }

    fn images(&self) -> Vec<Arc<Mutex<LogImage<super::SlotCommand>>>> {
        self.all().into_iter().map(|(_, image)| image).collect()
    }

    /// Journal segment files held.
    pub fn segments(&self) -> u64 {
        self.journal.stats().segments
    }

    /// Stops the journal after what is queued (written, fsynced and completed).
    pub fn close(&self) -> Result<(), JournalError> {
        self.journal.close()
    }

    /// The fsyncs made since open (appends per fsync is the group-commit factor).
    pub fn fsyncs(&self) -> u64 {
        self.journal.stats().fsyncs
    }

    fn encode(group: u64, record: pb::LogRecord) -> Bytes {
        Bytes::from(
            pb::SlotLogRecord {
                group,
                record: Some(record),
            }
            .encode_to_vec(),
        )
    }

    /// Writes `records` of `group`; the pending completion of the last one (they complete in
    /// order), `None` when there were none.
    fn write(
        &self,
        group: u64,
        records: Vec<pb::LogRecord>,
    ) -> Result<Option<Pending>, JournalError> {
        let mut last = None;
        for record in records {
            last = Some(self.journal.append(Self::encode(group, record))?);
        }
        Ok(last)
    }
}

/// One slot group's log: openraft's log storage (and, cloned, its reader).
#[derive(Clone)]
pub struct GroupLog {
    engine: Arc<LogEngine>,
    group: u64,
    image: Arc<Mutex<LogImage<super::SlotCommand>>>,
}

/// A group's image, locked. A panic while holding the lock cannot leave the image half-updated
/// in a way replay would not, so a poisoned lock is still usable.
fn lock(
    image: &Mutex<LogImage<super::SlotCommand>>,
) -> MutexGuard<'_, LogImage<super::SlotCommand>> {
    image
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupLog {
    fn image(&self) -> MutexGuard<'_, LogImage<super::SlotCommand>> {
        lock(&self.image)
    }

    /// Applies `records` to the image, writes them and waits until they are durable.
    async fn write_durably(&self, records: Vec<pb::LogRecord>) -> Result<(), io::Error> {
        let pending = self.write(records)?;
        match pending {
            Some(pending) => pending.await.map(drop).map_err(io_error),
            None => Ok(()),
        }
    }

    /// Applies `records` to the image and queues them; durable with the journal's next fsync.
    /// The image stays locked until they are queued, so the journal holds a group's records in
    /// the order its image took them (a compaction restating the image cannot slip between).
    fn write(&self, records: Vec<pb::LogRecord>) -> Result<Option<Pending>, io::Error> {
        let mut image = self.image();
        for record in &records {
            image.apply(record.clone(), slot_convert::entry_from_proto)?;
        }
        self.engine.write(self.group, records).map_err(io_error)
    }
}

fn io_error(error: JournalError) -> io::Error {
    io::Error::other(error.to_string())
}

impl RaftLogReader<SlotTypes> for GroupLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<SlotEntry>, io::Error> {
        Ok(self
            .image()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.image().vote)
    }
}

impl RaftLogStorage<SlotTypes> for GroupLog {
    type LogReader = GroupLog;

    async fn get_log_state(&mut self) -> Result<LogState<SlotTypes>, io::Error> {
        let image = self.image();
        Ok(LogState {
            last_purged_log_id: image.purged,
            last_log_id: image.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        use pb::log_record::Record;
        self.write_durably(vec![record(Record::Vote(convert::vote_to_proto(vote)))])
            .await
    }

    // The committed id need not be durable (openraft re-learns it from the leader): it rides on
    // the next fsync.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        use pb::log_record::Record;
        match committed {
            Some(log_id) => {
                let committed = record(Record::Committed(convert::log_id_to_proto(&log_id)));
                self.write(vec![committed]).map(drop)
            }
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.image().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<SlotTypes>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = SlotEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        use pb::log_record::Record;
        let records: Vec<pb::LogRecord> = entries
            .into_iter()
            .map(|entry| record(Record::Entry(slot_convert::entry_to_proto(&entry))))
            .collect();
        // The entries are readable at once; openraft counts them as stored once the callback
        // says the fsync covering the last one is done (records complete in order).
        match self.write(records) {
            Ok(Some(pending)) => {
                tokio::spawn(async move {
                    let flushed = pending.await.map(drop).map_err(io_error);
                    callback.io_completed(flushed);
                });
                Ok(())
            }
            Ok(None) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        use pb::log_record::Record;
        let truncate = record(Record::Truncate(pb::TruncateAfter {
            after: last_log_id.as_ref().map(convert::log_id_to_proto),
        }));
        self.write_durably(vec![truncate]).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        use pb::log_record::Record;
        let purge = record(Record::Purge(convert::log_id_to_proto(&log_id)));
        self.write(vec![purge]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::cluster::raft::slot::SlotCommand;

    fn entry(term: u64, index: u64, text: &str) -> SlotEntry {
        SlotEntry {
            log_id: convert::log_id_from_proto(&pb::LogId {
                term,
                node: 1,
                index,
            }),
            payload: EntryPayload::Normal(SlotCommand {
                records: vec![Bytes::from(text.to_owned())],
                origin: 0,
                serial: 0,
                media: Vec::new(),
            }),
        }
    }

    async fn append(log: &mut GroupLog, entries: Vec<SlotEntry>) {
        use openraft::type_config::TypeConfigExt;
        let (sender, flushed) = SlotTypes::oneshot();
        log.append(entries, IOFlushed::<SlotTypes>::signal(sender))
            .await
            .expect("append");
        flushed.await.expect("callback").expect("flushed");
    }

    #[tokio::test]
    async fn appends_of_many_groups_share_fsyncs() {
        use openraft::type_config::TypeConfigExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = LogEngine::open(JournalConfig::new(dir.path())).expect("open");
        let before = engine.fsyncs();
        // Each group appends and gets its callback once the entry is durable; the appends are
        // queued before any is awaited, as the groups' tasks would queue them.
        let mut flushed = Vec::new();
        for group in 0..64 {
            let (sender, receiver) = SlotTypes::oneshot();
            engine
                .group(group)
                .append(
                    vec![entry(1, 1, "m")],
                    IOFlushed::<SlotTypes>::signal(sender),
                )
                .await
                .expect("append");
            flushed.push(receiver);
        }
        for receiver in flushed {
            receiver.await.expect("callback").expect("flushed");
        }
        let fsyncs = engine.fsyncs() - before;
        assert!(fsyncs <= 32, "{fsyncs} fsyncs for 64 groups' appends");
    }

    #[tokio::test]
    async fn compaction_releases_what_no_group_holds_and_keeps_what_they_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = JournalConfig::new(dir.path());
        config.segment_bytes = 4096;
        let engine = LogEngine::open(config.clone()).expect("open");
        let (mut one, mut two) = (engine.group(1), engine.group(2));
        let body = "x".repeat(200);
        for index in 1..=200 {
            append(&mut one, vec![entry(1, index, &body)]).await;
        }
        append(&mut two, vec![entry(1, 1, "kept")]).await;
        one.purge(entry(1, 190, "").log_id).await.expect("purge");
        let vote = convert::vote_from_proto(&pb::Vote {
            term: 1,
            node: 1,
            committed: true,
        });
        one.save_vote(&vote).await.expect("vote");
        let segments = engine.segments();
        assert!(engine.dead_records() >= 190);
        let written = engine.compact().await.expect("compact");
        // Group 1: its vote, purged id and ten entries; group 2: one entry.
        assert_eq!(written, 2 + 10 + 1);
        assert_eq!(engine.dead_records(), 0);
        // The journal drops what it released after its next batch.
        append(&mut two, vec![entry(1, 2, "later")]).await;
        let mut released = engine.segments();
        for _ in 0..100 {
            if released < segments / 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            released = engine.segments();
        }
        assert!(released < segments / 2, "{segments} -> {released} segments");
        engine.close().expect("close");
        drop((one, two, engine));

        let engine = LogEngine::open(config).expect("reopen");
        let (mut one, mut two) = (engine.group(1), engine.group(2));
        assert_eq!(one.read_vote().await.expect("vote"), Some(vote));
        let entries = one.try_get_log_entries(0..).await.expect("entries");
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[0], entry(1, 191, &body));
        let state = one.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(entry(1, 190, "").log_id));
        assert_eq!(
            two.try_get_log_entries(0..).await.expect("entries"),
            vec![entry(1, 1, "kept"), entry(1, 2, "later")]
        );
    }

    #[tokio::test]
    async fn groups_share_one_journal_and_come_back_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = LogEngine::open(JournalConfig::new(dir.path())).expect("open");
        let (mut one, mut two) = (engine.group(1), engine.group(2));
        let vote = convert::vote_from_proto(&pb::Vote {
            term: 3,
            node: 2,
            committed: true,
        });
        one.save_vote(&vote).await.expect("vote");
        append(&mut one, vec![entry(3, 1, "a"), entry(3, 2, "b")]).await;
        append(&mut two, vec![entry(1, 1, "x")]).await;
        append(&mut one, vec![entry(3, 3, "c")]).await;
        one.truncate_after(Some(entry(3, 2, "").log_id))
            .await
            .expect("truncate");
        two.purge(entry(1, 1, "").log_id).await.expect("purge");
        append(&mut two, vec![entry(1, 2, "y")]).await;
        engine.close().expect("close");
        drop((one, two, engine));

        let engine = LogEngine::open(JournalConfig::new(dir.path())).expect("reopen");
        assert_eq!(engine.groups(), [1, 2]);
        let (mut one, mut two) = (engine.group(1), engine.group(2));
        assert_eq!(one.read_vote().await.expect("vote"), Some(vote));
        let entries = one.try_get_log_entries(0..).await.expect("entries");
        assert_eq!(entries, vec![entry(3, 1, "a"), entry(3, 2, "b")]);
        let state = two.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(entry(1, 1, "").log_id));
        assert_eq!(state.last_log_id, Some(entry(1, 2, "").log_id));
        assert_eq!(
            two.try_get_log_entries(0..).await.expect("entries"),
            vec![entry(1, 2, "y")]
        );
    }
}
