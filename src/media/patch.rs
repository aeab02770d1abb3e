//! `PATCH /media/{id}`: appends the body at `Upload-Offset`; answers 204 with the new offset once
//! the bytes are fsynced (and, for the last bytes, once the media is stored).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::authenticate;
use super::error::RequestError;
use super::id::MediaId;
use super::routes::MediaState;
use super::tus;

/// `PATCH /media/{id}`.
pub async fn patch(
    State(state): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    tus::check_version(&headers)?;
    let claims = authenticate(&headers, &state.token_key)?;
    if !tus::is_offset_stream(&headers) {
        return Err(RequestError::UnsupportedMediaType);
    }
    let offset = tus::number_header(&headers, tus::header::UPLOAD_OFFSET)?
        .ok_or_else(|| RequestError::BadRequest("Upload-Offset is required".to_owned()))?;
    let content_length = tus::number_header(&headers, "content-length")?;
    let id = MediaId::parse(&id).ok_or(RequestError::NotFound)?;
    let media = &state.media;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let Some(upload) = media.find_upload(&id).await? else {
        // Finished already: a retry of the last PATCH (its answer was lost) is answered again.
        let meta = media.find_media(&id).await?.ok_or(RequestError::NotFound)?;
        if *meta.owner != *claims.user {
            return Err(RequestError::NotOwner);
        }
        if offset != meta.size || content_length.is_some_and(|length| length > 0) {
            return Err(RequestError::OffsetMismatch {
                sent: offset,
                actual: meta.size,
            });
        }
        response
            .headers_mut()
            .insert(tus::header::UPLOAD_OFFSET, HeaderValue::from(meta.size));
        return Ok(response);
    };
    if *upload.owner != *claims.user {
        return Err(RequestError::NotOwner);
    }
    let written = media.write(&upload, offset, content_length, body).await?;
    let out = response.headers_mut();
    out.insert(
        tus::header::UPLOAD_OFFSET,
        HeaderValue::from(written.offset),
    );
    if !written.complete {
        out.insert(
            tus::header::UPLOAD_EXPIRES,
            HeaderValue::from_str(&tus::http_date(upload.expires_at()))
                .map_err(|_| RequestError::Internal)?,
        );
    }
    Ok(response)
}
