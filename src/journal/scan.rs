//! Recovery at open: validates every segment in order and cuts off a torn tail.
//!
//! Rules: the last segment may end in a torn or corrupt tail (a batch that was being written
//! when the process died); it is truncated at the last good record. Any other segment must run
//! without damage up to the first lsn of the next segment, or the journal is corrupt. Records a
//! segment holds at or past the next segment's first lsn belong to a batch that failed and was
//! superseded (the writer could not truncate it and moved to a fresh segment); they are cut off.
//! A tail of zeros is space allocated ahead ([`super::JournalConfig::preallocate`]) and never
//! written: it is cut off too, but it is not damage and not counted as dropped.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::error::{Damage, JournalError};
use super::record::{RecordReader, Step};
use super::segment::{self, SegmentFile};

/// Read buffer for scanning and replaying segments.
pub(crate) const READ_BUFFER_BYTES: usize = 256 * 1024;

/// One validated segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// Where the segment is.
    pub(crate) path: PathBuf,
    /// Lsn of its first record.
    pub(crate) first_lsn: u64,
    /// One past the lsn of its last valid record (`first_lsn` if it is empty).
    pub(crate) end_lsn: u64,
    /// Bytes of valid records; the file is this long after the scan.
    pub(crate) len: u64,
}

/// What the scan found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Every segment, oldest first; may be empty for a new journal.
    pub(crate) spans: Vec<Span>,
    /// Bytes cut off torn or superseded tails.
    pub(crate) dropped_bytes: u64,
}

/// How far one segment's records check out.
struct Extent {
    end_lsn: u64,
    valid_len: u64,
    file_len: u64,
    damage: Option<Damage>,
    /// What follows the last valid record is zeros (or nothing).
    unwritten: bool,
}

/// Validates every segment in `dir`, truncating a torn tail of the last one (and superseded
/// tails of others), each cut fsynced with the directory.
pub(crate) fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let files = segment::list(dir)?;
    let mut spans = Vec::with_capacity(files.len());
    let mut dropped_bytes = 0;
    let mut payload = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let next_first_lsn = files.get(index + 1).map(|next| next.first_lsn);
        let extent = read_extent(file, next_first_lsn, &mut payload)?;
        if let Some(next_first_lsn) = next_first_lsn
            && extent.end_lsn != next_first_lsn
        {
            return Err(JournalError::Corrupt {
                segment: file.path.clone(),
                offset: extent.valid_len,
                damage: extent.damage.unwrap_or(Damage::Gap {
                    missing_from: extent.end_lsn,
                    next_segment: next_first_lsn,
                }),
            });
        }
        if extent.file_len > extent.valid_len {
            let dropped = extent.file_len - extent.valid_len;
            match extent.damage {
                Some(damage) => tracing::warn!(
                    segment = %file.path.display(), offset = extent.valid_len, dropped,
                    %damage, "journal: truncating torn tail"
                ),
                None if extent.unwritten => tracing::debug!(
                    segment = %file.path.display(), offset = extent.valid_len, bytes = dropped,
                    "journal: truncating the unwritten part of an allocated segment"
                ),
                None => tracing::warn!(
                    segment = %file.path.display(), offset = extent.valid_len, dropped,
                    "journal: truncating records of a failed batch"
                ),
            }
            segment::truncate(dir, &file.path, extent.valid_len)?;
            if extent.damage.is_some() || !extent.unwritten {
                dropped_bytes += dropped;
            }
        }
        spans.push(Span {
            path: file.path.clone(),
            first_lsn: file.first_lsn,
            end_lsn: extent.end_lsn,
            len: extent.valid_len,
        });
    }
    Ok(Scan {
        spans,
        dropped_bytes,
    })
}

/// Reads `file`'s records until the end, the first damage, or `stop_lsn` (the next segment's
/// first lsn).
fn read_extent(
    file: &SegmentFile,
    stop_lsn: Option<u64>,
    payload: &mut Vec<u8>,
) -> Result<Extent, JournalError> {
    let handle = File::open(&file.path).map_err(|error| JournalError::io(&file.path, error))?;
    let file_len = handle
        .metadata()
        .map_err(|error| JournalError::io(&file.path, error))?
        .len();
    let mut reader = RecordReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, handle));
    let mut expected_lsn = file.first_lsn;
    let mut damage = None;
    loop {
        let valid_len = reader.offset();
        let step = reader
            .read(expected_lsn, payload)
            .map_err(|error| JournalError::io(&file.path, error))?;
        let unwritten = match step {
            // At the next segment's first lsn only a superseded batch or zeros may follow.
            _ if stop_lsn == Some(expected_lsn) => matches!(step, Step::End | Step::Unwritten),
            Step::Record => {
                expected_lsn += 1;
                continue;
            }
            Step::End | Step::Unwritten => true,
            Step::Damaged(found) => {
                damage = Some(found);
                false
            }
        };
        return Ok(Extent {
            end_lsn: expected_lsn,
            valid_len,
            file_len,
            damage,
            unwritten,
        });
    }
}
