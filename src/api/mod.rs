//! The HTTP edge: routes, extraction and the mapping of errors to status codes.

pub mod activity;
pub mod app;
pub mod batch;
pub mod duration;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod gate;
pub mod health;
pub mod hook_body;
pub mod hook_lines;
mod hook_replay;
pub mod hooks;
pub mod jobs;
mod list_params;
pub mod notify;
pub mod openapi;
pub mod pages;
pub mod request_trace;
pub mod runners;
pub mod schedule_fires;
pub mod schedules;
pub mod signals;
pub mod signed_url;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use app::App;
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
            .ok_or_else(ApiError::job_not_found)
    }

    /// The job `id` as `caller` may act on it: 404, or 403 when it is outside the caller's
    /// types or channels. The guard's rule again, on the record the handler goes on with
    /// (`auth::target`): the guard's own lookup may have found nothing.
    pub async fn job_for(
        &self,
        id: uuid::Uuid,
        caller: &crate::auth::tokens::Grant,
    ) -> ApiResult<crate::job::Job> {
        let job = self.job(id).await?;
        crate::auth::target::job(caller, &job)?;
        Ok(job)
    }
}

impl crate::auth::AuthSettings for AppState {
    fn auth_config(&self) -> &crate::auth::AuthConfig {
        &self.app.config.auth
    }

