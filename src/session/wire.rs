//! Conversions between the session's domain values and the v1 wire frames.

use crate::encode::{
    Field,
    Field::{Bool, I32, Str, U64},
};
use crate::limits::Refused;
use crate::mailbox::AckInfo;
use crate::message::{Entry, Payload};
pub use crate::proto::kinds::{
    message_kind_from_wire, message_kind_to_wire, receipt_kind_from_wire, receipt_kind_to_wire,
};
use crate::proto::v1::{self as wire, ErrorCode, ServerFrame, deliver, server_frame::Frame};

/// Wraps a frame in the server envelope.
pub fn server_frame(frame: Frame) -> ServerFrame {
    ServerFrame { frame: Some(frame) }
}

/// Longest text echoed back in an Error frame, so an error never outgrows the frame limit.
const MAX_ECHO_BYTES: usize = 256;

/// An Error frame (message and echoed id are cut to 256 bytes).
pub fn error(code: ErrorCode, message: &str, client_msg_id: &str) -> Frame {
    Frame::Error(wire::Error {
        code: code.into(),
        message: truncate(message).to_owned(),
        client_msg_id: truncate(client_msg_id).to_owned(),
        retry_after_ms: 0,
    })
}

/// The code of an abuse-limit refusal: `TOO_MANY_CONNECTIONS` for connections per address,
/// `RATE_LIMITED` for the rate limits.
pub fn abuse_code(refused: &Refused) -> ErrorCode {
    match refused {
        Refused::ConnectionsPerIp => ErrorCode::TooManyConnections,
        Refused::LoginsPerIp { .. } | Refused::GroupCreates { .. } | Refused::GroupAdds { .. } => {
            ErrorCode::RateLimited
        }
    }
}

/// The Error frame of an abuse-limit refusal, with its delay.
pub fn abuse_error(refused: &Refused) -> Frame {
    Frame::Error(wire::Error {
        code: abuse_code(refused).into(),
        message: refused.to_string(),
        client_msg_id: String::new(),
        retry_after_ms: refused.retry_after_ms(),
    })
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_ECHO_BYTES {
        return text;
    }
    let mut end = MAX_ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The metric label for an error code.
pub fn error_kind(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unspecified => "unspecified",
        ErrorCode::BadFrame => "bad_frame",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::ProtocolViolation => "protocol_violation",
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Overloaded => "overloaded",
        ErrorCode::TooManyConnections => "too_many_connections",
        ErrorCode::Timeout => "timeout",
        ErrorCode::StorageFailure => "storage_failure",
        ErrorCode::Internal => "internal",
        ErrorCode::NotAMember => "not_a_member",
        ErrorCode::NotAdmin => "not_admin",
        ErrorCode::GroupFull => "group_full",
        ErrorCode::MediaNotFound => "media_not_found",
        ErrorCode::TokenRevoked => "token_revoked",
    }
}

/// The Deliver frame for a mailbox entry.
pub fn deliver(entry: &Entry) -> Frame {
    let payload = match &entry.payload {
        Payload::Message(m) => deliver::Payload::Message(wire::ChatMessage {
            server_id: m.server_id,
            from_user: m.from_user.to_string(),
            from_device: m.from_device.to_string(),
            to_user: m.to_user.to_string(),
            client_msg_id: m.client_msg_id.to_string(),
            kind: message_kind_to_wire(m.kind).into(),
            body: m.body.clone(),
        }),
        Payload::Receipt(r) => deliver::Payload::Receipt(wire::ReceiptNotice {
            from_user: r.from_user.to_string(),
            from_device: r.from_device.to_string(),
            kind: receipt_kind_to_wire(r.kind).into(),
            up_to_seq: r.up_to_seq,
        }),
        Payload::Group(g) => super::group_wire::deliver_group(g),
        Payload::GroupReceipt(r) => deliver::Payload::GroupReceipt(wire::GroupReceiptNotice {
            group_id: r.group_id.to_string(),
            from_user: r.from_user.to_string(),
            kind: receipt_kind_to_wire(r.kind).into(),
            up_to_group_seq: r.up_to_group_seq,
        }),
    };
    Frame::Deliver(wire::Deliver {
        seq: entry.seq,
        timestamp_ms: entry.timestamp_ms,
        payload: Some(payload),
    })
}

