//! The client API for cron schedules: create (idempotent), replace, read, list, delete, pause,
//! resume, trigger, backfill. The job template is validated by the submit's own
//! [`super::jobs::build_job`], so a schedule whose job could not be submitted is refused at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::jobs::{build_job, SubmitBody};
use super::AppState;
use crate::auth::access::Caller;
use crate::auth::tokens::Grant;
use crate::job::{Job, Micros};
use crate::schedule::{
    new_schedule, to_us, to_utc, CronSpec, CronSpecError, Misfire, Overlap, Schedule, ScheduleSpec,
};
use crate::store::schedules::Unreadable;

/// Compare-and-set attempts of one request.
const CAS_TRIES: usize = 20;

/// The schedule routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/schedules", post(create).get(list))
        .route(
            "/async/schedules/{name}",
            get(get_one).put(replace).delete(delete),
        )
        .route("/async/schedules/{name}/pause", post(pause))
        .route("/async/schedules/{name}/resume", post(resume))
}

/// The body of `POST /async/schedules` and `PUT /async/schedules/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Unique name (optional on PUT, where the path names it).
    pub name: Option<String>,
    /// Cron pattern.
    pub cron: String,
    /// IANA zone; UTC by default.
    pub timezone: Option<String>,
    /// The submit body of each fire's job (a key given twice in any of its objects is refused,
    /// as in a submit: the value keeps one of them).
    #[serde(deserialize_with = "super::extract::strict_value")]
    pub job: Value,
    /// Overlap policy word.
    pub overlap: Option<String>,
    /// Misfire policy word.
    pub misfire: Option<String>,
    /// Catch-up window: `"1h"` or seconds.
    pub catchup_window: Option<Value>,
    /// Jitter: `"30s"` or seconds.
    pub jitter: Option<Value>,
    /// POST: create paused (default false). PUT: `true` pauses, `false` resumes (as
    /// `.../resume`: the paused period is not made up), left out keeps the current state.
    pub paused: Option<bool>,
}

pub(super) fn bad(m: impl Into<String>) -> ApiError {
    ApiError::invalid_request(m)
}

/// A name that can stand in a URL path: `.` and `..` are refused, since clients resolve them as
/// path segments (`/async/schedules/..` reaches `/async/`).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn duration_ms(v: Option<&Value>, field: &str, default_ms: u64, max_ms: u64) -> ApiResult<u64> {
    let ms = match v {
        None | Some(Value::Null) => default_ms,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s >= 0.0 => (s * 1000.0).round() as u64,
            _ => {
                return Err(bad(format!(
                    "`{field}` must be a non-negative number of seconds or a duration like \"1h\""
                )))
            }
        },
        Some(Value::String(t)) => u64::try_from(
            humantime::parse_duration(t)
                .map_err(|e| bad(format!("`{field}`: `{t}` is not a duration: {e}")))?
                .as_millis(),
        )
        .unwrap_or(u64::MAX),
        Some(_) => {
            return Err(bad(format!(
                "`{field}` must be a duration like \"1h\" or a number of seconds"
            )))
        }
    };
    if ms > max_ms {
        return Err(bad(format!(
            "`{field}` must be at most {}",
            plain_duration(max_ms)
        )));
    }
    Ok(ms)
}

/// `ms` as a person writes it: whole days as days (humantime's `1year 18h` is 366 days), else
/// humantime's form.
fn plain_duration(ms: u64) -> String {
    const DAY: u64 = 86_400_000;
    match ms / DAY {
        1 if ms.is_multiple_of(DAY) => "1 day".to_string(),
        d if ms.is_multiple_of(DAY) && d > 1 => format!("{d} days"),
        _ => humantime::format_duration(std::time::Duration::from_millis(ms)).to_string(),
    }
}

/// The schedule's name: the body's, the path's, or both when they agree.
fn schedule_name(body_name: Option<String>, path_name: Option<&str>) -> ApiResult<String> {
    let name = match (body_name, path_name) {
        (Some(n), Some(p)) if n != p => {
            return Err(bad(format!(
                "`name` (`{}`) differs from the name in the path (`{}`)",
                crate::job::echoed(&n, 80),
                crate::job::echoed(p, 80)
            )))
        }
        (Some(n), _) => n,
        (None, Some(p)) => p.to_string(),
        (None, None) => return Err(bad("`name` is required")),
    };
    if !valid_name(&name) {
        return Err(bad(format!(
            "`name` must be 1-100 characters of ASCII letters, digits, '.', '_', '-', not `.` or `..` (got `{}`)",
            crate::job::echoed(&name, 80)
        )));
    }
    Ok(name)
}

