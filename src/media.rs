//! The media server: photos, voice notes and videos uploaded out of band over HTTP with the tus
//! 1.0 resumable-upload protocol, stored once per distinct content (SHA-256), downloaded with
//! ranges and ETags, and referenced from chat messages by id (docs/media.md).
//!
//! Ownership:
//! ```text
//! Server ─▶ media HTTP server (task, http.rs) ──spawns──▶ one task per connection (≤ max_connections)
//!        └─▶ expiry sweeper (task, expiry.rs)
//! Media (one per node, shared through Node):
//!   Catalog       memory: finished media, unfinished uploads, usage per user (non-blocking reads)
//!   Index         sled under data_dir/media/index: the records the catalog is loaded from
//!   ContentStore  files under data_dir/media/objects, one per distinct SHA-256, reference counted
//!   HotCache      popular small objects in memory
//! ```
//! Each unfinished upload has a writer lock ([`upload::Upload`]): PATCH, completion,
//! termination and expiry of an upload run one at a time. sled and file-system calls run in
//! `spawn_blocking`, never on the async workers.
//!
//! Invariants: an upload's offset is the fsynced size of its staging file, and is reported only
//! after the fsync; a finished upload is downloadable as soon as its last PATCH is answered; an
//! object file is deleted only with its last reference; media bytes never enter sled.

mod auth;
mod catalog;
mod content;
mod create;
mod download;
mod error;
pub mod expiry;
mod file_body;
mod head;
mod hot_cache;
pub mod http;
mod id;
mod index;
mod layout;
mod patch;
mod range;
mod routes;
mod share;
mod staging;
mod telemetry;
mod terminate;
mod tus;
mod upload;

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use sha2::{Digest as _, Sha256};

use crate::clock::{now_ms, now_secs};
use crate::config::{Config, MediaSection};
use crate::message::Id;
use crate::proto::storage::{MediaRecord, UploadRecord};
use catalog::{Catalog, MediaMeta};
use content::{Commit, ContentStore, Release, hash_file};
use error::{RequestError, blocking};
use hot_cache::HotCache;
pub use id::MediaId;
use index::{Index, IndexError};
use layout::{Layout, remove_file_if_present, sync_dir};
pub use share::ShareRefusal;
use staging::Ended;
use telemetry::Telemetry;
use upload::Upload;

/// How long a PATCH or DELETE waits for another request on the same upload to let go.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How long a HEAD waits for a running PATCH to make its bytes durable before answering.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Why the media server could not open its data.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A media directory or file could not be read or written.
    #[error("media data {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The index could not be opened or read.
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The media service of one node.
#[derive(Debug)]
pub struct Media {
    config: MediaSection,
    layout: Layout,
    index: Index,
    catalog: Catalog,
    content: ContentStore,
    hot: HotCache,
    telemetry: Telemetry,
}

/// What a write to an upload achieved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// The upload's offset after the write.
    pub offset: u64,
    /// The upload is finished (now downloadable).
    pub complete: bool,
}

impl Media {
    /// Opens the media data under `node.data_dir/media`: loads the index, makes every staging
    /// file durable at its current size, finishes uploads that were complete when the node
    /// stopped, and deletes files no record names. Blocks on disk I/O.
    pub fn open(config: &Config) -> Result<Arc<Self>, OpenError> {
        let layout = Layout::new(&config.node.data_dir);
        layout.create().map_err(io_error(&layout.root))?;
        let index = Index::open(&layout.index, config.media.index_cache_bytes)?;
        let contents = index.load()?;
        let content = ContentStore::new(layout.clone(), contents.objects.into_iter().collect());
        let telemetry = Telemetry::new();
        let (objects, stored) = content.totals();
        telemetry.objects.increment(objects as f64);
        telemetry.stored_bytes.increment(stored as f64);
        let catalog = Catalog::default();
        for (id, record) in contents.media {
            let Ok(sha256) = record.sha256.as_ref().try_into() else {
                tracing::warn!(%id, "media record without a valid hash; skipped");
                continue;
            };
            catalog.load_media(
                id,
                MediaMeta {
                    owner: Id::from(record.owner.as_str()),
                    size: record.size,
                    mime: record.mime_type.as_str().into(),
                    sha256,
                    created_ms: record.created_ms,
                },
            );
        }
        let media = Arc::new(Self {
            hot: HotCache::new(
                config.media.hot_cache_bytes,
                config.media.hot_cache_max_object_bytes,
            ),
            config: config.media.clone(),
            layout,
            index,
            catalog,
            content,
            telemetry,
        });
        let mut finished = Vec::new();
        for (id, record) in contents.uploads {
            if let Some(upload) = media.reopen_upload(id, &record)?
                && upload.offset() == upload.length
            {
                finished.push(upload);
            }
        }
        for upload in finished {
            // Its last PATCH was fsynced but not answered: finish it now so HEAD and GET agree.
            if let Err(error) = media.complete_blocking(&upload, None) {
                tracing::warn!(%error, id = %upload.id, "cannot finish an upload at start");
            }
        }
        media.remove_strays()?;
        Ok(media)
    }

