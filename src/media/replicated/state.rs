//! The replicated media state of this node's slot groups: the index's `replicated` tree, changed
//! only by committed [`MediaChange`]s, each group's applied in log order, and mirrored in the
//! catalog (so downloads, HEAD and the chat check read it as they read a single node's).
//!
//! ```text
//! U + id(16)            ReplicatedUpload   an unfinished upload and its committed parts
//! M + id(16)            MediaRecord        finished media
//! R + digest(32) + id   ObjectRef          media `id` uses the object (its file lives here)
//! A + group(8, BE)      u64 (BE)           the group's last applied log index
//! ```
//!
//! Every apply is one sled batch with the group's new applied index, made durable (flush and
//! fsync) before the catalog changes: a restarted node re-applies a group's log after its
//! mailbox checkpoint, and skips what this tree already holds.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use super::super::Media;
use super::super::catalog::MediaMeta;
use super::super::error::RequestError;
use super::super::id::MediaId;
use super::super::index::IndexError;
use super::super::layout::Sha256Digest;
use super::super::upload::Upload;
use crate::clock::now_secs;
use crate::proto::storage::{
    MediaChange, MediaRecord, MediaRow, ObjectRef, ReplicatedUpload, UploadPart, media_change,
};

const UPLOAD: u8 = b'U';
const MEDIA: u8 = b'M';
const REFERENCE: u8 = b'R';
const APPLIED: u8 = b'A';

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![prefix];
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn applied_key(group: u64) -> Vec<u8> {
    key(APPLIED, &[&group.to_be_bytes()])
}

/// The bytes a row is placed by (an id's or a digest's slot), `None` for a group's mark.
pub fn placement_key(row: &[u8]) -> Option<&[u8]> {
    match row.split_first() {
        Some((&UPLOAD | &MEDIA, id)) => Some(id),
        Some((&REFERENCE, rest)) => rest.get(..32),
        _ => None,
    }
}

/// The offset of an upload: the end of its last committed part.
pub fn offset(upload: &ReplicatedUpload) -> u64 {
    upload.parts.last().map_or(0, |part| part.end)
}

/// A change to the catalog, made once its entry is durable.
type CatalogChange = Box<dyn FnOnce(&Media) + Send>;

/// Rows an entry changed, as they stand within it (`None`: removed).
type Pending = hashbrown::HashMap<Vec<u8>, Option<Vec<u8>>>;

/// What an applied change leaves to do once it is durable.
#[derive(Debug, Default)]
pub struct AfterApply {
    /// Upload ids whose part files go.
    pub parts_gone: Vec<MediaId>,
    /// Objects whose last reference went: their files go.
    pub objects_gone: Vec<Sha256Digest>,
    /// Objects referenced here: their files must be here (refilled if missing).
    pub objects_needed: Vec<(Sha256Digest, u64)>,
}

impl Media {
    fn tree(&self) -> &sled::Tree {
        &self.replicated
    }

    fn sled(&self, error: sled::Error) -> RequestError {
        RequestError::Index(self.index.error(error))
    }

    /// The replicated upload `id`, if this node holds it.
    pub(crate) fn replicated_upload(
        &self,
        id: &MediaId,
    ) -> Result<Option<ReplicatedUpload>, RequestError> {
        self.read(&key(UPLOAD, &[id.as_bytes()]))
    }

    /// The replicated media record `id`, if this node holds it.
    pub(crate) fn replicated_media(
        &self,
        id: &MediaId,
    ) -> Result<Option<MediaRecord>, RequestError> {
        self.read(&key(MEDIA, &[id.as_bytes()]))
    }

    fn read<T: prost::Message + Default>(&self, key: &[u8]) -> Result<Option<T>, RequestError> {
        match self.tree().get(key).map_err(|error| self.sled(error))? {
            Some(value) => T::decode(&*value)
                .map(Some)
                .map_err(|_| RequestError::Index(self.index.corrupt_record(key))),
            None => Ok(None),
        }
    }

