//! Tree names and key encodings (documented in the module doc of [`super`]), and the size rules.

use super::error::StoreError;

/// Largest value accepted (entry, meta or record), in bytes. sled writes a page larger than
/// about 128 KiB to a separate blob file, which its flushes never fsync; small values keep
/// pages small (and the checkpoint fsyncs blob files too).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest owner (user or group id), in bytes.
pub const MAX_OWNER_BYTES: usize = 255;
/// Longest device id, in bytes.
pub const MAX_DEVICE_BYTES: usize = 255;
/// Longest record key, in bytes.
pub const MAX_RECORD_KEY_BYTES: usize = 1024;

/// Separates the owner from the rest of a key; owners never contain it.
const SEPARATOR: u8 = 0x00;
/// Bytes of a big-endian sequence number.
const SEQ_BYTES: usize = 8;

/// The four trees every logical shard has, in the order a write transaction takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// Mailbox entries: `owner ‖ 0x00 ‖ seq`.
    Entries,
    /// Device cursors: `owner ‖ 0x00 ‖ device`.
    Cursors,
    /// An owner's metadata: `owner`.
    Meta,
    /// Keyed records.
    Records,
}

impl TreeKind {
    fn suffix(self) -> &'static str {
        match self {
            TreeKind::Entries => "entries",
            TreeKind::Cursors => "cursors",
            TreeKind::Meta => "meta",
            TreeKind::Records => "records",
        }
    }
}

/// The name of one tree of a shard: `s{shard:02}/{kind}`.
pub(crate) fn tree_name(shard: usize, kind: TreeKind) -> String {
    format!("s{shard:02}/{}", kind.suffix())
}

/// Checks an owner: 1 to [`MAX_OWNER_BYTES`] bytes, none of them 0x00.
pub(crate) fn check_owner(owner: &[u8]) -> Result<(), StoreError> {
    if owner.is_empty() || owner.len() > MAX_OWNER_BYTES {
        return Err(StoreError::invalid_key(format!(
            "owner must be 1 to {MAX_OWNER_BYTES} bytes, not {}",
            owner.len()
        )));
    }
    if owner.contains(&SEPARATOR) {
        return Err(StoreError::invalid_key(
            "owner must not contain a 0x00 byte",
        ));
    }
    Ok(())
}

/// Checks a device id: 1 to [`MAX_DEVICE_BYTES`] bytes.
pub(crate) fn check_device(device: &str) -> Result<(), StoreError> {
    if device.is_empty() || device.len() > MAX_DEVICE_BYTES {
        return Err(StoreError::invalid_key(format!(
            "device must be 1 to {MAX_DEVICE_BYTES} bytes, not {}",
            device.len()
        )));
    }
    Ok(())
}

/// Checks a record key (or a prefix of one): at most [`MAX_RECORD_KEY_BYTES`] bytes.
pub(crate) fn check_record_key(key: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_RECORD_KEY_BYTES {
        return Err(StoreError::invalid_key(format!(
            "record key must be at most {MAX_RECORD_KEY_BYTES} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub(crate) fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// `owner ‖ 0x00`: the prefix of every entry and cursor key of `owner`.
pub(crate) fn owner_prefix(owner: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 1 + SEQ_BYTES);
    key.extend_from_slice(owner);
    key.push(SEPARATOR);
    key
}

/// `owner ‖ 0x00 ‖ seq (u64 BE)`: an entry key; one owner's entries sort by seq.
pub(crate) fn entry_key(owner: &[u8], seq: u64) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of an entry key of an owner `owner_len` bytes long.
pub(crate) fn entry_seq(owner_len: usize, key: &[u8]) -> Result<u64, StoreError> {
    key.get(owner_len + 1..)
        .and_then(|tail| <[u8; SEQ_BYTES]>::try_from(tail).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("entry key of {} bytes", key.len())))
}

/// `owner ‖ 0x00 ‖ device`: a cursor key.
pub(crate) fn cursor_key(owner: &[u8], device: &str) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(device.as_bytes());
    key
}

/// The device of a cursor key of an owner `owner_len` bytes long.
pub(crate) fn cursor_device(owner_len: usize, key: &[u8]) -> Result<String, StoreError> {
    let tail = key
        .get(owner_len + 1..)
        .ok_or_else(|| StoreError::Corrupt(format!("cursor key of {} bytes", key.len())))?;
    String::from_utf8(tail.to_vec())
        .map_err(|_| StoreError::Corrupt("cursor device is not UTF-8".to_owned()))
}

/// A cursor value: the acked seq, u64 BE.
pub(crate) fn cursor_value(seq: u64) -> [u8; SEQ_BYTES] {
    seq.to_be_bytes()
}

/// The acked seq in a cursor value.
pub(crate) fn cursor_seq(value: &[u8]) -> Result<u64, StoreError> {
    <[u8; SEQ_BYTES]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("cursor value of {} bytes", value.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_owner_then_seq() {
        let mut keys = vec![
            entry_key(b"bob", 1),
            entry_key(b"alice", 256),
            entry_key(b"alice", 2),
            entry_key(b"al", u64::MAX),
            entry_key(b"alice", 1),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                entry_key(b"al", u64::MAX),
                entry_key(b"alice", 1),
                entry_key(b"alice", 2),
                entry_key(b"alice", 256),
                entry_key(b"bob", 1),
            ]
        );
        assert_eq!(
            entry_key(b"al", 7),
            b"al\x00\x00\x00\x00\x00\x00\x00\x00\x07"
        );
        assert_eq!(entry_seq(2, &entry_key(b"al", 7)).ok(), Some(7));
        assert!(entry_seq(2, b"al\x00\x01").is_err());
    }

    #[test]
    fn cursor_keys_and_values_round_trip() {
        let key = cursor_key(b"alice", "phone");
        assert_eq!(key, b"alice\x00phone");
        assert_eq!(cursor_device(5, &key).ok().as_deref(), Some("phone"));
        assert_eq!(cursor_seq(&cursor_value(42)).ok(), Some(42));
        assert!(cursor_seq(b"short").is_err());
    }

    #[test]
    fn key_rules() {
        assert!(check_owner(b"alice@example.com").is_ok());
        assert!(check_owner(b"").is_err());
        assert!(check_owner(b"a\x00b").is_err());
        assert!(check_owner(&[b'a'; MAX_OWNER_BYTES]).is_ok());
        assert!(check_owner(&[b'a'; MAX_OWNER_BYTES + 1]).is_err());
        assert!(check_device("").is_err());
        assert!(check_record_key(b"").is_ok());
        assert!(check_record_key(&[0; MAX_RECORD_KEY_BYTES + 1]).is_err());
        assert!(check_value(&[0; MAX_VALUE_BYTES]).is_ok());
        assert!(matches!(
            check_value(&[0; MAX_VALUE_BYTES + 1]),
            Err(StoreError::ValueTooLarge { .. })
        ));
        assert_eq!(tree_name(3, TreeKind::Entries), "s03/entries");
        assert_eq!(tree_name(31, TreeKind::Records), "s31/records");
    }
}
