//! An upload's life in a replicated cluster: create, write piece by piece (each durable on a
//! majority of the upload's island before its offset is committed; the completion is
//! `complete.rs`), terminate, expire. The handlers call the same [`Media`] methods as on a
//! single node; these run when media is replicated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use http_body_util::BodyExt as _;

use super::super::catalog::MediaMeta;
use super::super::error::{RequestError, blocking};
use super::super::id::MediaId;
use super::super::upload::Upload;
use super::super::{LOCK_WAIT, Media, Written};
use super::state::offset;
use super::{IslandOf, PIECE, parts, peers, unavailable};
use crate::clock::now_secs;
use crate::proto::mesh::{PartWrite, media_reply, media_request};
use crate::proto::storage::{
    MediaChange, ObjectRef, Removed, ReplicatedUpload, UploadPart, UploadRecord, media_change,
};

pub(super) fn change(id: &MediaId, change: media_change::Change, from: u64) -> MediaChange {
    MediaChange {
        id: Bytes::copy_from_slice(id.as_bytes()),
        change: Some(change),
        from,
    }
}

/// An `Upload` for what the cluster says of a replicated upload (this node's catalog entry when
/// it is on the upload's island).
fn upload_of(media: &Media, id: MediaId, stored: &ReplicatedUpload) -> Option<Arc<Upload>> {
    if let Some(upload) = media.catalog.upload(&id) {
        // This member may not have applied the latest piece yet.
        if offset(stored) > upload.offset() {
            upload.set_offset(offset(stored));
        }
        return Some(upload);
    }
    let record = stored.upload.as_ref()?;
    Some(Arc::new(Upload::new(
        id,
        record,
        offset(stored),
        now_secs() + media.config.upload_expiry_secs,
        None,
    )))
}

impl Media {
    /// The unfinished upload `id`: the catalog's, or (replicated) as its group's leader has it.
    pub(crate) async fn find_upload(
        &self,
        id: &MediaId,
    ) -> Result<Option<Arc<Upload>>, RequestError> {
        if self.cluster().is_none() {
            return Ok(self.catalog.upload(id));
        }
        if self.catalog.media(id).is_some() {
            return Ok(None);
        }
        let state = self.state(id).await?;
        Ok(state
            .upload
            .as_ref()
            .and_then(|stored| upload_of(self, *id, stored)))
    }

    /// The finished media `id`: the catalog's, or (replicated) as its group's leader has it.
    pub(crate) async fn find_media(
        &self,
        id: &MediaId,
    ) -> Result<Option<Arc<MediaMeta>>, RequestError> {
        if let Some(meta) = self.catalog.media(id) {
            return Ok(Some(meta));
        }
        // Finished media never changes; one this member has not applied yet is asked of the
        // group's leader.
        if self.cluster().is_none() {
            return Ok(None);
        }
        Ok(self
            .state(id)
            .await?
            .media
            .as_ref()
            .and_then(MediaMeta::from_record)
            .map(Arc::new))
    }

    /// Creates replicated upload `id` (its quota checked): committed in its group before it is
    /// answered.
    pub(crate) async fn create_replicated(
        self: &Arc<Self>,
        id: MediaId,
        record: UploadRecord,
    ) -> Result<Arc<Upload>, RequestError> {
        let created = change(&id, media_change::Change::Created(record), 0);
        let state = self.commit(id.as_bytes(), created).await?;
        let stored = state.upload.ok_or(RequestError::Internal)?;
        self.telemetry.uploads_started.increment(1);
        upload_of(self, id, &stored).ok_or(RequestError::Internal)
    }

