//! One keep-alive HTTP/1.1 connection to the gateway, one request at a time: opened on first
//! use, kept while the gateway keeps it, opened again after it closed or a request failed.
//!
//! A kept-alive connection can be closed by the gateway just as a request goes out on it (an
//! idle timeout racing the request). When a request on a reused connection gets no answer at all
//! because the connection closed, it is sent once more right away on a fresh connection; every
//! other failure is the caller's to retry.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::endpoint::Endpoint;

/// Largest response body read: gorush's logs for one token and Sygnal's `rejected` list are a
/// few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What the gateway answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The whole body.
    pub(crate) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// No TCP connection (refused, unreachable, name not resolved).
    #[error("cannot connect to the push gateway: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP/1.1 connection could not be set up.
    #[error("push gateway handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connection closed before an answer began (a kept-alive connection the gateway
    /// dropped, or a gateway that hung up).
    #[error("push gateway connection closed: {0}")]
    Closed(#[source] hyper::Error),
    /// The request or the answer's head failed on the wire.
    #[error("push gateway request failed: {0}")]
    Request(#[source] hyper::Error),
    /// The answer's body failed or was over [`MAX_RESPONSE_BYTES`].
    #[error("push gateway answer unreadable: {0}")]
    Body(String),
    /// No whole answer within the request timeout.
    #[error("push gateway did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (a bug: the endpoint was checked when parsed).
    #[error("push request could not be built: {0}")]
    Build(#[source] hyper::http::Error),
}

impl TransportError {
    /// The request surely got no answer because the connection was already gone: safe to send
    /// at once on a fresh connection.
    fn closed_under_us(&self) -> bool {
        matches!(self, TransportError::Closed(_))
    }
}

/// The client side of the gateway's endpoint: at most one connection, one request at a time.
#[derive(Debug)]
pub(crate) struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    connection: Option<Connection>,
    /// Connections opened so far (tests check keep-alive with it).
    opened: u64,
}

impl Client {
    /// A client for `endpoint` whose requests each take at most `timeout`, connecting included.
    pub(crate) fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            timeout,
            connection: None,
            opened: 0,
        }
    }

    /// Connections opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.opened
    }

    /// POSTs `body` as JSON and reads the whole answer. After a failure the connection is
    /// dropped, so that the next request starts on a fresh one.
    pub(crate) async fn post(&mut self, body: Bytes) -> Result<Reply, TransportError> {
        let result = tokio::time::timeout(self.timeout, self.exchange(&body)).await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                self.connection = None;
                Err(error)
            }
            Err(_) => {
                self.connection = None;
                Err(TransportError::Timeout(self.timeout))
            }
        }
    }

    /// One request: on the kept-alive connection if there is one, and once more on a fresh
    /// connection if that one turns out closed.
    async fn exchange(&mut self, body: &Bytes) -> Result<Reply, TransportError> {
        if let Some(mut connection) = self.connection.take()
            && !connection.sender.is_closed()
        {
            match connection.round_trip(self.request(body)?).await {
                Ok(reply) => {
                    self.connection = Some(connection);
                    return Ok(reply);
                }
                Err(error) if error.closed_under_us() => {
                    tracing::debug!(%error, "kept-alive push gateway connection closed");
                }
                Err(error) => return Err(error),
            }
        }
        let mut connection = Connection::open(&self.endpoint).await?;
        self.opened += 1;
        let reply = connection.round_trip(self.request(body)?).await?;
        self.connection = Some(connection);
        Ok(reply)
    }

    fn request(&self, body: &Bytes) -> Result<Request<Full<Bytes>>, TransportError> {
        Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.target.clone())
            .header(HOST, self.endpoint.authority.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(body.clone()))
            .map_err(TransportError::Build)
    }
}

/// Our `User-Agent`.
const USER_AGENT_VALUE: &str = concat!("tern/", env!("CARGO_PKG_VERSION"));

/// One open connection: the handle requests go through, and the task that drives the socket.
#[derive(Debug)]
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    async fn open(endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(TransportError::Connect)?;
        // Small requests and answers: nothing is gained by waiting to fill a segment.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY refused on a push gateway connection");
        }
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::Handshake)?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "push gateway connection ended with an error");
            }
        });
        Ok(Connection { sender, driver })
    }

    /// Sends `request` and reads the whole answer, so that the connection can carry the next.
    async fn round_trip(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, TransportError> {
        self.sender.ready().await.map_err(TransportError::Closed)?;
        let response = match self.sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut error) => {
                let unsent = error.take_message().is_some();
                let error = error.into_error();
                return Err(if unsent || error.is_incomplete_message() {
                    TransportError::Closed(error)
                } else {
                    TransportError::Request(error)
                });
            }
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| TransportError::Body(error.to_string()))?
            .to_bytes();
        Ok(Reply { status, body })
    }
}

impl Drop for Connection {
    /// Closes the socket now, even with a request in flight (after a timeout).
    fn drop(&mut self) {
        self.driver.abort();
    }
}
