//! The HTTP endpoint: `GET /status` (JSON), `GET /health`, `GET /metrics` (Prometheus text),
//! `POST /sign` (this operator's approval of a request; its id is a hash of the content, so
//! every operator who approves the same request gets the same id) and `GET /sign/{id}` (the
//! approvals, signers, status and signatures known on this node).
//!
//! Whatever changes state (`POST /sign`) needs the operator's bearer token (`token.rs`); a
//! request without it, or with a wrong one, is answered 401 before anything is read or
//! recorded, logged without the token and counted in `vaultd_api_unauthorized_total`. Reads
//! are open to whoever reaches the listener, which is loopback unless the operator says
//! otherwise (`--api-allow-remote`). `/metrics` and `/health` can also be served alone on
//! their own listener ([`metrics_router`], `--metrics-listen`).

use std::{
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use axum::{
    extract::{Path, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use prometheus_client::registry::Registry;
use protocol::{vault::SignRecord, Coin};
use serde::{Deserialize, Serialize};
use storage::{RequestId, SignRequests, Store};
use tokio::sync::{mpsc, oneshot};

use crate::{
    coordinator::{SignCommand, SignRefusal},
    status::Status,
};

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct ApiState {
    /// Latest status, refreshed by the coordinator.
    pub status: Arc<RwLock<Status>>,
    /// Metrics registry (libp2p's and the node's).
    pub registry: Arc<Mutex<Registry>>,
    /// Signature requests to the coordinator.
    pub sign: mpsc::Sender<SignCommand>,
    /// The database (signature records are read from it).
    pub store: Arc<Store>,
    /// The operator's API token file (read on each state-changing request, so a rotation
    /// takes effect at once).
    pub token_file: PathBuf,
    /// The node's metrics (401s are counted).
    pub metrics: crate::metrics::Metrics,
}

/// The router of the API listener.
pub fn router(state: ApiState) -> Router {
    // State-changing routes: every one of them behind the token check.
    let operator = Router::new()
        .route("/sign", post(sign))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/sign/{id}", get(sign_result))
        .merge(operator)
        .with_state(state)
}

/// The router of the metrics listener: `/metrics` and `/health` only.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Let a request through only with `Authorization: Bearer <the operator's token>`.
async fn authorize(
    State(s): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request.uri().path().to_string();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refused = match (presented, crate::token::read(&s.token_file)) {
        (_, Err(e)) => {
            tracing::error!(error = %e, "cannot read the API token; refusing state changes");
            Some("the node cannot read its API token file")
        }
        (None, Ok(_)) => Some("missing bearer token (Authorization: Bearer <DATA_DIR/api-token>)"),
        (Some(p), Ok(token)) if !token.matches(p) => Some("wrong bearer token"),
        (Some(_), Ok(_)) => None,
    };
    let Some(reason) = refused else {
        return next.run(request).await;
    };
    s.metrics.unauthorized(&endpoint);
    tracing::warn!(%endpoint, %reason, "refused an unauthenticated API request");
    let mut response = error(StatusCode::UNAUTHORIZED, reason);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Body of `POST /sign`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignBody {
    /// Coin ticker.
    pub coin: String,
    /// Messages, hex (an optional `0x` prefix is accepted).
    pub messages: Vec<String>,
    /// Validator-set session of the vault to sign with (default: the current one); an earlier
    /// session's vault signs while it is retiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    /// The client's reference (for example the transaction's id): part of the request id, so
    /// two requests for the same messages can be told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// One approval of a request, as `GET /sign/{id}` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalView {
    /// The approving validator.
    pub approver: String,
    /// Unix time (seconds) until which it counts.
    pub expires_at: u64,
}

/// Answer of `GET /sign/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignResult {
    /// Request id, hex.
    pub id: String,
    /// Coin.
    pub coin: String,
    /// `pending`, `done` or `failed`.
    pub status: String,
    /// One signature per message, hex, once done.
    pub signatures: Vec<String>,
    /// The signer set of the (last) attempt.
    pub signers: Vec<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// The attempt number.
    pub attempt: u32,
    /// The validator that originates the ceremony (before one starts: the first approver
    /// known here).
    pub origin: String,
    /// Validators left out of later attempts, and why.
    pub left_out: Vec<(String, String)>,
    /// The approvals known on this node (the signers are chosen among them).
    #[serde(default)]
    pub approvals: Vec<ApprovalView>,
    /// Unix time (seconds) when the request expires unless signed.
    #[serde(default)]
    pub expires_at: u64,
    /// The client's reference.
    #[serde(default)]
    pub reference: Option<String>,
}

impl From<SignRecord> for SignResult {
    fn from(r: SignRecord) -> Self {
        SignResult {
            id: hex::encode(r.id),
            coin: r.coin.to_string(),
            status: serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            signatures: r.signatures.iter().map(hex::encode).collect(),
            signers: r.signers.iter().map(|s| s.to_string()).collect(),
            reason: r.reason,
            attempt: r.attempt,
            origin: r.origin.to_string(),
            left_out: r
                .left_out
                .into_iter()
                .map(|(v, why)| (v.to_string(), why))
                .collect(),
            approvals: r
                .approvals
                .iter()
                .map(|a| ApprovalView {
                    approver: a.approver.to_string(),
                    expires_at: a.expires_at,
                })
                .collect(),
            expires_at: r.expires_at,
            reference: r.reference,
        }
    }
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    tracing::info!(status = status.as_u16(), %reason, "refused an API request");
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|e| format!("not hex: {e}"))
}

async fn sign(
    State(s): State<ApiState>,
    body: Result<Json<SignBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    let coin = match Coin::from_str(&body.coin) {
        Ok(c) => c,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown coin {:?}", body.coin),
            )
        }
    };
    let mut messages = Vec::with_capacity(body.messages.len().min(protocol::signing::MAX_MESSAGES));
    for (i, m) in body.messages.iter().enumerate() {
        match unhex(m) {
            Ok(b) => messages.push(b),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("message {i}: {e}")),
        }
    }
    let (reply, answer) = oneshot::channel();
    if s.sign
        .send(SignCommand {
            coin,
            messages,
            session: body.session,
            reference: body.reference,
            reply,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(30), answer).await {
        Ok(Ok(Ok(id))) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": hex::encode(id) })),
        )
            .into_response(),
        Ok(Ok(Err(refusal))) => error(refusal_status(&refusal), refusal.to_string()),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node did not answer in time",
        ),
    }
}

