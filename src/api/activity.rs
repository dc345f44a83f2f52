//! The dashboard's aggregates, from the store (issue 13; [`crate::store::ActivityStore`]):
//!
//! - `GET /async/activity`: the jobs that finished in each minute of the last hour, by final
//!   status, with the id of the newest event at the time of the read (a client follows the event
//!   stream from it and adds what finishes after `as_of`);
//! - `GET /async/dead_letters`: how many dead letters (ERROR with every attempt used) there are,
//!   in all and by type.
//!
//! Both answers cover every channel (the access table's `EveryChannel`); a grant confined to types
//! sees its types only.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::access::Caller;
use crate::job::{rfc3339, JobStatus, Micros};
use crate::store::activity::{Activity, MAX_MINUTES, MINUTE_US};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/activity", get(activity))
        .route("/async/dead_letters", get(dead_letters))
}

/// Query of `GET /async/activity`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ActivityParams {
    /// Minutes to cover, ending with the current one: 1 to 60 (default 60).
    #[param(minimum = 1, maximum = 60)]
    minutes: Option<u32>,
    /// Only jobs whose type matches this glob (`report.*`).
    #[serde(rename = "type")]
    job_type: Option<String>,
}

/// Query of `GET /async/dead_letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadParams {
    /// Only jobs whose type matches this glob (`report.*`).
    #[serde(rename = "type")]
    job_type: Option<String>,
}

/// The jobs that finished in one minute, by final status.
#[derive(Debug, Default, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct Minute {
    /// The minute's start (RFC 3339).
    pub at: String,
    pub SUCCESS: u64,
    pub ERROR: u64,
    pub TIMEOUT: u64,
    pub CANCELLED: u64,
}

impl Minute {
    fn add(&mut self, status: JobStatus, n: u64) {
        match status {
            JobStatus::Success => self.SUCCESS += n,
            JobStatus::Error => self.ERROR += n,
            JobStatus::Timeout => self.TIMEOUT += n,
            JobStatus::Cancelled => self.CANCELLED += n,
            _ => {}
        }
    }
}

/// `GET /async/activity`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityBody {
    /// The store's time of the read (RFC 3339): jobs that finished up to it are counted.
    pub as_of: String,
    /// The start of the first minute (RFC 3339).
    pub since: String,
    /// The newest event of the global stream when the counts were read (none: no event yet, or
    /// a caller confined to types, which cannot follow the global stream): follow the stream
    /// from it (`Last-Event-ID`) and count the finishes after `as_of`.
    pub last_event_id: Option<String>,
    /// One entry per minute, oldest first, the current (partial) minute last.
    pub minutes: Vec<Minute>,
    /// The sums over the window.
    pub totals: Minute,
}

/// `GET /async/dead_letters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersBody {
    /// Dead letters in all (of the types the caller sees and the `type` glob matches).
    pub count: u64,
    /// The same, by type (types with none are absent).
    pub by_type: BTreeMap<String, u64>,
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("bad_query", message)
}

/// A type glob of a query: 1-256 characters.
fn type_glob(glob: Option<String>) -> ApiResult<Option<String>> {
    match glob {
        Some(g) if g.is_empty() || g.chars().count() > 256 => {
            Err(bad("`type` must be a glob of 1-256 characters".into()))
        }
        Some(g) => match crate::store::Names::glob_error(&g) {
            Some(e) => Err(bad(format!("`type`: {e}"))),
            None => Ok(Some(g)),
        },
        None => Ok(None),
    }
}

fn type_matches(glob: Option<&str>, job_type: &str) -> bool {
    glob.is_none_or(|g| runyard_runners::glob_match(g, job_type))
}

/// The minutes of `a`, oldest first, with the types `keep` accepts.
fn per_minute(a: &Activity, minutes: u32, keep: impl Fn(&str) -> bool) -> Vec<Minute> {
    let mut out: Vec<Minute> = (0..Micros::from(minutes))
        .map(|i| Minute {
            at: rfc3339(a.since + i * MINUTE_US),
            ..Minute::default()
        })
        .collect();
    for f in a.finished.iter().filter(|f| keep(&f.job_type)) {
        let i = (f.minute - a.since).div_euclid(MINUTE_US);
        if let Some(m) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            m.add(f.status, f.count);
        }
    }
    out
}

#[utoipa::path(get, path = "/async/activity", tag = "operations", params(ActivityParams),
    responses(
        (status = 200, description = "Jobs finished per minute over the last hour, by final status", body = ActivityBody),
        (status = 400, description = "`bad_query`: an unknown parameter, `minutes` not 1-60, a bad `type`", body = super::openapi::schemas::ErrorBody),
    ))]
pub(crate) async fn activity(
    State(st): State<AppState>,
    Caller(grant): Caller,
    q: Result<Query<ActivityParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ActivityBody>> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let minutes = q.minutes.unwrap_or(MAX_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(bad(format!(
            "`minutes` must be between 1 and {MAX_MINUTES}"
        )));
    }
    let glob = type_glob(q.job_type)?;
    // The newest event before the counts: an event committed in between is counted by both, and
    // a client adds only finishes after `as_of`, so it is not counted twice.
    // None for a caller confined to types (channels are 403 here): it cannot follow the global
    // stream, and its newest id would tell it how many events every other type makes.
    let last_event_id = if grant.is_confined() {
        None
    } else {
        st.app.store.last_event_id().await?
    };
    let a = st.app.store.finished_per_minute(minutes).await?;
    let minutes = per_minute(&a, minutes, |t| {
        grant.sees_type(t) && type_matches(glob.as_deref(), t)
    });
    let mut totals = Minute {
        at: rfc3339(a.since),
        ..Minute::default()
    };
    for m in &minutes {
        totals.SUCCESS += m.SUCCESS;
        totals.ERROR += m.ERROR;
        totals.TIMEOUT += m.TIMEOUT;
        totals.CANCELLED += m.CANCELLED;
    }
    Ok(Json(ActivityBody {
        as_of: rfc3339(a.as_of),
        since: rfc3339(a.since),
        last_event_id,
        minutes,
        totals,
    }))
}

#[utoipa::path(get, path = "/async/dead_letters", tag = "operations", params(DeadParams),
    responses(
        (status = 200, description = "How many dead letters (ERROR with every attempt used), in all and by type", body = DeadLettersBody),
        (status = 400, description = "`bad_query`: an unknown parameter, a bad `type`", body = super::openapi::schemas::ErrorBody),
    ))]
pub(crate) async fn dead_letters(
    State(st): State<AppState>,
    Caller(grant): Caller,
    q: Result<Query<DeadParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DeadLettersBody>> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let glob = type_glob(q.job_type)?;
    let by_type: BTreeMap<String, u64> = st
        .app
        .store
        .dead_letters()
        .await?
        .into_iter()
        .filter(|(t, _)| grant.sees_type(t) && type_matches(glob.as_deref(), t))
        .collect();
    Ok(Json(DeadLettersBody {
        count: by_type.values().sum(),
        by_type,
    }))
}
