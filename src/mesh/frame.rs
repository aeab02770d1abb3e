//! The link's wire format: each frame is a u32 big-endian length, then one prost `MeshFrame`.
//! Lengths are checked against the maximum before anything is allocated for the frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use super::error::FrameError;
use crate::proto::mesh::MeshFrame;

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// Encodes one frame with its length prefix.
pub fn encode(frame: &MeshFrame) -> Bytes {
    let len = frame.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
    // A frame over 4 GiB cannot be built from the payloads the mesh accepts (checked by callers
    // against MAX_FRAME_BYTES); saturate rather than wrap.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    frame.encode_raw(&mut buf);
    buf.freeze()
}

/// Takes the next whole frame out of `buf`, or `None` if more bytes are needed. On `None` it
/// reserves room for the rest of the frame, so the read buffer grows only with what arrives.
pub fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<MeshFrame>, FrameError> {
    if buf.len() < PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < PREFIX_BYTES + len {
        buf.reserve(PREFIX_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(PREFIX_BYTES);
    let body = buf.split_to(len).freeze();
    Ok(Some(MeshFrame::decode(body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mesh::{Cast, Heartbeat, mesh_frame::Kind};

    fn cast(payload: &'static [u8]) -> MeshFrame {
        MeshFrame {
            kind: Some(Kind::Cast(Cast {
                service: 7,
                payload: Bytes::from_static(payload),
            })),
        }
    }

    #[test]
    fn frames_split_at_every_byte_decode_whole() {
        let frames = [
            cast(b"hello"),
            MeshFrame {
                kind: Some(Kind::Heartbeat(Heartbeat { sent_us: 42 })),
            },
            cast(b""),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f).to_vec()).collect();
        for chunk in 1..wire.len() {
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = decode(&mut buf, 1024).expect("valid frames") {
                    decoded.push(frame);
                }
            }
            assert_eq!(decoded, frames, "chunk size {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        let err = decode(&mut buf, 1024).expect_err("over the maximum");
        assert!(matches!(err, FrameError::TooLarge(1025)));
        // Nothing was reserved for the announced body.
        assert!(buf.capacity() < 1025);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.put_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode(&mut buf, 1024), Err(FrameError::Decode(_))));
    }
}
