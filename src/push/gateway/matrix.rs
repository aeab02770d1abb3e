//! The Matrix push gateway API (`POST /_matrix/push/v1/notify`, as Sygnal serves it): the
//! request for one push to one device, and what the answer means.
//!
//! The message's server id stands in for the event id and the conversation for the room id.
//! Without a preview the request is an `event_id_only` push: no `type`, `sender` or `content`
//! (Sygnal's APNs pushkin picks its event-id-only payload when `type` is absent), and the
//! device's `data` says `"format": "event_id_only"`.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Outcome, answer_text, ids};
use crate::push::notification::Notification;

/// The request body for `notification`: one device, the app's ids in its `data`.
pub fn request_body(notification: &Notification) -> Value {
    let mut data = ids(notification);
    let mut push = Map::new();
    push.insert("event_id".into(), json!(notification.server_id.to_string()));
    push.insert("room_id".into(), json!(notification.conversation));
    push.insert("prio".into(), json!("high"));
    // The spec: counts whose value is zero should be left out.
    let counts = if notification.count > 0 {
        json!({ "unread": notification.count })
    } else {
        json!({})
    };
    push.insert("counts".into(), counts);
    match &notification.preview {
        Some(preview) => {
            push.insert("type".into(), json!("m.room.message"));
            if let Some(sender) = &notification.sender {
                push.insert("sender".into(), json!(sender));
            }
            push.insert(
                "content".into(),
                json!({ "msgtype": "m.text", "body": preview }),
            );
        }
        None => {
            data.insert("format".into(), json!("event_id_only"));
        }
    }
    let device = json!({
        "app_id": notification.app_id,
        "pushkey": notification.token,
        "pushkey_ts": notification.registered_secs,
        "data": Value::Object(data),
        // The device's default sound (Sygnal passes it to APNs; without it alerts are silent).
        "tweaks": { "sound": "default" },
    });
    push.insert("devices".into(), json!([device]));
    json!({ "notification": Value::Object(push) })
}

/// The gateway's 200 answer: the pushkeys it found dead.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    rejected: Vec<String>,
}

/// What the gateway's answer (`status`, `body`) says about `notification`.
///
/// A 2xx whose `rejected` lists the token is [`Outcome::Unregistered`], any other 2xx is
/// [`Outcome::Sent`] (the body is read as JSON whatever its `Content-Type`: Sygnal sets none; a
/// body that is not the expected JSON still means accepted).
///
/// The spec asks for retries with backoff on any HTTP error. Refused here instead, because
/// sending the same request again cannot succeed: 400 (Sygnal: malformed request), 404 and 405
/// (not a push gateway at that URL), 413 (too large), and redirects (not followed). Every other
/// status is retried: 5xx (Sygnal's 502 when a provider failed, 500 on a bug), 429, 408, and
/// the 4xx that something between us and the gateway may answer for a while (401, 403).
pub fn outcome(notification: &Notification, status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        let rejected = serde_json::from_slice::<Answer>(body)
            .map(|answer| answer.rejected)
            .unwrap_or_default();
        return if rejected.contains(&notification.token) {
            Outcome::Unregistered
        } else {
            Outcome::Sent
        };
    }
    let refused = status.is_redirection()
        || [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::PAYLOAD_TOO_LARGE,
        ]
        .contains(&status);
    if refused {
        Outcome::Failed(answer_text(status, body))
    } else {
        Outcome::Retry(answer_text(status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::notification::Platform;
    use crate::push::testing::notification;

    #[test]
    fn a_push_without_preview_is_event_id_only() {
        let mut n = notification(Platform::Apns);
        n.count = 2;
        // Set but not to be shown: the device did not ask for previews.
        n.sender = Some("mallory".into());
        n.preview = None;
        let body = request_body(&n);
        assert_eq!(
            body,
            json!({ "notification": {
                "event_id": "9001",
                "room_id": "bob",
                "prio": "high",
                "counts": { "unread": 2 },
                "devices": [{
                    "app_id": "com.example.chat",
                    "pushkey": "apns-token",
                    "pushkey_ts": 1_700_000_000,
                    "data": {
                        "format": "event_id_only",
                        "id": "alice/phone/42", "user": "alice", "device": "phone",
                        "conversation": "bob", "group": false, "server_id": 9001, "seq": 42,
                        "count": 2,
                    },
                    "tweaks": { "sound": "default" },
                }],
            }})
        );
        let text = serde_json::to_string(&body).unwrap();
        assert!(!text.contains("mallory"), "{text}");
    }

    #[test]
    fn a_preview_adds_type_sender_and_content() {
        let mut n = notification(Platform::Fcm);
        n.sender = Some("bob".into());
        n.preview = Some("see you at eight".into());
        let body = request_body(&n);
        let push = &body["notification"];
        assert_eq!(push["type"], json!("m.room.message"));
        assert_eq!(push["sender"], json!("bob"));
        assert_eq!(
            push["content"],
            json!({ "msgtype": "m.text", "body": "see you at eight" })
        );
        assert!(push["devices"][0]["data"].get("format").is_none());
    }

    #[test]
    fn a_preview_text_never_leaks_into_a_push_without_preview() {
        let mut n = notification(Platform::Apns);
        n.sender = Some("bob".into());
        n.preview = Some("the secret plan".into());
        assert!(
            serde_json::to_string(&request_body(&n))
                .unwrap()
                .contains("the secret plan")
        );
        n.preview = None;
        let without = serde_json::to_string(&request_body(&n)).unwrap();
        assert!(!without.contains("the secret plan"), "{without}");
        for key in ["\"type\"", "\"sender\"", "\"content\""] {
            assert!(!without.contains(key), "{key} in {without}");
        }
    }

    #[test]
    fn a_rejected_pushkey_means_unregistered() {
        let n = notification(Platform::Apns);
        assert_eq!(
            outcome(&n, StatusCode::OK, br#"{"rejected":["apns-token"]}"#),
            Outcome::Unregistered
        );
        assert_eq!(
            outcome(&n, StatusCode::OK, br#"{"rejected":["someone-else"]}"#),
            Outcome::Sent
        );
        assert_eq!(
            outcome(&n, StatusCode::OK, br#"{"rejected":[]}"#),
            Outcome::Sent
        );
        assert_eq!(outcome(&n, StatusCode::OK, b""), Outcome::Sent);
    }

    #[test]
    fn server_errors_are_retried_and_bad_requests_are_not() {
        let n = notification(Platform::Apns);
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::FORBIDDEN,
        ] {
            assert!(
                matches!(outcome(&n, status, b""), Outcome::Retry(_)),
                "{status}"
            );
        }
        assert!(matches!(
            outcome(&n, StatusCode::BAD_REQUEST, b"No devices in notification"),
            Outcome::Failed(why) if why.contains("No devices in notification")
        ));
        for status in [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED] {
            assert!(
                matches!(outcome(&n, status, b""), Outcome::Failed(_)),
                "{status}"
            );
        }
    }
}
