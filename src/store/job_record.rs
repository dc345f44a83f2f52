//! The compact form of a job record (docs/benchmarks.md "Session 8: database bytes per job"):
//! short keys, no field that reads back the same when absent (`None`s, empty lists, the usual
//! backoff, `max_attempts` 1, ...), times after `created_at` as differences from it. SQLite
//! keeps a job's [`Columns`] in its row and this record without them in `body`
//! (`sqlite/stored.rs`); Redis, with `store.records = "compact"`, keeps the record with them
//! (inline) as its `b` field (docs/redis.md). Records written before in the whole job's JSON
//! (it never has this form's required `c`) are read as they are.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::job::notify_spec::NotifySpec;
use crate::job::wait::Wait;
use crate::job::{Backoff, FileRef, Job, JobStatus, Lease, Micros, Reported, RunHandle, RunRecord};
use crate::store::{Result, StoreError};
use runyard_hooks::RunKind;

/// A stored record that does not parse (every backend's records; see [`is_corrupt`]).
pub(crate) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("corrupt record: {e}"))
}

/// Whether `e` says a stored record does not read ([`json_err`] and this module's other
/// refusals of a record).
pub(crate) fn is_corrupt(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) if m.starts_with("corrupt record"))
}

/// How long after logging a job's unreadable record at ERROR the same job's is logged at DEBUG
/// only: the rounds (claims, heartbeats, expired leases, promotion) meet such a record every
/// second or so, for as long as it is there.
const UNREADABLE_QUIET: std::time::Duration = std::time::Duration::from_secs(600);

/// Jobs remembered by [`log_unreadable`] (about 100 bytes each). Past this, those logged before
/// the quiet period are forgotten; if all are newer, a job not remembered is logged at DEBUG,
/// with one ERROR in each quiet period saying that more records than this are unreadable.
const UNREADABLE_REMEMBERED: usize = 16384;

/// What [`log_unreadable`] remembers.
#[derive(Default)]
struct UnreadableLog {
    /// When each job's record was last logged at ERROR.
    logged: std::collections::HashMap<String, std::time::Instant>,
    /// When "too many to name" was last logged.
    overflow: Option<std::time::Instant>,
}

impl UnreadableLog {
    /// Notes that job `id`'s record was met at `now`: whether to log it at ERROR, and whether
    /// to log that more than `cap` are unreadable.
    fn note(&mut self, id: &str, now: std::time::Instant, cap: usize) -> (bool, bool) {
        let quiet = |at: &std::time::Instant| now.duration_since(*at) < UNREADABLE_QUIET;
        if self.logged.get(id).is_some_and(quiet) {
            return (false, false);
        }
        if self.logged.len() >= cap && !self.logged.contains_key(id) {
            self.logged.retain(|_, at| quiet(at));
        }
        if self.logged.len() < cap || self.logged.contains_key(id) {
            self.logged.insert(id.to_owned(), now);
            (true, false)
        } else if self.overflow.as_ref().is_some_and(quiet) {
            (false, false)
        } else {
            self.overflow = Some(now);
            (false, true)
        }
    }
}

/// Logs that this build cannot read job `id`'s record, met by `what` (a round, a listing): at
/// ERROR the first time, and again once [`UNREADABLE_QUIET`] has passed; at DEBUG in between.
/// Returns whether it logged this job at ERROR.
pub(crate) fn log_unreadable(id: &str, what: &str, error: &dyn std::fmt::Display) -> bool {
    use std::sync::{Mutex, OnceLock};
    static LOG: OnceLock<Mutex<UnreadableLog>> = OnceLock::new();
    let (loud, overflow) = LOG
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(id, std::time::Instant::now(), UNREADABLE_REMEMBERED);
    if loud {
        tracing::error!(job_id = %id, error = %error, met_by = what,
            "unreadable job record left out (logged again in 10 minutes if still there)");
    } else {
        tracing::debug!(job_id = %id, error = %error, met_by = what, "unreadable job record left out");
    }
    if overflow {
        tracing::error!(
            remembered = UNREADABLE_REMEMBERED,
            "more unreadable job records than can be named every 10 minutes: the others are logged at DEBUG"
        );
    }
    loud
}

