//! The push gateway client: turns a [`Notification`] into one request in the configured
//! gateway's format ([`gorush`] or [`matrix`]), sends it over a keep-alive connection
//! (`http`), and reads the answer as an [`Outcome`].
//!
//! One [`Gateway`] holds one connection and sends one request at a time; the sender runs several
//! of them side by side.

mod endpoint;
pub mod gorush;
mod http;
pub mod matrix;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::config::{GatewayKind, PushConfig};
use super::notification::Notification;
use endpoint::Endpoint;

/// What became of one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway took it.
    Sent,
    /// The gateway says the token is dead: remove it.
    Unregistered,
    /// A transient failure (no connection, a timeout, 5xx, 429): send again later, with the
    /// same id. Says what went wrong.
    Retry(String),
    /// A permanent failure (a request the gateway refuses, a platform it cannot push to):
    /// sending again will not help. Says what went wrong.
    Failed(String),
}

/// A gateway client that cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `push.url` is not an `http://host[:port]/path` URL.
    #[error("push.url {url:?}: {problem}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Other `[push]` settings the sender cannot run with (see [`PushConfig::validate`]).
    #[error("push settings: {0}")]
    Settings(&'static str),
    /// Started outside a tokio runtime.
    #[error("the push sender needs a tokio runtime")]
    NoRuntime,
}

/// A client for the configured push gateway: one keep-alive connection, one request at a time.
#[derive(Debug)]
pub struct Gateway {
    kind: GatewayKind,
    client: http::Client,
}

impl Gateway {
    /// A client for `config.url`, in `config.gateway`'s format, each request (connecting
    /// included) limited to `config.timeout_ms`. Connects on the first [`Gateway::send`].
    pub fn new(config: &PushConfig) -> Result<Gateway, GatewayError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        Ok(Gateway {
            kind: config.gateway,
            client: http::Client::new(endpoint, timeout),
        })
    }

    /// Sends `notification` (one request, no retry here beyond a resend on a fresh connection
    /// when the kept-alive one turns out closed) and says what became of it.
    pub async fn send(&mut self, notification: &Notification) -> Outcome {
        let body = match self.kind {
            GatewayKind::Gorush => match gorush::request_body(notification) {
                Some(body) => body,
                None => return Outcome::Failed(gorush::NO_WEB_PUSH.to_owned()),
            },
            GatewayKind::Matrix => matrix::request_body(notification),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => Bytes::from(body),
            Err(error) => return Outcome::Failed(format!("push request not encoded: {error}")),
        };
        let reply = match self.client.post(body).await {
            Ok(reply) => reply,
            Err(error) => return Outcome::Retry(error.to_string()),
        };
        match self.kind {
            GatewayKind::Gorush => gorush::outcome(notification, reply.status, &reply.body),
            GatewayKind::Matrix => matrix::outcome(notification, reply.status, &reply.body),
        }
    }

    /// Connections this client has opened so far (one while the gateway keeps it alive).
    pub fn connections_opened(&self) -> u64 {
        self.client.opened()
    }
}

/// The ids every push carries for the app, whatever the format: what to fetch when it wakes.
fn ids(notification: &Notification) -> Map<String, Value> {
    let fields = json!({
        "id": notification.id,
        "user": notification.user,
        "device": notification.device,
        "conversation": notification.conversation,
        "group": notification.group,
        "server_id": notification.server_id,
        "seq": notification.seq,
        "count": notification.count,
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Most of an answer's body quoted in an outcome: a gateway's error text is short, anything
/// longer is cut.
const QUOTED_BYTES: usize = 200;

/// `status` and the start of `body`, for an outcome's reason.
fn answer_text(status: StatusCode, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BYTES)]);
    let body = body.trim();
    if body.is_empty() {
        format!("gateway answered {status}")
    } else {
        format!("gateway answered {status}: {body}")
    }
}

/// Statuses that say "not now" rather than "never": request timeout, too many requests, and
/// every server error.
fn transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}