/// The HTTP status of each reason to refuse a signature request.
fn refusal_status(refusal: &SignRefusal) -> StatusCode {
    match refusal {
        SignRefusal::UnknownCoin(_) | SignRefusal::UnknownSession { .. } => StatusCode::NOT_FOUND,
        SignRefusal::NotActive(_) | SignRefusal::Refused(_) => StatusCode::CONFLICT,
        SignRefusal::InvalidMessages(_) | SignRefusal::InvalidReference(_) => {
            StatusCode::BAD_REQUEST
        }
        SignRefusal::Queued { .. } | SignRefusal::Busy(_) | SignRefusal::Stopped(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        SignRefusal::Policy(_) => StatusCode::TOO_MANY_REQUESTS,
        SignRefusal::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn sign_result(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let id: [u8; 32] = match unhex(&id).and_then(|b| {
        b.try_into()
            .map_err(|_| "a request id is 32 bytes".to_string())
    }) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("request id: {e}")),
    };
    match s.store.get::<SignRequests>(&RequestId(id)) {
        Ok(Some(r)) => Json(SignResult::from(r)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such request on this node"),
        Err(e) => {
            tracing::warn!(error = %e, "reading a sign request");
            error(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
        }
    }
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
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::to_prometheus_text(&body),
    )
}
