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

use std::future::Future;
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
use tokio::runtime::Handle;
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
        (status = 200, description = "One result per item, in order: `status_code` 202 (stored), 200 (a replayed `idempotency_key`) or the item's 4xx, or 503 `notify_unresolved`, with its `error` (nothing stored for it)", body = super::openapi::schemas::BatchResults),
        (status = 400, description = "`bad_json`: no body or malformed JSON", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: over `api.max_body_bytes`", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: not `{\"jobs\": [...]}` with 1 to 1,000 jobs; nothing stored", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn submit_batch(
    State(st): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    // Over the limit (declared or read), stalled or cut short: the API's answers.
    extract::BodyBytes(bytes): extract::BodyBytes,
) -> ApiResult<Response> {
    // The API node on Redis on one thread (`cli/mod.rs`): a batch's parsing, checks, writes
    // and answer (milliseconds for 1,000 jobs) run on a thread of the blocking pool, its store
    // calls still driven by the runtime, so the runtime's thread keeps answering the others.
    let rt = Handle::current();
    if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        && st.app.config.redis.is_some()
    {
        // In the request's span, so its logs keep the request's fields; the caller's grant goes
        // with it, so each item is checked against the token's types and channels there too.
        let span = tracing::Span::current();
        return on_pool(&POOL_BATCHES, rt, move |gone| {
            submit_batch_here(st, caller, headers, bytes, Some(gone)).instrument(span)
        })
        .await;
    }
    submit_batch_here(st, caller, headers, bytes, None).await
}

/// Most batches on the blocking pool at once (each holds a pool thread while it runs).
const POOL_SIZE: usize = 4;

/// Room for [`POOL_SIZE`] batches on the blocking pool.
static POOL_BATCHES: Semaphore = Semaphore::const_new(POOL_SIZE);

/// `work` on a thread of the blocking pool, its store calls still driven by the runtime of `rt`,
/// once `pool` has room (waiting for it ends with the request). `work` is given the flag set
/// when this future is dropped (its request ended: the client gone, the request timed out,
/// shutdown): a batch checks it before each item ([`each_item`]), so it stops storing nothing,
/// as a batch on the request's task stops when it is dropped. The room is held by the pool's
/// thread until `work` ends, not by this future: a request that ends first does not free it
/// while its batch still runs (the item under way, its `submit_many`).
async fn on_pool<W, F, T>(pool: &'static Semaphore, rt: Handle, work: W) -> ApiResult<T>
where
    W: FnOnce(Arc<AtomicBool>) -> F,
    F: Future<Output = ApiResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let permit = pool
        .acquire()
        .await
        .map_err(|_| ApiError::internal("internal", "the batch pool is closed"))?;
    let gone = GoneOnDrop(Arc::new(AtomicBool::new(false)));
    let work = work(gone.0.clone());
    let run = move || {
        let _room = permit;
        rt.block_on(work)
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(answer) => answer,
        // A panic goes on to the edge's panic layer, which answers without its text and
        // counts it, as for any handler.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApiError::internal(
            "internal",
            format!("the batch's task failed: {e}"),
        )),
    }
}

