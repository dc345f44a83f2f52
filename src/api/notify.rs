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
use crate::store::deliveries::DeliveryPage;

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

/// For `#[serde(default, deserialize_with = "opt_out")]` on a submit's `notify`: left out is
/// `None` (the type's default webhook applies), `null` is `Some(None)` (no webhook at all), an
/// object is `Some(Some(..))` (read as [`super::extract::object`] reads it).
pub fn opt_out<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<NotifyBody>>, D::Error> {
    super::extract::object(d).map(Some)
}

/// The webhook of a job being built: the submit's own `notify` (syntax checked here, addresses
/// by [`check_target`]); none for `"notify": null`; else (left out) the first
/// `[[notify.defaults]]` matching its type.
pub fn notify_of(state: &AppState, body: &SubmitBody) -> ApiResult<Option<NotifySpec>> {
    match &body.notify {
        Some(Some(n)) => NotifySpec::parse("notify", &n.url, n.events.as_deref())
            .map(Some)
            .map_err(ApiError::invalid_request),
        Some(None) => Ok(None),
        None => Ok(state.app.config.notify.default_for(&body.job_type)),
    }
}

/// Resolves the host of a job's own webhook and refuses it (422 `notify_refused`, naming
/// `notify.url`) when an address is not allowed or the host does not exist; 503
/// `notify_unresolved` when it did not resolve in time (a slow or absent resolver: worth trying
/// again, where a 422 is final).
pub async fn check_target(state: &AppState, job: &Job) -> ApiResult<()> {
    let Some(n) = &job.notify else { return Ok(()) };
    let u = parse_url("notify.url", &n.url).map_err(ApiError::invalid_request)?;
    target::check_url(&u, state.app.config.notify.allow_private)
        .await
        .map_err(|r| match r {
            target::Refused::Target(m) => {
                ApiError::unprocessable("notify_refused", format!("`notify.url`: {m}"))
            }
            target::Refused::Unresolved(m) => ApiError::unavailable(
                "notify_unresolved",
                format!("`notify.url`: {m}; nothing was stored: try again later"),
            ),
        })
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
    /// Oldest first, the deliveries after this one: `next` of the previous page (default 0,
    /// from the first).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    after: Option<u64>,
    /// Newest first, the deliveries before this one: `next` of the previous page.
    #[serde(default, deserialize_with = "super::extract::query_count")]
    before: Option<u64>,
    /// `oldest` (the default) or `newest` (the default with `before`).
    #[param(inline)]
    order: Option<Order>,
    /// Deliveries per page: 1 to 1000 (default 100).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The order of a page of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (paged with `after`).
    Oldest,
    /// Newest first (paged with `before`).
    Newest,
}

impl DeliveryParams {
    /// The page asked for, or why the query is refused.
    fn page(&self) -> Result<DeliveryPage, &'static str> {
        use Order::{Newest, Oldest};
        match (self.order, self.after, self.before) {
            (_, Some(_), Some(_)) => {
                Err("give `after` (oldest first) or `before` (newest first), not both")
            }
            (Some(Newest), Some(_), None) => {
                Err("`after` pages oldest first: with `order=newest`, page with `before`")
            }
            (Some(Oldest), None, Some(_)) => {
                Err("`before` pages newest first: with `order=oldest`, page with `after`")
            }
            (Some(Oldest) | None, after, None) => Ok(DeliveryPage::After(after.unwrap_or(0))),
            (Some(Newest) | None, None, before) => Ok(DeliveryPage::Before(before)),
        }
    }
}

/// `GET /async/jobs/{id}/deliveries` -> `{job_id, notify, deliveries: [...], next}`: a page of
/// the job's deliveries, oldest first from `after` or newest first before `before`; `next` is the
/// page's last delivery (the cursor given, when the page is empty): pass it as the same parameter.
#[utoipa::path(get, path = "/async/jobs/{id}/deliveries", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id"), DeliveryParams),
    responses(
        (status = 200, description = "A page of the job's webhook deliveries", body = super::openapi::schemas::Deliveries),
        (status = 400, description = "`bad_id`, `bad_query`", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
    ))]
async fn deliveries(
    State(st): State<AppState>,
    crate::auth::access::Caller(caller): crate::auth::access::Caller,
    JobIdPath(id): JobIdPath,
    q: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_query("`limit` must be between 1 and 1000"));
    }
    let page = q.page().map_err(ApiError::bad_query)?;
    let job = st.job_for(id, &caller).await?;
    let list = st.app.store.deliveries_page(id, page, limit).await?;
    let next = match (list.last(), page) {
        (Some(d), _) => Some(d.id),
        (None, DeliveryPage::After(n)) => Some(n),
        (None, DeliveryPage::Before(n)) => n,
    };
    Ok(Json(json!({
        "job_id": id,
        "notify": job.notify,
        "deliveries": list.iter().map(|d| d.to_public()).collect::<Vec<_>>(),
        "next": next,
    })))
}
