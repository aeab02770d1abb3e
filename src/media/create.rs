//! `POST /media/` (tus creation, and creation-with-upload when the request has a body) and
//! `OPTIONS` (what the server supports).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::authenticate;
use super::error::RequestError;
use super::routes::MediaState;
use super::{Written, tus};

/// `OPTIONS /media/` and `OPTIONS /media/{id}`: versions, extensions and the size limit. No
/// authentication, so clients and proxies can probe.
pub async fn options(State(state): State<MediaState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        tus::header::TUS_VERSION,
        HeaderValue::from_static(tus::VERSION),
    );
    out.insert(
        tus::header::TUS_EXTENSION,
        HeaderValue::from_static(tus::EXTENSIONS),
    );
    out.insert(
        tus::header::TUS_MAX_SIZE,
        HeaderValue::from(state.media.config.max_upload_bytes),
    );
    response
}

/// `POST /media/`: creates an upload of `Upload-Length` bytes; with a body of type
/// `application/offset+octet-stream`, appends it at once.
pub async fn create(
    State(state): State<MediaState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    tus::check_version(&headers)?;
    let claims = authenticate(&headers, &state.token_key)?;
    let media = &state.media;
    if headers.contains_key(tus::header::UPLOAD_DEFER_LENGTH) {
        return Err(RequestError::BadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length".to_owned(),
        ));
    }
    let length = tus::number_header(&headers, tus::header::UPLOAD_LENGTH)?
        .ok_or_else(|| RequestError::BadRequest("Upload-Length is required".to_owned()))?;
    let max = media.config.max_upload_bytes;
    if length > max {
        return Err(RequestError::TooLarge(format!(
            "Upload-Length {length} exceeds the largest upload of {max} bytes (Tus-Max-Size)"
        )));
    }
    let metadata = match headers.get(tus::header::UPLOAD_METADATA) {
        Some(value) => value
            .to_str()
            .map_err(|_| RequestError::BadRequest("Upload-Metadata must be ASCII".to_owned()))?,
        None => "",
    };
    let mime = tus::metadata_mime(metadata)?;
    let content_length = tus::number_header(&headers, "content-length")?;
    let with_body = tus::is_offset_stream(&headers);
    if !with_body && headers.contains_key(header::CONTENT_TYPE) && content_length != Some(0) {
        return Err(RequestError::UnsupportedMediaType);
    }
    if with_body && content_length.is_some_and(|body| body > length) {
        return Err(RequestError::TooLarge(
            "the body is longer than Upload-Length".to_owned(),
        ));
    }
    let upload = media.create(&claims.user, length, metadata, &mime).await?;
    let mut response = StatusCode::CREATED.into_response();
    let location = format!("/media/{}", upload.id);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| RequestError::Internal)?,
    );
    let written = if with_body || length == 0 {
        match media.write(&upload, 0, content_length, body).await {
            Ok(written) => Some(written),
            // The upload exists and keeps what arrived: answer with its URL so the client can
            // resume (a server error still fails the request).
            Err(error) if !error.status().is_server_error() => {
                tracing::debug!(%error, id = %upload.id, "creation body cut short");
                Some(Written {
                    offset: upload.offset(),
                    complete: false,
                })
            }
            Err(error) => return Err(error),
        }
    } else {
        None
    };
    let out = response.headers_mut();
    if let Some(written) = written {
        out.insert(
            tus::header::UPLOAD_OFFSET,
            HeaderValue::from(written.offset),
        );
    }
    if written.is_none_or(|written| !written.complete) {
        out.insert(
            tus::header::UPLOAD_EXPIRES,
            HeaderValue::from_str(&tus::http_date(upload.expires_at()))
                .map_err(|_| RequestError::Internal)?,
        );
    }
    Ok(response)
}
