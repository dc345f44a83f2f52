//! The commands of one attempt and its lease: claim, start, finish, a host failure, release, a
//! lost lease, its fence, adoption, heartbeats and a lease orphaned by a restart. [`super::apply`] is still
//! the one entry; these are its arms.

use super::{
    check_token, end_run, ended_in_a_row, fail_attempt, illegal, set_status, ApplyCtx, EventKind,
    FinishOutcome, Retry, TransitionError, HOST_FAILURE, RELEASED, RELEASES_GIVEN_BACK, REROUTED,
};
use crate::job::JobStatus::*;
use crate::job::{Job, Lease, Micros, Reported, RunHandle, RunRecord, MAX_RUN_RECORDS};

/// A worker takes a queued job: a new attempt, its lease and run record.
pub(super) fn claim(
    job: &mut Job,
    ctx: &ApplyCtx,
    worker: String,
    token: u64,
    lease_until: Micros,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if job.status != Queued {
        return Err(illegal(job, "claim"));
    }
    job.attempt += 1;
    job.lease = Some(Lease {
        worker: worker.clone(),
        token,
        expires_at: lease_until,
    });
    job.handle = None;
    job.started_at = None;
    start_clean(job);
    if job.runs.len() >= MAX_RUN_RECORDS {
        job.runs.remove(0);
    }
    job.runs.push(RunRecord {
        attempt: job.attempt,
        worker,
        token,
        claimed_at: now,
        started_at: None,
        ended_at: None,
        outcome: None,
        reported: None,
        time_limit: None,
        error: None,
    });
    set_status(job, Starting, now);
    Ok(Some(EventKind::Status))
}

/// Whether attempts are left: a failed attempt is tried again only then (and only if it may be).
/// The one rule for it: [`super::fail_attempt`], a lost lease, and [`ends_the_job`].
pub(super) fn attempts_left(job: &Job) -> bool {
    job.attempt < job.max_attempts
}

/// Whether the outcome the job reported ends the job once committed ([`super::commit_reported`]):
/// SUCCESS, or an ERROR that is not tried again (`retry: false`, or no attempts left).
pub(super) fn ends_the_job(job: &Job, reported: &Reported) -> bool {
    match reported {
        Reported::Success => true,
        Reported::Error { retry, .. } => !retry || !attempts_left(job),
        Reported::Timeout { .. } => false,
    }
}

/// What a new attempt starts without, whether a worker retries the job by itself (its claim) or
/// a client does ([`super::manage::retry`]): the last attempt's result, error, exit code,
/// progress and details, and the files it uploaded (its outputs; a client's files stay). A failed
/// attempt's word is never the job's: its error stays in the `errors` of the event that ended
/// it, and its run record keeps its outcome and error.
pub(super) fn start_clean(job: &mut Job) {
    job.result = None;
    job.error = None;
    job.exit_code = None;
    job.progress = 0.0;
    job.progress_due = None;
    job.status_details = None;
    job.files.retain(|_, list| {
        list.retain(|f| f.attempt.is_none());
        !list.is_empty()
    });
}

/// The runner started the attempt.
pub(super) fn started(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: u64,
    handle: Option<RunHandle>,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    check_token(job, token)?;
    match job.status {
        Starting => {
            job.handle = handle;
            job.started_at = Some(now);
            if let Some(r) = job.runs.last_mut() {
                r.started_at = Some(now);
            }
            set_status(job, Running, now);
            Ok(Some(EventKind::Status))
        }
        // The job reported RUNNING through its hook before the worker wrote this.
        Running => {
            job.handle = handle;
            Ok(None)
        }
        _ => Err(illegal(job, "start")),
    }
}