/// The fields of a job SQLite keeps in its row's columns, beside the compact body; an inline
/// record holds them itself.
pub(crate) struct Columns {
    pub(crate) id: Uuid,
    pub(crate) job_type: String,
    pub(crate) runner: String,
    pub(crate) status: JobStatus,
    pub(crate) channel: String,
    pub(crate) run_at: Option<Micros>,
    pub(crate) idem_key: Option<String>,
    pub(crate) queued_at: Micros,
    pub(crate) finished_at: Option<Micros>,
}

/// The job of a record stored beside its columns: the compact form with `cols()`, or the whole
/// job's JSON written before, as it is (the columns are not read then).
pub(crate) fn read_with(body: &str, cols: impl FnOnce() -> Result<Columns>) -> Result<Job> {
    match serde_json::from_str::<StoredJob<'static>>(body) {
        Ok(s) => s.into_job(cols()?),
        // The whole job's JSON (it has no `c`, which a compact record always has).
        Err(_) => serde_json::from_str::<Job>(body).map_err(json_err),
    }
}

/// The job of a record that holds all of it: the inline compact form (it begins with its `i`),
/// or the whole job's JSON (it begins with its `id`).
pub(crate) fn read_inline(body: &str) -> Result<Job> {
    if body.starts_with(r#"{"i":"#) {
        let mut s: StoredJob<'static> = serde_json::from_str(body).map_err(json_err)?;
        let cols = s.inline_columns()?;
        s.into_job(cols)
    } else {
        serde_json::from_str::<Job>(body).map_err(json_err)
    }
}

/// The backoff a body leaves out: the default of the job model when this form was made (a
/// constant here, so a later change of that default does not change what stored jobs read as).
const USUAL_BACKOFF: Backoff = Backoff {
    initial_ms: 1000,
    max_ms: 300_000,
    multiplier: 2.0,
    jitter: true,
};