/// The job every fire submits a copy of, checked as a submit (`job.*` in the errors), with its
/// waiting template resolved in the schedule's `timezone`; `now`: the store's time.
fn template_job(
    st: &AppState,
    caller: &Grant,
    (job, timezone): (&Value, &str),
    now: Micros,
) -> ApiResult<Job> {
    let Value::Object(obj) = job else {
        return Err(bad("`job` must be a JSON object: the body of a submit"));
    };
    for f in ["idempotency_key", "run_at"] {
        if obj.contains_key(f) {
            return Err(bad(format!(
                "`job.{f}` is set by each fire (key `schedule:{{name}}:{{fire_time}}`, run at the fire time): leave it out"
            )));
        }
    }
    let submit: SubmitBody =
        serde_json::from_value(job.clone()).map_err(|e| bad(format!("`job`: {e}")))?;
    let proto = build_job(st, caller, submit, None, now).map_err(|mut e| {
        e.message = format!("`job`: {}", e.message);
        e
    })?;
    // A waiting template is resolved at each fire in the schedule's time zone: check it there.
    if let Some(req) = crate::waiting::WaitRequest::from_fields(
        job.get("wait_for"),
        job.get("deadline"),
        job.get("on_deadline"),
    )
    .map_err(|e| bad(format!("`job`: {e}")))?
    {
        req.resolve(now, timezone, now, false, true)
            .map_err(|e| bad(format!("`job`: {e}")))?;
    }
    Ok(proto)
}

/// How long a pattern check waits for its turn before the request is answered 503 `busy`.
const CRON_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Parses a pattern and checks that it fires again, off the async threads and one at a time per
/// server (`App::cron_checks`; servers embedded in one process do not share it):
/// refusing a pattern that never fires (`0 0 31 2,4 *`) searches croner's whole range, about
/// 0.4 s of CPU, which inline would stall every request of a worker thread (of the whole node
/// on a current-thread runtime). The permit lives as long as the search, even when the request
/// is given up.
/// `pattern` parsed; `new` (not the pattern the schedule already has) also passes
/// [`crate::schedule::fields::check`]: a pattern stored before those checks keeps working, and a
/// deploy tool re-sending it is not refused.
async fn parse_cron(
    st: &AppState,
    pattern: &str,
    timezone: &str,
    new: bool,
) -> ApiResult<CronSpec> {
    if new {
        crate::schedule::fields::check(pattern).map_err(|m| bad(format!("`cron`: {m}")))?;
    }
    // A bounded wait: a caller sending many patterns that never fire delays others' schedule
    // writes by this much at most, then they are told to try again.
    let permit = tokio::time::timeout(CRON_WAIT, st.app.cron_checks.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "busy",
                "too many schedule patterns are being checked; try again",
            )
        })?
        .map_err(|_| ApiError::internal("internal", "the pattern check is closed"))?;
    let now = to_utc(st.app.store.time().await);
    let (p, tz) = (pattern.to_string(), timezone.to_string());
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        CronSpec::parse(&p, &tz).map(|c| {
            let fires = c.next_after(now).is_some();
            (c, fires)
        })
    })
    .await
    .map_err(|_| ApiError::internal("internal", "the pattern check failed"))?;
    match checked {
        Ok((c, true)) => Ok(c),
        Ok((_, false)) => Err(bad(format!(
            "`cron`: `{pattern}` never fires (or less often than once in {} years)",
            crate::schedule::cron::HORIZON_YEARS
        ))),
        Err(CronSpecError::Cron(m)) => Err(bad(format!("`cron`: {m}"))),
        Err(CronSpecError::TimeZone(m)) => Err(bad(format!("`timezone`: {m}"))),
    }
}

