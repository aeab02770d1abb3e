//! What open found, and a streaming iterator over the recovered records.

use std::fs::File;
use std::io::BufReader;

use bytes::Bytes;

use super::error::{Damage, JournalError};
use super::record::{RecordReader, Step};
use super::scan::{READ_BUFFER_BYTES, Span};

/// The journal's contents as found (and repaired) by [`super::Journal::open`].
///
/// Replay before releasing: [`super::Journal::release`] deletes segment files that a replay
/// still to come would need. Records appended after open are not part of a replay.
#[derive(Debug, Clone)]
pub struct Recovery {
    spans: Vec<Span>,
    next_lsn: u64,
    dropped_bytes: u64,
}

impl Recovery {
    pub(crate) fn new(spans: Vec<Span>, next_lsn: u64, dropped_bytes: u64) -> Self {
        Recovery {
            spans,
            next_lsn,
            dropped_bytes,
        }
    }

    /// The lsn the next append will get: one past the last durable record (1 for a new journal).
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The oldest lsn still in the journal (equal to [`Self::next_lsn`] when it holds none).
    pub fn oldest_lsn(&self) -> u64 {
        self.spans
            .iter()
            .find(|span| span.end_lsn > span.first_lsn)
            .map_or(self.next_lsn, |span| span.first_lsn)
    }

    /// Bytes of torn or failed tails cut off at open: non-zero after a crash mid-write (or after
    /// on-disk damage in the last segment, which looks the same). Worth logging.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Every record with an lsn greater than `after_lsn`, in lsn order, read lazily segment by
    /// segment. Pass the last checkpointed lsn (0 for everything). Fails with
    /// [`JournalError::Released`] if some of those records were already released.
    pub fn records_after(&self, after_lsn: u64) -> Result<Replay, JournalError> {
        let oldest = self.oldest_lsn();
        if after_lsn.saturating_add(1) < oldest {
            return Err(JournalError::Released {
                after: after_lsn,
                oldest,
            });
        }
        let spans = self
            .spans
            .iter()
            .filter(|span| span.end_lsn > after_lsn.saturating_add(1).max(span.first_lsn))
            .cloned()
            .collect();
        Ok(Replay {
            spans,
            index: 0,
            after_lsn,
            reader: None,
            failed: false,
        })
    }
}

/// Iterator over recovered `(lsn, payload)` records; one segment file is open at a time, and one
/// payload is allocated per record. It yields an error once (then ends) if a file cannot be read
/// or no longer matches what open validated.
#[derive(Debug)]
pub struct Replay {
    spans: Vec<Span>,
    index: usize,
    after_lsn: u64,
    reader: Option<(RecordReader<BufReader<File>>, u64)>,
    failed: bool,
}

impl Replay {
    /// The next record, reading the segments in order; skips records up to `after_lsn`.
    fn advance(&mut self) -> Result<Option<(u64, Bytes)>, JournalError> {
        loop {
            let Some(span) = self.spans.get(self.index) else {
                return Ok(None);
            };
            let (reader, next_lsn) = match &mut self.reader {
                Some(open) => open,
                None => {
                    let file = File::open(&span.path)
                        .map_err(|error| JournalError::io(&span.path, error))?;
                    let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
                    self.reader
                        .insert((RecordReader::new(reader), span.first_lsn))
                }
            };
            if *next_lsn >= span.end_lsn {
                self.reader = None;
                self.index += 1;
                continue;
            }
            let lsn = *next_lsn;
            let mut payload = Vec::new();
            let step = reader
                .read(lsn, &mut payload)
                .map_err(|error| JournalError::io(&span.path, error))?;
            match step {
                Step::Record => {
                    *next_lsn += 1;
                    if lsn > self.after_lsn {
                        return Ok(Some((lsn, Bytes::from(payload))));
                    }
                }
                Step::End | Step::Unwritten => {
                    return Err(corrupt(span, reader.offset(), Damage::ShortRecord));
                }
                Step::Damaged(damage) => return Err(corrupt(span, reader.offset(), damage)),
            }
        }
    }
}

fn corrupt(span: &Span, offset: u64, damage: Damage) -> JournalError {
    JournalError::Corrupt {
        segment: span.path.clone(),
        offset,
        damage,
    }
}

impl Iterator for Replay {
    type Item = Result<(u64, Bytes), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.advance() {
            Ok(record) => record.map(Ok),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
