//! The durable outbound queue to one datacenter: a journal of its own (group-committed,
//! fsynced, CRC-checked; `crate::journal`) whose lsns are the link's sequence numbers, and the
//! records not yet acknowledged by the far side held in memory, in order, for sending.
//!
//! A record is queued (and its sender acked) only after the fsync that covers it, and leaves
//! the queue only when the far side says it is stored there. After a crash the journal's
//! segments still hold every record that was not released; the far side's `Resume` answer
//! then says which of them it already has.
//!
//! Bounded: past `max_bytes` (queued plus being written), enqueues are refused and the sender
//! retries later; the records already queued are never dropped.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{Notify, oneshot};

use super::telemetry::QueueTelemetry;
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::proto::wan as pb;

/// Why a record was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds its maximum: the link is down or slow.
    #[error("the queue to {0} is full")]
    Full(String),
    /// The journal could not make it durable (disk full, I/O error, closed).
    #[error("the queue's journal: {0}")]
    Journal(#[from] JournalError),
    /// A queued record could not be decoded at recovery.
    #[error("record {seq} of the queue in {dir} is not a WanRecord")]
    Malformed {
        /// The record's sequence number.
        seq: u64,
        /// The queue's directory.
        dir: PathBuf,
    },
}

/// One queued record.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Its sequence number on the link.
    pub seq: u64,
    /// The encoded `WanRecord`.
    pub payload: Bytes,
    /// When it was queued (ms since the epoch).
    pub queued_at_ms: u64,
}

#[derive(Default)]
struct State {
    records: VecDeque<Queued>,
    /// Bytes of `records`.
    bytes: u64,
    /// Bytes of appends the journal has not completed yet.
    pending: u64,
}

/// The queue to one datacenter.
pub struct Queue {
    datacenter: String,
    /// Where the last confirmation is written (no fsync: it only spares resends).
    acked_file: PathBuf,
    id: u64,
    journal: Journal,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    max_bytes: u64,
    telemetry: Arc<QueueTelemetry>,
}