/// Calls `send` with the `ServerFrame` carrying `entry`'s Deliver frame as fields borrowed from
/// the entry (no copy of its ids or body); `None` for group messages and events, whose frames
/// [`deliver`] builds.
pub fn with_deliver_fields<R>(entry: &Entry, send: impl FnOnce(&[Field<'_>]) -> R) -> Option<R> {
    let (message, receipt, group_receipt);
    // `Deliver.payload`, field numbers as in `ChatMessage`, `ReceiptNotice` and
    // `GroupReceiptNotice`.
    let payload = match &entry.payload {
        Payload::Message(m) => {
            message = [
                U64(1, m.server_id),
                Str(2, &m.from_user),
                Str(3, &m.from_device),
                Str(4, &m.to_user),
                Str(5, &m.client_msg_id),
                I32(6, message_kind_to_wire(m.kind).into()),
                Field::Bytes(7, &m.body),
            ];
            Field::Message(3, &message)
        }
        Payload::Receipt(r) => {
            receipt = [
                Str(1, &r.from_user),
                Str(2, &r.from_device),
                I32(3, receipt_kind_to_wire(r.kind).into()),
                U64(4, r.up_to_seq),
            ];
            Field::Message(4, &receipt)
        }
        Payload::GroupReceipt(r) => {
            group_receipt = [
                Str(1, &r.group_id),
                Str(2, &r.from_user),
                I32(3, receipt_kind_to_wire(r.kind).into()),
                U64(4, r.up_to_group_seq),
            ];
            Field::Message(7, &group_receipt)
        }
        Payload::Group(_) => return None,
    };
    // `ServerFrame.deliver` (`Deliver`).
    let deliver = [U64(1, entry.seq), U64(2, entry.timestamp_ms), payload];
    Some(send(&[Field::Message(3, &deliver)]))
}

/// Calls `send` with the `ServerFrame` carrying the ServerAck of `client_msg_id` as borrowed
/// fields (`group` empty for a 1:1 message).
pub fn with_server_ack_fields<R>(
    client_msg_id: &str,
    ack: &AckInfo,
    duplicate: bool,
    group: &str,
    send: impl FnOnce(&[Field<'_>]) -> R,
) -> R {
    // `ServerFrame.server_ack` (`ServerAck`).
    let server_ack = [
        Str(1, client_msg_id),
        U64(2, ack.server_id),
        U64(3, ack.seq),
        U64(4, ack.timestamp_ms),
        Bool(5, duplicate),
        Str(6, group),
        // Queued for another datacenter: no seq (or group seq) yet.
        Bool(7, ack.seq == 0),
    ];
    send(&[Field::Message(2, &server_ack)])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::frame;
    use crate::message::{ChatMessage, GroupReceiptNotice, Id, ReceiptNotice};
    use crate::message::{MessageKind, ReceiptKind};

    fn both_ways(payload: Payload) -> (BytesMut, BytesMut) {
        let entry = Entry {
            seq: 12,
            timestamp_ms: 1_700_000_000_123,
            accepted_ms: 0,
            payload,
        };
        let mut direct = BytesMut::new();
        with_deliver_fields(&entry, |fields| frame::encode_fields(fields, &mut direct)).unwrap();
        let mut prost = BytesMut::new();
        frame::encode(&server_frame(deliver(&entry)), &mut prost);
        (direct, prost)
    }

    #[test]
    fn deliver_frames_from_borrowed_fields_match_the_prost_frames() {
        let (direct, prost) = both_ways(Payload::Message(ChatMessage {
            server_id: 9,
            from_user: Id::from("alice"),
            from_device: Id::from("phone"),
            to_user: Id::from("bob"),
            client_msg_id: Arc::from("m-1"),
            kind: MessageKind::Media,
            body: Bytes::from_static(b"\x00\x01body"),
        }));
        assert_eq!(direct, prost);
        let (direct, prost) = both_ways(Payload::Receipt(ReceiptNotice {
            from_user: Id::from("bob"),
            from_device: Id::from(""),
            kind: ReceiptKind::Read,
            up_to_seq: 4,
        }));
        assert_eq!(direct, prost);
        let (direct, prost) = both_ways(Payload::GroupReceipt(GroupReceiptNotice {
            group_id: Id::from("g-1"),
            from_user: Id::from("carol"),
            from_device: Id::from("tablet"),
            kind: ReceiptKind::Delivered,
            up_to_group_seq: 77,
        }));
        assert_eq!(direct, prost);
    }

    #[test]
    fn a_server_ack_from_borrowed_fields_matches_the_prost_frame() {
        // A queued ack (seq 0, for another datacenter) sets `queued`.
        for (seq, duplicate, group) in [
            (5, false, ""),
            (0, false, ""),
            (5, true, "g-1"),
            (0, false, "g-1@west"),
        ] {
            let ack = AckInfo {
                seq,
                server_id: 1 << 40,
                timestamp_ms: 1_700_000_000_000,
            };
            let mut direct = BytesMut::new();
            with_server_ack_fields("m-9", &ack, duplicate, group, |fields| {
                frame::encode_fields(fields, &mut direct)
            });
            let mut prost = BytesMut::new();
            let frame = Frame::ServerAck(wire::ServerAck {
                client_msg_id: "m-9".to_owned(),
                server_id: ack.server_id,
                seq: ack.seq,
                timestamp_ms: ack.timestamp_ms,
                duplicate,
                group_id: group.to_owned(),
                queued: seq == 0,
            });
            frame::encode(&server_frame(frame), &mut prost);
            assert_eq!(direct, prost);
        }
    }
}
