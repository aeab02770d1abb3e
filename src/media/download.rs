//! Downloads: `GET /media/{id}` (and `HEAD` without `Tus-Resumable`) of a finished upload, with
//! a strong ETag (the SHA-256), single byte ranges, `If-None-Match`, `If-Range`, and immutable
//! caching. Popular small objects come from the hot cache; everything else is streamed.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncSeekExt as _;

use super::auth::authenticate;
use super::catalog::MediaMeta;
use super::error::{RequestError, blocking};
use super::file_body::FileBody;
use super::hot_cache::Lookup;
use super::id::{MediaId, to_hex};
use super::range::{self, RangeRequest};
use super::routes::MediaState;

/// Finished media never changes under its id: caches may keep it for a year. `private` because
/// every download is authenticated.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// `GET /media/{id}`.
pub async fn get(
    State(state): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    serve(&state, &id, &headers, true).await
}

/// `HEAD /media/{id}` without `Tus-Resumable`: the headers of the GET.
pub async fn head(
    state: &MediaState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, RequestError> {
    serve(state, id, headers, false).await
}

async fn serve(
    state: &MediaState,
    id: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, RequestError> {
    authenticate(headers, &state.token_key)?;
    let id = MediaId::parse(id).ok_or(RequestError::NotFound)?;
    let media = &state.media;
    let meta = media.find_media(&id).await?.ok_or(RequestError::NotFound)?;
    let etag = format!("\"{}\"", to_hex(&meta.sha256));
    let mut response = Response::new(Body::empty());
    {
        let out = response.headers_mut();
        out.insert(header::ETAG, header_value(&etag)?);
        out.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Uploaded content is never trusted to run in a browser.
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    if if_none_match(headers, &etag) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let honour_range = headers
        .get(header::IF_RANGE)
        .is_none_or(|value| value.as_bytes() == etag.as_bytes());
    let range_header = headers
        .get(header::RANGE)
        .filter(|_| honour_range)
        .and_then(|value| value.to_str().ok());
    let size = meta.size;
    let (start, length) = match range::parse(range_header, size) {
        RangeRequest::Full => (0, size),
        RangeRequest::Partial { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}"))?,
            );
            (start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut refused = (
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable: the object has {size} bytes\n"),
            )
                .into_response();
            refused.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}"))?,
            );
            return Ok(refused);
        }
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, header_value(&meta.mime)?);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if with_body {
        *response.body_mut() = body(state, &meta, start, length).await?;
    }
    Ok(response)
}

/// The bytes `start..start + length` of the object: from the hot cache, read whole into it
/// (popular and small), or streamed from disk.
async fn body(
    state: &MediaState,
    meta: &Arc<MediaMeta>,
    start: u64,
    length: u64,
) -> Result<Body, RequestError> {
    let media = &state.media;
    let telemetry = &media.telemetry;
    let slice = |data: &Bytes| {
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(data.len());
        let to = usize::try_from(start + length)
            .unwrap_or(usize::MAX)
            .min(data.len());
        data.slice(from..to)
    };
    let path = media.layout.object_file(&meta.sha256);
    // In a cluster a node may not hold the object (it is on another island, or not refilled
    // yet): then it comes from a member that does.
    let replicated = media.cluster().is_some();
    match media.hot.lookup(&meta.sha256, meta.size) {
        Lookup::Hit(data) => {
            telemetry.download(true);
            telemetry.bytes_out.increment(length);
            return Ok(Body::from(slice(&data)));
        }
        Lookup::Admit => {
            telemetry.download(false);
            let expected = meta.size;
            let local = blocking(move || {
                let data = std::fs::read(&path).map_err(not_found_if_missing)?;
                if data.len() as u64 == expected {
                    Ok(Bytes::from(data))
                } else {
                    Err(RequestError::Internal)
                }
            })
            .await;
            let data = match local {
                Err(RequestError::NotFound) if replicated => {
                    media.read_remote(&meta.sha256, meta.size).await?
                }
                local => local?,
            };
            let grown = media.hot.admit(meta.sha256, data.clone());
            telemetry.cache_bytes.increment(grown as f64);
            telemetry.bytes_out.increment(length);
            return Ok(Body::from(slice(&data)));
        }
        Lookup::Miss => telemetry.download(false),
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) if replicated && error.kind() == std::io::ErrorKind::NotFound => {
            let chunk = media.config.read_chunk_bytes as usize;
            let stream = media.stream_remote(meta.sha256, start, length, chunk)?;
            return Ok(Body::from_stream(stream));
        }
        Err(error) => return Err(not_found_if_missing(error)),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    Ok(Body::new(FileBody::new(
        file,
        length,
        media.config.read_chunk_bytes as usize,
        telemetry.bytes_out.clone(),
    )))
}

/// A file deleted since the lookup (its media was terminated) is a 404.
fn not_found_if_missing(error: std::io::Error) -> RequestError {
    if error.kind() == std::io::ErrorKind::NotFound {
        RequestError::NotFound
    } else {
        RequestError::Io(error)
    }
}

/// True when `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A header value from text checked when it was stored (hex, digits, a validated media type).
fn header_value(text: &str) -> Result<HeaderValue, RequestError> {
    HeaderValue::from_str(text).map_err(|_| RequestError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists() {
        let etag = "\"abc\"";
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, "\"x\", W/\"abc\"".parse().unwrap());
        assert!(if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, "\"abcd\"".parse().unwrap());
        assert!(!if_none_match(&headers, etag));
    }
}
