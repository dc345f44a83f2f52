//! The one place where a job changes. Every backend loads the job, calls [`apply`] and writes the
//! result atomically (SQLite: in its single writer transaction; Redis: a compare-and-set on
//! `version`), so the rules below hold whatever the backend.

use serde_json::Value;

mod attempts;
mod beat;
mod manage;
mod progress;

pub use beat::{heartbeat, Beat};

use super::{FileRef, Job, JobStatus, Micros, Reported, RunHandle};

/// A change requested of a job.
#[derive(Debug, Clone)]
pub enum Command {
    /// A worker claims a QUEUED job: STARTING, attempt + 1, a lease with a fencing token.
    Claim {
        /// Worker id.
        worker: String,
        /// Fencing token (unique per claim).
        token: u64,
        /// Lease expiry.
        lease_until: Micros,
    },
    /// The runner launched the work: RUNNING, with the handle to find it again.
    Started {
        /// The claim's token.
        token: u64,
        /// The runner's handle.
        handle: Option<RunHandle>,
    },
    /// Progress from the worker (service context) or from the job's hook.
    Progress {
        /// The claim's token, for worker writes.
        token: Option<u64>,
        /// Progress 0..=1.
        progress: Option<f64>,
        /// Details.
        details: Option<Value>,
    },
    /// A report through the job hook (already authenticated for the job's current attempt).
    Hook(HookReport),
    /// The worker's final word on an attempt.
    Finish {
        /// The claim's token.
        token: u64,
        /// What happened.
        outcome: FinishOutcome,
    },
    /// The worker found the attempt's time limit run out and is about to stop its work: the
    /// attempt will end TIMEOUT (committed by its `Finish` once the work has stopped), and the
    /// job can no longer report. An outcome the job reported before stays the outcome. No
    /// event: the status changes when the work has stopped.
    TimeLimit {
        /// The claim's token.
        token: u64,
        /// The job's `error` then, e.g. `timed out after 1s`.
        message: String,
    },
    /// The worker could not launch the attempt because the host ran out of resources (file
    /// descriptors, memory, processes): not the job's fault. SCHEDULED again after a short
    /// backoff that grows with consecutive host failures, and the attempt is given back
    /// (`max_attempts` + 1, so that `attempt` itself never decreases).
    HostFailure {
        /// The claim's token.
        token: u64,
        /// What failed, e.g. `cannot start `sh`: Too many open files (os error 24)`.
        message: String,
    },
    /// The worker gives the job back (graceful shutdown, a hand-off or refill whose worker was
    /// gone): QUEUED again in its place (its `queued_at` kept), ahead of the jobs queued since,
    /// and the attempt given back (`max_attempts` + 1), as after a host failure.
    Release {
        /// The claim's token.
        token: u64,
    },
    /// The reaper found the lease expired: requeue, or ERROR when no attempt is left. With a
    /// `token`, refused unless the lease still has it (the reaper's fence, or the lease it read).
    LeaseExpired {
        /// The lease's token the reaper decided on; `None`: any expired lease.
        token: Option<u64>,
    },
    /// The reaper fences an expired lease before it looks for the work of an active job whose
    /// handle was never recorded (to adopt it, record how it ended, or make sure it is gone):
    /// the lease's token becomes `token` (its worker can no longer renew it nor write), its
    /// holder, its run and its expiry stay. Refused unless the lease has `expected`, ran out,
    /// and the job is active.
    Fence {
        /// The lease's token the reaper read.
        expected: u64,
        /// The fence's new token.
        token: u64,
    },
    /// A worker takes over live work whose lease expired (a container that outlived its
    /// worker): same attempt, new lease and token. With `expected`, refused unless the lease
    /// still has that token (the reaper's fence, put before it looked for work whose handle was
    /// never recorded).
    Adopt {
        /// The lease's token the adopter decided on; `None`: any expired lease.
        expected: Option<u64>,
        /// Worker id.
        worker: String,
        /// New fencing token.
        token: u64,
        /// Lease expiry.
        lease_until: Micros,
    },
    /// A worker renews the lease it holds (its heartbeat): the lease runs until `lease_until`.
    /// Refused when the lease is no longer this worker's claim (cancelled, timed out, taken
    /// over) or the job is no longer active: see [`heartbeat`] for what the worker is told.
    Heartbeat {
        /// Worker id.
        worker: String,
        /// The claim's token.
        token: u64,
        /// New lease expiry.
        lease_until: Micros,
    },
    /// The process that held an active job's lease is known to be gone (the embedded store is
    /// opened again after a crash: no other process can hold it): the lease expires at once, so
    /// the reaper decides (`LeaseExpired`, or `Adopt` of live work) as for any lost lease.
    OrphanLease,
    /// A client cancels the job.
    Cancel,
    /// The worker that held a job when it ended elsewhere (cancelled) has stopped its work: the
    /// lease it kept goes, and a retry may run a new attempt (refused while the lease holds, so
    /// that two attempts never overlap). Refused for a job not cancelled or another lease.
    Stopped {
        /// The claim's token.
        token: u64,
    },
    /// The reaper made sure the work of a job cancelled while it ran, whose worker let the
    /// lease run out (gone, or hung) before it said the work stopped, is gone (its runner's
    /// `recover` killed or found nothing; see `src/worker/reaper.rs`): the lease goes, as with
    /// `Stopped`. Refused unless the job is CANCELLED and holds this expired lease.
    StopLost {
        /// The expired lease's token.
        token: u64,
    },
    /// A client retries a job that did not succeed: a new attempt; with `runner`, under that
    /// runner (its own is gone from the config or no longer claims its type: routed again).
    Retry {
        /// The runner the job is queued for from now on (`None`: its own).
        runner: Option<String>,
    },
    /// The job's runner is gone from this process's config or no longer claims its type: it
    /// goes to `runner`. With `token`, a claimed job that was not launched (the worker's claim
    /// guard): QUEUED in its place, its attempt given back as by a
    /// [`Command::Release`] (its run ends [`REROUTED`]). Without, a job neither active nor
    /// finished (at start): only its runner changes, no event.
    Reroute {
        /// The claim's token (`None`: a job not claimed).
        token: Option<u64>,
        /// Only if the job is still queued for this runner (what the caller read; refused
        /// otherwise: another process may have moved it meanwhile).
        from: Option<String>,
        /// The runner the job is queued for from now on.
        runner: String,
    },
    /// A SCHEDULED job is due: QUEUED.
    Promote,
    /// The progress event a report held back by `progress_interval` (`progress_pending`) is
    /// due: a progress event now, so that the last value reported is the last one sent (not
    /// one up to the end of the job older). Refused when nothing is held or the job is no
    /// longer active.
    ProgressFlush,
    /// Every item of a WAITING job has its count of records: QUEUED, released by signals. The
    /// store found the records (`seen`, per item: how many, their sequence numbers).
    WaitRelease {
        /// Per item of `wait.items`.
        seen: super::wait::Seen,
    },
    /// A WAITING job's deadline passed: QUEUED (`run`), ERROR `deadline_missed` (`fail`) or
    /// CANCELLED `skipped` (`skip`). The store read the records there are (`seen`, as for
    /// `WaitRelease`): the job keeps them, and the error names the keys still short.
    WaitDeadline {
        /// Per item of `wait.items`.
        seen: super::wait::Seen,
    },
    /// Attach a file to a property: by a client (any non-terminal status) or by the running job
    /// itself through the hook (`by_attempt`: only while active).
    AttachFile {
        /// The property, e.g. `inputs`.
        property: String,
        /// The file.
        file: FileRef,
        /// The uploading attempt, for the job's own uploads (`None`: a client's file): refused
        /// ([`TransitionError::StaleAttempt`]) unless it is still the job's attempt.
        by_attempt: Option<u32>,
    },
}

