//! [`WriteBatch`]: the writes one `write_batch` applies to a shard, all or none, encoded one after
//! the other in a single buffer.
//!
//! A write-back batch holds a few writes for each of thousands of mailboxes, and the store thread
//! keeps it after applying it (its replay log). As a list of writes each owning its keys and
//! values, that was several small allocations per write, made on a mailbox worker, freed on the
//! store thread later, interleaved in the allocator's pages with long-lived ones: pages that
//! could not be returned once the batch was gone. In one buffer a batch is one allocation (grown
//! by doubling) that is returned whole.
//!
//! Layout of each write: a tag byte, then its fields in declaration order; byte strings as a
//! LEB128 length and the bytes, numbers as LEB128.

use super::error::StoreError;
use super::keys;

/// One write of a batch, borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write<'a> {
    PutEntry {
        owner: &'a [u8],
        seq: u64,
        value: &'a [u8],
    },
    DeleteEntriesUpTo {
        owner: &'a [u8],
        up_to_seq: u64,
    },
    PutCursor {
        owner: &'a [u8],
        device: &'a str,
        seq: u64,
    },
    DeleteCursor {
        owner: &'a [u8],
        device: &'a str,
    },
    PutMeta {
        owner: &'a [u8],
        value: &'a [u8],
    },
    DeleteMeta {
        owner: &'a [u8],
    },
    PutRecord {
        key: &'a [u8],
        value: &'a [u8],
    },
    DeleteRecord {
        key: &'a [u8],
    },
}

/// The tag byte of each kind of write.
mod tag {
    pub(super) const PUT_ENTRY: u8 = 1;
    pub(super) const DELETE_ENTRIES_UP_TO: u8 = 2;
    pub(super) const PUT_CURSOR: u8 = 3;
    pub(super) const DELETE_CURSOR: u8 = 4;
    pub(super) const PUT_META: u8 = 5;
    pub(super) const DELETE_META: u8 = 6;
    pub(super) const PUT_RECORD: u8 = 7;
    pub(super) const DELETE_RECORD: u8 = 8;
}

/// Writes to one shard's trees, applied in the order they were added, atomically (see the
/// module documentation). Keys and sizes are checked when the batch is submitted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The encoded writes (see the module documentation).
    buffer: Vec<u8>,
    /// How many writes `buffer` holds.
    count: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Stores mailbox entry `seq` of `owner` (replacing one with the same seq).
    pub fn put_entry(&mut self, owner: &[u8], seq: u64, value: impl AsRef<[u8]>) -> &mut Self {
        self.start(tag::PUT_ENTRY)
            .bytes(owner)
            .number(seq)
            .bytes(value.as_ref())
    }

    /// Deletes every entry of `owner` with a seq up to and including `up_to_seq`, including
    /// those put earlier in this batch.
    pub fn delete_entries_up_to(&mut self, owner: &[u8], up_to_seq: u64) -> &mut Self {
        self.start(tag::DELETE_ENTRIES_UP_TO)
            .bytes(owner)
            .number(up_to_seq)
    }

    /// Sets the ack cursor of `owner`'s `device` to `seq`.
    pub fn put_cursor(&mut self, owner: &[u8], device: &str, seq: u64) -> &mut Self {
        self.start(tag::PUT_CURSOR)
            .bytes(owner)
            .bytes(device.as_bytes())
            .number(seq)
    }

    /// Forgets the cursor of `owner`'s `device`.
    pub fn delete_cursor(&mut self, owner: &[u8], device: &str) -> &mut Self {
        self.start(tag::DELETE_CURSOR)
            .bytes(owner)
            .bytes(device.as_bytes())
    }

    /// Sets `owner`'s metadata (opaque to the store; the mailbox keeps e.g. its last seq).
    pub fn put_meta(&mut self, owner: &[u8], value: impl AsRef<[u8]>) -> &mut Self {
        self.start(tag::PUT_META).bytes(owner).bytes(value.as_ref())
    }

    /// Deletes `owner`'s metadata.
    pub fn delete_meta(&mut self, owner: &[u8]) -> &mut Self {
        self.start(tag::DELETE_META).bytes(owner)
    }

    /// Stores a keyed record (an account, a group...).
    pub fn put_record(&mut self, key: &[u8], value: impl AsRef<[u8]>) -> &mut Self {
        self.start(tag::PUT_RECORD).bytes(key).bytes(value.as_ref())
    }

    /// Deletes a keyed record.
    pub fn delete_record(&mut self, key: &[u8]) -> &mut Self {
        self.start(tag::DELETE_RECORD).bytes(key)
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes the batch occupies (its buffer as allocated: keys, values, their framing and
    /// the room left by its growth), for memory bounds.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.buffer.capacity() + std::mem::size_of::<Self>()
    }

    /// Checks every key and value against the key rules and [`keys::MAX_VALUE_BYTES`].
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        for write in self.writes() {
            match write? {
                Write::PutEntry { owner, value, .. } | Write::PutMeta { owner, value } => {
                    keys::check_owner(owner)?;
                    keys::check_value(value)?;
                }
                Write::DeleteEntriesUpTo { owner, .. } | Write::DeleteMeta { owner } => {
                    keys::check_owner(owner)?;
                }
                Write::PutCursor { owner, device, .. } | Write::DeleteCursor { owner, device } => {
                    keys::check_owner(owner)?;
                    keys::check_device(device)?;
                }
                Write::PutRecord { key, value } => {
                    keys::check_record_key(key)?;
                    keys::check_value(value)?;
                }
                Write::DeleteRecord { key } => keys::check_record_key(key)?,
            }
        }
        Ok(())
    }

    /// The writes, in order. Only this module encodes the buffer, so an error (a write that
    /// does not decode) would be a bug here; it ends the iteration.
    pub(crate) fn writes(&self) -> Writes<'_> {
        Writes { rest: &self.buffer }
    }

    /// Begins a write of kind `tag`.
    fn start(&mut self, tag: u8) -> &mut Self {
        self.count += 1;
        self.buffer.push(tag);
        self
    }

    /// Appends a length-prefixed byte string.
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        // usize is at most 64 bits on every target Rust supports.
        self.number(bytes.len() as u64);
        self.buffer.extend_from_slice(bytes);
        self
    }

    /// Appends `value` as LEB128: 7 bits a byte, low bits first, the high bit set on every byte
    /// but the last.
    fn number(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.buffer.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buffer.push(value as u8);
        self
    }
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.writes()).finish()
    }
}

