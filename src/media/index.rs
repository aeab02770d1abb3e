//! The media index: a small sled database (`media/index`) of unfinished uploads, finished media
//! and object reference counts. Values are small protobuf records
//! (`proto/tern/storage/v1/media.proto`); media bytes never go here.
//!
//! Every method blocks on disk: call them from `spawn_blocking` or at start, never on an async
//! worker. Every change is durable when its call returns, power loss included: sled's `flush`
//! (which stops at `sync_file_range`), then an fsync of the database's files and directory. A
//! client may put a media id in an acked message as soon as its upload is answered, so an
//! answered completion must not depend on sled's own flusher.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message as _;

use super::id::MediaId;
use super::layout::Sha256Digest;
use crate::proto::storage::{MediaRecord, ObjectRecord, UploadRecord};

/// Key prefix of an unfinished upload (then the 16-byte id).
const UPLOAD: u8 = b'u';
/// Key prefix of a finished upload (then the 16-byte id).
const MEDIA: u8 = b'm';
/// Key prefix of an object (then the 32-byte digest).
const OBJECT: u8 = b'o';

/// The tree of the replicated media state (the default tree holds the node's own).
const REPLICATED_TREE: &[u8] = b"replicated";

/// How often sled's flusher writes on its own, in milliseconds (every change is also made
/// durable before its call returns).
const FLUSH_EVERY_MS: u64 = 500;

/// How long an open waits for the file lock of an index this process closed a moment ago.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// sled reported an error.
    #[error("media index {path}: {source}")]
    Sled {
        /// The database directory.
        path: PathBuf,
        /// The cause.
        source: sled::Error,
    },
    /// Making a change durable failed.
    #[error("media index {path}: {source}")]
    Sync {
        /// The database directory.
        path: PathBuf,
        /// The cause.
        source: crate::fsync::SyncError,
    },
    /// A record did not decode.
    #[error("media index {path}: corrupt record under key {key:02x?}")]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// The key whose value is bad.
        key: Vec<u8>,
    },
}

/// Everything the index held at start.
#[derive(Debug, Default)]
pub struct Contents {
    /// Unfinished uploads.
    pub uploads: Vec<(MediaId, UploadRecord)>,
    /// Finished media.
    pub media: Vec<(MediaId, MediaRecord)>,
    /// Objects and their reference counts.
    pub objects: Vec<(Sha256Digest, ObjectRecord)>,
}

/// The open index.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    db: sled::Db,
    /// How long each change took to become durable.
    sync_seconds: metrics::Histogram,
}

fn key(prefix: u8, bytes: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + bytes.len());
    key.push(prefix);
    key.extend_from_slice(bytes);
    key
}

