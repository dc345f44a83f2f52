//! How the worker sees an attempt to its end: waits for it, stops it on cancel, timeout or
//! shutdown (or once it reported its outcome and lingers), and records the outcome.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runyard_runners::{Execution, Outcome};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::reporter::JobReporter;
use super::{reports, StopReason, Worker};
use crate::job::{Command, FinishOutcome, Job, TransitionError};
use crate::runner_set::RunnerSlot;
use crate::store::handoff::Refill;
use crate::store::StoreError;

impl Worker {
    /// Waits for the work to end, or stops it on cancel/timeout/shutdown; records the outcome.
    /// Once the job has reported its outcome through the hook (`reported`: already at the
    /// start), its process gets `exit_grace` to end by itself before it is stopped; the outcome
    /// is committed after the process ended and its output was stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn supervise(
        &self,
        id: Uuid,
        token: u64,
        mut exec: Box<dyn Execution>,
        reporter: Arc<JobReporter>,
        limit: Duration,
        stop: CancellationToken,
        reason: Arc<Mutex<StopReason>>,
        run: Supervised,
    ) {
        let Supervised {
            kind,
            watch,
            mut reported,
            refill,
            whole_limit,
        } = run;
        enum End {
            Ran,
            Stopped,
            TimedOut,
            /// Reported its outcome, but the process did not end within `exit_grace`.
            Lingered,
        }
        let now = tokio::time::Instant::now();
        let limit_at = now + limit.min(crate::config::MAX_DURATION);
        let grace = self.cfg.exit_grace;
        let mut deadline = if reported {
            limit_at.min(now + grace)
        } else {
            limit_at
        };
        let (end, ran) = {
            let wait = exec.wait();
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    // Work that has ended is recorded with its outcome, even when a stop came at
                    // the same moment (a job that ran is not given back, nor left to its lease).
                    biased;
                    o = &mut wait => break (End::Ran, Some(o)),
                    _ = stop.cancelled() => break (End::Stopped, None),
                    _ = tokio::time::sleep_until(deadline) => {
                        break (if reported { End::Lingered } else { End::TimedOut }, None)
                    }
                    _ = self.report_seen(id, &watch), if !reported => {
                        reported = true;
                        deadline = limit_at.min(tokio::time::Instant::now() + grace);
                    }
                }
            }
        };
        drop(watch);
        let timed_out = matches!(end, End::TimedOut).then(|| timed_out_after(whole_limit));
        if let Some(message) = &timed_out {
            // Marked before the work is stopped: what the job reports while it stops (a SIGTERM
            // handler that says SUCCESS) is refused and cannot replace the TIMEOUT.
            self.time_limit(id, token, message.clone()).await;
        }
        let gone = self
            .stop_unless_ended(exec.as_mut(), ran.is_some(), matches!(end, End::Lingered))
            .await;
        let last = match ran {
            Some(o) => o,
            None => exec.wait().await,
        };
        // Only writes are left: they do not hold a stopping worker's drain.
        self.work_ended(id, token);
        reporter.flush().await;
        let outcome = match end {
            // Ended, but maybe not gone (the pods of a Kubernetes Job deleted by someone else):
            // nothing is recorded and the lease runs out before another attempt may start.
            End::Ran if !gone => return not_confirmed(id),
            // A reported outcome is what the job said; the stopped process's exit is recorded.
            End::Ran | End::Lingered => outcome_to_finish(last, kind),
            End::TimedOut => FinishOutcome::Timeout(timed_out.unwrap_or_default()),
            End::Stopped if !gone => return not_confirmed(id),
            End::Stopped if *reason.lock() == StopReason::Release => {
                return self.give_back(id, token).await
            }
            End::Stopped => return self.stopped_gone(id, token).await,
        };
        let r = self.finish_write(id, token, outcome, refill).await;
        if gone {
            return self.finished(id, token, r).await;
        }
        // Recorded, but a refusal (cancelled meanwhile) gives nothing up: the work may live on,
        // and the lease the cancel kept must run out first.
        match r {
            Ok(j) => crate::outcomes::log_change(&j),
            Err(_) => not_confirmed(id),
        }
    }

    /// Whether the attempt's work is known to be gone: as its end says when it `ended` by itself
    /// ([`Execution::end_confirmed`]), else once stopped (`lingered`: after it reported its
    /// outcome) as the stop says.
    async fn stop_unless_ended(
        &self,
        exec: &mut dyn Execution,
        ended: bool,
        lingered: bool,
    ) -> bool {
        if ended {
            return exec.end_confirmed();
        }
        if lingered {
            tracing::info!(
                exit_grace = ?self.cfg.exit_grace,
                "the job reported its outcome but its process did not end: stopping it"
            );
        }
        exec.stop(self.cfg.kill_grace).await
    }

    /// Marks the attempt as out of time (`Command::TimeLimit`) before its work is stopped. A
    /// refusal (cancelled or taken over meanwhile) or a store that does not answer within
    /// `kill_grace` (the stop is not held up longer) leaves the stop and the finish as they
    /// were: the finish decides then.
    pub(super) async fn time_limit(&self, id: Uuid, token: u64, message: String) {
        let mark = self.store.apply(id, Command::TimeLimit { token, message });
        if let Err(e) = crate::store::within(self.cfg.kill_grace, mark).await {
            tracing::debug!(error = %e, "time limit not marked");
        }
    }

    /// Gives a stopped attempt back to the queue (`Command::Release`); a job that had reported
    /// its outcome ends with it.
    pub(super) async fn give_back(&self, id: Uuid, token: u64) {
        let r = self.store.apply(id, Command::Release { token }).await;
        self.settle(id, token, &r).await;
        match r {
            Ok(j) => crate::outcomes::log_change(&j),
            // Maybe carried out once the store answers; if not, nothing is lost either.
            Err(e @ StoreError::Unavailable(_)) => tracing::warn!(
                error = %e,
                "the store did not confirm the job's release: if it was not given back, its \
                 lease runs out and the reaper recovers it as after a crash"
            ),
            Err(e) => tracing::debug!(error = %e, "release refused"),
        }
    }

    /// What the store answered to an attempt's own change, once its work has ended: refused
    /// because the job was cancelled meanwhile, the lease the cancel kept goes too.
    /// Takes the answer by reference: a job (808 bytes) passed by value into an `async fn` is
    /// held twice by the caller's future, which every attempt's future inlines
    /// (docs/benchmarks.md, "Session 45").
    pub(super) async fn settle(&self, id: Uuid, token: u64, r: &Result<Job, StoreError>) {
        if matches!(
            r,
            Err(StoreError::Transition(TransitionError::Illegal { .. }))
        ) {
            self.stopped_gone(id, token).await;
        }
    }

    /// The work of a job that ended elsewhere (cancelled) has stopped: gives up the lease the
    /// job kept, so a retry may start a new attempt (`Command::Stopped`). Refused, and nothing
    /// to do, when the job is no longer this claim's or is still active.
    pub(super) async fn stopped_gone(&self, id: Uuid, token: u64) {
        if let Err(e) = self.store.apply(id, Command::Stopped { token }).await {
            tracing::debug!(error = %e, "lease of a stopped job not given up");
        }
    }

    /// Completes when the job has reported its outcome through the hook: told in-process by the
    /// hook handler, or (the hook served by another process) seen by reading the job every
    /// `lease_ttl / 3`.
    async fn report_seen(&self, id: Uuid, watch: &reports::Watch) {
        let every = if self.store.backend_name() == "embedded" {
            // The embedded store is opened by this process only: its hook is served here.
            crate::config::MAX_DURATION
        } else {
            self.cfg.lease_ttl / 3
        };
        loop {
            tokio::select! {
                _ = watch.notified() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Ok(Some(j)) = self.store.get(id).await {
                if j.reported().is_some() {
                    return;
                }
            }
        }
    }

    /// Records an attempt's outcome; with `refill`, the finish may claim the slot's next job
    /// (`Worker::refill`).
    pub(super) async fn finish(
        &self,
        id: Uuid,
        token: u64,
        outcome: FinishOutcome,
        refill: Option<Arc<Refill>>,
    ) {
        let r = self.finish_write(id, token, outcome, refill).await;
        self.finished(id, token, r).await;
    }

    /// Writes an attempt's outcome. A write the store refused for a reason of its own (a full
    /// disk: `StoreError::Backend`, nothing written) is tried again, with backoff, until the
    /// lease would run out (the reaper's turn then) or the worker stops: an outcome lost to a
    /// moment without room would run a finished job again. Only the first try may claim the
    /// slot's next job.
    async fn finish_write(
        &self,
        id: Uuid,
        token: u64,
        outcome: FinishOutcome,
        refill: Option<Arc<Refill>>,
    ) -> Result<Job, StoreError> {
        let until = tokio::time::Instant::now() + self.cfg.lease_ttl;
        let stopping = || self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let mut refill = refill;
        let finish = || {
            let cmd = Command::Finish {
                token,
                outcome: outcome.clone(),
            };
            self.store.finish(id, cmd, refill.take())
        };
        crate::store::retry_refused(until, || !stopping(), finish).await
    }

    /// What the store answered to an attempt's finish ([`Worker::settle`]).
    pub(super) async fn finished(&self, id: Uuid, token: u64, r: Result<Job, StoreError>) {
        self.settle(id, token, &r).await;
        match r {
            Ok(j) => crate::outcomes::log_change(&j),
            // The job already ended (it reported its own status, or was cancelled) or was taken
            // over: nothing to do, and nothing must be overwritten.
            Err(StoreError::Transition(
                TransitionError::Illegal { .. } | TransitionError::StaleLease,
            )) => {}
            // No answer in time: the write may still be carried out once the store answers.
            // Rare: on the heap, not in every attempt's future (docs/benchmarks.md, "Session 45").
            Err(e @ StoreError::Unavailable(_)) => Box::pin(self.unconfirmed(id, token, &e)).await,
            Err(e) => tracing::warn!(
                error = %e,
                "cannot record the outcome: the reaper takes the job back once its lease runs \
                 out (another attempt if one is left)"
            ),
        }
    }

    /// The store did not confirm an attempt's outcome (Redis hung past `store.retry`): once it
    /// answers again the write may have run after all. Reads the job for up to `lease_ttl` (not
    /// once the worker is stopping) to tell: recorded (logged and counted as if answered) or not
    /// (the reaper takes the job back once its lease runs out, or has).
    async fn unconfirmed(&self, id: Uuid, token: u64, error: &StoreError) {
        let until = tokio::time::Instant::now() + self.cfg.lease_ttl;
        let mut pause = Duration::from_millis(100);
        // A write sent on a connection given up for dead may be read by Redis just after a read
        // on a new one: an answer that says "not recorded" is taken when a second read, a
        // moment later, says the same.
        let mut seen_unrecorded = false;
        let read = loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            // A stopping worker does not hold its drain for this (the log says it cannot tell).
            if left.is_zero() || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                break None;
            }
            match crate::store::within(left, self.store.get(id)).await {
                Ok(Some(j)) => match late_finish(&j, token) {
                    Late::NotRecorded if !seen_unrecorded => {
                        seen_unrecorded = true;
                        tokio::time::sleep(Duration::from_millis(250).min(left)).await;
                    }
                    late => break Some((late, j)),
                },
                // Deleted meanwhile: nothing left to tell.
                Ok(None) => return,
                Err(_) => {
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        };
        match read {
            Some((Late::Recorded, j)) => {
                tracing::info!(error = %error, "the store answered late: the outcome was recorded");
                self.store.finish_committed_late(&j);
                crate::outcomes::log_change(&j);
            }
            Some((Late::MovedOn, _)) => {
                tracing::info!("the store answered late: the outcome was recorded, and the job has moved on since")
            }
            Some((Late::Decided, _)) => tracing::info!(
                error = %error,
                "the store answered late: the outcome decided before the attempt's end (its \
                 report or its time limit) was recorded, by this finish or by the reaper"
            ),
            Some((Late::NotRecorded, _)) => tracing::warn!(
                error = %error,
                "the outcome was not recorded: the reaper takes the job back once its lease runs \
                 out (another attempt if one is left), or has"
            ),
            None => tracing::warn!(
                error = %error,
                "the store did not confirm the outcome and cannot be read: if it was not \
                 recorded, the reaper takes the job back once its lease runs out"
            ),
        }
    }
}

