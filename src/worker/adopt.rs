//! The adoption of work the reaper found alive (or ended) after its worker died or hung: by the
//! handle stored on the job, or, for a job whose handle was never recorded (its worker lost in
//! `STARTING`, after the launch), by its runner's marks, under the fence the reaper put on the
//! lease (`reaper::requeue_unrecorded`). Same attempt, no second run: the work is followed to its
//! end under a fresh lease, or the outcome of work that had ended is recorded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use runyard_runners::{Recovered, RunHandle};
use uuid::Uuid;

use super::reporter::{DeferredReporter, StoreSink};
use super::supervise::{outcome_to_finish, time_limit, Supervised};
use super::{reports, StopReason, Worker};
use crate::job::{Command, Job};
use crate::runner_set::RunnerSlot;
use crate::store::StoreError;

impl Worker {
    /// Takes over work found by the reaper (its worker died): runs it to its end under a fresh
    /// lease (`Store::adopt`; with `expected`, only the lease whose token it is: the reaper's
    /// fence). Work whose handle was never recorded has the handle found recorded
    /// (`STARTING -> RUNNING`), so that a later recovery finds it as any other.
    pub(crate) async fn adopt(
        self: Arc<Self>,
        job: Job,
        slot: Arc<RunnerSlot>,
        recovered: Recovered,
        deferred: Arc<DeferredReporter>,
        expected: Option<u64>,
    ) {
        let asked = tokio::time::Instant::now();
        let ttl = self.cfg.lease_ttl;
        let adopted = match self.store.adopt(job.id, expected, &self.id, ttl).await {
            Ok(j) => j,
            Err(e) => {
                if let Recovered::Running(mut exec) = recovered {
                    if self.moved_on(&job, &e).await {
                        tracing::info!(job_id = %job.id, error = %e, "adoption refused, the job moved on: stopping the recovered work");
                        exec.stop(self.cfg.kill_grace).await;
                    } else {
                        // Dropped: its output is no longer followed, the work runs on.
                        tracing::info!(job_id = %job.id, error = %e, "adoption not made: the job is still on this attempt (another worker holds it, or a later pass decides): its work is left running");
                    }
                } else {
                    tracing::info!(job_id = %job.id, error = %e, "adoption refused");
                }
                return;
            }
        };
        let token = adopted.lease.as_ref().map(|l| l.token).unwrap_or_default();
        let id = adopted.id;
        tracing::info!(job_id = %id, "adopted live work of a lost worker");
        slot.active.fetch_add(1, Ordering::AcqRel);
        let (stop, reason) = self.track(id, token, asked, None);
        if self.swept.load(Ordering::SeqCst) {
            // Adopted after the shutdown's sweep: stopped and given back at once, as a claimed
            // job is (`run_job`).
            *reason.lock() = StopReason::Release;
            stop.cancel();
        }
        let reporter = StoreSink::reporter(self.store.clone(), id, token);
        deferred.attach(reporter.clone());
        match recovered {
            Recovered::Running(exec) => {
                if adopted.handle.is_none() {
                    self.record_found(id, token, exec.handle()).await;
                }
                // The attempt's time counts from its start, or from its claim when no start was
                // recorded (the work started between the two).
                let since = adopted
                    .started_at
                    .or_else(|| adopted.runs.last().map(|r| r.claimed_at));
                // Both are the store's times: counted to the store's time.
                let now = self.store.time().await;
                let elapsed = since
                    .map(|s| Duration::from_micros((now - s).max(0) as u64))
                    .unwrap_or_default();
                let whole_limit = time_limit(&adopted, &slot);
                let limit = whole_limit.saturating_sub(elapsed);
                let run = Supervised {
                    kind: slot.kind,
                    watch: reports::Watch::new(id),
                    reported: adopted.reported().is_some(),
                    refill: None,
                    whole_limit,
                };
                self.supervise(id, token, exec, reporter, limit, stop, reason, run)
                    .await;
            }
            Recovered::Finished(outcome) => {
                self.work_ended(id, token);
                reporter.flush().await;
                self.finish(id, token, outcome_to_finish(outcome, slot.kind), None)
                    .await
            }
            Recovered::Gone => {}
        }
        self.untrack(id, token);
        slot.active.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Records the handle of adopted work that had none (`Command::Started` under the adoption's
    /// `token`). Tried once: when it does not take, the job stays `STARTING` and its work is still
    /// found by its marks if this worker is lost too.
    async fn record_found(&self, id: Uuid, token: u64, handle: RunHandle) {
        let handle = Some(handle);
        if let Err(e) = self
            .store
            .apply(id, Command::Started { token, handle })
            .await
        {
            tracing::warn!(job_id = %id, error = %e, "cannot record the adopted work's handle");
        }
    }

    /// Whether the job the reaper read (`read`), whose adoption failed with `error`, moved on
    /// from the attempt of the recovered work: deleted, no longer active (cancelled, requeued,
    /// ended), or on another attempt. Then the work must stop. Not when the job is still active
    /// on that attempt, whatever its lease's expiry looks like here (a Redis lease is dated by
    /// the store's clock, not this node's): another worker adopted the work first, its worker
    /// renewed the lease, or a reaper fenced it; the work is left to them. Nor when the store
    /// failed (an error other than a refusal), or the job cannot be read: the work is left
    /// alone, its lease still expired, for the next pass (a stop would have that pass find the
    /// work gone and run the job again).
    async fn moved_on(&self, read: &Job, error: &StoreError) -> bool {
        if !matches!(error, StoreError::Transition(_) | StoreError::NotFound) {
            return false;
        }
        match self.store.get(read.id).await {
            Ok(Some(j)) => !(j.status.is_active() && j.attempt == read.attempt),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}
