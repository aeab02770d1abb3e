//! Upload ids: 128 random bits from the operating system's CSPRNG, written as 32 lowercase hex
//! digits (the last segment of an upload's URL, and of a media reference).

use std::fmt;

/// Bytes in an id.
pub const ID_BYTES: usize = 16;

/// The id of an upload, and of the media it becomes. Unguessable (never derived from the
/// content): holding it is what lets a logged-in user download the media and reference it in a
/// message (docs/media.md, "Forwarding").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId([u8; ID_BYTES]);

impl MediaId {
    /// A fresh random id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0; ID_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Parses the 32-hex-digit form (lowercase only: one id, one spelling).
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0; ID_BYTES];
        decode_hex(text, &mut bytes)?;
        Some(Self(bytes))
    }

    /// The id from its 16 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaId({self})")
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Fills `out` from lowercase hex of exactly twice its length; `None` for anything else.
pub fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_differ() {
        let a = MediaId::random().unwrap();
        let b = MediaId::random().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(MediaId::parse(&text), Some(a));
        assert_eq!(MediaId::from_slice(a.as_bytes()), Some(a));
    }

    #[test]
    fn only_canonical_hex_parses() {
        assert!(MediaId::parse("00112233445566778899aabbccddeeff").is_some());
        assert!(MediaId::parse("00112233445566778899AABBCCDDEEFF").is_none());
        assert!(MediaId::parse("00112233445566778899aabbccddeef").is_none());
        assert!(MediaId::parse("00112233445566778899aabbccddeefg").is_none());
        assert!(MediaId::parse("../../etc/passwd").is_none());
        assert!(MediaId::parse("").is_none());
    }
}
