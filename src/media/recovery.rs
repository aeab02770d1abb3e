//! Opening the media data at start: load the index, make every staging file durable at its
//! current size (its offset), finish uploads whose every byte had arrived, forget records whose
//! staging file vanished, and delete files that no record names.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use super::catalog::{Catalog, MediaMeta};
use super::content::ContentStore;
use super::hot_cache::HotCache;
use super::index::{Index, IndexError};
use super::layout::{Layout, remove_file_if_present};
use super::telemetry::Telemetry;
use super::upload::Upload;
use super::{Media, MediaId};
use crate::clock::now_secs;
use crate::config::Config;
use crate::proto::storage::UploadRecord;

/// Why the media server could not open its data.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A media directory or file could not be read or written.
    #[error("media data {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The index could not be opened or read.
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Media {
    /// Opens the media data under `node.data_dir/media`: loads the index, makes every staging
    /// file durable at its current size, finishes uploads that were complete when the node
    /// stopped, and deletes files no record names. Blocks on disk I/O.
    pub fn open(config: &Config) -> Result<Arc<Self>, OpenError> {
        let layout = Layout::new(&config.node.data_dir);
        layout.create().map_err(io_error(&layout.root))?;
        let index = Index::open(&layout.index, config.media.index_cache_bytes)?;
        let contents = index.load()?;
        let replicated = index.replicated_tree()?;
        let content = ContentStore::new(layout.clone(), contents.objects.into_iter().collect());
        let telemetry = Telemetry::new();
        let (objects, stored) = content.totals();
        telemetry.objects.increment(objects as f64);
        telemetry.stored_bytes.increment(stored as f64);
        let catalog = Catalog::default();
        for (id, record) in contents.media {
            let Some(meta) = MediaMeta::from_record(&record) else {
                tracing::warn!(%id, "media record without a valid hash; skipped");
                continue;
            };
            catalog.load_media(id, meta);
        }
        let media = Arc::new(Self {
            hot: HotCache::new(
                config.media.hot_cache_bytes,
                config.media.hot_cache_max_object_bytes,
            ),
            config: config.media.clone(),
            layout,
            index,
            catalog,
            content,
            telemetry,
            replicated,
            cluster: OnceLock::new(),
            refill: Default::default(),
        });
        media.load_replicated()?;
        let mut finished = Vec::new();
        for (id, record) in contents.uploads {
            if let Some(upload) = media.reopen_upload(id, &record)?
                && upload.offset() == upload.length
            {
                finished.push(upload);
            }
        }
        for upload in finished {
            // Its last PATCH was fsynced but not answered: finish it now so HEAD and GET agree.
            if let Err(error) = media.complete_blocking(&upload, None) {
                tracing::warn!(%error, id = %upload.id, "cannot finish an upload at start");
            }
        }
        media.remove_strays()?;
        Ok(media)
    }

    /// Reopens an unfinished upload at start; `None` (and its record dropped) if its staging
    /// file is gone.
    fn reopen_upload(
        &self,
        id: MediaId,
        record: &UploadRecord,
    ) -> Result<Option<Arc<Upload>>, OpenError> {
        let path = self.layout.staging_file(&id);
        let file = match fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(%id, "unfinished upload without a staging file; forgotten");
                self.index.remove_upload(&id)?;
                return Ok(None);
            }
            Err(error) => return Err(io_error(&path)(error)),
        };
        let metadata = file.metadata().map_err(io_error(&path))?;
        if metadata.len() > record.length {
            file.set_len(record.length).map_err(io_error(&path))?;
        }
        // Bytes written but not fsynced before a crash become durable before they are reported.
        file.sync_all().map_err(io_error(&path))?;
        let offset = metadata.len().min(record.length);
        let last_write = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_secs, |since| since.as_secs());
        let upload = Arc::new(Upload::new(
            id,
            record,
            offset,
            last_write + self.config.upload_expiry_secs,
            None,
        ));
        self.catalog.load_upload(upload.clone());
        self.telemetry.uploads_unfinished.increment(1.0);
        Ok(Some(upload))
    }

    /// Deletes staging files of no unfinished upload and objects of no record (a crash between
    /// a file operation and its index write leaves them).
    fn remove_strays(&self) -> Result<(), OpenError> {
        let staging = &self.layout.staging;
        let known: HashSet<MediaId> = self.catalog.uploads().iter().map(|u| u.id).collect();
        for entry in fs::read_dir(staging).map_err(io_error(staging))? {
            let path = entry.map_err(io_error(staging))?.path();
            let id = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(MediaId::parse);
            if !id.is_some_and(|id| known.contains(&id)) {
                remove_file_if_present(&path).map_err(io_error(&path))?;
            }
        }
        for (id, path) in super::replicated::part_dirs(&self.layout).map_err(io_error(staging))? {
            if !id.is_some_and(|id| known.contains(&id)) {
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
        }
        let referenced: HashSet<_> = self
            .referenced_objects()
            .map_err(|_| io_error(&self.layout.objects)(io::Error::other("replicated state")))?
            .into_iter()
            .map(|(digest, _)| digest)
            .collect();
        let removed = self
            .content
            .remove_orphans(&referenced)
            .map_err(io_error(&self.layout.objects))?;
        for digest in &referenced {
            if let Ok(metadata) = fs::metadata(self.layout.object_file(digest)) {
                self.telemetry.objects.increment(1.0);
                self.telemetry.stored_bytes.increment(metadata.len() as f64);
            }
        }
        if removed > 0 {
            tracing::warn!(removed, "removed object files without a record");
        }
        Ok(())
    }
}
