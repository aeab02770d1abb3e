//! gorush's `POST /api/push` format: the request for one push, and what its answer means.
//!
//! One notification with one token per request, so that every entry in the answer's `logs` is
//! about this push. gorush reports failed tokens only when it runs with `core.sync: true` (and
//! `log.hide_token: false` to match by token; we match by `notif_id` first). In its default
//! asynchronous mode it answers 200 with empty `logs` once the push is queued: dead tokens then
//! never come back here (gorush's `feedback_hook_url` is the way to learn them).

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Outcome, answer_text, ids, transient};
use crate::push::notification::{Notification, Platform};

/// gorush's `platform` numbers (`core/core.go`).
const PLATFORM_IOS: u8 = 1;
const PLATFORM_ANDROID: u8 = 2;

/// The reason given for a Web Push token: gorush speaks APNs, FCM and HMS only.
pub const NO_WEB_PUSH: &str = "gorush has no web push";

/// Longest APNs `apns-collapse-id` (bytes); a longer one makes APNs refuse the push.
const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// APNs reasons (`error`, verbatim) that mean the token is dead.
const APNS_DEAD_TOKEN: &[&str] = &[
    "Unregistered",
    "BadDeviceToken",
    "ExpiredToken",
    "DeviceTokenNotForTopic",
];
/// FCM's text for an unregistered token (HTTP v1 `NOT_FOUND` / `UNREGISTERED`).
const FCM_NOT_FOUND: &str = "Requested entity was not found.";
/// Part of FCM's text for a malformed token (HTTP v1 `INVALID_ARGUMENT` about the token).
const FCM_INVALID_TOKEN: &str = "not a valid FCM registration token";

/// APNs reasons about the request rather than the token or the moment: the same push would be
/// refused again, so it is not retried.
const APNS_PERMANENT: &[&str] = &[
    "PayloadEmpty",
    "PayloadTooLarge",
    "BadCollapseId",
    "BadTopic",
    "TopicDisallowed",
    "MissingTopic",
    "BadPriority",
    "BadMessageId",
    "BadExpirationDate",
    "InvalidPushType",
    "MissingDeviceToken",
];

/// The request body for `notification`, or `None` for a platform gorush cannot push to (Web
/// Push).
///
/// Without a preview the text is a neutral "New message" / "N new messages" and neither the
/// sender nor the message body appears anywhere. `topic` is set for iOS only: on Android gorush
/// would also send to an FCM topic of that name.
pub fn request_body(notification: &Notification) -> Option<Value> {
    let ios = match notification.platform {
        Platform::Apns => true,
        Platform::Fcm => false,
        Platform::WebPush => return None,
    };
    let mut push = Map::new();
    push.insert("tokens".into(), json!([notification.token]));
    let platform = if ios { PLATFORM_IOS } else { PLATFORM_ANDROID };
    push.insert("platform".into(), json!(platform));
    push.insert("notif_id".into(), json!(notification.id));
    match &notification.preview {
        Some(preview) => {
            if let Some(sender) = &notification.sender {
                push.insert("title".into(), json!(sender));
            }
            push.insert("message".into(), json!(preview));
        }
        None => {
            push.insert("message".into(), json!(neutral_text(notification.count)));
        }
    }
    push.insert("priority".into(), json!("high"));
    if ios {
        if !notification.app_id.is_empty() {
            push.insert("topic".into(), json!(notification.app_id));
        }
        push.insert("badge".into(), json!(notification.count));
        push.insert("thread-id".into(), json!(notification.conversation));
        if notification.conversation.len() <= MAX_COLLAPSE_ID_BYTES {
            push.insert("collapse_id".into(), json!(notification.conversation));
        }
        push.insert("mutable_content".into(), json!(true));
        // The device's default alert sound; without it iOS shows the alert silently.
        push.insert("sound".into(), json!("default"));
    } else {
        push.insert(
            "android".into(),
            json!({ "collapse_key": notification.conversation }),
        );
    }
    push.insert("data".into(), Value::Object(ids(notification)));
    Some(json!({ "notifications": [Value::Object(push)] }))
}

/// The text of a push without a preview.
fn neutral_text(count: u32) -> String {
    if count > 1 {
        format!("{count} new messages")
    } else {
        "New message".to_owned()
    }
}

/// gorush's 200 answer: `{"counts":N,"logs":[...],"success":"ok"}`.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    logs: Option<Vec<LogEntry>>,
}

/// One entry of `logs` (failures only, and only in sync mode).
#[derive(Debug, Deserialize)]
struct LogEntry {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    notif_id: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    error: String,
}

