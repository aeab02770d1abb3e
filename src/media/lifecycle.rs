//! The life of an upload: create, write (append, and complete with the last byte), terminate,
//! expire. Each change runs detached from its request (see [`detached`]) and holds the
//! upload's writer lock, so the steps of one upload never overlap.

use std::fs;
use std::sync::Arc;

use axum::body::Body;
use sha2::{Digest as _, Sha256};

use super::catalog::MediaMeta;
use super::content::{Commit, Release, hash_file};
use super::error::{RequestError, blocking};
use super::id::MediaId;
use super::layout::{self, remove_file_if_present, sync_dir};
use super::staging::{self, Ended};
use super::upload::Upload;
use super::{LOCK_WAIT, Media, detached};
use crate::clock::{now_ms, now_secs};
use crate::message::Id;
use crate::proto::storage::{MediaRecord, UploadRecord};

/// What a write to an upload achieved.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The upload's offset after the write.
    pub offset: u64,
    /// The upload is finished (now downloadable).
    pub complete: bool,
}

impl Media {
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
        let (quota, unfinished) = (
            self.config.user_quota_bytes,
            self.config.max_unfinished_uploads_per_user,
        );
        let replicated = self.cluster().is_some();
        if replicated {
            // Counted when its creation is applied.
            self.catalog.check(&owner, length, quota, unfinished)?;
        } else {
            self.catalog.reserve(&owner, length, quota, unfinished)?;
        }
        let id = MediaId::random().map_err(|_| RequestError::Internal)?;
        let record = UploadRecord {
            owner: owner.to_string(),
            length,
            metadata,
            mime_type: mime,
            created_ms: now_ms(),
        };
        if replicated {
            return self.create_replicated(id, record).await;
        }
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
        if self.cluster().is_some() {
            return self
                .write_replicated(upload, offset, content_length, body)
                .await;
        }
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
    pub(super) fn complete_blocking(
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
        if self.cluster().is_some() {
            return self.terminate_replicated(owner, id).await;
        }
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
        if self.cluster().is_some() {
            return self.expire_replicated(now).await;
        }
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
