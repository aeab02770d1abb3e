//! What the media server knows in memory, loaded from the index at start: finished media (for
//! downloads and the chat check, both cheap non-blocking reads), unfinished uploads, and each
//! user's usage against the quota.
//!
//! Memory: about 200 bytes per finished media item and 500 per unfinished upload.

use std::sync::Arc;

use dashmap::DashMap;

use super::error::RequestError;
use super::id::MediaId;
use super::layout::Sha256Digest;
use super::upload::Upload;
use crate::message::Id;
use crate::proto::storage::MediaRecord;

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaMeta {
    /// Who uploaded it.
    pub owner: Id,
    /// Size in bytes.
    pub size: u64,
    /// Media type from the upload's metadata.
    pub mime: Box<str>,
    /// SHA-256 of the content: its address and its ETag.
    pub sha256: Sha256Digest,
    /// When the upload was created, ms since the epoch.
    pub created_ms: u64,
}

impl MediaMeta {
    /// The finished media a stored record describes; `None` when its hash is malformed.
    pub fn from_record(record: &MediaRecord) -> Option<MediaMeta> {
        Some(MediaMeta {
            owner: Id::from(record.owner.as_str()),
            size: record.size,
            mime: record.mime_type.as_str().into(),
            sha256: record.sha256.as_ref().try_into().ok()?,
            created_ms: record.created_ms,
        })
    }
}

/// One user's holdings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Declared lengths of the user's uploads, finished or not.
    pub bytes: u64,
    /// Unfinished uploads.
    pub unfinished: u32,
}

/// The in-memory catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    media: DashMap<MediaId, Arc<MediaMeta>>,
    uploads: DashMap<MediaId, Arc<Upload>>,
    usage: DashMap<Id, Usage>,
}

impl Catalog {
    /// A finished upload.
    pub fn media(&self, id: &MediaId) -> Option<Arc<MediaMeta>> {
        self.media.get(id).map(|entry| entry.value().clone())
    }

    /// An unfinished upload.
    pub fn upload(&self, id: &MediaId) -> Option<Arc<Upload>> {
        self.uploads.get(id).map(|entry| entry.value().clone())
    }

    /// Every unfinished upload (a snapshot, for the expiry sweeper).
    pub fn uploads(&self) -> Vec<Arc<Upload>> {
        self.uploads
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// A user's holdings.
    #[cfg(test)]
    pub fn usage(&self, owner: &str) -> Usage {
        self.usage
            .get(owner)
            .map(|entry| *entry.value())
            .unwrap_or_default()
    }

    /// Counts a new unfinished upload of `length` bytes against `owner`'s quota, or refuses it.
    pub fn reserve(
        &self,
        owner: &Id,
        length: u64,
        quota: u64,
        max_unfinished: u32,
    ) -> Result<(), RequestError> {
        let mut usage = self.usage.entry(owner.clone()).or_default();
        if usage.unfinished >= max_unfinished {
            return Err(RequestError::TooManyUnfinished(max_unfinished));
        }
        if usage.bytes.saturating_add(length) > quota {
            return Err(RequestError::QuotaExceeded {
                used: usage.bytes,
                quota,
                wanted: length,
            });
        }
        usage.bytes += length;
        usage.unfinished += 1;
        Ok(())
    }

    /// Refuses an upload of `length` bytes that `owner`'s quota has no room for, counting
    /// nothing (a replicated upload is counted when its creation is applied).
    pub fn check(
        &self,
        owner: &Id,
        length: u64,
        quota: u64,
        max_unfinished: u32,
    ) -> Result<(), RequestError> {
        self.reserve(owner, length, quota, max_unfinished)?;
        self.release(owner, length, true);
        Ok(())
    }

    /// Gives back `bytes` of `owner`'s quota, and an unfinished slot when `unfinished`.
    pub fn release(&self, owner: &Id, bytes: u64, unfinished: bool) {
        let emptied = {
            let mut usage = self.usage.entry(owner.clone()).or_default();
            usage.bytes = usage.bytes.saturating_sub(bytes);
            if unfinished {
                usage.unfinished = usage.unfinished.saturating_sub(1);
            }
            *usage == Usage::default()
        };
        if emptied {
            self.usage
                .remove_if(owner, |_, usage| *usage == Usage::default());
        }
    }

    /// Adds an unfinished upload (its quota already reserved).
    pub fn insert_upload(&self, upload: Arc<Upload>) {
        self.uploads.insert(upload.id, upload);
    }

    /// Removes an unfinished upload (the caller settles its quota).
    pub fn remove_upload(&self, id: &MediaId) -> Option<Arc<Upload>> {
        self.uploads.remove(id).map(|(_, upload)| upload)
    }

    /// An upload finished: it becomes media; its owner has one unfinished upload fewer.
    pub fn complete(&self, id: MediaId, meta: Arc<MediaMeta>) {
        let owner = meta.owner.clone();
        self.media.insert(id, meta);
        self.uploads.remove(&id);
        self.release(&owner, 0, true);
    }

    /// Removes finished media (the caller settles its quota).
    pub fn remove_media(&self, id: &MediaId) -> Option<Arc<MediaMeta>> {
        self.media.remove(id).map(|(_, meta)| meta)
    }

    /// Loads an item at start, counting it against its owner.
    pub fn load_media(&self, id: MediaId, meta: MediaMeta) {
        self.usage.entry(meta.owner.clone()).or_default().bytes += meta.size;
        self.media.insert(id, Arc::new(meta));
    }

    /// Loads an unfinished upload at start, counting it against its owner.
    pub fn load_upload(&self, upload: Arc<Upload>) {
        {
            let mut usage = self.usage.entry(upload.owner.clone()).or_default();
            usage.bytes += upload.length;
            usage.unfinished += 1;
        }
        self.uploads.insert(upload.id, upload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_unfinished_limits() {
        let catalog = Catalog::default();
        let alice: Id = "alice".into();
        catalog.reserve(&alice, 60, 100, 2).unwrap();
        assert!(matches!(
            catalog.reserve(&alice, 41, 100, 2),
            Err(RequestError::QuotaExceeded { used: 60, .. })
        ));
        catalog.reserve(&alice, 40, 100, 2).unwrap();
        catalog.release(&alice, 40, true);
        catalog.reserve(&alice, 10, 100, 2).unwrap();
        assert!(matches!(
            catalog.reserve(&alice, 1, 100, 2),
            Err(RequestError::TooManyUnfinished(2))
        ));
        catalog.release(&alice, 60, true);
        catalog.release(&alice, 10, true);
        assert_eq!(catalog.usage("alice"), Usage::default());
        assert!(catalog.usage.is_empty(), "empty usage entries are dropped");
    }
}
