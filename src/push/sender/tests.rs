//! The sender against a stand-in gateway, in both formats: retries keep the push's id, dead
//! tokens reach the callback, connections are kept alive, and a down gateway or a full queue
//! ends in dead letters.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::push::config::GatewayKind;
use crate::push::notification::Platform;
use crate::push::testing::{Answer, Recorded, StandIn, notification, until};

/// The two formats, with the stand-in's path and default answer for each.
fn formats() -> [(GatewayKind, &'static str, Answer); 2] {
    [
        (GatewayKind::Gorush, "/api/push", Answer::gorush_ok()),
        (
            GatewayKind::Matrix,
            "/_matrix/push/v1/notify",
            Answer::matrix_ok(),
        ),
    ]
}

/// Settings for a test: quick retries, one connection.
fn config(kind: GatewayKind, url: String) -> PushConfig {
    PushConfig {
        gateway: kind,
        url,
        connections: 1,
        queue: 16,
        timeout_ms: 10_000,
        retry_base_ms: 1,
        retry_max_ms: 5,
        retry_for_secs: 600,
        ..PushConfig::default()
    }
}

/// A callback that records the ids it was called with.
fn recorder() -> (OnUnregistered, Arc<Mutex<Vec<String>>>) {
    let called = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&called);
    let callback: OnUnregistered =
        Arc::new(move |n: &Notification| record.lock().unwrap().push(n.id.clone()));
    (callback, called)
}

impl Sender {
    /// Queues `notification` or drops it: false when the queue is full (then counted as a dead
    /// letter here) or the sender closed. The scheduler offers instead (it keeps what it cannot
    /// queue); this is the simplest way to put pushes on the queue in a test.
    fn submit(&self, notification: Notification) -> bool {
        match self.enqueue(notification) {
            Enqueued::Queued => true,
            Enqueued::Full => {
                self.counters.dead_letter();
                false
            }
            Enqueued::Closed => false,
        }
    }
}

fn ignore() -> OnUnregistered {
    Arc::new(|_: &Notification| {})
}

/// The push id a request carries, in either format.
fn push_id(request: &Recorded) -> Value {
    let gorush = &request.body["notifications"][0]["notif_id"];
    if gorush.is_null() {
        request.body["notification"]["devices"][0]["data"]["id"].clone()
    } else {
        gorush.clone()
    }
}

#[tokio::test]
async fn a_retried_push_keeps_its_id_and_is_sent_once() {
    for (kind, path, ok) in formats() {
        let standin = StandIn::start(ok).await;
        standin.script([Answer::Reply(500, String::new())]);
        let sender = Sender::start(&config(kind, standin.url(path)), ignore()).unwrap();
        assert!(sender.submit(notification(Platform::Apns)));
        until("sent", || sender.stats().sent == 1).await;
        let requests = standin.requests();
        assert_eq!(requests.len(), 2, "{kind:?}");
        assert_eq!(push_id(&requests[0]), json!("alice/phone/42"), "{kind:?}");
        assert_eq!(push_id(&requests[1]), json!("alice/phone/42"), "{kind:?}");
        let stats = sender.stats();
        assert_eq!(
            (stats.sent, stats.retries, stats.queued),
            (1, 1, 0),
            "{kind:?}"
        );
        assert_eq!((stats.failed, stats.dead_letters), (0, 0), "{kind:?}");
        sender.shutdown().await;
    }
}

#[tokio::test]
async fn a_dead_token_is_handed_to_the_callback_once() {
    let gorush_dead = json!({"counts": 1, "success": "ok", "logs": [{
        "notif_id": "alice/phone/42", "type": "failed-push", "platform": "android",
        "token": "fcm-token", "message": "New message",
        "error": "Requested entity was not found.",
    }]});
    let dead = [
        gorush_dead.to_string(),
        r#"{"rejected":["fcm-token"]}"#.to_owned(),
    ];
    for ((kind, path, ok), dead) in formats().into_iter().zip(dead) {
        let standin = StandIn::start(ok).await;
        standin.script([Answer::Reply(200, dead)]);
        let (callback, called) = recorder();
        let sender = Sender::start(&config(kind, standin.url(path)), callback).unwrap();
        assert!(sender.submit(notification(Platform::Fcm)));
        // A second push after it: once it is sent, the first is settled.
        let mut later = notification(Platform::Fcm);
        later.id = "alice/phone/43".into();
        assert!(sender.submit(later));
        until("second push sent", || sender.stats().sent == 1).await;
        assert_eq!(*called.lock().unwrap(), ["alice/phone/42"], "{kind:?}");
        let stats = sender.stats();
        assert_eq!((stats.tokens_removed, stats.retries), (1, 0), "{kind:?}");
        assert_eq!(standin.requests().len(), 2, "{kind:?}");
        sender.shutdown().await;
    }
}

#[tokio::test]
async fn pushes_reuse_one_connection() {
    for (kind, path, ok) in formats() {
        let standin = StandIn::start(ok).await;
        let sender = Sender::start(&config(kind, standin.url(path)), ignore()).unwrap();
        for seq in 1..=5 {
            let mut n = notification(Platform::Apns);
            n.id = format!("alice/phone/{seq}");
            assert!(sender.submit(n));
        }
        until("all sent", || sender.stats().sent == 5).await;
        assert_eq!(standin.requests().len(), 5, "{kind:?}");
        assert_eq!(standin.accepted(), 1, "{kind:?}");
        sender.shutdown().await;
    }
}