/// The writes of a [`WriteBatch`], decoded one at a time from its buffer.
#[derive(Debug, Clone)]
pub(crate) struct Writes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Writes<'a> {
    type Item = Result<Write<'a>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let decoded = self.decode();
        if decoded.is_none() {
            self.rest = &[];
        }
        Some(decoded.ok_or_else(|| StoreError::Corrupt("write batch does not decode".to_owned())))
    }
}

impl<'a> Writes<'a> {
    /// The next write; `None` when the buffer does not hold one.
    fn decode(&mut self) -> Option<Write<'a>> {
        let (&tag, rest) = self.rest.split_first()?;
        self.rest = rest;
        let write = match tag {
            tag::PUT_ENTRY => Write::PutEntry {
                owner: self.bytes()?,
                seq: self.number()?,
                value: self.bytes()?,
            },
            tag::DELETE_ENTRIES_UP_TO => Write::DeleteEntriesUpTo {
                owner: self.bytes()?,
                up_to_seq: self.number()?,
            },
            tag::PUT_CURSOR => Write::PutCursor {
                owner: self.bytes()?,
                device: self.text()?,
                seq: self.number()?,
            },
            tag::DELETE_CURSOR => Write::DeleteCursor {
                owner: self.bytes()?,
                device: self.text()?,
            },
            tag::PUT_META => Write::PutMeta {
                owner: self.bytes()?,
                value: self.bytes()?,
            },
            tag::DELETE_META => Write::DeleteMeta {
                owner: self.bytes()?,
            },
            tag::PUT_RECORD => Write::PutRecord {
                key: self.bytes()?,
                value: self.bytes()?,
            },
            tag::DELETE_RECORD => Write::DeleteRecord { key: self.bytes()? },
            _ => return None,
        };
        Some(write)
    }

    fn number(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (index, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.rest = self.rest.get(index + 1..)?;
                return Some(value);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.number()?).ok()?;
        let (bytes, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(bytes)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_come_back_in_order_with_their_fields() {
        let big = vec![7u8; 300];
        let mut batch = WriteBatch::new();
        batch
            .put_entry(b"alice", u64::MAX, b"hello".as_slice())
            .delete_entries_up_to(b"alice", 128)
            .put_cursor(b"bob", "phone", 0)
            .delete_cursor(b"bob", "tablet")
            .put_meta(b"carol", &big)
            .delete_meta(b"carol")
            .put_record(b"", b"".as_slice())
            .delete_record(b"group/x");
        let writes: Vec<Write<'_>> = batch.writes().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            writes,
            [
                Write::PutEntry {
                    owner: b"alice",
                    seq: u64::MAX,
                    value: b"hello"
                },
                Write::DeleteEntriesUpTo {
                    owner: b"alice",
                    up_to_seq: 128
                },
                Write::PutCursor {
                    owner: b"bob",
                    device: "phone",
                    seq: 0
                },
                Write::DeleteCursor {
                    owner: b"bob",
                    device: "tablet"
                },
                Write::PutMeta {
                    owner: b"carol",
                    value: &big
                },
                Write::DeleteMeta { owner: b"carol" },
                Write::PutRecord {
                    key: b"",
                    value: b""
                },
                Write::DeleteRecord { key: b"group/x" },
            ]
        );
        assert_eq!(batch.len(), 8);
        assert!(!batch.is_empty());
        assert!(WriteBatch::new().is_empty());
    }

    #[test]
    fn a_batch_is_one_buffer_of_its_keys_and_values() {
        // The write-back of an idle account: its metadata and one cursor.
        let meta = [0u8; 40];
        let mut batch = WriteBatch::new();
        batch
            .put_meta(b"user-00001", meta)
            .put_cursor(b"user-00001", "phone", 3);
        // Tag and length bytes aside, nothing but the keys and values.
        assert_eq!(
            batch.buffer.len(),
            (1 + 1 + 10 + 1 + 40) + (1 + 1 + 10 + 1 + 5 + 1)
        );
    }

    #[test]
    fn a_truncated_buffer_is_an_error_then_the_end() {
        let mut batch = WriteBatch::new();
        batch.put_meta(b"alice", b"value".as_slice());
        batch.buffer.pop();
        let mut writes = batch.writes();
        assert!(matches!(writes.next(), Some(Err(StoreError::Corrupt(_)))));
        assert!(writes.next().is_none());
        assert!(batch.check().is_err());
    }

    #[test]
    fn check_refuses_bad_keys_and_values() {
        let mut batch = WriteBatch::new();
        batch.put_cursor(b"", "phone", 1);
        assert!(batch.check().is_err());
        let mut batch = WriteBatch::new();
        batch.put_record(b"k", vec![0u8; keys::MAX_VALUE_BYTES + 1]);
        assert!(matches!(
            batch.check(),
            Err(StoreError::ValueTooLarge { .. })
        ));
    }
}
