//! The scenario's stand-in push gateway: a real HTTP server that takes gorush's or the Matrix
//! gateway's requests, answers success, and hands each push (its token, id and count) to the
//! scenario with the time it arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::LoadError;

/// One push as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the request arrived.
    pub at: Instant,
    /// The device token.
    pub token: String,
    /// The push's id (the same across the server's retries).
    pub id: String,
    /// The messages it stands for.
    pub count: u64,
}

/// The request formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// gorush: `POST /api/push`.
    Gorush,
    /// Matrix push gateway: `POST /_matrix/push/v1/notify`.
    Matrix,
}

/// A time the gateway is down: from `at` after its start, for `lasting` (connections refused,
/// open ones dropped).
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// When it starts, after the gateway started.
    pub at: Duration,
    /// How long it lasts.
    pub lasting: Duration,
}

/// Serves the gateway on `listen` (down during `outage`); pushes arrive on the receiver.
pub async fn start(
    listen: SocketAddr,
    format: Format,
    outage: Option<Outage>,
) -> Result<(SocketAddr, mpsc::UnboundedReceiver<Received>), LoadError> {
    let (pushes, received) = mpsc::unbounded_channel();
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|error| LoadError::Args(format!("gateway address: {error}")))?;
    tokio::spawn(async move {
        let started = Instant::now();
        let mut listener = Some(listener);
        loop {
            let Some(bound) = listener.take() else { break };
            let serving = serve(bound, format, pushes.clone());
            match outage {
                Some(outage) => {
                    let down_at = tokio::time::Instant::from_std(started + outage.at);
                    // Dropping the serving future drops the listener and every connection.
                    let _ = tokio::time::timeout_at(down_at, serving).await;
                    eprintln!("push: gateway down for {} s", outage.lasting.as_secs_f64());
                    tokio::time::sleep(outage.lasting).await;
                    eprintln!("push: gateway up again");
                    match bind(addr).await {
                        Ok(again) => {
                            serve(again, format, pushes.clone()).await;
                        }
                        Err(error) => eprintln!("push: gateway cannot listen again: {error}"),
                    }
                    break;
                }
                None => serving.await,
            }
        }
    });
    Ok((addr, received))
}

async fn bind(listen: SocketAddr) -> Result<TcpListener, LoadError> {
    TcpListener::bind(listen)
        .await
        .map_err(|error| LoadError::Args(format!("cannot listen on {listen}: {error}")))
}

/// Accepts connections until dropped; each request's push goes to `pushes`.
async fn serve(listener: TcpListener, format: Format, pushes: mpsc::UnboundedSender<Received>) {
    let answer: &'static str = match format {
        Format::Gorush => r#"{"counts":1,"logs":[],"success":"ok"}"#,
        Format::Matrix => r#"{"rejected":[]}"#,
    };
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let pushes = pushes.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let pushes = pushes.clone();
            async move {
                let at = Instant::now();
                if let Ok(body) = request.into_body().collect().await
                    && let Some(push) = parse(format, &body.to_bytes(), at)
                {
                    let _ = pushes.send(push);
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    answer.as_bytes(),
                ))))
            }
        });
        connections.spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// The push a request carries; `None` for a body that is not one.
fn parse(format: Format, body: &[u8], at: Instant) -> Option<Received> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let (token, data) = match format {
        Format::Gorush => {
            let push = json.get("notifications")?.get(0)?;
            (push.get("tokens")?.get(0)?, push.get("data")?)
        }
        Format::Matrix => {
            let device = json.get("notification")?.get("devices")?.get(0)?;
            (device.get("pushkey")?, device.get("data")?)
        }
    };
    Some(Received {
        at,
        token: token.as_str()?.to_owned(),
        id: data.get("id")?.as_str()?.to_owned(),
        count: data.get("count").and_then(Value::as_u64).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_are_read() {
        let at = Instant::now();
        let gorush = br#"{"notifications":[{"tokens":["t1"],"platform":1,"data":{"id":"u/d/3","count":2}}]}"#;
        let push = parse(Format::Gorush, gorush, at).expect("gorush");
        assert_eq!(
            (push.token.as_str(), push.id.as_str(), push.count),
            ("t1", "u/d/3", 2)
        );
        let matrix =
            br#"{"notification":{"devices":[{"pushkey":"t2","data":{"id":"u/d/4","count":1}}]}}"#;
        let push = parse(Format::Matrix, matrix, at).expect("matrix");
        assert_eq!((push.token.as_str(), push.id.as_str()), ("t2", "u/d/4"));
        assert!(parse(Format::Gorush, b"{}", at).is_none());
    }
}
