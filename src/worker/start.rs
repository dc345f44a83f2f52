//! Recording an attempt's start once it was launched; when the attempt ends before the store got to
//! its start (a quick service or local job while the store's writer is busy), its finish goes with
//! the start in one store change ([`crate::store::finish_slot`]) instead of a write of its own.
//! A local job's start is asked for only once its process has ended or `worker.quick_exit_wait`
//! has passed: a process that ends that quickly (`/bin/true`) is always written once, not only
//! when it wins a race against the writer. The write is tried again while the store refuses it
//! for a reason of its own (a full disk), as an outcome is ([`write`]). An attempt's end, once
//! seen, is kept whether it was offered to the start or not: when it did not go with the start
//! (or the attempt was stopped before the start was recorded), it is recorded on its own, and a
//! job that ran to its end is not given back or left to its lease. A start refused because a
//! reaper took the job over (this worker hung or was late: its lease ran out, was fenced, the
//! work maybe adopted) leaves the work running, to that reaper ([`Start::Detached`]); any other
//! refusal stops it.

#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;

use runyard_runners::Execution;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::write::StartWrite;
use super::reporter::JobReporter;
use super::supervise::outcome_to_finish;
use super::Worker;
use crate::config::RunnerKind;
use crate::job::{Command, FinishOutcome};
use crate::store::handoff::Refill;
use crate::store::{FinishSlot, StoreError};

/// What recording the start left to do.
pub(super) enum Start {
    /// The start is recorded: supervise the attempt.
    Running,
    /// The attempt had ended and its outcome was recorded with its start: nothing left.
    Finished,
    /// Refused (cancelled or lost between claim and launch), or not taken by the store before
    /// the lease would run out ([`write`]): the work was stopped, nothing left; false when its
    /// end could not be confirmed ([`Execution::stop`]).
    ///
    /// [`Execution::stop`]: runyard_runners::Execution::stop
    Gone(bool),
    /// Stopped (shutdown, cancel or fencing) before the start was recorded: the work was stopped
    /// (false: its end not confirmed); the start may still be on its way to the store, in this
    /// task; and how the attempt ended when it had ended by itself before the stop (offered to
    /// the start or not: the task's answer says whether it went with it).
    Stopped(bool, Option<RecordTask>, Option<FinishOutcome>),
    /// Refused because a reaper took the job over (this worker hung or was late: its lease ran
    /// out, the reaper fenced it and adopts the work it finds by its marks): the work was left
    /// running, to it; nothing left to do or write.
    Detached,
}

/// The task recording a start: the finish's answer when the finish went with it
/// ([`write::Written`]).
pub(super) type RecordTask = tokio::task::JoinHandle<Result<write::Written, StoreError>>;