/// Validates a body: the spec, the job every fire submits a copy of (within `caller`'s types
/// and channels), and the parsed pattern.
async fn validate(
    st: &AppState,
    caller: &Grant,
    body: ScheduleBody,
    path_name: Option<&str>,
    stored_cron: Option<&str>,
) -> ApiResult<(ScheduleSpec, Job, CronSpec)> {
    let name = schedule_name(body.name, path_name)?;
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    let new = stored_cron != Some(one_spaced(&body.cron).as_str());
    let cron = parse_cron(st, &body.cron, &timezone, new).await?;
    let overlap = match body.overlap.as_deref() {
        None => Overlap::default(),
        Some(w) => Overlap::parse(w).ok_or_else(|| {
            bad(format!(
                "`overlap`: `{w}` is not one of allow, forbid, buffer_one, cancel_other"
            ))
        })?,
    };
    let misfire = match body.misfire.as_deref() {
        None => Misfire::default(),
        Some(w) => Misfire::parse(w).ok_or_else(|| {
            bad(format!(
                "`misfire`: `{w}` is not one of skip, run_once, all"
            ))
        })?,
    };
    let day = 24 * 3600 * 1000;
    let catchup_window_ms = duration_ms(
        body.catchup_window.as_ref(),
        "catchup_window",
        3600 * 1000,
        366 * day,
    )?;
    let jitter_ms = duration_ms(body.jitter.as_ref(), "jitter", 0, day)?;
    let now = st.app.store.time().await;
    let proto = template_job(st, caller, (&body.job, &timezone), now)?;
    let spec = ScheduleSpec {
        name,
        // One space between fields: `0  5 * * *` is `0 5 * * *`, shown and compared so.
        cron: one_spaced(&body.cron),
        timezone,
        job: body.job,
        overlap,
        misfire,
        catchup_window_ms,
        jitter_ms,
        paused: body.paused.unwrap_or(false),
    };
    Ok((spec, proto, cron))
}

pub(super) fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("schedule `{name}` not found"))
}

fn busy(name: &str) -> ApiError {
    ApiError::unavailable(
        "busy",
        format!("schedule `{name}` keeps changing; try again"),
    )
}

/// The schedule as answered (its `next_fires` from `now`, the store's time).
fn show(s: &Schedule, status: StatusCode, grant: &Grant, now: Micros) -> Response {
    (status, Json(public(s, now, grant))).into_response()
}

/// The schedule as `grant` may see it: a run's job outside its types or channels (made before
/// the template was pointed elsewhere) is not named.
fn public(s: &Schedule, now: Micros, grant: &Grant) -> Value {
    if !grant.is_confined() {
        return s.to_public(now);
    }
    s.to_public_for(now, &|job| {
        job.is_some_and(|(ty, channel)| grant.sees(ty, Some(channel)))
    })
}

pub(super) async fn load(st: &AppState, name: &str) -> ApiResult<Schedule> {
    st.app
        .store
        .schedule(name)
        .await?
        .ok_or_else(|| not_found(name))
}

/// The schedule `name` as `grant` may act on it: 404, or 403 when its job is outside the
/// grant's types or channels. The guard's rule again (`auth::target`), on the record the
/// handler goes on with: the guard's own lookup may have found nothing (created since).
pub(super) async fn load_for(st: &AppState, name: &str, grant: &Grant) -> ApiResult<Schedule> {
    let s = load(st, name).await?;
    crate::auth::target::schedule(grant, &s)?;
    Ok(s)
}

/// `POST /async/schedules`: 201 created, 200 the same body again, 409 another body.
#[utoipa::path(post, path = "/async/schedules", tag = "schedules", request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created", body = super::openapi::schemas::ScheduleView),
        (status = 200, description = "The same schedule existed already", body = super::openapi::schemas::ScheduleView),
        (status = 400, description = "`bad_json`: no body or malformed JSON", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`schedule_exists`: with another body (PUT replaces it)", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, or a field is invalid (the message names it, `job.` for the template); `unknown_type`, `notify_refused`", body = super::openapi::schemas::ErrorBody), (status = 503, description = "`busy`: the schedule keeps changing; try again", body = super::openapi::schemas::ErrorBody),
    ))]
