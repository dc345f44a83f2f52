//! The client API for jobs: submit, get, list, cancel, retry, logs, result.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::JobIdPath;
use super::list_params::{list_query, Fields, ListParams};
use super::pages::{self, Page};
use super::AppState;
use crate::auth::access::Caller;
use crate::auth::tokens::Grant;
use crate::job::{BackoffPatch, Command, Job, JobStatus, Micros, MAX_RFC3339_US};
use crate::store::Submitted;

pub use super::duration::DurationSpec;

/// The body of `POST /async/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Arguments (an object; `{}` when absent).
    #[serde(default)]
    pub args: Option<Value>,
    /// A runner name that must claim the type.
    pub runner: Option<String>,
    /// RFC 3339 time to run at.
    pub run_at: Option<String>,
    /// Per-attempt time limit.
    pub timeout: Option<DurationSpec>,
    /// Attempts.
    pub max_attempts: Option<u32>,
    /// Backoff policy: the fields given replace the runner's.
    #[serde(default, deserialize_with = "super::extract::object")]
    pub backoff: Option<BackoffPatch>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Event channel.
    pub channel: Option<String>,
    /// Signals to wait for: `[{key, count, since}]` (see `crate::waiting`).
    #[serde(default, deserialize_with = "super::extract::strict")]
    pub wait_for: Option<Value>,
    /// When the job stops waiting: RFC 3339, `"+4h"` or `"HH:MM"`.
    pub deadline: Option<Value>,
    /// What the deadline does: `run`, `fail` or `skip`.
    pub on_deadline: Option<Value>,
    /// Signal keys written when the job ends SUCCESS.
    pub emits: Option<Vec<String>>,
    /// A webhook for the job's events (`{url, events}`; see docs/notifications.md); `null`: none,
    /// not even a `[[notify.defaults]]` one (left out: the default for the type, if any).
    #[serde(default, deserialize_with = "super::notify::opt_out")]
    #[schema(value_type = Option<super::notify::NotifyBody>, nullable)]
    pub notify: Option<Option<super::notify::NotifyBody>>,
}

pub(crate) use crate::job::{valid_name, CHANNEL_RULE};

/// The submit's key, channel (and `caller`'s right to its type and channel) and emitted keys,
/// in that order.
fn check_keys(body: &SubmitBody, caller: &Grant) -> ApiResult<()> {
    let bad = |m: String| ApiError::unprocessable("invalid_request", m);
    if let Some(k) = &body.idempotency_key {
        if k.is_empty() || k.len() > 256 {
            return Err(bad("`idempotency_key` must be 1-256 bytes (UTF-8)".into()));
        }
        if k.starts_with(crate::schedule::FIRE_KEY_PREFIX) {
            return Err(bad(format!(
                "`idempotency_key` may not start with `{}`: those keys are the schedules' own",
                crate::schedule::FIRE_KEY_PREFIX
            )));
        }
    }
    if let Some(c) = &body.channel {
        if !valid_name(c, 256) {
            return Err(bad(CHANNEL_RULE.into()));
        }
    }
    // The caller's types and channels (auth: 403 outside them; the open grant without auth).
    caller.check_job(&body.job_type, body.channel.as_deref())?;
    if let Some(keys) = &body.emits {
        if keys.len() > 100 {
            return Err(bad("`emits` may name at most 100 keys".into()));
        }
        for k in keys {
            crate::store::signals::check_key(k).map_err(|m| bad(format!("`emits`: {m}")))?;
        }
        require_emit_scope(caller, keys)?;
    }
    Ok(())
}

/// A job's `emits` are signals written when it succeeds: whoever makes it run (a submit, a
/// retry, a schedule's trigger or backfill) must be allowed to write signals itself (as
/// `POST /async/signals/{key}` needs), or it would wake waiting jobs it could not wake otherwise.
pub(crate) fn require_emit_scope(caller: &Grant, emits: &[String]) -> ApiResult<()> {
    let scope = crate::auth::tokens::Scope::SignalsWrite;
    if emits.is_empty() || caller.allows(scope) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} does not grant `{}`, which a job with `emits` needs (its signals are written when it succeeds)",
        caller.who,
        scope.as_str()
    )))
}

/// The runner slot for a submit; no runner for the type is `unknown_type`.
fn select_slot<'a>(
    state: &'a AppState,
    job_type: &str,
    runner: Option<&str>,
    args: &Value,
) -> ApiResult<&'a std::sync::Arc<crate::runner_set::RunnerSlot>> {
    state
        .app
        .runners
        .select(job_type, args, runner)
        .map_err(|e| match e {
            crate::job::SelectError::NoRunner(_) => {
                ApiError::unprocessable("unknown_type", e.to_string())
            }
            crate::job::SelectError::InvalidRequest(_) => ApiError::invalid_request(e.to_string()),
            _ => ApiError::unprocessable("runner_refused", e.to_string()),
        })
}

