//! The metadata group's log and vote in one append-only file, `cluster/raft.log`.
//!
//! Records are `len: u32 LE | crc32c(proto): u32 LE | LogRecord proto`. Every append, vote,
//! truncation and purge is written and fsynced before openraft hears it is done; on open the
//! file is replayed and a torn or corrupt tail is cut. When the purged prefix outgrows the live
//! entries the file is rewritten (temp file, fsync, rename, directory fsync). The map changes
//! rarely (a few small records per membership or map change), so each write is synchronous, run
//! with `fsync::off_the_runtime` so that a slow disk holds up only the metadata group.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};
use prost::Message;

use super::MetaTypes;
use super::convert::{self, MetaEntry};
use super::image::{LogImage, record};
use crate::cluster::map::MapCommand;
use crate::fsync;
use crate::proto::mesh as pb;

/// The log file's name under the cluster directory.
pub const LOG_FILE: &str = "raft.log";

/// Dead records (purged or truncated entries, superseded votes) tolerated before a rewrite.
const REWRITE_AFTER_DEAD_RECORDS: usize = 1024;

/// A record larger than this is treated as corruption on replay.
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Opening the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// Creating, reading or cutting the file failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The in-memory image of the file plus its append handle.
struct Inner {
    dir: PathBuf,
    file: File,
    image: LogImage<MapCommand>,
}

