//! Progress reports and their events: at most one progress event per job per
//! `progress_interval`; a report coming sooner is stored at once and its event held back until
//! the interval is over (`Job::progress_due`), then sent by [`Command::ProgressFlush`] or with the
//! worker's next lease renewal (`attempts::heartbeat_lease`).

use serde_json::Value;

#[cfg(doc)]
use super::Command;
use super::{illegal, ApplyCtx, EventKind, TransitionError};
use crate::job::Job;

/// A progress report (`progress`, `details`): stored at once; its event now, or held back.
pub(super) fn update(
    job: &mut Job,
    progress: Option<f64>,
    details: Option<Value>,
    ctx: &ApplyCtx,
) -> Result<Option<EventKind>, TransitionError> {
    let sent = job.progress;
    if let Some(p) = progress {
        if !p.is_finite() || !(0.0..=1.0).contains(&p) {
            return Err(TransitionError::Invalid(format!(
                "progress must be a number between 0 and 1, got {p}"
            )));
        }
        job.progress = p;
    }
    if details.is_some() {
        job.status_details = details;
    }
    if progress.is_none() {
        Ok(None)
    } else if ctx.now - job.progress_event_at >= ctx.progress_interval {
        job.progress_event_at = ctx.now;
        job.progress_due = None;
        Ok(Some(EventKind::Progress))
    } else {
        // Nothing held yet: the job's progress is what its last event carried, and the same
        // value again is nothing to send (two identical events: probe s54a F7).
        if job.progress_due.is_some() || job.progress != sent {
            job.progress_due = Some(job.progress_event_at + ctx.progress_interval);
        }
        Ok(None)
    }
}

/// The held event ([`Command::ProgressFlush`]): sent now, whether or not its time has come (the
/// sender waited for it); refused when nothing is held or the job is no longer active.
pub(super) fn flush(job: &mut Job, ctx: &ApplyCtx) -> Result<Option<EventKind>, TransitionError> {
    if !job.status.is_active() {
        return Err(illegal(job, "send held progress"));
    }
    if job.progress_due.is_none() {
        return Err(TransitionError::Invalid(
            "no progress report is held back".into(),
        ));
    }
    job.progress_event_at = ctx.now;
    job.progress_due = None;
    Ok(Some(EventKind::Progress))
}
