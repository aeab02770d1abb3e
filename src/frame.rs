//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes of protobuf.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::encode::{self, Field};

/// Bytes in the length prefix.
pub const HEADER_BYTES: usize = 4;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is larger than the configured maximum; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A valid envelope with none of its cases set.
    #[error("frame has no content")]
    Empty,
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Appends `message` to `out` as one frame.
pub fn encode<M: Message>(message: &M, out: &mut BytesMut) -> usize {
    let len = message.encoded_len();
    put_header(len, out);
    // Encoding into a BytesMut with enough reserved capacity cannot fail.
    let _ = message.encode(out);
    len
}

/// Appends the message made of `fields` to `out` as one frame (see [`crate::encode`]).
pub fn encode_fields(fields: &[Field<'_>], out: &mut BytesMut) -> usize {
    let len = encode::encoded_len(fields);
    put_header(len, out);
    encode::encode(fields, out);
    len
}

/// Reserves room for a frame of `len` payload bytes and writes its length prefix.
fn put_header(len: usize, out: &mut BytesMut) {
    out.reserve(HEADER_BYTES + len);
    // Lengths above u32::MAX cannot be produced: frames are bounded far below that by config.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Splits the next complete frame's payload off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Nothing is reserved for the rest of the frame:
/// the caller grows the buffer with what arrives, so a length prefix alone costs no memory (a
/// prefix over `max` is refused as soon as its 4 bytes are in).
pub fn split_frame(buf: &mut BytesMut, max: u32) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = HEADER_BYTES + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// Bytes still missing from the frame at the front of `buf`, once its length prefix is in (its
/// length is not checked here: [`split_frame`] refuses one over the limit first).
pub fn missing_bytes(buf: &BytesMut) -> Option<usize> {
    if buf.len() < HEADER_BYTES {
        return None;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    Some((HEADER_BYTES + len).saturating_sub(buf.len()))
}

/// Decodes one payload as message type `M`.
pub fn decode<M: Message + Default>(payload: Bytes) -> Result<M, FrameError> {
    Ok(M::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{ClientFrame, Ping, client_frame::Frame};

    fn ping(nonce: u64) -> ClientFrame {
        ClientFrame {
            frame: Some(Frame::Ping(Ping { nonce })),
        }
    }

    #[test]
    fn frames_round_trip_across_partial_reads() {
        let mut wire = BytesMut::new();
        encode(&ping(7), &mut wire);
        encode(&ping(8), &mut wire);
        let bytes = wire.freeze();
        // Feed one byte at a time: every frame appears exactly once, in order.
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for byte in bytes.iter() {
            buf.put_u8(*byte);
            while let Some(payload) = split_frame(&mut buf, 1024).unwrap() {
                let frame: ClientFrame = decode(payload).unwrap();
                seen.push(frame);
            }
        }
        assert_eq!(seen, vec![ping(7), ping(8)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = split_frame(&mut buf, 1024).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: 1024
            }
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn an_announced_length_reserves_nothing() {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32(60_000);
        buf.put_slice(&[1, 2, 3]);
        assert!(split_frame(&mut buf, 65_536).unwrap().is_none());
        assert!(buf.capacity() < 1024, "reserved {}", buf.capacity());
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode::<ClientFrame>(garbage),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn documented_example_bytes() {
        // The example in docs/protocol.md: Ping { nonce: 1 }.
        let mut wire = BytesMut::new();
        encode(&ping(1), &mut wire);
        assert_eq!(&wire[..], &[0, 0, 0, 4, 0x3a, 0x02, 0x08, 0x01]);
    }
}
