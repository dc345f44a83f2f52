//! A fresh job with every field at its starting value, so that code building a job (the submit
//! handler, tests) names only what differs: `Job { max_attempts: 3, ..Job::new(t, r, now) }`.

use serde_json::json;
use uuid::Uuid;

use super::{Backoff, Job, JobStatus, Micros};

impl Job {
    /// A QUEUED job of `job_type` for `runner`, created at `now`: a new time-ordered id, its own
    /// channel (the id), empty args, one attempt with the default backoff, no lease, no run yet.
    pub fn new(job_type: &str, runner: &str, now: Micros) -> Self {
        let id = Uuid::now_v7();
        Self {
            id,
            job_type: job_type.into(),
            args: json!({}),
            runner: runner.into(),
            status: JobStatus::Queued,
            channel_id: id.to_string(),
            user_id: None,
            attempt: 0,
            max_attempts: 1,
            backoff: Backoff::default(),
            timeout_ms: None,
            run_at: None,
            idempotency_key: None,
            progress: 0.0,
            status_details: None,
            result: None,
            error: None,
            exit_code: None,
            lease: None,
            handle: None,
            files: Default::default(),
            runs: Vec::new(),
            created_at: now,
            updated_at: now,
            queued_at: now,
            started_at: None,
            finished_at: None,
            progress_event_at: 0,
            submit_hash: None,
            version: 0,
            schedule: None,
            fire_time: None,
            schedule_gen: None,
            emits: Vec::new(),
            notify: None,
            wait: None,
        }
    }
}