#[tokio::test]
async fn each_task_keeps_its_own_connection() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    let mut config = config(GatewayKind::Gorush, standin.url("/api/push"));
    config.connections = 3;
    config.queue = 30;
    let sender = Sender::start(&config, ignore()).unwrap();
    for _ in 0..30 {
        assert!(sender.submit(notification(Platform::Fcm)));
    }
    until("all sent", || sender.stats().sent == 30).await;
    assert!(standin.accepted() <= 3, "{}", standin.accepted());
    sender.shutdown().await;
}

#[tokio::test]
async fn a_refused_push_is_counted_failed_and_not_retried() {
    for (kind, path, ok) in formats() {
        let standin = StandIn::start(ok).await;
        standin.script([Answer::Reply(400, "bad".into())]);
        let sender = Sender::start(&config(kind, standin.url(path)), ignore()).unwrap();
        assert!(sender.submit(notification(Platform::Apns)));
        until("failed", || sender.stats().failed == 1).await;
        assert_eq!(sender.stats().retries, 0);
        assert_eq!(standin.requests().len(), 1);
        sender.shutdown().await;
    }
}

/// A URL where nothing listens.
async fn nowhere(path: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn a_push_to_a_gateway_that_stays_down_ends_as_a_dead_letter() {
    for (kind, path, _) in formats() {
        let mut config = config(kind, nowhere(path).await);
        config.retry_for_secs = 0;
        let sender = Sender::start(&config, ignore()).unwrap();
        assert!(sender.submit(notification(Platform::Apns)));
        until("dead letter", || sender.stats().dead_letters == 1).await;
        let stats = sender.stats();
        assert_eq!(
            (stats.sent, stats.failed, stats.retries),
            (0, 0, 0),
            "{kind:?}"
        );
        sender.shutdown().await;
    }
}

#[tokio::test]
async fn a_push_is_retried_until_its_retry_time_runs_out() {
    let mut config = config(GatewayKind::Gorush, nowhere("/api/push").await);
    config.retry_for_secs = 1;
    let sender = Sender::start(&config, ignore()).unwrap();
    assert!(sender.submit(notification(Platform::Apns)));
    until("dead letter", || sender.stats().dead_letters == 1).await;
    let stats = sender.stats();
    assert!(stats.retries >= 1, "{stats:?}");
    assert_eq!(stats.sent, 0);
    sender.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_pushes_as_dead_letters() {
    let standin = StandIn::start(Answer::Hang).await;
    let mut config = config(GatewayKind::Gorush, standin.url("/api/push"));
    config.queue = 2;
    let sender = Sender::start(&config, ignore()).unwrap();
    // The only task takes the first push and waits on the gateway...
    assert!(sender.submit(notification(Platform::Apns)));
    until("first push at the gateway", || {
        standin.requests().len() == 1
    })
    .await;
    // ... so two more fill the queue and the next is refused.
    assert!(sender.submit(notification(Platform::Apns)));
    assert!(sender.submit(notification(Platform::Apns)));
    assert!(!sender.submit(notification(Platform::Apns)));
    let stats = sender.stats();
    assert_eq!((stats.queued, stats.dead_letters), (2, 1), "{stats:?}");
    // Offered instead, a push the queue has no room for comes back, not counted.
    assert!(!sender.offer(notification(Platform::Fcm)));
    assert_eq!(sender.stats().dead_letters, 1);
    sender.shutdown().await;
}

#[tokio::test]
async fn a_closed_sender_refuses_pushes_and_its_tasks_end() {
    let standin = StandIn::start(Answer::Hang).await;
    let sender = Sender::start(
        &config(GatewayKind::Gorush, standin.url("/api/push")),
        ignore(),
    )
    .unwrap();
    assert!(sender.submit(notification(Platform::Apns)));
    until("push at the gateway", || standin.requests().len() == 1).await;
    sender.close();
    assert!(!sender.submit(notification(Platform::Apns)));
    assert_eq!(sender.stats().dead_letters, 1);
    // The task holding the hanging push ends too.
    sender.shutdown().await;
}

#[tokio::test]
async fn settings_the_sender_cannot_run_with_are_refused() {
    let mut config = config(GatewayKind::Gorush, "http://127.0.0.1:1/api/push".into());
    config.queue = 0;
    assert!(matches!(
        Sender::start(&config, ignore()),
        Err(GatewayError::Settings(_))
    ));
    config.queue = 1;
    config.connections = 0;
    assert!(matches!(
        Sender::start(&config, ignore()),
        Err(GatewayError::Settings(_))
    ));
    config.connections = 1;
    config.url = "ftp://127.0.0.1/".into();
    assert!(matches!(
        Sender::start(&config, ignore()),
        Err(GatewayError::Url { .. })
    ));
}

#[test]
fn the_sender_needs_a_runtime() {
    let config = config(GatewayKind::Gorush, "http://127.0.0.1:1/api/push".into());
    assert!(matches!(
        Sender::start(&config, ignore()),
        Err(GatewayError::NoRuntime)
    ));
}