async fn create(
    State(st): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<Response> {
    let (spec, proto, cron) = validate(&st, &caller, body, None, None).await?;
    super::notify::check_schedule_job(&st, &spec.job, &proto).await?;
    for _ in 0..CAS_TRIES {
        if let Some(cur) = st.app.store.schedule(&spec.name).await? {
            // Not compared: `paused` (a POST never pauses or resumes, PUT does; the answer shows
            // it as it is), the form of an empty `args` (absent, null, `{}`: the same job).
            let same = ScheduleSpec {
                paused: cur.spec.paused,
                job: cur.spec.job.clone(),
                cron: cur.spec.cron.clone(),
                ..spec.clone()
            };
            if cur.spec == same
                && one_spaced(&cur.spec.cron) == spec.cron
                && crate::schedule::same_template(&cur.spec.job, &spec.job)
            {
                let now = st.app.store.time().await;
                return Ok(show(&cur, StatusCode::OK, &caller, now));
            }
            return Err(ApiError::conflict(
                "schedule_exists",
                format!(
                    "`name`: schedule `{}` exists with another body; PUT /async/schedules/{} replaces it",
                    spec.name, spec.name
                ),
            ));
        }
        // The store's time: the schedule's creation and first fire time are judged by every
        // node's fire loop with it, whatever this node's wall clock says.
        let now = st.app.store.time().await;
        let s = new_schedule(spec.clone(), proto.clone(), &cron, now);
        if st.app.store.schedule_cas(&s, None).await? {
            return Ok(show(&s, StatusCode::CREATED, &caller, now));
        }
    }
    Err(busy(&spec.name))
}

/// `PUT /async/schedules/{name}`: creates (201) or replaces (200), keeping the history.
#[utoipa::path(put, path = "/async/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "The schedule")), request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created", body = super::openapi::schemas::ScheduleView),
        (status = 200, description = "Replaced", body = super::openapi::schemas::ScheduleView),
        (status = 400, description = "`bad_json`: no body or malformed JSON", body = super::openapi::schemas::ErrorBody), (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, or a field is invalid (the message names it, `job.` for the template); `unknown_type`, `notify_refused`", body = super::openapi::schemas::ErrorBody), (status = 503, description = "`busy`: the schedule keeps changing; try again", body = super::openapi::schemas::ErrorBody),
    ))]
async fn replace(
    State(st): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<Response> {
    // `paused` left out keeps the schedule's state: re-sending a body (a deploy tool) neither
    // resumes what an operator paused nor pauses what runs.
    let asked_paused = body.paused;
    // Its pattern as stored: re-sent unchanged, it is not checked again (`parse_cron`).
    let stored = st.app.store.schedule(&name).await?.map(|s| s.spec.cron);
    let (spec, proto, cron) = validate(&st, &caller, body, Some(&name), stored.as_deref()).await?;
    super::notify::check_schedule_job(&st, &spec.job, &proto).await?;
    for _ in 0..CAS_TRIES {
        let now = st.app.store.time().await;
        let (s, expected, status) = match st.app.store.schedule(&name).await? {
            None => {
                let s = new_schedule(spec.clone(), proto.clone(), &cron, now);
                (s, None, StatusCode::CREATED)
            }
            Some(cur) => {
                // Replacing is acting on it: one created since the guard looked, outside the
                // caller's grant, is 403, not overwritten.
                crate::auth::target::schedule(&caller, &cur)?;
                let mut s = cur.clone();
                let same_times = cur.spec.cron == spec.cron && cur.spec.timezone == spec.timezone;
                if !same_times || s.next_fire.is_none() {
                    s.next_fire = cron.next_after(to_utc(now)).map(to_us);
                }
                s.spec = spec.clone();
                s.proto = proto.clone();
                // As `.../pause` and `.../resume` (after the new pattern is in place: a resume
                // goes on from its next time, the paused period is not made up).
                match asked_paused {
                    Some(true) => s.pause(),
                    Some(false) => s.resume(now),
                    None => {}
                }
                s.version = cur.version + 1;
                s.updated_at = now;
                (s, Some(cur.version), StatusCode::OK)
            }
        };
        if st.app.store.schedule_cas(&s, expected).await? {
            return Ok(show(&s, status, &caller, now));
        }
    }
    Err(busy(&name))
}

/// `GET /async/schedules`.
#[utoipa::path(get, path = "/async/schedules", tag = "schedules", operation_id = "list_schedules",
    responses((status = 200, description = "The schedules the caller sees", body = super::openapi::schemas::ScheduleList)))]
async fn list(State(st): State<AppState>, Caller(grant): Caller) -> ApiResult<Json<Value>> {
    let now = st.app.store.time().await;
    let all = st.app.store.schedules().await?;
    // Only the schedules whose jobs the caller's grant covers.
    let seen =
        |s: &&Schedule| grant.sees(&s.proto.job_type, crate::auth::target::schedule_channel(s));
    Ok(Json(json!({
        "schedules": all.iter().filter(seen).map(|s| public(s, now, &grant)).collect::<Vec<_>>(),
    })))
}

