//! Test fixtures for the push modules: a notification, and a stand-in gateway on 127.0.0.1:0
//! that records each request and answers as scripted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::notification::{Notification, Platform};

/// A push for alice's phone about one message from bob, without preview.
pub(crate) fn notification(platform: Platform) -> Notification {
    Notification {
        id: "alice/phone/42".into(),
        platform,
        token: format!("{}-token", platform.label()),
        app_id: "com.example.chat".into(),
        registered_secs: 1_700_000_000,
        user: "alice".into(),
        device: "phone".into(),
        conversation: "bob".into(),
        group: false,
        server_id: 9001,
        seq: 42,
        count: 1,
        sender: None,
        preview: None,
    }
}

/// How the stand-in answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This status and body.
    Reply(u16, String),
    /// Never (the client has to time out).
    Hang,
    /// Closes the connection without an answer.
    HangUp,
}

impl Answer {
    /// gorush's answer to a push it queued.
    pub(crate) fn gorush_ok() -> Answer {
        Answer::Reply(200, r#"{"counts":1,"logs":[],"success":"ok"}"#.into())
    }

    /// A Matrix push gateway's answer with nothing rejected.
    pub(crate) fn matrix_ok() -> Answer {
        Answer::Reply(200, r#"{"rejected":[]}"#.into())
    }
}

/// One request the stand-in got.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// Which accepted connection it came on (1 for the first).
    pub(crate) connection: usize,
    /// Its path.
    pub(crate) path: String,
    /// Its body as JSON (`Null` if it was not JSON).
    pub(crate) body: Value,
}

#[derive(Debug)]
struct State {
    script: Mutex<VecDeque<Answer>>,
    otherwise: Answer,
    requests: Mutex<Vec<Recorded>>,
    accepted: AtomicUsize,
    keep_alive: bool,
}

/// A stand-in gateway. Answers from its script while it lasts, then `otherwise`.
#[derive(Debug)]
pub(crate) struct StandIn {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl StandIn {
    /// Listens on 127.0.0.1:0 and keeps connections alive.
    pub(crate) async fn start(otherwise: Answer) -> StandIn {
        StandIn::listen(otherwise, true).await
    }

    /// Like [`StandIn::start`], but closes each connection after one answer.
    pub(crate) async fn closing_each_connection(otherwise: Answer) -> StandIn {
        StandIn::listen(otherwise, false).await
    }

    async fn listen(otherwise: Answer, keep_alive: bool) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(VecDeque::new()),
            otherwise,
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            keep_alive,
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        StandIn {
            addr,
            state,
            server,
        }
    }

    /// The URL of `path` here.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `answers`, in order.
    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// The requests so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Accepts connections until aborted; aborting drops the connections too.
async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let number = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let keep_alive = state.keep_alive;
            let service = service_fn(move |request| answer(Arc::clone(&state), number, request));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(
    state: Arc<State>,
    connection: usize,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(Recorded {
        connection,
        path,
        body,
    });
    let next = state.script.lock().unwrap().pop_front();
    match next.unwrap_or_else(|| state.otherwise.clone()) {
        Answer::Reply(status, body) => Ok(Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .body(Full::new(Bytes::from(body)))
            .unwrap()),
        Answer::Hang => match std::future::pending::<Infallible>().await {},
        Answer::HangUp => Err(std::io::Error::other("hung up on purpose")),
    }
}

/// Waits until `check` holds, polling (fails after a minute: a guard against hanging, not a
/// timing requirement).
pub(crate) async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
