//! How `chat-cli` shows what the server sends: one line per frame.

use tern::proto::v1::{
    Deliver, Error, ErrorCode, GoAway, GoAwayReason, MessageKind, PresenceUpdate, QueueDrained,
    ReceiptKind, ServerAck, TypingNotice, Welcome, deliver,
};

/// `connected as alice/cli on tern-1 (cursor 0, last seq 4)`.
pub fn welcome(w: &Welcome) -> String {
    format!(
        "connected as {}/{} on {} (cursor {}, last seq {})",
        w.user, w.device, w.node, w.cursor, w.last_seq
    )
}

/// `[seq] from_user: body` for messages, `[seq] bob read up to 4` for receipts.
pub fn deliver(d: &Deliver, me: &str) -> String {
    match &d.payload {
        Some(deliver::Payload::Message(m)) => {
            let kind = MessageKind::try_from(m.kind).unwrap_or(MessageKind::Unspecified);
            let body = body_text(&m.body, kind);
            if m.from_user == me {
                // Our own message, sent from another device.
                format!(
                    "[{}] {me} (on {}) → {}: {body}",
                    d.seq, m.from_device, m.to_user
                )
            } else {
                format!("[{}] {}: {body}", d.seq, m.from_user)
            }
        }
        Some(deliver::Payload::Receipt(r)) => {
            let what = match ReceiptKind::try_from(r.kind) {
                Ok(ReceiptKind::Read) => "read",
                Ok(ReceiptKind::Delivered) => "received",
                _ => "acknowledged",
            };
            format!(
                "[{}] {} {what} your messages up to seq {}",
                d.seq, r.from_user, r.up_to_seq
            )
        }
        Some(deliver::Payload::GroupMessage(m)) => {
            let kind = MessageKind::try_from(m.kind).unwrap_or(MessageKind::Unspecified);
            let body = body_text(&m.body, kind);
            format!("[{}] {}@{}: {body}", d.seq, m.from_user, m.group_id)
        }
        Some(deliver::Payload::GroupEvent(e)) => format!(
            "[{}] group {} event {} by {}: {:?} {}",
            d.seq, e.group_id, e.kind, e.actor, e.users, e.subject
        ),
        Some(deliver::Payload::GroupReceipt(r)) => format!(
            "[{}] {} saw group {} up to {}",
            d.seq, r.from_user, r.group_id, r.up_to_group_seq
        ),
        None => format!("[{}] (empty entry)", d.seq),
    }
}

/// The body as text; binary or non-UTF-8 bodies as their size.
fn body_text(body: &[u8], kind: MessageKind) -> String {
    match (kind, std::str::from_utf8(body)) {
        (MessageKind::Binary, _) | (_, Err(_)) => format!("<{} bytes of binary>", body.len()),
        (_, Ok(text)) => text.to_owned(),
    }
}

/// `✓ seq=N` for a message, `✓ receipt seq=N` for a receipt; `✓ queued` for one held in the
/// queue to the recipient's datacenter (which assigns its seq).
pub fn server_ack(ack: &ServerAck, receipt: bool) -> String {
    let what = if receipt { "receipt " } else { "" };
    let duplicate = if ack.duplicate {
        " (already stored)"
    } else {
        ""
    };
    if ack.queued {
        return format!("✓ {what}queued for the recipient's datacenter{duplicate}");
    }
    format!("✓ {what}seq={}{duplicate}", ack.seq)
}

/// `bob is typing…` / `bob stopped typing`.
pub fn typing(t: &TypingNotice) -> String {
    if t.typing {
        format!("{} is typing…", t.from_user)
    } else {
        format!("{} stopped typing", t.from_user)
    }
}

/// `bob is online` / `bob is offline (last seen 42 s ago)`.
pub fn presence(p: &PresenceUpdate, now_ms: u64) -> String {
    if p.online {
        return format!("{} is online", p.user);
    }
    if p.last_seen_ms == 0 {
        return format!("{} is offline (never seen)", p.user);
    }
    let ago = now_ms.saturating_sub(p.last_seen_ms) / 1000;
    format!("{} is offline (last seen {ago} s ago)", p.user)
}