/// `GET /async/schedules/{name}`.
#[utoipa::path(get, path = "/async/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "The schedule", body = super::openapi::schemas::ScheduleView), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody)))]
async fn get_one(
    State(st): State<AppState>,
    Caller(grant): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let s = load_for(&st, &name, &grant).await?;
    Ok(show(&s, StatusCode::OK, &grant, st.app.store.time().await))
}

/// `DELETE /async/schedules/{name}`: 204. Jobs already submitted are not touched. A schedule
/// whose record does not read (left out of the list) is deleted too.
#[utoipa::path(delete, path = "/async/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "The schedule")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody), (status = 503, description = "`busy`: the schedule keeps changing; try again", body = super::openapi::schemas::ErrorBody)))]
async fn delete(
    State(st): State<AppState>,
    Caller(grant): Caller,
    Path(name): Path<String>,
    _: super::extract::NoBody,
) -> ApiResult<StatusCode> {
    for _ in 0..CAS_TRIES {
        let cur = match st.app.store.schedule(&name).await {
            Ok(Some(cur)) => cur,
            Ok(None) => return Err(not_found(&name)),
            // A record that does not read is deleted as it is (by a grant confined to nothing:
            // its job's type and channel are not known); one fixed meanwhile is read again.
            Err(e) if crate::store::job_record::is_corrupt(&e) => {
                crate::auth::target::unreadable_schedule(&grant)?;
                let gone = Unreadable::Delete;
                if st.app.store.schedule_unreadable(&name, gone).await? {
                    return Ok(StatusCode::NO_CONTENT);
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        crate::auth::target::schedule(&grant, &cur)?;
        if st.app.store.schedule_delete(&name, cur.version).await? {
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    Err(busy(&name))
}

/// Applies `f` to the schedule under compare-and-set.
async fn update(
    st: &AppState,
    (name, grant): (&str, &Grant),
    f: impl Fn(&mut Schedule, Micros),
) -> ApiResult<Schedule> {
    for _ in 0..CAS_TRIES {
        let cur = load_for(st, name, grant).await?;
        let now = st.app.store.time().await;
        let mut s = cur.clone();
        f(&mut s, now);
        if s == cur {
            return Ok(cur);
        }
        s.version = cur.version + 1;
        s.updated_at = now;
        if st.app.store.schedule_cas(&s, Some(cur.version)).await? {
            return Ok(s);
        }
    }
    Err(busy(name))
}

/// `POST /async/schedules/{name}/pause`.
#[utoipa::path(post, path = "/async/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Paused", body = super::openapi::schemas::ScheduleView), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody), (status = 503, description = "`busy`: the schedule keeps changing; try again", body = super::openapi::schemas::ErrorBody)))]
async fn pause(
    State(st): State<AppState>,
    Caller(grant): Caller,
    Path(name): Path<String>,
    _: super::extract::NoBody,
) -> ApiResult<Response> {
    let s = update(&st, (&name, &grant), |s, _| s.pause()).await?;
    Ok(show(&s, StatusCode::OK, &grant, st.app.store.time().await))
}

/// `POST /async/schedules/{name}/resume`: fire times that passed while paused are not caught up.
#[utoipa::path(post, path = "/async/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Resumed", body = super::openapi::schemas::ScheduleView), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody), (status = 503, description = "`busy`: the schedule keeps changing; try again", body = super::openapi::schemas::ErrorBody)))]
async fn resume(
    State(st): State<AppState>,
    Caller(grant): Caller,
    Path(name): Path<String>,
    _: super::extract::NoBody,
) -> ApiResult<Response> {
    let s = update(&st, (&name, &grant), |s, now| s.resume(now)).await?;
    Ok(show(&s, StatusCode::OK, &grant, st.app.store.time().await))
}

/// A cron pattern with one space between its fields (a stored one made before was only
/// trimmed).
fn one_spaced(cron: &str) -> String {
    cron.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_are_said_in_days() {
        assert_eq!(super::plain_duration(366 * 86_400_000), "366 days");
        assert_eq!(super::plain_duration(86_400_000), "1 day");
        assert_eq!(super::plain_duration(90 * 60_000), "1h 30m");
    }
}
