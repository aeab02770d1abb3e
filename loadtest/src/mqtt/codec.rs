//! MQTT 3.1.1 packets and their encoding (OASIS standard, section 2 and 3): a fixed header
//! (type and flags, then the remaining length as a 1-4 byte varint), a variable header and a
//! payload. Strings are a big-endian u16 length and UTF-8 bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::MqttError;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// One MQTT packet (the subset this client uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client → broker: open a session.
    Connect {
        /// Unique per connection.
        client_id: String,
        /// Seconds; the broker drops the client after 1.5 times this without a packet.
        keep_alive: u16,
        /// Start without (and keep no) session state.
        clean_session: bool,
    },
    /// Broker → client: the CONNECT's answer.
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// 0 is accepted; anything else refused.
        code: u8,
    },
    /// A message, in either direction.
    Publish {
        /// Topic name.
        topic: String,
        /// 0 or 1.
        qos: u8,
        /// Present when `qos` > 0.
        packet_id: Option<u16>,
        /// A retransmission.
        dup: bool,
        /// Retained message.
        retain: bool,
        /// The application message.
        payload: Bytes,
    },
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck {
        /// The PUBLISH's id.
        packet_id: u16,
    },
    /// Client → broker: subscribe to topic filters.
    Subscribe {
        /// Non-zero id.
        packet_id: u16,
        /// (filter, requested QoS).
        filters: Vec<(String, u8)>,
    },
    /// Broker → client: one granted QoS (or 0x80) per filter.
    SubAck {
        /// The SUBSCRIBE's id.
        packet_id: u16,
        /// Return codes.
        codes: Vec<u8>,
    },
    /// Keep-alive probe.
    PingReq,
    /// Its answer.
    PingResp,
    /// Client → broker: a clean goodbye.
    Disconnect,
}

/// Appends `packet` to `out`.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    let first = match packet {
        Packet::Connect {
            client_id,
            keep_alive,
            clean_session,
        } => {
            put_str(&mut body, "MQTT");
            body.put_u8(4);
            body.put_u8(if *clean_session { 0x02 } else { 0 });
            body.put_u16(*keep_alive);
            put_str(&mut body, client_id);
            CONNECT << 4
        }
        Packet::ConnAck {
            session_present,
            code,
        } => {
            body.put_u8(u8::from(*session_present));
            body.put_u8(*code);
            CONNACK << 4
        }
        Packet::Publish {
            topic,
            qos,
            packet_id,
            dup,
            retain,
            payload,
        } => {
            put_str(&mut body, topic);
            if *qos > 0 {
                body.put_u16(packet_id.unwrap_or(0));
            }
            body.put_slice(payload);
            PUBLISH << 4 | u8::from(*dup) << 3 | (qos & 3) << 1 | u8::from(*retain)
        }
        Packet::PubAck { packet_id } => {
            body.put_u16(*packet_id);
            PUBACK << 4
        }
        Packet::Subscribe { packet_id, filters } => {
            body.put_u16(*packet_id);
            for (filter, qos) in filters {
                put_str(&mut body, filter);
                body.put_u8(*qos);
            }
            SUBSCRIBE << 4 | 0b0010
        }
        Packet::SubAck { packet_id, codes } => {
            body.put_u16(*packet_id);
            body.put_slice(codes);
            SUBACK << 4
        }
        Packet::PingReq => PINGREQ << 4,
        Packet::PingResp => PINGRESP << 4,
        Packet::Disconnect => DISCONNECT << 4,
    };
    out.reserve(5 + body.len());
    out.put_u8(first);
    put_remaining_length(out, body.len());
    out.put_slice(&body);
}

/// Takes one whole packet off the front of `buf`; `None` until one has fully arrived. The
/// remaining length is checked against `max` before anything is allocated for it.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, MqttError> {
    let Some((len, header)) = remaining_length(&buf[..])? else {
        return Ok(None);
    };
    if len > max {
        return Err(MqttError::TooLarge { len, max });
    }
    if buf.len() < header + len {
        buf.reserve(header + len - buf.len());
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(header);
    let body = buf.split_to(len).freeze();
    parse(first, body).map(Some)
}

/// The remaining length and the fixed header's size, if the header has arrived.
fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, MqttError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = bytes.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((len, 2 + i)));
        }
    }
    Err(MqttError::Malformed("remaining length longer than 4 bytes"))
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    out.put_slice(&s.as_bytes()[..s.len().min(usize::from(u16::MAX))]);
}

fn take_u8(body: &mut Bytes) -> Result<u8, MqttError> {
    if body.remaining() < 1 {
        return Err(MqttError::Malformed("truncated packet"));
    }
    Ok(body.get_u8())
}

fn take_u16(body: &mut Bytes) -> Result<u16, MqttError> {
    if body.remaining() < 2 {
        return Err(MqttError::Malformed("truncated packet"));
    }
    Ok(body.get_u16())
}

fn take_str(body: &mut Bytes) -> Result<String, MqttError> {
    let len = usize::from(take_u16(body)?);
    if body.remaining() < len {
        return Err(MqttError::Malformed("truncated string"));
    }
    String::from_utf8(body.split_to(len).to_vec())
        .map_err(|_| MqttError::Malformed("string is not UTF-8"))
}