/// What a job reported through the hook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookReport {
    /// RUNNING, SUCCESS or ERROR.
    pub status: Option<JobStatus>,
    /// Progress 0..=1.
    pub progress: Option<f64>,
    /// Details.
    pub details: Option<Value>,
    /// The result.
    pub results: Option<Value>,
    /// Error message (with ERROR).
    pub error: Option<String>,
    /// With ERROR: `Some(false)` when the job must not be retried (`retry: false` in the report).
    pub retry: Option<bool>,
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    /// Success with an optional result (a service function).
    Success(Option<Value>),
    /// A process or container ended with exit code 0.
    Exited {
        /// The exit code (0).
        exit_code: i32,
    },
    /// Failure: retried with backoff while attempts are left, else ERROR.
    Failed {
        /// Message.
        message: String,
        /// Exit code, when there is one.
        exit_code: Option<i32>,
    },
    /// Ran past its timeout (final).
    Timeout(String),
    /// Failure that no retry can fix (a service function's `AbortError`): ERROR at once, the
    /// remaining attempts unused.
    Aborted {
        /// Message.
        message: String,
    },
    /// Failure that asked for its next attempt after `after_ms` (a service function's
    /// `RetryAfterError`): retried then, instead of after the backoff, while attempts are left.
    RetryAfter {
        /// Message.
        message: String,
        /// Milliseconds before the next attempt.
        after_ms: u64,
    },
}

/// Whether the change makes an event, and of which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A status change.
    Status,
    /// A progress report.
    Progress,
}

/// Why a change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransitionError {
    /// The status machine does not allow it.
    #[error("job is {from}: cannot {action}")]
    Illegal {
        /// The current status.
        from: JobStatus,
        /// What was attempted.
        action: &'static str,
    },
    /// The writer's fencing token is not the current lease's: it lost the job.
    #[error("stale lease: the job is held by another claim")]
    StaleLease,
    /// The request itself is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A job's upload from an attempt that is no longer the job's (it was claimed again since).
    #[error("stale attempt: this upload belongs to an earlier attempt")]
    StaleAttempt,
}

/// The context of a change: the clock and the knobs that must not be hidden inside backends.
#[derive(Debug, Clone, Copy)]
pub struct ApplyCtx {
    /// Now.
    pub now: Micros,
    /// A random number in `[0, 1)` for backoff jitter.
    pub jitter: f64,
    /// Minimum time between two progress events of one job.
    pub progress_interval: Micros,
}

impl ApplyCtx {
    /// A context at `now` with a fresh random jitter.
    pub fn at(now: Micros, progress_interval: Micros) -> Self {
        Self {
            now,
            jitter: rand::random::<f64>(),
            progress_interval,
        }
    }
}

fn illegal(job: &Job, action: &'static str) -> TransitionError {
    TransitionError::Illegal {
        from: job.status,
        action,
    }
}

fn check_token(job: &Job, token: u64) -> Result<(), TransitionError> {
    match &job.lease {
        Some(l) if l.token == token => Ok(()),
        _ => Err(TransitionError::StaleLease),
    }
}

fn set_status(job: &mut Job, to: JobStatus, now: Micros) {
    debug_assert!(job.status.can_move_to(to), "{} -> {}", job.status, to);
    job.status = to;
    if to.is_terminal() {
        job.finished_at = Some(now);
    }
    if to == JobStatus::Queued {
        job.queued_at = now;
    }
}

/// Ends the attempt's run record, with the job's `error` at that point.
fn end_run(job: &mut Job, now: Micros, outcome: &str) {
    if let Some(r) = job.runs.last_mut() {
        if r.ended_at.is_none() {
            r.ended_at = Some(now);
            r.outcome = Some(outcome.to_string());
            r.error.clone_from(&job.error);
        }
    }
}

/// Whether and when a failed attempt is tried again (while attempts are left).
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// After the job's backoff.
    Backoff,
    /// After this many milliseconds.
    After(u64),
    /// Not at all: ERROR now.
    Never,
}

/// Fails the current attempt: a retry if attempts are left (and `retry`), else ERROR.
fn fail_attempt(
    job: &mut Job,
    ctx: &ApplyCtx,
    message: String,
    exit_code: Option<i32>,
    retry: Retry,
) {
    job.error = Some(message);
    job.exit_code = exit_code;
    let after_ms = match retry {
        Retry::Backoff => Some(
            job.backoff
                .delay_ms(attempts::counted_attempts(job), ctx.jitter),
        ),
        Retry::After(ms) => Some(ms),
        Retry::Never => None,
    };
    if let (Some(ms), true) = (after_ms, attempts::attempts_left(job)) {
        let delay = i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000);
        end_run(job, ctx.now, "ERROR");
        job.lease = None;
        job.run_at = Some(ctx.now.saturating_add(delay));
        set_status(job, JobStatus::Scheduled, ctx.now);
    } else {
        end_run(job, ctx.now, "ERROR");
        set_status(job, JobStatus::Error, ctx.now);
    }
}

/// The run outcome of an attempt given back by [`Command::HostFailure`].
pub const HOST_FAILURE: &str = "HOST_FAILURE";

/// The run outcome of an attempt its worker gave back ([`Command::Release`]).
pub const RELEASED: &str = "RELEASED";

/// The run outcome of an attempt its worker did not launch because its runner does not claim
/// the job's type ([`Command::Reroute`]): given back.
pub const REROUTED: &str = "REROUTED";

/// How many of the job's last runs in a row were given back by their worker (`RELEASED`).
pub fn releases_in_a_row(job: &Job) -> usize {
    ended_in_a_row(&job.runs, RELEASED)
}

/// How many of `runs`, counted back from the last, ended with `outcome` in a row.
fn ended_in_a_row(runs: &[super::RunRecord], outcome: &str) -> usize {
    runs.iter()
        .rev()
        .take_while(|r| r.outcome.as_deref() == Some(outcome))
        .count()
}

/// Releases in a row whose attempt is given back (`max_attempts` + 1); later ones in the same
/// row spend theirs, and end the job ERROR when none is left.
pub const RELEASES_GIVEN_BACK: usize = 5;

/// Applies `cmd` to `job`. On success the job is changed (and `version`/`updated_at` bumped) and
/// the returned kind says which event to append; on error the job is untouched. Lease
/// bookkeeping (`Heartbeat`, `OrphanLease`) bumps `version` (writers compare it) but not
/// `updated_at`, which says when the job itself last changed ("started 5 min ago" stays true).
pub fn apply(
    job: &mut Job,
    cmd: Command,
    ctx: &ApplyCtx,
) -> Result<Option<EventKind>, TransitionError> {
    if matches!(cmd, Command::Heartbeat { .. } | Command::OrphanLease) {
        // These change the lease only, after every check passed: no copy of the job needed
        // (a heartbeat runs for every held job every `lease_ttl / 3`).
        let ev = apply_inner(job, cmd, ctx)?;
        job.version += 1;
        return Ok(ev);
    }
    let mut next = job.clone();
    let ev = apply_inner(&mut next, cmd, ctx)?;
    if ev.is_some() {
        // Every event carries the job's progress: nothing is held back any more (a hook
        // report moving the job to RUNNING with a value held sent it twice: review of session
        // 54, L5).
        next.progress_due = None;
    }
    super::error_text::cap_job_errors(&mut next); // whoever wrote it
    next.version += 1;
    next.updated_at = ctx.now;
    *job = next;
    Ok(ev)
}

fn apply_inner(
    job: &mut Job,
    cmd: Command,
    ctx: &ApplyCtx,
) -> Result<Option<EventKind>, TransitionError> {
    match cmd {
        Command::Claim {
            worker,
            token,
            lease_until,
        } => attempts::claim(job, ctx, worker, token, lease_until),
        Command::Started { token, handle } => attempts::started(job, ctx, token, handle),
        Command::Progress {
            token,
            progress,
            details,
        } => {
            if let Some(t) = token {
                check_token(job, t)?;
            }
            if !job.status.is_active() {
                return Err(illegal(job, "report progress"));
            }
            progress::update(job, progress, details, ctx)
        }
        Command::Hook(report) => hook_report(job, report, ctx),
        Command::Finish { token, outcome } => attempts::finish(job, ctx, token, outcome),
        Command::TimeLimit { token, message } => attempts::time_limit(job, token, message),
        Command::HostFailure { token, message } => attempts::host_failure(job, ctx, token, message),
        Command::Release { token } => attempts::release(job, ctx, token),
        Command::LeaseExpired { token } => attempts::lease_expired(job, ctx, token),
        Command::Fence { expected, token } => attempts::fence(job, ctx, expected, token),
        Command::Adopt {
            expected,
            worker,
            token,
            lease_until,
        } => attempts::adopt(job, ctx, expected, worker, token, lease_until),
        Command::Heartbeat {
            worker,
            token,
            lease_until,
        } => attempts::heartbeat_lease(job, worker, token, lease_until, ctx.now),
        Command::OrphanLease => attempts::orphan_lease(job, ctx.now),
        Command::Cancel => manage::cancel(job, ctx),
        Command::Stopped { token } => manage::stopped(job, token),
        Command::StopLost { token } => manage::stop_lost(job, ctx, token),
        Command::Retry { runner } => manage::retry(job, ctx, runner),
        Command::Reroute {
            token,
            from,
            runner,
        } => attempts::reroute(job, ctx, token, from, runner),
        Command::AttachFile {
            property,
            file,
            by_attempt,
        } => manage::attach_file(job, property, file, by_attempt),
        Command::WaitRelease { seen } => manage::wait_release(job, ctx, seen),
        Command::WaitDeadline { seen } => manage::wait_deadline(job, ctx, seen),
        Command::Promote => manage::promote(job, ctx),
        Command::ProgressFlush => progress::flush(job, ctx),
    }
}