/// The job's timeout in ms: the submit's, else the runner's (at least 1 ms).
fn timeout_ms(body: &SubmitBody, default: Option<std::time::Duration>) -> ApiResult<Option<u64>> {
    Ok(body
        .timeout
        .as_ref()
        .map(|t| t.to_duration("timeout"))
        .transpose()?
        .or(default)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)))
}

/// A new job waits for its signals, else waits for its `run_at`, else is queued.
fn initial_status(waits: bool, has_run_at: bool) -> JobStatus {
    if waits {
        JobStatus::Waiting
    } else if has_run_at {
        JobStatus::Scheduled
    } else {
        JobStatus::Queued
    }
}

/// Validates a submit body and builds the job to store (nothing is stored here). `caller`: the
/// grant of the request that submits it ([`crate::auth::access::Caller`]), which must cover the
/// job's type and channel (403). `now`: the store's time ([`crate::store::Maintenance::time`]),
/// the job's times and what its `run_at` and wait times are judged from: every node compares
/// them with the store's clock, not with this node's.
pub fn build_job(
    state: &AppState,
    caller: &Grant,
    mut body: SubmitBody,
    user_id: Option<String>,
    now: Micros,
) -> ApiResult<Job> {
    let bad = |m: String| ApiError::unprocessable("invalid_request", m);
    if !valid_name(&body.job_type, 200) {
        return Err(bad(format!(
            "`type` must be 1-200 characters of ASCII letters, digits, '.', '_', '-', ':' (got `{}`)",
            crate::job::echoed(&body.job_type, 80)
        )));
    }
    // Waiting (see crate::waiting): times relative to the submit, `HH:MM` in UTC (a schedule's
    // template is resolved again at each fire, in the schedule's time zone).
    let wait_req = crate::waiting::WaitRequest::from_fields(
        body.wait_for.as_ref(),
        body.deadline.as_ref(),
        body.on_deadline.as_ref(),
    )
    .map_err(bad)?;
    if let Some(w) = &wait_req {
        w.check_new_keys().map_err(bad)?;
    }
    if wait_req.is_some() && body.run_at.is_some() {
        return Err(bad(
            "`run_at` cannot be combined with `wait_for`: a waiting job runs when its signals arrive"
                .into(),
        ));
    }
    let notify = super::notify::notify_of(state, &body)?;
    let wait = wait_req
        .map(|r| r.resolve(now, "UTC", now, true, true))
        .transpose()
        .map_err(bad)?;
    let args = match body.args.take() {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(bad("`args` must be a JSON object".into())),
    };
    let slot = select_slot(state, &body.job_type, body.runner.as_deref(), &args)?;
    check_keys(&body, caller)?;
    let max_attempts = body.max_attempts.unwrap_or(slot.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(bad("`max_attempts` must be between 1 and 100".into()));
    }
    let backoff = body.backoff.unwrap_or_default().over(slot.backoff);
    // The fields not given are the runner's: the message says so when one of them is at fault.
    backoff.validate().map_err(|m| {
        bad(format!(
            "{m} (with the runner's backoff for the fields not given)"
        ))
    })?;
    let timeout_ms = timeout_ms(&body, slot.timeout)?;
    let run_at = body
        .run_at
        .as_deref()
        .map(|s| parse_run_at(s).map_err(bad))
        .transpose()?
        .filter(|t| *t > now);
    let fresh = Job::new(&body.job_type, &slot.name, now);
    let channel_id = body.channel.unwrap_or_else(|| fresh.id.to_string());
    Ok(Job {
        args,
        status: initial_status(wait.is_some(), run_at.is_some()),
        channel_id,
        user_id,
        max_attempts,
        backoff,
        timeout_ms,
        run_at,
        idempotency_key: body.idempotency_key,
        emits: body.emits.unwrap_or_default(),
        notify,
        wait,
        ..fresh
    })
}

/// Parses `run_at`: RFC 3339 with any offset (`Z`, `+02:00`) and either case of `T`/`Z`, up to
/// the year 9999; microseconds since the epoch (a time before 1970 is "now").
pub fn parse_run_at(s: &str) -> Result<Micros, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`run_at`: `{s}` is not an RFC 3339 time: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .ok()
        .filter(|us| *us <= MAX_RFC3339_US)
        .map(|us| us.max(0))
        .ok_or_else(|| format!("`run_at`: `{s}` is after the year 9999"))
}

/// What a submit answers (`POST /async/jobs`; with its `status_code` and `idempotent_replayed`,
/// each stored item of a batch), serialized straight from the job: no `Value` built per job. The
/// keys are in the order `json!` wrote them (sorted).
#[derive(serde::Serialize)]
pub(super) struct SubmitAnswer<'a> {
    channel_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent_replayed: Option<bool>,
    job_id: uuid::Uuid,
    result_url: String,
    status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
}

