//! `HEAD /media/{id}`: with `Tus-Resumable`, the tus offset query a client resumes from;
//! without it, the headers a download would have.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::SETTLE_WAIT;
use super::auth::authenticate;
use super::download;
use super::error::RequestError;
use super::id::MediaId;
use super::routes::MediaState;
use super::tus;

/// `HEAD /media/{id}`.
pub async fn head(
    State(state): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    if !tus::is_tus_request(&headers) {
        return download::head(&state, &id, &headers).await;
    }
    tus::check_version(&headers)?;
    let claims = authenticate(&headers, &state.token_key)?;
    let id = MediaId::parse(&id).ok_or(RequestError::NotFound)?;
    let media = &state.media;
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(upload) = media.find_upload(&id).await? {
        if *upload.owner != *claims.user {
            return Err(RequestError::NotOwner);
        }
        // A PATCH still running (perhaps from a connection the phone lost) reports its bytes
        // once they are durable.
        upload.settle(SETTLE_WAIT).await;
        if media.cluster().is_some() && upload.offset() == upload.length && !upload.is_gone() {
            // Every byte committed, the completion not: finished here, or a 503 to retry.
            media.finish_replicated(&upload).await?;
        }
        if !upload.is_gone() {
            out.insert(
                tus::header::UPLOAD_OFFSET,
                HeaderValue::from(upload.offset()),
            );
            out.insert(tus::header::UPLOAD_LENGTH, HeaderValue::from(upload.length));
            out.insert(
                tus::header::UPLOAD_EXPIRES,
                HeaderValue::from_str(&tus::http_date(upload.expires_at()))
                    .map_err(|_| RequestError::Internal)?,
            );
            if let Some(metadata) = Some(&upload.metadata)
                .filter(|metadata| !metadata.is_empty())
                .and_then(|metadata| HeaderValue::from_str(metadata).ok())
            {
                out.insert(tus::header::UPLOAD_METADATA, metadata);
            }
            return Ok(response);
        }
    }
    // Finished (perhaps just now): every byte is there.
    let meta = media.find_media(&id).await?.ok_or(RequestError::NotFound)?;
    out.insert(tus::header::UPLOAD_OFFSET, HeaderValue::from(meta.size));
    out.insert(tus::header::UPLOAD_LENGTH, HeaderValue::from(meta.size));
    Ok(response)
}