/// A job's `body`: what its columns do not hold. Unknown keys are ignored, as the job's JSON
/// ignores them (a later build's new field does not make a record unreadable); the whole job's
/// JSON never reads as this form all the same: it has none of these keys, and `c` is required.
/// Every time but `created_at` (`c`), `progress_event_at`, `progress_due` and `fire_time` (these kept as
/// they are) is stored as its difference from `created_at` (wrapping, so any value reads back).
#[derive(Serialize, Deserialize)]
struct StoredJob<'a> {
    /// The fields SQLite keeps in the row's columns ([`Columns`]), in the body itself in the
    /// inline form (Redis, `store.records = "compact"`); never in SQLite's bodies. Times from
    /// `created_at`, as the others.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(rename = "ty", default, skip_serializing_if = "Option::is_none")]
    job_type: Option<Cow<'a, str>>,
    #[serde(rename = "ru", default, skip_serializing_if = "Option::is_none")]
    runner: Option<Cow<'a, str>>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    status: Option<JobStatus>,
    /// Absent in an inline record: the job's own channel (its id), the usual one.
    #[serde(rename = "ch", default, skip_serializing_if = "Option::is_none")]
    channel: Option<Cow<'a, str>>,
    #[serde(rename = "ra", default, skip_serializing_if = "Option::is_none")]
    run_at: Option<Micros>,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    idem_key: Option<Cow<'a, str>>,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    queued_at: Option<Micros>,
    #[serde(rename = "fi", default, skip_serializing_if = "Option::is_none")]
    finished_at: Option<Micros>,
    #[serde(
        rename = "a",
        default = "empty_args",
        skip_serializing_if = "is_empty_object"
    )]
    args: Cow<'a, Value>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    user_id: Option<Cow<'a, str>>,
    #[serde(rename = "n", default, skip_serializing_if = "is_zero_u32")]
    attempt: u32,
    #[serde(rename = "m", default = "one", skip_serializing_if = "is_one")]
    max_attempts: u32,
    #[serde(
        rename = "b",
        default = "usual_backoff",
        skip_serializing_if = "is_usual_backoff"
    )]
    backoff: Backoff,
    #[serde(rename = "to", default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(rename = "sh", default, skip_serializing_if = "Option::is_none")]
    submit_hash: Option<Cow<'a, str>>,
    #[serde(rename = "g", default, skip_serializing_if = "is_plus_zero")]
    progress: f64,
    #[serde(rename = "sd", default, skip_serializing_if = "Option::is_none")]
    status_details: Option<Cow<'a, Value>>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    result: Option<Cow<'a, Value>>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    lease: Option<StoredLease<'a>>,
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    handle: Option<StoredHandle<'a>>,
    #[serde(rename = "f", default, skip_serializing_if = "is_empty_map")]
    files: Cow<'a, BTreeMap<String, Vec<FileRef>>>,
    #[serde(rename = "rs", default, skip_serializing_if = "Vec::is_empty")]
    runs: Vec<StoredRun<'a>>,
    #[serde(rename = "c")]
    created_at: Micros,
    #[serde(rename = "up", default, skip_serializing_if = "is_zero_i64")]
    updated_at: Micros,
    #[serde(rename = "st", default, skip_serializing_if = "Option::is_none")]
    started_at: Option<Micros>,
    #[serde(rename = "pe", default, skip_serializing_if = "is_zero_i64")]
    progress_event_at: Micros,
    #[serde(rename = "pd", default, skip_serializing_if = "Option::is_none")]
    progress_due: Option<Micros>,
    #[serde(rename = "v", default, skip_serializing_if = "is_zero_u64")]
    version: u64,
    #[serde(rename = "sc", default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Cow<'a, str>>,
    #[serde(rename = "ft", default, skip_serializing_if = "Option::is_none")]
    fire_time: Option<Micros>,
    /// The schedule's creation time (kept as it is, as `fire_time`).
    #[serde(rename = "sg", default, skip_serializing_if = "Option::is_none")]
    schedule_gen: Option<Micros>,
    #[serde(rename = "em", default, skip_serializing_if = "is_empty_slice")]
    emits: Cow<'a, [String]>,
    #[serde(rename = "no", default, skip_serializing_if = "Option::is_none")]
    notify: Option<Cow<'a, NotifySpec>>,
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    wait: Option<Cow<'a, Wait>>,
}

/// A [`Lease`] in a stored job (`x`: its end, from `created_at`); its worker and token (`w`,
/// `k`) are left out when they are the last run's (a claim writes both).
#[derive(Serialize, Deserialize)]
struct StoredLease<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<u64>,
    x: Micros,
}

/// A [`RunHandle`] in a stored job: `i` absent when the handle's id is the job's (a service
/// job's), `d` absent when `null`.
#[derive(Serialize, Deserialize)]
struct StoredHandle<'a> {
    k: Cow<'a, RunKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_null")]
    d: Cow<'a, Value>,
}

fn is_null(v: &Value) -> bool {
    v.is_null()
}

/// A [`RunRecord`] in a stored job (times from the job's `created_at`).
#[derive(Serialize, Deserialize)]
struct StoredRun<'a> {
    a: u32,
    w: Cow<'a, str>,
    k: u64,
    c: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<Cow<'a, Reported>>,
    /// `time_limit` (a field of its own: builds before it read the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<Cow<'a, str>>,
    /// `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Cow<'a, str>>,
}

fn empty_args() -> Cow<'static, Value> {
    Cow::Owned(Value::Object(Default::default()))
}
fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.is_empty())
}
fn one() -> u32 {
    1
}
fn is_one(v: &u32) -> bool {
    *v == 1
}
/// `0.0` exactly (a `-0.0` is kept as it is).
pub(super) fn is_plus_zero(v: &f64) -> bool {
    v.to_bits() == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn usual_backoff() -> Backoff {
    USUAL_BACKOFF
}
fn is_usual_backoff(b: &Backoff) -> bool {
    *b == USUAL_BACKOFF
}
fn is_empty_map(m: &BTreeMap<String, Vec<FileRef>>) -> bool {
    m.is_empty()
}
fn is_empty_slice(v: &[String]) -> bool {
    v.is_empty()
}

/// `t` as stored: from `base`.
fn rel(t: Micros, base: Micros) -> Micros {
    t.wrapping_sub(base)
}

/// `t` as read back.
fn abs(t: Micros, base: Micros) -> Micros {
    t.wrapping_add(base)
}

/// A lease as stored ([`StoredLease`]).
fn stored_lease<'a>(l: &'a Lease, runs: &[RunRecord], base: Micros) -> StoredLease<'a> {
    let of_last_run = runs
        .last()
        .is_some_and(|r| r.worker == l.worker && r.token == l.token);
    StoredLease {
        w: (!of_last_run).then_some(Cow::Borrowed(&l.worker)),
        k: (!of_last_run).then_some(l.token),
        x: rel(l.expires_at, base),
    }
}