/// The attempt's process ended: what the job reported through its hook stands, else the runner's outcome.
pub(super) fn finish(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: u64,
    outcome: FinishOutcome,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    check_token(job, token)?;
    if !job.status.is_active() {
        return Err(illegal(job, "finish"));
    }
    let exit_code = match &outcome {
        FinishOutcome::Success(_)
        | FinishOutcome::Timeout(_)
        | FinishOutcome::Aborted { .. }
        | FinishOutcome::RetryAfter { .. } => None,
        FinishOutcome::Exited { exit_code } => Some(*exit_code),
        FinishOutcome::Failed { exit_code, .. } => *exit_code,
    };
    // What the job reported through its hook is its outcome, now that its process has
    // ended (whatever the exit code, and even when it had to be stopped).
    if let Some(reported) = job.reported() {
        commit_reported(job, ctx, reported, exit_code);
        return Ok(Some(EventKind::Status));
    }
    match outcome {
        FinishOutcome::Success(result) => {
            if result.is_some() {
                job.result = result;
            }
            succeed(job, now, exit_code);
        }
        FinishOutcome::Exited { .. } => succeed(job, now, exit_code),
        FinishOutcome::Failed { message, exit_code } => {
            fail_attempt(job, ctx, message, exit_code, Retry::Backoff)
        }
        FinishOutcome::Aborted { message } => fail_attempt(job, ctx, message, None, Retry::Never),
        FinishOutcome::RetryAfter { message, after_ms } => {
            fail_attempt(job, ctx, message, None, Retry::After(after_ms))
        }
        FinishOutcome::Timeout(message) => time_out(job, now, message),
    }
    Ok(Some(EventKind::Status))
}

/// The attempt's time limit ran out ([`super::Command::TimeLimit`]): marked, so that the job can no
/// longer report and its `Finish` commits TIMEOUT whatever the stopped work ends with. A job
/// that had reported first keeps its report; a job that ended meanwhile (cancelled) is refused.
pub(super) fn time_limit(
    job: &mut Job,
    token: u64,
    message: String,
) -> Result<Option<EventKind>, TransitionError> {
    check_token(job, token)?;
    if !job.status.is_active() {
        return Err(illegal(job, "time out"));
    }
    if job.reported().is_none() {
        if let Some(run) = job.runs.last_mut() {
            run.time_limit = Some(message);
        }
    }
    Ok(None)
}

/// The host could not launch the attempt: it is given back, not counted.
pub(super) fn host_failure(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: u64,
    message: String,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    check_token(job, token)?;
    if job.status != Starting {
        return Err(illegal(job, "give back a launch"));
    }
    let delay = host_failure_delay_us(job, ctx.jitter);
    job.error = Some(message);
    end_run(job, now, HOST_FAILURE);
    job.lease = None;
    job.max_attempts = job.max_attempts.saturating_add(1);
    job.run_at = Some(now.saturating_add(delay));
    set_status(job, Scheduled, now);
    Ok(Some(EventKind::Status))
}

/// The worker gives the job back (shutdown, a hand-off whose worker was gone): QUEUED again,
/// in its place (its `queued_at` kept), ahead of the jobs queued since, as a job a stopping
/// Sidekiq or BullMQ worker gives back goes first. The attempt is not the job's fault, so it is
/// given back as a host failure's is (`max_attempts` + 1; `attempt` itself never decreases), as
/// Sidekiq's retry count is untouched by a job pushed back at shutdown; but only for
/// [`RELEASES_GIVEN_BACK`] releases in a row. After those a release spends its attempt as a lost
/// worker's does, and one with no attempt left ends the job ERROR: a job that stops its own
/// worker each time (a deploy job that restarts runyard, a pod evicted for the job's memory)
/// is not given back for ever (Sidekiq Pro's super_fetch kills a job recovered 3 times).
pub(super) fn release(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: u64,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    check_token(job, token)?;
    if !job.status.is_active() {
        return Err(illegal(job, "release"));
    }
    // The job had said how it ended: that stands (its process was stopped after it).
    if let Some(reported) = job.reported() {
        commit_reported(job, ctx, reported, None);
        return Ok(Some(EventKind::Status));
    }
    end_run(job, now, RELEASED);
    job.lease = None;
    // This release included.
    let in_a_row = super::releases_in_a_row(job);
    if in_a_row <= RELEASES_GIVEN_BACK {
        job.max_attempts = job.max_attempts.saturating_add(1);
    } else if !attempts_left(job) {
        job.error = Some(format!(
            "given back by its worker {in_a_row} times in a row (stopped at shutdown, or its \
             worker gone before it started) and no attempt left"
        ));
        if let Some(r) = job.runs.last_mut() {
            r.error.clone_from(&job.error);
        }
        set_status(job, Error, now);
        return Ok(Some(EventKind::Status));
    }
    let place = job.queued_at;
    set_status(job, Queued, now);
    job.queued_at = place;
    Ok(Some(EventKind::Status))
}

