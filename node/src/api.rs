//! The HTTP endpoint: `GET /status` (JSON), `GET /health`, `GET /metrics` (Prometheus text).

use std::sync::{Arc, Mutex, RwLock};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Json, Router};
use prometheus_client::registry::Registry;

use crate::status::Status;

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct ApiState {
    /// Latest status, refreshed by the coordinator.
    pub status: Arc<RwLock<Status>>,
    /// Metrics registry (libp2p's and the node's).
    pub registry: Arc<Mutex<Registry>>,
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn status(State(s): State<ApiState>) -> impl IntoResponse {
    let status = s.status.read().map(|s| s.clone()).unwrap_or_default();
    Json(status)
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Ok(reg) = s.registry.lock() {
        if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &reg) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