/// What gorush's answer (`status`, `body`) says about `notification`.
///
/// 200 is success unless `logs` holds a `failed-push` entry for this push (same `notif_id`, or
/// same token): a dead-token error is [`Outcome::Unregistered`], an APNs error about the request
/// itself [`Outcome::Failed`], any other error (a provider's transient failure, gorush's full
/// queue) [`Outcome::Retry`]. A 200 whose body is not gorush's JSON still counts as sent: the
/// push was accepted. 408, 429 and 5xx are retried; any other status is a refusal.
pub fn outcome(notification: &Notification, status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        let logs = serde_json::from_slice::<Answer>(body)
            .ok()
            .and_then(|answer| answer.logs)
            .unwrap_or_default();
        return logs_outcome(notification, &logs);
    }
    if transient(status) {
        Outcome::Retry(answer_text(status, body))
    } else {
        Outcome::Failed(answer_text(status, body))
    }
}

fn logs_outcome(notification: &Notification, logs: &[LogEntry]) -> Outcome {
    let failures: Vec<&LogEntry> = logs
        .iter()
        .filter(|entry| entry.kind == "failed-push")
        .filter(|entry| {
            entry.notif_id == notification.id
                || (!entry.token.is_empty() && entry.token == notification.token)
        })
        .collect();
    // With gorush's own retries one token can fail several times: a dead token in any entry
    // settles it.
    if failures.iter().any(|entry| dead_token(&entry.error)) {
        return Outcome::Unregistered;
    }
    if let Some(entry) = failures
        .iter()
        .find(|entry| APNS_PERMANENT.contains(&entry.error.as_str()))
    {
        return Outcome::Failed(format!("gorush: {}", entry.error));
    }
    match failures.first() {
        Some(entry) => Outcome::Retry(format!("gorush: {}", entry.error)),
        None => Outcome::Sent,
    }
}

