//! `GET /readyz`: 200 only while the node serves phones, so a load balancer or an orchestrator
//! can follow it (`/healthz` stays liveness: the process answers). Not ready while the node
//! recovers its stores (an early server answers on the admin port until it is up:
//! [`recovering`]), while it drains, and in a cluster until the map lists it active and every
//! slot group it is a member of has a leader and was applied here up to what its leader
//! committed (a restarted node catching up from its peers' logs is not ready yet).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::AdminState;
use crate::cluster::member::ClusterMember;
use crate::node::Node;

/// Whether `node` (with its cluster membership, if any) serves phones; otherwise why not.
pub fn readiness(node: &Node, cluster: Option<&ClusterMember>) -> Result<(), String> {
    if node.drain.is_cancelled() || node.shutdown.is_cancelled() {
        return Err("draining".to_owned());
    }
    cluster.map_or(Ok(()), ClusterMember::readiness)
}

/// `GET /readyz`.
pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    match readiness(&state.node, state.cluster.as_deref()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => unavailable(&reason),
    }
}

fn unavailable(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "ready": false, "reason": reason })),
    )
        .into_response()
}

/// Serves `listener` (a clone of the admin listener) while the node recovers: `/readyz` is 503
/// (`recovering`), `/healthz` is 200, anything else 503; until `done` is cancelled. The admin
/// server proper then takes over the same socket (connections that arrive in between wait in
/// its backlog).
pub async fn recovering(listener: TcpListener, done: CancellationToken) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { unavailable("recovering") }))
        .fallback(|| async { unavailable("recovering") });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "admin port during recovery");
    }
}
