//! Appending an upload body to its staging file: streamed through a buffer of
//! `media.write_buffer_bytes` (never the whole body in memory), fsynced before the new offset is
//! published, and cut short when the body stalls, fails, or another request takes over.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt as _;
use sha2::Digest as _;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _, BufWriter};
use tokio::sync::watch;

use super::error::RequestError;
use super::upload::{Upload, Writer};
use crate::config::MediaSection;

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It was read to its end.
    Finished,
    /// It ran past `Upload-Length` (the bytes that fit were kept).
    TooLong,
    /// No bytes for `media.body_idle_timeout_secs`.
    Stalled,
    /// The connection failed or the client went away mid-body.
    BodyFailed,
    /// Another request for this upload asked for the lock.
    TakenOver,
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Bytes added to the upload (durable).
    pub written: u64,
    /// How the body ended.
    pub ended: Ended,
}

/// Appends `body` to the staging file at `path` from the upload's durable offset, fsyncs, and
/// publishes the new offset. On a disk error nothing of this body is kept (the file is cut back
/// to the old offset) and the error is returned.
pub async fn append(
    path: &Path,
    upload: &Upload,
    writer: &mut Writer,
    takeover: &mut watch::Receiver<u64>,
    mut body: Body,
    config: &MediaSection,
) -> Result<Appended, RequestError> {
    let start = upload.offset();
    let room = upload.length - start;
    let mut file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
    if file.metadata().await?.len() != start {
        // Bytes past the durable offset were never acknowledged: drop them.
        file.set_len(start).await?;
    }
    file.seek(SeekFrom::Start(start)).await?;
    let mut out = BufWriter::with_capacity(config.write_buffer_bytes as usize, file);
    let before = writer.hasher.clone();
    let mut hasher = writer.hasher.take();
    let idle = Duration::from_secs(config.body_idle_timeout_secs.into());
    let mut written = 0u64;
    let mut failure = None;
    let ended = loop {
        let next = tokio::select! {
            biased;
            _ = takeover.changed() => break Ended::TakenOver,
            next = tokio::time::timeout(idle, body.frame()) => next,
        };
        let data = match next {
            Err(_) => break Ended::Stalled,
            Ok(None) => break Ended::Finished,
            Ok(Some(Err(_))) => break Ended::BodyFailed,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry nothing tus uses.
                Err(_) => continue,
            },
        };
        let fits = usize::try_from(room - written)
            .unwrap_or(usize::MAX)
            .min(data.len());
        if fits > 0 {
            if let Err(error) = out.write_all(&data[..fits]).await {
                failure = Some(error);
                break Ended::BodyFailed;
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&data[..fits]);
            }
            written += fits as u64;
        }
        if fits < data.len() {
            break Ended::TooLong;
        }
    };
    if failure.is_none() {
        failure = out.flush().await.err();
    }
    let file = out.into_inner();
    if failure.is_none() {
        failure = file.sync_data().await.err();
    }
    if let Some(error) = failure {
        // How much reached the disk is unknown: keep none of it.
        writer.hasher = before;
        let _ = file.set_len(start).await;
        let _ = file.sync_data().await;
        return Err(error.into());
    }
    writer.hasher = hasher;
    upload.set_offset(start + written);
    Ok(Appended { written, ended })
}
