//! An unfinished upload in memory: its fixed facts, its durable offset and expiry, and the lock
//! that lets one request at a time write its staging file.
//!
//! A request that finds the lock taken asks the holder to let go (a "takeover"): the holder is
//! usually a PATCH whose phone lost its network and whose body will never finish, and the new
//! request is the phone resuming. The holder stops reading, makes what it received durable and
//! releases the lock; the newcomer then checks the offset as usual.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::Sha256;
use tokio::sync::{Mutex, MutexGuard, watch};

use super::error::RequestError;
use super::id::MediaId;
use crate::clock::now_secs;
use crate::message::Id;
use crate::proto::storage::UploadRecord;

/// State owned by whoever writes the staging file.
#[derive(Debug, Default)]
pub struct Writer {
    /// SHA-256 of exactly the durable bytes `0..offset`, when this process received all of them
    /// (after a restart it is rebuilt by reading the file at completion).
    pub hasher: Option<Sha256>,
}

/// One unfinished upload.
#[derive(Debug)]
pub struct Upload {
    /// Its id.
    pub id: MediaId,
    /// The user who created it.
    pub owner: Id,
    /// `Upload-Length`.
    pub length: u64,
    /// `Upload-Metadata` as sent (echoed on HEAD).
    pub metadata: Box<str>,
    /// Media type from the metadata.
    pub mime: Box<str>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Bytes received and fsynced.
    offset: AtomicU64,
    /// When it expires, seconds since the epoch.
    expires_at: AtomicU64,
    /// Set when it was completed, terminated or expired: a request that waited for the lock
    /// must not touch it any more.
    gone: AtomicBool,
    writer: Mutex<Writer>,
    takeover: watch::Sender<u64>,
}

impl Upload {
    /// The upload `record` describes, with `offset` durable bytes, expiring at `expires_at`
    /// (seconds since the epoch).
    pub fn new(
        id: MediaId,
        record: &UploadRecord,
        offset: u64,
        expires_at: u64,
        hasher: Option<Sha256>,
    ) -> Self {
        Self {
            id,
            owner: Id::from(record.owner.as_str()),
            length: record.length,
            metadata: record.metadata.as_str().into(),
            mime: record.mime_type.as_str().into(),
            created_ms: record.created_ms,
            offset: AtomicU64::new(offset),
            expires_at: AtomicU64::new(expires_at),
            gone: AtomicBool::new(false),
            writer: Mutex::new(Writer { hasher }),
            takeover: watch::Sender::new(0),
        }
    }

    /// Bytes received and fsynced.
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Acquire)
    }

    /// Records a new durable offset (only while holding the writer lock).
    pub fn set_offset(&self, offset: u64) {
        self.offset.store(offset, Ordering::Release);
    }

    /// When it expires, seconds since the epoch.
    pub fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// Pushes the expiry `expiry_secs` past now (after bytes arrived).
    pub fn touch(&self, expiry_secs: u64) {
        self.expires_at
            .store(now_secs() + expiry_secs, Ordering::Relaxed);
    }

    /// True once completed, terminated or expired.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Marks it completed, terminated or expired (only while holding the writer lock).
    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }

    /// Takes the writer lock, asking a current holder to let go, and waiting at most `wait`.
    /// Fails with 404 if the upload went away meanwhile, 423 if the holder did not let go.
    /// Returns the guard and the signal by which a later request asks this holder to let go.
    pub async fn lock(
        &self,
        wait: Duration,
    ) -> Result<(MutexGuard<'_, Writer>, watch::Receiver<u64>), RequestError> {
        let mut takeover = self.takeover.subscribe();
        let guard = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                self.takeover.send_modify(|generation| *generation += 1);
                // Our own request is not one to yield to.
                takeover.borrow_and_update();
                tokio::time::timeout(wait, self.writer.lock())
                    .await
                    .map_err(|_| RequestError::Locked)?
            }
        };
        if self.is_gone() {
            return Err(RequestError::NotFound);
        }
        Ok((guard, takeover))
    }

    /// Takes the writer lock only if nobody holds it (the expiry sweeper never waits).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Writer>> {
        self.writer.try_lock().ok().filter(|_| !self.is_gone())
    }

    /// Waits up to `wait` for a running write to finish, without asking it to stop (HEAD).
    pub async fn settle(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.writer.lock()).await;
    }
}