/// The job goes to `runner` (`Command::Reroute`): a claim not launched is given back (QUEUED
/// in its place), its attempt with it as a release gives it; a job neither active nor finished
/// only changes runner.
pub(super) fn reroute(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: Option<u64>,
    from: Option<String>,
    runner: String,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if from.is_some_and(|f| f != job.runner) {
        return Err(illegal(job, "change runner (moved meanwhile)"));
    }
    let Some(token) = token else {
        if !matches!(job.status, Queued | Scheduled | Waiting) || job.lease.is_some() {
            return Err(illegal(job, "change runner"));
        }
        job.runner = runner;
        return Ok(None);
    };
    check_token(job, token)?;
    // Only a claim whose work was never launched: nothing runs, nothing was reported.
    if job.status != Starting || job.handle.is_some() || job.reported().is_some() {
        return Err(illegal(job, "change runner"));
    }
    end_run(job, now, REROUTED);
    if let Some(r) = job.runs.last_mut() {
        r.error = Some(format!(
            "not launched: runner `{}` does not claim type `{}`; given to runner `{runner}`",
            job.runner, job.job_type
        ));
    }
    job.lease = None;
    job.max_attempts = job.max_attempts.saturating_add(1);
    job.runner = runner;
    let place = job.queued_at;
    set_status(job, Queued, now);
    job.queued_at = place;
    Ok(Some(EventKind::Status))
}

/// The lease ran out: the worker is lost.
pub(super) fn lease_expired(
    job: &mut Job,
    ctx: &ApplyCtx,
    token: Option<u64>,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if let Some(t) = token {
        check_token(job, t)?;
    }
    let expired = job.lease.as_ref().is_some_and(|l| l.expires_at < now);
    if !job.status.is_active() || !expired {
        return Err(illegal(job, "expire a lease it does not have"));
    }
    // A job that said it succeeded, or failed for good, keeps its word; any other attempt is
    // lost with its worker.
    if let Some(
        r @ (Reported::Success | Reported::Error { retry: false, .. } | Reported::Timeout { .. }),
    ) = job.reported()
    {
        commit_reported(job, ctx, r, None);
        return Ok(Some(EventKind::Status));
    }
    let left = attempts_left(job);
    job.error = Some(if left {
        "worker lost: lease expired; requeued".into()
    } else {
        "worker lost: lease expired and no attempt is left".into()
    });
    end_run(job, now, "LOST");
    job.lease = None;
    set_status(job, if left { Queued } else { Error }, now);
    Ok(Some(EventKind::Status))
}

/// The reaper fences an expired lease (`Command::Fence`): only its token changes.
pub(super) fn fence(
    job: &mut Job,
    ctx: &ApplyCtx,
    expected: u64,
    token: u64,
) -> Result<Option<EventKind>, TransitionError> {
    check_token(job, expected)?;
    let lease = job.lease.as_mut().filter(|l| l.expires_at < ctx.now);
    match lease {
        Some(l) if job.status.is_active() => {
            l.token = token;
            Ok(None)
        }
        _ => Err(illegal(job, "be fenced")),
    }
}

/// Another worker takes over an expired lease (only the one whose token is `expected`, when
/// given).
pub(super) fn adopt(
    job: &mut Job,
    ctx: &ApplyCtx,
    expected: Option<u64>,
    worker: String,
    token: u64,
    lease_until: Micros,
) -> Result<Option<EventKind>, TransitionError> {
    let now = ctx.now;
    if let Some(t) = expected {
        check_token(job, t)?;
    }
    let expired = job.lease.as_ref().is_some_and(|l| l.expires_at < now);
    if !job.status.is_active() || !expired {
        return Err(illegal(job, "be adopted"));
    }
    job.lease = Some(Lease {
        worker: worker.clone(),
        token,
        expires_at: lease_until,
    });
    if let Some(r) = job.runs.last_mut() {
        r.worker = worker;
        r.token = token;
    }
    Ok(None)
}

