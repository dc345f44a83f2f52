//! The query of `GET /async/jobs`: its parameters, checked into the store's [`ListQuery`] (a bad
//! one is a 400 naming its field), and the members of each job the answer shows ([`Fields`]).

use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::parse_job_id;
use super::jobs::parse_run_at;
use crate::job::{valid_name, Job, JobStatus, Micros};
use crate::store::ListQuery;

/// Query of `GET /async/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    /// Jobs in a page: 1 to `api.max_page` (1,000 unless configured; the document served says
    /// the server's own); 100 when left out.
    #[serde(default, deserialize_with = "super::extract::query_count")]
    #[param(minimum = 1, maximum = 1000)]
    pub(super) limit: Option<usize>,
    cursor: Option<String>,
    channel: Option<String>,
    schedule: Option<String>,
    runner: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    text: Option<String>,
    dead: Option<bool>,
    /// Only these members of each job, comma-separated (`fields=id,type,status`): names of the
    /// job object's top-level members (id, type, status, args, runner, channel_id, user_id,
    /// attempt, max_attempts, timeout_ms, progress, status_details, result, error, exit_code,
    /// idempotency_key, worker, handle, runs, files, run_at, created_at, updated_at, started_at,
    /// finished_at, result_url, emits, notify, wait, schedule, fire_time, render_error). `id`
    /// always comes, and `render_error` whenever the job has one; an optional member the job
    /// lacks (`emits`, `wait`, `schedule`, `fire_time`) stays absent (`notify` is null). The
    /// page's 4 MiB are counted on these jobs. An empty, unknown or repeated name is
    /// `400 bad_query`.
    pub(super) fields: Option<String>,
}

/// The members of a job as the API shows it (`Job::to_public`) that `fields` may name.
pub const JOB_FIELDS: &[&str] = &[
    "id",
    "type",
    "status",
    "args",
    "runner",
    "channel_id",
    "user_id",
    "attempt",
    "max_attempts",
    "timeout_ms",
    "progress",
    "status_details",
    "result",
    "error",
    "exit_code",
    "idempotency_key",
    "worker",
    "handle",
    "runs",
    "files",
    "run_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "result_url",
    "emits",
    "notify",
    "wait",
    "schedule",
    "fire_time",
    "render_error",
];

/// The members of each job a listing shows (`fields`): those named, `id` always, and
/// `render_error` whenever a job has one (it says a time shown is not the stored one).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields(Vec<&'static str>);

impl Fields {
    /// `fields` checked: `None` when not given (whole jobs); a name that is empty, not in
    /// [`JOB_FIELDS`] or given twice is a 400 naming it.
    pub fn parse(fields: Option<&str>) -> ApiResult<Option<Self>> {
        let Some(text) = fields else { return Ok(None) };
        let mut names: Vec<&'static str> = Vec::new();
        for name in text.split(',') {
            let Some(known) = JOB_FIELDS.iter().copied().find(|f| *f == name) else {
                let what = if name.is_empty() {
                    "an empty name (names are separated by single commas)".to_string()
                } else {
                    let mut shown: String = name.chars().take(64).collect();
                    if shown.len() < name.len() {
                        shown.push('…');
                    }
                    format!("`{}` is not a member of a job", shown.escape_debug())
                };
                return Err(ApiError::bad_query(format!(
                    "`fields`: {what}; the names are {}",
                    JOB_FIELDS.join(", ")
                )));
            };
            if names.contains(&known) {
                return Err(ApiError::bad_query(format!(
                    "`fields`: `{known}` is named twice"
                )));
            }
            names.push(known);
        }
        Ok(Some(Self(names)))
    }