fn hook_report(
    job: &mut Job,
    r: HookReport,
    ctx: &ApplyCtx,
) -> Result<Option<EventKind>, TransitionError> {
    use JobStatus::*;
    let now = ctx.now;
    if job.status.is_terminal() {
        return Err(illegal(job, "report through the hook"));
    }
    if !job.status.is_active() {
        return Err(illegal(job, "report before it was started"));
    }
    match job.reported() {
        Some(Reported::Timeout { .. }) => {
            return Err(illegal(job, "report: its time limit ran out"))
        }
        Some(_) => {
            return Err(illegal(
                job,
                "report again after it reported SUCCESS or ERROR",
            ))
        }
        None => {}
    }
    let mut ev = progress::update(job, r.progress, r.details, ctx)?;
    if r.results.is_some() {
        job.result = r.results;
    }
    match r.status {
        None => {}
        Some(Running) if job.status == Starting => {
            job.started_at = Some(now);
            set_status(job, Running, now);
            ev = Some(EventKind::Status);
        }
        // Already RUNNING: a duplicate report changes nothing.
        Some(Running) => {}
        // SUCCESS and ERROR are remembered on the attempt and committed by the worker once the
        // job's process has ended (its last output stored): an ERROR is then retried with
        // backoff like a crash, unless the report said `retry: false`, and no retry can overlap
        // with a process that is still alive.
        Some(Success) => {
            if let Some(run) = job.runs.last_mut() {
                run.reported = Some(Reported::Success);
            }
        }
        Some(Error) => {
            let message = r
                .error
                .clone()
                .unwrap_or_else(|| "the job reported an error".into());
            job.error = Some(message.clone());
            if let Some(run) = job.runs.last_mut() {
                run.reported = Some(Reported::Error {
                    message,
                    retry: r.retry != Some(false),
                });
            }
        }
        Some(other) => {
            return Err(TransitionError::Invalid(format!(
                "a job may report RUNNING, SUCCESS or ERROR, not {other}"
            )))
        }
    }
    if r.status != Some(Error) {
        if let Some(e) = r.error {
            job.error = Some(e);
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::MAX_ERROR_BYTES;
    use crate::job::{Backoff, Event};
    use serde_json::json;

    pub(crate) fn job() -> Job {
        Job {
            channel_id: "c".into(),
            max_attempts: 2,
            backoff: Backoff {
                initial_ms: 100,
                max_ms: 100,
                multiplier: 1.0,
                jitter: false,
            },
            ..Job::new("t", "r", 0)
        }
    }

    fn ctx(now: Micros) -> ApplyCtx {
        ApplyCtx {
            now,
            jitter: 0.0,
            progress_interval: 1000,
        }
    }

    /// A progress report of `v` under claim token 1.
    fn progress_of_claim_1(v: f64) -> Command {
        Command::Progress {
            token: Some(1),
            progress: Some(v),
            details: None,
        }
    }

    fn claim(j: &mut Job, token: u64) {
        apply(
            j,
            Command::Claim {
                worker: "w".into(),
                token,
                lease_until: 10_000,
            },
            &ctx(1),
        )
        .unwrap();
    }

    /// Review of the error cap: a host failure's and a time out's message were stored whole (the
    /// cap was applied by some writers only). Every writer goes through `apply`: capped there.
    #[test]
    fn every_stored_error_is_capped_whatever_writes_it() {
        let long = "x".repeat(900_000);
        let capped = |j: &Job, what: &str| {
            let e = j.error.as_deref().unwrap_or("");
            assert!(e.len() <= MAX_ERROR_BYTES, "{what}: {}", e.len());
            assert!(
                e.ends_with("… [runyard: cut, 900000 bytes in all]"),
                "{what}"
            );
            for r in &j.runs {
                for e in [&r.error, &r.time_limit].into_iter().flatten() {
                    assert!(e.len() <= MAX_ERROR_BYTES, "{what}: run {}", e.len());
                }
            }
        };
        let mut j = job();
        claim(&mut j, 1);
        let host = Command::HostFailure {
            token: 1,
            message: long.clone(),
        };
        apply(&mut j, host, &ctx(2)).unwrap();
        capped(&j, "host failure");
        let mut k = job();
        claim(&mut k, 1);
        let limit = Command::TimeLimit {
            token: 1,
            message: long.clone(),
        };
        apply(&mut k, limit, &ctx(2)).unwrap();
        let finish = Command::Finish {
            token: 1,
            outcome: FinishOutcome::Timeout(long.clone()),
        };
        apply(&mut k, finish, &ctx(3)).unwrap();
        assert_eq!(k.status, JobStatus::Timeout);
        capped(&k, "time out");
    }

    #[test]
    fn a_reroute_gives_a_claim_back_to_another_runner_or_moves_a_waiting_job() {
        let mut j = job();
        let place = j.queued_at;
        claim(&mut j, 7);
        let to = |token, runner: &str| Command::Reroute {
            token,
            from: None,
            runner: runner.into(),
        };
        assert_eq!(
            apply(&mut j.clone(), to(Some(8), "s"), &ctx(5)),
            Err(TransitionError::StaleLease)
        );
        assert!(apply(&mut j.clone(), to(None, "s"), &ctx(5)).is_err());
        apply(&mut j, to(Some(7), "s"), &ctx(50)).unwrap();
        assert_eq!((j.status, j.runner.as_str()), (JobStatus::Queued, "s"));
        assert_eq!(j.queued_at, place);
        assert_eq!((j.attempt, j.max_attempts), (1, 3));
        assert!(j.lease.is_none());
        let run = j.runs.last().unwrap();
        assert_eq!(run.outcome.as_deref(), Some(REROUTED));
        assert!(
            run.error.as_deref().unwrap().contains("runner `r`"),
            "{run:?}"
        );
        // Not claimed: the runner only, no event; only from the runner the caller read.
        let moved = |from: &str| Command::Reroute {
            token: None,
            from: Some(from.into()),
            runner: "u".into(),
        };
        assert!(apply(&mut j.clone(), moved("r"), &ctx(60)).is_err());
        assert_eq!(apply(&mut j.clone(), moved("s"), &ctx(60)), Ok(None));
        assert_eq!(apply(&mut j, to(None, "u"), &ctx(60)), Ok(None));
        assert_eq!((j.status, j.runner.as_str()), (JobStatus::Queued, "u"));
        // Given back again (parked): its attempt given back once more.
        claim(&mut j, 9);
        apply(&mut j, to(Some(9), "u"), &ctx(70)).unwrap();
        assert_eq!((j.status, j.max_attempts), (JobStatus::Queued, 4));
    }

    #[test]
    fn a_job_given_back_keeps_its_place_and_a_retry_goes_to_the_back() {
        let mut j = Job {
            max_attempts: 3,
            ..job()
        };
        let place = j.queued_at;
        claim(&mut j, 7);
        apply(&mut j, Command::Release { token: 7 }, &ctx(50)).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(j.queued_at, place);
        assert_eq!(j.runs[0].outcome.as_deref(), Some("RELEASED"));
        // The attempt is given back: its number stays spent, one more is allowed.
        assert_eq!((j.attempt, j.max_attempts), (1, 4));
        // A retry after a failure is queued anew: behind the jobs queued meanwhile.
        claim(&mut j, 8);
        let fail = Command::Finish {
            token: 8,
            outcome: FinishOutcome::Failed {
                message: "exit 1".into(),
                exit_code: Some(1),
            },
        };
        apply(&mut j, fail, &ctx(60)).unwrap();
        apply(&mut j, Command::Promote, &ctx(200_000)).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(j.queued_at, 200_000);
    }

    #[test]
    fn releases_in_a_row_give_their_attempt_back_only_so_many_times() {
        let mut j = Job {
            max_attempts: 2,
            ..job()
        };
        let mut token = 0;
        let release = |j: &mut Job, token: &mut u64| {
            *token += 1;
            claim(j, *token);
            let cmd = Command::Release { token: *token };
            apply(j, cmd, &ctx(50)).unwrap();
        };
        for n in 1..=RELEASES_GIVEN_BACK as u32 {
            release(&mut j, &mut token);
            assert_eq!(j.status, JobStatus::Queued);
            assert_eq!((j.attempt, j.max_attempts), (n, n + 2), "given back");
        }
        // From the next one in the row on, a release spends its attempt...
        let given = RELEASES_GIVEN_BACK as u32;
        release(&mut j, &mut token);
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!((j.attempt, j.max_attempts), (given + 1, given + 2));
        // ...and with none left the job ends, said why.
        release(&mut j, &mut token);
        assert_eq!(j.status, JobStatus::Error);
        assert_eq!((j.attempt, j.max_attempts), (given + 2, given + 2));
        assert!(j.finished_at.is_some() && j.lease.is_none());
        let why = j.error.as_deref().unwrap_or_default();
        assert!(
            why.contains("given back by its worker 7 times in a row"),
            "{why}"
        );
        assert_eq!(j.runs.last().unwrap().outcome.as_deref(), Some(RELEASED));

        // A run that ended otherwise breaks the row: the count starts again.
        let mut j = Job {
            max_attempts: 1,
            ..job()
        };
        for _ in 0..RELEASES_GIVEN_BACK {
            release(&mut j, &mut token);
        }
        token += 1;
        claim(&mut j, token);
        let host = Command::HostFailure {
            token,
            message: "EMFILE".into(),
        };
        apply(&mut j, host, &ctx(60)).unwrap();
        apply(&mut j, Command::Promote, &ctx(100_000_000)).unwrap();
        let before = j.max_attempts;
        release(&mut j, &mut token);
        assert_eq!(j.max_attempts, before + 1, "a new row");
    }

    #[test]
    fn attempts_given_back_do_not_lengthen_the_backoff() {
        let mut j = Job {
            max_attempts: 2,
            backoff: Backoff {
                initial_ms: 1000,
                max_ms: 600_000,
                multiplier: 2.0,
                jitter: false,
            },
            ..job()
        };
        for token in 1..=3 {
            claim(&mut j, token);
            apply(&mut j, Command::Release { token }, &ctx(50)).unwrap();
        }
        claim(&mut j, 4);
        let host = Command::HostFailure {
            token: 4,
            message: "EMFILE".into(),
        };
        apply(&mut j, host, &ctx(60)).unwrap();
        apply(&mut j, Command::Promote, &ctx(100_000_000)).unwrap();
        claim(&mut j, 5);
        let fail = Command::Finish {
            token: 5,
            outcome: FinishOutcome::Failed {
                message: "exit 1".into(),
                exit_code: Some(1),
            },
        };
        apply(&mut j, fail, &ctx(200_000_000)).unwrap();
        assert_eq!(j.status, JobStatus::Scheduled, "attempts left: {j:#?}");
        assert_eq!(j.attempt, 5);
        // The first failure that counted waits the first backoff (1 s), not 2^4 of it.
        assert_eq!(j.run_at, Some(200_000_000 + 1_000_000));
    }

    #[test]
    fn failure_retries_with_backoff_then_errors() {
        let mut j = job();
        claim(&mut j, 7);
        let fail = |t| Command::Finish {
            token: t,
            outcome: FinishOutcome::Failed {
                message: "exit 1".into(),
                exit_code: Some(1),
            },
        };
        apply(&mut j, fail(7), &ctx(5)).unwrap();
        assert_eq!(j.status, JobStatus::Scheduled);
        assert_eq!(j.run_at, Some(5 + 100_000));
        apply(&mut j, Command::Promote, &ctx(6)).unwrap();
        claim(&mut j, 8);
        assert_eq!(j.attempt, 2);
        // The first attempt's worker is fenced off.
        assert_eq!(
            apply(&mut j, fail(7), &ctx(7)),
            Err(TransitionError::StaleLease)
        );
        apply(&mut j, fail(8), &ctx(8)).unwrap();
        assert_eq!(j.status, JobStatus::Error);
        assert_eq!(j.exit_code, Some(1));
        assert_eq!(j.runs.len(), 2);
    }

    #[test]
    fn a_huge_stored_backoff_neither_overflows_nor_skips_the_delay() {
        let mut j = job();
        // A policy stored before backoffs were range-checked.
        j.backoff = crate::job::Backoff {
            initial_ms: u64::MAX,
            max_ms: u64::MAX,
            multiplier: 100.0,
            jitter: false,
        };
        claim(&mut j, 7);
        let now = i64::MAX - 10;
        let fail = Command::Finish {
            token: 7,
            outcome: FinishOutcome::Failed {
                message: "exit 1".into(),
                exit_code: Some(1),
            },
        };
        apply(&mut j, fail.clone(), &ctx(5)).unwrap();
        assert_eq!(
            j.run_at,
            Some(5 + crate::job::MAX_BACKOFF_MS as i64 * 1000),
            "capped at 30 days, not wrapped"
        );
        // Even at the end of time the addition saturates.
        let mut k = job();
        k.backoff = j.backoff;
        claim(&mut k, 7);
        apply(&mut k, fail, &ctx(now)).unwrap();
        assert_eq!(k.run_at, Some(i64::MAX));
    }

    #[test]
    fn terminal_stays_terminal_and_refusals_change_nothing() {
        let mut j = job();
        claim(&mut j, 1);
        apply(&mut j, Command::Cancel, &ctx(2)).unwrap();
        let before = j.clone();
        for cmd in [
            Command::Cancel,
            Command::Promote,
            Command::Started {
                token: 1,
                handle: None,
            },
            Command::Finish {
                token: 1,
                outcome: FinishOutcome::Success(None),
            },
            Command::Hook(HookReport {
                status: Some(JobStatus::Success),
                ..Default::default()
            }),
            Command::LeaseExpired { token: None },
            // Its worker has not said the work stopped, and the lease holds: no new attempt
            // may run beside the old one yet.
            Command::Retry { runner: None },
            // Not this claim's.
            Command::Stopped { token: 2 },
        ] {
            assert!(apply(&mut j, cmd, &ctx(3)).is_err());
            assert_eq!(j, before);
        }
        apply(&mut j, Command::Stopped { token: 1 }, &ctx(4)).unwrap();
        assert_eq!(j.lease, None);
        assert_eq!(j.status, JobStatus::Cancelled);
        apply(&mut j, Command::Retry { runner: None }, &ctx(4)).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        // Without the worker's word: once the lease has run out, a reaper made sure the work
        // is gone (`StopLost`, refused while the lease holds or with another token)...
        let mut k = job();
        claim(&mut k, 1);
        apply(&mut k, Command::Cancel, &ctx(2)).unwrap();
        let before = k.clone();
        for (cmd, at) in [
            (Command::StopLost { token: 1 }, 9_999),
            (Command::StopLost { token: 2 }, 10_001),
            (Command::Retry { runner: None }, 9_999),
            (Command::Retry { runner: None }, 10_001),
        ] {
            assert!(apply(&mut k, cmd, &ctx(at)).is_err());
            assert_eq!(k, before);
        }
        apply(&mut k, Command::StopLost { token: 1 }, &ctx(10_001)).unwrap();
        assert_eq!((k.lease.as_ref(), k.status), (None, JobStatus::Cancelled));
        apply(&mut k, Command::Retry { runner: None }, &ctx(10_001)).unwrap();
        assert_eq!(k.status, JobStatus::Queued);
        // ...or, no reaper having come, `ABANDONED_STOP` after it ran out.
        let mut a = job();
        claim(&mut a, 1);
        apply(&mut a, Command::Cancel, &ctx(2)).unwrap();
        let end = 10_000 + crate::job::ABANDONED_STOP;
        assert!(apply(&mut a, Command::Retry { runner: None }, &ctx(end - 1)).is_err());
        apply(&mut a, Command::Retry { runner: None }, &ctx(end)).unwrap();
        // An active job keeps the lease it needs.
        let mut r = job();
        claim(&mut r, 1);
        assert!(apply(&mut r, Command::Stopped { token: 1 }, &ctx(2)).is_err());
        assert!(r.lease.is_some());
    }

    #[test]
    fn progress_is_validated_and_throttled() {
        let mut j = job();
        claim(&mut j, 1);
        let p = progress_of_claim_1;
        assert_eq!(
            apply(&mut j, p(0.1), &ctx(5000)).unwrap(),
            Some(EventKind::Progress)
        );
        assert_eq!(apply(&mut j, p(0.2), &ctx(5500)).unwrap(), None);
        // Held back: its event is due when the interval since the last one is over.
        assert_eq!(j.progress_due, Some(6000));
        assert_eq!(
            apply(&mut j, p(0.3), &ctx(6000)).unwrap(),
            Some(EventKind::Progress)
        );
        assert_eq!(j.progress_due, None, "sent with the next event");
        assert!(apply(&mut j, p(1.5), &ctx(9000)).is_err());
        assert_eq!(j.progress, 0.3);
    }

    #[test]
    fn a_held_progress_event_past_its_time_goes_with_a_heartbeat_and_a_repeat_holds_nothing() {
        let mut j = job();
        claim(&mut j, 1);
        let p = progress_of_claim_1;
        let beat = |j: &mut Job, now| heartbeat(j, "w", 1, 9_000, &ctx(now));
        assert_eq!(
            apply(&mut j, p(0.1), &ctx(5000)).unwrap(),
            Some(EventKind::Progress)
        );
        apply(&mut j, p(0.1), &ctx(5100)).unwrap();
        assert_eq!(
            j.progress_due, None,
            "the value sent again holds nothing back"
        );
        apply(&mut j, p(0.3), &ctx(5200)).unwrap();
        assert_eq!(j.progress_due, Some(6000));
        assert_eq!(beat(&mut j, 5900), Beat::Renewed(None), "not yet due");
        assert_eq!(beat(&mut j, 6000), Beat::Renewed(Some(EventKind::Progress)));
        assert_eq!((j.progress_due, j.progress_event_at), (None, 6000));
        assert_eq!(beat(&mut j, 6500), Beat::Renewed(None), "sent once");
        // A status event carries the progress: what was held is sent with it.
        let mut k = job();
        claim(&mut k, 1);
        apply(&mut k, p(0.1), &ctx(5000)).unwrap();
        apply(&mut k, p(0.2), &ctx(5100)).unwrap();
        assert!(k.progress_due.is_some());
        let running = Command::Hook(HookReport {
            status: Some(JobStatus::Running),
            progress: Some(0.4),
            ..Default::default()
        });
        assert_eq!(
            apply(&mut k, running, &ctx(5200)).unwrap(),
            Some(EventKind::Status)
        );
        assert_eq!((k.progress, k.progress_due), (0.4, None));
        // A held value stays held until sent, even when a later report brings back the last
        // value sent (the flush then sends that one again).
        apply(&mut j, p(0.5), &ctx(6600)).unwrap();
        apply(&mut j, p(0.3), &ctx(6700)).unwrap();
        assert_eq!(j.progress_due, Some(7000));
    }

    #[test]
    fn a_held_progress_event_is_sent_once_by_its_flush_while_the_job_is_active() {
        let mut j = job();
        claim(&mut j, 1);
        let p = progress_of_claim_1;
        let flush = |j: &mut Job, now| apply(j, Command::ProgressFlush, &ctx(now));
        assert!(matches!(
            flush(&mut j, 4000),
            Err(TransitionError::Invalid(_))
        ));
        apply(&mut j, p(0.1), &ctx(5000)).unwrap();
        // Details alone (no progress) hold nothing back.
        let details = Command::Progress {
            token: Some(1),
            progress: None,
            details: Some(json!({"step": 2})),
        };
        assert_eq!(apply(&mut j, details, &ctx(5100)).unwrap(), None);
        assert_eq!(j.progress_due, None);
        apply(&mut j, p(0.2), &ctx(5200)).unwrap();
        assert_eq!(flush(&mut j, 6000).unwrap(), Some(EventKind::Progress));
        assert_eq!((j.progress_due, j.progress_event_at), (None, 6000));
        assert!(flush(&mut j, 6001).is_err(), "sent once");
        // A new attempt starts without what the last one held.
        apply(&mut j, p(0.4), &ctx(6500)).unwrap();
        let failed = Command::Finish {
            token: 1,
            outcome: FinishOutcome::Failed {
                message: "boom".into(),
                exit_code: Some(1),
            },
        };
        apply(&mut j, failed, &ctx(6600)).unwrap();
        assert!(matches!(
            flush(&mut j, 7000),
            Err(TransitionError::Illegal { .. })
        ));
        apply(&mut j, Command::Promote, &ctx(100_000_000)).unwrap();
        claim(&mut j, 2);
        assert_eq!(j.progress_due, None);
    }

    #[test]
    fn adopt_takes_over_an_expired_lease_only() {
        let mut j = job();
        claim(&mut j, 1);
        let adopt = |t| Command::Adopt {
            expected: None,
            worker: "w2".into(),
            token: t,
            lease_until: 50_000,
        };
        assert!(apply(&mut j, adopt(5), &ctx(9_000)).is_err());
        apply(&mut j, adopt(5), &ctx(10_001)).unwrap();
        assert_eq!(j.attempt, 1);
        assert_eq!(j.lease.as_ref().unwrap().token, 5);
        // The old holder is fenced off.
        let fin = |t| Command::Finish {
            token: t,
            outcome: FinishOutcome::Success(None),
        };
        assert_eq!(
            apply(&mut j, fin(1), &ctx(10_002)),
            Err(TransitionError::StaleLease)
        );
        apply(&mut j, fin(5), &ctx(10_003)).unwrap();
        assert_eq!(j.status, JobStatus::Success);
    }

    #[test]
    fn host_failure_gives_the_attempt_back_with_a_growing_backoff() {
        let mut j = job();
        j.max_attempts = 1;
        let host = |t| Command::HostFailure {
            token: t,
            message: "cannot start `sh`: Too many open files (os error 24)".into(),
        };
        claim(&mut j, 1);
        // A stale token is refused and changes nothing.
        let before = j.clone();
        assert_eq!(
            apply(&mut j, host(9), &ctx(2)),
            Err(TransitionError::StaleLease)
        );
        assert_eq!(j, before);
        assert_eq!(
            apply(&mut j, host(1), &ctx(2)).unwrap(),
            Some(EventKind::Status)
        );
        assert_eq!(j.status, JobStatus::Scheduled);
        assert_eq!(j.attempt, 1);
        assert_eq!(j.max_attempts, 2, "the attempt is given back");
        assert_eq!(j.run_at, Some(2 + 375_000), "500ms, jitter 0 -> x0.75");
        assert!(j.lease.is_none());
        assert_eq!(j.runs[0].outcome.as_deref(), Some(HOST_FAILURE));
        assert!(j.error.as_deref().unwrap().contains("Too many open files"));
        // A second host failure in a row waits twice as long.
        apply(&mut j, Command::Promote, &ctx(3)).unwrap();
        claim(&mut j, 2);
        apply(&mut j, host(2), &ctx(4)).unwrap();
        assert_eq!(j.run_at, Some(4 + 750_000));
        assert_eq!((j.attempt, j.max_attempts), (2, 3));
        // The real attempt that follows still has its full budget: a failure is final only
        // because the one attempt the job asked for was used.
        apply(&mut j, Command::Promote, &ctx(5)).unwrap();
        claim(&mut j, 3);
        apply(
            &mut j,
            Command::Finish {
                token: 3,
                outcome: FinishOutcome::Failed {
                    message: "exit 1".into(),
                    exit_code: Some(1),
                },
            },
            &ctx(6),
        )
        .unwrap();
        assert_eq!(j.status, JobStatus::Error);
        // Only a launch (STARTING) can be given back.
        let mut r = job();
        claim(&mut r, 1);
        apply(
            &mut r,
            Command::Started {
                token: 1,
                handle: None,
            },
            &ctx(2),
        )
        .unwrap();
        let before = r.clone();
        assert!(matches!(
            apply(&mut r, host(1), &ctx(3)),
            Err(TransitionError::Illegal { .. })
        ));
        assert_eq!(r, before);
    }

    fn hook(status: JobStatus, retry: Option<bool>) -> Command {
        Command::Hook(HookReport {
            status: Some(status),
            error: (status == JobStatus::Error).then(|| "ValueError: boom".into()),
            results: (status == JobStatus::Success).then(|| json!({"ok": 1})),
            retry,
            ..Default::default()
        })
    }

    fn exited(token: u64, code: i32) -> Command {
        Command::Finish {
            token,
            outcome: if code == 0 {
                FinishOutcome::Exited { exit_code: 0 }
            } else {
                FinishOutcome::Failed {
                    message: format!("process exited with code {code}"),
                    exit_code: Some(code),
                }
            },
        }
    }

    #[test]
    fn a_reported_error_is_retried_with_backoff_once_the_process_ended() {
        let mut j = job();
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Error, None), &ctx(2)).unwrap();
        // Remembered, not committed: the process is still alive.
        assert_eq!(j.status, JobStatus::Starting);
        assert_eq!(
            j.reported().as_ref().map(Reported::status),
            Some(JobStatus::Error)
        );
        // Nothing more is taken from it.
        assert!(apply(&mut j, hook(JobStatus::Success, None), &ctx(3)).is_err());
        // The process ends (exit 1): retried after the backoff, with the job's message.
        apply(&mut j, exited(1, 1), &ctx(5)).unwrap();
        assert_eq!(j.status, JobStatus::Scheduled);
        assert_eq!(j.run_at, Some(5 + 100_000));
        assert_eq!(j.error.as_deref(), Some("ValueError: boom"));
        assert_eq!(j.exit_code, Some(1));
        assert_eq!(j.runs[0].outcome.as_deref(), Some("ERROR"));
        // The last attempt's reported error is final.
        apply(&mut j, Command::Promote, &ctx(6)).unwrap();
        claim(&mut j, 2);
        assert!(j.reported().is_none(), "a new attempt starts clean");
        apply(&mut j, hook(JobStatus::Error, None), &ctx(7)).unwrap();
        apply(&mut j, exited(2, 0), &ctx(8)).unwrap();
        assert_eq!(j.status, JobStatus::Error);
        assert_eq!(j.exit_code, Some(0));
    }

    fn upload(name: &str) -> FileRef {
        FileRef {
            hash: format!("{:0>32}", name.len()),
            size: 1,
            mimetype: "text/plain".into(),
            name: name.into(),
            metadata: json!({}),
            attempt: None,
        }
    }

    fn attach(j: &mut Job, property: &str, name: &str, by_job: bool, now: Micros) {
        let cmd = Command::AttachFile {
            property: property.into(),
            file: upload(name),
            by_attempt: by_job.then_some(j.attempt),
        };
        apply(j, cmd, &ctx(now)).unwrap();
    }

    /// What the attempt left (its result, error, exit code, progress, details, uploads) is gone.
    fn assert_clean(j: &Job, inputs: &[&str]) {
        assert_eq!(j.result, None);
        assert_eq!(j.error, None);
        assert_eq!(j.exit_code, None);
        assert_eq!(j.status_details, None);
        assert_eq!(j.progress, 0.0);
        let names: Vec<&str> = j
            .files
            .values()
            .flatten()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, inputs);
        assert!(j.files.values().flatten().all(|f| f.attempt.is_none()));
    }

    #[test]
    fn every_attempt_starts_clean_whether_retried_by_itself_or_by_a_client() {
        let mut j = job();
        j.max_attempts = 3;
        attach(&mut j, "inputs", "in.txt", false, 1);
        claim(&mut j, 1);
        let details = Command::Progress {
            token: None,
            progress: Some(0.5),
            details: Some(json!({"stage": "attempt-1-stage"})),
        };
        apply(&mut j, details, &ctx(2)).unwrap();
        attach(&mut j, "outputs", "out-1.txt", true, 2);
        assert_eq!(j.files["outputs"][0].attempt, Some(1));
        let failed = Command::Hook(HookReport {
            status: Some(JobStatus::Error),
            results: Some(json!({"from_attempt": 1})),
            error: Some("first failed".into()),
            ..Default::default()
        });
        apply(&mut j, failed, &ctx(3)).unwrap();
        apply(&mut j, exited(1, 1), &ctx(4)).unwrap();
        // Until the next attempt starts, the failed one is what there is to see.
        assert_eq!(j.status, JobStatus::Scheduled);
        assert_eq!(j.result, Some(json!({"from_attempt": 1})));
        assert_eq!(j.error.as_deref(), Some("first failed"));
        assert_eq!(j.files["outputs"].len(), 1);
        apply(&mut j, Command::Promote, &ctx(5)).unwrap();
        claim(&mut j, 2);
        assert_clean(&j, &["in.txt"]);
        apply(
            &mut j,
            Command::Started {
                token: 2,
                handle: None,
            },
            &ctx(6),
        )
        .unwrap();
        let ev = Event::for_job(&j, EventKind::Status);
        assert!(ev.errors.is_empty(), "{:?}", ev.errors);
        // Attempt 2 ends without a result: SUCCESS, no result of attempt 1.
        attach(&mut j, "outputs", "out-2.txt", true, 7);
        apply(&mut j, exited(2, 0), &ctx(8)).unwrap();
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.result, None);
        assert_eq!(j.status_details, None);
        let outputs: Vec<&str> = j.files["outputs"].iter().map(|f| f.name.as_str()).collect();
        assert_eq!(outputs, ["out-2.txt"]);
        // A client's retry starts as clean, through the same function.
        let mut k = job();
        attach(&mut k, "inputs", "in.txt", false, 1);
        claim(&mut k, 1);
        attach(&mut k, "outputs", "out-1.txt", true, 2);
        apply(&mut k, hook(JobStatus::Error, Some(false)), &ctx(3)).unwrap();
        apply(&mut k, exited(1, 4), &ctx(4)).unwrap();
        assert_eq!(k.status, JobStatus::Error);
        assert_eq!(
            k.files["outputs"].len(),
            1,
            "the last attempt's outputs stay"
        );
        apply(&mut k, Command::Retry { runner: None }, &ctx(5)).unwrap();
        assert_clean(&k, &["in.txt"]);
    }

    #[test]
    fn a_cancel_leaves_a_reported_final_outcome_alone() {
        // SUCCESS reported, the process lingering: the cancel is refused, the SUCCESS committed
        // once the process ends, as a timeout at that point does.
        let mut j = job();
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Success, None), &ctx(2)).unwrap();
        let before = j.clone();
        let e = apply(&mut j, Command::Cancel, &ctx(3)).unwrap_err();
        assert!(
            e.to_string().contains("reported an outcome that ends it"),
            "{e}"
        );
        assert_eq!(j, before);
        apply(&mut j, exited(1, 143), &ctx(4)).unwrap();
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.result, Some(json!({"ok": 1})));
        // So for an ERROR that must not be retried.
        let mut k = job();
        claim(&mut k, 1);
        apply(&mut k, hook(JobStatus::Error, Some(false)), &ctx(2)).unwrap();
        assert!(apply(&mut k, Command::Cancel, &ctx(3)).is_err());
        // An ERROR that would be retried is cancelled: no further attempt.
        let mut l = job();
        claim(&mut l, 1);
        apply(&mut l, hook(JobStatus::Error, None), &ctx(2)).unwrap();
        apply(&mut l, Command::Cancel, &ctx(3)).unwrap();
        assert_eq!(l.status, JobStatus::Cancelled);
    }

    #[test]
    fn each_run_record_keeps_the_error_its_attempt_ended_with() {
        let mut j = Job {
            max_attempts: 3,
            ..job()
        };
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Error, None), &ctx(2)).unwrap();
        apply(&mut j, exited(1, 1), &ctx(3)).unwrap();
        apply(&mut j, Command::Promote, &ctx(1_000_000)).unwrap();
        claim(&mut j, 2);
        apply(&mut j, Command::LeaseExpired { token: None }, &ctx(20_000)).unwrap();
        claim(&mut j, 3);
        // The job starts clean; its runs keep how each attempt ended.
        assert_eq!(j.error, None);
        let errors: Vec<Option<&str>> = j.runs.iter().map(|r| r.error.as_deref()).collect();
        assert_eq!(
            errors,
            [
                Some("ValueError: boom"),
                Some("worker lost: lease expired; requeued"),
                None
            ]
        );
        assert_eq!(j.to_public()["runs"][0]["error"], "ValueError: boom");
        apply(&mut j, exited(3, 0), &ctx(20_001)).unwrap();
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.runs[2].error, None);
    }

    #[test]
    fn an_upload_from_an_attempt_gone_by_is_refused() {
        // Attempt 1 asks to upload; before its bytes are attached the job is requeued (its lease
        // ran out) and attempt 2 claimed: attempt 1's file must not become attempt 2's output.
        let mut j = job();
        claim(&mut j, 1);
        apply(&mut j, Command::LeaseExpired { token: None }, &ctx(20_000)).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        claim(&mut j, 2);
        assert_eq!(j.attempt, 2);
        let before = j.clone();
        let late = Command::AttachFile {
            property: "outputs".into(),
            file: upload("out-1.txt"),
            by_attempt: Some(1),
        };
        let e = apply(&mut j, late, &ctx(20_001)).unwrap_err();
        assert_eq!(e, TransitionError::StaleAttempt);
        assert_eq!(j, before, "nothing attached");
        // Attempt 2's own upload is attached, as the attempt's.
        attach(&mut j, "outputs", "out-2.txt", true, 20_002);
        assert_eq!(j.files["outputs"].len(), 1);
        assert_eq!(j.files["outputs"][0].name, "out-2.txt");
        assert_eq!(j.files["outputs"][0].attempt, Some(2));
    }

    #[test]
    fn a_cancel_leaves_an_error_reported_on_the_last_attempt_alone() {
        // `retry` left true, but no attempt is left (max_attempts 1): the ERROR ends
        // the job as surely as `retry: false` does, and the cancel is refused.
        let mut j = Job {
            max_attempts: 1,
            ..job()
        };
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Error, None), &ctx(2)).unwrap();
        let before = j.clone();
        let e = apply(&mut j, Command::Cancel, &ctx(3)).unwrap_err();
        assert!(e.to_string().contains("no attempts left"), "{e}");
        assert_eq!(j, before);
        apply(&mut j, exited(1, 1), &ctx(4)).unwrap();
        assert_eq!(j.status, JobStatus::Error);
        assert_eq!(j.error.as_deref(), Some("ValueError: boom"));
        assert_eq!(j.runs.last().unwrap().outcome.as_deref(), Some("ERROR"));
        // On an earlier attempt the same report is retried, so a cancel still stops the job.
        let mut k = job();
        claim(&mut k, 1);
        apply(&mut k, hook(JobStatus::Error, None), &ctx(2)).unwrap();
        apply(&mut k, Command::Cancel, &ctx(3)).unwrap();
        assert_eq!(k.status, JobStatus::Cancelled);
    }

    #[test]
    fn retry_false_ends_the_job_at_once() {
        let mut j = job();
        j.max_attempts = 5;
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Error, Some(false)), &ctx(2)).unwrap();
        apply(&mut j, exited(1, 1), &ctx(3)).unwrap();
        assert_eq!(j.status, JobStatus::Error);
        assert_eq!(j.attempt, 1);
        assert_eq!(j.exit_code, Some(1));
    }

    #[test]
    fn a_reported_success_is_committed_with_the_exit_code() {
        let mut j = job();
        claim(&mut j, 1);
        apply(&mut j, hook(JobStatus::Success, None), &ctx(2)).unwrap();
        assert_eq!(j.status, JobStatus::Starting);
        // Its files can no longer change once it said it is done.
        assert!(apply(
            &mut j,
            Command::AttachFile {
                property: "outputs".into(),
                file: FileRef {
                    hash: "5d41402abc4b2a76b9719d911017c592".into(),
                    size: 5,
                    mimetype: "text/plain".into(),
                    name: "a".into(),
                    metadata: json!({}),
                    attempt: None,
                },
                by_attempt: Some(1),
            },
            &ctx(3)
        )
        .is_err());
        // Even a process that then fails (or times out) keeps the reported SUCCESS.
        apply(&mut j, exited(1, 3), &ctx(4)).unwrap();
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.result, Some(json!({"ok": 1})));
        assert_eq!(j.exit_code, Some(3));
        let mut k = job();
        claim(&mut k, 1);
        apply(&mut k, hook(JobStatus::Success, None), &ctx(2)).unwrap();
        apply(
            &mut k,
            Command::Finish {
                token: 1,
                outcome: FinishOutcome::Timeout("timed out".into()),
            },
            &ctx(3),
        )
        .unwrap();
        assert_eq!(k.status, JobStatus::Success);
        // A lost worker does not lose what the job said either.
        let mut l = job();
        claim(&mut l, 1);
        apply(&mut l, hook(JobStatus::Success, None), &ctx(2)).unwrap();
        apply(&mut l, Command::LeaseExpired { token: None }, &ctx(10_001)).unwrap();
        assert_eq!(l.status, JobStatus::Success);
        // Exit code 0 of a process that did not report.
        let mut m = job();
        claim(&mut m, 1);
        apply(&mut m, exited(1, 0), &ctx(2)).unwrap();
        assert_eq!((m.status, m.exit_code), (JobStatus::Success, Some(0)));
    }

    #[test]
    fn a_job_out_of_time_cannot_report_and_ends_timeout_however_its_work_ends() {
        let limit = |t| Command::TimeLimit {
            token: t,
            message: "timed out after 1s".into(),
        };
        let mut j = job();
        claim(&mut j, 1);
        // A stale worker's mark is refused and changes nothing.
        let before = j.clone();
        assert_eq!(
            apply(&mut j, limit(2), &ctx(2)),
            Err(TransitionError::StaleLease)
        );
        assert_eq!(j, before);
        assert_eq!(apply(&mut j, limit(1), &ctx(2)), Ok(None));
        assert_eq!(j.status, JobStatus::Starting, "ends once its work stopped");
        // While its work stops, the job can neither report nor attach a file.
        for cmd in [
            hook(JobStatus::Success, None),
            hook(JobStatus::Error, None),
            hook(JobStatus::Running, None),
        ] {
            let e = apply(&mut j, cmd, &ctx(3)).unwrap_err();
            assert!(e.to_string().contains("time limit"), "{e}");
        }
        // A graceful exit 0 after SIGTERM does not make it a SUCCESS.
        apply(&mut j, exited(1, 0), &ctx(4)).unwrap();
        assert_eq!(j.status, JobStatus::Timeout);
        assert_eq!(j.error.as_deref(), Some("timed out after 1s"));
        assert_eq!(j.runs[0].outcome.as_deref(), Some("TIMEOUT"));
        assert_eq!(j.result, None);
        // A lost worker, or one that gives the job back at shutdown, still ends it TIMEOUT (a
        // timeout is final: no retry although attempts are left).
        for end in [
            Command::LeaseExpired { token: None },
            Command::Release { token: 1 },
        ] {
            let mut k = job();
            claim(&mut k, 1);
            apply(&mut k, limit(1), &ctx(2)).unwrap();
            apply(&mut k, end, &ctx(10_001)).unwrap();
            assert_eq!((k.status, k.attempt), (JobStatus::Timeout, 1));
        }
        // A report that came before the time limit stands.
        let mut r = job();
        claim(&mut r, 1);
        apply(&mut r, hook(JobStatus::Success, None), &ctx(2)).unwrap();
        assert_eq!(apply(&mut r, limit(1), &ctx(3)), Ok(None));
        apply(&mut r, exited(1, 143), &ctx(4)).unwrap();
        assert_eq!(r.status, JobStatus::Success);
        // A job cancelled meanwhile stays CANCELLED.
        let mut c = job();
        claim(&mut c, 1);
        apply(&mut c, Command::Cancel, &ctx(2)).unwrap();
        assert!(apply(&mut c, limit(1), &ctx(3)).is_err());
        assert_eq!(c.status, JobStatus::Cancelled);
    }

    fn waiting(on: crate::waiting::OnDeadline) -> Job {
        let mut j = job();
        j.status = JobStatus::Waiting;
        j.wait = Some(crate::waiting::Wait {
            items: vec![crate::waiting::WaitItem {
                key: "k".into(),
                needed: 2,
                since: None,
                seen: 0,
                signal_ids: vec![],
            }],
            deadline: Some(1_000),
            on_deadline: on,
            released_by: None,
            released_at: None,
        });
        j
    }

    #[test]
    fn waiting_jobs_are_released_by_all_their_records_or_their_deadline() {
        use crate::waiting::{OnDeadline, ReleasedBy};
        let mut j = waiting(OnDeadline::Run);
        let before = j.clone();
        // Not enough records, a claim, a deadline not yet due: refused, nothing changed.
        for cmd in [
            Command::WaitRelease {
                seen: vec![(1, vec![4])],
            },
            Command::Claim {
                worker: "w".into(),
                token: 1,
                lease_until: 9,
            },
            Command::WaitDeadline { seen: vec![] },
        ] {
            assert!(apply(&mut j, cmd, &ctx(999)).is_err());
            assert_eq!(j, before);
        }
        apply(
            &mut j,
            Command::WaitRelease {
                seen: vec![(2, vec![4, 5])],
            },
            &ctx(500),
        )
        .unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        let w = j.wait.as_ref().unwrap();
        assert_eq!(w.released_by, Some(ReleasedBy::Signals));
        assert_eq!(w.items[0].signal_ids, vec![4, 5]);
        // Released once: the deadline no longer applies.
        assert!(apply(&mut j, Command::WaitDeadline { seen: vec![] }, &ctx(2_000)).is_err());
        for (on, status, word) in [
            (OnDeadline::Run, JobStatus::Queued, None),
            (OnDeadline::Fail, JobStatus::Error, Some("deadline_missed")),
            (OnDeadline::Skip, JobStatus::Cancelled, Some("skipped")),
        ] {
            let mut j = waiting(on);
            apply(&mut j, Command::WaitDeadline { seen: vec![] }, &ctx(1_000)).unwrap();
            assert_eq!(j.status, status);
            assert_eq!(
                j.wait.as_ref().unwrap().released_by,
                Some(ReleasedBy::Deadline)
            );
            match word {
                Some(w) => assert!(j.error.as_deref().unwrap().starts_with(w)),
                None => assert!(j.error.is_none()),
            }
        }
        // A client cancels a waiting job.
        let mut j = waiting(OnDeadline::Run);
        apply(&mut j, Command::Cancel, &ctx(1)).unwrap();
        assert_eq!(j.status, JobStatus::Cancelled);
    }

    #[test]
    fn lease_expiry_requeues_then_fails() {
        let mut j = job();
        claim(&mut j, 1);
        assert!(apply(&mut j, Command::LeaseExpired { token: None }, &ctx(9_999)).is_err());
        apply(&mut j, Command::LeaseExpired { token: None }, &ctx(10_001)).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        claim(&mut j, 2);
        apply(&mut j, Command::LeaseExpired { token: None }, &ctx(10_001)).unwrap();
        assert_eq!(j.status, JobStatus::Error);
    }

    /// A late reaper's requeue carries the token it decided on: attempt 2's expired lease is
    /// not taken for attempt 1's.
    #[test]
    fn lease_expiry_with_a_token_takes_only_that_lease() {
        let mut j = job();
        j.max_attempts = 3;
        claim(&mut j, 1);
        apply(
            &mut j,
            Command::LeaseExpired { token: Some(1) },
            &ctx(10_001),
        )
        .unwrap();
        claim(&mut j, 2);
        let late = Command::LeaseExpired { token: Some(1) };
        let before = j.clone();
        assert!(matches!(
            apply(&mut j, late, &ctx(10_001)),
            Err(TransitionError::StaleLease)
        ));
        assert_eq!(j, before);
        apply(
            &mut j,
            Command::LeaseExpired { token: Some(2) },
            &ctx(10_001),
        )
        .unwrap();
        assert_eq!(j.status, JobStatus::Queued);
    }

    /// The fence changes the token only (not the holder, the run's worker nor the expiry), and
    /// only of an expired lease of an active job holding `expected`.
    #[test]
    fn a_fence_changes_only_the_token_of_an_expired_lease() {
        let mut j = job();
        claim(&mut j, 1);
        let fence = |expected| Command::Fence { expected, token: 7 };
        let before = j.clone();
        assert!(
            apply(&mut j, fence(1), &ctx(9_999)).is_err(),
            "a live lease"
        );
        assert!(
            apply(&mut j, fence(3), &ctx(10_001)).is_err(),
            "another token"
        );
        assert_eq!(j, before);
        apply(&mut j, fence(1), &ctx(10_001)).unwrap();
        let (l, b) = (j.lease.clone().unwrap(), before.lease.clone().unwrap());
        assert_eq!(
            (l.token, &l.worker, l.expires_at),
            (7, &b.worker, b.expires_at)
        );
        assert_eq!(j.runs, before.runs);
        assert_eq!(j.status, before.status);
        apply(&mut j, Command::Cancel, &ctx(10_002)).unwrap();
        assert!(apply(&mut j, fence(7), &ctx(10_003)).is_err(), "not active");
    }

    /// The reaper adopts the work of a job whose handle was never recorded (still `STARTING`)
    /// under the fence it put: an adoption that expects another token (the hung worker's, a
    /// later lease's) is refused and changes nothing; the adopter then records the handle it
    /// found, or the outcome of work that had ended, from `STARTING`.
    #[test]
    fn an_adoption_under_the_fence_takes_only_the_fenced_lease() {
        let mut j = job();
        claim(&mut j, 1);
        apply(
            &mut j,
            Command::Fence {
                expected: 1,
                token: 7,
            },
            &ctx(10_001),
        )
        .unwrap();
        let adopt = |expected| Command::Adopt {
            expected: Some(expected),
            worker: "w2".into(),
            token: 9,
            lease_until: 50_000,
        };
        let before = j.clone();
        assert_eq!(
            apply(&mut j, adopt(1), &ctx(10_002)),
            Err(TransitionError::StaleLease),
            "the hung worker's token"
        );
        assert_eq!(j, before);
        apply(&mut j, adopt(7), &ctx(10_002)).unwrap();
        assert_eq!((j.status, j.attempt), (JobStatus::Starting, 1));
        let l = j.lease.clone().unwrap();
        assert_eq!((l.token, l.worker.as_str()), (9, "w2"));
        assert!(
            apply(&mut j, adopt(7), &ctx(10_003)).is_err(),
            "adopted already"
        );
        let mut ended = j.clone();
        apply(
            &mut j,
            Command::Started {
                token: 9,
                handle: None,
            },
            &ctx(10_004),
        )
        .unwrap();
        assert_eq!(j.status, JobStatus::Running);
        let fin = |t| Command::Finish {
            token: t,
            outcome: FinishOutcome::Exited { exit_code: 0 },
        };
        assert_eq!(
            apply(&mut ended, fin(7), &ctx(10_004)),
            Err(TransitionError::StaleLease)
        );
        apply(&mut ended, fin(9), &ctx(10_004)).unwrap();
        assert_eq!(
            (ended.status, ended.runs.len(), ended.exit_code),
            (JobStatus::Success, 1, Some(0))
        );
    }

    /// An upload tried again after its answer was lost (the clients' report window) attaches the
    /// file once; a client's files, and the job's own of another name, content or attempt, are
    /// each attached.
    #[test]
    fn the_same_upload_again_from_the_same_attempt_is_attached_once() {
        let mut j = job();
        j.max_attempts = 2;
        claim(&mut j, 1);
        attach(&mut j, "outputs", "a.csv", true, 2);
        attach(&mut j, "outputs", "a.csv", true, 3);
        attach(&mut j, "outputs", "b.csv", true, 4);
        attach(&mut j, "outputs", "a.csv", false, 5);
        attach(&mut j, "outputs", "a.csv", false, 6);
        let mut other = upload("a.csv");
        other.hash = format!("{:f>32}", 1);
        let cmd = Command::AttachFile {
            property: "outputs".into(),
            file: other,
            by_attempt: Some(j.attempt),
        };
        apply(&mut j, cmd, &ctx(7)).unwrap();
        let names = |j: &Job| -> Vec<(String, Option<u32>)> {
            j.files["outputs"]
                .iter()
                .map(|f| (f.name.clone(), f.attempt))
                .collect()
        };
        let a = |n: &str, at: Option<u32>| (n.to_string(), at);
        assert_eq!(
            names(&j),
            [
                a("a.csv", Some(1)),
                a("b.csv", Some(1)),
                a("a.csv", None),
                a("a.csv", None),
                a("a.csv", Some(1)),
            ]
        );
    }
}
