//! The gateway client against a stand-in gateway: keep-alive, reconnects, timeouts, and both
//! formats end to end.

use serde_json::json;

use super::*;
use crate::push::notification::Platform;
use crate::push::testing::{Answer, StandIn, notification};

fn config(kind: GatewayKind, url: String) -> PushConfig {
    PushConfig {
        gateway: kind,
        url,
        timeout_ms: 10_000,
        ..PushConfig::default()
    }
}

#[tokio::test]
async fn pushes_share_one_kept_alive_connection() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, standin.url("/api/push"))).unwrap();
    for seq in 1..=3 {
        let mut n = notification(Platform::Apns);
        n.id = format!("alice/phone/{seq}");
        assert_eq!(gateway.send(&n).await, Outcome::Sent);
    }
    let requests = standin.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.path == "/api/push"));
    assert!(requests.iter().all(|r| r.connection == 1), "{requests:?}");
    assert_eq!(
        requests[2].body["notifications"][0]["notif_id"],
        json!("alice/phone/3")
    );
    assert_eq!(standin.accepted(), 1);
    assert_eq!(gateway.connections_opened(), 1);
}

#[tokio::test]
async fn a_connection_the_gateway_closes_is_opened_again() {
    let standin = StandIn::closing_each_connection(Answer::gorush_ok()).await;
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, standin.url("/api/push"))).unwrap();
    for _ in 0..3 {
        assert_eq!(
            gateway.send(&notification(Platform::Fcm)).await,
            Outcome::Sent
        );
    }
    assert_eq!(standin.requests().len(), 3);
    assert_eq!(standin.accepted(), 3);
}

#[tokio::test]
async fn a_hang_up_on_a_reused_connection_is_resent_at_once_on_a_new_one() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    standin.script([Answer::gorush_ok(), Answer::HangUp]);
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, standin.url("/api/push"))).unwrap();
    let n = notification(Platform::Apns);
    assert_eq!(gateway.send(&n).await, Outcome::Sent);
    assert_eq!(gateway.send(&n).await, Outcome::Sent);
    let connections: Vec<usize> = standin.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [1, 1, 2]);
}

#[tokio::test]
async fn a_gateway_that_does_not_answer_in_time_is_retried_on_a_new_connection() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    standin.script([Answer::Hang]);
    let mut config = config(GatewayKind::Gorush, standin.url("/api/push"));
    config.timeout_ms = 50;
    let mut gateway = Gateway::new(&config).unwrap();
    let n = notification(Platform::Apns);
    match gateway.send(&n).await {
        Outcome::Retry(why) => assert!(why.contains("did not answer"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gateway.send(&n).await, Outcome::Sent);
    assert_eq!(standin.accepted(), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_retry() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/push", listener.local_addr().unwrap());
    drop(listener);
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, url)).unwrap();
    match gateway.send(&notification(Platform::Apns)).await {
        Outcome::Retry(why) => assert!(why.contains("cannot connect"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn web_push_through_gorush_fails_without_a_request() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, standin.url("/api/push"))).unwrap();
    assert_eq!(
        gateway.send(&notification(Platform::WebPush)).await,
        Outcome::Failed(gorush::NO_WEB_PUSH.to_owned())
    );
    assert!(standin.requests().is_empty());
    assert_eq!(standin.accepted(), 0);
}

#[tokio::test]
async fn gorush_failed_push_logs_are_read() {
    let standin = StandIn::start(Answer::gorush_ok()).await;
    let dead = json!({"counts": 1, "success": "ok", "logs": [{
        "notif_id": "alice/phone/42", "type": "failed-push", "platform": "ios",
        "token": "**********", "message": "New message", "error": "Unregistered",
    }]});
    standin.script([
        Answer::Reply(500, String::new()),
        Answer::Reply(200, dead.to_string()),
    ]);
    let mut gateway = Gateway::new(&config(GatewayKind::Gorush, standin.url("/api/push"))).unwrap();
    let n = notification(Platform::Apns);
    assert!(matches!(gateway.send(&n).await, Outcome::Retry(why) if why.contains("500")));
    assert_eq!(gateway.send(&n).await, Outcome::Unregistered);
    assert_eq!(standin.accepted(), 1);
}

#[tokio::test]
async fn matrix_pushes_go_to_the_notify_path_and_rejections_are_read() {
    let standin = StandIn::start(Answer::matrix_ok()).await;
    standin.script([
        Answer::matrix_ok(),
        Answer::Reply(200, r#"{"rejected":["fcm-token"]}"#.into()),
        Answer::Reply(400, "No devices in notification".into()),
    ]);
    let url = standin.url("/_matrix/push/v1/notify");
    let mut gateway = Gateway::new(&config(GatewayKind::Matrix, url)).unwrap();
    let n = notification(Platform::Fcm);
    assert_eq!(gateway.send(&n).await, Outcome::Sent);
    assert_eq!(gateway.send(&n).await, Outcome::Unregistered);
    assert!(matches!(gateway.send(&n).await, Outcome::Failed(_)));
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r.path == "/_matrix/push/v1/notify"));
    assert_eq!(
        requests[0].body["notification"]["devices"][0]["pushkey"],
        json!("fcm-token")
    );
    assert_eq!(standin.accepted(), 1);
}

#[test]
fn a_bad_url_is_refused_when_built() {
    let config = config(GatewayKind::Gorush, "https://gorush/api/push".into());
    assert!(matches!(
        Gateway::new(&config),
        Err(GatewayError::Url { .. })
    ));
}