/// Set when the request that started a batch on the blocking pool is dropped.
struct GoneOnDrop(Arc<AtomicBool>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `prepare` on each item in order, each outcome handed to `take`. Before each item, `gone` set
/// (the request ended) stops it: `503 request_ended`, and its caller stores nothing.
async fn each_item<I, T, F>(
    items: Vec<I>,
    gone: Option<&AtomicBool>,
    mut prepare: impl FnMut(I) -> F,
    mut take: impl FnMut(ApiResult<T>),
) -> ApiResult<()>
where
    F: Future<Output = ApiResult<T>>,
{
    for item in items {
        if gone.is_some_and(|g| g.load(Ordering::Relaxed)) {
            return Err(ApiError::unavailable(
                "request_ended",
                "the request ended before its batch was stored; nothing was stored",
            ));
        }
        take(prepare(item).await);
    }
    Ok(())
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
    // Each item is parsed again from its own text (`prepare_submit`), its integers checked
    // there: one past 64 bits refuses its item only.
    let body: BatchBody = extract::parse_envelope(&bytes)?;
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
    let (st_ref, caller_ref) = (&st, &caller);
    each_item(
        body.jobs,
        gone.as_deref(),
        move |item| prepare_item(st_ref, caller_ref, item),
        |outcome| match outcome {
            Ok((job, hash)) => {
                jobs.push(job);
                hashes.push(hash);
                refused.push(None);
            }
            Err(e) => refused.push(Some(e)),
        },
    )
    .await?;
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
                    .and_then(|s| check_replay(&s, &hash, &caller).map(|()| s)),
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
) -> ApiResult<(crate::job::Job, Vec<String>)> {
    prepare_submit(st, caller, item.get().as_bytes(), Vec::new()).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::*;

    /// Closes its gate when dropped (the test's end, or its panic): a batch still waiting on
    /// it ends, so the runtime's shutdown, which waits for the blocking pool, does not hang.
    struct Gate(Arc<Semaphore>);

    impl Drop for Gate {
        fn drop(&mut self) {
            self.0.close();
        }
    }

    /// Waits until `holds` (bounded: 10 s).
    async fn until(what: &str, holds: impl Fn() -> bool) {
        for _ in 0..2000 {
            if holds() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what}: not within 10 s");
    }

    /// Six requests start a batch on the pool at once (on one thread, as the API node on Redis
    /// runs): four run, the fifth and sixth wait for room, the fifth starts when one ends, and
    /// all six end.
    #[tokio::test(flavor = "current_thread")]
    async fn at_most_four_batches_run_on_the_blocking_pool_at_once() {
        static POOL: Semaphore = Semaphore::const_new(POOL_SIZE);
        let running = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        // Each batch runs until the test lets it end.
        let gate = Arc::new(Semaphore::new(0));
        let _closes = Gate(gate.clone());
        let requests: Vec<_> = (0..6)
            .map(|_| {
                let (running, ended, gate) = (running.clone(), ended.clone(), gate.clone());
                tokio::spawn(on_pool(&POOL, Handle::current(), |_| async move {
                    running.fetch_add(1, SeqCst);
                    let _ = gate.acquire().await.map(|p| p.forget());
                    running.fetch_sub(1, SeqCst);
                    ended.fetch_add(1, SeqCst);
                    Ok(())
                }))
            })
            .collect();
        until("four batches run", || running.load(SeqCst) == 4).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(running.load(SeqCst), 4, "the fifth and sixth wait for room");
        gate.add_permits(1);
        // `running` drops to 3 before `ended` counts the first: 4 again is the fifth.
        until("one ends and the fifth starts", || {
            ended.load(SeqCst) == 1 && running.load(SeqCst) == 4
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(running.load(SeqCst), 4, "the sixth still waits");
        gate.add_permits(5);
        for r in requests {
            r.await.expect("no panic").expect("the batch answers");
        }
        assert_eq!(ended.load(SeqCst), 6);
    }

    /// A batch on the pool whose request ended (its future dropped, as hyper drops it when the
    /// client goes or the request times out) stops before its next item: the item under way
    /// ends, none after it is prepared, and the batch answers `503 request_ended`, so
    /// `submit_batch_here` stores nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_whose_request_ended_stops_before_its_next_item() {
        static POOL: Semaphore = Semaphore::const_new(POOL_SIZE);
        let started = Arc::new(AtomicUsize::new(0));
        let prepared = Arc::new(Mutex::new(Vec::new()));
        // Each item is prepared when the test lets it.
        let gate = Arc::new(Semaphore::new(0));
        let _closes = Gate(gate.clone());
        let (answer, answered) = tokio::sync::oneshot::channel();
        let request = {
            let (started, prepared, gate) = (started.clone(), prepared.clone(), gate.clone());
            tokio::spawn(on_pool(&POOL, Handle::current(), |gone| async move {
                let prepare = |i: usize| {
                    let (started, gate) = (started.clone(), gate.clone());
                    async move {
                        started.fetch_add(1, SeqCst);
                        let _ = gate.acquire().await.map(|p| p.forget());
                        Ok(i)
                    }
                };
                let take = |o: ApiResult<usize>| {
                    prepared.lock().expect("lock").push(o.map_err(|e| e.code));
                };
                let ended = each_item((0..10).collect(), Some(&*gone), prepare, take).await;
                let _ = answer.send(ended.map_err(|e| (e.status, e.code)));
                Ok(())
            }))
        };
        gate.add_permits(3);
        // Three items prepared and the fourth under way (past its check).
        until("three items prepared, the fourth started", || {
            prepared.lock().expect("lock").len() == 3 && started.load(SeqCst) == 4
        })
        .await;
        request.abort();
        assert!(request.await.expect_err("aborted").is_cancelled());
        gate.add_permits(10);
        let ended = tokio::time::timeout(Duration::from_secs(10), answered)
            .await
            .expect("the batch ends")
            .expect("it answers");
        assert_eq!(
            ended,
            Err((StatusCode::SERVICE_UNAVAILABLE, "request_ended"))
        );
        assert_eq!(
            *prepared.lock().expect("lock"),
            vec![Ok(0), Ok(1), Ok(2), Ok(3)]
        );
        assert_eq!(started.load(SeqCst), 4, "no item after the request ended");
    }

    /// A request whose batch runs on the pool ends (its future dropped) while its batch's work
    /// still runs: the batch keeps its room until that work ends, so with four running the
    /// fifth does not start when the request ends, only when the work does.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_keeps_its_room_on_the_pool_until_its_work_ends_not_its_request() {
        static POOL: Semaphore = Semaphore::const_new(POOL_SIZE);
        // What the batches' works did, in order: ("start" | "end", batch).
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = |what: &'static str, n: usize| log.lock().expect("lock").contains(&(what, n));
        // Batch 0's work runs until `first` opens, the others' until `rest` does.
        let (first, rest) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let _closes = (Gate(first.clone()), Gate(rest.clone()));
        let batch = |n: usize, gate: &Arc<Semaphore>| {
            let (log, gate) = (log.clone(), gate.clone());
            tokio::spawn(on_pool(&POOL, Handle::current(), move |_| async move {
                log.lock().expect("lock").push(("start", n));
                let _ = gate.acquire().await.map(|p| p.forget());
                log.lock().expect("lock").push(("end", n));
                Ok(())
            }))
        };
        let aborted = batch(0, &first);
        let others: Vec<_> = (1..4).map(|n| batch(n, &rest)).collect();
        until("four batches run", || (0..4).all(|n| seen("start", n))).await;
        let fifth = batch(4, &rest);
        aborted.abort();
        assert!(aborted.await.expect_err("aborted").is_cancelled());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = log.lock().expect("lock").clone();
        assert!(
            !now.contains(&("start", 4)),
            "the fifth waits while the ended request's batch still runs: {now:?}"
        );
        first.add_permits(1);
        until("the fifth starts", || seen("start", 4)).await;
        {
            let log = log.lock().expect("lock");
            let at = |e| log.iter().position(|x| *x == e);
            let (ended, fifth) = (at(("end", 0)), at(("start", 4)));
            assert!(ended.is_some() && ended < fifth, "{log:?}");
        }
        rest.add_permits(4);
        for r in others.into_iter().chain([fifth]) {
            r.await.expect("no panic").expect("the batch answers");
        }
        assert!((1..5).all(|n| seen("end", n)));
    }
}
