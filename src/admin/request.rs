//! A minimal HTTP/1.1 client for the node's own admin port (`tern drain`): one request per
//! connection, `Connection: close`, the whole answer read. The admin port speaks plain HTTP on
//! a trusted address; nothing more is needed than this.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// Why a request to the admin port did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The port does not accept connections (the node is not running, or stopped).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed or the answer is not HTTP.
    #[error("admin port {addr}: {reason}")]
    Failed {
        /// The admin address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Sends `method path` to the admin port at `addr`, with `token` as its bearer token when
/// given; returns the status code and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), RequestError> {
    let failed = |reason: String| RequestError::Failed { addr, reason };
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| RequestError::Connect { addr, source })?;
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|error| failed(error.to_string()))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|error| failed(error.to_string()))?;
        Ok(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| failed("no answer in time".to_owned()))??;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| failed("not an HTTP answer".to_owned()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
