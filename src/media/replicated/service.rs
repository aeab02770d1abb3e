//! The media service other members call (mesh service 6): part writes, reads of parts and
//! objects, placing objects, commits through this node when it leads, and look-ups.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use super::super::Media;
use super::super::error::{RequestError, blocking};
use super::super::id::MediaId;
use super::super::layout::Sha256Digest;
use super::place::Source;
use super::{CommitError, PIECE, parts};
use crate::proto::mesh::{MediaReply, MediaRequest, media_reply, media_request};
use crate::proto::storage::MediaChange;

/// The mesh service number of media between nodes.
pub const SERVICE_MEDIA: u32 = 6;

/// Answers one call of `payload` (an encoded `MediaRequest`).
pub async fn handle(media: Arc<Media>, payload: Bytes) -> Result<Bytes, String> {
    let request = MediaRequest::decode(payload).map_err(|error| error.to_string())?;
    let reply = match request.request {
        Some(request) => match answer(&media, request).await {
            Ok(reply) => reply,
            Err(error) => media_reply::Reply::Error(error.to_string()),
        },
        None => media_reply::Reply::Error("a media request without a request".to_owned()),
    };
    Ok(Bytes::from(
        MediaReply { reply: Some(reply) }.encode_to_vec(),
    ))
}

fn id_of(bytes: &[u8]) -> Result<MediaId, RequestError> {
    MediaId::from_slice(bytes).ok_or_else(|| RequestError::BadRequest("bad id".to_owned()))
}

fn digest_of(bytes: &[u8]) -> Result<Sha256Digest, RequestError> {
    Sha256Digest::try_from(bytes).map_err(|_| RequestError::BadRequest("bad digest".to_owned()))
}

async fn answer(
    media: &Arc<Media>,
    request: media_request::Request,
) -> Result<media_reply::Reply, RequestError> {
    use media_reply::Reply;
    use media_request::Request;
    match request {
        Request::Write(write) => {
            let id = id_of(&write.id)?;
            let layout = media.layout.clone();
            let written = blocking(move || {
                Ok(parts::write(
                    &layout,
                    &id,
                    write.start,
                    write.token,
                    write.offset,
                    &write.data,
                )?)
            })
            .await?;
            Ok(Reply::Written(written))
        }
        Request::Read(read) => {
            let length = (read.length as usize).min(PIECE);
            let data = if read.sha256.is_empty() {
                let (layout, id) = (media.layout.clone(), id_of(&read.id)?);
                blocking(move || {
                    Ok(parts::read(
                        &layout,
                        &id,
                        read.start,
                        read.token,
                        read.offset,
                        length,
                    )?)
                })
                .await?
                .ok_or(RequestError::NotFound)?
            } else {
                let path = media.layout.object_file(&digest_of(&read.sha256)?);
                blocking(move || {
                    let mut file = std::fs::File::open(&path).map_err(|error| {
                        if error.kind() == std::io::ErrorKind::NotFound {
                            RequestError::NotFound
                        } else {
                            error.into()
                        }
                    })?;
                    Ok(parts::read_at(&mut file, read.offset, length)?)
                })
                .await?
            };
            Ok(Reply::Data(Bytes::from(data)))
        }
        Request::Place(place) => {
            let digest = digest_of(&place.sha256)?;
            let source = if place.parts.is_empty() {
                Source::Object
            } else {
                Source::Parts {
                    id: id_of(&place.id)?,
                    parts: &place.parts,
                }
            };
            media
                .place(digest, place.size, source, &place.sources)
                .await?;
            Ok(Reply::Placed(true))
        }
        Request::Propose(propose) => {
            let cluster = media.cluster().ok_or(RequestError::Internal)?;
            let change = MediaChange::decode(propose.change.clone())
                .map_err(|_| RequestError::BadRequest("bad change".to_owned()))?;
            let id = id_of(&change.id)?;
            let island = media.island_of(&propose.key)?;
            match cluster.commit(island.group, propose.change).await {
                Ok(()) => Ok(Reply::State(media.local_state(&id)?)),
                Err(CommitError::NotLeader(leader)) => Ok(Reply::NotLeader(leader.unwrap_or(0))),
                Err(CommitError::Failed(error)) => Err(RequestError::Unavailable(error)),
            }
        }
        Request::Lookup(lookup) => Ok(Reply::State(media.local_state(&id_of(&lookup.id)?)?)),
    }
}
