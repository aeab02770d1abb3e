//! What a flooder writes: about 64 KiB of frames of one kind per chunk, with ids and values
//! distinct per chunk so that nothing is deduplicated away.

use bytes::{BufMut, Bytes, BytesMut};
use tern::frame;
use tern::proto::v1::{
    ClientFrame, DeviceAck, GroupReceipt, GroupRequest, GroupSend, ListGroups, MessageKind, Ping,
    PresenceSubscribe, Receipt, ReceiptKind, Send, Typing, client_frame::Frame, group_request,
};

/// Bytes written per chunk, at least.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Body of flooded sends.
const BODY: [u8; 100] = [b'x'; 100];
/// The recipient of flooded sends, receipts and typing notices.
const SINK: &str = "flood-sink";
/// The group flooded group sends and receipts name.
const GROUP: &str = "gflood";
/// Users in one flooded presence subscription.
const WATCHED: usize = 64;

/// The frame kinds a flooder can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Send to one user.
    Send,
    /// Read receipts.
    Receipt,
    /// DeviceAcks of nothing delivered.
    Ack,
    /// Typing notices.
    Typing,
    /// Presence subscriptions of 64 users.
    Presence,
    /// Pings.
    Ping,
    /// Group sends to a group the flooder is not in.
    GroupSend,
    /// Group requests (list groups).
    GroupRequest,
    /// Group receipts.
    GroupReceipt,
    /// Zero-length frames.
    Empty,
    /// A ClientFrame case this server does not know.
    Unknown,
    /// A length prefix near the frame limit and a few bytes, then a byte a second, on many
    /// connections at once.
    HalfSent,
}

/// Chunk number `n` of `kind` (not for [`Kind::HalfSent`], which writes no whole frames):
/// the bytes and how many frames they hold.
pub fn chunk(kind: Kind, n: u64) -> (Bytes, u64) {
    let mut out = BytesMut::with_capacity(CHUNK_BYTES + 4096);
    let mut frames = 0u64;
    while out.len() < CHUNK_BYTES {
        let k = n * 100_000 + frames;
        match one(kind, k) {
            Some(frame) => {
                frame::encode(&ClientFrame { frame: Some(frame) }, &mut out);
            }
            None if kind == Kind::Unknown => {
                // Case 15 (length-delimited, empty): decodes to a ClientFrame with no case.
                out.put_slice(&[0, 0, 0, 2, 0x7a, 0]);
            }
            None => out.put_u32(0),
        }
        frames += 1;
    }
    (out.freeze(), frames)
}

/// Frame number `k` of `kind`; `None` for the kinds that are not a known ClientFrame case.
fn one(kind: Kind, k: u64) -> Option<Frame> {
    Some(match kind {
        Kind::Send => Frame::Send(Send {
            client_msg_id: format!("f{k}"),
            to_user: SINK.to_owned(),
            kind: MessageKind::Text as i32,
            body: BODY.to_vec().into(),
        }),
        Kind::Receipt => Frame::Receipt(Receipt {
            client_msg_id: format!("r{k}"),
            to_user: SINK.to_owned(),
            kind: ReceiptKind::Delivered as i32,
            up_to_seq: 1,
        }),
        Kind::Ack => Frame::Ack(DeviceAck { up_to_seq: k + 1 }),
        Kind::Typing => Frame::Typing(Typing {
            to_user: SINK.to_owned(),
            typing: true,
            group_id: String::new(),
        }),
        Kind::Presence => Frame::PresenceSubscribe(PresenceSubscribe {
            users: (0..WATCHED).map(|i| format!("watched{i}")).collect(),
        }),
        Kind::Ping => Frame::Ping(Ping { nonce: k }),
        Kind::GroupSend => Frame::GroupSend(GroupSend {
            client_msg_id: format!("g{k}"),
            group_id: GROUP.to_owned(),
            kind: MessageKind::Text as i32,
            body: BODY.to_vec().into(),
        }),
        Kind::GroupRequest => Frame::GroupRequest(GroupRequest {
            request_id: k,
            op: Some(group_request::Op::List(ListGroups::default())),
        }),
        Kind::GroupReceipt => Frame::GroupReceipt(GroupReceipt {
            group_id: GROUP.to_owned(),
            kind: ReceiptKind::Delivered as i32,
            up_to_group_seq: k + 1,
        }),
        Kind::Empty | Kind::Unknown | Kind::HalfSent => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern::proto::v1::ClientFrame;

    fn frames_of(bytes: &Bytes) -> Vec<ClientFrame> {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        while let Some(payload) = frame::split_frame(&mut buf, 65536).unwrap() {
            out.push(frame::decode(payload).unwrap());
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn a_chunk_holds_whole_frames_of_its_kind_and_says_how_many() {
        for kind in [Kind::Send, Kind::Ack, Kind::Presence, Kind::GroupRequest] {
            let (bytes, count) = chunk(kind, 3);
            assert!(bytes.len() >= CHUNK_BYTES);
            let frames = frames_of(&bytes);
            assert_eq!(frames.len() as u64, count);
            assert!(frames.iter().all(|f| f.frame.is_some()));
        }
    }

    #[test]
    fn ids_differ_between_chunks() {
        let first = frames_of(&chunk(Kind::Send, 0).0);
        let second = frames_of(&chunk(Kind::Send, 1).0);
        assert_ne!(first[0], second[0]);
    }

    #[test]
    fn empty_and_unknown_frames_decode_to_no_case() {
        for kind in [Kind::Empty, Kind::Unknown] {
            let (bytes, count) = chunk(kind, 0);
            let frames = frames_of(&bytes);
            assert_eq!(frames.len() as u64, count);
            assert!(frames.iter().all(|f| f.frame.is_none()));
        }
    }
}
