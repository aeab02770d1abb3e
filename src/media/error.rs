//! Why a media request was refused: one variant per answer a client can act on, each mapped to
//! its HTTP status with a one-line plain-text body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::index::IndexError;
use super::tus;

/// A refused media request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `Tus-Resumable` is missing or names another version (412).
    #[error("this server speaks tus 1.0.0: send Tus-Resumable: 1.0.0")]
    VersionMismatch,
    /// No valid `Authorization: Bearer` token (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A header or the request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// An upload body that is not `application/offset+octet-stream` (415).
    #[error("upload bodies must be sent as Content-Type: application/offset+octet-stream")]
    UnsupportedMediaType,
    /// The upload is larger than `media.max_upload_bytes`, or a body runs past its
    /// `Upload-Length` (413).
    #[error("{0}")]
    TooLarge(String),
    /// The user's uploads would exceed `media.user_quota_bytes` (403).
    #[error(
        "quota exceeded: {used} of {quota} bytes in use, this upload needs {wanted}; terminate old uploads first"
    )]
    QuotaExceeded {
        /// Bytes the user holds.
        used: u64,
        /// The quota.
        quota: u64,
        /// The refused upload's length.
        wanted: u64,
    },
    /// The user already has `media.max_unfinished_uploads_per_user` unfinished uploads (403).
    #[error("too many unfinished uploads ({0}); finish or terminate one first")]
    TooManyUnfinished(u32),
    /// Another user's upload (403).
    #[error("this upload belongs to another user")]
    NotOwner,
    /// No such upload or media (404): never created, terminated, or expired.
    #[error("no such upload or media")]
    NotFound,
    /// `Upload-Offset` differs from the bytes received (409); the header carries the right one.
    #[error("Upload-Offset {sent} does not match the {actual} bytes received; HEAD and resume")]
    OffsetMismatch {
        /// What the client sent.
        sent: u64,
        /// The upload's offset.
        actual: u64,
    },
    /// Another request is writing to this upload (423).
    #[error("another request is writing to this upload; retry")]
    Locked,
    /// The upload body stalled longer than `media.body_idle_timeout_secs` (408).
    #[error("upload body stalled; what arrived was kept, HEAD and resume")]
    Stalled,
    /// Reading or writing the disk failed (500).
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// The index failed (500).
    #[error("index error: {0}")]
    Index(#[from] IndexError),
    /// A blocking task died (500).
    #[error("internal error")]
    Internal,
    /// The cluster cannot take or serve this now: no leader for the upload's slot, too few
    /// members of its island reachable, a peer failed mid-transfer (503; retry).
    #[error("media replication unavailable: {0}; retry")]
    Unavailable(String),
}

impl RequestError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::VersionMismatch => StatusCode::PRECONDITION_FAILED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QuotaExceeded { .. } | Self::TooManyUnfinished(_) | Self::NotOwner => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::OffsetMismatch { .. } => StatusCode::CONFLICT,
            Self::Locked => StatusCode::LOCKED,
            Self::Stalled => StatusCode::REQUEST_TIMEOUT,
            Self::Io(_) | Self::Index(_) | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "media request failed");
        } else {
            tracing::debug!(error = %self, %status, "media request refused");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Self::VersionMismatch => {
                headers.insert(
                    tus::header::TUS_VERSION,
                    HeaderValue::from_static(tus::VERSION),
                );
            }
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tern-media\""),
                );
            }
            Self::OffsetMismatch { actual, .. } => {
                headers.insert(tus::header::UPLOAD_OFFSET, HeaderValue::from(*actual));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Runs blocking disk or index work off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RequestError> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| RequestError::Internal)?
}
