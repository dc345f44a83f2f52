//! The write that records an attempt's start (with its finish, when it went with it), held to
//! the rule an attempt's outcome follows ([`Worker::finish_write`]): the work has been launched,
//! so only a refusal that says the job is no longer this attempt's (cancelled, taken over,
//! deleted: `StoreError::Transition`, `NotFound`) makes it "gone" and stops it.
//! - A write the store refused for a reason of its own (a full disk: `StoreError::Backend`,
//!   nothing written) is tried again with backoff (100 ms doubling to 2 s) until the lease would
//!   run out or the attempt is stopped. The heartbeat renews a `STARTING` lease meanwhile, when
//!   the store takes its writes.
//! - A write the store did not confirm in time (`StoreError::Unavailable`: it may have been
//!   carried out) is told from the job read back, as [`Worker::unconfirmed`] does for an
//!   outcome: recorded (with the finish that went with it), not recorded (tried again), or
//!   refused (the job moved on without this attempt). A start found recorded is counted in the
//!   metrics as an answered one is ([`Store::start_committed_late`]).
//!
//! A try that failed with nothing written gives the attempt's finish it took from its
//! [`FinishSlot`] back to the slot ([`FinishSlot::restore`]): the next try carries it, and a work
//! that ended between two tries has its finish go with the next one. A stop (shutdown, fencing)
//! ends the tries, the reads back and the waits between them at once; `Worker::record_start`
//! keeps the attempt's end, whether offered or not, and records it when it was not carried.
//!
//! [`Worker::finish_write`]: super::super::Worker
//! [`Worker::unconfirmed`]: super::super::Worker

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::super::supervise::{late_finish, Late};
use crate::job::{ApplyCtx, Command, Job, JobStatus, TransitionError};
use crate::store::{FinishSlot, Store, StoreError};

/// The stored job after the start and, when a finish was taken with it, the finish's result.
pub(crate) type Recorded = (Job, Option<Result<Job, StoreError>>);

/// What the worker keeps of a start written ([`StartWrite::run`]): `None` when it went alone, or
/// the answer to the finish that went with it. Small, on purpose: it is the start task's output
/// and is kept by the attempt's future across the waits that follow (a [`Recorded`] is 1.6 KB,
/// copied at every move; docs/benchmarks.md, "Session 45").
pub(crate) type Written = Option<Box<Result<Job, StoreError>>>;

/// One attempt's start, to be written.
pub(in crate::worker) struct StartWrite {
    pub(in crate::worker) store: Arc<dyn Store>,
    pub(in crate::worker) id: Uuid,
    pub(in crate::worker) token: u64,
    /// The attempt's `Command::Started`.
    pub(in crate::worker) start: Command,
    pub(in crate::worker) finish: Arc<FinishSlot>,
    /// When the lease would run out: no try after it.
    pub(in crate::worker) until: Instant,
    /// The attempt's stop: no try after it.
    pub(in crate::worker) stop: CancellationToken,
}