/// `! RATE_LIMITED: rate limit exceeded [msg cli-1]`.
pub fn error(e: &Error) -> String {
    let code = ErrorCode::try_from(e.code).map_or("UNKNOWN_ERROR", |c| {
        c.as_str_name().trim_start_matches("ERROR_CODE_")
    });
    let id = if e.client_msg_id.is_empty() {
        String::new()
    } else {
        format!(" [msg {}]", e.client_msg_id)
    };
    format!("! {code}: {}{id}", e.message)
}

/// `! goaway SHUTDOWN (draining); reconnect after 500 ms`.
pub fn go_away(g: &GoAway) -> String {
    let reason = GoAwayReason::try_from(g.reason).map_or("UNKNOWN", |r| {
        r.as_str_name().trim_start_matches("GO_AWAY_REASON_")
    });
    format!(
        "! goaway {reason} ({}); reconnect after {} ms",
        g.message, g.reconnect_after_ms
    )
}

/// `-- caught up (last seq 4)`.
pub fn drained(q: &QueueDrained) -> String {
    format!("-- caught up (last seq {})", q.last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern::proto::v1::{ChatMessage, ReceiptNotice};

    fn message(from: &str, body: &str) -> Deliver {
        Deliver {
            seq: 7,
            timestamp_ms: 0,
            payload: Some(deliver::Payload::Message(ChatMessage {
                from_user: from.to_owned(),
                from_device: "phone".to_owned(),
                to_user: "alice".to_owned(),
                kind: MessageKind::Text.into(),
                body: body.as_bytes().to_vec().into(),
                ..ChatMessage::default()
            })),
        }
    }

    #[test]
    fn messages_show_seq_sender_and_body() {
        assert_eq!(deliver(&message("bob", "hi"), "alice"), "[7] bob: hi");
        assert_eq!(
            deliver(&message("alice", "sent elsewhere"), "alice"),
            "[7] alice (on phone) → alice: sent elsewhere"
        );
        let mut binary = message("bob", "x");
        if let Some(deliver::Payload::Message(m)) = &mut binary.payload {
            m.kind = MessageKind::Binary.into();
        }
        assert_eq!(deliver(&binary, "alice"), "[7] bob: <1 bytes of binary>");
    }

    #[test]
    fn receipts_acks_and_errors_read_well() {
        let receipt = Deliver {
            seq: 9,
            timestamp_ms: 0,
            payload: Some(deliver::Payload::Receipt(ReceiptNotice {
                from_user: "bob".to_owned(),
                from_device: "p".to_owned(),
                kind: ReceiptKind::Read.into(),
                up_to_seq: 3,
            })),
        };
        assert_eq!(
            deliver(&receipt, "alice"),
            "[9] bob read your messages up to seq 3"
        );
        let ack = ServerAck {
            seq: 4,
            ..ServerAck::default()
        };
        assert_eq!(server_ack(&ack, false), "✓ seq=4");
        assert_eq!(server_ack(&ack, true), "✓ receipt seq=4");
        let queued = ServerAck {
            seq: 0,
            queued: true,
            ..ServerAck::default()
        };
        assert_eq!(
            server_ack(&queued, false),
            "✓ queued for the recipient's datacenter"
        );
        let e = Error {
            code: ErrorCode::RateLimited.into(),
            message: "slow down".to_owned(),
            client_msg_id: "m1".to_owned(),
            retry_after_ms: 0,
        };
        assert_eq!(error(&e), "! RATE_LIMITED: slow down [msg m1]");
    }

    #[test]
    fn presence_shows_how_long_ago() {
        let p = PresenceUpdate {
            user: "bob".to_owned(),
            online: false,
            last_seen_ms: 10_000,
        };
        assert_eq!(presence(&p, 52_000), "bob is offline (last seen 42 s ago)");
        let online = PresenceUpdate {
            online: true,
            ..p.clone()
        };
        assert_eq!(presence(&online, 0), "bob is online");
    }
}
