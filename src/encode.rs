//! Protobuf encoding straight from borrowed fields, for the records and frames written once per
//! message (a journal record per append, a Deliver frame per delivery).
//!
//! prost encodes its own message structs, which own their strings: building one from tern's
//! shared `Arc<str>` ids costs an allocation and a copy per string field, only to be encoded and
//! dropped. A [`Field`] list borrows the values instead and is encoded exactly as prost encodes
//! the equivalent struct (fields in number order, proto3 defaults left out, a set oneof or
//! nested message always written), which the tests check byte for byte.

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// One field of a message, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A `string` field (left out when empty).
    Str(u32, &'a str),
    /// A `bytes` field (left out when empty).
    Bytes(u32, &'a [u8]),
    /// A `uint64` field (left out when 0).
    U64(u32, u64),
    /// An `int32` or enum field (left out when 0).
    I32(u32, i32),
    /// A `bool` field (left out when false).
    Bool(u32, bool),
    /// A nested message that is set (a oneof member or a present message field): always
    /// written, even when all of its fields are defaults.
    Message(u32, &'a [Field<'a>]),
    /// A nested message that is set, already encoded: always written.
    Encoded(u32, &'a [u8]),
}

impl Field<'_> {
    fn encoded_len(&self) -> usize {
        match *self {
            Field::Str(_, "") => 0,
            Field::Bytes(_, []) => 0,
            Field::U64(_, 0) | Field::I32(_, 0) | Field::Bool(_, false) => 0,
            Field::Str(tag, value) => delimited_len(tag, value.len()),
            Field::Bytes(tag, value) => delimited_len(tag, value.len()),
            Field::U64(tag, value) => key_len(tag) + encoded_len_varint(value),
            Field::I32(tag, value) => key_len(tag) + encoded_len_varint(i32_varint(value)),
            Field::Bool(tag, _) => key_len(tag) + 1,
            Field::Message(tag, fields) => delimited_len(tag, encoded_len(fields)),
            Field::Encoded(tag, value) => delimited_len(tag, value.len()),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match *self {
            Field::Str(_, "") => {}
            Field::Bytes(_, []) => {}
            Field::U64(_, 0) | Field::I32(_, 0) | Field::Bool(_, false) => {}
            Field::Str(tag, value) => put_delimited(tag, value.as_bytes(), buf),
            Field::Bytes(tag, value) => put_delimited(tag, value, buf),
            Field::U64(tag, value) => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(value, buf);
            }
            Field::I32(tag, value) => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(i32_varint(value), buf);
            }
            Field::Bool(tag, value) => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(u64::from(value), buf);
            }
            Field::Message(tag, fields) => {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(encoded_len(fields) as u64, buf);
                encode(fields, buf);
            }
            Field::Encoded(tag, value) => put_delimited(tag, value, buf),
        }
    }
}

/// As protobuf (and prost) encode an `int32`: negative values sign-extended to 64 bits.
fn i32_varint(value: i32) -> u64 {
    i64::from(value) as u64
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

/// Bytes the message made of `fields` takes.
pub fn encoded_len(fields: &[Field<'_>]) -> usize {
    fields.iter().map(Field::encoded_len).sum()
}

/// Appends the message made of `fields` to `buf`.
pub fn encode(fields: &[Field<'_>], buf: &mut impl BufMut) {
    for field in fields {
        field.encode(buf);
    }
}

/// The message made of `fields`, in a buffer of exactly its size.
pub fn encode_to_vec(fields: &[Field<'_>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_len(fields));
    encode(fields, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::Field::*;
    use super::*;
    use crate::proto::v1::{ChatMessage, Deliver, ServerAck, ServerFrame, deliver, server_frame};

    fn chat(fields: &[Field<'_>]) -> Vec<u8> {
        let frame = [Message(
            3,
            &[U64(1, 7), U64(2, 1_700_000_000_000), Message(3, fields)],
        )];
        encode_to_vec(&frame)
    }

    #[test]
    fn a_deliver_frame_is_encoded_as_prost_encodes_it() {
        for (from_user, client_msg_id, body, kind) in [
            ("alice", "m-1", &b"hello"[..], 1),
            ("", "", &b""[..], 0),
            ("bob", "x".repeat(200).as_str(), &[0u8; 300][..], 3),
            ("eve", "neg", &b"b"[..], -5),
        ] {
            let fields = [
                U64(1, 42),
                Str(2, from_user),
                Str(3, "phone"),
                Str(4, "carol"),
                Str(5, client_msg_id),
                I32(6, kind),
                Bytes(7, body),
            ];
            let prost_frame = ServerFrame {
                frame: Some(server_frame::Frame::Deliver(Deliver {
                    seq: 7,
                    timestamp_ms: 1_700_000_000_000,
                    payload: Some(deliver::Payload::Message(ChatMessage {
                        server_id: 42,
                        from_user: from_user.to_owned(),
                        from_device: "phone".to_owned(),
                        to_user: "carol".to_owned(),
                        client_msg_id: client_msg_id.to_owned(),
                        kind,
                        body: bytes::Bytes::copy_from_slice(body),
                    })),
                })),
            };
            assert_eq!(chat(&fields), prost_frame.encode_to_vec());
            assert_eq!(
                encoded_len(&[Message(3, &[U64(1, 7), U64(2, 1_700_000_000_000)])]),
                ServerFrame {
                    frame: Some(server_frame::Frame::Deliver(Deliver {
                        seq: 7,
                        timestamp_ms: 1_700_000_000_000,
                        payload: None,
                    })),
                }
                .encoded_len()
            );
        }
    }

    #[test]
    fn a_set_oneof_with_only_defaults_is_still_written() {
        let direct = encode_to_vec(&[Message(2, &[Str(1, ""), Bool(5, false)])]);
        let prost_frame = ServerFrame {
            frame: Some(server_frame::Frame::ServerAck(ServerAck::default())),
        };
        assert_eq!(direct, prost_frame.encode_to_vec());
        assert_eq!(direct, [0x12, 0x00]);
    }

    #[test]
    fn booleans_and_large_numbers_match() {
        let ack = ServerAck {
            client_msg_id: "id".to_owned(),
            server_id: u64::MAX,
            seq: 1 << 35,
            timestamp_ms: 1,
            duplicate: true,
            group_id: "g".to_owned(),
            queued: false,
        };
        let direct = encode_to_vec(&[
            Str(1, "id"),
            U64(2, u64::MAX),
            U64(3, 1 << 35),
            U64(4, 1),
            Bool(5, true),
            Str(6, "g"),
        ]);
        assert_eq!(direct, ack.encode_to_vec());
    }
}