    /// Whether media still references object `digest`.
    fn referenced(&self, digest: &Sha256Digest) -> Result<bool, RequestError> {
        Ok(self
            .tree()
            .scan_prefix(key(REFERENCE, &[digest]))
            .next()
            .transpose()
            .map_err(|error| self.sled(error))?
            .is_some())
    }

    /// Every object this node holds a reference to, with its size (what must be on its disk).
    pub(crate) fn referenced_objects(&self) -> Result<Vec<(Sha256Digest, u64)>, RequestError> {
        let mut objects: Vec<(Sha256Digest, u64)> = Vec::new();
        for item in self.tree().scan_prefix([REFERENCE]) {
            let (key, value) = item.map_err(|error| self.sled(error))?;
            let Some(digest) = key.get(1..33).and_then(|d| Sha256Digest::try_from(d).ok()) else {
                continue;
            };
            if objects.last().is_some_and(|(last, _)| *last == digest) {
                continue;
            }
            let size = ObjectRef::decode(&*value).map_or(0, |object| object.size);
            objects.push((digest, size));
        }
        Ok(objects)
    }

    /// Applies the media changes of entry `index` of `group` (in log order), durably, then to
    /// the catalog. Blocks on disk. An entry this tree already holds is skipped.
    pub(crate) fn apply_replicated(
        &self,
        group: u64,
        index: u64,
        changes: &[Bytes],
    ) -> Result<AfterApply, RequestError> {
        let mut after = AfterApply::default();
        let mark = applied_key(group);
        let applied = self
            .tree()
            .get(&mark)
            .map_err(|error| self.sled(error))?
            .and_then(|value| <[u8; 8]>::try_from(&*value).ok())
            .map(u64::from_be_bytes);
        if applied.is_some_and(|applied| applied >= index) {
            return Ok(after);
        }
        let mut batch = sled::Batch::default();
        let mut catalog: Vec<CatalogChange> = Vec::new();
        // A change sees the rows the ones before it in the entry changed.
        let mut pending = Pending::new();
        for payload in changes {
            let Ok(change) = MediaChange::decode(payload.clone()) else {
                tracing::error!(group, index, "a committed media change does not decode");
                continue;
            };
            let Some(id) = MediaId::from_slice(&change.id) else {
                tracing::error!(group, index, "a committed media change without a valid id");
                continue;
            };
            self.apply_change(id, change, &mut pending, &mut catalog, &mut after)?;
        }
        for (key, value) in pending {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch.insert(mark, index.to_be_bytes().to_vec());
        self.tree()
            .apply_batch(batch)
            .map_err(|error| self.sled(error))?;
        self.index.flush()?;
        for change in catalog {
            change(self);
        }
        // An object whose last reference went in this entry.
        let mut gone = Vec::new();
        for digest in after.objects_gone.drain(..) {
            if !self.referenced(&digest)? {
                gone.push(digest);
            }
        }
        after.objects_gone = gone;
        Ok(after)
    }

    fn pending_read<T: prost::Message + Default>(
        &self,
        pending: &Pending,
        key: &[u8],
    ) -> Result<Option<T>, RequestError> {
        match pending.get(key) {
            Some(Some(value)) => Ok(T::decode(value.as_slice()).ok()),
            Some(None) => Ok(None),
            None => self.read(key),
        }
    }

    fn apply_change(
        &self,
        id: MediaId,
        change: MediaChange,
        pending: &mut Pending,
        catalog: &mut Vec<CatalogChange>,
        after: &mut AfterApply,
    ) -> Result<(), RequestError> {
        use media_change::Change;
        let upload_key = key(UPLOAD, &[id.as_bytes()]);
        let media_key = key(MEDIA, &[id.as_bytes()]);
        let upload: Option<ReplicatedUpload> = self.pending_read(pending, &upload_key)?;
        match change.change {
            Some(Change::Created(record)) => {
                let finished: Option<MediaRecord> = self.pending_read(pending, &media_key)?;
                if upload.is_some() || finished.is_some() {
                    return Ok(());
                }
                let stored = ReplicatedUpload {
                    upload: Some(record.clone()),
                    parts: Vec::new(),
                };
                pending.insert(upload_key, Some(stored.encode_to_vec()));
                catalog.push(Box::new(move |media: &Media| {
                    let expires = now_secs() + media.config.upload_expiry_secs;
                    media
                        .catalog
                        .load_upload(Arc::new(Upload::new(id, &record, 0, expires, None)));
                    media.telemetry.uploads_unfinished.increment(1.0);
                }));
            }
            Some(Change::Advanced(part)) => {
                let Some(mut upload) = upload else {
                    return Ok(());
                };
                if offset(&upload) != change.from || part.end < change.from {
                    return Ok(());
                }
                match upload.parts.last_mut() {
                    Some(last) if last.start == part.start && last.token == part.token => {
                        last.end = part.end;
                    }
                    _ => upload.parts.push(UploadPart {
                        start: change.from,
                        token: part.token,
                        end: part.end,
                    }),
                }
                pending.insert(upload_key, Some(upload.encode_to_vec()));
                let end = part.end;
                catalog.push(Box::new(move |media: &Media| {
                    if let Some(upload) = media.catalog.upload(&id) {
                        upload.set_offset(end);
                        upload.touch(media.config.upload_expiry_secs);
                    }
                }));
            }
            Some(Change::Finished(record)) => {
                let finished: Option<MediaRecord> = self.pending_read(pending, &media_key)?;
                if finished.is_some() {
                    return Ok(());
                }
                let Some(meta) = MediaMeta::from_record(&record) else {
                    return Ok(());
                };
                let was_upload = upload.is_some();
                pending.insert(upload_key, None);
                pending.insert(media_key, Some(record.encode_to_vec()));
                after.parts_gone.push(id);
                catalog.push(Box::new(move |media: &Media| {
                    match media.catalog.upload(&id).filter(|_| was_upload) {
                        Some(upload) => {
                            upload.set_offset(upload.length);
                            upload.mark_gone();
                            media.catalog.complete(id, Arc::new(meta));
                            media.telemetry.uploads_unfinished.decrement(1.0);
                        }
                        None => media.catalog.load_media(id, meta),
                    }
                }));
            }
            Some(Change::Removed(_)) => {
                if let Some(upload) = upload {
                    pending.insert(upload_key, None);
                    after.parts_gone.push(id);
                    let length = upload.upload.map_or(0, |record| record.length);
                    catalog.push(Box::new(move |media: &Media| {
                        if let Some(upload) = media.catalog.remove_upload(&id) {
                            upload.mark_gone();
                            media.catalog.release(&upload.owner, length, true);
                            media.telemetry.uploads_unfinished.decrement(1.0);
                        }
                    }));
                } else if self
                    .pending_read::<MediaRecord>(pending, &media_key)?
                    .is_some()
                {
                    pending.insert(media_key, None);
                    catalog.push(Box::new(move |media: &Media| {
                        if let Some(meta) = media.catalog.remove_media(&id) {
                            media.catalog.release(&meta.owner, meta.size, false);
                        }
                    }));
                }
            }
            Some(Change::Referenced(object)) => {
                let Ok(digest) = Sha256Digest::try_from(object.sha256.as_ref()) else {
                    return Ok(());
                };
                pending.insert(
                    key(REFERENCE, &[&digest, id.as_bytes()]),
                    Some(object.encode_to_vec()),
                );
                after.objects_needed.push((digest, object.size));
            }
            Some(Change::Released(object)) => {
                let Ok(digest) = Sha256Digest::try_from(object.sha256.as_ref()) else {
                    return Ok(());
                };
                pending.insert(key(REFERENCE, &[&digest, id.as_bytes()]), None);
                after.objects_gone.push(digest);
            }
            None => {}
        }
        Ok(())
    }

    /// Every row of the replicated state placed by a key `contains` says yes to (a slot
    /// group's share, for its snapshot).
    pub(crate) fn export_replicated(
        &self,
        contains: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<MediaRow>, IndexError> {
        let mut rows = Vec::new();
        for item in self.replicated.iter() {
            let (key, value) = item.map_err(|error| self.index.error(error))?;
            if placement_key(&key).is_some_and(contains) {
                rows.push(MediaRow {
                    key: Bytes::copy_from_slice(&key),
                    value: Bytes::copy_from_slice(&value),
                });
            }
        }
        Ok(rows)
    }

    /// Replaces this node's rows of a slot group's share (`contains`) with `rows` and marks the
    /// group applied up to `index`, durably; then reloads the catalog's view of them. Returns
    /// the objects the group references (their files must be here).
    pub(crate) fn install_replicated(
        &self,
        group: u64,
        index: u64,
        contains: &dyn Fn(&[u8]) -> bool,
        rows: Vec<MediaRow>,
    ) -> Result<Vec<(Sha256Digest, u64)>, IndexError> {
        let mut batch = sled::Batch::default();
        let mut old = Vec::new();
        for item in self.replicated.iter() {
            let (key, _) = item.map_err(|error| self.index.error(error))?;
            if placement_key(&key).is_some_and(contains) {
                batch.remove(key.clone());
                old.push(key);
            }
        }
        let mut needed = Vec::new();
        for row in &rows {
            if !placement_key(&row.key).is_some_and(contains) {
                continue;
            }
            batch.insert(row.key.to_vec(), row.value.to_vec());
            if let Some((&REFERENCE, rest)) = row.key.split_first()
                && let Some(digest) = rest.get(..32).and_then(|d| Sha256Digest::try_from(d).ok())
            {
                let size = ObjectRef::decode(row.value.clone()).map_or(0, |object| object.size);
                needed.push((digest, size));
            }
        }
        batch.insert(applied_key(group), index.to_be_bytes().to_vec());
        self.replicated
            .apply_batch(batch)
            .map_err(|error| self.index.error(error))?;
        self.index.flush()?;
        for key in old {
            if let Some((&UPLOAD | &MEDIA, id)) = key.split_first()
                && let Some(id) = MediaId::from_slice(id)
            {
                self.forget_in_catalog(&id);
            }
        }
        for row in rows {
            self.load_row(&row.key, &row.value);
        }
        Ok(needed)
    }

    fn forget_in_catalog(&self, id: &MediaId) {
        if let Some(upload) = self.catalog.remove_upload(id) {
            upload.mark_gone();
            self.catalog.release(&upload.owner, upload.length, true);
        }
        if let Some(meta) = self.catalog.remove_media(id) {
            self.catalog.release(&meta.owner, meta.size, false);
        }
    }

    /// Loads every upload and media of the replicated state into the catalog (at start).
    pub(crate) fn load_replicated(&self) -> Result<(), IndexError> {
        for item in self.replicated.iter() {
            let (key, value) = item.map_err(|error| self.index.error(error))?;
            self.load_row(&key, &value);
        }
        Ok(())
    }

    fn load_row(&self, key: &[u8], value: &[u8]) {
        let Some((prefix, id)) = key.split_first() else {
            return;
        };
        let Some(id) = MediaId::from_slice(id) else {
            return;
        };
        match *prefix {
            UPLOAD => {
                let Ok(stored) = ReplicatedUpload::decode(value) else {
                    return;
                };
                let Some(record) = stored.upload.as_ref() else {
                    return;
                };
                let expires = now_secs() + self.config.upload_expiry_secs;
                self.catalog.load_upload(Arc::new(Upload::new(
                    id,
                    record,
                    offset(&stored),
                    expires,
                    None,
                )));
            }
            MEDIA => {
                if let Some(meta) = MediaRecord::decode(value)
                    .ok()
                    .as_ref()
                    .and_then(MediaMeta::from_record)
                {
                    self.catalog.load_media(id, meta);
                }
            }
            _ => {}
        }
    }
}