/// A handle as stored ([`StoredHandle`]) for the job `id`.
fn stored_handle<'a>(h: &'a RunHandle, id: &str) -> StoredHandle<'a> {
    StoredHandle {
        k: Cow::Borrowed(&h.kind),
        i: (h.id != id).then_some(Cow::Borrowed(&h.id)),
        d: Cow::Borrowed(&h.data),
    }
}

/// A run record as stored ([`StoredRun`]).
fn stored_run(r: &RunRecord, base: Micros) -> StoredRun<'_> {
    StoredRun {
        a: r.attempt,
        w: Cow::Borrowed(&r.worker),
        k: r.token,
        c: rel(r.claimed_at, base),
        s: r.started_at.map(|t| rel(t, base)),
        e: r.ended_at.map(|t| rel(t, base)),
        o: r.outcome.as_deref().map(Cow::Borrowed),
        r: r.reported.as_ref().map(Cow::Borrowed),
        t: r.time_limit.as_deref().map(Cow::Borrowed),
        m: r.error.as_deref().map(Cow::Borrowed),
    }
}

/// The job's compact record: without its [`Columns`] (SQLite's `jobs.body`, the columns written
/// beside it: see `save` and `submit_in`), or with them, `inline` (Redis's `b` with
/// `store.records = "compact"`: the record is the whole job).
pub(crate) fn compact(job: &Job, inline: bool) -> Result<String> {
    let mut buf = Uuid::encode_buffer();
    let id: &str = job.id.hyphenated().encode_lower(&mut buf);
    serde_json::to_string(&stored_job(job, inline, id)).map_err(json_err)
}

/// A column's text in an inline record (`inline`); none otherwise (SQLite has it in its row).
fn column(inline: bool, s: &str) -> Option<Cow<'_, str>> {
    inline.then_some(Cow::Borrowed(s))
}

/// [`compact`]'s record of `job` (`id` its id's text). Every field is named: a field added to
/// `Job` does not compile here until it is stored.
fn stored_job<'a>(job: &'a Job, inline: bool, id: &str) -> StoredJob<'a> {
    let Job {
        id: _,
        job_type,
        runner,
        status,
        channel_id,
        run_at,
        idempotency_key,
        queued_at,
        finished_at,
        args,
        user_id,
        attempt,
        max_attempts,
        backoff,
        timeout_ms,
        submit_hash,
        progress,
        status_details,
        result,
        error,
        exit_code,
        lease,
        handle,
        files,
        runs,
        created_at,
        updated_at,
        started_at,
        progress_event_at,
        progress_due,
        version,
        schedule,
        fire_time,
        schedule_gen,
        emits,
        notify,
        wait,
    } = job;
    let base = *created_at;
    let on = |t: Micros| inline.then_some(rel(t, base));
    StoredJob {
        id: inline.then_some(job.id),
        job_type: column(inline, job_type),
        runner: column(inline, runner),
        status: inline.then_some(*status),
        channel: column(inline, channel_id).filter(|_| channel_id != id),
        run_at: run_at.and_then(on),
        idem_key: idempotency_key.as_deref().and_then(|k| column(inline, k)),
        queued_at: on(*queued_at),
        finished_at: finished_at.and_then(on),
        args: Cow::Borrowed(args),
        user_id: user_id.as_deref().map(Cow::Borrowed),
        attempt: *attempt,
        max_attempts: *max_attempts,
        backoff: *backoff,
        timeout_ms: *timeout_ms,
        submit_hash: submit_hash.as_deref().map(Cow::Borrowed),
        progress: *progress,
        status_details: status_details.as_ref().map(Cow::Borrowed),
        result: result.as_ref().map(Cow::Borrowed),
        error: error.as_deref().map(Cow::Borrowed),
        exit_code: *exit_code,
        lease: lease.as_ref().map(|l| stored_lease(l, runs, base)),
        handle: handle.as_ref().map(|h| stored_handle(h, id)),
        files: Cow::Borrowed(files),
        runs: runs.iter().map(|r| stored_run(r, base)).collect(),
        created_at: base,
        updated_at: rel(*updated_at, base),
        started_at: started_at.map(|t| rel(t, base)),
        progress_event_at: *progress_event_at,
        progress_due: *progress_due,
        version: *version,
        schedule: schedule.as_deref().map(Cow::Borrowed),
        fire_time: *fire_time,
        schedule_gen: *schedule_gen,
        emits: Cow::Borrowed(emits),
        notify: notify.as_ref().map(Cow::Borrowed),
        wait: wait.as_ref().map(Cow::Borrowed),
    }
}