    /// Reopens an unfinished upload at start; `None` (and its record dropped) if its staging
    /// file is gone.
    fn reopen_upload(
        &self,
        id: MediaId,
        record: &UploadRecord,
    ) -> Result<Option<Arc<Upload>>, OpenError> {
        let path = self.layout.staging_file(&id);
        let file = match fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(%id, "unfinished upload without a staging file; forgotten");
                self.index.remove_upload(&id)?;
                return Ok(None);
            }
            Err(error) => return Err(io_error(&path)(error)),
        };
        let metadata = file.metadata().map_err(io_error(&path))?;
        if metadata.len() > record.length {
            file.set_len(record.length).map_err(io_error(&path))?;
        }
        // Bytes written but not fsynced before a crash become durable before they are reported.
        file.sync_all().map_err(io_error(&path))?;
        let offset = metadata.len().min(record.length);
        let last_write = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_secs, |since| since.as_secs());
        let upload = Arc::new(Upload::new(
            id,
            record,
            offset,
            last_write + self.config.upload_expiry_secs,
            None,
        ));
        self.catalog.load_upload(upload.clone());
        self.telemetry.uploads_unfinished.increment(1.0);
        Ok(Some(upload))
    }

    /// Deletes staging files of no unfinished upload and objects of no record (a crash between
    /// a file operation and its index write leaves them).
    fn remove_strays(&self) -> Result<(), OpenError> {
        let staging = &self.layout.staging;
        let known: HashSet<MediaId> = self.catalog.uploads().iter().map(|u| u.id).collect();
        for entry in fs::read_dir(staging).map_err(io_error(staging))? {
            let path = entry.map_err(io_error(staging))?.path();
            let id = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(MediaId::parse);
            if !id.is_some_and(|id| known.contains(&id)) {
                remove_file_if_present(&path).map_err(io_error(&path))?;
            }
        }
        let removed = self
            .content
            .remove_orphans()
            .map_err(io_error(&self.layout.objects))?;
        if removed > 0 {
            tracing::warn!(removed, "removed object files without a record");
        }
        Ok(())
    }

    /// The configuration the media server runs with.
    pub fn config(&self) -> &MediaSection {
        &self.config
    }

    /// Creates an unfinished upload of `length` bytes for `owner`, within the quota.
    pub(crate) async fn create(
        self: &Arc<Self>,
        owner: &str,
        length: u64,
        metadata: &str,
        mime: &str,
    ) -> Result<Arc<Upload>, RequestError> {
        let media = self.clone();
        let (owner, metadata, mime) = (Id::from(owner), metadata.to_owned(), mime.to_owned());
        detached(async move { media.create_detached(owner, length, metadata, mime).await }).await
    }

    async fn create_detached(
        self: Arc<Self>,
        owner: Id,
        length: u64,
        metadata: String,
        mime: String,
    ) -> Result<Arc<Upload>, RequestError> {
        self.catalog.reserve(
            &owner,
            length,
            self.config.user_quota_bytes,
            self.config.max_unfinished_uploads_per_user,
        )?;
        let id = MediaId::random().map_err(|_| RequestError::Internal)?;
        let record = UploadRecord {
            owner: owner.to_string(),
            length,
            metadata,
            mime_type: mime,
            created_ms: now_ms(),
        };
        let media = self.clone();
        let stored = record.clone();
        let created = blocking(move || {
            let path = media.layout.staging_file(&id);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?
                .sync_all()?;
            sync_dir(&media.layout.staging)?;
            if let Err(error) = media.index.put_upload(&id, &stored) {
                let _ = fs::remove_file(&path);
                return Err(error.into());
            }
            Ok(())
        })
        .await;
        if let Err(error) = created {
            self.catalog.release(&owner, length, true);
            return Err(error);
        }
        let upload = Arc::new(Upload::new(
            id,
            &record,
            0,
            now_secs() + self.config.upload_expiry_secs,
            Some(Sha256::new()),
        ));
        self.catalog.insert_upload(upload.clone());
        self.telemetry.uploads_started.increment(1);
        self.telemetry.uploads_unfinished.increment(1.0);
        Ok(upload)
    }

    /// Appends `body` to `upload` at `offset` (which must be the upload's offset); finishes the
    /// upload when it is complete. Bytes that arrived are kept even when the body fails.
    pub(crate) async fn write(
        self: &Arc<Self>,
        upload: &Arc<Upload>,
        offset: u64,
        content_length: Option<u64>,
        body: Body,
    ) -> Result<Written, RequestError> {
        let (media, upload) = (self.clone(), upload.clone());
        detached(async move {
            media
                .write_detached(&upload, offset, content_length, body)
                .await
        })
        .await
    }

    async fn write_detached(
        self: &Arc<Self>,
        upload: &Arc<Upload>,
        offset: u64,
        content_length: Option<u64>,
        body: Body,
    ) -> Result<Written, RequestError> {
        let (mut writer, mut takeover) = upload.lock(LOCK_WAIT).await?;
        let actual = upload.offset();
        if offset != actual {
            return Err(RequestError::OffsetMismatch {
                sent: offset,
                actual,
            });
        }
        if content_length.is_some_and(|length| length > upload.length - actual) {
            return Err(RequestError::TooLarge(format!(
                "the body runs past Upload-Length: {} bytes remain",
                upload.length - actual
            )));
        }
        let ended = if actual < upload.length {
            let path = self.layout.staging_file(&upload.id);
            let appended = staging::append(
                &path,
                upload,
                &mut writer,
                &mut takeover,
                body,
                &self.config,
            )
            .await?;
            self.telemetry.bytes_in.increment(appended.written);
            if appended.written > 0 {
                upload.touch(self.config.upload_expiry_secs);
            }
            appended.ended
        } else {
            Ended::Finished
        };
        let offset = upload.offset();
        let complete = offset == upload.length;
        if complete {
            let media = self.clone();
            let finished = upload.clone();
            let hasher = writer.hasher.take();
            blocking(move || media.complete_blocking(&finished, hasher)).await?;
        }
        drop(writer);
        match ended {
            Ended::Finished => Ok(Written { offset, complete }),
            Ended::TooLong => Err(RequestError::TooLarge(
                "the body ran past Upload-Length; the bytes that fit were kept".to_owned(),
            )),
            Ended::Stalled => Err(RequestError::Stalled),
            Ended::BodyFailed => Err(RequestError::BadRequest(
                "the body ended early; what arrived was kept, HEAD and resume".to_owned(),
            )),
            Ended::TakenOver => Err(RequestError::Locked),
        }
    }

    /// Hashes (unless `hasher` already covers every byte), stores and records a complete upload,
    /// which becomes downloadable media. Blocks on disk I/O; the caller holds its writer lock.
    fn complete_blocking(
        &self,
        upload: &Upload,
        hasher: Option<Sha256>,
    ) -> Result<Arc<MediaMeta>, RequestError> {
        let sha256: layout::Sha256Digest = match hasher {
            Some(hasher) => hasher.finalize().into(),
            None => hash_file(&self.layout.staging_file(&upload.id))?,
        };
        let record = MediaRecord {
            owner: upload.owner.to_string(),
            size: upload.length,
            mime_type: upload.mime.to_string(),
            sha256: sha256.to_vec().into(),
            created_ms: upload.created_ms,
            completed_ms: now_ms(),
        };
        let commit = self.content.commit(&self.index, &upload.id, &record)?;
        upload.mark_gone();
        let meta = Arc::new(MediaMeta {
            owner: upload.owner.clone(),
            size: upload.length,
            mime: upload.mime.clone(),
            sha256,
            created_ms: upload.created_ms,
        });
        self.catalog.complete(upload.id, meta.clone());
        let telemetry = &self.telemetry;
        telemetry.uploads_completed.increment(1);
        telemetry.uploads_unfinished.decrement(1.0);
        match commit {
            Commit::Deduplicated => {
                telemetry.dedup_hits.increment(1);
                telemetry.dedup_saved_bytes.increment(upload.length);
            }
            Commit::Stored => {
                telemetry.objects.increment(1.0);
                telemetry.stored_bytes.increment(upload.length as f64);
            }
        }
        tracing::debug!(id = %upload.id, size = upload.length, ?commit, "upload finished");
        Ok(meta)
    }

    /// Deletes `owner`'s unfinished upload or finished media `id` (tus termination).
    pub(crate) async fn terminate(
        self: &Arc<Self>,
        owner: &str,
        id: MediaId,
    ) -> Result<(), RequestError> {
        let (media, owner) = (self.clone(), owner.to_owned());
        detached(async move { media.terminate_detached(&owner, id).await }).await
    }

    async fn terminate_detached(
        self: &Arc<Self>,
        owner: &str,
        id: MediaId,
    ) -> Result<(), RequestError> {
        if let Some(upload) = self.catalog.upload(&id) {
            if &*upload.owner != owner {
                return Err(RequestError::NotOwner);
            }
            let _writer = upload.lock(LOCK_WAIT).await?;
            self.drop_upload(&upload).await?;
            self.telemetry.uploads_terminated.increment(1);
            return Ok(());
        }
        let meta = self.catalog.media(&id).ok_or(RequestError::NotFound)?;
        if &*meta.owner != owner {
            return Err(RequestError::NotOwner);
        }
        let meta = self
            .catalog
            .remove_media(&id)
            .ok_or(RequestError::NotFound)?;
        let media = self.clone();
        let sha256 = meta.sha256;
        let release = blocking(move || media.content.release(&media.index, &id, &sha256)).await?;
        self.catalog.release(&meta.owner, meta.size, false);
        if release == Release::Deleted {
            let freed = self.hot.remove(&meta.sha256);
            self.telemetry.cache_bytes.decrement(freed as f64);
            self.telemetry.objects.decrement(1.0);
            self.telemetry.stored_bytes.decrement(meta.size as f64);
        }
        self.telemetry.uploads_terminated.increment(1);
        Ok(())
    }

    /// Removes an unfinished upload: memory, staging file, record, quota. The caller holds its
    /// writer lock.
    async fn drop_upload(self: &Arc<Self>, upload: &Arc<Upload>) -> Result<(), RequestError> {
        upload.mark_gone();
        self.catalog.remove_upload(&upload.id);
        self.catalog.release(&upload.owner, upload.length, true);
        self.telemetry.uploads_unfinished.decrement(1.0);
        let media = self.clone();
        let id = upload.id;
        blocking(move || {
            remove_file_if_present(&media.layout.staging_file(&id))?;
            sync_dir(&media.layout.staging)?;
            media.index.remove_upload(&id)?;
            Ok(())
        })
        .await
    }

    /// Deletes every unfinished upload whose expiry is at or before `now` (seconds) and that no
    /// request is writing. Returns how many.
    pub async fn expire(self: &Arc<Self>, now: u64) -> usize {
        let mut expired = 0;
        for upload in self.catalog.uploads() {
            if upload.expires_at() > now {
                continue;
            }
            let Some(_writer) = upload.try_lock() else {
                continue;
            };
            if upload.expires_at() > now {
                continue;
            }
            match self.drop_upload(&upload).await {
                Ok(()) => {
                    expired += 1;
                    self.telemetry.uploads_expired.increment(1);
                }
                Err(error) => tracing::warn!(%error, id = %upload.id, "cannot expire an upload"),
            }
        }
        expired
    }
}

/// Runs a change to the media state in a task of its own, so that a client hanging up (which
/// drops the request's future) cannot stop it half-way: a writer lock released before its
/// commit finished, or a quota reserved for an upload nobody will hear of.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, RequestError>> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::spawn(work)
        .await
        .map_err(|_| RequestError::Internal)?
}

#[cfg(test)]
mod tests;