    fn cors_origins(&self) -> &[String] {
        &self.app.config.api.cors_origins
    }
}

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.api.max_body_bytes;
    // A multipart submit carries files: its own limit; its JSON part is checked separately.
    let file_limit = usize::try_from(app.config.hooks.max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(limit);
    let cors = app.config.api.cors_origins.clone();
    // Without [auth] nothing but the host a request names tells a rebound page from a local one.
    // Only on loopback (a developer's machine, the case DNS rebinding reaches): a server exposed
    // without [auth] (`--insecure-no-auth`, behind an authenticating proxy) is named by the
    // proxy's or the cluster's host names, which it cannot know.
    let hosts = (!app.config.auth.enabled() && app.config.listen.ip().is_loopback()).then(|| {
        gate::HostRule::new(
            &app.config.api.allowed_hosts,
            app.config.public_url.as_deref(),
        )
    });
    let counters = app.metrics.clone();
    let state = AppState { app };
    let routes = Router::new()
        .route(
            "/async/jobs",
            post(submit)
                .layer(DefaultBodyLimit::max(file_limit))
                .get(jobs::list_jobs),
        )
        .route("/async/jobs/batch", post(batch::submit_batch))
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
        .route("/health/ready", get(health))
        .route("/health/live", get(health::live))
        .route("/metrics", get(metrics))
        .merge(schedules::routes())
        .merge(schedule_fires::routes())
        .merge(runners::routes())
        .merge(activity::routes())
        .merge(crate::dashboard::routes())
        .merge(signals::routes())
        .merge(notify::routes())
        .merge(openapi::routes())
        // Auth: every route above needs its line in src/auth/access.rs (ROUTES). Keep this the
        // last call that adds routes: one added below it would not be checked.
        .route_layer(crate::auth::access::AccessLayer::new(
            crate::auth::access::Access::new(&state.app.config.auth, state.app.store.clone()),
        ))
        .fallback(not_found)
        // One `layer` call: axum boxes every route once per call (see `edge.rs`).
        .layer(
            tower::ServiceBuilder::new()
                .layer(DefaultBodyLimit::max(limit))
                .layer(axum::middleware::map_response(error::json_errors)),
        )
        .with_state(state);
    edge::with_edge_layers(routes, &cors, hosts, counters)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// `POST /async/jobs`: JSON body (or multipart with a `job` part and file parts).
#[utoipa::path(post, path = "/async/jobs", tag = "jobs",
    request_body(content(
        (jobs::SubmitBody = "application/json"),
        (openapi::schemas::SubmitMultipart = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Accepted (also a replayed `idempotency_key`: header `Idempotent-Replayed: true`)", body = openapi::schemas::Accepted),
        (status = 400, description = "`bad_json`: no body or malformed JSON; `bad_multipart`", body = openapi::schemas::ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the key was used with another body, or by a job outside the caller's grant; `md5_collision` (multipart): a file part whose md5 is that of other bytes already stored (an MD5 collision): no job is made", body = openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: over `api.max_body_bytes` (or a file over `hooks.max_file_bytes`)", body = openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json` nor `multipart/form-data`", body = openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request` (the body does not match the schema, or a field is invalid: the message names it, e.g. `args` over 120 KiB for a runner whose `large_args` is `refuse`), `unknown_type`, `runner_refused`, `notify_refused`", body = openapi::schemas::ErrorBody),
    ))]
async fn submit(
    State(st): State<AppState>,
    crate::auth::access::Caller(caller): crate::auth::access::Caller,
    req: Request,
) -> ApiResult<Response> {
    let started = tokio::time::Instant::now();
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
            .map_err(|e| ApiError::rejected("bad_multipart", e))?;
        let now = st.app.store.time().await;
        files::read_multipart(&st, mp, |b| check_submit(&st, &caller, b, now)).await?
    } else {
        edge::require_json(req.headers())?;
        let max = st.app.config.api.max_body_bytes;
        extract::refuse_declared_over(req.headers(), max)?;
        let body = http_body_util::Limited::new(req.into_body(), max);
        let bytes = extract::read_body(body).await?;
        (bytes, Vec::new())
    };
    if bytes.is_empty() {
        return Err(ApiError::json_required());
    }
    let (job, ours) = prepare_submit(&st, &caller, &bytes, files).await?;
    let (id, keyed) = (job.id, job.idempotency_key.is_some());
    // Answered before `api.request_timeout` (whose 503 could not say the job may exist), however
    // long `store.retry` would let the store be waited for.
    let left = (st.app.config.api.request_timeout)
        .saturating_sub(started.elapsed() + std::time::Duration::from_millis(500))
        .max(std::time::Duration::from_millis(100));
    // The store answers a little before that cut, with what it knows (Redis `BUSY` all along:
    // nothing stored).
    let by = std::time::Instant::now() + left.saturating_sub(std::time::Duration::from_millis(250));
    let submit = crate::store::answering_by(by, st.app.store.submit(job));
    let submitted = (crate::store::within(left, submit).await)
        .map_err(|e| ApiError::submit_unconfirmed(e, id, keyed))?;
    check_replay(&submitted, &ours, &caller)?;
    Ok(jobs::accepted(&submitted))
}

/// A submit's JSON body checked as [`prepare_submit`] checks it, but for what needs its files or
/// the network (its `notify` target): run on a multipart submit's `job` part before any later
/// file part is stored, so a refused submit stores no file.
fn check_submit(
    st: &AppState,
    caller: &crate::auth::tokens::Grant,
    bytes: &[u8],
    now: crate::job::Micros,
) -> ApiResult<()> {
    if bytes.is_empty() {
        return Err(ApiError::json_required());
    }
    let body: jobs::SubmitBody = extract::parse_json(bytes)?;
    jobs::build_job(st, caller, body, caller.user.clone(), now).map(drop)
}

/// A submit's JSON body (and its multipart files) validated into the job to store (its type
/// and channel within `caller`'s grant), its idempotency hash set when it has a key; nothing is
/// stored. Shared by `POST /async/jobs` and each item of `POST /async/jobs/batch` (`batch.rs`).
/// With it, the hashes a replay of this submit may find stored ([`submit_hashes`]; none
/// without a key).
pub(crate) async fn prepare_submit(
    st: &AppState,
    caller: &crate::auth::tokens::Grant,
    bytes: &[u8],
    files: Vec<(String, crate::job::FileRef)>,
) -> ApiResult<(crate::job::Job, Vec<String>)> {
    let body: jobs::SubmitBody = extract::parse_json(bytes)?;
    let keyed = body.idempotency_key.is_some();
    let own_notify = matches!(body.notify, Some(Some(_)));
    // The job speaks for its submitter: its events' `user_id`. Its times are the store's.
    let now = st.app.store.time().await;
    let mut job = jobs::build_job(st, caller, body, caller.user.clone(), now)?;
    if own_notify {
        notify::check_target(st, &job).await?;
    }
    for (property, f) in files {
        job.files.entry(property).or_default().push(f);
    }
    let mut hashes = Vec::new();
    if keyed {
        hashes = submit_hashes(bytes, &job.files);
        job.submit_hash = hashes.first().cloned();
    }
    Ok((job, hashes))
}

/// 409 `idempotency_conflict` when a submit returned an earlier job of the same key (not
/// `created`) that `caller` may not see (another tenant's: keys are one space for all jobs), or
/// whose body was another (its stored hash none of `ours`, [`submit_hashes`]). Only a caller
/// whose grant covers that job is told its id; for any other, the answer names nothing of it
/// (id, type, channel).
pub(crate) fn check_replay(
    submitted: &crate::store::Submitted,
    ours: &[String],
    caller: &crate::auth::tokens::Grant,
) -> ApiResult<()> {
    let job = &submitted.job;
    if submitted.created {
        return Ok(());
    }
    if caller
        .check_job(&job.job_type, Some(&job.channel_id))
        .is_err()
    {
        return Err(ApiError::conflict(
            "idempotency_conflict",
            "`idempotency_key` is already used by a job outside your grant; use another key",
        ));
    }
    if job
        .submit_hash
        .as_ref()
        .is_some_and(|stored| !ours.contains(stored))
    {
        return Err(ApiError::conflict(
            "idempotency_conflict",
            format!(
                "`idempotency_key` was already used by job {} with a different body",
                job.id
            ),
        ));
    }
    Ok(())
}

/// The hashes of a keyed submit: first the one stored with its job, SHA-256 of its JSON body
/// with object keys sorted (so spacing and key order do not matter) and the contents of its
/// multipart files, as every build stores it (so nodes of two builds replay each other's keys
/// during a rolling upgrade); then, when the body writes `args` as its default (left out, `null`
/// or `{}`: the same job), the hashes of the same body with the other two spellings, which a
/// replay may find stored too.
fn submit_hashes(
    body: &[u8],
    files: &std::collections::BTreeMap<String, Vec<crate::job::FileRef>>,
) -> Vec<String> {
    use sha2::{Digest, Sha256};
    fn canonical(v: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(x) = m.get(k) {
                        canonical(x, out);
                    }
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let hash = |text: &str| {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        for (property, list) in files {
            for f in list {
                h.update(format!("\n{property}={}", f.hash).as_bytes());
            }
        }
        hex::encode(h.finalize())
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return vec![hash(&String::from_utf8_lossy(body))];
    };
    let mut text = String::new();
    canonical(&v, &mut text);
    let mut hashes = vec![hash(&text)];
    if let Some(m) = v.as_object_mut() {
        let default = m
            .get("args")
            .is_none_or(|a| a.is_null() || a.as_object().is_some_and(serde_json::Map::is_empty));
        if default {
            let own = m.remove("args");
            let spellings = [
                None,
                Some(serde_json::Value::Null),
                Some(serde_json::json!({})),
            ];
            for other in spellings.into_iter().filter(|o| *o != own) {
                if let Some(a) = other {
                    m.insert("args".into(), a);
                }
                let mut text = String::new();
                canonical(&serde_json::Value::Object(m.clone()), &mut text);
                hashes.push(hash(&text));
                m.remove("args");
            }
        }
    }
    hashes
}

/// Readiness: the store answers too (the same as `/health/ready`).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = openapi::schemas::Health),
        (status = 503, description = "The store does not answer, or the process is stopping (`draining`)", body = openapi::schemas::Health),
    ))]
async fn health(State(st): State<AppState>) -> Response {
    health::ready(st.app.store.as_ref(), &st.app.draining).await
}

/// Prometheus metrics (docs/observability.md).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.app.metrics.scrape(st.app.store.as_ref()).await,
    )
        .into_response()
}
