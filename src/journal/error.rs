//! Why a journal operation failed, and what is wrong with a damaged record.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the journal. Cloneable: one failed batch completes every record in it with the
/// same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The append queue is full; the caller should shed load (answer `OVERLOADED`) and retry.
    #[error("journal queue is full")]
    Overloaded,
    /// The journal thread is not running: the journal was closed, or its thread died.
    #[error("journal is closed")]
    Closed,
    /// A payload larger than [`super::MAX_PAYLOAD_BYTES`] was refused before being queued.
    #[error("journal payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The disk quota (`max_disk_bytes`) is reached or the device has no space left. Records
    /// that failed with this are not durable; appends work again once space is released.
    #[error("journal disk is full (quota reached or no space left on device)")]
    DiskFull,
    /// A read, write, fsync or directory operation failed; the records it concerned are not
    /// durable.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error, shared between the records of one failed batch.
        source: Arc<io::Error>,
    },
    /// A segment other than the last one is damaged: acknowledged records were lost, and
    /// recovery refuses to guess. Needs an operator.
    #[error("journal segment {} is corrupt at offset {offset}: {damage}", segment.display())]
    Corrupt {
        /// The damaged segment file.
        segment: PathBuf,
        /// Byte offset of the first record that does not check out.
        offset: u64,
        /// What is wrong there.
        damage: Damage,
    },
    /// Another journal (in this process or another one) holds the directory's lock.
    #[error("journal directory {} is locked by another journal", dir.display())]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// The configuration is invalid; every problem is listed.
    #[error("invalid journal configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// Replay was asked for records that were already released (deleted) from the journal.
    #[error("journal records after lsn {after} were released; the oldest kept is {oldest}")]
    Released {
        /// The lsn replay was asked to start after.
        after: u64,
        /// The oldest lsn still in the journal.
        oldest: u64,
    },
    /// The journal thread panicked; records still queued were never completed.
    #[error("journal thread panicked")]
    WriterPanicked,
}

impl JournalError {
    /// Wraps an I/O error on `path`, classifying "no space left" as [`JournalError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            return JournalError::DiskFull;
        }
        JournalError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// What is wrong with a record that does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record header or payload (a torn write).
    ShortRecord,
    /// The length field exceeds [`super::MAX_PAYLOAD_BYTES`].
    BadLength(u32),
    /// The checksum does not match the lsn and payload.
    BadChecksum,
    /// The record's lsn is not the one that must come next.
    WrongLsn {
        /// The lsn that must come next.
        expected: u64,
        /// The lsn in the record.
        found: u64,
    },
    /// The segment ends before the next segment begins: records in between are missing.
    Gap {
        /// The first missing lsn.
        missing_from: u64,
        /// The first lsn of the next segment.
        next_segment: u64,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::ShortRecord => write!(f, "file ends inside a record"),
            Damage::BadLength(len) => write!(f, "record length {len} exceeds the limit"),
            Damage::BadChecksum => write!(f, "checksum mismatch"),
            Damage::WrongLsn { expected, found } => {
                write!(f, "expected lsn {expected}, found {found}")
            }
            Damage::Gap {
                missing_from,
                next_segment,
            } => write!(
                f,
                "records {missing_from}..{next_segment} are missing before the next segment"
            ),
        }
    }
}
