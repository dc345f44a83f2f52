//! The query of `GET /async/jobs`: its parameters, checked into the store's [`ListQuery`] (a bad
//! one is a 400 naming its field).

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::parse_job_id;
use super::jobs::parse_run_at;
use crate::job::{valid_name, JobStatus, Micros};
use crate::store::ListQuery;

/// Query of `GET /async/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    #[serde(default, deserialize_with = "super::extract::query_count")]
    pub(super) limit: Option<usize>,
    cursor: Option<String>,
    channel: Option<String>,
    schedule: Option<String>,
    runner: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    text: Option<String>,
    dead: Option<bool>,
}

/// An RFC 3339 time of a list filter, in µs; a bad one names its field.
fn filter_time(field: &str, v: Option<&str>) -> ApiResult<Option<Micros>> {
    v.map(|s| {
        parse_run_at(s).map_err(|_| {
            ApiError::bad_query(format!(
                "`{field}`: `{s}` is not an RFC 3339 time (e.g. 2026-12-01T08:00:00Z)"
            ))
        })
    })
    .transpose()
}

/// The query's filters, checked (a bad one is a 400 naming its field).
pub(super) fn list_query(q: ListParams, limit: usize) -> ApiResult<ListQuery> {
    let bad = |m: String| ApiError::bad_query(m);
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| bad(format!("`status`: {e}")))?;
    if let Some(c) = &q.channel {
        if !valid_name(c, 256) {
            return Err(bad(
                "`channel` must be 1-256 characters of ASCII letters, digits, '.', '_', '-', ':'"
                    .into(),
            ));
        }
    }
    if q.schedule
        .as_deref()
        .is_some_and(|s| s.is_empty() || s.len() > 256)
    {
        return Err(bad("`schedule` must be 1-256 bytes (UTF-8)".into()));
    }
    if q.runner
        .as_deref()
        .is_some_and(|s| s.is_empty() || s.len() > 256)
    {
        return Err(bad("`runner` must be 1-256 bytes (UTF-8)".into()));
    }
    if q.text
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > 200)
    {
        return Err(bad("`text` must be 1-200 characters".into()));
    }
    // A glob matched against every listed job's type: bounded, as `/async/activity` bounds it.
    if q.job_type
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > 256)
    {
        return Err(bad("`type` must be a glob of 1-256 characters".into()));
    }
    if let Some(e) = q
        .job_type
        .as_deref()
        .and_then(crate::store::Names::glob_error)
    {
        return Err(bad(format!("`type`: {e}")));
    }
    let created_after = filter_time("created_after", q.created_after.as_deref())?;
    let created_before = filter_time("created_before", q.created_before.as_deref())?;
    if let (Some(a), Some(b)) = (created_after, created_before) {
        if a >= b {
            return Err(bad("`created_after` must be before `created_before`".into()));
        }
    }
    let cursor = q.cursor.as_deref().map(parse_job_id).transpose()?;
    Ok(ListQuery {
        status,
        job_type: q.job_type,
        limit,
        cursor,
        channel: q.channel,
        schedule: q.schedule,
        runner: q.runner,
        created_after,
        created_before,
        text: q.text,
        dead: q.dead.unwrap_or(false),
        visible: None,
    })
}
