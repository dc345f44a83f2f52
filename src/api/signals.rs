//! Readiness signals: `POST /async/signals/{key}` (idempotent with an `id`), `GET
//! /async/signals/{key}?since=`, and the job hook `POST {JOB_HOOK}/signal/{key}`, signed like
//! `/async/status`.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{body_bytes, parse_json};
use super::AppState;
use crate::job::rfc3339;
use crate::store::paging::READ_BYTES;
use crate::store::signals::{check_id, check_key, check_key_read, Signal};

/// Records one `GET` returns at most.
const MAX_LIMIT: usize = 10_000;
/// Keys one `GET /async/signals` returns at most.
const MAX_KEYS: usize = 1000;

/// The signal routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/signals", get(list_keys))
        .route("/async/signals/{key}", post(append).get(list))
        .route("/async/signal/{key}", post(hook_append))
}

/// The body of a signal write (may be empty).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// Free-form JSON.
    pub payload: Option<Value>,
    /// Makes the write idempotent: the same id for the same key returns the first record.
    pub id: Option<String>,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::invalid_request(m)
}

/// The body of a signal write: none (or only white space), or JSON declared as such.
fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<SignalBody> {
    let b: SignalBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        SignalBody::default()
    } else {
        super::edge::require_json(headers)?;
        parse_json(bytes)?
    };
    if let Some(id) = &b.id {
        check_id(id).map_err(bad)?;
    }
    Ok(b)
}

fn written(s: &Signal, created: bool) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"key": s.key, "seq": s.seq, "at": rfc3339(s.at), "id": s.id})),
    )
        .into_response()
}

async fn write(st: &AppState, key: &str, headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Response> {
    check_key(key).map_err(bad)?;
    let b = parse_body(headers, bytes)?;
    // Stamped with the store's time, as the deadlines and `since` times it is compared with
    // (and as a job's `emits` are): not with this node's wall clock.
    let at = st.app.store.time().await;
    let (s, created) = st.app.store.signal_append(key, b.id, b.payload, at).await?;
    Ok(written(&s, created))
}

/// `POST /async/signals/{key}` `{payload?, id?}`: `201 {key, seq, at}`; the same `id` again:
/// `200` with the first record.
#[utoipa::path(post, path = "/async/signals/{key}", tag = "signals", params(("key" = String, Path, description = "The signal key")),
    request_body(content = Option<SignalBody>, description = "Optional: an empty body is a signal without payload"),
    responses(
        (status = 201, description = "Written", body = super::openapi::schemas::SignalWritten),
        (status = 200, description = "A signal with this `id` was written already", body = super::openapi::schemas::SignalWritten),
        (status = 400, description = "`bad_json`: malformed JSON; `bad_path`: a key that is not UTF-8 once percent-decoded", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: a body over the limit", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, a bad key or `id` (an `id` starting `job:` among them)", body = super::openapi::schemas::ErrorBody),
    ))]
async fn append(
    State(st): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let bytes = body_bytes(Request::from_parts(parts.clone(), body), &()).await?;
    write(&st, &key, &parts.headers, &bytes).await
}

/// `POST {JOB_HOOK}/signal/{key}`: a running job writes a signal (signed like `/async/status`).
#[utoipa::path(post, path = "/async/signal/{key}", tag = "hooks", params(("key" = String, Path, description = "The signal key")),
    request_body(content = Option<SignalBody>, description = "Optional: an empty body is a signal without payload"),
    responses(
        (status = 201, description = "Written", body = super::openapi::schemas::SignalWritten),
        (status = 200, description = "A signal with this `id` was written already", body = super::openapi::schemas::SignalWritten),
        (status = 400, description = "`bad_json`: malformed JSON; `bad_path`: a key that is not UTF-8 once percent-decoded", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: a body over the limit", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job is not running, or its attempt reported `SUCCESS` or `ERROR` or ran out of time", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, a bad key or `id` (an `id` starting `job:` among them)", body = super::openapi::schemas::ErrorBody),
    ))]
