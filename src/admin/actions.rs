//! The admin port's actions, each authorized by the admin token (`auth.admin_token`, sent as
//! `Authorization: Bearer TOKEN`; compared in constant time): `POST /drain` starts the node's
//! drain (as SIGTERM does) and answers at once; `POST /cluster/nodes/{id}/remove` takes a node
//! that is down out of the cluster; the revocations (`revoke.rs`) check the same token. Without
//! a configured token they answer 403; with a wrong or missing one, 401.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AdminState;
use crate::metrics as names;

/// Checks the request's bearer token against the configured admin token.
pub(super) fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let refuse = |status: StatusCode, reason: &'static str, message: &str| {
        metrics::counter!(names::ADMIN_REFUSALS, "reason" => reason).increment(1);
        Err(Box::new(
            (status, Json(serde_json::json!({ "error": message }))).into_response(),
        ))
    };
    let Some(token) = state.node.config.auth.admin_token() else {
        return refuse(
            StatusCode::FORBIDDEN,
            "no_token_configured",
            "no admin token is configured (auth.admin_token, auth.admin_token_file or TERN_ADMIN_TOKEN)",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_token(token, presented) {
        Ok(())
    } else {
        refuse(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "missing or wrong admin token (Authorization: Bearer TOKEN)",
        )
    }
}

/// Whether `presented` is `token`, in time that does not depend on where they differ: both are
/// MACed under a fixed label and the tags compared in constant time.
fn same_token(token: &str, presented: &str) -> bool {
    let tag = |key: &str| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).ok()?;
        mac.update(b"tern-admin-token");
        Some(mac)
    };
    match (tag(token), tag(presented)) {
        (Some(expected), Some(got)) => expected.verify(&got.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

/// `POST /drain`: the node drains and exits as on SIGTERM; 202 at once (`GET /readyz` is 503
/// from now on; the process exits 0 when the drain is done).
pub(super) async fn drain(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return *refused;
    }
    tracing::warn!("drain asked on the admin port");
    state.node.drain.cancel();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "draining": true })),
    )
        .into_response()
}

/// Takes a node that is down out of the cluster (`src/cluster/removal.rs`): 200 with the map
/// version that holds it; 404 for an unknown node or a node without `[cluster]`; 409 for a node
/// that is not down or this node itself; 503 when the metadata group did not take it.
pub(super) async fn remove_node(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(node): Path<u64>,
) -> Response {
    use crate::cluster::removal::RemovalError;
    if let Err(refused) = authorize(&state, &headers) {
        return *refused;
    }
    let Some(cluster) = &state.cluster else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this node is not part of a cluster" })),
        )
            .into_response();
    };
    match cluster.remove(node).await {
        Ok(version) => {
            Json(serde_json::json!({ "removed": node, "map_version": version })).into_response()
        }
        Err(error) => {
            let status = match &error {
                RemovalError::Unknown(_) => StatusCode::NOT_FOUND,
                RemovalError::Itself(_) | RemovalError::NotDown { .. } => StatusCode::CONFLICT,
                RemovalError::Meta(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                status,
                Json(serde_json::json!({ "error": error.to_string() })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_token;

    #[test]
    fn only_the_same_token_passes() {
        assert!(same_token("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_token("0123456789abcdef", "0123456789abcdeF"));
        assert!(!same_token("0123456789abcdef", ""));
        assert!(!same_token("0123456789abcdef", "0123456789abcdef0"));
    }
}
