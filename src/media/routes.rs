//! The media server's routes, under `/media/`, and what every response carries.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::telemetry::Telemetry;
use super::{Media, create, download, head, patch, terminate, tus};
use crate::token::TokenKey;

/// What every handler gets.
#[derive(Clone)]
pub struct MediaState {
    /// The media service.
    pub media: Arc<Media>,
    /// Verifies bearer tokens.
    pub token_key: TokenKey,
}

/// The router: tus on `/media/` and `/media/{id}`, downloads on `/media/{id}`.
pub fn router(state: MediaState) -> Router {
    Router::new()
        .route("/media", post(create::create).options(create::options))
        .route("/media/", post(create::create).options(create::options))
        .route(
            "/media/{id}",
            get(download::get)
                .head(head::head)
                .patch(patch::patch)
                .delete(terminate::terminate)
                .options(create::options),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n").into_response() })
        // Upload bodies are streamed to disk, never collected: axum's 2 MiB limit does not apply.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::map_response(every_response))
        .with_state(state)
}

/// Every response says which tus version it speaks, and is counted by status class.
async fn every_response(mut response: Response) -> Response {
    response.headers_mut().insert(
        tus::header::TUS_RESUMABLE,
        HeaderValue::from_static(tus::VERSION),
    );
    Telemetry::response(response.status().as_u16());
    response
}
