//! The fire routes of schedules: `trigger` (one fire now) and `backfill` (the fires of a past
//! range), each answering the jobs its fires made and the fires that made none.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::schedules::{bad, load_for, not_found};
use super::AppState;
use crate::auth::tokens::Grant;
use crate::auth::Refusal;
use crate::job::Micros;
use crate::schedule::firing::Firing;
use crate::schedule::{to_us, to_utc};
use crate::store::{StoreError, Submitted};

/// Most fires one backfill submits.
const MAX_BACKFILL: usize = 1000;

/// The fire routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/schedules/{name}/trigger", post(trigger))
        .route("/async/schedules/{name}/backfill", post(backfill))
}

fn firing(st: &AppState) -> Firing {
    Firing {
        store: st.app.store.clone(),
        runners: st.app.runners.clone(),
        signal_retention: st.app.config.retention.finished,
    }
}

fn fired(s: &Submitted) -> Value {
    json!({
        "job_id": s.job.id,
        "fire_time": s.job.fire_time.map(crate::schedule::fire_time_text),
        "status": s.job.status,
        "created": s.created,
        "result_url": s.job.result_url(),
    })
}

/// Fires the schedule `name` at `times` for `caller`: the schedule fired is the one checked
/// against the caller's grant (`auth::target`), as loaded for the fire, not an earlier look.
async fn fire(
    st: &AppState,
    (name, caller): (&str, &Grant),
    times: &[Micros],
) -> ApiResult<Vec<(Micros, Result<Submitted, String>)>> {
    firing(st)
        .fire_now(name, times, |s| crate::auth::target::schedule(caller, s))
        .await
        .map_err(|r| match r {
            Refusal::Store(StoreError::NotFound) => not_found(name),
            r => r.into(),
        })
}

/// `POST /async/schedules/{name}/trigger`: one fire now (also when paused; overlap is not
/// applied), 202 with the job.
#[utoipa::path(post, path = "/async/schedules/{name}/trigger", tag = "schedules", params(("name" = String, Path, description = "The schedule")),
    responses(
        (status = 202, description = "Fired now", body = super::openapi::schemas::Fired), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`fire_failed`: the fire could not make a job", body = super::openapi::schemas::ErrorBody),
    ))]
async fn trigger(
    State(st): State<AppState>,
    crate::auth::access::Caller(caller): crate::auth::access::Caller,
    Path(name): Path<String>,
    _: super::extract::NoBody,
) -> ApiResult<Response> {
    let s = load_for(&st, &name, &caller).await?;
    super::jobs::require_emit_scope(&caller, &s.proto.emits)?;
    let t = crate::schedule::trigger_time(st.app.store.time().await);
    let subs = fire(&st, (&name, &caller), &[t]).await?;
    match subs.into_iter().next() {
        Some((_, Ok(sub))) => Ok((StatusCode::ACCEPTED, Json(fired(&sub))).into_response()),
        Some((_, Err(why))) => Err(ApiError::unprocessable(
            "fire_failed",
            format!("schedule `{name}`: the fire could not make a job: {why}"),
        )),
        None => Err(ApiError::unprocessable(
            "fire_failed",
            format!("schedule `{name}`: the fire could not make a job (see its last_runs)"),
        )),
    }
}

/// The body of `POST /async/schedules/{name}/backfill`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, inclusive; not in the future.
    pub to: String,
}

fn parse_time(s: &str, field: &str) -> ApiResult<Micros> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| bad(format!("`{field}`: `{s}` is not an RFC 3339 time: {e}")))
}

/// `POST /async/schedules/{name}/backfill {from, to}`: one job per fire time of the pattern in
/// `[from, to]` (at most 1,000); a time that already has its job returns it (`created: false`).
#[utoipa::path(post, path = "/async/schedules/{name}/backfill", tag = "schedules", params(("name" = String, Path, description = "The schedule")), request_body = BackfillBody,
    responses(
        (status = 202, description = "The fires of `from`..`to`", body = super::openapi::schemas::Backfilled),
        (status = 400, description = "`bad_json`: no body or malformed JSON", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such schedule", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema, a bad time, `from` before 1970, `to` before `from` or in the future, more than 1000 fire times", body = super::openapi::schemas::ErrorBody),
    ))]
async fn backfill(
    State(st): State<AppState>,
    crate::auth::access::Caller(caller): crate::auth::access::Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<BackfillBody>,
) -> ApiResult<Response> {
    let from = parse_time(&body.from, "from")?;
    let to = parse_time(&body.to, "to")?;
    if from < 0 {
        return Err(bad("`from` must be in 1970 or later"));
    }
    if to < from {
        return Err(bad("`to` must not be before `from`"));
    }
    if to > st.app.store.time().await {
        return Err(bad(
            "`to` must not be in the future (the schedule fires those times itself)",
        ));
    }
    let s = load_for(&st, &name, &caller).await?;
    super::jobs::require_emit_scope(&caller, &s.proto.emits)?;
    let cron = s
        .cron()
        .map_err(|e| ApiError::internal("corrupt", format!("{e:?}")))?;
    let times: Vec<Micros> = cron
        .between(to_utc(from), to_utc(to), MAX_BACKFILL + 1)
        .into_iter()
        .map(to_us)
        .collect();
    if times.len() > MAX_BACKFILL {
        return Err(bad(format!(
            "`from`..`to` holds more than {MAX_BACKFILL} fire times; backfill a shorter range"
        )));
    }
    let subs = fire(&st, (&name, &caller), &times).await?;
    let (mut fires, mut refused) = (Vec::new(), Vec::new());
    for (t, r) in subs {
        // A time whose job was made before the template was pointed at the caller's types or
        // channels: not named.
        let seen = |sub: &Submitted| caller.sees(&sub.job.job_type, Some(&sub.job.channel_id));
        let r = r.and_then(|sub| {
            if seen(&sub) {
                Ok(sub)
            } else {
                Err(
                    "that time's job (made before the schedule's job changed) is outside this \
                     token's types or channels"
                        .to_string(),
                )
            }
        });
        match r {
            Ok(sub) => fires.push(fired(&sub)),
            Err(why) => refused.push(json!({
                "fire_time": crate::schedule::fire_time_text(t),
                "error": why,
            })),
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "fires": fires, "refused": refused})),
    )
        .into_response())
}
