//! Making an object durable on this node: for a completion (from the upload's parts, this
//! node's or read from the upload's island) and for a refill (from a peer's copy). The bytes go
//! to a temporary file under `staging/` (removed at start if a crash leaves it), are hashed on
//! the way and checked against the digest, fsynced, renamed into `objects/`, and the rename
//! made durable. An object already here costs nothing (the content is its name).
//!
//! The refill task copies every object this node references but lacks: asked after each applied
//! reference and installed snapshot, and by a full pass every [`REFILL_EVERY`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::Media;
use super::super::error::{RequestError, blocking};
use super::super::id::{MediaId, to_hex};
use super::super::layout::{Sha256Digest, create_dir_durably, remove_file_if_present, sync_dir};
use super::{AfterApply, PIECE, REFILL_EVERY, parts, peers, unavailable};
use crate::proto::mesh::MediaRead;
use crate::proto::storage::UploadPart;

/// Objects queued for a refill before further asks are left to the next full pass.
const REFILL_QUEUE: usize = 4096;

/// The queue of objects to refill: open from the start, taken by the task when it starts.
#[derive(Debug)]
pub struct RefillAsks {
    asks: mpsc::Sender<(Sha256Digest, u64)>,
    asked: std::sync::Mutex<Option<mpsc::Receiver<(Sha256Digest, u64)>>>,
}

impl Default for RefillAsks {
    fn default() -> Self {
        let (asks, asked) = mpsc::channel(REFILL_QUEUE);
        RefillAsks {
            asks,
            asked: std::sync::Mutex::new(Some(asked)),
        }
    }
}

/// Where an object's bytes come from.
pub enum Source<'a> {
    /// The parts of upload `id` (this node's, else the `sources`').
    Parts {
        /// The upload.
        id: MediaId,
        /// Its committed parts, in order.
        parts: &'a [UploadPart],
    },
    /// A peer's copy of the object.
    Object,
}

impl Media {
    /// Whether the object `digest` of `size` bytes is on this node's disk.
    pub(crate) async fn holds(&self, digest: &Sha256Digest, size: u64) -> bool {
        tokio::fs::metadata(self.layout.object_file(digest))
            .await
            .is_ok_and(|metadata| metadata.len() == size)
    }

    /// Makes object `digest` of `size` bytes durable here, from `source` (reading from
    /// `sources` what this node lacks). Returns the bytes copied (0 when it was here).
    pub(crate) async fn place(
        self: &Arc<Self>,
        digest: Sha256Digest,
        size: u64,
        source: Source<'_>,
        sources: &[u64],
    ) -> Result<u64, RequestError> {
        if self.holds(&digest, size).await {
            return Ok(0);
        }
        let temp = self.layout.staging.join(format!(
            "place-{}-{}",
            to_hex(&digest[..8]),
            MediaId::random().map_err(|_| RequestError::Internal)?
        ));
        let placed = self.copy_into(&temp, &digest, size, &source, sources).await;
        if let Err(error) = placed {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(error);
        }
        let (media, object) = (self.clone(), self.layout.object_file(&digest));
        blocking(move || {
            let parent = object.parent().ok_or(RequestError::Internal)?;
            create_dir_durably(parent)?;
            std::fs::rename(&temp, &object)?;
            sync_dir(parent)?;
            sync_dir(&media.layout.staging)?;
            Ok(())
        })
        .await?;
        metrics::counter!(crate::metrics::MEDIA_PLACED).increment(1);
        self.telemetry.objects.increment(1.0);
        self.telemetry.stored_bytes.increment(size as f64);
        Ok(size)
    }

    async fn copy_into(
        &self,
        temp: &std::path::Path,
        digest: &Sha256Digest,
        size: u64,
        source: &Source<'_>,
        sources: &[u64],
    ) -> Result<(), RequestError> {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        while at < size {
            let piece = match source {
                Source::Parts { id, parts } => self.upload_piece(id, parts, at, sources).await?,
                Source::Object => {
                    let length = (size - at).min(PIECE as u64) as usize;
                    self.object_piece(digest, at, length, sources).await?
                }
            };
            if piece.is_empty() {
                return Err(unavailable("an empty piece"));
            }
            hasher.update(&piece);
            file.write_all(&piece).await?;
            at += piece.len() as u64;
        }
        file.sync_all().await?;
        let got: Sha256Digest = hasher.finalize().into();
        if got != *digest || at != size {
            return Err(unavailable(format_args!(
                "object {} assembled with another digest",
                to_hex(digest)
            )));
        }
        Ok(())
    }

    /// The upload's bytes from offset `at` to the end of the part holding it (at most a
    /// [`PIECE`]): this node's part file, else a source's.
    pub(crate) async fn upload_piece(
        &self,
        id: &MediaId,
        parts: &[UploadPart],
        at: u64,
        sources: &[u64],
    ) -> Result<Bytes, RequestError> {
        let part = parts
            .iter()
            .find(|part| part.start <= at && at < part.end)
            .ok_or(RequestError::Internal)?;
        let length = (part.end - at).min(PIECE as u64) as usize;
        let (layout, id_owned, token, stored_start) =
            (self.layout.clone(), *id, part.token, part.start);
        let local = blocking(move || {
            Ok(parts::read(
                &layout,
                &id_owned,
                stored_start,
                token,
                at,
                length,
            )?)
        })
        .await?;
        if let Some(data) = local.filter(|data| data.len() == length) {
            return Ok(Bytes::from(data));
        }
        let read = MediaRead {
            sha256: Bytes::new(),
            id: Bytes::copy_from_slice(id.as_bytes()),
            start: part.start,
            token: part.token,
            offset: at,
            length: length as u32,
        };
        self.read_from_peers(&read, length, sources).await
    }

