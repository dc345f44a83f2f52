//! Signed webhooks out, the API side (docs/notifications.md): the submit's `notify` field, the
//! address check at submit, `POST /async/notify/keys` (an endpoint's signing key) and
//! `GET /async/jobs/{id}/deliveries` (every delivery of a job and its attempts).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, JobIdPath};
use super::jobs::SubmitBody;
use super::AppState;
use crate::job::Job;
use crate::notify::{endpoint_key, endpoint_of, parse_url, target, NotifySpec};

/// The routes of this room.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/notify/keys", post(key))
        .route("/async/jobs/{id}/deliveries", get(deliveries))
}

/// A submit's `notify`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyBody {
    /// The receiver: http(s), with a host.
    pub url: String,
    /// `terminal`, `status`, `progress`; default `["terminal"]`.
    pub events: Option<Vec<String>>,
}

/// The webhook of a job being built: the submit's own `notify` (syntax checked here, addresses
/// by [`check_target`]), else the first `[[notify.defaults]]` matching its type.
pub fn notify_of(state: &AppState, body: &SubmitBody) -> ApiResult<Option<NotifySpec>> {
    match &body.notify {
        Some(n) => NotifySpec::parse("notify", &n.url, n.events.as_deref())
            .map(Some)
            .map_err(ApiError::invalid_request),
        None => Ok(state.app.config.notify.default_for(&body.job_type)),
    }
}

/// Resolves the host of a job's own webhook and refuses it (422 `notify_refused`, naming
/// `notify.url`) when an address is not allowed or the host does not resolve.
pub async fn check_target(state: &AppState, job: &Job) -> ApiResult<()> {
    let Some(n) = &job.notify else { return Ok(()) };
    let u = parse_url("notify.url", &n.url).map_err(ApiError::invalid_request)?;
    target::check_url(&u, state.app.config.notify.allow_private)
        .await
        .map_err(|m| ApiError::unprocessable("notify_refused", format!("`notify.url`: {m}")))
}

/// [`check_target`] for a schedule's `job` that has its own `notify` (the message names
/// `job.notify.url`).
pub async fn check_schedule_job(state: &AppState, body: &Value, proto: &Job) -> ApiResult<()> {
    if body.get("notify").is_none() {
        return Ok(());
    }
    check_target(state, proto).await.map_err(|mut e| {
        e.message = format!("`job`: {}", e.message);
        e
    })
}

/// The body of `POST /async/notify/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// A webhook URL.
    pub url: String,
}

/// `POST /async/notify/keys {url}` -> `{url, endpoint, key, header}`: the key deliveries to
/// `url`'s endpoint are signed with (derived from the master key, never stored; asking again
/// gives the same key). Not cached by anyone on the way.
#[utoipa::path(post, path = "/async/notify/keys", tag = "jobs", request_body = KeyBody,
    responses(
        (status = 200, description = "The endpoint's signing key (`Cache-Control: no-store`)", body = super::openapi::schemas::EndpointKey),
        (status = 400, description = "`bad_json`", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, or a bad `url`", body = super::openapi::schemas::ErrorBody),
    ))]
async fn key(State(st): State<AppState>, ApiJson(body): ApiJson<KeyBody>) -> ApiResult<Response> {
    let u = parse_url("url", &body.url).map_err(ApiError::invalid_request)?;
    let endpoint = endpoint_of(&u);
    let key = endpoint_key(&st.app.master_key, &endpoint);
    let out = json!({
        "url": u.as_str(),
        "endpoint": endpoint,
        "key": key.as_str(),
        "header": crate::notify::SIGNATURE_HEADER,
        "scheme": "t=<unix seconds>,v1=<hex HMAC-SHA256(key, t + \".\" + body)>",
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)).into_response())
}

/// Query of `GET /async/jobs/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    #[serde(default, deserialize_with = "super::extract::query_count")]
    limit: Option<usize>,
}

/// `GET /async/jobs/{id}/deliveries` -> `{job_id, notify, deliveries: [...]}`.
#[utoipa::path(get, path = "/async/jobs/{id}/deliveries", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id"), DeliveryParams),
    responses(
        (status = 200, description = "The job's webhook deliveries", body = super::openapi::schemas::Deliveries),
        (status = 400, description = "`bad_id`, `bad_query`", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
    ))]
async fn deliveries(
    State(st): State<AppState>,
    JobIdPath(id): JobIdPath,
    q: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_query("`limit` must be between 1 and 1000"));
    }
    let job = st.job(id).await?;
    let list = st.app.store.deliveries(id, limit).await?;
    Ok(Json(json!({
        "job_id": id,
        "notify": job.notify,
        "deliveries": list.iter().map(|d| d.to_public()).collect::<Vec<_>>(),
    })))
}
