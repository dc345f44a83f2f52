//! The operator's view of job outcomes in the server log: one `info` line per job that ends
//! (`job ended`, with type, id, attempt, status, duration, exit code or error), one `warn` line
//! per failed attempt that is retried (`job attempt failed: retrying`). Called by whoever commits
//! the change (the worker, the reaper, the cancel handler), so each outcome is logged once, by the
//! process that committed it. Lines carry the job's `job_id`, `type` and `attempt` through a
//! `job` span (the worker's own span when it is the caller), and at most the first KiB of its
//! error (the job keeps up to 16 KiB of it).

use std::borrow::Cow;
use std::time::Duration;

use crate::job::{Job, JobStatus, Micros, MAX_LOGGED_ERROR_BYTES};

fn span_for(job: &Job) -> tracing::Span {
    let current = tracing::Span::current();
    if current.metadata().is_some_and(|m| m.name() == "job") {
        // Already inside the worker's span for this job.
        return current;
    }
    tracing::info_span!("job", job_id = %job.id, r#type = %job.job_type, attempt = job.attempt)
}

fn human(us: Micros) -> String {
    let d = Duration::from_micros(u64::try_from(us).unwrap_or(0));
    // Milliseconds are enough for a log line.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// How long the last attempt ran (from its start, or its claim when it never started).
fn run_time(job: &Job) -> Option<Micros> {
    let r = job.runs.last()?;
    let end = r.ended_at.or(job.finished_at)?;
    Some(end - r.started_at.unwrap_or(r.claimed_at))
}

/// The job's error as its log lines carry it: its first KiB (`MAX_LOGGED_ERROR_BYTES`), the rest
/// in the job's record (a stored error holds up to 16 KiB).
fn logged_error(job: &Job) -> Option<Cow<'_, str>> {
    job.error
        .as_deref()
        .map(|e| crate::job::cut_error(e, MAX_LOGGED_ERROR_BYTES))
}

/// Logs what `job` (as just committed) says about its outcome, if anything.
pub fn log_change(job: &Job) {
    let span = span_for(job);
    let _in = span.enter();
    let duration = run_time(job).map(human).unwrap_or_else(|| "0s".into());
    let total = job
        .finished_at
        .map(|f| human(f - job.created_at))
        .unwrap_or_else(|| "0s".into());
    match job.status {
        s if s.is_terminal() => {
            // A number in JSON logs (as `attempt` is), not a string.
            let exit_code = job.exit_code;
            let error = match s {
                JobStatus::Success => None,
                _ => logged_error(job),
            };
            let error = error.as_deref();
            tracing::info!(
                job_id = %job.id,
                r#type = %job.job_type,
                attempt = job.attempt,
                status = %s,
                duration = %duration,
                since_submit = %total,
                exit_code,
                error,
                "job ended"
            );
        }
        JobStatus::Scheduled
            if job
                .runs
                .last()
                .is_some_and(|r| r.outcome.as_deref() == Some("ERROR")) =>
        {
            let retry_in = job
                .run_at
                .map(|at| human(at - job.updated_at))
                .unwrap_or_default();
            tracing::warn!(
                job_id = %job.id,
                r#type = %job.job_type,
                attempt = job.attempt,
                max_attempts = job.max_attempts,
                duration = %duration,
                exit_code = job.exit_code,
                error = logged_error(job).as_deref(),
                retry_in = %retry_in,
                "job attempt failed: retrying"
            );
        }
        _ => {}
    }
}
