//! `POST /async/jobs/batch`: up to [`MAX_BATCH`] submits in one request, each validated exactly
//! as `POST /async/jobs` validates one ([`super::prepare_submit`]: type, channel and the
//! caller's right to them, idempotency hash) and stored by the backend in one batch
//! ([`crate::store::JobStore::submit_many`]). All or nothing per job: an item that fails gets
//! its own error in its slot and nothing is stored for it; the others are stored. A body that
//! is not `{"jobs": [...]}` with 1 to [`MAX_BATCH`] items is refused whole, nothing stored.
//!
//! The body is parsed once: the outer object only checks each item's syntax and keeps its text
//! (`&RawValue`, borrowed from the request's bytes); each item is then parsed from that text by
//! the same code as a single submit's body (duplicate keys in an item are refused as there).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::error::{ApiError, ApiResult};
use super::jobs::SubmitAnswer;
use super::{check_replay, edge, extract, prepare_submit, AppState};
use crate::auth::access::Caller;
use crate::auth::tokens::Grant;
use crate::store::Submitted;

/// Most jobs in one batch.
pub const MAX_BATCH: usize = 1000;

/// The body of `POST /async/jobs/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    /// Submit bodies, each as `POST /async/jobs` takes it: their JSON text, syntax checked.
    #[serde(borrow)]
    jobs: Vec<&'a RawValue>,
}

/// `POST /async/jobs/batch`: `200 {"results": [...], "accepted", "failed"}`, one result per
/// item in order (docs/api.md).
#[utoipa::path(post, path = "/async/jobs/batch", tag = "jobs",
    request_body(content = super::openapi::schemas::BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per item, in order: `status_code` 202 (stored), 200 (a replayed `idempotency_key`) or the item's 4xx with its `error` (nothing stored for it)", body = super::openapi::schemas::BatchResults),
        (status = 400, description = "`bad_json`: no body or malformed JSON", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: over `api.max_body_bytes`", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: not `{\"jobs\": [...]}` with 1 to 1,000 jobs; nothing stored", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn submit_batch(
    State(st): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    // The API node on Redis on one thread (`cli/mod.rs`): a batch's parsing, checks, writes
    // and answer (milliseconds for 1,000 jobs) run on a thread of the blocking pool, its store
    // calls still driven by the runtime, so the runtime's thread keeps answering the others.
    let rt = tokio::runtime::Handle::current();
    if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        && st.app.config.redis.is_some()
    {
        // In the request's span, so its logs keep the request's fields; the caller's grant goes
        // with it, so each item is checked against the token's types and channels there too.
        let span = tracing::Span::current();
        // At most POOL_BATCHES at once (waiting here ends with the request); one whose request
        // ended (its client gone, the request timed out, shutdown) stops before its next item,
        // storing nothing, as a batch on the request's task stops when it is dropped.
        let _permit = POOL_BATCHES
            .acquire()
            .await
            .map_err(|_| ApiError::internal("internal", "the batch pool is closed"))?;
        let gone = GoneOnDrop(Arc::new(AtomicBool::new(false)));
        let work =
            submit_batch_here(st, caller, headers, bytes, Some(gone.0.clone())).instrument(span);
        return match tokio::task::spawn_blocking(move || rt.block_on(work)).await {
            Ok(answer) => answer,
            // A panic goes on to the edge's panic layer, which answers without its text and
            // counts it, as for any handler.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ApiError::internal(
                "internal",
                format!("the batch's task failed: {e}"),
            )),
        };
    }
    submit_batch_here(st, caller, headers, bytes, None).await
}

/// Batches on the blocking pool at once (each holds a pool thread while it runs).
static POOL_BATCHES: Semaphore = Semaphore::const_new(4);

/// Set when the request that started a batch on the blocking pool is dropped.
struct GoneOnDrop(Arc<AtomicBool>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// [`submit_batch`] on the thread it runs on, for `caller`; `gone`: set when its request has
/// ended (a batch on the blocking pool), checked before each item.
async fn submit_batch_here(
    st: AppState,
    caller: Grant,
    headers: HeaderMap,
    bytes: Bytes,
    gone: Option<Arc<AtomicBool>>,
) -> ApiResult<Response> {
    edge::require_json(&headers)?;
    if bytes.is_empty() {
        return Err(ApiError::json_required());
    }
    let body: BatchBody = extract::parse_json(&bytes)?;
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid_request(format!(
            "`jobs` must hold 1 to {MAX_BATCH} jobs (got {})",
            body.jobs.len()
        )));
    }
    // Per item: its error, or `None` when its job went to the store.
    let mut refused: Vec<Option<ApiError>> = Vec::with_capacity(body.jobs.len());
    let mut jobs = Vec::with_capacity(body.jobs.len());
    let mut hashes = Vec::with_capacity(body.jobs.len());
    for item in body.jobs {
        if gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed)) {
            return Err(ApiError::unavailable(
                "request_ended",
                "the request ended before its batch was stored; nothing was stored",
            ));
        }
        match prepare_item(&st, &caller, item).await {
            Ok((job, hash)) => {
                jobs.push(job);
                hashes.push(hash);
                refused.push(None);
            }
            Err(e) => refused.push(Some(e)),
        }
    }
    let mut stored = st
        .app
        .store
        .submit_many(jobs)
        .await?
        .into_iter()
        .zip(hashes);
    let outcomes: Vec<Result<Submitted, Value>> = refused
        .into_iter()
        .map(|refusal| {
            // A refused item took no place in the store's answer.
            let outcome = match refusal.map_or_else(|| stored.next().ok_or(None), |e| Err(Some(e)))
            {
                Ok((r, hash)) => r
                    .map_err(ApiError::from)
                    .and_then(|s| check_replay(&s, hash.as_deref()).map(|()| s)),
                Err(Some(e)) => Err(e),
                Err(None) => Err(ApiError::internal(
                    "internal",
                    "the store answered fewer jobs than it was given",
                )),
            };
            outcome.map_err(|e| e.as_item())
        })
        .collect();
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    let answer = Answer {
        accepted,
        failed: outcomes.len() - accepted,
        results: outcomes
            .iter()
            .map(|o| match o {
                Ok(s) => Item::Stored(SubmitAnswer::of(s, true)),
                Err(e) => Item::Refused(e),
            })
            .collect(),
    };
    Ok(Json(answer).into_response())
}

/// The answer of a batch, serialized as it is (no `Value` per job); the keys in the order
/// `json!` wrote them (sorted).
#[derive(Serialize)]
struct Answer<'a> {
    accepted: usize,
    failed: usize,
    results: Vec<Item<'a>>,
}

/// One item of a batch's results: what `POST /async/jobs` answers, with the status it would
/// have (`202`, or `200` and `idempotent_replayed` for the earlier job of the same key), or the
/// item's error ([`ApiError::as_item`]).
#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Stored(SubmitAnswer<'a>),
    Refused(&'a Value),
}

/// One item validated as a single submit body (its own JSON text), nothing stored.
async fn prepare_item(
    st: &AppState,
    caller: &Grant,
    item: &RawValue,
) -> ApiResult<(crate::job::Job, Option<String>)> {
    let job = prepare_submit(st, caller, item.get().as_bytes(), Vec::new()).await?;
    let hash = job.submit_hash.clone();
    Ok((job, hash))
}
