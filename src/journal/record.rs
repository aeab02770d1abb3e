//! The record format: `len: u32 BE | crc32c: u32 BE | lsn: u64 BE | payload`, encode and read.
//!
//! The checksum covers the lsn's 8 big-endian bytes followed by the payload, so a record copied
//! to the wrong place in the log, or a stale record left from an older write, does not check out.

use std::io::{self, Read};

use bytes::Buf;

use super::MAX_PAYLOAD_BYTES;
use super::error::Damage;

/// Bytes of a record header: length, checksum, lsn.
pub(crate) const HEADER_BYTES: usize = 16;

/// Bytes a record with `payload_len` payload bytes takes on disk.
pub(crate) fn encoded_len(payload_len: usize) -> u64 {
    (HEADER_BYTES + payload_len) as u64
}

/// The checksum stored in a record header.
fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&lsn.to_be_bytes()), payload)
}

/// Appends one encoded record to `buf`. The caller has checked the payload length.
pub(crate) fn encode(buf: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    // Lossless: payloads are refused above MAX_PAYLOAD_BYTES before they reach the writer.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&checksum(lsn, payload).to_be_bytes());
    buf.extend_from_slice(&lsn.to_be_bytes());
    buf.extend_from_slice(payload);
}

/// What reading at the current position found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A valid record with the expected lsn; its payload is in the caller's buffer.
    Record,
    /// The input ends exactly at a record boundary.
    End,
    /// A header of zeros: space allocated ahead but never written (no record's header is all
    /// zeros: lsns start at 1).
    Unwritten,
    /// The bytes at the current position are not a valid record.
    Damaged(Damage),
}

/// Reads records one after another from a segment, tracking the byte offset of the next one.
#[derive(Debug)]
pub(crate) struct RecordReader<R> {
    input: R,
    /// Offset of the first byte after the last valid record read.
    offset: u64,
}

impl<R: Read> RecordReader<R> {
    /// Reads from the start of a segment.
    pub(crate) fn new(input: R) -> Self {
        RecordReader { input, offset: 0 }
    }

    /// Offset just past the last valid record returned.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the record that must carry `expected_lsn`, leaving its payload in `payload`.
    /// The length is checked against [`MAX_PAYLOAD_BYTES`] before the buffer grows. On anything
    /// but [`Step::Record`] the offset stays at the start of the bad record.
    pub(crate) fn read(&mut self, expected_lsn: u64, payload: &mut Vec<u8>) -> io::Result<Step> {
        let mut header = [0u8; HEADER_BYTES];
        let read = read_full(&mut self.input, &mut header)?;
        if read == 0 {
            return Ok(Step::End);
        }
        // Zeros, even fewer than a header's worth at the end of the file: never a record.
        if header[..read].iter().all(|&byte| byte == 0) {
            return Ok(Step::Unwritten);
        }
        if read < HEADER_BYTES {
            return Ok(Step::Damaged(Damage::ShortRecord));
        }
        // Exactly HEADER_BYTES bytes: these reads cannot run short.
        let mut fields = &header[..];
        let len = fields.get_u32();
        let stored_crc = fields.get_u32();
        let lsn = fields.get_u64();
        if len > MAX_PAYLOAD_BYTES {
            return Ok(Step::Damaged(Damage::BadLength(len)));
        }
        payload.clear();
        payload.resize(len as usize, 0);
        if read_full(&mut self.input, payload)? != payload.len() {
            return Ok(Step::Damaged(Damage::ShortRecord));
        }
        if checksum(lsn, payload) != stored_crc {
            return Ok(Step::Damaged(Damage::BadChecksum));
        }
        if lsn != expected_lsn {
            return Ok(Step::Damaged(Damage::WrongLsn {
                expected: expected_lsn,
                found: lsn,
            }));
        }
        self.offset += encoded_len(payload.len());
        Ok(Step::Record)
    }
}

/// Fills `buf` as far as the input allows; returns how many bytes were read (short only at EOF).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