/// What became of an attempt's finish the store did not confirm, read from the job.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Late {
    /// The attempt (fencing `token`) ended with its worker's outcome, and is the job's last.
    Recorded,
    /// It did, and the job has had another attempt since (a retry).
    MovedOn,
    /// It ended with the outcome decided before (the job's report, its time limit), which the
    /// reaper commits too when the lease runs out: by whom is not known, so it is not counted
    /// (the reaper's commit is).
    Decided,
    /// The attempt still holds the job, or was ended otherwise (lost, cancelled).
    NotRecorded,
}

pub(super) fn late_finish(job: &Job, token: u64) -> Late {
    let Some(i) = job.runs.iter().rposition(|r| r.token == token) else {
        return Late::NotRecorded;
    };
    let finished = matches!(
        job.runs[i].outcome.as_deref(),
        Some("SUCCESS" | "ERROR" | "TIMEOUT")
    );
    match (finished, i + 1 == job.runs.len()) {
        (false, _) => Late::NotRecorded,
        (true, _) if job.runs[i].decided().is_some() => Late::Decided,
        (true, true) => Late::Recorded,
        (true, false) => Late::MovedOn,
    }
}

/// What [`Worker::supervise`] knows of the attempt besides its execution.
pub(super) struct Supervised {
    /// The runner's kind (a process's success is exit code 0).
    pub(super) kind: crate::config::RunnerKind,
    /// Where the hook says the job reported its outcome.
    pub(super) watch: reports::Watch,
    /// The job had reported its outcome already (adopted work).
    pub(super) reported: bool,
    /// Where the finish claims the slot's next job, if it may.
    pub(super) refill: Option<Arc<Refill>>,
    /// The job's whole time limit, for the TIMEOUT message (adopted work is given what is
    /// left of it).
    pub(super) whole_limit: Duration,
}

