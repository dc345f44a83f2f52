//! The HTTP edge: routes, extraction and the mapping of errors to status codes.

pub mod error;
pub mod events;
pub mod extract;
pub mod jobs;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::server::App;
use error::{ApiError, ApiResult};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The application.
    pub app: Arc<App>,
}

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.api.max_body_bytes;
    let state = AppState { app };
    Router::new()
        .route("/async/jobs", post(submit).get(jobs::list_jobs))
        .route("/async/jobs/{id}", get(jobs::get_job))
        .route("/async/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/async/jobs/{id}/retry", post(jobs::retry_job))
        .route("/async/jobs/{id}/logs", get(jobs::job_logs))
        .route("/async/jobs/{id}/result", get(jobs::job_result))
        .route("/api/v1/async_event/", get(events::poll))
        .route("/api/v1/async_event", get(events::poll))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// `POST /async/jobs`: JSON body (or multipart with a `job` part and file parts).
async fn submit(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("multipart/form-data") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "multipart submit is not supported by this version",
        ));
    }
    let bytes = extract::body_bytes(req, &()).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("bad_json", "a JSON body is required"));
    }
    let body: jobs::SubmitBody = extract::parse_json(&bytes)?;
    let job = jobs::build_job(&st, body, None)?;
    let submitted = st.app.store.submit(job).await?;
    Ok(jobs::accepted(&submitted))
}

async fn health(State(st): State<AppState>) -> Response {
    match st.app.store.health().await {
        Ok(()) => Json(json!({"status": "ok", "store": st.app.store.backend_name()})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "store": st.app.store.backend_name(), "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.app.metrics.render(),
    )
        .into_response()
}
