//! The commands from outside an attempt: a user's cancel and retry, an attached file, the release
//! or deadline of a waiting job, a scheduled job's promotion. [`super::apply`] is still the one
//! entry; these are its arms.

use super::{check_token, end_run, illegal, set_status, ApplyCtx, EventKind, TransitionError};
use crate::job::wait::{
    all_met, OnDeadline, ReleasedBy, Seen, DEADLINE_MISSED, MAX_SIGNAL_IDS, SKIPPED,
};
use crate::job::JobStatus::*;
use crate::job::{FileRef, Job, MAX_FILES_PER_PROPERTY};

/// A user cancels the job.
pub(super) fn cancel(job: &mut Job, ctx: &ApplyCtx) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if job.status.is_terminal() {
        return Err(illegal(job, "cancel"));
    }
    // The work said how it ended, for good: that stands, as when its time limit or its lease
    // runs out then, and is committed once its process has ended (within `worker.exit_grace`).
    if job
        .reported()
        .is_some_and(|r| super::attempts::ends_the_job(job, &r))
    {
        return Err(illegal(
            job,
            "cancel: it reported an outcome that ends it (SUCCESS, or an ERROR without retry or \
             with no attempts left), committed once its process has ended",
        ));
    }
    job.error = Some("cancelled".into());
    end_run(job, now, "CANCELLED");
    // The lease stays, so its holder learns from its heartbeat that the job is gone.
    set_status(job, Cancelled, now);
    Ok(Some(EventKind::Status))
}

/// The worker of a job cancelled while it ran has stopped the work: the lease goes.
pub(super) fn stopped(job: &mut Job, token: u64) -> Result<Option<EventKind>, TransitionError> {
    check_token(job, token)?;
    // Only a cancel keeps a lease for this; any other end keeps its record as it is.
    if job.status != Cancelled {
        return Err(illegal(job, "give up the lease of a job not cancelled"));
    }
    job.lease = None;
    Ok(None)
}

/// The reaper made sure the work of a cancelled job whose lease ran out is gone: the lease goes.
pub(super) fn stop_lost(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: u64,
) -> Result<Option<EventKind>, TransitionError> {
    check_token(job, token)?;
    let expired = job.lease.as_ref().is_some_and(|l| l.expires_at < ctx.now);
    if job.status != Cancelled || !expired {
        return Err(illegal(job, "give up a lease that has not run out"));
    }
    job.lease = None;
    Ok(None)
}

/// A user retries a finished job: one more attempt.
pub(super) fn retry(
    job: &mut Job,
    ctx: &ApplyCtx,
    runner: Option<String>,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if !job.status.can_retry() {
        return Err(illegal(job, "retry"));
    }
    // A new attempt now could run beside the old one.
    if job.still_stopping(now) {
        return Err(illegal(
            job,
            "retry while its last attempt is still being stopped (retry once it has ended: \
             within the worker's kill_grace; its worker gone or hung, once its lease has run \
             out and another worker has made sure the work is gone)",
        ));
    }
    job.max_attempts = job.max_attempts.max(job.attempt + 1);
    super::attempts::start_clean(job);
    job.lease = None;
    job.finished_at = None;
    job.run_at = None;
    if let Some(r) = runner {
        job.runner = r;
    }
    // The only way out of a terminal status.
    job.status = Queued;
    job.queued_at = now;
    Ok(Some(EventKind::Status))
}

