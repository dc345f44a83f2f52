//! The forms jobs and events take in the database, kept small (docs/benchmarks.md "Writes per
//! job" and "Session 8: database bytes per job"): every write of a job rewrites its whole row,
//! and every change appends an event, so each byte here is paid several times per job.
//!
//! - A job is its row's columns (`id`, `type`, `runner`, `status`, `channel`, `run_at`,
//!   `idem_key`, `queued_at`, `finished_at`) and a `body` with the rest ([`StoredJob`]): short
//!   keys, no field that reads back the same when absent (`None`s, empty lists, the usual
//!   backoff, `max_attempts` 1, ...), times after `created_at` as differences from it. Every
//!   reader of a job selects [`JOB_COLUMNS`] and reads them with [`JobRow`]: a query that read
//!   `body` alone would miss those fields. `type`, `runner`, `channel` and `idem_key` are written
//!   at submit only (no command changes them); `save` writes the others at every change. Bodies
//!   written before (the job's whole JSON, which always has `id`) are still read, as they are.
//! - An event body keeps only what cannot be derived: the row id is the event id, the `channel`
//!   column its channel, the job id is the channel's unless given, the Superset word and the
//!   result URL follow from the status and the job id, the time is µs (`m`) when its text is
//!   what the µs read as. Bodies written before (the full event JSON; `t`, the text) are still
//!   read.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rusqlite::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::json_err;
use crate::job::notify_spec::NotifySpec;
use crate::job::wait::Wait;
use crate::job::{
    rfc3339, try_rfc3339, Backoff, Event, FileRef, Job, JobStatus, Lease, Micros, Reported,
    RunHandle, RunRecord,
};
use crate::store::{Result, StoreError};
use runyard_hooks::RunKind;

macro_rules! job_columns {
    () => {
        "body, id, type, runner, status, channel, run_at, idem_key, queued_at, finished_at"
    };
}
pub(super) use job_columns;

/// The columns a job is read from, in the order [`JobRow::read`] takes them:
/// `SELECT {JOB_COLUMNS} FROM jobs ...`.
pub(super) const JOB_COLUMNS: &str = job_columns!();

/// The job whose id is `?1`.
pub(super) const LOAD: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1");

/// The job whose idempotency key is `?1`.
pub(super) const BY_IDEM_KEY: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE idem_key = ?1");

/// One job's row as read ([`JOB_COLUMNS`]); [`JobRow::into_job`] makes the job of it. A row that
/// does not read as a job is an error of `into_job`, not of the query, so that a listing can
/// leave it out and go on.
pub(super) struct JobRow {
    body: String,
    id: String,
    job_type: String,
    runner: String,
    status: String,
    channel: String,
    run_at: Option<Micros>,
    idem_key: Option<String>,
    queued_at: Micros,
    finished_at: Option<Micros>,
}

impl JobRow {
    /// Reads the columns of [`JOB_COLUMNS`], from the first.
    pub(super) fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            body: r.get(0)?,
            id: r.get(1)?,
            job_type: r.get(2)?,
            runner: r.get(3)?,
            status: r.get(4)?,
            channel: r.get(5)?,
            run_at: r.get(6)?,
            idem_key: r.get(7)?,
            queued_at: r.get(8)?,
            finished_at: r.get(9)?,
        })
    }

    /// The job's id as stored.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The bytes of its text columns (a listing's measure of what it reads and keeps).
    pub(super) fn bytes(&self) -> usize {
        self.body.len()
            + self.id.len()
            + self.job_type.len()
            + self.runner.len()
            + self.channel.len()
            + self.idem_key.as_ref().map_or(0, String::len)
    }

    /// The job: its body and columns, or a body written before (the whole job) as it is.
    pub(super) fn into_job(self) -> Result<Job> {
        let s: StoredJob<'static> = match serde_json::from_str(&self.body) {
            Ok(s) => s,
            // The whole job's JSON (it has `id`, which a stored job never has).
            Err(_) => return serde_json::from_str::<Job>(&self.body).map_err(json_err),
        };
        let id = Uuid::parse_str(&self.id)
            .map_err(|e| StoreError::Backend(format!("corrupt record: job id: {e}")))?;
        let status = self
            .status
            .parse::<JobStatus>()
            .map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))?;
        s.into_job(self, id, status)
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

