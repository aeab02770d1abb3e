//! Calls to other members' media service: one request, one decoded answer; reads of a piece
//! from whichever source has it.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use super::MediaCluster;
use crate::proto::mesh::{MediaRead, MediaReply, MediaRequest, media_reply, media_request};

/// Asks `peer`; an error answer, a failed call or an empty answer is an `Err` naming it.
pub async fn ask(
    cluster: &Arc<dyn MediaCluster>,
    peer: u64,
    request: media_request::Request,
) -> Result<media_reply::Reply, String> {
    let request = MediaRequest {
        request: Some(request),
    };
    let answer = cluster
        .call(peer, Bytes::from(request.encode_to_vec()))
        .await
        .map_err(|error| format!("node {peer}: {error}"))?;
    let reply = MediaReply::decode(answer)
        .map_err(|error| format!("node {peer}: undecodable answer: {error}"))?;
    match reply.reply {
        Some(media_reply::Reply::Error(error)) => Err(format!("node {peer}: {error}")),
        Some(reply) => Ok(reply),
        None => Err(format!("node {peer}: empty answer")),
    }
}

/// The piece `read` names, from the first of `sources` that has all of it (`expected` bytes).
pub async fn read_piece(
    cluster: &Arc<dyn MediaCluster>,
    sources: &[u64],
    read: &MediaRead,
    expected: usize,
) -> Result<Bytes, String> {
    let mut last = String::from("no source");
    for source in sources {
        match ask(cluster, *source, media_request::Request::Read(read.clone())).await {
            Ok(media_reply::Reply::Data(data)) if data.len() == expected => return Ok(data),
            Ok(media_reply::Reply::Data(data)) => {
                last = format!("node {source}: {} of {expected} bytes", data.len());
            }
            Ok(other) => last = format!("node {source}: unexpected answer {other:?}"),
            Err(error) => last = error,
        }
    }
    Err(last)
}