impl Worker {
    /// Records the start of the launched attempt (its lease's `token`), raced against a stop:
    /// while the store is away this may take `store.retry`, and the fence task must still be
    /// able to stop the work in time.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_start(
        &self,
        id: Uuid,
        token: u64,
        attempt: u32,
        kind: RunnerKind,
        exec: &mut Box<dyn Execution>,
        reporter: &Arc<JobReporter>,
        stop: &CancellationToken,
        refill: Option<Arc<Refill>>,
    ) -> Start {
        // A finish that goes with the start claims the slot's next job with it.
        let finish = FinishSlot::refilling(refill.clone());
        let handle = exec.handle();
        // Tried again while the store refuses it, until the lease would run out ([`write`]).
        let until = tokio::time::Instant::now() + self.cfg.lease_ttl;
        let start_write = |finish: &Arc<FinishSlot>| StartWrite {
            store: self.store.clone(),
            id,
            token,
            start: Command::Started {
                token,
                handle: Some(handle.clone()),
            },
            finish: finish.clone(),
            until,
            stop: stop.clone(),
        };
        // A task of its own while the work runs: a stop must not wait for the store. Tracked
        // with the jobs, so that a stopping worker's runtime does not end with it half-way.
        let spawn_record = |finish: &Arc<FinishSlot>| self.jobs.spawn(start_write(finish).run());
        // A process that ends within `quick_exit_wait` has its finish written with its start.
        let linger = match kind {
            RunnerKind::Local => self.cfg.quick_exit_wait,
            _ => std::time::Duration::ZERO,
        };
        let mut record = if linger.is_zero() {
            Some(spawn_record(&finish))
        } else {
            None
        };
        let lingering = tokio::time::sleep(linger);
        tokio::pin!(lingering);
        // Whose `wait` may be dropped when the start comes first, and called again: a service's
        // only polls its task; a process's keeps every step it took (the exit status, the group
        // kill, the drained log pipes, the removed directory) and resumes from there.
        let mut watch_end = matches!(kind, RunnerKind::Service | RunnerKind::Local);
        // The attempt's end once seen, offered to the start or not (its reports not all stored
        // yet, or the start already taken by the store): recorded on its own when it did not go
        // with the start, also when a stop comes before the start lands.
        let mut ended = None;
        let started = loop {
            tokio::select! {
                r = async { record.as_mut().expect("guarded").await }, if record.is_some() => {
                    break r
                        .map_err(|e| StoreError::Backend(format!("recording the start: {e}")))
                        .and_then(|r| r);
                }
                _ = &mut lingering, if record.is_none() => {
                    record = Some(spawn_record(&finish));
                }
                o = exec.wait(), if watch_end => {
                    watch_end = false;
                    self.work_ended(id, token);
                    if record.is_none() {
                        // Its start is not asked for yet: its output goes first (one write),
                        // then its start with its finish (one more), not three writes.
                        reporter.flush().await;
                    }
                    // Its finish may go with its start only when everything it reported is
                    // stored (a finish is recorded after the job's last logs and progress).
                    let outcome = outcome_to_finish(o, kind);
                    if reporter.is_idle() {
                        // Refused once a start took the slot: then recorded on its own.
                        let _ = finish.offer(token, outcome.clone());
                    }
                    ended = Some(outcome);
                    if record.is_none() {
                        // The work has ended: nothing left to stop, so no task of its own.
                        break start_write(&finish).run().await;
                    }
                }
                _ = stop.cancelled() => {
                    tracing::info!("job stopped before its start was recorded");
                    let gone = exec.stop(self.cfg.kill_grace).await;
                    self.work_ended(id, token);
                    reporter.flush().await;
                    return Start::Stopped(gone, record, ended);
                }
            }
        };
        let at = (id, token, attempt);
        self.start_settled(at, started, ended, exec, reporter, stop, refill)
            .await
    }

    /// What the start's write (`started`) of attempt `at` (job id, lease token, attempt number)
    /// leaves to do, the attempt's end (`ended`) when seen.
    #[allow(clippy::too_many_arguments)]
    async fn start_settled(
        &self,
        at: (Uuid, u64, u32),
        started: Result<write::Written, StoreError>,
        ended: Option<FinishOutcome>,
        exec: &mut Box<dyn Execution>,
        reporter: &Arc<JobReporter>,
        stop: &CancellationToken,
        refill: Option<Arc<Refill>>,
    ) -> Start {
        let (id, token, attempt) = at;
        match started {
            Ok(Some(end)) => {
                self.finished(id, token, *end).await;
                Start::Finished
            }
            // The start alone, the attempt's end known: recorded now, not left to the
            // supervision, where a stop that came meanwhile could give back a job that ran.
            Ok(None) => match ended {
                Some(outcome) if exec.end_confirmed() => {
                    reporter.flush().await;
                    self.finish(id, token, outcome, refill).await;
                    Start::Finished
                }
                _ => Start::Running,
            },
            // Stopped while the store refused the start or could not say (not a refusal of the
            // attempt): settled as a stop before the start was recorded.
            Err(e) if stop.is_cancelled() && !refused(&e) => {
                tracing::info!(error = %e, "job stopped before its start was recorded");
                let gone = exec.stop(self.cfg.kill_grace).await;
                reporter.flush().await;
                Start::Stopped(gone, None, ended)
            }
            // Its lease ran out (this worker hung, or was late) and a reaper took the job over:
            // the work is the reaper's, or its adopter's, which records how it ends. Stopped,
            // it would end as the attempt's failure (an exit 143, "the container disappeared").
            // Rare: on the heap, not in every attempt's future.
            Err(e) if refused(&e) && Box::pin(self.taken_over(id, token, attempt)).await => {
                tracing::info!(error = %e, "job taken over by a reaper before its start was recorded (this worker hung or was late): its work is left to it");
                self.work_ended(id, token);
                reporter.flush().await;
                Start::Detached
            }
            Err(e) => {
                // Cancelled (or lost) between claim and launch, or the store did not take the
                // start before the lease would run out.
                tracing::info!(error = %e, "job gone before it started: stopping it");
                let gone = exec.stop(self.cfg.kill_grace).await;
                self.work_ended(id, token);
                reporter.flush().await;
                Start::Gone(gone)
            }
        }
    }

    /// Settles an attempt whose stop was told before its launch: one delivered to a stopping
    /// worker after the grace's sweep (a finish's refill on its way as the shutdown began), or
    /// stopped by a cancel or the fence first. Nothing was started (no process, container or
    /// service call), so whatever the reason it is given back to the queue (`QUEUED` in its
    /// place, the attempt given back: the fence's stop spends no attempt either). A job
    /// cancelled meanwhile refuses that and the lease the cancel kept goes (`settle`); one taken
    /// over refuses it, and nothing changes.
    pub(super) async fn not_launched(&self, id: Uuid, token: u64) {
        tracing::info!("job stopped before its launch: not started");
        self.work_ended(id, token);
        self.give_back(id, token).await
    }

    /// Settles an attempt stopped (shutdown, cancel, fencing) before its start was recorded. A
    /// start still on its way to the store lands first: if its finish went with it, the job has
    /// ended and stays so; if it was refused (cancelled meanwhile, or taken over), the lease a
    /// cancel kept goes. An attempt that had `ended` by itself is finished with its outcome, not
    /// run again. Otherwise, at shutdown (`release`), the job is given back to the queue as a
    /// running one is, not left `STARTING` under this worker's lease until it expires; else the
    /// lease a cancel kept goes.
    pub(super) async fn stopped_unstarted(
        &self,
        id: Uuid,
        token: u64,
        record: Option<RecordTask>,
        ended: Option<FinishOutcome>,
        release: bool,
    ) {
        let refusal = match record {
            None => false,
            Some(task) => match task.await {
                Ok(Ok(Some(end))) => return self.finished(id, token, *end).await,
                Ok(Ok(None)) => false,
                Ok(Err(e)) if refused(&e) => {
                    tracing::debug!(error = %e, "start refused");
                    true
                }
                // The store may or may not hold the start (unreachable, or the task failed):
                // the finish or the release below, fenced by the token, settles it either way.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "recording the start failed");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording the start failed");
                    false
                }
            },
        };
        match ended {
            _ if refusal => self.stopped_gone(id, token).await,
            // Stopped: no next job.
            Some(outcome) => self.finish(id, token, outcome, None).await,
            None if release => self.give_back(id, token).await,
            None => self.stopped_gone(id, token).await,
        }
    }
}

impl Worker {
    /// Whether job `id`, whose start under `token` was refused, is still active on `attempt`
    /// under a lease of another token: a reaper fenced the lease this worker let run out
    /// (`Command::Fence`, the holder kept) and looks for the work, or another worker adopted it
    /// (`Command::Adopt`). A reaper fences only work it reaches, and adopts, records or makes
    /// gone what it finds. Not when the job moved on (cancelled, requeued, another attempt) or
    /// cannot be read: then the work is stopped.
    async fn taken_over(&self, id: Uuid, token: u64, attempt: u32) -> bool {
        match self.store.get(id).await {
            Ok(Some(j)) => {
                j.status.is_active()
                    && j.attempt == attempt
                    && j.lease.as_ref().is_some_and(|l| l.token != token)
            }
            _ => false,
        }
    }
}

/// A refusal that says the job is no longer the attempt's (cancelled, taken over, deleted), not
/// the store's own failure.
fn refused(e: &StoreError) -> bool {
    matches!(e, StoreError::Transition(_) | StoreError::NotFound)
}