async fn hook_append(
    State(st): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, bytes) = super::hook_body::read(&st, req).await?;
    let job =
        super::hooks::authenticate(&st, &parts.method, &parts.uri, &parts.headers, &bytes).await?;
    // As its other calls: not once its attempt reported its outcome or ran out of time.
    super::hooks::require_active(&job, "send signals")?;
    write(&st, &key, &parts.headers, &bytes).await
}

/// Query of `GET /async/signals/{key}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    since: Option<String>,
    /// Records in a page, 1 to 10,000 (`MAX_LIMIT`).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// `GET /async/signals/{key}?since=&limit=`: records at or after `since` (RFC 3339), by time
/// (ties by number), a page of at most `limit` and about 4 MiB of records (the store's
/// `READ_BYTES`; one microsecond's records are never split); `next_since` goes on.
#[utoipa::path(get, path = "/async/signals/{key}", tag = "signals", operation_id = "list_signals", params(("key" = String, Path, description = "The signal key"), ListParams),
    responses(
        (status = 200, description = "The key's signals since `since`", body = super::openapi::schemas::SignalList),
        (status = 400, description = "`bad_query`, `bad_path`", body = super::openapi::schemas::ErrorBody),
    ))]
async fn list(
    State(st): State<AppState>,
    Path(key): Path<String>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    check_key_read(&key).map_err(|m| ApiError::bad_request("bad_path", m))?;
    let since = match q.since.as_deref() {
        None => 0,
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                ApiError::bad_query(format!("`since`: `{s}` is not an RFC 3339 time: {e}"))
            })?
            .timestamp_micros(),
    };
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_query(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let page = st
        .app
        .store
        .signals_page(&key, since, limit, READ_BYTES)
        .await?;
    let next_since = page
        .records
        .last()
        .filter(|_| page.more)
        .map(|s| rfc3339(s.at.saturating_add(1)));
    // Each record moved into the answer (its payload is not copied).
    let signals: Vec<Value> = page
        .records
        .into_iter()
        .map(|s| json!({"seq": s.seq, "at": rfc3339(s.at), "id": s.id, "payload": s.payload}))
        .collect();
    Ok(Json(json!({
        "key": key,
        "signals": signals,
        "next_since": next_since,
    })))
}

/// Query of `GET /async/signals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeysParams {
    /// Keys after this name (the previous page's `next_after`).
    after: Option<String>,
    /// Keys in a page, 1 to 1,000 (`MAX_KEYS`; default 100).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /async/signals?after=&limit=`: the keys that keep records, by name, each with its count
/// and the time of its newest record; `next_after` continues the listing.
#[utoipa::path(get, path = "/async/signals", tag = "signals", operation_id = "list_signal_keys", params(KeysParams),
    responses(
        (status = 200, description = "The signal keys by name, each with its record count and newest time", body = super::openapi::schemas::SignalKeys),
        (status = 400, description = "`bad_query`: an unknown parameter, a bad `after` key or `limit` out of 1..=1000", body = super::openapi::schemas::ErrorBody),
    ))]
async fn list_keys(
    State(st): State<AppState>,
    q: Result<Query<KeysParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    if let Some(a) = &q.after {
        check_key_read(a).map_err(|m| ApiError::bad_query(format!("`after`: {m}")))?;
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_KEYS {
        return Err(ApiError::bad_query(format!(
            "`limit` must be between 1 and {MAX_KEYS}"
        )));
    }
    let mut keys = st
        .app
        .store
        .signal_keys(q.after.as_deref(), limit.saturating_add(1))
        .await?;
    let next_after = crate::store::paging::cut(&mut keys, limit, |k| Some(k.key.clone()));
    Ok(Json(json!({
        "keys": keys
            .iter()
            .map(|k| json!({"key": k.key, "count": k.count, "latest": rfc3339(k.latest)}))
            .collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}