    /// `job` as `Job::to_public` shows it with only the members asked for (`id` always,
    /// `render_error` when it has one); the others are not built.
    pub fn pick(&self, job: &Job) -> Value {
        job.to_public_only(|name| self.0.contains(&name))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::notify_spec::NotifySpec;

    /// A job with every optional member `to_public` may show, and a time it cannot.
    fn full_job() -> Job {
        let mut j = Job::new("report.daily", "reports", 1_796_000_000_000_000);
        j.emits = vec!["done".into()];
        j.notify = Some(NotifySpec {
            url: "https://hooks.example/runyard".into(),
            events: vec![],
        });
        j.wait = Some(serde_json::from_value(serde_json::json!({"items": []})).unwrap());
        j.schedule = Some("nightly".into());
        j.fire_time = Some(1_796_000_000_000_000);
        j.finished_at = Some(i64::MAX);
        j
    }

    #[test]
    fn the_names_are_exactly_the_members_a_job_can_show() {
        let shown = full_job().to_public();
        let mut members: Vec<&str> = shown
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut names = JOB_FIELDS.to_vec();
        members.sort_unstable();
        names.sort_unstable();
        assert_eq!(members, names);
    }

    #[test]
    fn fields_pick_the_members_named_with_the_id_and_a_render_error() {
        let job = full_job();
        let f = Fields::parse(Some("type,status,wait")).unwrap().unwrap();
        let lean = f.pick(&job);
        let mut keys: Vec<&str> = lean
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "render_error", "status", "type", "wait"]);
        assert_eq!(lean["type"], "report.daily");
        // An optional member the job lacks stays absent.
        let plain = Job::new("t", "r", 1_796_000_000_000_000);
        let lean = Fields::parse(Some("schedule,emits"))
            .unwrap()
            .unwrap()
            .pick(&plain);
        assert_eq!(lean, serde_json::json!({"id": plain.id}));
        // But `notify` is there, null, as in the whole job.
        let lean = Fields::parse(Some("notify")).unwrap().unwrap().pick(&plain);
        assert_eq!(lean, serde_json::json!({"id": plain.id, "notify": null}));
        assert_eq!(Fields::parse(None).unwrap(), None);
    }

    /// A lean job is the whole one (`to_public`) with the other members removed, for each name
    /// alone and for all of them; a bad time of a member not shown still gives `render_error`.
    #[test]
    fn a_lean_job_is_the_whole_job_cut_down() {
        let mut job = full_job();
        job.args = serde_json::json!({"big": "a".repeat(1000)});
        job.result = Some(serde_json::json!({"r": 1}));
        job.runs.push(
            serde_json::from_value(serde_json::json!({
                "attempt": 1, "worker": "w1", "token": 1, "claimed_at": i64::MAX, "error": "boom"
            }))
            .unwrap(),
        );
        let whole = job.to_public();
        let all = JOB_FIELDS.join(",");
        let lists: Vec<&str> = JOB_FIELDS.iter().copied().chain([all.as_str()]).collect();
        for list in lists {
            let f = Fields::parse(Some(list)).unwrap().unwrap();
            let mut cut = whole.clone();
            let names: Vec<&str> = list.split(',').collect();
            cut.as_object_mut()
                .unwrap()
                .retain(|k, _| k == "id" || k == "render_error" || names.contains(&k.as_str()));
            assert_eq!(f.pick(&job), cut, "{list}");
        }
        let lean = Fields::parse(Some("type")).unwrap().unwrap().pick(&job);
        let said = lean["render_error"].as_str().unwrap();
        assert!(
            said.contains("runs.claimed_at") && said.contains("finished_at"),
            "{said}"
        );
    }

    #[test]
    fn an_empty_unknown_or_repeated_name_is_refused_naming_it() {
        let refused = |q: &str| {
            let e = Fields::parse(Some(q)).unwrap_err();
            assert_eq!(e.code, "bad_query");
            e.message
        };
        let m = refused("id,bogus");
        assert!(
            m.contains("`bogus` is not a member") && m.contains("max_attempts"),
            "{m}"
        );
        assert!(refused("").contains("an empty name"));
        assert!(refused("id,,type").contains("an empty name"));
        assert!(refused("type,").contains("an empty name"));
        assert!(refused("type,status,type").contains("`type` is named twice"));
        assert!(refused(" type").contains("` type` is not a member"));
        let long = refused(&"\u{202e}x".repeat(1000));
        assert!(long.contains("\\u{202e}x") && long.len() < 1000, "{long}");
    }
}
