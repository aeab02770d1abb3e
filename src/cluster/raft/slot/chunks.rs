//! Snapshots that come in chunks: a slot group's snapshot is sent in pieces of at most
//! `[cluster] snapshot_chunk_bytes`, so no single call is larger than a mesh frame and a large
//! snapshot does not hold a link for one long write. The receiver puts the pieces of each
//! group's snapshot together, in order, and hands over the whole once the last arrives.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// The largest snapshot put together (what one member may make another hold in memory).
pub const MAX_ASSEMBLED_BYTES: usize = 4 << 30;

/// Why a chunk was not taken (the sender starts the snapshot over).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk does not follow what was received of the same snapshot.
    #[error("snapshot chunk at {offset}, but {held} bytes of it are held")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes held of the snapshot.
        held: u64,
    },
    /// The snapshot would be larger than [`MAX_ASSEMBLED_BYTES`].
    #[error("snapshot larger than {MAX_ASSEMBLED_BYTES} bytes")]
    TooLarge,
}

/// What a chunk made of its snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// More is to come: this many bytes are held.
    More(u64),
    /// The last chunk: the whole snapshot.
    Whole(Bytes),
}

struct Partial {
    /// Which snapshot (its encoded meta).
    snapshot: Bytes,
    data: BytesMut,
}

/// Snapshots being received, by group.
#[derive(Default)]
pub struct Chunks {
    partial: Mutex<HashMap<u64, Partial>>,
}

impl Chunks {
    /// Takes a chunk of `group`'s snapshot `snapshot` (its encoded meta) starting at `offset`.
    /// A chunk at offset 0 starts the snapshot over (a sender that started again).
    pub fn take(
        &self,
        group: u64,
        snapshot: Bytes,
        offset: u64,
        data: &[u8],
        more: bool,
    ) -> Result<Chunked, ChunkError> {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if offset == 0 {
            partial.insert(
                group,
                Partial {
                    snapshot: snapshot.clone(),
                    data: BytesMut::new(),
                },
            );
        }
        let held = match partial.get(&group) {
            Some(held) if held.snapshot == snapshot => held.data.len() as u64,
            _ => 0,
        };
        if offset != held {
            partial.remove(&group);
            return Err(ChunkError::OutOfOrder { offset, held });
        }
        let Some(held) = partial.get_mut(&group) else {
            return Err(ChunkError::OutOfOrder { offset, held: 0 });
        };
        if held.data.len() + data.len() > MAX_ASSEMBLED_BYTES {
            partial.remove(&group);
            return Err(ChunkError::TooLarge);
        }
        held.data.extend_from_slice(data);
        if more {
            return Ok(Chunked::More(held.data.len() as u64));
        }
        let whole = partial
            .remove(&group)
            .map(|held| held.data.freeze())
            .unwrap_or_default();
        Ok(Chunked::Whole(whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_order_make_the_whole_and_a_gap_starts_over() {
        let chunks = Chunks::default();
        let meta = Bytes::from_static(b"meta-1");
        assert_eq!(
            chunks.take(3, meta.clone(), 0, b"abc", true),
            Ok(Chunked::More(3))
        );
        assert_eq!(
            chunks.take(3, meta.clone(), 3, b"de", true),
            Ok(Chunked::More(5))
        );
        // Another group's snapshot in between does not mix in.
        assert_eq!(
            chunks.take(4, Bytes::from_static(b"other"), 0, b"x", false),
            Ok(Chunked::Whole(Bytes::from_static(b"x")))
        );
        assert_eq!(
            chunks.take(3, meta.clone(), 5, b"f", false),
            Ok(Chunked::Whole(Bytes::from_static(b"abcdef")))
        );
        // A chunk that does not follow what is held is refused and the rest forgotten.
        assert_eq!(
            chunks.take(3, meta.clone(), 0, b"ab", true),
            Ok(Chunked::More(2))
        );
        assert_eq!(
            chunks.take(3, meta.clone(), 5, b"zz", true),
            Err(ChunkError::OutOfOrder { offset: 5, held: 2 })
        );
        assert_eq!(
            chunks.take(3, meta.clone(), 2, b"c", false),
            Err(ChunkError::OutOfOrder { offset: 2, held: 0 })
        );
        // A chunk of a newer snapshot does not continue the older one.
        assert_eq!(chunks.take(3, meta, 0, b"ab", true), Ok(Chunked::More(2)));
        assert_eq!(
            chunks.take(3, Bytes::from_static(b"meta-2"), 2, b"c", false),
            Err(ChunkError::OutOfOrder { offset: 2, held: 0 })
        );
    }
}
