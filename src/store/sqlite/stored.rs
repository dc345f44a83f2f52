//! The forms jobs and events take in the database, kept small (docs/benchmarks.md "Writes per
//! job" and "Session 8: database bytes per job"): every write of a job rewrites its whole row,
//! and every change appends an event, so each byte here is paid several times per job.
//!
//! - A job is its row's columns (`id`, `type`, `runner`, `status`, `channel`, `run_at`,
//!   `idem_key`, `queued_at`, `finished_at`) and a `body` with the rest, in the compact form of
//!   `store/job_record.rs`: short keys, no field that reads back the same when absent (`None`s,
//!   empty lists, the usual backoff, `max_attempts` 1, ...), times after `created_at` as
//!   differences from it. Every
//!   reader of a job selects [`JOB_COLUMNS`] and reads them with [`JobRow`]: a query that read
//!   `body` alone would miss those fields. `type`, `channel` and `idem_key` are written at
//!   submit only (no command changes them); `save` writes the others at every change (`runner`
//!   too: a retry or a re-route moves the job to another runner, `Command::Reroute`). Bodies
//!   written before (the job's whole JSON, which always has `id`) are still read, as they are.
//! - An event body keeps only what cannot be derived: the row id is the event id, the `channel`
//!   column its channel, the job id is the channel's unless given, the Superset word and the
//!   result URL follow from the status and the job id, the time is µs (`m`) when its text is
//!   what the µs read as. Bodies written before (the full event JSON; `t`, the text) are still
//!   read.

use rusqlite::Row;
use uuid::Uuid;

use crate::job::{Event, Job, JobStatus, Micros};
use crate::store::job_record::Columns;
use crate::store::{Result, StoreError};

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
    /// The body, or why it is not text (not UTF-8: written by hand, by another program).
    body: std::result::Result<String, String>,
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
            body: body_text(r)?,
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
        self.body.as_ref().map_or(0, String::len)
            + self.id.len()
            + self.job_type.len()
            + self.runner.len()
            + self.channel.len()
            + self.idem_key.as_ref().map_or(0, String::len)
    }

    /// The job: its body and columns, or a body written before (the whole job) as it is.
    pub(super) fn into_job(mut self) -> Result<Job> {
        let body = std::mem::replace(&mut self.body, Ok(String::new())).map_err(|e| {
            StoreError::Backend(format!(
                "corrupt record: the job's record is not UTF-8 text ({e})"
            ))
        })?;
        crate::store::job_record::read_with(&body, || {
            Ok(Columns {
                id: Uuid::parse_str(&self.id)
                    .map_err(|e| StoreError::Backend(format!("corrupt record: job id: {e}")))?,
                status: self
                    .status
                    .parse::<JobStatus>()
                    .map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))?,
                job_type: self.job_type,
                runner: self.runner,
                channel: self.channel,
                run_at: self.run_at,
                idem_key: self.idem_key,
                queued_at: self.queued_at,
                finished_at: self.finished_at,
            })
        })
    }
}

/// The `body` column (the first) as text; `Err` and why when it is text that is not UTF-8, or
/// not text at all (a blob or a NULL another program wrote): a corrupt record
/// ([`JobRow::into_job`]), left out of a listing as one, not an error of the whole query (as
/// `rusqlite` reads a `String`). Never read lossily: a JSON string holding such bytes would
/// read with U+FFFD, and the next write of the job would save that for good.
fn body_text(r: &Row<'_>) -> rusqlite::Result<std::result::Result<String, String>> {
    Ok(match r.get_ref(0)? {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
            .map(str::to_string)
            .map_err(|e| e.to_string()),
        other => Err(format!("a value of type {}", other.data_type())),
    })
}

/// The job's body as stored in `jobs.body` (its columns are written beside it: see `save` and
/// `submit_in`): the compact form without them.
pub(super) fn job_body(job: &Job) -> Result<String> {
    crate::store::job_record::compact(job, false)
}

/// The event's body as stored in `events.body` (its channel goes in `events.channel`): the
/// compact form of `store/event_record.rs` without its channel.
pub(super) fn event_body(ev: &Event, at: Micros) -> Result<String> {
    crate::store::event_record::compact(ev, at, false)
}

/// The event stored as `body` in `channel` with row id `id`.
pub(super) fn read_event(id: i64, channel: &str, body: &str) -> Result<Event> {
    let mut ev = crate::store::event_record::read_with(channel, body)?;
    ev.id = id.to_string();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::EventKind;
    use crate::store::job_record::fixtures::{everything, job};

    /// The row `save` and `submit_in` write for `j`, as read back.
    fn row_of(j: &Job, body: String) -> JobRow {
        JobRow {
            body: Ok(body),
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
