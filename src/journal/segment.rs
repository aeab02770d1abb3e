//! Segment files on disk: `{first_lsn:020}.wal` names, listing, creation, allocation and
//! directory fsync.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::JournalError;

/// File name extension of segments.
const EXTENSION: &str = "wal";
/// Digits of the zero-padded first lsn in a segment's name (u64::MAX has 20).
const NAME_DIGITS: usize = 20;

/// One segment file: its first lsn (from its name) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    /// The lsn of the first record the segment holds (or will hold, if it is empty).
    pub(crate) first_lsn: u64,
    /// Full path of the file.
    pub(crate) path: PathBuf,
}

/// The path of the segment whose first record is `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:0NAME_DIGITS$}.{EXTENSION}"))
}

/// The first lsn encoded in a segment file name, or `None` if the name is not a segment's.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&lsn| lsn > 0)
}

/// Every segment in `dir`, oldest first. Other files are left alone (a `.wal` file with a name
/// that is not a segment's is logged).
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|error| JournalError::io(dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| JournalError::io(dir, error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            Some(first_lsn) => segments.push(SegmentFile {
                first_lsn,
                path: entry.path(),
            }),
            None if name.ends_with(EXTENSION) => {
                let file = entry.path();
                tracing::warn!(file = %file.display(), "journal: ignoring a stray .wal file");
            }
            None => {}
        }
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// Creates the empty segment starting at `first_lsn` and makes its name durable. A file that
/// already has that name is emptied: it can only hold records that were never acknowledged
/// (every acknowledged record has an lsn below `first_lsn`).
pub(crate) fn create(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf), JournalError> {
    let path = segment_path(dir, first_lsn);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| JournalError::io(&path, error))?;
    let len = file
        .metadata()
        .map_err(|error| JournalError::io(&path, error))?
        .len();
    if len > 0 {
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|error| JournalError::io(&path, error))?;
    }
    sync_dir(dir)?;
    Ok((file, path))
}

/// Opens an existing segment for writing (records go at explicit offsets).
pub(crate) fn open_for_writing(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| JournalError::io(path, error))
}

/// Allocates disk space for the first `bytes` of `file` (growing its size to that, the new part
/// reading as zeros), so later writes there do not grow the file. Best effort: a file system
/// without room or without `fallocate` leaves the file as it was, and writes grow it instead.
pub(crate) fn allocate(file: &File, path: &Path, bytes: u64) {
    if let Err(error) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        tracing::debug!(segment = %path.display(), bytes, %error,
            "journal: cannot allocate segment; it grows as it is written");
    }
}

/// Cuts `path` to `len` bytes and makes the cut durable (file, then directory).
pub(crate) fn truncate(dir: &Path, path: &Path, len: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| JournalError::io(path, error))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|error| JournalError::io(path, error))?;
    sync_dir(dir)
}

/// Fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    crate::fsync::sync_dir(dir).map_err(|error| JournalError::io(dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_rejected() {
        let path = segment_path(Path::new("/j"), 42);
        assert_eq!(path, Path::new("/j/00000000000000000042.wal"));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap();
        assert_eq!(parse_name(name), Some(42));
        assert_eq!(parse_name("00000000000000000000.wal"), None);
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_name("00000000000000000042.wal.tmp"), None);
        assert_eq!(parse_name("LOCK"), None);
    }
}