    /// The piece `read` names (`length` bytes) from the first of `sources`, this node left
    /// out, that has it.
    async fn read_from_peers(
        &self,
        read: &MediaRead,
        length: usize,
        sources: &[u64],
    ) -> Result<Bytes, RequestError> {
        let cluster = self.cluster().ok_or(RequestError::Internal)?;
        let me = cluster.me();
        let others: Vec<u64> = sources.iter().copied().filter(|s| *s != me).collect();
        peers::read_piece(cluster, &others, read, length)
            .await
            .map_err(unavailable)
    }

    /// `length` bytes of object `digest` at `at`: this node's file, else a source's.
    pub(crate) async fn object_piece(
        &self,
        digest: &Sha256Digest,
        at: u64,
        length: usize,
        sources: &[u64],
    ) -> Result<Bytes, RequestError> {
        let path = self.layout.object_file(digest);
        let local = blocking(move || match std::fs::File::open(&path) {
            Ok(mut file) => Ok(Some(parts::read_at(&mut file, at, length)?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        })
        .await?;
        if let Some(data) = local.filter(|data| data.len() == length) {
            return Ok(Bytes::from(data));
        }
        let read = MediaRead {
            sha256: Bytes::copy_from_slice(digest),
            id: Bytes::new(),
            start: 0,
            token: 0,
            offset: at,
            length: length as u32,
        };
        self.read_from_peers(&read, length, sources).await
    }

    /// What an applied entry leaves: part files and unreferenced objects go, missing objects
    /// are refilled.
    pub(crate) async fn after_apply(self: &Arc<Self>, after: AfterApply) {
        for id in after.parts_gone {
            let layout = self.layout.clone();
            let removed = blocking(move || Ok(parts::remove(&layout, &id)?)).await;
            if let Err(error) = removed {
                tracing::warn!(%id, %error, "cannot remove an upload's parts");
            }
        }
        for digest in after.objects_gone {
            let path = self.layout.object_file(&digest);
            let removed = blocking(move || {
                let size = std::fs::metadata(&path).map_or(None, |metadata| Some(metadata.len()));
                remove_file_if_present(&path)?;
                Ok(size)
            })
            .await;
            match removed {
                Ok(Some(size)) => {
                    self.telemetry.objects.decrement(1.0);
                    self.telemetry.stored_bytes.decrement(size as f64);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(object = %to_hex(&digest), %error, "cannot remove an object");
                }
            }
            let freed = self.hot.remove(&digest);
            self.telemetry.cache_bytes.decrement(freed as f64);
        }
        self.ask_refill(after.objects_needed);
    }

    /// Asks the refill task for the objects of `needed` this node lacks.
    pub(crate) fn ask_refill(&self, needed: Vec<(Sha256Digest, u64)>) {
        for object in needed {
            // A full queue is no loss: the next full pass finds what is missing.
            let _ = self.refill.asks.try_send(object);
        }
    }
}

/// Starts the refill task of `media`; it ends with `stop`.
pub fn start_refill(media: Arc<Media>, stop: CancellationToken) {
    let asked = media
        .refill
        .asked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(asked) = asked {
        tokio::spawn(refill(media, asked, stop));
    }
}

async fn refill(
    media: Arc<Media>,
    mut asked: mpsc::Receiver<(Sha256Digest, u64)>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(REFILL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let objects = tokio::select! {
            _ = stop.cancelled() => return,
            asked = asked.recv() => match asked {
                Some(object) => vec![object],
                None => return,
            },
            _ = every.tick() => {
                let scanner = media.clone();
                match blocking(move || scanner.referenced_objects()).await {
                    Ok(objects) => objects,
                    Err(error) => {
                        tracing::warn!(%error, "cannot list the objects to hold");
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        let (mut copied, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        for (digest, size) in objects {
            if stop.is_cancelled() {
                return;
            }
            if media.holds(&digest, size).await {
                continue;
            }
            let Some(cluster) = media.cluster() else {
                return;
            };
            let Some(island) = cluster.island(&digest) else {
                continue;
            };
            match media
                .place(digest, size, Source::Object, &island.members)
                .await
            {
                Ok(placed) if placed > 0 => {
                    copied += 1;
                    bytes += placed;
                    metrics::counter!(crate::metrics::MEDIA_REFILL_OBJECTS).increment(1);
                    metrics::counter!(crate::metrics::MEDIA_REFILL_BYTES).increment(placed);
                }
                Ok(_) => {}
                Err(error) => {
                    failed += 1;
                    metrics::counter!(crate::metrics::MEDIA_REFILL_FAILURES).increment(1);
                    tracing::debug!(object = %to_hex(&digest), %error, "refill failed; tried again later");
                }
            }
        }
        if copied > 0 || failed > 0 {
            tracing::info!(
                objects = copied,
                bytes,
                failed,
                seconds = started.elapsed().as_secs_f64(),
                "media refilled from peers"
            );
        }
    }
}