impl StartWrite {
    /// Writes the start until the store takes or refuses it (see the module docs); the last
    /// answer when the lease would run out or the attempt was stopped first.
    pub(in crate::worker) async fn run(self) -> Result<Written, StoreError> {
        let mut pause = Duration::from_millis(100);
        loop {
            // The stored job is dropped at once: not kept in this task across its waits.
            let r = self
                .store
                .apply_start(self.id, self.start.clone(), self.finish.clone())
                .await
                .map(written);
            let e = match r {
                Err(e @ StoreError::Backend(_)) => e,
                // Rare: on the heap, not in every start's task.
                Err(e @ StoreError::Unavailable(_)) => match Box::pin(self.read_back(e)).await {
                    Ok(told) => return told,
                    Err(e) => e,
                },
                r => return r,
            };
            // Nothing of it was written: the finish it took goes with the next try.
            self.finish.restore();
            if !self.pause(pause).await {
                return Err(e);
            }
            tracing::debug!(error = %e, "the store did not take the start: trying again");
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Waits `pause` before the next try: false (no wait) when the try would come after the
    /// lease ran out, or the attempt was stopped (meanwhile).
    async fn pause(&self, pause: Duration) -> bool {
        if Instant::now() + pause >= self.until {
            return false;
        }
        self.unless_stopped(tokio::time::sleep(pause))
            .await
            .is_some()
    }

    /// `f`'s output, or none when the attempt is stopped first (or was).
    async fn unless_stopped<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        if self.stop.is_cancelled() {
            return None;
        }
        tokio::select! {
            v = f => Some(v),
            _ = self.stop.cancelled() => None,
        }
    }

    /// What became of a start the store did not confirm (`error`), from the job read back:
    /// `Ok` with the answer the write would have had when it was carried out, or refused;
    /// `Err(error)` when it was not (a second read a moment later says the same: a write sent
    /// on a connection given up for dead may be read just after a read on a new one), to be
    /// tried again; `Ok(Err(error))` when the job cannot be read before the lease runs out or
    /// the attempt is stopped.
    async fn read_back(
        &self,
        error: StoreError,
    ) -> Result<Result<Written, StoreError>, StoreError> {
        let mut pause = Duration::from_millis(100);
        let mut seen_unrecorded = false;
        loop {
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Err(error));
            }
            let read = crate::store::within(left, self.store.get(self.id));
            let Some(read) = self.unless_stopped(read).await else {
                return Ok(Err(error));
            };
            let nap = match read {
                Ok(None) => return Ok(Err(StoreError::NotFound)),
                Ok(Some(j)) => match start_landed(&j, self.token, &self.start) {
                    Landed::No if !seen_unrecorded => {
                        seen_unrecorded = true;
                        Duration::from_millis(250)
                    }
                    Landed::No => return Err(error),
                    Landed::Started => {
                        tracing::info!(error = %error, "the store answered late: the start was recorded");
                        self.store.start_committed_late();
                        return Ok(Ok(None));
                    }
                    // Counted as the answered start is, when it was this start that made the
                    // attempt RUNNING (not the job's own report through its hook), also when
                    // the job has moved on since (cancelled, taken back).
                    Landed::Finished(late) => {
                        if self.started_here(&j) {
                            self.store.start_committed_late();
                        }
                        return Ok(Ok(self.finished_late(late, j, &error)));
                    }
                    Landed::Refused(e) => {
                        if self.started_here(&j) {
                            self.store.start_committed_late();
                        }
                        return Ok(Err(e));
                    }
                },
                Err(_) => {
                    let nap = pause;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    nap
                }
            };
            if self
                .unless_stopped(tokio::time::sleep(nap.min(left)))
                .await
                .is_none()
            {
                return Ok(Err(error));
            }
        }
    }
}

impl StartWrite {
    /// Whether this attempt's start is recorded in `job` (its run's `started_at`, which only
    /// the worker's start sets).
    fn started_here(&self, job: &Job) -> bool {
        let run = job.runs.iter().rev().find(|r| r.token == self.token);
        run.is_some_and(|r| r.started_at.is_some())
    }
}

/// What the worker keeps of a start written (the stored job dropped).
fn written((_, end): Recorded) -> Written {
    end.map(Box::new)
}

impl StartWrite {
    /// A start read back recorded with the attempt's end (`late`, [`Late`]): what the write
    /// would have answered. Told as `Worker::unconfirmed` tells an outcome: only an end that is
    /// the job's last and the worker's own is counted and logged as it is now (`job ended`); an
    /// end the job has moved on from (another attempt since), or decided before (its report,
    /// its time limit: the reaper may have committed it, and logged it) is not logged again, the
    /// finish's answer then the lease no longer being the attempt's.
    pub(super) fn finished_late(&self, late: Late, j: Job, error: &StoreError) -> Written {
        let stale = || {
            Some(Box::new(Err(StoreError::Transition(
                TransitionError::StaleLease,
            ))))
        };
        match late {
            Late::Recorded => {
                tracing::info!(error = %error, "the store answered late: the start was recorded with the attempt's end");
                self.store.finish_committed_late(&j);
                Some(Box::new(Ok(j)))
            }
            Late::MovedOn => {
                tracing::info!(error = %error, "the store answered late: the start was recorded with the attempt's end, and the job has moved on since");
                stale()
            }
            // (`NotRecorded` is not told as `Landed::Finished`.)
            Late::Decided | Late::NotRecorded => {
                tracing::info!(
                    error = %error,
                    "the store answered late: the start was recorded with the outcome decided \
                     before the attempt's end (its report or its time limit), by this finish \
                     or by the reaper"
                );
                stale()
            }
        }
    }
}