impl<'a> SubmitAnswer<'a> {
    /// The answer of `POST /async/jobs`; `item`: as an item of a batch's results.
    pub(super) fn of(s: &'a Submitted, item: bool) -> Self {
        let j = &s.job;
        Self {
            channel_id: &j.channel_id,
            idempotent_replayed: item.then_some(!s.created),
            job_id: j.id,
            result_url: j.result_url(),
            status: j.status,
            status_code: item.then_some(if s.created { 202 } else { 200 }),
        }
    }
}

/// The 202 response of a submit.
pub fn accepted(s: &Submitted) -> Response {
    let mut res = (StatusCode::ACCEPTED, Json(SubmitAnswer::of(s, false))).into_response();
    if !s.created {
        res.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    res
}

/// `GET /async/jobs/{id}`.
#[utoipa::path(get, path = "/async/jobs/{id}", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = super::openapi::schemas::JobView), (status = 400, description = "`bad_id`: not a UUID", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody)))]
pub async fn get_job(
    State(st): State<AppState>,
    Caller(caller): Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<Value>> {
    let mut job = st.job_for(id, &caller).await?;
    if job.status == JobStatus::Waiting {
        // Why it waits, now: the records seen so far.
        crate::waiting::fill_seen(st.app.store.as_ref(), &mut job).await?;
    }
    Ok(Json(job.to_public()))
}

/// `GET /async/jobs`: only the jobs the caller's grant covers, paged over those only (a page may
/// hold fewer than `limit`; follow `next_cursor`); with `fields`, only those members of each.
#[utoipa::path(get, path = "/async/jobs", tag = "jobs", params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = super::openapi::schemas::JobPage),
        (status = 400, description = "`bad_query`: an unknown parameter, a bad `status`, `limit` out of range, an empty, unknown or repeated name in `fields`; `bad_id`: a bad `cursor`", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn list_jobs(
    State(st): State<AppState>,
    crate::auth::access::Caller(grant): crate::auth::access::Caller,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let max = st.app.config.api.max_page;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_query(format!(
            "`limit` must be between 1 and {max}"
        )));
    }
    let fields = Fields::parse(q.fields.as_deref())?;
    let mut query = list_query(q, limit)?;
    // The store pages the jobs the caller sees only: the page, its cursor and where a scan
    // stops are the same whatever other tenants store (filtering a page after it was made would
    // hand out a cursor, and a yes/no on the filters, about their jobs).
    query.visible = grant.visibility();
    pages::jobs(&st, &grant, query, fields.as_ref()).await
}

/// `POST /async/jobs/{id}/cancel`.
#[utoipa::path(post, path = "/async/jobs/{id}/cancel", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, cancelled (`{id, status, attempt}` only without `jobs:read`)", body = super::openapi::schemas::JobActed), (status = 400, description = "`bad_id`: not a UUID", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job has finished, or its attempt reported SUCCESS, or an ERROR that ends the job (retry: false, or no attempts left), and only its process is still to end", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn cancel_job(
    State(st): State<AppState>,
    Caller(caller): Caller,
    JobIdPath(id): JobIdPath,
    _: super::extract::NoBody,
) -> ApiResult<Json<Value>> {
    // A job's type and channel never change: checked once, before the cancel.
    if caller.is_confined() {
        st.job_for(id, &caller).await?;
    }
    let job = st.app.store.apply(id, Command::Cancel).await?;
    crate::outcomes::log_change(&job);
    Ok(Json(acted(&caller, &job)))
}

/// The job as the answer to an action on it: all of it to a caller that may read jobs, only
/// its id, status and attempt to one that may not (a `jobs:cancel` or `jobs:submit` token
/// without `jobs:read` must not read a job's args, result or runs through them).
fn acted(caller: &Grant, job: &Job) -> Value {
    if caller.allows(crate::auth::tokens::Scope::JobsRead) {
        job.to_public()
    } else {
        json!({"id": job.id, "status": job.status, "attempt": job.attempt})
    }
}

