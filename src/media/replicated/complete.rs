//! Finishing a replicated upload: the committed bytes hashed, the object made durable on a
//! majority of its own island (placed by its digest), then its reference and the media
//! committed. A completion cut short (the last piece committed, a commit after it not) is
//! finished by the next `HEAD`.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use sha2::{Digest as _, Sha256};

use super::super::error::RequestError;
use super::super::id::MediaId;
use super::super::layout::Sha256Digest;
use super::super::upload::Upload;
use super::super::{LOCK_WAIT, Media};
use super::state::offset;
use super::upload::change;
use super::{IslandOf, peers, unavailable};
use crate::clock::now_ms;
use crate::proto::mesh::{Place, media_reply, media_request};
use crate::proto::storage::{MediaRecord, ObjectRef, UploadPart, media_change};

impl Media {
    /// Finishes a replicated upload whose every byte is committed but whose completion did not
    /// commit (its last PATCH failed after the last piece): a client that sees the whole
    /// length in `HEAD` sends nothing more, so the `HEAD` finishes it.
    pub(crate) async fn finish_replicated(
        self: &Arc<Self>,
        upload: &Arc<Upload>,
    ) -> Result<(), RequestError> {
        let (_writer, _takeover) = upload.lock(LOCK_WAIT).await?;
        let state = self.state(&upload.id).await?;
        let Some(stored) = state.upload else {
            return Ok(());
        };
        if offset(&stored) != upload.length {
            return Ok(());
        }
        let island = self.island_of(upload.id.as_bytes())?;
        self.complete_replicated(upload, &stored.parts, &island)
            .await
    }

    /// Hashes a replicated upload's committed bytes, places the object on a majority of its
    /// island, references it there and commits the media.
    pub(super) async fn complete_replicated(
        self: &Arc<Self>,
        upload: &Arc<Upload>,
        parts: &[UploadPart],
        island: &IslandOf,
    ) -> Result<(), RequestError> {
        let id = upload.id;
        let mut hasher = Sha256::new();
        let mut at = 0;
        while at < upload.length {
            let piece = self.upload_piece(&id, parts, at, &island.members).await?;
            if piece.is_empty() {
                return Err(unavailable("an empty piece"));
            }
            hasher.update(&piece);
            at += piece.len() as u64;
        }
        let digest: Sha256Digest = hasher.finalize().into();
        let home = self.island_of(&digest)?;
        self.place_on(&home, &id, parts, &island.members, digest, upload.length)
            .await?;
        let object = ObjectRef {
            sha256: Bytes::copy_from_slice(&digest),
            size: upload.length,
        };
        self.commit(
            &digest,
            change(&id, media_change::Change::Referenced(object), 0),
        )
        .await?;
        let record = MediaRecord {
            owner: upload.owner.to_string(),
            size: upload.length,
            mime_type: upload.mime.to_string(),
            sha256: Bytes::copy_from_slice(&digest),
            created_ms: upload.created_ms,
            completed_ms: now_ms(),
        };
        let state = self
            .commit(
                id.as_bytes(),
                change(&id, media_change::Change::Finished(record), 0),
            )
            .await?;
        if state.media.is_none() {
            return Err(RequestError::NotFound);
        }
        upload.mark_gone();
        self.telemetry.uploads_completed.increment(1);
        tracing::debug!(%id, size = upload.length, "replicated upload finished");
        Ok(())
    }

    /// Makes the object durable on a majority of `home` (its island).
    async fn place_on(
        self: &Arc<Self>,
        home: &IslandOf,
        id: &MediaId,
        parts: &[UploadPart],
        sources: &[u64],
        digest: Sha256Digest,
        size: u64,
    ) -> Result<(), RequestError> {
        let cluster = self.cluster().ok_or(RequestError::Internal)?.clone();
        let me = cluster.me();
        let places = home.members.iter().map(|member| {
            let (cluster, media, id, member) = (cluster.clone(), self.clone(), *id, *member);
            async move {
                if member == me {
                    let source = super::place::Source::Parts { id, parts };
                    return media
                        .place(digest, size, source, sources)
                        .await
                        .map(|_| ())
                        .map_err(|error| error.to_string());
                }
                let place = media_request::Request::Place(Place {
                    sha256: Bytes::copy_from_slice(&digest),
                    size,
                    id: Bytes::copy_from_slice(id.as_bytes()),
                    parts: parts.to_vec(),
                    sources: sources.to_vec(),
                });
                match peers::ask(&cluster, member, place).await {
                    Ok(media_reply::Reply::Placed(true)) => Ok(()),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(error) => Err(error),
                }
            }
        });
        let results = join_all(places).await;
        let durable = results.iter().filter(|result| result.is_ok()).count();
        if durable >= home.majority() {
            return Ok(());
        }
        let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        Err(unavailable(format_args!(
            "the object is on {durable} of {} members: {}",
            home.members.len(),
            why.join("; ")
        )))
    }
}