/// What a job read back says of the start of the attempt holding `token`.
#[derive(Debug)]
enum Landed {
    /// Not recorded: the attempt still holds the job, `STARTING`.
    No,
    /// Recorded (or the job reported `RUNNING` itself): the attempt runs.
    Started,
    /// Recorded with the attempt's end (its finish went with it): how it is told.
    Finished(Late),
    /// The start would be refused now: the job is no longer this attempt's.
    Refused(StoreError),
}

/// What `job` says of `start` (the `Command::Started` of the attempt holding `token`).
fn start_landed(job: &Job, token: u64, start: &Command) -> Landed {
    match late_finish(job, token) {
        Late::NotRecorded => {}
        late => return Landed::Finished(late),
    }
    // The start again, on a copy: what the store would answer to it.
    let mut probe = job.clone();
    let handle = match start {
        Command::Started { handle, .. } => handle.clone(),
        _ => None,
    };
    match crate::job::apply(
        &mut probe,
        start.clone(),
        &ApplyCtx::at(crate::job::now_us(), 0),
    ) {
        Err(e) => Landed::Refused(e.into()),
        Ok(_) if job.status == JobStatus::Starting => Landed::No,
        // RUNNING without the attempt's handle: reported by the job through its hook, the start
        // itself still to be written (it saves the handle).
        Ok(_) if job.handle != handle => Landed::No,
        Ok(_) => Landed::Started,
    }
}

#[cfg(test)]
mod tests {
    use super::{start_landed, Landed};
    use crate::job::{Command, Job, JobStatus, Lease, RunHandle, RunRecord};
    use runyard_hooks::RunKind;

    fn claimed(token: u64) -> Job {
        let mut j = Job::new("t", "r", 0);
        j.status = JobStatus::Starting;
        j.lease = Some(Lease {
            worker: "w".into(),
            token,
            expires_at: i64::MAX,
        });
        j.runs = vec![RunRecord {
            attempt: 1,
            worker: "w".into(),
            token,
            claimed_at: 1,
            started_at: None,
            ended_at: None,
            outcome: None,
            reported: None,
            time_limit: None,
            error: None,
        }];
        j
    }

    fn started(token: u64) -> Command {
        Command::Started {
            token,
            handle: Some(RunHandle {
                kind: RunKind::Local,
                id: "1".into(),
                data: serde_json::json!({"pid": 1}),
            }),
        }
    }

    #[test]
    fn a_start_read_back_is_told_from_the_job() {
        let j = claimed(7);
        assert!(
            matches!(start_landed(&j, 7, &started(7)), Landed::No),
            "still STARTING: not recorded"
        );
        assert!(
            matches!(start_landed(&j, 8, &started(8)), Landed::Refused(_)),
            "another claim's job"
        );
        let mut running = claimed(7);
        running.status = JobStatus::Running;
        running.runs[0].started_at = Some(2);
        assert!(
            matches!(start_landed(&running, 7, &started(7)), Landed::No),
            "RUNNING reported by the job: its start (the handle) still to be written"
        );
        if let Command::Started { handle, .. } = started(7) {
            running.handle = handle;
        }
        assert!(matches!(
            start_landed(&running, 7, &started(7)),
            Landed::Started
        ));
        let mut done = running.clone();
        done.status = JobStatus::Success;
        done.lease = None;
        done.runs[0].ended_at = Some(3);
        done.runs[0].outcome = Some("SUCCESS".into());
        assert!(matches!(
            start_landed(&done, 7, &started(7)),
            Landed::Finished(super::Late::Recorded)
        ));
        let mut cancelled = claimed(7);
        cancelled.status = JobStatus::Cancelled;
        assert!(
            matches!(start_landed(&cancelled, 7, &started(7)), Landed::Refused(_)),
            "cancelled between claim and start"
        );
    }
}
