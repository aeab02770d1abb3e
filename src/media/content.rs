//! The content store: finished uploads kept once per distinct content, as files named by their
//! SHA-256, with a reference count per object (in the index and mirrored here).
//!
//! Commit order for new content: the staging file is already fsynced; rename it into
//! `objects/ab/cd…`, fsync the object's directory and the staging directory, then record the
//! media in the index (one atomic batch, flushed). A crash before the index write leaves an
//! object without a record, removed at the next start; the upload then restarts from its HEAD
//! (404). Content already stored costs no space: the staging file is dropped after the index
//! write. All methods block on disk: call them from `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashMap;
use sha2::{Digest as _, Sha256};

use super::error::RequestError;
use super::id::{MediaId, decode_hex};
use super::index::Index;
use super::layout::{Layout, Sha256Digest, create_dir_durably, remove_file_if_present, sync_dir};
use crate::proto::storage::{MediaRecord, ObjectRecord};

/// Read size when hashing a staging file.
const HASH_BUFFER_BYTES: usize = 256 * 1024;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The content was new: the staging file became the object.
    Stored,
    /// The content was already stored: the staging file was dropped.
    Deduplicated,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Other media still use the object.
    Shared,
    /// That was the last reference: the object was deleted.
    Deleted,
}

/// Objects on disk and their reference counts.
#[derive(Debug)]
pub struct ContentStore {
    layout: Layout,
    /// Held for the whole of a commit or release, so reference counts and files agree.
    objects: Mutex<HashMap<Sha256Digest, ObjectRecord>>,
}