/// A file is attached to a property of the job.
pub(super) fn attach_file(
    job: &mut Job,
    property: String,
    file: FileRef,
    by_attempt: Option<u32>,
) -> Result<Option<EventKind>, TransitionError> {
    let by_job = by_attempt.is_some();
    if job.status.is_terminal() || (by_job && (!job.status.is_active() || job.reported().is_some()))
    {
        return Err(illegal(job, "attach a file"));
    }
    // Checked at the commit: the upload's body streamed while the job may have been requeued
    // and claimed again, and that attempt's outputs are not this one's.
    if by_attempt.is_some_and(|a| a != job.attempt) {
        return Err(TransitionError::StaleAttempt);
    }
    let attempt = job.attempt;
    let list = job.files.entry(property).or_default();
    // The same upload again from the same attempt (tried again after its answer was lost, the
    // clients' report window): already attached, not a second entry.
    let again = |f: &FileRef| {
        f.attempt == Some(attempt)
            && f.hash == file.hash
            && f.name == file.name
            && f.metadata == file.metadata
    };
    if by_job && list.iter().any(again) {
        return Ok(None);
    }
    if list.len() >= MAX_FILES_PER_PROPERTY {
        return Err(TransitionError::Invalid(format!(
            "a property holds at most {MAX_FILES_PER_PROPERTY} files"
        )));
    }
    // A job's own upload belongs to its attempt (dropped when another attempt starts).
    list.push(FileRef {
        attempt: by_job.then_some(attempt),
        ..file
    });
    Ok(None)
}

/// Records a waiting job waits on were seen: released once all are.
pub(super) fn wait_release(
    job: &mut Job,
    ctx: &ApplyCtx,
    seen: Seen,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    let met = job.wait.as_ref().is_some_and(|w| all_met(&w.items, &seen));
    if job.status != Waiting || !met {
        return Err(illegal(job, "be released by signals"));
    }
    if let Some(w) = job.wait.as_mut() {
        for (item, (n, ids)) in w.items.iter_mut().zip(seen) {
            item.seen = n;
            item.signal_ids = ids;
            item.signal_ids.truncate(MAX_SIGNAL_IDS);
        }
        w.released_by = Some(ReleasedBy::Signals);
        w.released_at = Some(now);
    }
    set_status(job, Queued, now);
    Ok(Some(EventKind::Status))
}

/// A waiting job's deadline passed.
pub(super) fn wait_deadline(
    job: &mut Job,
    ctx: &ApplyCtx,
    seen: Seen,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    let due = job
        .wait
        .as_ref()
        .and_then(|w| w.deadline)
        .is_some_and(|d| d <= now);
    if job.status != Waiting || !due {
        return Err(illegal(job, "reach a deadline"));
    }
    // `seen` counts the records written up to the deadline: when they were all there (a check
    // that came late, on Redis), the signals released the job, not the deadline.
    if job.wait.as_ref().is_some_and(|w| all_met(&w.items, &seen)) {
        return wait_release(job, ctx, seen);
    }
    let Some(w) = job.wait.as_mut() else {
        return Err(illegal(job, "reach a deadline"));
    };
    w.released_by = Some(ReleasedBy::Deadline);
    w.released_at = Some(now);
    let deadline = crate::job::rfc3339(w.deadline.unwrap_or(now));
    // What came is kept (a `count` of 3 with 2 records shows 2); the error names the keys short.
    for (item, (n, ids)) in w.items.iter_mut().zip(seen) {
        item.seen = n;
        item.signal_ids = ids;
        item.signal_ids.truncate(MAX_SIGNAL_IDS);
    }
    let missing: Vec<String> = w
        .items
        .iter()
        .filter(|i| i.seen < i.needed)
        .map(|i| i.key.clone())
        .collect();
    match w.on_deadline {
        OnDeadline::Run => set_status(job, Queued, now),
        OnDeadline::Fail => {
            job.error = Some(format!(
                "{}: the deadline {deadline} passed before the signals ({}) arrived",
                DEADLINE_MISSED,
                missing.join(", ")
            ));
            set_status(job, Error, now);
        }
        OnDeadline::Skip => {
            job.error = Some(format!(
                "{}: the deadline {deadline} passed before the signals ({}) arrived",
                SKIPPED,
                missing.join(", ")
            ));
            set_status(job, Cancelled, now);
        }
    }
    Ok(Some(EventKind::Status))
}

/// A scheduled job's time came: it is queued.
pub(super) fn promote(job: &mut Job, ctx: &ApplyCtx) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if job.status != Scheduled {
        return Err(illegal(job, "promote"));
    }
    // `run_at` stays: the job's view still says when it was due.
    set_status(job, Queued, now);
    Ok(Some(EventKind::Status))
}