/// The error of a job that ran out of its time `limit` (the whole of it, also for adopted
/// work).
pub(super) fn timed_out_after(limit: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(limit))
}

pub(super) fn time_limit(job: &Job, slot: &RunnerSlot) -> Duration {
    job.timeout_ms
        .map(Duration::from_millis)
        .or(slot.timeout)
        .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600))
}

pub(super) fn outcome_to_finish(o: Outcome, kind: crate::config::RunnerKind) -> FinishOutcome {
    use crate::config::RunnerKind;
    match o {
        // A process or container that succeeded exited with 0.
        Outcome::Success { result: None } if kind != RunnerKind::Service => {
            FinishOutcome::Exited { exit_code: 0 }
        }
        Outcome::Success { result } => FinishOutcome::Success(result),
        Outcome::Failed { message, exit_code } => FinishOutcome::Failed { message, exit_code },
        // The work said no retry can fix it: ERROR now, the remaining attempts unused.
        Outcome::Aborted { message } => FinishOutcome::Aborted { message },
        // The work said when to try again: that delay instead of the backoff.
        Outcome::RetryAfter { message, after } => FinishOutcome::RetryAfter {
            message,
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        },
        // Its platform stopped it at the attempt's timeout (no server was watching).
        Outcome::TimedOut { limit } => FinishOutcome::Timeout(timed_out_after(limit)),
    }
}

