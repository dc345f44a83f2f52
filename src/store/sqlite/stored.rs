//! The forms jobs and events take in the database, kept small (docs/benchmarks.md "Writes per
//! job"): every write of a job rewrites its whole row, and every change appends an event, so each
//! byte here is paid several times per job.
//!
//! - A job body is the job's JSON without the fields that read back the same when absent: its
//!   `null` options, an empty `files`, a zero `progress_event_at`. Plain `serde_json` reads it
//!   back into the same [`Job`], so every reader of `jobs.body` is unchanged.
//! - An event body keeps only what cannot be derived: the row id is the event id, the `channel`
//!   column its channel, the job id is the channel's unless given, the Superset word and the
//!   result URL follow from the status and the job id. Bodies written before (the full event
//!   JSON) are still read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json_err;
use crate::job::{Event, Job, JobStatus};
use crate::store::Result;

/// Top-level fields of a [`Job`] that are `Option`s: absent reads back as `None`.
const OPTIONAL: &[&str] = &[
    "user_id",
    "timeout_ms",
    "run_at",
    "idempotency_key",
    "status_details",
    "result",
    "error",
    "exit_code",
    "lease",
    "handle",
    "started_at",
    "finished_at",
];

/// Fields of a run record that are `Option`s.
const RUN_OPTIONAL: &[&str] = &["started_at", "ended_at", "outcome"];

/// The job's body as stored in `jobs.body`.
pub(super) fn job_body(job: &Job) -> Result<String> {
    let mut v = serde_json::to_value(job).map_err(json_err)?;
    if let Value::Object(m) = &mut v {
        for k in OPTIONAL {
            if m.get(*k).is_some_and(Value::is_null) {
                m.remove(*k);
            }
        }
        if m.get("files")
            .is_some_and(|f| f.as_object().is_some_and(|o| o.is_empty()))
        {
            m.remove("files");
        }
        if m.get("progress_event_at").and_then(Value::as_i64) == Some(0) {
            m.remove("progress_event_at");
        }
        if let Some(Value::Array(runs)) = m.get_mut("runs") {
            for r in runs.iter_mut().filter_map(Value::as_object_mut) {
                for k in RUN_OPTIONAL {
                    if r.get(*k).is_some_and(Value::is_null) {
                        r.remove(*k);
                    }
                }
            }
        }
    }
    serde_json::to_string(&v).map_err(json_err)
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
    t: String,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The event's body as stored in `events.body` (its channel goes in `events.channel`).
pub(super) fn event_body(ev: &Event) -> Result<String> {
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
        t: ev.ts.clone(),
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
                ts: s.t,
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

    #[test]
    fn a_job_body_reads_back_the_same_and_is_smaller() {
        let mut j = job();
        let full = serde_json::to_string(&j).unwrap();
        let small = job_body(&j).unwrap();
        assert!(small.len() + 150 < full.len(), "{small}");
        assert_eq!(serde_json::from_str::<Job>(&small).unwrap(), j);
        // Nulls inside values (args, result) are kept.
        assert!(small.contains(r#""args":{"a":null}"#), "{small}");
        j.error = Some("boom".into());
        j.progress_event_at = 7;
        j.user_id = Some("u".into());
        let small = job_body(&j).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&small).unwrap(), j);
    }

    #[test]
    fn an_event_reads_back_the_same_in_both_forms() {
        let mut j = job();
        for (channel, kind) in [("ch", EventKind::Status), ("ch", EventKind::Progress)] {
            j.channel_id = channel.into();
            let ev = Event::for_job(&j, kind);
            let body = event_body(&ev).unwrap();
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
        let body = event_body(&ev).unwrap();
        assert!(!body.contains(&j.id.to_string()), "{body}");
        let got = read_event(3, &j.channel_id, &body).unwrap();
        let mut want = ev;
        want.id = "3".into();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(&want).unwrap()
        );
    }
}
