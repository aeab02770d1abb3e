//! `DELETE /media/{id}` (tus termination): the owner deletes an unfinished upload, or finished
//! media (whose object goes with its last reference).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::auth::authenticate;
use super::error::RequestError;
use super::id::MediaId;
use super::routes::MediaState;
use super::tus;

/// `DELETE /media/{id}`.
pub async fn terminate(
    State(state): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, RequestError> {
    tus::check_version(&headers)?;
    let claims = authenticate(&headers, &state.token_key)?;
    let id = MediaId::parse(&id).ok_or(RequestError::NotFound)?;
    state.media.terminate(&claims.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