/// The store notices the worker's listener (`Worker::listen`) acts on: new work, and a cancel
/// (which stops the job if it runs here).
pub(super) fn listened(n: &crate::store::Notice) -> bool {
    use crate::job::JobStatus;
    use crate::store::Notice;
    matches!(
        n,
        Notice::Queued { .. }
            | Notice::Changed {
                status: JobStatus::Cancelled,
                ..
            }
    )
}

/// An attempt stopped without its end confirmed ([`runyard_runners::Execution::stop`] false: the
/// container engine or the Kubernetes API did not answer in time): its lease is neither given up
/// nor given back. It runs out (`worker.lease_ttl`, no longer renewed) before another attempt
/// may start: a retry of a cancelled job is refused until then, and the reaper then takes an
/// active job's work over if it still runs, or counts the attempt lost.
pub(super) fn not_confirmed(id: Uuid) {
    tracing::warn!(
        job_id = %id,
        "the job's work was not confirmed stopped: its lease runs out before another attempt may start"
    );
}

#[cfg(test)]
mod tests {
    use super::{late_finish, Late};
    use crate::job::{Job, RunRecord};

    fn run(token: u64, outcome: Option<&str>) -> RunRecord {
        RunRecord {
            attempt: 1,
            worker: "w".into(),
            token,
            claimed_at: 1,
            started_at: Some(2),
            ended_at: outcome.map(|_| 3),
            outcome: outcome.map(String::from),
            reported: None,
            time_limit: None,
            error: None,
        }
    }

    #[test]
    fn an_unconfirmed_finish_is_told_from_the_run_records() {
        let mut j = Job::new("t", "r", 0);
        assert_eq!(
            late_finish(&j, 7),
            Late::NotRecorded,
            "no run of that claim"
        );
        j.runs = vec![run(7, None)];
        assert_eq!(late_finish(&j, 7), Late::NotRecorded, "still running");
        for o in ["LOST", "RELEASED", "CANCELLED"] {
            j.runs = vec![run(7, Some(o))];
            assert_eq!(late_finish(&j, 7), Late::NotRecorded, "{o}");
        }
        for o in ["SUCCESS", "ERROR", "TIMEOUT"] {
            j.runs = vec![run(7, Some(o))];
            assert_eq!(late_finish(&j, 7), Late::Recorded, "{o}");
            assert_eq!(late_finish(&j, 8), Late::NotRecorded, "another claim's");
        }
        j.runs = vec![run(7, Some("ERROR")), run(9, None)];
        assert_eq!(late_finish(&j, 7), Late::MovedOn);
        // Reported (or out of time) before: the reaper may have committed it as well.
        let mut decided = run(7, Some("SUCCESS"));
        decided.reported = Some(crate::job::Reported::Success);
        j.runs = vec![decided];
        assert_eq!(late_finish(&j, 7), Late::Decided);
        let mut out_of_time = run(7, Some("TIMEOUT"));
        out_of_time.time_limit = Some("timed out after 1s".into());
        j.runs = vec![out_of_time];
        assert_eq!(late_finish(&j, 7), Late::Decided);
    }

    #[test]
    fn work_its_platform_stopped_at_the_timeout_ends_timeout() {
        let limit = std::time::Duration::from_secs(90);
        let finish = super::outcome_to_finish(
            runyard_runners::Outcome::TimedOut { limit },
            crate::config::RunnerKind::Kube,
        );
        assert_eq!(
            finish,
            crate::job::FinishOutcome::Timeout("timed out after 1m 30s".into())
        );
    }
}