/// The worker renews its lease. Changes nothing unless it succeeds (`apply` runs it on the job
/// itself, without a copy).
pub(super) fn heartbeat_lease(
    job: &mut Job,
    worker: String,
    token: u64,
    lease_until: Micros,
    now: Micros,
) -> Result<Option<EventKind>, TransitionError> {
    match job.lease.as_mut() {
        Some(l) if l.token == token && l.worker == worker && job.status.is_active() => {
            l.expires_at = lease_until;
            // A held progress event past its time: the process that took the report was to send
            // it and did not (it stopped, or its store was away); the job's own worker sends it
            // with the renewal (`worker/held_progress.rs`).
            if job.progress_due.is_some_and(|due| due <= now) {
                job.progress_due = None;
                job.progress_event_at = now;
                return Ok(Some(EventKind::Progress));
            }
            Ok(None)
        }
        Some(l) if l.token == token && l.worker == worker => Err(illegal(job, "renew a lease")),
        _ => Err(TransitionError::StaleLease),
    }
}

/// At start-up: a lease of this process's last life, to expire at once. Changes nothing unless
/// it succeeds (as `heartbeat_lease`).
pub(super) fn orphan_lease(
    job: &mut Job,
    now: Micros,
) -> Result<Option<EventKind>, TransitionError> {
    match job.lease.as_mut() {
        Some(l) if job.status.is_active() => {
            l.expires_at = 0;
            Ok(None)
        }
        // A cancelled job's lease, kept while its worker stopped the work: it runs out now, so
        // the reaper makes sure the work is gone (`StopLost`) at once; and a retry still waits
        // for that (`Job::still_stopping` counts from the expiry).
        Some(l) if job.status == Cancelled => {
            l.expires_at = l.expires_at.min(now);
            Ok(None)
        }
        _ => Err(illegal(job, "orphan a lease it does not have")),
    }
}

pub(super) fn succeed(job: &mut Job, now: Micros, exit_code: Option<i32>) {
    job.progress = 1.0;
    job.error = None;
    job.exit_code = exit_code;
    end_run(job, now, "SUCCESS");
    set_status(job, Success, now);
}

/// The attempt ran out of time: TIMEOUT, final (no retry).
pub(super) fn time_out(job: &mut Job, now: Micros, message: String) {
    job.error = Some(message);
    end_run(job, now, "TIMEOUT");
    set_status(job, Timeout, now);
}

/// Commits the outcome decided before the attempt's process ended (its process has ended).
pub(super) fn commit_reported(
    job: &mut Job,
    ctx: &ApplyCtx,
    reported: Reported,
    exit_code: Option<i32>,
) {
    match reported {
        Reported::Success => succeed(job, ctx.now, exit_code),
        Reported::Error { message, retry } => {
            let retry = if retry { Retry::Backoff } else { Retry::Never };
            fail_attempt(job, ctx, message, exit_code, retry)
        }
        Reported::Timeout { message } => time_out(job, ctx.now, message),
    }
}

/// The attempts that counted against the job, for its backoff: its `attempt` less the runs that
/// gave theirs back (host failures, re-routes, releases within their row's bound), so that a job
/// stopped by three deploys waits after its first failure as long as any other. Only the run
/// records kept (the last `MAX_RUN_RECORDS`) are counted; older ones count against it.
pub(super) fn counted_attempts(job: &Job) -> u32 {
    let (mut given_back, mut row) = (0u32, 0usize);
    for r in &job.runs {
        match r.outcome.as_deref() {
            Some(HOST_FAILURE | REROUTED) => {
                given_back += 1;
                row = 0;
            }
            Some(RELEASED) => {
                row += 1;
                if row <= RELEASES_GIVEN_BACK {
                    given_back += 1;
                }
            }
            _ => row = 0,
        }
    }
    job.attempt.saturating_sub(given_back).max(1)
}

/// The backoff after a host failure: 500 ms doubled for each host failure just before this one
/// (at most 30 s), with ±25 % jitter, in microseconds.
fn host_failure_delay_us(job: &Job, jitter: f64) -> i64 {
    // The current run (being ended) is not yet marked; count the ones before it.
    let before = &job.runs[..job.runs.len().saturating_sub(1)];
    let earlier = ended_in_a_row(before, HOST_FAILURE).min(6) as u32;
    let base_ms = (500u64 << earlier).min(30_000) as f64;
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    (base_ms * (0.75 + 0.5 * jitter) * 1000.0) as i64
}
