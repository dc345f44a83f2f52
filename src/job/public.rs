//! A job as the API shows it ([`Job::to_public`]), whole or with only some members
//! ([`Job::to_public_only`], `GET /async/jobs?fields=`).

use serde_json::{json, Map, Value};

use super::{fire_time_text, rfc3339, try_rfc3339, Job, Micros, Reported};

/// The members written, and which are: `id` always.
struct Members<F> {
    m: Map<String, Value>,
    shown: F,
}

impl<F: Fn(&str) -> bool> Members<F> {
    fn shows(&self, name: &str) -> bool {
        name == "id" || (self.shown)(name)
    }

    /// `name` with the value `value` builds, only if shown (`value` is not called otherwise).
    fn put(&mut self, name: &str, value: impl FnOnce() -> Value) {
        if self.shows(name) {
            self.m.insert(name.into(), value());
        }
    }
}

impl Job {
    /// The job as the API shows it: no lease token, timestamps as RFC 3339.
    pub fn to_public(&self) -> Value {
        self.to_public_only(|_| true)
    }

    /// [`Job::to_public`] with only the members `shown` takes, `id` always, and `render_error`
    /// whenever the job has one: what `GET /async/jobs?fields=` writes of each job. A member left
    /// out is not built (args, result, status details, error and the runs' errors may each be
    /// up to `api.max_body_bytes`); every time is still rendered, so `render_error` is the whole
    /// job's.
    pub fn to_public_only(&self, shown: impl Fn(&str) -> bool) -> Value {
        // A time RFC 3339 cannot show (a job stored before input was range-checked) never fails
        // the rendering: it is shown clamped and the job carries a `render_error` naming it.
        let times = PublicTimes::default();
        let mut out = Members {
            m: Map::new(),
            shown,
        };
        out.put("id", || json!(self.id));
        out.put("type", || json!(self.job_type));
        out.put("status", || json!(self.status));
        out.put("args", || self.args.clone());
        out.put("runner", || json!(self.runner));
        out.put("channel_id", || json!(self.channel_id));
        out.put("user_id", || json!(self.user_id));
        out.put("attempt", || json!(self.attempt));
        out.put("max_attempts", || json!(self.max_attempts));
        out.put("timeout_ms", || json!(self.timeout_ms));
        out.put("progress", || json!(self.progress));
        out.put("status_details", || json!(self.status_details));
        out.put("result", || json!(self.result));
        out.put("error", || json!(self.error));
        out.put("exit_code", || json!(self.exit_code));
        out.put("idempotency_key", || json!(self.idempotency_key));
        out.put("worker", || {
            json!(self.lease.as_ref().map(|l| l.worker.clone()))
        });
        out.put("handle", || {
            json!(self
                .handle
                .as_ref()
                .map(|h| json!({"kind": h.kind, "id": h.id})))
        });
        self.public_runs_and_times(&mut out, &times);
        out.put("result_url", || json!(self.result_url()));
        self.public_extras(&mut out);
        let mut m = out.m;
        let bad = times.bad.into_inner();
        if !bad.is_empty() {
            let msg = bad.join("; ");
            tracing::warn!(job_id = %self.id, problem = %msg, "job has times that cannot be shown");
            m.insert("render_error".into(), json!(msg));
        }
        Value::Object(m)
    }

    /// `to_public`'s runs, files and times (each time rendered, shown or not: `render_error`).
    fn public_runs_and_times<F: Fn(&str) -> bool>(&self, out: &mut Members<F>, t: &PublicTimes) {
        let with_runs = out.shows("runs");
        let runs: Vec<Value> = self
            .runs
            .iter()
            .filter_map(|r| {
                let claimed = t.one("runs.claimed_at", r.claimed_at);
                let (started, ended) = (
                    t.ts("runs.started_at", r.started_at),
                    t.ts("runs.ended_at", r.ended_at),
                );
                with_runs.then(|| {
                    json!({"attempt": r.attempt, "worker": r.worker, "claimed_at": claimed,
                       "started_at": started, "ended_at": ended, "outcome": r.outcome,
                       "reported": r.decided().as_ref().map(Reported::status), "error": r.error})
                })
            })
            .collect();
        out.put("runs", || Value::Array(runs));
        out.put("files", || json!(self.files));
        for (name, us) in [
            ("run_at", self.run_at),
            ("created_at", Some(self.created_at)),
            ("updated_at", Some(self.updated_at)),
            ("started_at", self.started_at),
            ("finished_at", self.finished_at),
        ] {
            let shown = t.ts(name, us);
            out.put(name, || json!(shown));
        }
    }

    /// `to_public`'s optional parts: signals emitted, wait, schedule; and the webhook, or null.
    fn public_extras<F: Fn(&str) -> bool>(&self, out: &mut Members<F>) {
        if !self.emits.is_empty() {
            out.put("emits", || json!(self.emits));
        }
        // Always there, null without a webhook (as `"notify": null` opts out in a submit): a
        // client reading `job["notify"]` failed on the member left out (probe s53c F4).
        out.put("notify", || json!(self.notify));
        if let Some(w) = &self.wait {
            out.put("wait", || w.to_public());
        }
        if let Some(name) = &self.schedule {
            out.put("schedule", || json!(name));
            out.put("fire_time", || json!(self.fire_time.map(fire_time_text)));
        }
    }
}

/// Renders `to_public`'s times, remembering those RFC 3339 cannot show.
#[derive(Default)]
struct PublicTimes {
    bad: std::cell::RefCell<Vec<String>>,
}

impl PublicTimes {
    fn one(&self, field: &str, us: Micros) -> String {
        if try_rfc3339(us).is_none() {
            self.bad.borrow_mut().push(format!(
                "`{field}` ({us} us since the epoch) is out of range"
            ));
        }
        rfc3339(us)
    }

    fn ts(&self, field: &str, v: Option<Micros>) -> Option<String> {
        v.map(|us| self.one(field, us))
    }
}