fn parse(first: u8, mut body: Bytes) -> Result<Packet, MqttError> {
    let flags = first & 0x0f;
    let packet = match first >> 4 {
        CONNECT => {
            if take_str(&mut body)? != "MQTT" || take_u8(&mut body)? != 4 {
                return Err(MqttError::Malformed("not MQTT 3.1.1"));
            }
            let connect_flags = take_u8(&mut body)?;
            let keep_alive = take_u16(&mut body)?;
            Packet::Connect {
                clean_session: connect_flags & 0x02 != 0,
                keep_alive,
                client_id: take_str(&mut body)?,
            }
        }
        CONNACK => Packet::ConnAck {
            session_present: take_u8(&mut body)? & 1 != 0,
            code: take_u8(&mut body)?,
        },
        PUBLISH => {
            let qos = (flags >> 1) & 3;
            if qos > 2 {
                return Err(MqttError::Malformed("QoS 3"));
            }
            let topic = take_str(&mut body)?;
            let packet_id = if qos > 0 {
                Some(take_u16(&mut body)?)
            } else {
                None
            };
            Packet::Publish {
                topic,
                qos,
                packet_id,
                dup: flags & 0x08 != 0,
                retain: flags & 0x01 != 0,
                payload: body.split_off(0),
            }
        }
        PUBACK => Packet::PubAck {
            packet_id: take_u16(&mut body)?,
        },
        SUBSCRIBE => {
            let packet_id = take_u16(&mut body)?;
            let mut filters = Vec::new();
            while body.has_remaining() {
                let filter = take_str(&mut body)?;
                filters.push((filter, take_u8(&mut body)?));
            }
            Packet::Subscribe { packet_id, filters }
        }
        SUBACK => Packet::SubAck {
            packet_id: take_u16(&mut body)?,
            codes: body.split_off(0).to_vec(),
        },
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        _ => return Err(MqttError::Malformed("unknown packet type")),
    };
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest remaining length the varint can express.
    const MAX_REMAINING: usize = 268_435_455;

    fn all_packets() -> Vec<Packet> {
        vec![
            Packet::Connect {
                client_id: "load-a0".to_owned(),
                keep_alive: 300,
                clean_session: true,
            },
            Packet::ConnAck {
                session_present: false,
                code: 0,
            },
            Packet::Publish {
                topic: "tl/load-b0".to_owned(),
                qos: 1,
                packet_id: Some(7),
                dup: false,
                retain: false,
                payload: Bytes::from_static(b"tl1:1:2:3:4;...."),
            },
            Packet::Publish {
                topic: "t".to_owned(),
                qos: 0,
                packet_id: None,
                dup: true,
                retain: true,
                payload: Bytes::new(),
            },
            Packet::PubAck { packet_id: 65535 },
            Packet::Subscribe {
                packet_id: 1,
                filters: vec![("tl/load-a0".to_owned(), 1)],
            },
            Packet::SubAck {
                packet_id: 1,
                codes: vec![1],
            },
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect,
        ]
    }

    #[test]
    fn every_packet_round_trips() {
        for packet in all_packets() {
            let mut buf = BytesMut::new();
            encode(&packet, &mut buf);
            assert_eq!(decode(&mut buf, 1 << 20).unwrap(), Some(packet));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn fixed_bytes_match_the_standard() {
        let bytes = |p: &Packet| {
            let mut buf = BytesMut::new();
            encode(p, &mut buf);
            buf.to_vec()
        };
        assert_eq!(bytes(&Packet::PingReq), [0xc0, 0x00]);
        assert_eq!(bytes(&Packet::Disconnect), [0xe0, 0x00]);
        assert_eq!(
            bytes(&Packet::PubAck { packet_id: 0x0102 }),
            [0x40, 2, 1, 2]
        );
        // CONNECT: protocol name, level 4, clean-session flag, keep-alive 60, client id "a".
        let connect = Packet::Connect {
            client_id: "a".to_owned(),
            keep_alive: 60,
            clean_session: true,
        };
        assert_eq!(
            bytes(&connect),
            [
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a'
            ]
        );
        // SUBSCRIBE has the reserved flags 0010.
        let subscribe = Packet::Subscribe {
            packet_id: 10,
            filters: vec![("x".to_owned(), 1)],
        };
        assert_eq!(bytes(&subscribe), [0x82, 6, 0, 10, 0, 1, b'x', 1]);
    }

    #[test]
    fn remaining_lengths_use_up_to_four_bytes() {
        for (len, encoded) in [
            (0usize, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (MAX_REMAINING, vec![0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut out = BytesMut::new();
            put_remaining_length(&mut out, len);
            assert_eq!(out.to_vec(), encoded, "{len}");
            let mut header = vec![0x30];
            header.extend_from_slice(&encoded);
            assert_eq!(
                remaining_length(&header).unwrap(),
                Some((len, 1 + encoded.len()))
            );
        }
        assert!(remaining_length(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn partial_input_waits_and_several_packets_come_out_in_order() {
        let mut wire = BytesMut::new();
        for packet in all_packets() {
            encode(&packet, &mut wire);
        }
        // Feed the stream one byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(packet) = decode(&mut buf, 1 << 20).unwrap() {
                got.push(packet);
            }
        }
        assert_eq!(got, all_packets());
    }

    #[test]
    fn oversized_and_malformed_packets_are_refused() {
        let mut big = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
        assert!(matches!(
            decode(&mut big, 1000),
            Err(MqttError::TooLarge {
                len: 16_384,
                max: 1000
            })
        ));
        assert!(big.capacity() < 16_384, "nothing allocated for it");
        let mut unknown = BytesMut::from(&[0xf0, 0x00][..]);
        assert!(decode(&mut unknown, 1000).is_err());
        let mut truncated = BytesMut::from(&[0x40, 0x01, 0x00][..]);
        assert!(decode(&mut truncated, 1000).is_err());
        let mut bad_utf8 = BytesMut::from(&[0x30, 0x04, 0x00, 0x02, 0xff, 0xfe][..]);
        assert!(decode(&mut bad_utf8, 1000).is_err());
    }
}
