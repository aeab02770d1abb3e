//! The chat side of media: a `MESSAGE_KIND_MEDIA` Send (1:1 or to a group) names finished media
//! by id. The id is the capability, for references as for downloads: whoever holds it (its
//! uploader, anyone who received a message naming it) may send it on, so a forward is a new
//! message naming the same stored media, never a new upload or object. Ids are 128 random bits
//! never derived from content, so holding one means having been given it. The check reads the
//! in-memory catalog (never blocks the session), and the body is rewritten with the stored
//! type, size and hash so recipients get values the server vouches for.

use bytes::Bytes;
use prost::Message as _;

use super::Media;
use super::id::MediaId;
use crate::proto::v1::{ErrorCode, MediaRef};

/// Why a media message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareRefusal {
    /// The body is not a `MediaRef`, or its id is not 32 lowercase hex digits.
    #[error("media message body must be a MediaRef with a valid id")]
    Malformed,
    /// No finished media has this id: never uploaded, unfinished, or deleted by its uploader.
    #[error("no finished media has this id")]
    NotFound,
    /// A filled-in field differs from the stored media.
    #[error("media reference does not match the stored media ({0})")]
    Mismatch(&'static str),
    /// With the stored values filled in, the body exceeds the body limit.
    #[error("media reference too large once completed (thumbnail too big)")]
    TooLarge,
}

impl ShareRefusal {
    /// The error code the phone gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::MediaNotFound,
            Self::Malformed | Self::Mismatch(_) | Self::TooLarge => ErrorCode::InvalidArgument,
        }
    }
}

impl Media {
    /// Checks that the media `body` refers to is finished and that the body agrees with it,
    /// and returns the body with the stored type, size and hash filled in (at most `max_body`
    /// bytes). The sender is not consulted: holding the id is what entitles one to send it,
    /// exactly as it entitles one to download it.
    pub fn share(&self, body: &[u8], max_body: usize) -> Result<Bytes, ShareRefusal> {
        let mut reference = MediaRef::decode(body).map_err(|_| ShareRefusal::Malformed)?;
        let id = MediaId::parse(&reference.id).ok_or(ShareRefusal::Malformed)?;
        let meta = self.catalog.media(&id).ok_or(ShareRefusal::NotFound)?;
        if !reference.mime_type.is_empty() && reference.mime_type != *meta.mime {
            return Err(ShareRefusal::Mismatch("mime_type"));
        }
        if reference.size != 0 && reference.size != meta.size {
            return Err(ShareRefusal::Mismatch("size"));
        }
        if !reference.sha256.is_empty() && reference.sha256[..] != meta.sha256[..] {
            return Err(ShareRefusal::Mismatch("sha256"));
        }
        reference.mime_type = meta.mime.to_string();
        reference.size = meta.size;
        reference.sha256 = Bytes::copy_from_slice(&meta.sha256);
        let encoded = reference.encode_to_vec();
        if encoded.len() > max_body {
            return Err(ShareRefusal::TooLarge);
        }
        Ok(Bytes::from(encoded))
    }
}
