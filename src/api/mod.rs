//! The HTTP edge: routes, extraction and the mapping of errors to status codes.

pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod hooks;
pub mod jobs;
pub mod schedules;
pub mod signals;
pub mod signed_url;

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

impl AppState {
    /// The job `id`, or 404.
    pub async fn job(&self, id: uuid::Uuid) -> ApiResult<crate::job::Job> {
        self.app
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApiError::not_found("job not found"))
    }
}

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.api.max_body_bytes;
    // A multipart submit carries files: its own limit; its JSON part is checked separately.
    let file_limit = usize::try_from(app.config.hooks.max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(limit);
    let state = AppState { app };
    Router::new()
        .route(
            "/async/jobs",
            post(submit)
                .layer(DefaultBodyLimit::max(file_limit))
                .get(jobs::list_jobs),
        )
        .route("/async/jobs/{id}", get(jobs::get_job))
        .route("/async/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/async/jobs/{id}/retry", post(jobs::retry_job))
        .route("/async/jobs/{id}/logs", get(jobs::job_logs))
        .route("/async/jobs/{id}/result", get(jobs::job_result))
        .route(
            "/async/jobs/{id}/files/{property}",
            axum::routing::put(files::attach).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/async/jobs/{id}/files/{property}/{index}",
            get(files::fetch),
        )
        .route("/async/status", post(hooks::status))
        .route("/async/job", get(hooks::job_self))
        .route(
            "/async/download/{store}/{uuid}/{property}/{index}",
            get(hooks::download),
        )
        .route(
            "/async/upload/{store}/{uuid}/{property}",
            axum::routing::put(hooks::upload),
        )
        .route(
            "/async/blobs/upload",
            axum::routing::put(hooks::blob_upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/async/blobs/{hash}", get(hooks::blob_download))
        .route("/async/events/ws", get(events::websocket))
        .route("/async/events/sse", get(events::sse))
        .route("/api/v1/async_event/", get(events::poll))
        .route("/api/v1/async_event", get(events::poll))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(schedules::routes())
        .merge(signals::routes())
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
    let (bytes, files) = if ctype.starts_with("multipart/form-data") {
        use axum::extract::FromRequest;
        let mp = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_multipart", e.body_text()))?;
        files::read_multipart(&st, mp).await?
    } else {
        let max = st.app.config.api.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), max)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body is larger than the limit of {max} bytes"),
                )
            })?;
        (bytes, Vec::new())
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("bad_json", "a JSON body is required"));
    }
    let body: jobs::SubmitBody = extract::parse_json(&bytes)?;
    let mut job = jobs::build_job(&st, body, None)?;
    for (property, f) in files {
        job.files.entry(property).or_default().push(f);
    }
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