impl ContentStore {
    /// The store over `layout` with the reference counts loaded from the index.
    pub fn new(layout: Layout, objects: HashMap<Sha256Digest, ObjectRecord>) -> Self {
        Self {
            layout,
            objects: Mutex::new(objects),
        }
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<Sha256Digest, ObjectRecord>> {
        self.objects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Distinct objects stored and their total size in bytes.
    pub fn totals(&self) -> (u64, u64) {
        let objects = self.objects();
        (
            objects.len() as u64,
            objects.values().map(|object| object.size).sum(),
        )
    }

    /// Moves the finished staging file of upload `id` into the store (or drops it when the
    /// content is already there) and records `media` (whose `sha256` is set) in the index.
    pub fn commit(
        &self,
        index: &Index,
        id: &MediaId,
        media: &MediaRecord,
    ) -> Result<Commit, RequestError> {
        let digest: Sha256Digest = media
            .sha256
            .as_ref()
            .try_into()
            .map_err(|_| RequestError::Internal)?;
        let staging = self.layout.staging_file(id);
        let object_path = self.layout.object_file(&digest);
        let mut objects = self.objects();
        let existing = objects.get(&digest).copied();
        let object = ObjectRecord {
            references: existing.map_or(0, |object| object.references) + 1,
            size: media.size,
        };
        let outcome = if existing.is_some() && object_path.is_file() {
            index.complete(id, media, &digest, &object)?;
            if let Err(error) =
                remove_file_if_present(&staging).and_then(|()| sync_dir(&self.layout.staging))
            {
                // The media is recorded; the stray file is removed at the next start.
                tracing::warn!(%error, %id, "cannot remove a deduplicated staging file");
            }
            Commit::Deduplicated
        } else {
            let directory = object_path.parent().ok_or(RequestError::Internal)?;
            create_dir_durably(directory)?;
            fs::rename(&staging, &object_path)?;
            sync_dir(directory)?;
            sync_dir(&self.layout.staging)?;
            if let Err(error) = index.complete(id, media, &digest, &object) {
                // Put the upload back as it was, so its owner can retry the last PATCH.
                let _ = fs::rename(&object_path, &staging);
                return Err(error.into());
            }
            Commit::Stored
        };
        objects.insert(digest, object);
        Ok(outcome)
    }

    /// Forgets finished media `id` whose content is `digest`; deletes the object with its last
    /// reference.
    pub fn release(
        &self,
        index: &Index,
        id: &MediaId,
        digest: &Sha256Digest,
    ) -> Result<Release, RequestError> {
        let mut objects = self.objects();
        let remaining = objects
            .get(digest)
            .map_or(0, |object| object.references.saturating_sub(1));
        if remaining > 0 {
            let object = ObjectRecord {
                references: remaining,
                size: objects.get(digest).map_or(0, |object| object.size),
            };
            index.remove_media(id, digest, Some(&object))?;
            objects.insert(*digest, object);
            return Ok(Release::Shared);
        }
        index.remove_media(id, digest, None)?;
        objects.remove(digest);
        let path = self.layout.object_file(digest);
        if let Err(error) = remove_file_if_present(&path).and_then(|()| match path.parent() {
            Some(directory) => sync_dir(directory),
            None => Ok(()),
        }) {
            // Unreferenced now; removed at the next start.
            tracing::warn!(%error, path = %path.display(), "cannot remove an object file");
        }
        Ok(Release::Deleted)
    }

    /// Deletes object files that neither a record nor `keep` (the objects replicated media use)
    /// references (left by a crash between the rename and the index write). Returns how many.
    /// At start only.
    pub fn remove_orphans(
        &self,
        keep: &std::collections::HashSet<Sha256Digest>,
    ) -> io::Result<usize> {
        let objects = self.objects();
        let mut removed = 0;
        for fanout in fs::read_dir(&self.layout.objects)? {
            let fanout = fanout?;
            if !fanout.file_type()?.is_dir() {
                continue;
            }
            let prefix = fanout.file_name().to_string_lossy().into_owned();
            for file in fs::read_dir(fanout.path())? {
                let file = file?;
                let name = format!("{prefix}{}", file.file_name().to_string_lossy());
                let mut digest = [0u8; 32];
                let known = decode_hex(&name, &mut digest).is_some()
                    && (objects.contains_key(&digest) || keep.contains(&digest));
                if !known {
                    remove_file_if_present(&file.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// SHA-256 of a whole file, read in bounded chunks.
pub fn hash_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(digest: &Sha256Digest, size: u64) -> MediaRecord {
        MediaRecord {
            owner: "alice".into(),
            size,
            sha256: digest.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn identical_content_is_stored_once_and_deleted_with_its_last_reference() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let index = Index::open(&layout.index, 1 << 20).unwrap();
        let store = ContentStore::new(layout.clone(), HashMap::new());
        let (first, second) = (MediaId::random().unwrap(), MediaId::random().unwrap());
        for id in [first, second] {
            fs::write(layout.staging_file(&id), b"same bytes").unwrap();
        }
        let digest = hash_file(&layout.staging_file(&first)).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"same bytes")));
        let record = media(&digest, 10);
        assert_eq!(
            store.commit(&index, &first, &record).unwrap(),
            Commit::Stored
        );
        assert_eq!(
            store.commit(&index, &second, &record).unwrap(),
            Commit::Deduplicated
        );
        assert!(!layout.staging_file(&first).exists());
        assert!(!layout.staging_file(&second).exists());
        assert_eq!(store.totals(), (1, 10));
        let object = layout.object_file(&digest);
        assert_eq!(fs::read(&object).unwrap(), b"same bytes");

        assert_eq!(
            store.release(&index, &first, &digest).unwrap(),
            Release::Shared
        );
        assert!(object.exists());
        assert_eq!(
            store.release(&index, &second, &digest).unwrap(),
            Release::Deleted
        );
        assert!(!object.exists());
        assert_eq!(store.totals(), (0, 0));
    }

    #[test]
    fn orphans_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let orphan = layout.object_file(&[9; 32]);
        create_dir_durably(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"x").unwrap();
        let store = ContentStore::new(layout, HashMap::new());
        assert_eq!(store.remove_orphans(&Default::default()).unwrap(), 1);
        assert!(!orphan.exists());
    }
}
