//! What a load-test message carries: a unique id (run, sender, counter) and its send time, as
//! readable ASCII padded to the requested size.
//!
//! Body: `tl1:<run hex>:<sender>:<counter>:<sent µs since the epoch>;` then `.` up to the size.
//! `client_msg_id`: `<run hex>-<counter>` (unique per sending user, and across runs).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &str = "tl1";

/// The identity and send time of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The run that sent it (tells stale messages from earlier runs apart).
    pub run: u64,
    /// The sending phone's index.
    pub sender: u32,
    /// The sender's message counter (0, 1, 2...).
    pub counter: u64,
    /// Wall-clock send time, microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Microseconds since the Unix epoch (wall clock, so that separate processes agree).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A run id that differs between runs.
pub fn new_run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Fold the clock with the pid; truncation keeps the fast-changing low bits.
    (nanos as u64) ^ (u64::from(std::process::id()) << 40)
}

impl Stamp {
    /// The body: the stamp, then padding up to `size` bytes (never shorter than the stamp).
    pub fn encode(&self, size: usize) -> Bytes {
        let header = format!(
            "{MAGIC}:{:x}:{}:{}:{};",
            self.run, self.sender, self.counter, self.sent_us
        );
        let mut body = BytesMut::with_capacity(size.max(header.len()));
        body.put_slice(header.as_bytes());
        body.put_bytes(b'.', size.saturating_sub(header.len()));
        body.freeze()
    }

    /// Reads a body written by [`Stamp::encode`]; `None` for anything else.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let end = body.iter().position(|b| *b == b';')?;
        let header = std::str::from_utf8(&body[..end]).ok()?;
        let mut parts = header.split(':');
        if parts.next()? != MAGIC {
            return None;
        }
        let stamp = Self {
            run: u64::from_str_radix(parts.next()?, 16).ok()?,
            sender: parts.next()?.parse().ok()?,
            counter: parts.next()?.parse().ok()?,
            sent_us: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

/// The `client_msg_id` of message `counter` of a run.
pub fn client_msg_id(run: u64, counter: u64) -> String {
    format!("{run:x}-{counter}")
}

/// The counter in a `client_msg_id` of this run; `None` for other runs and foreign ids.
pub fn parse_client_msg_id(run: u64, id: &str) -> Option<u64> {
    let (prefix, counter) = id.split_once('-')?;
    if u64::from_str_radix(prefix, 16).ok()? != run {
        return None;
    }
    counter.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            run: 0xdead_beef_0123,
            sender: 17,
            counter: 4_000_000_001,
            sent_us: 1_700_000_000_123_456,
        }
    }

    #[test]
    fn bodies_round_trip_and_are_padded_to_size() {
        let body = stamp().encode(200);
        assert_eq!(body.len(), 200);
        assert!(body.ends_with(b"...."));
        assert_eq!(Stamp::decode(&body), Some(stamp()));
    }

    #[test]
    fn a_size_below_the_header_keeps_the_whole_header() {
        let body = stamp().encode(1);
        assert!(body.len() > 1);
        assert_eq!(body.last(), Some(&b';'));
        assert_eq!(Stamp::decode(&body), Some(stamp()));
    }

    #[test]
    fn foreign_and_damaged_bodies_are_refused() {
        assert_eq!(Stamp::decode(b"hello"), None);
        assert_eq!(Stamp::decode(b"tl1:zz:1:2:3;"), None);
        assert_eq!(Stamp::decode(b"tl1:1:2:3;"), None);
        assert_eq!(Stamp::decode(b"tl1:1:2:3:4:5;"), None);
        assert_eq!(Stamp::decode(b"tl2:1:2:3:4;"), None);
        assert_eq!(Stamp::decode(b"tl1:1:2:3:4"), None);
        let mut body = stamp().encode(64).to_vec();
        body[10] = 0xff;
        assert_eq!(Stamp::decode(&body), None);
    }

    #[test]
    fn client_msg_ids_belong_to_one_run() {
        let id = client_msg_id(0xabc, 42);
        assert_eq!(parse_client_msg_id(0xabc, &id), Some(42));
        assert_eq!(parse_client_msg_id(0xabd, &id), None);
        assert_eq!(parse_client_msg_id(0xabc, "abc-"), None);
        assert_eq!(parse_client_msg_id(0xabc, "cli-1"), None);
    }
}