/// openraft's log storage (and, cloned, its log reader) over `cluster/raft.log`.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl LogStore {
    /// Opens (or creates) `dir/raft.log`, replaying it and cutting a torn tail.
    pub fn open(dir: &Path) -> Result<LogStore, LogStoreError> {
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| LogStoreError::Io { path, source }
        };
        fsync::create_dir_durably(dir).map_err(failed(dir))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(failed(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(failed(&path))?;
        let mut inner = Inner {
            dir: dir.to_owned(),
            file,
            image: LogImage::default(),
        };
        let valid = inner.replay(&bytes);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, len = bytes.len(), "cutting a torn raft log tail");
            inner.file.set_len(valid as u64).map_err(failed(&path))?;
            inner.file.sync_all().map_err(failed(&path))?;
        }
        fsync::sync_dir(dir).map_err(failed(dir))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the image half-updated in a way replay
        // would not, so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Applies every whole, intact record of `bytes`; returns the length of that valid prefix.
    fn replay(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while let Some(header) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD_BYTES {
                break;
            }
            let Some(body) = bytes.get(at + 8..at + 8 + len) else {
                break;
            };
            if crc32c::crc32c(body) != crc {
                break;
            }
            let Ok(record) = pb::LogRecord::decode(body) else {
                break;
            };
            if self.apply(record).is_err() {
                break;
            }
            at += 8 + len;
        }
        at
    }

    /// Applies one record to the in-memory image.
    fn apply(&mut self, record: pb::LogRecord) -> Result<(), io::Error> {
        self.image.apply(record, convert::entry_from_proto)
    }

    /// Appends records to the file and fsyncs it, then applies them to the image.
    fn write(&mut self, records: Vec<pb::LogRecord>) -> io::Result<()> {
        self.write_with(records, true)
    }

    /// Appends records, fsyncing only when `sync`; an unsynced record becomes durable with the
    /// next synced one (the file is append-only, so order is kept).
    fn write_with(&mut self, records: Vec<pb::LogRecord>, sync: bool) -> io::Result<()> {
        let mut buffer = Vec::new();
        for record in &records {
            encode_record(record, &mut buffer);
        }
        self.file.write_all(&buffer)?;
        if sync {
            self.file.sync_data()?;
        }
        for record in records {
            self.apply(record)?;
        }
        let image = &self.image;
        if image.dead_records > REWRITE_AFTER_DEAD_RECORDS
            && image.dead_records > image.entries.len()
        {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the file with one holding only live state (temp file, fsync, rename, dir fsync).
    fn rewrite(&mut self) -> io::Result<()> {
        let records = self.image.live_records(convert::entry_to_proto);
        let mut buffer = Vec::new();
        for record in records {
            encode_record(
                &pb::LogRecord {
                    record: Some(record),
                },
                &mut buffer,
            );
        }
        let temp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let path = self.dir.join(LOG_FILE);
        {
            let mut file = File::create(&temp)?;
            file.write_all(&buffer)?;
            file.sync_all()?;
        }
        fs::rename(&temp, &path)?;
        fsync::sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.image.dead_records = 0;
        Ok(())
    }
}

fn encode_record(record: &pb::LogRecord, buffer: &mut Vec<u8>) {
    let body = record.encode_to_vec();
    buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    buffer.extend_from_slice(&body);
}

impl RaftLogReader<MetaTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, io::Error> {
        let inner = self.lock();
        Ok(inner
            .image
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<MetaTypes>>, io::Error> {
        Ok(self.lock().image.vote)
    }
}

impl RaftLogStorage<MetaTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<MetaTypes>, io::Error> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.image.purged,
            last_log_id: inner.image.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<MetaTypes>) -> Result<(), io::Error> {
        use pb::log_record::Record;
        let vote = record(Record::Vote(convert::vote_to_proto(vote)));
        fsync::off_the_runtime(|| self.lock().write(vec![vote]))
    }

    // The committed id need not be durable (openraft re-learns it from the leader): it is written
    // unsynced and rides on the next fsync.
    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<MetaTypes>>,
    ) -> Result<(), io::Error> {
        use pb::log_record::Record;
        match committed {
            Some(log_id) => {
                let committed = record(Record::Committed(convert::log_id_to_proto(&log_id)));
                self.lock().write_with(vec![committed], false)
            }
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<MetaTypes>>, io::Error> {
        Ok(self.lock().image.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<MetaTypes>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        use pb::log_record::Record;
        let records = entries
            .into_iter()
            .map(|entry| record(Record::Entry(convert::entry_to_proto(&entry))))
            .collect();
        let result = fsync::off_the_runtime(|| self.lock().write(records));
        let reply = match &result {
            Ok(()) => Ok(()),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        };
        callback.io_completed(reply);
        result
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<MetaTypes>>,
    ) -> Result<(), io::Error> {
        use pb::log_record::Record;
        let truncate = record(Record::Truncate(pb::TruncateAfter {
            after: last_log_id.as_ref().map(convert::log_id_to_proto),
        }));
        fsync::off_the_runtime(|| self.lock().write(vec![truncate]))
    }

    async fn purge(&mut self, log_id: LogIdOf<MetaTypes>) -> Result<(), io::Error> {
        use pb::log_record::Record;
        let purge = record(Record::Purge(convert::log_id_to_proto(&log_id)));
        fsync::off_the_runtime(|| self.lock().write(vec![purge]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::IOFlushed;
    use openraft::{EntryPayload, RaftLogReader};

    fn entry(term: u64, index: u64) -> MetaEntry {
        MetaEntry {
            log_id: convert::log_id_from_proto(&pb::LogId {
                term,
                node: 1,
                index,
            }),
            payload: EntryPayload::Blank,
        }
    }

    async fn append(store: &mut LogStore, entries: Vec<MetaEntry>) {
        store
            .append(entries, IOFlushed::<MetaTypes>::noop())
            .await
            .expect("append");
    }

    #[tokio::test]
    async fn vote_and_entries_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut store = LogStore::open(dir.path()).expect("opens");
            append(&mut store, (1..=5).map(|index| entry(1, index)).collect()).await;
            let vote = convert::vote_from_proto(&pb::Vote {
                term: 3,
                node: 2,
                committed: false,
            });
            store.save_vote(&vote).await.expect("vote");
            store
                .truncate_after(Some(entry(1, 4).log_id))
                .await
                .expect("truncate");
            store.purge(entry(1, 2).log_id).await.expect("purge");
        }
        let mut store = LogStore::open(dir.path()).expect("reopens");
        let vote = store.read_vote().await.expect("reads vote");
        assert_eq!(
            vote.map(|vote| (vote.leader_id.term, vote.leader_id.node_id)),
            Some((3, 2))
        );
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(entry(1, 2).log_id));
        assert_eq!(state.last_log_id, Some(entry(1, 4).log_id));
        let entries = store.try_get_log_entries(0..100).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4]);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut store = LogStore::open(dir.path()).expect("opens");
            append(&mut store, (1..=3).map(|index| entry(1, index)).collect()).await;
        }
        let path = dir.path().join(LOG_FILE);
        let whole = fs::read(&path).expect("reads");
        // A half-written fourth record: its header promises more than is there.
        let mut torn = whole.clone();
        let mut record_bytes = Vec::new();
        encode_record(
            &record(pb::log_record::Record::Entry(convert::entry_to_proto(
                &entry(1, 4),
            ))),
            &mut record_bytes,
        );
        torn.extend_from_slice(&record_bytes[..record_bytes.len() - 3]);
        fs::write(&path, &torn).expect("writes");
        {
            let mut store = LogStore::open(dir.path()).expect("reopens");
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id, Some(entry(1, 3).log_id));
            // The cut file takes new appends cleanly.
            append(&mut store, vec![entry(2, 4)]).await;
        }
        assert_eq!(
            fs::metadata(&path).expect("stat").len() as usize,
            whole.len() + record_bytes.len()
        );
        let mut store = LogStore::open(dir.path()).expect("reopens again");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(entry(2, 4).log_id));

        // A flipped bit in the last record fails its checksum: that record is cut too.
        let mut corrupt = fs::read(&path).expect("reads");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        fs::write(&path, &corrupt).expect("writes");
        let mut store = LogStore::open(dir.path()).expect("reopens corrupt");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(entry(1, 3).log_id));
    }

    #[tokio::test]
    async fn purging_past_the_threshold_rewrites_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = (REWRITE_AFTER_DEAD_RECORDS as u64) + 100;
        {
            let mut store = LogStore::open(dir.path()).expect("opens");
            for index in 1..=count {
                append(&mut store, vec![entry(1, index)]).await;
            }
            let before = fs::metadata(dir.path().join(LOG_FILE)).expect("stat").len();
            store
                .purge(entry(1, count - 10).log_id)
                .await
                .expect("purge");
            let after = fs::metadata(dir.path().join(LOG_FILE)).expect("stat").len();
            assert!(after < before / 10, "rewritten: {before} -> {after} bytes");
        }
        let mut store = LogStore::open(dir.path()).expect("reopens");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(entry(1, count - 10).log_id));
        assert_eq!(state.last_log_id, Some(entry(1, count).log_id));
        assert_eq!(
            store
                .try_get_log_entries(0..u64::MAX)
                .await
                .expect("entries")
                .len(),
            10
        );
    }
}
