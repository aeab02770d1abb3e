//! The admin port's revocations, authorized by the admin token like `POST /drain`
//! (`actions.rs`): `POST /users/{user}/revoke` signs every device of the user out, `POST
//! /users/{user}/devices/{device}/revoke` one device. Tokens issued up to now are refused at
//! login from then on and the sessions concerned are closed (docs/operations.md, "Revoking a
//! device"). The answer comes once the revocation is durable on the user's owner: 200 with
//! `not_before` (seconds since the epoch; tokens issued at or before it are refused), 400 for
//! an invalid id, 503 when it could not be made durable or no node could take it (retry).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::actions::authorize;
use crate::token::valid_id;

/// `POST /users/{user}/revoke`.
pub(super) async fn revoke_user(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    revoke(&state, &headers, user, None).await
}

/// `POST /users/{user}/devices/{device}/revoke`.
pub(super) async fn revoke_device(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((user, device)): Path<(String, String)>,
) -> Response {
    revoke(&state, &headers, user, Some(device)).await
}

async fn revoke(
    state: &AdminState,
    headers: &HeaderMap,
    user: String,
    device: Option<String>,
) -> Response {
    if let Err(refused) = authorize(state, headers) {
        return *refused;
    }
    if let Some(invalid) = std::iter::once(&user)
        .chain(device.as_ref())
        .find(|id| !valid_id(id))
    {
        let message = format!("invalid id {invalid:?}: 1-64 characters of [A-Za-z0-9._@+-]");
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response();
    }
    let revoked = state
        .node
        .revoke(user.as_str().into(), device.as_deref().map(Into::into))
        .await;
    match revoked {
        Ok(not_before) => Json(serde_json::json!({
            "user": user,
            "device": device,
            "not_before": not_before,
        }))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}
