//! A stand-in push gateway: a real HTTP server on loopback that records every request body and
//! answers what the test scripted (then its default answer).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    script: VecDeque<(u16, String)>,
    default: (u16, String),
}

/// The gateway; stops when dropped.
pub struct StandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// A gorush stand-in (`POST /api/push`, async mode: empty logs).
    pub async fn gorush() -> Self {
        Self::start(
            "/api/push",
            (200, r#"{"counts":1,"logs":[],"success":"ok"}"#.to_owned()),
        )
        .await
    }

    /// A Matrix push gateway stand-in (`POST /_matrix/push/v1/notify`).
    pub async fn matrix() -> Self {
        Self::start(
            "/_matrix/push/v1/notify",
            (200, r#"{"rejected":[]}"#.to_owned()),
        )
        .await
    }

    async fn start(path: &'static str, default: (u16, String)) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            default,
            ..Inner::default()
        }));
        let app = Router::new()
            .route(path, post(record))
            .with_state((inner.clone(), path));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn { addr, inner, task }
    }

    /// The URL of the push endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next request with `status` and `body` (before the default answer).
    pub fn script(&self, status: u16, body: &str) {
        self.inner
            .lock()
            .unwrap()
            .script
            .push_back((status, body.to_owned()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State((inner, path)): State<(Arc<Mutex<Inner>>, &'static str)>,
    body: Bytes,
) -> (StatusCode, String) {
    let mut inner = inner.lock().unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    inner.requests.push(Recorded {
        path: path.to_owned(),
        body,
    });
    let (status, answer) = match inner.script.pop_front() {
        Some(scripted) => scripted,
        None => inner.default.clone(),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        answer,
    )
}