/// A job's `body`: what its columns do not hold. Times but `created_at` (`c`),
/// `progress_event_at` and `fire_time` are stored as differences from `created_at` (wrapping, so
/// any value reads back).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredJob<'a> {
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
    #[serde(rename = "v", default, skip_serializing_if = "is_zero_u64")]
    version: u64,
    #[serde(rename = "sc", default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Cow<'a, str>>,
    #[serde(rename = "ft", default, skip_serializing_if = "Option::is_none")]
    fire_time: Option<Micros>,
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
fn is_plus_zero(v: &f64) -> bool {
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
    }
}

/// The job's body as stored in `jobs.body` (its columns are written beside it: see `save` and
/// `submit_in`).
pub(super) fn job_body(job: &Job) -> Result<String> {
    // Every field named: a field added to `Job` does not compile here until it is stored.
    let Job {
        id,
        job_type: _,
        runner: _,
        status: _,
        channel_id: _,
        run_at: _,
        idempotency_key: _,
        queued_at: _,
        finished_at: _,
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
        version,
        schedule,
        fire_time,
        emits,
        notify,
        wait,
    } = job;
    let base = *created_at;
    let mut buf = Uuid::encode_buffer();
    let id: &str = id.hyphenated().encode_lower(&mut buf);
    let stored = StoredJob {
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
        handle: handle.as_ref().map(|h| StoredHandle {
            k: Cow::Borrowed(&h.kind),
            i: (h.id != id).then_some(Cow::Borrowed(&h.id)),
            d: Cow::Borrowed(&h.data),
        }),
        files: Cow::Borrowed(files),
        runs: runs.iter().map(|r| stored_run(r, base)).collect(),
        created_at: base,
        updated_at: rel(*updated_at, base),
        started_at: started_at.map(|t| rel(t, base)),
        progress_event_at: *progress_event_at,
        version: *version,
        schedule: schedule.as_deref().map(Cow::Borrowed),
        fire_time: *fire_time,
        emits: Cow::Borrowed(emits),
        notify: notify.as_ref().map(Cow::Borrowed),
        wait: wait.as_ref().map(Cow::Borrowed),
    };
    serde_json::to_string(&stored).map_err(json_err)
}

impl StoredJob<'static> {
    fn into_job(self, row: JobRow, id: Uuid, status: JobStatus) -> Result<Job> {
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
                })
                .collect(),
            created_at: base,
            updated_at: abs(self.updated_at, base),
            started_at: self.started_at.map(|t| abs(t, base)),
            progress_event_at: self.progress_event_at,
            version: self.version,
            schedule: self.schedule.map(Cow::into_owned),
            fire_time: self.fire_time,
            emits: self.emits.into_owned(),
            notify: self.notify.map(Cow::into_owned),
            wait: self.wait.map(Cow::into_owned),
        })
    }
}

/// An event as stored in `events.body`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEvent {
    /// The job id, when it is not the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    j: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    /// `true` for a progress event (else a status event).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    p: bool,
    s: JobStatus,
    #[serde(default, skip_serializing_if = "is_zero")]
    g: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<Value>,
    a: u32,
    /// The time, when it is not `m`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
    /// The time in µs, when its RFC 3339 text is the event's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Micros>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The event's body as stored in `events.body` (its channel goes in `events.channel`); `at` is
/// the time its `ts` shows (the job's `updated_at`), stored as a number when it reads back as
/// the same text.
pub(super) fn event_body(ev: &Event, at: Micros) -> Result<String> {
    let m = (try_rfc3339(at).as_deref() == Some(ev.ts.as_str())).then_some(at);
    let s = ev
        .runyard_status
        .ok_or_else(|| crate::store::StoreError::Backend("an event without a status".into()))?;
    serde_json::to_string(&StoredEvent {
        j: (ev.job_id != ev.channel_id).then(|| ev.job_id.clone()),
        u: ev.user_id.clone(),
        p: ev.kind == "progress",
        s,
        g: ev.progress,
        e: ev.errors.clone(),
        a: ev.attempt,
        t: m.is_none().then(|| ev.ts.clone()),
        m,
    })
    .map_err(json_err)
}