impl Queue {
    /// Opens (or creates) the queue to `datacenter` in `dir` and loads every record still in
    /// its journal. Blocks on disk I/O: call it before serving, or on a blocking thread.
    pub fn open(dir: PathBuf, datacenter: &str, max_bytes: u64) -> Result<Queue, QueueError> {
        let id =
            queue_id(&dir).map_err(|error| QueueError::Journal(JournalError::io(&dir, error)))?;
        let mut config = JournalConfig::new(dir.clone());
        config.segment_bytes = (max_bytes / 8).clamp(1 << 20, 64 << 20);
        let (journal, recovery) = Journal::open(config)?;
        let mut state = State::default();
        // Records the far side confirmed before the restart may still be in the journal's
        // oldest segment: the last confirmation written leaves them out (a stale or missing one
        // only brings back records the far side then skips).
        let confirmed = std::fs::read_to_string(dir.join(ACKED_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        for record in recovery.records_after(recovery.oldest_lsn().saturating_sub(1))? {
            let (seq, payload) = record?;
            if seq <= confirmed {
                continue;
            }
            let decoded =
                pb::WanRecord::decode(payload.clone()).map_err(|_| QueueError::Malformed {
                    seq,
                    dir: dir.clone(),
                })?;
            state.bytes += payload.len() as u64;
            state.records.push_back(Queued {
                seq,
                payload,
                queued_at_ms: decoded.queued_at_ms,
            });
        }
        let telemetry = Arc::new(QueueTelemetry::new(datacenter));
        let queue = Queue {
            datacenter: datacenter.to_owned(),
            acked_file: dir.join(ACKED_FILE),
            id,
            journal,
            state: Arc::new(Mutex::new(state)),
            changed: Arc::new(Notify::new()),
            max_bytes,
            telemetry,
        };
        queue.report(&queue.lock());
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self, state: &State) {
        self.telemetry.report(
            state.records.len(),
            state.bytes,
            state.records.front().map(|r| r.queued_at_ms),
        );
    }

    /// Queues `record` (stamped with the time now); resolves to its sequence number once it is
    /// durable.
    pub fn enqueue(
        &self,
        mut record: pb::WanRecord,
    ) -> Result<oneshot::Receiver<Result<u64, QueueError>>, QueueError> {
        record.queued_at_ms = crate::clock::now_ms();
        let payload = Bytes::from(record.encode_to_vec());
        let size = payload.len() as u64;
        {
            let mut state = self.lock();
            if state.bytes + state.pending + size > self.max_bytes {
                self.telemetry.refused_full.increment(1);
                return Err(QueueError::Full(self.datacenter.clone()));
            }
            state.pending += size;
        }
        let (reply, answer) = oneshot::channel();
        let (state, changed, telemetry) = (
            self.state.clone(),
            self.changed.clone(),
            self.telemetry.clone(),
        );
        let queued_at_ms = record.queued_at_ms;
        let kept = payload.clone();
        let done = move |result: Result<u64, JournalError>| {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.pending -= size;
            if let Ok(seq) = result {
                // Completions come in lsn order: the queue stays sorted.
                state.bytes += size;
                state.records.push_back(Queued {
                    seq,
                    payload: kept,
                    queued_at_ms,
                });
                telemetry.report(
                    state.records.len(),
                    state.bytes,
                    state.records.front().map(|r| r.queued_at_ms),
                );
            }
            drop(state);
            changed.notify_one();
            let _ = reply.send(result.map_err(QueueError::Journal));
        };
        if let Err(error) = self.journal.append_with(payload, done) {
            self.lock().pending -= size;
            return Err(error.into());
        }
        Ok(answer)
    }

    /// Up to `max` records after `after`, in order.
    pub fn after(&self, after: u64, max: usize) -> Vec<Queued> {
        let state = self.lock();
        let start = state.records.partition_point(|record| record.seq <= after);
        state.records.range(start..).take(max).cloned().collect()
    }

    /// The far side has every record up to `applied`: drops them, and lets the journal delete
    /// the segments that held only those. Returns how many were dropped.
    pub fn acked(&self, applied: u64) -> u64 {
        let mut state = self.lock();
        let mut dropped = 0;
        while state.records.front().is_some_and(|r| r.seq <= applied) {
            if let Some(record) = state.records.pop_front() {
                state.bytes -= record.payload.len() as u64;
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.report(&state);
        }
        drop(state);
        if dropped > 0
            && let Err(error) = std::fs::write(&self.acked_file, format!("{applied}\n"))
        {
            tracing::debug!(file = %self.acked_file.display(), %error, "WAN queue mark not written");
        }
        self.journal.release(applied);
        dropped
    }

    /// Reports the age of the oldest record (it grows while nothing is queued or sent).
    pub fn report_age(&self) {
        let oldest = self.lock().records.front().map(|r| r.queued_at_ms);
        self.telemetry.age(oldest);
    }

    /// Resolves when a record was queued since the last call (or one is queued already).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records queued and their bytes.
    pub fn depth(&self) -> (usize, u64) {
        let state = self.lock();
        (state.records.len(), state.bytes)
    }

    /// The queue's identity: drawn at random when it was created, kept in its directory.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The queue's datacenter.
    pub fn datacenter(&self) -> &str {
        &self.datacenter
    }

    /// Writes and fsyncs what is being written, then stops the journal.
    pub fn close(&self) {
        if let Err(error) = self.journal.close() {
            tracing::warn!(datacenter = %self.datacenter, %error, "closing a WAN queue failed");
        }
    }
}

/// The file holding the last sequence number the far side confirmed.
const ACKED_FILE: &str = "ACKED";

/// The identity of the queue in `dir` (`dir/QUEUE_ID`), drawn and written durably first if
/// there is none.
fn queue_id(dir: &std::path::Path) -> std::io::Result<u64> {
    const FILE: &str = "QUEUE_ID";
    let path = dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = u64::from_str_radix(text.trim(), 16)
    {
        return Ok(id);
    }
    crate::fsync::create_dir_durably(dir)?;
    let id = getrandom::u64().map_err(std::io::Error::other)?.max(1);
    let staged = dir.join("QUEUE_ID.new");
    let mut file = std::fs::File::create(&staged)?;
    std::io::Write::write_all(&mut file, format!("{id:016x}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staged, &path)?;
    crate::fsync::sync_dir(dir)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> pb::WanRecord {
        pb::WanRecord {
            record: Some(pb::wan_record::Record::Append(
                crate::proto::mesh::AppendCall {
                    owner: text.to_owned(),
                    ..Default::default()
                },
            )),
            queued_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_until_acked_and_the_queue_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("east");
        {
            let queue = Queue::open(path.clone(), "east", 1 << 20).expect("opens");
            for i in 0..10 {
                let seq = queue
                    .enqueue(record(&format!("user-{i}")))
                    .expect("queued")
                    .await
                    .expect("answered")
                    .expect("durable");
                assert_eq!(seq, i + 1);
            }
            queue.acked(4);
            assert_eq!(queue.depth().0, 6);
            assert_eq!(queue.after(7, 10).len(), 3);
            queue.close();
        }
        let id = std::fs::read_to_string(path.join("QUEUE_ID")).expect("id");
        let queue = Queue::open(path.clone(), "east", 1 << 20).expect("reopens");
        assert_eq!(format!("{:016x}\n", queue.id()), id);
        // The confirmed ones stay out, although their segment is still on disk.
        assert_eq!(queue.depth().0, 6);
        let kept = queue.after(0, 100);
        assert_eq!(kept.len(), 6);
        assert_eq!(kept[0].seq, 5);
        let first = pb::WanRecord::decode(kept[0].payload.clone()).expect("decodes");
        assert!(first.queued_at_ms > 0);
        let seq = queue
            .enqueue(record("next"))
            .expect("queued")
            .await
            .expect("answered")
            .expect("durable");
        assert_eq!(seq, 11);
        let big = pb::WanRecord {
            record: Some(pb::wan_record::Record::Append(
                crate::proto::mesh::AppendCall {
                    owner: "x".repeat(2 << 20),
                    ..Default::default()
                },
            )),
            queued_at_ms: 0,
        };
        assert!(matches!(queue.enqueue(big), Err(QueueError::Full(_))));
    }
}