/// The provider's error says the token will never work again.
fn dead_token(error: &str) -> bool {
    APNS_DEAD_TOKEN.contains(&error) || error == FCM_NOT_FOUND || error.contains(FCM_INVALID_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::testing::notification;

    fn body(notification: &Notification) -> Value {
        request_body(notification).unwrap()
    }

    fn the_push(body: &Value) -> &Value {
        &body["notifications"][0]
    }

    #[test]
    fn an_ios_push_without_preview_shows_neither_sender_nor_text() {
        let mut n = notification(Platform::Apns);
        n.count = 3;
        // Set but not to be shown: the device did not ask for previews.
        n.sender = Some("mallory".into());
        n.preview = None;
        let body = body(&n);
        let push = the_push(&body);
        assert_eq!(push["tokens"], json!(["apns-token"]));
        assert_eq!(push["platform"], json!(1));
        assert_eq!(push["notif_id"], json!("alice/phone/42"));
        assert_eq!(push["message"], json!("3 new messages"));
        assert!(push.get("title").is_none());
        assert_eq!(push["topic"], json!("com.example.chat"));
        assert_eq!(push["badge"], json!(3));
        assert_eq!(push["thread-id"], json!("bob"));
        assert_eq!(push["collapse_id"], json!("bob"));
        assert_eq!(push["mutable_content"], json!(true));
        assert_eq!(push["sound"], json!("default"));
        assert_eq!(push["priority"], json!("high"));
        assert!(push.get("android").is_none());
        assert_eq!(
            push["data"],
            json!({
                "id": "alice/phone/42", "user": "alice", "device": "phone",
                "conversation": "bob", "group": false, "server_id": 9001, "seq": 42, "count": 3,
            })
        );
        let text = serde_json::to_string(&body).unwrap();
        assert!(!text.contains("mallory"), "{text}");
    }

    #[test]
    fn one_message_without_preview_says_new_message() {
        let n = notification(Platform::Fcm);
        assert_eq!(the_push(&body(&n))["message"], json!("New message"));
    }

    #[test]
    fn an_android_push_has_a_collapse_key_and_no_topic() {
        let mut n = notification(Platform::Fcm);
        n.preview = None;
        n.sender = None;
        let body = body(&n);
        let push = the_push(&body);
        assert_eq!(push["platform"], json!(2));
        assert_eq!(push["android"], json!({ "collapse_key": "bob" }));
        for ios_only in [
            "topic",
            "badge",
            "thread-id",
            "collapse_id",
            "mutable_content",
            "sound",
        ] {
            assert!(push.get(ios_only).is_none(), "{ios_only} in {push}");
        }
    }

    #[test]
    fn a_preview_shows_sender_and_text() {
        let mut n = notification(Platform::Fcm);
        n.sender = Some("bob".into());
        n.preview = Some("see you at eight".into());
        let push = the_push(&body(&n)).clone();
        assert_eq!(push["title"], json!("bob"));
        assert_eq!(push["message"], json!("see you at eight"));
    }

    #[test]
    fn a_preview_text_never_leaks_into_a_push_without_preview() {
        let mut n = notification(Platform::Apns);
        n.sender = Some("bob".into());
        n.preview = Some("the secret plan".into());
        let with = serde_json::to_string(&body(&n)).unwrap();
        assert!(with.contains("the secret plan"));
        n.preview = None;
        let without = serde_json::to_string(&body(&n)).unwrap();
        assert!(!without.contains("the secret plan"), "{without}");
        assert!(!without.contains("\"title\""), "{without}");
    }

    #[test]
    fn an_empty_app_id_sets_no_topic_and_a_long_conversation_no_collapse_id() {
        let mut n = notification(Platform::Apns);
        n.app_id = String::new();
        n.conversation = "g".repeat(65);
        let push = the_push(&body(&n)).clone();
        assert!(push.get("topic").is_none());
        assert!(push.get("collapse_id").is_none());
        assert_eq!(push["thread-id"], json!(n.conversation));
    }

    #[test]
    fn web_push_is_not_for_gorush() {
        assert_eq!(request_body(&notification(Platform::WebPush)), None);
    }

    fn answer(logs: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "counts": 1, "logs": logs, "success": "ok" })).unwrap()
    }

    fn failed(notif_id: &str, token: &str, error: &str) -> Value {
        json!({
            "notif_id": notif_id, "type": "failed-push", "platform": "ios",
            "token": token, "message": "New message", "error": error,
        })
    }

    #[test]
    fn empty_logs_mean_sent() {
        let n = notification(Platform::Apns);
        assert_eq!(
            outcome(&n, StatusCode::OK, &answer(json!([]))),
            Outcome::Sent
        );
        assert_eq!(
            outcome(&n, StatusCode::OK, br#"{"counts":1,"logs":null}"#),
            Outcome::Sent
        );
        assert_eq!(outcome(&n, StatusCode::OK, b"not json"), Outcome::Sent);
    }

    #[test]
    fn dead_token_errors_mean_unregistered() {
        let n = notification(Platform::Apns);
        for error in [
            "Unregistered",
            "BadDeviceToken",
            "ExpiredToken",
            "DeviceTokenNotForTopic",
            "Requested entity was not found.",
            "The registration token is not a valid FCM registration token",
        ] {
            let body = answer(json!([failed("alice/phone/42", "**********", error)]));
            assert_eq!(
                outcome(&n, StatusCode::OK, &body),
                Outcome::Unregistered,
                "{error}"
            );
        }
    }

    #[test]
    fn a_failure_is_matched_by_token_when_the_id_differs() {
        let n = notification(Platform::Apns);
        let body = answer(json!([failed("", "apns-token", "Unregistered")]));
        assert_eq!(outcome(&n, StatusCode::OK, &body), Outcome::Unregistered);
        let other = answer(json!([failed("other/id/1", "other-token", "Unregistered")]));
        assert_eq!(outcome(&n, StatusCode::OK, &other), Outcome::Sent);
    }

    #[test]
    fn a_dead_token_in_any_attempt_wins_over_a_transient_error() {
        let n = notification(Platform::Fcm);
        let body = answer(json!([
            failed(
                "alice/phone/42",
                "",
                "The service is currently unavailable."
            ),
            failed("alice/phone/42", "", "Requested entity was not found."),
        ]));
        assert_eq!(outcome(&n, StatusCode::OK, &body), Outcome::Unregistered);
    }

    #[test]
    fn other_failures_are_retried_and_request_errors_are_not() {
        let n = notification(Platform::Apns);
        let full = answer(json!([failed(
            "alice/phone/42",
            "",
            "max capacity reached"
        )]));
        assert!(matches!(
            outcome(&n, StatusCode::OK, &full),
            Outcome::Retry(why) if why.contains("max capacity reached")
        ));
        let too_large = answer(json!([failed("alice/phone/42", "", "PayloadTooLarge")]));
        assert!(matches!(
            outcome(&n, StatusCode::OK, &too_large),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn statuses_split_into_retry_and_failed() {
        let n = notification(Platform::Apns);
        let refused = br#"{"code":400,"message":"Missing notifications field."}"#;
        assert!(matches!(
            outcome(&n, StatusCode::BAD_REQUEST, refused),
            Outcome::Failed(why) if why.contains("Missing notifications field.")
        ));
        assert!(matches!(
            outcome(&n, StatusCode::NOT_FOUND, b""),
            Outcome::Failed(_)
        ));
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
        ] {
            assert!(
                matches!(outcome(&n, status, b""), Outcome::Retry(_)),
                "{status}"
            );
        }
    }
}