/// `POST /async/jobs/{id}/retry`.
#[utoipa::path(post, path = "/async/jobs/{id}/retry", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id")),
    responses(
        (status = 202, description = "The job, queued again (`{id, status, attempt}` only without `jobs:read`)", body = super::openapi::schemas::JobActed), (status = 400, description = "`bad_id`: not a UUID", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job has not finished, or was cancelled while it ran and its worker is still stopping that attempt (retry later)", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the job's runner refuses its args (`large_args`), nothing changed; `unknown_type`: no runner claims the job's type any more (the config changed), nothing changed", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn retry_job(
    State(st): State<AppState>,
    Caller(caller): Caller,
    JobIdPath(id): JobIdPath,
    _: super::extract::NoBody,
) -> ApiResult<Response> {
    // `emits`, the type and args never change after the submit, nor does the runner of a job a
    // retry would queue (finished): checking them before the retry is not a race.
    let job = st.job_for(id, &caller).await?;
    if !caller.allows(crate::auth::tokens::Scope::SignalsWrite) {
        require_emit_scope(&caller, &job.emits)?;
    }
    // A job whose runner is gone from the config or no longer claims its type is routed again
    // as a submit would route it; none claims it: `unknown_type` as at a submit, nothing
    // changed. Args the runner refuses (`large_args = "refuse"` set after the submit) would
    // only end ERROR again at launch, an attempt spent: refused here, nothing changed. Only for
    // a job a retry would queue; any other is the store's 409.
    use crate::job::JobStatus::{Cancelled, Error, Timeout};
    let mut runner = None;
    if matches!(job.status, Error | Timeout | Cancelled) {
        let runners = &st.app.runners;
        let Some(slot) = runners.route(&job.job_type, &job.runner) else {
            let e = crate::job::SelectError::NoRunner(job.job_type.clone());
            return Err(ApiError::unprocessable("unknown_type", e.to_string()));
        };
        if let Err(e @ runyard_runners::RunnerError::ArgsTooLarge { .. }) =
            slot.runner.validate(&job.job_type, &job.args)
        {
            return Err(ApiError::invalid_request(format!(
                "runner `{}`: {e}",
                slot.name
            )));
        }
        runner = (slot.name != job.runner).then(|| slot.name.clone());
    }
    let job = st.app.store.apply(id, Command::Retry { runner }).await?;
    Ok((StatusCode::ACCEPTED, Json(acted(&caller, &job))).into_response())
}

/// Query of `GET /async/jobs/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    after: Option<u64>,
    /// Lines in a page, 1,000 when left out; 0 is read as 1 and more than 10,000 as 10,000 (a
    /// page also ends at its bytes' bound).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    limit: Option<usize>,
}

/// `GET /async/jobs/{id}/logs`.
#[utoipa::path(get, path = "/async/jobs/{id}/logs", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id"), LogParams),
    responses(
        (status = 200, description = "Log lines after `after`", body = super::openapi::schemas::LogPage),
        (status = 400, description = "`bad_id`: not a UUID; `bad_query`", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn job_logs(
    State(st): State<AppState>,
    Caller(caller): Caller,
    JobIdPath(id): JobIdPath,
    q: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    // A line number is what `next` gave: JSON's exact integers (a client in JavaScript holds
    // them), far below the stored i64's end; a cursor past them is refused, not clamped.
    const MAX_AFTER: u64 = (1 << 53) - 1;
    let mut next = q.after.unwrap_or(0);
    if next > MAX_AFTER {
        return Err(ApiError::bad_query(format!(
            "`after` must be a line number (`next` of a page), 0 to {MAX_AFTER}"
        )));
    }
    let job = st.job_for(id, &caller).await?;
    let mut left = q.limit.unwrap_or(1000).clamp(1, 10_000);
    // Read in chunks and written line by line within the page's bytes (`pages`); `next` is the
    // last line written.
    let mut page = Page::open(&format!(r#"{{"job_id":"{id}","lines":["#));
    while left > 0 && !page.full {
        let asked = left.min(pages::LOG_CHUNK);
        let lines = st.app.store.logs(id, next, asked).await?;
        for l in &lines {
            if !page.push(l)? {
                break;
            }
            next = l.seq;
            left -= 1;
        }
        if lines.len() < asked {
            break;
        }
    }
    page.close(&[("next", &next), ("status", &job.status)])
}

/// `GET /async/jobs/{id}/result`: 200 once the job is finished, 409 before.
#[utoipa::path(get, path = "/async/jobs/{id}/result", tag = "jobs", params(("id" = uuid::Uuid, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job's result", body = super::openapi::schemas::JobResult), (status = 400, description = "`bad_id`: not a UUID", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`not_finished`: not ready yet", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn job_result(
    State(st): State<AppState>,
    Caller(caller): Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<Value>> {
    let job = if caller.allows(crate::auth::tokens::Scope::JobsRead) {
        st.job_for(id, &caller).await?
    } else {
        // A channel JWT (the guard let only those through without `jobs:read`): its channel's
        // jobs only, another's is 404 as no job is.
        let job = st.job(id).await?;
        crate::auth::target::hidden_job(&caller, &job)?;
        job
    };
    if !job.status.is_terminal() {
        return Err(ApiError::conflict(
            "not_finished",
            format!("job is {}: its result is not ready", job.status),
        ));
    }
    Ok(Json(json!({
        "job_id": job.id,
        "status": job.status,
        "result": job.result,
        "error": job.error,
        "exit_code": job.exit_code,
    })))
}