impl StoredJob<'static> {
    /// The columns an inline record holds; an error when one it must hold is absent.
    fn inline_columns(&mut self) -> Result<Columns> {
        let base = self.created_at;
        let missing = |f: &str| StoreError::Backend(format!("corrupt record: no `{f}`"));
        let id = self.id.ok_or_else(|| missing("i"))?;
        Ok(Columns {
            id,
            job_type: self.job_type.take().ok_or_else(|| missing("ty"))?.into(),
            runner: self.runner.take().ok_or_else(|| missing("ru"))?.into(),
            status: self.status.ok_or_else(|| missing("s"))?,
            channel: self
                .channel
                .take()
                .map_or_else(|| id.to_string(), Cow::into_owned),
            run_at: self.run_at.map(|t| abs(t, base)),
            idem_key: self.idem_key.take().map(Cow::into_owned),
            queued_at: abs(self.queued_at.ok_or_else(|| missing("q"))?, base),
            finished_at: self.finished_at.map(|t| abs(t, base)),
        })
    }

    fn into_job(self, row: Columns) -> Result<Job> {
        let (id, status) = (row.id, row.status);
        let base = self.created_at;
        let lease = match self.lease {
            None => None,
            Some(l) => {
                let (worker, token) = match (l.w, l.k, self.runs.last()) {
                    (Some(w), Some(k), _) => (w.into_owned(), k),
                    (None, None, Some(r)) => (r.w.to_string(), r.k),
                    _ => {
                        return Err(StoreError::Backend(
                            "corrupt record: a lease without its worker".into(),
                        ))
                    }
                };
                Some(Lease {
                    worker,
                    token,
                    expires_at: abs(l.x, base),
                })
            }
        };
        Ok(Job {
            id,
            job_type: row.job_type,
            runner: row.runner,
            status,
            channel_id: row.channel,
            run_at: row.run_at,
            idempotency_key: row.idem_key,
            queued_at: row.queued_at,
            finished_at: row.finished_at,
            args: self.args.into_owned(),
            user_id: self.user_id.map(Cow::into_owned),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            submit_hash: self.submit_hash.map(Cow::into_owned),
            progress: self.progress,
            status_details: self.status_details.map(Cow::into_owned),
            result: self.result.map(Cow::into_owned),
            error: self.error.map(Cow::into_owned),
            exit_code: self.exit_code,
            lease,
            handle: self.handle.map(|h| RunHandle {
                kind: h.k.into_owned(),
                id: h.i.map_or_else(|| id.to_string(), Cow::into_owned),
                data: h.d.into_owned(),
            }),
            files: self.files.into_owned(),
            runs: self
                .runs
                .into_iter()
                .map(|r| RunRecord {
                    attempt: r.a,
                    worker: r.w.into_owned(),
                    token: r.k,
                    claimed_at: abs(r.c, base),
                    started_at: r.s.map(|t| abs(t, base)),
                    ended_at: r.e.map(|t| abs(t, base)),
                    outcome: r.o.map(Cow::into_owned),
                    reported: r.r.map(Cow::into_owned),
                    time_limit: r.t.map(Cow::into_owned),
                    error: r.m.map(Cow::into_owned),
                })
                .collect(),
            created_at: base,
            updated_at: abs(self.updated_at, base),
            started_at: self.started_at.map(|t| abs(t, base)),
            progress_event_at: self.progress_event_at,
            progress_due: self.progress_due,
            version: self.version,
            schedule: self.schedule.map(Cow::into_owned),
            fire_time: self.fire_time,
            schedule_gen: self.schedule_gen,
            emits: self.emits.into_owned(),
            notify: self.notify.map(Cow::into_owned),
            wait: self.wait.map(Cow::into_owned),
        })
    }
}

