//! The journal thread: owns the active segment, group-commits queued appends, releases segments.
//!
//! One loop: block for a command, drain what else is queued (up to `max_batch_records`, or
//! about [`BATCH_BYTES`]), assign lsns in queue order, write the batch with one `write_all`,
//! `sync_data` once, then complete every record in order. A batch that fails completes all of
//! its records with the error and is rolled back (truncated to the last synced length, fsynced);
//! its lsns are handed out again, so the log on disk never skips or repeats one. If the rollback
//! itself fails the segment is abandoned and the next batch starts a fresh segment named after
//! the reused lsn, which recovery treats as superseding the failed tail.
//!
//! Records are written at explicit offsets (the segment's durable length), not appended: with
//! [`JournalConfig::preallocate`] a segment file is allocated whole when created, and its
//! unwritten rest reads as zeros.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::JournalConfig;
use super::error::JournalError;
use super::handoff::{Command, Completion, Shared};
use super::reaper::Reaper;
use super::record;
use super::scan::Span;
use super::segment;
use super::telemetry::Telemetry;

/// A batch stops draining the queue once its payloads reach this many bytes, bounding the
/// joined write buffer (a single larger record is still written whole).
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// One segment file the writer holds.
#[derive(Debug)]
struct Segment {
    first_lsn: u64,
    path: PathBuf,
    /// Bytes of durable records.
    len: u64,
    /// Bytes of a failed batch past `len` that could not be truncated (abandoned segments only).
    stale: u64,
}

/// State of the journal thread.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    /// Allocate each segment whole when it is created.
    preallocate: bool,
    max_batch_records: usize,
    max_disk_bytes: Option<u64>,
    /// Least time between the starts of two fsyncs (see [`JournalConfig::commit_interval_us`]).
    commit_interval: Duration,
    /// When the last fsync began.
    synced_at: Option<Instant>,
    /// Oldest first; the last one is the active segment when `active` is set.
    segments: VecDeque<Segment>,
    /// The last segment, opened for appending; `None` after it was abandoned.
    active: Option<File>,
    /// A rotation failed: no record may go to the old segment until one succeeds, since the new
    /// segment's file may exist and would supersede them at recovery.
    rotation_pending: bool,
    /// The lsn of the next record to be written.
    next_lsn: u64,
    /// Bytes all segment files take.
    disk_bytes: u64,
    batch: Vec<(Bytes, Completion)>,
    buffer: Vec<u8>,
    shared: Arc<Shared>,
    telemetry: Telemetry,
    /// Unlinks released segments off this thread.
    reaper: Reaper,
    /// Held for the thread's lifetime: the directory's lock.
    _lock: File,
}

impl Writer {
    /// Takes over the validated segments, opening the last one (or creating the first).
    pub(crate) fn new(
        config: &JournalConfig,
        spans: Vec<Span>,
        next_lsn: u64,
        lock: File,
        shared: Arc<Shared>,
    ) -> Result<Self, JournalError> {
        let mut segments: VecDeque<Segment> = spans
            .into_iter()
            .map(|span| Segment {
                first_lsn: span.first_lsn,
                path: span.path,
                len: span.len,
                stale: 0,
            })
            .collect();
        let active = match segments.back() {
            Some(last) => segment::open_for_writing(&last.path)?,
            None => {
                let (file, path) = segment::create(&config.dir, next_lsn)?;
                segments.push_back(Segment {
                    first_lsn: next_lsn,
                    path,
                    len: 0,
                    stale: 0,
                });
                file
            }
        };
        if config.preallocate
            && let Some(last) = segments.back()
            && last.len < config.segment_bytes
        {
            segment::allocate(&active, &last.path, config.segment_bytes);
        }
        let writer = Writer {
            dir: config.dir.clone(),
            segment_bytes: config.segment_bytes,
            preallocate: config.preallocate,
            max_batch_records: config.max_batch_records,
            max_disk_bytes: config.max_disk_bytes,
            commit_interval: Duration::from_micros(config.commit_interval_us),
            synced_at: None,
            disk_bytes: segments.iter().map(|segment| segment.len).sum(),
            segments,
            active: Some(active),
            rotation_pending: false,
            next_lsn,
            batch: Vec::new(),
            buffer: Vec::new(),
            shared,
            telemetry: Telemetry::new(),
            reaper: Reaper::open(&config.dir)?,
            _lock: lock,
        };
        writer
            .telemetry
            .segments
            .increment(writer.segments.len() as f64);
        writer.publish();
        writer.shared.healthy.store(true, Ordering::SeqCst);
        Ok(writer)
    }

