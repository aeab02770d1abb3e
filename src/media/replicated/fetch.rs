//! Downloads of objects this node does not hold: read from a member of the object's island,
//! piece by piece (never the whole object in memory, unless the hot cache takes it).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::super::Media;
use super::super::error::RequestError;
use super::super::layout::Sha256Digest;
use super::{PIECE, unavailable};

impl Media {
    /// The members that hold object `digest` (its island's, leader first), this node left out.
    fn holders(&self, digest: &Sha256Digest) -> Result<Vec<u64>, RequestError> {
        let cluster = self.cluster().ok_or(RequestError::Internal)?;
        let island = cluster
            .island(digest)
            .ok_or_else(|| unavailable("the object's slot is not placed yet"))?;
        let me = cluster.me();
        let mut holders: Vec<u64> = island.leader.into_iter().collect();
        holders.extend(
            island
                .members
                .iter()
                .copied()
                .filter(|m| Some(*m) != island.leader),
        );
        holders.retain(|member| *member != me);
        Ok(holders)
    }

    /// The whole object `digest` of `size` bytes, read from its holders (for the hot cache).
    pub(crate) async fn read_remote(
        &self,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<Bytes, RequestError> {
        metrics::counter!(crate::metrics::MEDIA_REMOTE_READS).increment(1);
        let holders = self.holders(digest)?;
        let mut data = BytesMut::with_capacity(size as usize);
        while (data.len() as u64) < size {
            let at = data.len() as u64;
            let length = (size - at).min(PIECE as u64) as usize;
            data.extend_from_slice(&self.object_piece(digest, at, length, &holders).await?);
        }
        Ok(data.freeze())
    }

    /// The bytes `start..start + length` of object `digest`, streamed from its holders in
    /// pieces of `chunk` bytes; a failure ends the body (the client retries).
    pub(crate) fn stream_remote(
        self: &Arc<Self>,
        digest: Sha256Digest,
        start: u64,
        length: u64,
        chunk: usize,
    ) -> Result<impl Stream<Item = Result<Bytes, RequestError>> + Send + 'static, RequestError>
    {
        metrics::counter!(crate::metrics::MEDIA_REMOTE_READS).increment(1);
        let holders = self.holders(&digest)?;
        let chunk = chunk.clamp(1, PIECE) as u64;
        let media = self.clone();
        let end = start + length;
        Ok(futures_util::stream::unfold(start, move |at| {
            let (media, holders) = (media.clone(), holders.clone());
            async move {
                if at >= end {
                    return None;
                }
                let length = (end - at).min(chunk) as usize;
                match media.object_piece(&digest, at, length, &holders).await {
                    Ok(piece) => {
                        media.telemetry.bytes_out.increment(piece.len() as u64);
                        Some((Ok(piece), at + length as u64))
                    }
                    Err(error) => Some((Err(error), end)),
                }
            }
        }))
    }
}
