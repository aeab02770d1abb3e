//! A tiny HTTP/1.1 client over raw TCP or TLS for the media tests (one request per connection),
//! and tus helpers built on it. Deliberately independent of the server's HTTP stack.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tern::client::ClientTls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every request (a hang fails the test; this is not a timing assertion).
pub const HTTP_WAIT: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The request head (with Host, Connection: close and Content-Length).
pub fn request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_length: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = body_length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request_with(addr, None, method, path, headers, body).await
}

/// [`request`], over HTTPS when `tls` is given.
pub async fn request_with(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    tokio::time::timeout(HTTP_WAIT, async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        match tls {
            Some(tls) => {
                let stream = tls.handshake(stream).await.expect("TLS handshake");
                exchange(stream, method, path, headers, body).await
            }
            None => exchange(stream, method, path, headers, body).await,
        }
    })
    .await
    .expect("HTTP request timed out")
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let with_length = !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT");
    let head = request_head(method, path, headers, with_length.then_some(body.len()));
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    read_response(&mut stream, method == "HEAD").await
}

/// Reads a response to the end of the connection.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S, head_only: bool) -> Response {
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A TLS server that closes without close_notify after the response: what came counts.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(error) => panic!("read response: {error}"),
    }
    parse_response(&raw, head_only)
}

fn parse_response(raw: &[u8], head_only: bool) -> Response {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Deterministic test content of `length` bytes (different per `seed`).
pub fn content(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A user talking tus to one media server.
pub struct Tus {
    pub addr: SocketAddr,
    pub bearer: String,
    /// HTTPS when set.
    pub tls: Option<ClientTls>,
}

impl Tus {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr,
            bearer: format!("Bearer {token}"),
            tls: None,
        }
    }

    /// Talks HTTPS, trusting what `tls` trusts.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// POST /media/ with Upload-Length (and metadata); returns the response.
    pub async fn create_raw(&self, length: u64, metadata: &str) -> Response {
        let length = length.to_string();
        let mut headers = vec![
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", self.bearer.as_str()),
            ("Upload-Length", length.as_str()),
        ];
        if !metadata.is_empty() {
            headers.push(("Upload-Metadata", metadata));
        }
        request_with(
            self.addr,
            self.tls.as_ref(),
            "POST",
            "/media/",
            &headers,
            b"",
        )
        .await
    }

    /// Creates an upload and returns its path (`/media/<id>`).
    pub async fn create(&self, length: u64, metadata: &str) -> String {
        let response = self.create_raw(length, metadata).await;
        assert_eq!(response.status, 201, "create: {}", response.text());
        response.header("Location").expect("Location").to_owned()
    }

    /// PATCH `path` at `offset` with `data`.
    pub async fn patch(&self, path: &str, offset: u64, data: &[u8]) -> Response {
        let offset = offset.to_string();
        let headers = [
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", self.bearer.as_str()),
            ("Upload-Offset", offset.as_str()),
            ("Content-Type", "application/offset+octet-stream"),
        ];
        request_with(self.addr, self.tls.as_ref(), "PATCH", path, &headers, data).await
    }

    /// HEAD `path` the tus way.
    pub async fn head(&self, path: &str) -> Response {
        let headers = [
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", self.bearer.as_str()),
        ];
        request_with(self.addr, self.tls.as_ref(), "HEAD", path, &headers, b"").await
    }

    /// The offset HEAD reports.
    pub async fn offset(&self, path: &str) -> u64 {
        let response = self.head(path).await;
        assert_eq!(response.status, 200, "HEAD {path}");
        response
            .header("Upload-Offset")
            .expect("Upload-Offset")
            .parse()
            .expect("offset")
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Response {
        let headers = [
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", self.bearer.as_str()),
        ];
        request_with(self.addr, self.tls.as_ref(), "DELETE", path, &headers, b"").await
    }

    /// GET `path` with extra headers.
    pub async fn get(&self, path: &str, extra: &[(&str, &str)]) -> Response {
        let mut headers = vec![("Authorization", self.bearer.as_str())];
        headers.extend_from_slice(extra);
        request_with(self.addr, self.tls.as_ref(), "GET", path, &headers, b"").await
    }

    /// Uploads `data` in PATCHes of `chunk` bytes; returns the upload's path.
    pub async fn upload(&self, data: &[u8], metadata: &str, chunk: usize) -> String {
        let path = self.create(data.len() as u64, metadata).await;
        let mut offset = 0;
        for part in data.chunks(chunk.max(1)) {
            let response = self.patch(&path, offset as u64, part).await;
            assert_eq!(response.status, 204, "PATCH: {}", response.text());
            offset += part.len();
            assert_eq!(
                response.header("Upload-Offset"),
                Some(offset.to_string().as_str())
            );
        }
        path
    }
}

/// `key base64(value)` pairs joined for Upload-Metadata.
pub fn metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{key} {}",
                base64::engine::general_purpose::STANDARD.encode(value)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}