    /// Serves commands until every sender is gone and the queue is empty, or a close is asked
    /// for (what was queued before it is written first; what comes after is dropped, its
    /// completions with it).
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut closing = false;
        while !closing {
            let Ok(command) = commands.recv() else { break };
            let mut batch_bytes = 0;
            closing = self.take(command, &mut batch_bytes);
            if !closing && !self.batch.is_empty() {
                self.gather();
            }
            while !closing && self.batch.len() < self.max_batch_records && batch_bytes < BATCH_BYTES
            {
                match commands.try_recv() {
                    Ok(command) => closing = self.take(command, &mut batch_bytes),
                    Err(_) => break,
                }
            }
            if !self.batch.is_empty() {
                self.commit();
            }
            self.release();
        }
        self.telemetry
            .segments
            .decrement(self.segments.len() as f64);
        self.reaper.finish();
    }

    /// Waits out the rest of the commit interval when the last fsync began less than one
    /// interval ago. It sleeps rather than waits on the queue: appends queued meanwhile do not
    /// wake the thread, they are drained when it wakes.
    fn gather(&self) {
        let Some(synced_at) = self.synced_at else {
            return;
        };
        if let Some(rest) = self.commit_interval.checked_sub(synced_at.elapsed())
            && !rest.is_zero()
        {
            std::thread::sleep(rest);
        }
    }

    /// Adds an append to the batch, counting its payload bytes; true for a close.
    fn take(&mut self, command: Command, batch_bytes: &mut u64) -> bool {
        match command {
            Command::Append { payload, done } => {
                *batch_bytes += payload.len() as u64;
                self.batch.push((payload, done));
                false
            }
            Command::Wake => false,
            Command::Close => true,
            #[cfg(debug_assertions)]
            Command::Crash => panic!("journal thread crashed on request"),
        }
    }

    /// Writes and syncs the batch (the part that fits the quota) and completes every record.
    fn commit(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        let (fit, bytes) = self.fitting(&batch);
        let mut outcome = Ok(());
        if fit > 0 {
            outcome = self.write_batch(&batch[..fit], bytes);
        }
        // Flags first, so that whoever sees a completion also sees the state that produced it.
        let refused = batch.len() - fit;
        match &outcome {
            Ok(()) if refused == 0 => self.shared.healthy.store(true, Ordering::SeqCst),
            Ok(()) => {
                tracing::warn!(
                    refused,
                    disk_bytes = self.disk_bytes,
                    "journal: disk quota reached"
                );
                self.count_failure();
            }
            Err(error) => {
                tracing::error!(%error, records = batch.len(), "journal: batch failed");
                self.count_failure();
            }
        }
        match outcome {
            Ok(()) => {
                let first_lsn = self.next_lsn - fit as u64;
                for (index, (_, done)) in batch.drain(..).enumerate() {
                    let result = if index < fit {
                        Ok(first_lsn + index as u64)
                    } else {
                        Err(JournalError::DiskFull)
                    };
                    done.complete(result, &self.shared);
                }
            }
            Err(error) => {
                for (_, done) in batch.drain(..) {
                    done.complete(Err(error.clone()), &self.shared);
                }
            }
        }
        // Hand the (now empty) vector back so its capacity is reused.
        self.batch = batch;
        if self.buffer.capacity() as u64 > 2 * BATCH_BYTES {
            self.buffer = Vec::new();
        }
    }

    /// How many leading records of `batch` fit the disk quota, and their encoded bytes.
    fn fitting(&self, batch: &[(Bytes, Completion)]) -> (usize, u64) {
        let mut bytes = 0;
        for (count, (payload, _)) in batch.iter().enumerate() {
            let len = record::encoded_len(payload.len());
            if self
                .max_disk_bytes
                .is_some_and(|quota| self.disk_bytes + bytes + len > quota)
            {
                return (count, bytes);
            }
            bytes += len;
        }
        (batch.len(), bytes)
    }

    /// Makes `records` durable with one write and one fsync, advancing `next_lsn`; on failure
    /// nothing of them counts and the segment is rolled back.
    fn write_batch(
        &mut self,
        records: &[(Bytes, Completion)],
        bytes: u64,
    ) -> Result<(), JournalError> {
        self.prepare_segment(bytes)?;
        self.buffer.clear();
        for (lsn, (payload, _)) in (self.next_lsn..).zip(records) {
            record::encode(&mut self.buffer, lsn, payload);
        }
        let (file, path, offset) = match (&mut self.active, self.segments.back()) {
            (Some(file), Some(segment)) => (file, segment.path.clone(), segment.len),
            _ => return Err(JournalError::Closed),
        };
        let written = write_all(file, &self.buffer, offset, &self.shared).and_then(|()| {
            let started = Instant::now();
            self.synced_at = Some(started);
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            let synced = sync_data(file, &self.shared);
            self.telemetry.fsync_seconds.record(started.elapsed());
            synced
        });
        if let Err(error) = written {
            self.roll_back();
            return Err(JournalError::io(path, error));
        }
        if let Some(segment) = self.segments.back_mut() {
            segment.len += bytes;
        }
        self.disk_bytes += bytes;
        self.next_lsn += records.len() as u64;
        self.telemetry.batch_records.record(records.len() as f64);
        self.telemetry.bytes_written.increment(bytes);
        self.publish();
        Ok(())
    }

    /// Ensures there is an active segment with room for `bytes` more (rotating when a non-empty
    /// segment would pass `segment_bytes`).
    fn prepare_segment(&mut self, bytes: u64) -> Result<(), JournalError> {
        let full = self
            .segments
            .back()
            .is_some_and(|last| last.len > 0 && last.len + bytes > self.segment_bytes);
        if self.active.is_none() || full || self.rotation_pending {
            self.rotation_pending = self.active.is_some();
            let (file, path) = segment::create(&self.dir, self.next_lsn)?;
            if self.preallocate {
                segment::allocate(&file, &path, self.segment_bytes);
            }
            self.rotation_pending = false;
            self.active = Some(file);
            self.segments.push_back(Segment {
                first_lsn: self.next_lsn,
                path,
                len: 0,
                stale: 0,
            });
            self.telemetry.segments.increment(1.0);
            self.publish();
        }
        Ok(())
    }

    /// Cuts the active segment back to its durable length; abandons it if that fails.
    fn roll_back(&mut self) {
        let (Some(file), Some(segment)) = (&self.active, self.segments.back_mut()) else {
            return;
        };
        let cut = truncate(file, segment.len, &self.shared);
        let Err(error) = cut else {
            if self.preallocate {
                segment::allocate(file, &segment.path, self.segment_bytes);
            }
            return;
        };
        tracing::error!(segment = %segment.path.display(), %error,
            "journal: cannot truncate failed batch; abandoning segment");
        let on_disk = file
            .metadata()
            .map_or(segment.len + self.buffer.len() as u64, |meta| meta.len());
        self.active = None;
        if segment.len == 0 {
            // Nothing durable in it: remove it; a fresh file of the same name replaces it.
            let path = segment.path.clone();
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), %error, "journal: cannot remove segment");
            }
            self.segments.pop_back();
            self.telemetry.segments.decrement(1.0);
        } else {
            segment.stale = on_disk.saturating_sub(segment.len);
            self.disk_bytes += segment.stale;
        }
        self.publish();
    }

    /// Retires, oldest first, every segment (never the last) whose records are all released;
    /// the reaper unlinks them.
    fn release(&mut self) {
        let up_to = self.shared.release_up_to.load(Ordering::SeqCst);
        while self.segments.len() > 1
            && self
                .segments
                .get(1)
                .is_some_and(|next| next.first_lsn <= up_to.saturating_add(1))
        {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            // A rename made durable here; the unlink, which can take tens of milliseconds for
            // a full segment, happens on the reaper's thread.
            if let Err(error) = self.reaper.retire(&self.dir, &oldest.path) {
                tracing::warn!(segment = %oldest.path.display(), %error,
                    "journal: cannot retire released segment; will retry");
                break;
            }
            if let Some(oldest) = self.segments.pop_front() {
                self.disk_bytes = self.disk_bytes.saturating_sub(oldest.len + oldest.stale);
                self.telemetry.segments.decrement(1.0);
            }
            self.publish();
        }
    }

    fn count_failure(&self) {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        self.shared.healthy.store(false, Ordering::SeqCst);
        self.telemetry.failures.increment(1);
    }

    /// Publishes the writer's figures for [`super::Journal::stats`].
    fn publish(&self) {
        let shared = &self.shared;
        shared
            .durable_lsn
            .store(self.next_lsn.saturating_sub(1), Ordering::SeqCst);
        shared
            .segments
            .store(self.segments.len() as u64, Ordering::SeqCst);
        shared.disk_bytes.store(self.disk_bytes, Ordering::SeqCst);
    }
}

/// Writes `buffer` to the segment at `offset` (tests may make it fail halfway).
fn write_all(file: &File, buffer: &[u8], offset: u64, shared: &Shared) -> io::Result<()> {
    #[cfg(test)]
    if super::handoff::Faults::take(&shared.faults.writes) {
        file.write_all_at(&buffer[..buffer.len() / 2], offset)?;
        return Err(io::Error::other("injected write failure"));
    }
    let _ = shared;
    file.write_all_at(buffer, offset)
}

/// Makes the segment's data durable (tests may make it fail).
fn sync_data(file: &File, shared: &Shared) -> io::Result<()> {
    #[cfg(test)]
    if super::handoff::Faults::take(&shared.faults.syncs) {
        return Err(io::Error::other("injected fsync failure"));
    }
    let _ = shared;
    file.sync_data()
}

/// Cuts the segment to `len` bytes and syncs the cut, so a failed batch cannot reappear.
fn truncate(file: &File, len: u64, shared: &Shared) -> io::Result<()> {
    #[cfg(test)]
    if super::handoff::Faults::take(&shared.faults.truncates) {
        return Err(io::Error::other("injected truncate failure"));
    }
    let _ = shared;
    file.set_len(len)?;
    file.sync_data()
}
