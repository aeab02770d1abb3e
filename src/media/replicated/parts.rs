//! The part files of unfinished replicated uploads: `media/parts/<id>/<start>-<token>`, the
//! bytes `start..` of upload `id` as the request drawing `token` sent them. Each request writes
//! its own file, appending only, so two writers of one upload (a phone resuming on another node
//! while its old request still runs) never mix their bytes; the log says which parts count.
//! Every function blocks on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::super::id::MediaId;
use super::super::layout::{Layout, create_dir_durably, sync_dir};

fn dir(layout: &Layout, id: &MediaId) -> PathBuf {
    layout.root.join("parts").join(id.to_string())
}

fn path(layout: &Layout, id: &MediaId, start: u64, token: u64) -> PathBuf {
    dir(layout, id).join(format!("{start}-{token:016x}"))
}

/// Appends `data` at upload offset `offset` to the part (`start`, `token`) of `id` when the part
/// ends exactly there, durably (fdatasync; a new file's directory too). Returns the offset the
/// part ends at afterwards: `offset + data.len()` when written (or already there), less when
/// the part is missing earlier bytes.
pub fn write(
    layout: &Layout,
    id: &MediaId,
    start: u64,
    token: u64,
    offset: u64,
    data: &[u8],
) -> io::Result<u64> {
    let file_path = path(layout, id, start, token);
    let fresh = !file_path.exists();
    if fresh {
        create_dir_durably(&layout.root.join("parts"))?;
        create_dir_durably(&dir(layout, id))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file_path)?;
    if fresh {
        sync_dir(&dir(layout, id))?;
    }
    let end = start + file.metadata()?.len();
    if end != offset {
        return Ok(end);
    }
    file.write_all(data)?;
    file.sync_data()?;
    Ok(end + data.len() as u64)
}

/// Up to `length` bytes at upload offset `offset` of the part (`start`, `token`) of `id`: fewer
/// at the end of what this node holds; `None` when it holds none of the part.
pub fn read(
    layout: &Layout,
    id: &MediaId,
    start: u64,
    token: u64,
    offset: u64,
    length: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path(layout, id, start, token)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    read_at(&mut file, offset.saturating_sub(start), length).map(Some)
}

/// Up to `length` bytes of `file` at `at` (fewer at its end).
pub fn read_at(file: &mut File, at: u64, length: usize) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(at))?;
    let mut data = Vec::with_capacity(length);
    file.take(length as u64).read_to_end(&mut data)?;
    Ok(data)
}

/// Deletes every part of `id` (finished, terminated or expired).
pub fn remove(layout: &Layout, id: &MediaId) -> io::Result<()> {
    match fs::remove_dir_all(dir(layout, id)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The ids that have part directories (at start, to remove those of no upload).
pub fn ids(layout: &Layout) -> io::Result<Vec<(Option<MediaId>, PathBuf)>> {
    let root = layout.root.join("parts");
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(MediaId::parse);
        ids.push((id, path));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_append_only_where_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let id = MediaId::random().unwrap();
        assert_eq!(write(&layout, &id, 10, 7, 10, b"abc").unwrap(), 13);
        // A retry of the same piece, and a piece past a gap, change nothing.
        assert_eq!(write(&layout, &id, 10, 7, 10, b"abc").unwrap(), 13);
        assert_eq!(write(&layout, &id, 10, 7, 20, b"zz").unwrap(), 13);
        assert_eq!(write(&layout, &id, 10, 7, 13, b"de").unwrap(), 15);
        // Another writer's part of the same upload is a file of its own.
        assert_eq!(write(&layout, &id, 10, 8, 10, b"XY").unwrap(), 12);
        assert_eq!(
            read(&layout, &id, 10, 7, 11, 100).unwrap().unwrap(),
            b"bcde"
        );
        assert_eq!(read(&layout, &id, 10, 8, 10, 1).unwrap().unwrap(), b"X");
        assert!(read(&layout, &id, 0, 7, 0, 1).unwrap().is_none());
        assert_eq!(ids(&layout).unwrap().len(), 1);
        remove(&layout, &id).unwrap();
        assert!(read(&layout, &id, 10, 7, 10, 1).unwrap().is_none());
        assert!(ids(&layout).unwrap().is_empty());
    }
}
