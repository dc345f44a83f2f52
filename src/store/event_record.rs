//! The compact form of an event (docs/benchmarks.md "Session 8: database bytes per job"): it
//! keeps only what cannot be derived: the job id is the channel's unless given, the Superset word
//! and the result URL follow from the status and the job id, the time is µs (`m`) when its text
//! is what the µs read as. SQLite keeps the channel in its own column and the id is the row's;
//! Redis, with `store.records = "compact"`, keeps the channel inside (`c`, first: inline) and the
//! id is the stream entry's. Events written before in the whole event's JSON (it begins with
//! `{"id":`) are read as they are.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{rfc3339, try_rfc3339, Event, JobStatus, Micros};
use crate::store::{Result, StoreError};

use super::job_record::{is_plus_zero, json_err};

/// An event as stored. Unknown keys are ignored (a later build's new field does not make an
/// event unreadable); the event's JSON never reads as this form all the same: it has none of
/// `s` and `a`, which are required.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    /// The channel, in an inline record only (first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// The job id, when it is not the channel. Second, right after `c`: `chanidx.lua` reads
    /// the two with a pattern (and takes the job to be the channel's own when `j` does not
    /// follow `c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    j: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    /// `true` for a progress event (else a status event).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    p: bool,
    s: JobStatus,
    #[serde(default, skip_serializing_if = "is_plus_zero")]
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

/// The event's compact form; `at` is the time its `ts` shows (the job's `updated_at`), stored as
/// a number when it reads back as the same text. `inline`: with its channel (Redis).
pub(crate) fn compact(ev: &Event, at: Micros, inline: bool) -> Result<String> {
    let m = (try_rfc3339(at).as_deref() == Some(ev.ts.as_str())).then_some(at);
    let s = ev
        .runyard_status
        .ok_or_else(|| StoreError::Backend("an event without a status".into()))?;
    serde_json::to_string(&StoredEvent {
        c: inline.then(|| ev.channel_id.clone()),
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

impl StoredEvent {
    /// The event (its id empty) in `channel`.
    fn into_event(self, channel: String) -> Result<Event> {
        let job_id = self.j.unwrap_or_else(|| channel.clone());
        Ok(Event {
            id: String::new(),
            channel_id: channel,
            result_url: Some(format!("/async/jobs/{job_id}/result")),
            job_id,
            user_id: self.u,
            kind: if self.p { "progress" } else { "status" }.into(),
            status: self.s.superset().into(),
            runyard_status: Some(self.s),
            progress: self.g,
            errors: self.e,
            attempt: self.a,
            ts: match (self.t, self.m) {
                (Some(t), _) => t,
                (None, Some(m)) => rfc3339(m),
                (None, None) => {
                    return Err(json_err(
                        <serde_json::Error as serde::de::Error>::missing_field("t"),
                    ))
                }
            },
        })
    }
}

/// The event stored as `body` in `channel` (SQLite), its id empty: the compact form, or the
/// event's JSON written before.
pub(crate) fn read_with(channel: &str, body: &str) -> Result<Event> {
    match serde_json::from_str::<StoredEvent>(body) {
        Ok(s) => s.into_event(channel.to_string()),
        // Written before the compact form.
        Err(_) => serde_json::from_str::<Event>(body).map_err(json_err),
    }
}

/// An event that holds its channel (Redis), its id as stored (empty: the caller sets it): the
/// inline compact form (it begins with its `c`), or the event's JSON.
pub(crate) fn read_inline(body: &str) -> Result<Event> {
    if body.starts_with(r#"{"c":"#) {
        let mut s: StoredEvent = serde_json::from_str(body).map_err(json_err)?;
        let channel =
            s.c.take()
                .ok_or_else(|| StoreError::Backend("corrupt record: no `c`".into()))?;
        s.into_event(channel)
    } else {
        serde_json::from_str::<Event>(body).map_err(json_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{EventKind, Job};
    use crate::store::job_record::fixtures::{everything, job};

    /// Events of every kind the store writes: status and progress, in the job's own channel and
    /// in a shared one, with and without an error.
    fn events() -> Vec<(Event, Micros)> {
        let mut out = Vec::new();
        let mut failed = job();
        (failed.status, failed.error) = (JobStatus::Error, Some("it \"broke\"".into()));
        for mut j in [
            job(),
            everything(),
            failed,
            Job::new("t", "r", 1_764_583_000_000_000),
        ] {
            for own in [true, false] {
                j.channel_id = if own {
                    j.id.to_string()
                } else {
                    "shared/ch".into()
                };
                for kind in [EventKind::Status, EventKind::Progress] {
                    out.push((Event::for_job(&j, kind), j.updated_at));
                }
            }
        }
        out
    }

    #[test]
    fn an_inline_event_reads_back_the_same() {
        for (ev, at) in events() {
            let body = compact(&ev, at, true).unwrap();
            assert!(body.starts_with(r#"{"c":"#), "{body}");
            assert_eq!(ev.errors.is_empty(), !body.contains(r#""e":["#), "{body}");
            assert!(
                body.len() * 2 < serde_json::to_string(&ev).unwrap().len(),
                "{body}"
            );
            let got = read_inline(&body).unwrap();
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::to_value(&ev).unwrap(),
                "{body}"
            );
            // The event's JSON reads as it is; both forms give the same JSON (-0.0 included).
            let full_json = serde_json::to_string(&ev).unwrap();
            assert_eq!(serde_json::to_string(&got).unwrap(), full_json);
            assert_eq!(
                serde_json::to_value(read_inline(&full_json).unwrap()).unwrap(),
                serde_json::to_value(&ev).unwrap()
            );
        }
    }

    #[test]
    fn an_event_with_a_key_this_build_does_not_know_reads() {
        let (ev, at) = events().remove(0);
        let body = compact(&ev, at, true).unwrap();
        let with = format!(r#"{},"zz":{{"a":1}}}}"#, &body[..body.len() - 1]);
        assert_eq!(
            serde_json::to_value(read_inline(&with).unwrap()).unwrap(),
            serde_json::to_value(&ev).unwrap()
        );
        let sql = compact(&ev, at, false).unwrap();
        assert!(!sql.contains(r#""c":"#), "{sql}");
        let with = format!(r#"{{"zz":1,{}"#, &sql[1..]);
        assert_eq!(
            serde_json::to_value(read_with(&ev.channel_id, &with).unwrap()).unwrap(),
            serde_json::to_value(&ev).unwrap()
        );
        // A broken inline event says what is wrong with it.
        let e = read_inline(r#"{"c":"x","s":"NOPE","a":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE"), "{e}");
    }
}