    /// Appends `body` at `offset` to a replicated upload, piece by piece; finishes it with its
    /// last byte. Pieces committed stay when the body fails.
    pub(crate) async fn write_replicated(
        self: &Arc<Self>,
        upload: &Arc<Upload>,
        offset_sent: u64,
        content_length: Option<u64>,
        mut body: Body,
    ) -> Result<Written, RequestError> {
        let (_writer, mut takeover) = upload.lock(LOCK_WAIT).await?;
        let id = upload.id;
        let stored = self
            .state(&id)
            .await?
            .upload
            .ok_or(RequestError::NotFound)?;
        let actual = offset(&stored);
        if offset_sent != actual {
            return Err(RequestError::OffsetMismatch {
                sent: offset_sent,
                actual,
            });
        }
        if content_length.is_some_and(|length| length > upload.length - actual) {
            return Err(RequestError::TooLarge(format!(
                "the body runs past Upload-Length: {} bytes remain",
                upload.length - actual
            )));
        }
        let island = self.island_of(id.as_bytes())?;
        let token = u64::from_be_bytes(
            MediaId::random()
                .map_err(|_| RequestError::Internal)?
                .as_bytes()[..8]
                .try_into()
                .map_err(|_| RequestError::Internal)?,
        );
        let idle = Duration::from_secs(self.config.body_idle_timeout_secs.into());
        let mut at = actual;
        let mut parts = stored.parts.clone();
        let mut pending = BytesMut::new();
        let mut ended: Option<RequestError> = None;
        let mut body_done = false;
        while !body_done || !pending.is_empty() {
            // Gather a piece (or what is left when the body ended).
            while !body_done && pending.len() < PIECE {
                let next = tokio::select! {
                    biased;
                    _ = takeover.changed() => {
                        ended = Some(RequestError::Locked);
                        body_done = true;
                        break;
                    }
                    next = tokio::time::timeout(idle, body.frame()) => next,
                };
                match next {
                    Err(_) => {
                        ended = Some(RequestError::Stalled);
                        body_done = true;
                    }
                    Ok(None) => body_done = true,
                    Ok(Some(Err(_))) => {
                        ended = Some(RequestError::BadRequest(
                            "the body ended early; what arrived was kept, HEAD and resume"
                                .to_owned(),
                        ));
                        body_done = true;
                    }
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            pending.extend_from_slice(&data);
                        }
                    }
                }
            }
            let room = (upload.length - at) as usize;
            if pending.len() > room {
                pending.truncate(room);
                ended = Some(RequestError::TooLarge(
                    "the body ran past Upload-Length; the bytes that fit were kept".to_owned(),
                ));
                body_done = true;
            }
            if pending.is_empty() {
                break;
            }
            let take = pending.len().min(PIECE);
            let piece = pending.split_to(take).freeze();
            self.replicate_piece(&island, &id, actual, token, at, piece.clone())
                .await?;
            let part = UploadPart {
                start: actual,
                token,
                end: at + piece.len() as u64,
            };
            let advanced = change(&id, media_change::Change::Advanced(part), at);
            let state = self.commit(id.as_bytes(), advanced).await?;
            let now = state.upload.ok_or(RequestError::NotFound)?;
            let committed = offset(&now);
            if now.parts.last().is_none_or(|last| last.token != token) || committed != part.end {
                // Another writer moved the upload first: this request's bytes do not count.
                return Err(RequestError::OffsetMismatch {
                    sent: at,
                    actual: committed,
                });
            }
            self.telemetry.bytes_in.increment(piece.len() as u64);
            upload.set_offset(committed);
            at = committed;
            parts = now.parts;
        }
        let complete = at == upload.length;
        if complete {
            self.complete_replicated(upload, &parts, &island).await?;
        }
        match ended {
            Some(error) if !complete => Err(error),
            _ => Ok(Written {
                offset: at,
                complete,
            }),
        }
    }

    /// Writes `piece` (upload bytes at `at`) into the part (`start`, `token`) of every member of
    /// the upload's island; succeeds once a majority has it on disk.
    async fn replicate_piece(
        self: &Arc<Self>,
        island: &IslandOf,
        id: &MediaId,
        start: u64,
        token: u64,
        at: u64,
        piece: Bytes,
    ) -> Result<(), RequestError> {
        let cluster = self.cluster().ok_or(RequestError::Internal)?.clone();
        let me = cluster.me();
        let end = at + piece.len() as u64;
        let writes = island.members.iter().map(|member| {
            let (cluster, piece, layout, id) =
                (cluster.clone(), piece.clone(), self.layout.clone(), *id);
            let member = *member;
            async move {
                let written = if member == me {
                    blocking(move || Ok(parts::write(&layout, &id, start, token, at, &piece)?))
                        .await
                        .map_err(|error| error.to_string())
                } else {
                    let write = media_request::Request::Write(PartWrite {
                        id: Bytes::copy_from_slice(id.as_bytes()),
                        start,
                        token,
                        offset: at,
                        data: piece,
                    });
                    match peers::ask(&cluster, member, write).await {
                        Ok(media_reply::Reply::Written(written)) => Ok(written),
                        Ok(other) => Err(format!("unexpected answer {other:?}")),
                        Err(error) => Err(error),
                    }
                };
                written.map(|written| written >= end)
            }
        });
        let results = join_all(writes).await;
        let durable = results
            .iter()
            .filter(|result| matches!(result, Ok(true)))
            .count();
        if durable >= island.majority() {
            return Ok(());
        }
        let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        Err(unavailable(format_args!(
            "{durable} of {} members have the piece: {}",
            island.members.len(),
            why.join("; ")
        )))
    }

    /// Deletes `owner`'s replicated upload or media `id`.
    pub(crate) async fn terminate_replicated(
        self: &Arc<Self>,
        owner: &str,
        id: MediaId,
    ) -> Result<(), RequestError> {
        let state = self.state(&id).await?;
        if let Some(stored) = state.upload {
            if stored
                .upload
                .as_ref()
                .is_some_and(|record| record.owner != owner)
            {
                return Err(RequestError::NotOwner);
            }
            if let Some(upload) = self.catalog.upload(&id) {
                let _writer = upload.lock(LOCK_WAIT).await?;
                self.commit(
                    id.as_bytes(),
                    change(&id, media_change::Change::Removed(Removed {}), 0),
                )
                .await?;
            } else {
                self.commit(
                    id.as_bytes(),
                    change(&id, media_change::Change::Removed(Removed {}), 0),
                )
                .await?;
            }
            self.telemetry.uploads_terminated.increment(1);
            return Ok(());
        }
        let record = state.media.ok_or(RequestError::NotFound)?;
        if record.owner != owner {
            return Err(RequestError::NotOwner);
        }
        self.commit(
            id.as_bytes(),
            change(&id, media_change::Change::Removed(Removed {}), 0),
        )
        .await?;
        let object = ObjectRef {
            sha256: record.sha256.clone(),
            size: record.size,
        };
        self.commit(
            &record.sha256,
            change(&id, media_change::Change::Released(object), 0),
        )
        .await?;
        self.telemetry.uploads_terminated.increment(1);
        Ok(())
    }

    /// Removes the expired replicated uploads of the groups this node leads (each member's
    /// sweeper does its own share). Returns how many.
    pub(crate) async fn expire_replicated(self: &Arc<Self>, now: u64) -> usize {
        let Some(cluster) = self.cluster().cloned() else {
            return 0;
        };
        let mut expired = 0;
        for upload in self.catalog.uploads() {
            if upload.expires_at() > now {
                continue;
            }
            let leads = cluster
                .island(upload.id.as_bytes())
                .is_some_and(|island| island.leader == Some(cluster.me()));
            if !leads || upload.try_lock().is_none() {
                continue;
            }
            let removed = change(&upload.id, media_change::Change::Removed(Removed {}), 0);
            match self.commit(upload.id.as_bytes(), removed).await {
                Ok(_) => {
                    expired += 1;
                    self.telemetry.uploads_expired.increment(1);
                }
                Err(error) => tracing::warn!(%error, id = %upload.id, "cannot expire an upload"),
            }
        }
        expired
    }
}
