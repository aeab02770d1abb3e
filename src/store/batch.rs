//! [`WriteBatch`]: the writes one `write_batch` applies to a shard, all or none.

use bytes::Bytes;

use super::error::StoreError;
use super::keys;

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    PutEntry {
        owner: Bytes,
        seq: u64,
        value: Bytes,
    },
    DeleteEntriesUpTo {
        owner: Bytes,
        up_to_seq: u64,
    },
    PutCursor {
        owner: Bytes,
        device: String,
        seq: u64,
    },
    DeleteCursor {
        owner: Bytes,
        device: String,
    },
    PutMeta {
        owner: Bytes,
        value: Bytes,
    },
    DeleteMeta {
        owner: Bytes,
    },
    PutRecord {
        key: Bytes,
        value: Bytes,
    },
    DeleteRecord {
        key: Bytes,
    },
}

/// Writes to one shard's trees, applied in the order they were added, atomically (see the
/// module documentation). Keys and sizes are checked when the batch is submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    writes: Vec<Write>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Stores mailbox entry `seq` of `owner` (replacing one with the same seq).
    pub fn put_entry(&mut self, owner: &[u8], seq: u64, value: Bytes) -> &mut Self {
        self.push(Write::PutEntry {
            owner: Bytes::copy_from_slice(owner),
            seq,
            value,
        })
    }

    /// Deletes every entry of `owner` with a seq up to and including `up_to_seq`, including
    /// those put earlier in this batch.
    pub fn delete_entries_up_to(&mut self, owner: &[u8], up_to_seq: u64) -> &mut Self {
        self.push(Write::DeleteEntriesUpTo {
            owner: Bytes::copy_from_slice(owner),
            up_to_seq,
        })
    }

    /// Sets the ack cursor of `owner`'s `device` to `seq`.
    pub fn put_cursor(&mut self, owner: &[u8], device: &str, seq: u64) -> &mut Self {
        self.push(Write::PutCursor {
            owner: Bytes::copy_from_slice(owner),
            device: device.to_owned(),
            seq,
        })
    }

    /// Forgets the cursor of `owner`'s `device`.
    pub fn delete_cursor(&mut self, owner: &[u8], device: &str) -> &mut Self {
        self.push(Write::DeleteCursor {
            owner: Bytes::copy_from_slice(owner),
            device: device.to_owned(),
        })
    }

    /// Sets `owner`'s metadata (opaque to the store; the mailbox keeps e.g. its last seq).
    pub fn put_meta(&mut self, owner: &[u8], value: Bytes) -> &mut Self {
        self.push(Write::PutMeta {
            owner: Bytes::copy_from_slice(owner),
            value,
        })
    }

    /// Deletes `owner`'s metadata.
    pub fn delete_meta(&mut self, owner: &[u8]) -> &mut Self {
        self.push(Write::DeleteMeta {
            owner: Bytes::copy_from_slice(owner),
        })
    }

    /// Stores a keyed record (an account, a group...).
    pub fn put_record(&mut self, key: &[u8], value: Bytes) -> &mut Self {
        self.push(Write::PutRecord {
            key: Bytes::copy_from_slice(key),
            value,
        })
    }

    /// Deletes a keyed record.
    pub fn delete_record(&mut self, key: &[u8]) -> &mut Self {
        self.push(Write::DeleteRecord {
            key: Bytes::copy_from_slice(key),
        })
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Roughly the bytes the batch holds (keys and values), for memory bounds.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.writes
            .iter()
            .map(|write| match write {
                Write::PutEntry { owner, value, .. } | Write::PutMeta { owner, value } => {
                    owner.len() + value.len() + 16
                }
                Write::PutRecord { key, value } => key.len() + value.len(),
                Write::DeleteEntriesUpTo { owner, .. } | Write::DeleteMeta { owner } => {
                    owner.len() + 8
                }
                Write::PutCursor { owner, device, .. } | Write::DeleteCursor { owner, device } => {
                    owner.len() + device.len() + 8
                }
                Write::DeleteRecord { key } => key.len(),
            })
            .sum::<usize>()
            + 64
    }

    fn push(&mut self, write: Write) -> &mut Self {
        self.writes.push(write);
        self
    }

    /// Checks every key and value against the key rules and [`keys::MAX_VALUE_BYTES`].
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        for write in &self.writes {
            match write {
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

    /// The writes, in order.
    pub(crate) fn writes(&self) -> &[Write] {
        &self.writes
    }
}
