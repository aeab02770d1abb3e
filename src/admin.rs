//! The admin HTTP server: `/metrics` (Prometheus text), `/status` (JSON), `/healthz`, and
//! `/accounts/{user}` (JSON: the user's account record, devices and cursors) and `/cluster`
//! (JSON: this node's view of its cluster; 404 without `[cluster]`), `/readyz` (200 only while
//! the node serves phones: `ready.rs`); with the admin token (`actions.rs`), `POST /drain`,
//! `POST /cluster/nodes/{id}/remove`, and the revocations `POST /users/{user}/revoke` and
//! `POST /users/{user}/devices/{device}/revoke` (`revoke.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

mod actions;
pub mod ready;
pub mod request;
mod revoke;

use crate::clock::uptime_secs;
use crate::cluster::member::ClusterMember;
use crate::dispatch::DispatchError;
use crate::node::Node;
use crate::server::ServerError;

#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    prometheus: PrometheusHandle,
    cluster: Option<Arc<ClusterMember>>,
}

/// Serves the admin endpoints until the node shuts down.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    prometheus: PrometheusHandle,
    cluster: Option<Arc<ClusterMember>>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), ServerError> {
    // Histograms keep samples until upkeep drains them; without it their memory grows.
    let upkeep = prometheus.clone();
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = interval.tick() => upkeep.run_upkeep(),
                () = upkeep_stop.cancelled() => return,
            }
        }
    });
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/accounts/{user}", get(account))
        .route("/cluster", get(cluster_view))
        .route("/readyz", get(ready::readyz))
        .route("/drain", axum::routing::post(actions::drain))
        .route(
            "/cluster/nodes/{node}/remove",
            axum::routing::post(actions::remove_node),
        )
        .route(
            "/users/{user}/revoke",
            axum::routing::post(revoke::revoke_user),
        )
        .route(
            "/users/{user}/devices/{device}/revoke",
            axum::routing::post(revoke::revoke_device),
        );
    // Debug builds only: kill a background thread, for the tests of the node's supervision.
    #[cfg(debug_assertions)]
    let router = router.route("/debug/crash/{task}", axum::routing::post(crash));
    let router = router.with_state(AdminState {
        node,
        prometheus,
        cluster,
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(ServerError::Admin)
}

async fn metrics(State(state): State<AdminState>) -> String {
    state.node.mailboxes.report_depths();
    if let Some(cluster) = &state.cluster {
        cluster.report_metrics();
    }
    metrics::gauge!(crate::metrics::GROUP_FANOUT_QUEUE).set(state.node.fanout.depth() as f64);
    let ready = ready::readiness(&state.node, state.cluster.as_deref()).is_ok();
    metrics::gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
    crate::metrics::render(&state.prometheus)
}

async fn status(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let node = &state.node;
    Json(serde_json::json!({
        "node": node.config.node.id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": uptime_secs(),
        "connections": node.conns.len(),
        "online_users": node.registry.online_users(),
        "dispatch_queue_depth": node.mailboxes.depth(),
        "shutting_down": node.shutdown.is_cancelled(),
    }))
}

/// This node's view of its cluster (`src/cluster/view.rs`); 404 for a node without `[cluster]`.
async fn cluster_view(State(state): State<AdminState>) -> Response {
    match &state.cluster {
        Some(cluster) => Json(cluster.view()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this node is not part of a cluster" })),
        )
            .into_response(),
    }
}

/// Makes the first journal or store thread die of a panic (debug builds only).
#[cfg(debug_assertions)]
async fn crash(State(state): State<AdminState>, Path(task): Path<String>) -> Response {
    let mailboxes = &state.node.mailboxes;
    match task.as_str() {
        "journal" => match mailboxes.journals().first() {
            Some(journal) => journal.crash(),
            None => return (StatusCode::NOT_FOUND, "no journal\n").into_response(),
        },
        "store" => match mailboxes.stores().store(0) {
            Some(store) => store.crash(),
            None => return (StatusCode::NOT_FOUND, "no store\n").into_response(),
        },
        _ => return (StatusCode::NOT_FOUND, "journal or store\n").into_response(),
    }
    (StatusCode::ACCEPTED, "crashing\n").into_response()
}

async fn account(State(state): State<AdminState>, Path(user): Path<String>) -> Response {
    match state.node.mailboxes.account(user.as_str().into()).await {
        Ok(Some(info)) => Json(info).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such account\n").into_response(),
        Err(DispatchError::Overloaded(())) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "mailbox queue full, retry\n",
        )
            .into_response(),
        Err(DispatchError::Stopped(())) => {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
        }
    }
}