/// Jobs for the tests of both forms (here and `sqlite/stored.rs`).
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::job::Job;

    /// A finished job as a no-op leaves it, with a result.
    pub(crate) fn job() -> Job {
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "id": "01a22ef1-ceed-70a5-8d2b-aef7865abd2f", "type": "t.x", "args": {"a": null},
            "runner": "r", "status": "SUCCESS", "channel_id": "ch", "user_id": null,
            "attempt": 1, "max_attempts": 1,
            "backoff": {"initial_ms": 1000, "max_ms": 300000, "multiplier": 2.0, "jitter": true},
            "timeout_ms": null, "run_at": null, "idempotency_key": null, "progress": 1.0,
            "status_details": null, "result": null, "error": null, "exit_code": null,
            "lease": null, "handle": null, "files": {},
            "runs": [{"attempt": 1, "worker": "w", "token": 1, "claimed_at": 5,
                      "started_at": null, "ended_at": null, "outcome": null}],
            "created_at": 1, "updated_at": 2, "queued_at": 1, "started_at": null,
            "finished_at": null, "progress_event_at": 0, "version": 3
        }))
        .unwrap();
        j.result = Some(serde_json::json!({"k": [1, null]}));
        j
    }

    /// A job with every field away from its usual value.
    pub(crate) fn everything() -> Job {
        serde_json::from_str(
            r#"{
            "id": "01a22ef1-ceed-70a5-8d2b-aef7865abd2f", "type": "t.x", "args": [1, {"b": null}],
            "runner": "r", "status": "RUNNING", "channel_id": "ch", "user_id": "u",
            "attempt": 3, "max_attempts": 5,
            "backoff": {"initial_ms": 10, "max_ms": 20, "multiplier": 1.5, "jitter": false},
            "timeout_ms": 9000, "run_at": 77, "idempotency_key": "k", "submit_hash": "abc",
            "progress": -0.0, "status_details": {"d": 1}, "result": null, "error": "e",
            "exit_code": -2, "lease": {"worker": "w", "token": 41, "expires_at": 1000000},
            "handle": {"kind": "local", "id": "123", "data": {"start": 5}},
            "files": {"inputs": [{"hash": "h", "size": 3, "mimetype": "text/plain",
                                  "name": "a.txt", "metadata": {"m": true}}]},
            "runs": [{"attempt": 1, "worker": "w0", "token": 7, "claimed_at": 10,
                      "started_at": 11, "ended_at": 12, "outcome": "TIMEOUT",
                      "time_limit": "timed out after 1s"},
                     {"attempt": 3, "worker": "w", "token": 41, "claimed_at": -9223372036854775808,
                      "started_at": 9223372036854775807, "ended_at": null, "outcome": null,
                      "reported": {"status": "ERROR", "message": "m", "retry": false}}],
            "created_at": 1764583000000000, "updated_at": -5, "queued_at": 3,
            "started_at": 1764583000000123, "finished_at": 99,
            "progress_event_at": 8, "version": 12, "schedule": "nightly", "fire_time": 6,
            "schedule_gen": 1764582000000000, "emits": ["s1", "s2"],
            "notify": {"url": "https://example.com/h", "events": ["status"]},
            "wait": {"items": [{"key": "s", "needed": 2, "since": 4, "seen": 1,
                                "signal_ids": [3]}],
                     "deadline": 50, "on_deadline": "skip", "released_by": "deadline",
                     "released_at": 51}
        }"#,
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unreadable_record_is_logged_loudly_once_per_quiet_period() {
        let id = Uuid::now_v7().to_string();
        let other = Uuid::now_v7().to_string();
        assert!(super::log_unreadable(&id, "a claim", &"bad"));
        assert!(
            !super::log_unreadable(&id, "the reaper", &"bad"),
            "quiet the second time"
        );
        assert!(
            super::log_unreadable(&other, "a claim", &"bad"),
            "another job is its own"
        );
    }

    #[test]
    fn past_the_cap_unreadable_records_are_summed_up_once_per_quiet_period() {
        use std::time::{Duration, Instant};
        let mut log = super::UnreadableLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note("a", t0, 2), (true, false));
        assert_eq!(log.note("b", t0, 2), (true, false));
        // Full of jobs logged within the quiet period: no one named, one summary.
        assert_eq!(log.note("c", t0, 2), (false, true));
        assert_eq!(log.note("d", t0, 2), (false, false));
        assert_eq!(log.note("a", t0, 2), (false, false), "a is still quiet");
        // Once the period has passed, the old ones make room.
        let later = t0 + super::UNREADABLE_QUIET + Duration::from_secs(1);
        assert_eq!(log.note("c", later, 2), (true, false));
        assert_eq!(log.logged.len(), 1);
    }

    use super::fixtures::{everything, job};
    use super::*;

    /// The jobs of the tests: usual, with every field away from its usual value, a lease that is
    /// not its last run's, as submitted.
    fn jobs() -> Vec<Job> {
        let mut other_lease = everything();
        other_lease.lease.as_mut().unwrap().token = 40;
        let mut unset = everything();
        (unset.run_at, unset.idempotency_key, unset.finished_at) = (None, None, None);
        vec![
            job(),
            everything(),
            other_lease,
            unset,
            Job::new("t", "r", 5),
        ]
    }

    #[test]
    fn an_inline_record_reads_back_the_same_job() {
        for j in jobs() {
            let body = compact(&j, true).unwrap();
            let got = read_inline(&body).unwrap();
            assert_eq!(got, j, "{body}");
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&j).unwrap()
            );
            assert!(got.progress.to_bits() == j.progress.to_bits(), "{body}");
        }
        let j = Job::new("t", "r", 1_764_583_000_000_000);
        assert_eq!(
            compact(&j, true).unwrap(),
            format!(
                r#"{{"i":"{}","ty":"t","ru":"r","s":"QUEUED","q":0,"c":1764583000000000}}"#,
                j.id
            )
        );
    }

    /// An attempt out of time (`time_limit`) is stored so that a build before the mark reads it:
    /// its runs' `reported` still holds only SUCCESS or ERROR, in both record forms.
    #[test]
    fn a_time_limit_leaves_the_record_readable_by_older_builds() {
        #[derive(serde::Deserialize)]
        #[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
        #[allow(dead_code)]
        enum OldReported {
            Success,
            Error { message: String, retry: bool },
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct OldRun {
            #[serde(default, alias = "r")]
            reported: Option<OldReported>,
        }
        let mut j = everything();
        j.runs[1].reported = None;
        j.runs[1].time_limit = Some("timed out after 1s".into());
        assert_eq!(
            j.reported(),
            Some(Reported::Timeout {
                message: "timed out after 1s".into()
            })
        );
        for text in [
            serde_json::to_string(&j).unwrap(),
            compact(&j, true).unwrap(),
        ] {
            let v: Value = serde_json::from_str(&text).unwrap();
            let runs = v.get("runs").or_else(|| v.get("rs")).expect("runs");
            let old: Vec<OldRun> = serde_json::from_value(runs.clone()).expect(&text);
            assert_eq!(old.len(), 2);
            assert!(text.contains("timed out after 1s"), "{text}");
        }
        assert_eq!(read_inline(&compact(&j, true).unwrap()).unwrap(), j);
    }

    /// The job's JSON, as every build writes with `store.records = "json"` and wrote before
    /// the compact form, reads as it is.
    #[test]
    fn the_jobs_json_reads_as_it_is() {
        for j in jobs() {
            assert_eq!(read_inline(&serde_json::to_string(&j).unwrap()).unwrap(), j);
        }
        assert!(read_inline(r#"{"broken"#).is_err());
    }

    /// A record without a field the inline form must hold is an error, not a job with a made-up
    /// value (but `ch`: absent, the job's own channel); SQLite's form (no inline fields) is not
    /// read as inline.
    #[test]
    fn an_inline_record_without_its_columns_is_an_error() {
        let j = job();
        let full: serde_json::Map<String, Value> =
            serde_json::from_str(&compact(&j, true).unwrap()).unwrap();
        for key in ["ty", "ru", "s", "q"] {
            let mut m = full.clone();
            m.remove(key);
            m.remove("i");
            // `i` first, as written (the map sorts its keys).
            let rest = Value::Object(m).to_string();
            let e = read_inline(&format!(r#"{{"i":"{}",{}"#, j.id, &rest[1..])).unwrap_err();
            assert!(e.to_string().contains(&format!("`{key}`")), "{key}: {e}");
        }
        // Without its `i` first it is not an inline record, nor the job's JSON.
        let mut m = full.clone();
        m.remove("i");
        assert!(read_inline(&Value::Object(m).to_string()).is_err());
        assert!(read_inline(&compact(&j, false).unwrap()).is_err());
        // A broken inline record says what is wrong with it, not what the job's JSON lacks.
        let e = read_inline(r#"{"i":"x","c":1}"#).unwrap_err().to_string();
        assert!(e.contains("UUID") || e.contains("uuid"), "{e}");
    }

    /// A key a later build adds is ignored, as the job's JSON ignores one: the record still reads.
    #[test]
    fn a_record_with_a_key_this_build_does_not_know_reads() {
        for j in jobs() {
            let inline = compact(&j, true).unwrap();
            let with = format!(r#"{},"zz":[1,{{"a":2}}]}}"#, &inline[..inline.len() - 1]);
            assert_eq!(read_inline(&with).unwrap(), j, "{with}");
            let body = compact(&j, false).unwrap();
            let with = format!(r#"{{"zz":1,{}"#, &body[1..]);
            let got = read_with(&with, || {
                Ok(Columns {
                    id: j.id,
                    job_type: j.job_type.clone(),
                    runner: j.runner.clone(),
                    status: j.status,
                    channel: j.channel_id.clone(),
                    run_at: j.run_at,
                    idem_key: j.idempotency_key.clone(),
                    queued_at: j.queued_at,
                    finished_at: j.finished_at,
                })
            });
            assert_eq!(got.unwrap(), j, "{with}");
        }
    }

    /// A finished no-op job's record is less than a third of its JSON.
    #[test]
    fn a_finished_jobs_inline_record_is_under_a_third_of_its_json() {
        let mut j = Job::new("bench.noop", "service", 1_764_583_000_000_000);
        let t = j.created_at;
        j.status = JobStatus::Success;
        j.attempt = 1;
        j.progress = 1.0;
        j.handle = Some(RunHandle {
            kind: RunKind::Service,
            id: j.id.to_string(),
            data: Value::Null,
        });
        j.runs.push(RunRecord {
            attempt: 1,
            worker: "local-18567-f6b66133".into(),
            token: 250,
            claimed_at: t + 2071,
            started_at: Some(t + 3554),
            ended_at: Some(t + 3559),
            outcome: Some("SUCCESS".into()),
            reported: None,
            time_limit: None,
            error: None,
        });
        (j.started_at, j.finished_at, j.updated_at) = (Some(t + 3554), Some(t + 3559), t + 3559);
        j.version = 3;
        let full = serde_json::to_string(&j).unwrap();
        let body = compact(&j, true).unwrap();
        assert_eq!(read_inline(&body).unwrap(), j);
        assert!(
            body.len() * 3 < full.len(),
            "{} against {}: {body}",
            body.len(),
            full.len()
        );
    }
}
