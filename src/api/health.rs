//! Health for orchestrators: `/health/live` asks the process only, `/health/ready` (and the
//! older `/health`) asks the store too. Kubernetes restarts a pod whose liveness fails, so a
//! store outage (Redis away) must fail readiness only: a pod that cannot reach its store takes no
//! traffic, and comes back by itself when the store does.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The process answers: its runtime schedules tasks and its accept loop runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process answers", body = super::openapi::schemas::Health)))]
pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// The store answers too: 200, or 503 with the store's error (a warning in the log); 503
/// `draining` once the process has begun to stop (its worker drains, its API still answers
/// running jobs): answered on purpose, so that load balancers send no new clients, and not
/// logged (the stop's own lines say it began).
pub async fn ready(store: &dyn Store, draining: &CancellationToken) -> Response {
    if draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "store": store.backend_name()})),
        )
            .into_response();
    }
    match store.health().await {
        Ok(()) => Json(json!({"status": "ok", "store": store.backend_name()})).into_response(),
        Err(e) => {
            if e.is_node_refusal() || e.is_write_refusal() {
                // Said at ERROR once a minute by the check (`store/redis/keycheck.rs`) or by
                // the store (a write Redis refused).
                tracing::debug!(error = %e, "not ready: the store's work is refused");
            } else {
                tracing::warn!(error = %e, "not ready: the store does not answer");
            }
            (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "store": store.backend_name(), "error": e.to_string()})),
        )
            .into_response()
        }
    }
}

/// The probes of a worker node (`runyard worker --health-listen`), which serves no API.
pub fn probe_router(store: Arc<dyn Store>, draining: CancellationToken) -> Router {
    type Probe = (Arc<dyn Store>, CancellationToken);
    Router::new()
        .route("/health/live", get(live))
        .route(
            "/health/ready",
            get(|State((s, d)): State<Probe>| async move { ready(s.as_ref(), &d).await }),
        )
        .with_state((store, draining))
}