impl Index {
    /// Opens (creating if needed) the index at `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, IndexError> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .flush_every_ms(Some(FLUSH_EVERY_MS))
                .open();
            match opened {
                Ok(db) => {
                    return Ok(Self {
                        path: path.to_owned(),
                        db,
                        sync_seconds: metrics::histogram!(crate::metrics::MEDIA_INDEX_SYNC),
                    });
                }
                Err(sled::Error::Io(error))
                    if crate::store::sled_lock_held(&error) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(IndexError::Sled {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    fn sled_error(&self, source: sled::Error) -> IndexError {
        IndexError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, key: &[u8]) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            key: key.to_vec(),
        }
    }

    /// The tree of the replicated media state (a cluster's: `replicated::state`).
    pub(super) fn replicated_tree(&self) -> Result<sled::Tree, IndexError> {
        self.db
            .open_tree(REPLICATED_TREE)
            .map_err(|error| self.sled_error(error))
    }

    /// A sled error of this index.
    pub(super) fn error(&self, source: sled::Error) -> IndexError {
        self.sled_error(source)
    }

    /// A corrupt record of this index.
    pub(super) fn corrupt_record(&self, key: &[u8]) -> IndexError {
        self.corrupt(key)
    }

    /// Reads every record (at start).
    pub fn load(&self) -> Result<Contents, IndexError> {
        let mut contents = Contents::default();
        for item in self.db.iter() {
            let (key, value) = item.map_err(|error| self.sled_error(error))?;
            let corrupt = || self.corrupt(&key);
            match key.split_first() {
                Some((&UPLOAD, id)) => contents.uploads.push((
                    MediaId::from_slice(id).ok_or_else(corrupt)?,
                    UploadRecord::decode(&*value).map_err(|_| corrupt())?,
                )),
                Some((&MEDIA, id)) => contents.media.push((
                    MediaId::from_slice(id).ok_or_else(corrupt)?,
                    MediaRecord::decode(&*value).map_err(|_| corrupt())?,
                )),
                Some((&OBJECT, digest)) => contents.objects.push((
                    digest.try_into().map_err(|_| corrupt())?,
                    ObjectRecord::decode(&*value).map_err(|_| corrupt())?,
                )),
                _ => return Err(corrupt()),
            }
        }
        Ok(contents)
    }

    /// Makes every change applied so far durable: sled's flush writes them to its files, the
    /// fsyncs make the files' data and metadata durable.
    pub(super) fn flush(&self) -> Result<(), IndexError> {
        let started = Instant::now();
        self.db.flush().map_err(|error| self.sled_error(error))?;
        crate::fsync::sync_tree(&self.path).map_err(|error| IndexError::Sync {
            path: self.path.clone(),
            source: error,
        })?;
        self.sync_seconds.record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Records a new unfinished upload.
    pub fn put_upload(&self, id: &MediaId, record: &UploadRecord) -> Result<(), IndexError> {
        self.db
            .insert(key(UPLOAD, id.as_bytes()), record.encode_to_vec())
            .map_err(|error| self.sled_error(error))?;
        self.flush()
    }

    /// Forgets an unfinished upload (terminated or expired).
    pub fn remove_upload(&self, id: &MediaId) -> Result<(), IndexError> {
        self.db
            .remove(key(UPLOAD, id.as_bytes()))
            .map_err(|error| self.sled_error(error))?;
        self.flush()
    }

    /// Atomically turns an upload into finished media and sets its object's record.
    pub fn complete(
        &self,
        id: &MediaId,
        media: &MediaRecord,
        digest: &Sha256Digest,
        object: &ObjectRecord,
    ) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        batch.remove(key(UPLOAD, id.as_bytes()));
        batch.insert(key(MEDIA, id.as_bytes()), media.encode_to_vec());
        batch.insert(key(OBJECT, digest), object.encode_to_vec());
        self.db
            .apply_batch(batch)
            .map_err(|error| self.sled_error(error))?;
        self.flush()
    }

    /// Atomically forgets finished media and sets (or, when `None`, removes) its object's record.
    pub fn remove_media(
        &self,
        id: &MediaId,
        digest: &Sha256Digest,
        object: Option<&ObjectRecord>,
    ) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        batch.remove(key(MEDIA, id.as_bytes()));
        match object {
            Some(object) => batch.insert(key(OBJECT, digest), object.encode_to_vec()),
            None => batch.remove(key(OBJECT, digest)),
        }
        self.db
            .apply_batch(batch)
            .map_err(|error| self.sled_error(error))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let upload = MediaId::random().unwrap();
        let done = MediaId::random().unwrap();
        let digest = [7u8; 32];
        {
            let index = Index::open(&path, 1 << 20).unwrap();
            let record = UploadRecord {
                owner: "alice".into(),
                length: 10,
                ..Default::default()
            };
            index.put_upload(&upload, &record).unwrap();
            index.put_upload(&done, &record).unwrap();
            let media = MediaRecord {
                owner: "alice".into(),
                size: 10,
                sha256: digest.to_vec().into(),
                ..Default::default()
            };
            let object = ObjectRecord {
                references: 1,
                size: 10,
            };
            index.complete(&done, &media, &digest, &object).unwrap();
        }
        let index = Index::open(&path, 1 << 20).unwrap();
        let contents = index.load().unwrap();
        assert_eq!(contents.uploads.len(), 1);
        assert_eq!(contents.uploads[0].0, upload);
        assert_eq!(contents.media.len(), 1);
        assert_eq!(contents.media[0].0, done);
        assert_eq!(
            contents.objects,
            vec![(
                digest,
                ObjectRecord {
                    references: 1,
                    size: 10
                }
            )]
        );
        index.remove_media(&done, &digest, None).unwrap();
        index.remove_upload(&upload).unwrap();
        let contents = index.load().unwrap();
        assert!(contents.uploads.is_empty() && contents.media.is_empty());
        assert!(contents.objects.is_empty());
    }
}
