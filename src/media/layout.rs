//! Where the media server keeps its files under `node.data_dir/media`, and the directory fsyncs
//! that make new files and renames durable.
//!
//! ```text
//! media/index/          sled: upload, media and object records (never media bytes)
//! media/staging/<id>    the bytes of an unfinished upload; its size is the upload offset
//! media/objects/ab/cd…  finished content, named by its SHA-256 (64 hex digits, split 2/62)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::id::{MediaId, to_hex};

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// The paths of one node's media directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `data_dir/media`.
    pub root: PathBuf,
    /// The sled index.
    pub index: PathBuf,
    /// Unfinished uploads.
    pub staging: PathBuf,
    /// Content-addressed objects.
    pub objects: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let root = data_dir.join("media");
        Self {
            index: root.join("index"),
            staging: root.join("staging"),
            objects: root.join("objects"),
            root,
        }
    }

    /// Creates the directories that do not exist yet, durably. Blocks on disk I/O.
    pub fn create(&self) -> io::Result<()> {
        for dir in [&self.root, &self.staging, &self.objects] {
            create_dir_durably(dir)?;
        }
        Ok(())
    }

    /// The staging file of an unfinished upload.
    pub fn staging_file(&self, id: &MediaId) -> PathBuf {
        self.staging.join(id.to_string())
    }

    /// The file of the object with this digest.
    pub fn object_file(&self, sha256: &Sha256Digest) -> PathBuf {
        let hex = to_hex(sha256);
        let (fanout, rest) = hex.split_at(2);
        self.objects.join(fanout).join(rest)
    }
}

pub use crate::fsync::{create_dir_durably, sync_dir};

/// Removes a file; one that is already gone is not an error.
pub fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_fan_out_by_the_first_byte() {
        let layout = Layout::new(Path::new("/data"));
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[1] = 0xcd;
        let path = layout.object_file(&digest);
        assert!(path.starts_with("/data/media/objects/ab"), "{path:?}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 62);
        assert!(name.starts_with("cd"));
    }
}