/// The event stored as `body` in `channel` with row id `id`.
pub(super) fn read_event(id: i64, channel: &str, body: &str) -> Result<Event> {
    let mut ev = match serde_json::from_str::<StoredEvent>(body) {
        Ok(s) => {
            let job_id = s.j.unwrap_or_else(|| channel.to_string());
            Event {
                id: String::new(),
                channel_id: channel.to_string(),
                result_url: Some(format!("/async/jobs/{job_id}/result")),
                job_id,
                user_id: s.u,
                kind: if s.p { "progress" } else { "status" }.into(),
                status: s.s.superset().into(),
                runyard_status: Some(s.s),
                progress: s.g,
                errors: s.e,
                attempt: s.a,
                ts: match (s.t, s.m) {
                    (Some(t), _) => t,
                    (None, Some(m)) => rfc3339(m),
                    (None, None) => {
                        return Err(json_err(
                            <serde_json::Error as serde::de::Error>::missing_field("t"),
                        ))
                    }
                },
            }
        }
        // Written before the compact form.
        Err(_) => serde_json::from_str::<Event>(body).map_err(json_err)?,
    };
    ev.id = id.to_string();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::EventKind;

    fn job() -> Job {
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

    /// The row `save` and `submit_in` write for `j`, as read back.
    fn row_of(j: &Job, body: String) -> JobRow {
        JobRow {
            body,
            id: j.id.to_string(),
            job_type: j.job_type.clone(),
            runner: j.runner.clone(),
            status: j.status.as_str().into(),
            channel: j.channel_id.clone(),
            run_at: j.run_at,
            idem_key: j.idempotency_key.clone(),
            queued_at: j.queued_at,
            finished_at: j.finished_at,
        }
    }

    /// A job with every field away from its usual value.
    fn everything() -> Job {
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
                      "started_at": 11, "ended_at": 12, "outcome": "LOST"},
                     {"attempt": 3, "worker": "w", "token": 41, "claimed_at": -9223372036854775808,
                      "started_at": 9223372036854775807, "ended_at": null, "outcome": null,
                      "reported": {"status": "ERROR", "message": "m", "retry": false}}],
            "created_at": 1764583000000000, "updated_at": -5, "queued_at": 3,
            "started_at": 1764583000000123, "finished_at": 99,
            "progress_event_at": 8, "version": 12, "schedule": "nightly", "fire_time": 6,
            "emits": ["s1", "s2"],
            "notify": {"url": "https://example.com/h", "events": ["status"]},
            "wait": {"items": [{"key": "s", "needed": 2, "since": 4, "seen": 1,
                                "signal_ids": [3]}],
                     "deadline": 50, "on_deadline": "skip", "released_by": "deadline",
                     "released_at": 51}
        }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_job_body_reads_back_the_same_without_its_columns() {
        // A lease of the last run's worker and token (stored as its end alone), and another.
        let mut other_lease = everything();
        other_lease.lease.as_mut().unwrap().token = 40;
        assert!(job_body(&everything()).unwrap().contains(r#""l":{"x":"#));
        for j in [job(), everything(), other_lease, Job::new("t", "r", 5)] {
            let body = job_body(&j).unwrap();
            let got = row_of(&j, body.clone()).into_job().unwrap();
            assert_eq!(got, j, "{body}");
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&j).unwrap()
            );
            // What the columns hold is not repeated.
            for (k, v) in [("id", j.id.to_string()), ("type", j.job_type.clone())] {
                assert!(!body.contains(&format!("\"{v}\"")), "{k} in {body}");
            }
        }
        // -0.0 stays -0.0.
        let j = everything();
        let got = row_of(&j, job_body(&j).unwrap()).into_job().unwrap();
        assert!(got.progress.is_sign_negative());
        // A job as submitted: its body is a few bytes.
        let j = Job::new("t", "r", 1_764_583_000_000_000);
        assert_eq!(job_body(&j).unwrap(), r#"{"c":1764583000000000}"#);
    }

    #[test]
    fn a_finished_job_body_is_less_than_half_the_whole_job() {
        let mut j = job();
        j.channel_id = j.id.to_string();
        j.created_at = 1_764_583_000_000_000;
        j.runs[0].claimed_at = j.created_at + 500;
        j.runs[0].started_at = Some(j.created_at + 600);
        j.runs[0].ended_at = Some(j.created_at + 900);
        j.finished_at = Some(j.created_at + 900);
        j.updated_at = j.created_at + 900;
        let full = serde_json::to_string(&j).unwrap();
        let body = job_body(&j).unwrap();
        assert!(body.len() * 2 < full.len(), "{body} against {full}");
    }

    /// Bodies written before: the whole job (before session 5), then the job without its `null`s
    /// (session 5 to 7): read as they are, whatever the columns say.
    #[test]
    fn a_body_written_before_reads_as_it_is() {
        for j in [job(), everything()] {
            let whole = serde_json::to_string(&j).unwrap();
            let mut v = serde_json::to_value(&j).unwrap();
            v.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            let without_nulls = serde_json::to_string(&v).unwrap();
            for body in [whole, without_nulls] {
                let mut r = row_of(&j, body);
                r.status = "garbage".into();
                r.job_type = "other".into();
                assert_eq!(r.into_job().unwrap(), j);
            }
        }
        // Neither form: an error, not a job.
        let r = row_of(&job(), r#"{"broken"#.into());
        assert!(r.into_job().is_err());
    }

    #[test]
    fn an_event_reads_back_the_same_in_both_forms() {
        let mut j = job();
        for (channel, kind) in [("ch", EventKind::Status), ("ch", EventKind::Progress)] {
            j.channel_id = channel.into();
            let ev = Event::for_job(&j, kind);
            let body = event_body(&ev, j.updated_at).unwrap();
            assert!(body.len() * 2 < serde_json::to_string(&ev).unwrap().len());
            let mut want = ev.clone();
            want.id = "9".into();
            let got = read_event(9, channel, &body).unwrap();
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::to_value(&want).unwrap()
            );
            // The full form, written before, still reads.
            let old = read_event(9, channel, &serde_json::to_string(&ev).unwrap()).unwrap();
            assert_eq!(
                serde_json::to_value(&old).unwrap(),
                serde_json::to_value(&want).unwrap()
            );
        }
        // The job id defaults to the channel's: a job on the channel of its own id.
        j.channel_id = j.id.to_string();
        j.error = Some("e".into());
        j.status = JobStatus::Error;
        let ev = Event::for_job(&j, EventKind::Status);
        let body = event_body(&ev, j.updated_at).unwrap();
        assert!(!body.contains(&j.id.to_string()), "{body}");
        let got = read_event(3, &j.channel_id, &body).unwrap();
        let mut want = ev.clone();
        want.id = "3".into();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(&want).unwrap()
        );
        // The time as a number; the text when the number would not read back as it (a time
        // RFC 3339 cannot show, clamped), as in the compact form written before.
        assert!(body.contains(&format!(r#""m":{}"#, j.updated_at)), "{body}");
        assert!(!body.contains(r#""t""#), "{body}");
        for (at, ts) in [
            (j.updated_at + 1, None),
            (-5, Some("1970-01-01T00:00:00.000000Z")),
        ] {
            let mut ev = ev.clone();
            if let Some(ts) = ts {
                ev.ts = ts.into();
            }
            let body = event_body(&ev, at).unwrap();
            assert!(body.contains(&format!(r#""t":"{}""#, ev.ts)), "{body}");
            let got = read_event(3, &j.channel_id, &body).unwrap();
            assert_eq!(got.ts, ev.ts);
        }
    }
}
