//! A launch bounded by its attempt's stop and time limit. A runner's launch that does not return
//! (a Kubernetes API request that never answers, an image pull that takes long) must neither
//! hold its job's slot nor outlast a cancel, the job's `timeout` or a shutdown.
//!
//! The launch races the attempt's stop (cancel, shutdown, fence) and its time limit. When one of
//! them comes first, the launch gets `worker.kill_grace` more to return, as running work gets it
//! to end: one that returns is stopped as any launched work is (its end confirmed:
//! `Worker::record_start`), or, out of time, timed out at once (`Worker::supervise` with no
//! time left). One still going is abandoned: its future is dropped, and what it may have
//! started (a process, a container, a Kubernetes Job: each marked with the job's id and
//! attempt) is left to the job's lease, as when a worker dies while `STARTING`. The lease is
//! neither renewed nor given up; once it runs out, the reaper finds the work by its marks
//! (`Runner::unrecorded`) and makes sure it is gone (`reaper.rs`: `stop_lost` for a cancelled
//! job, `requeue_unrecorded` for an active one) before a retry or a requeue. Out of time, the
//! attempt is first marked (`Command::TimeLimit`), so that the job ends TIMEOUT however its
//! lease ends.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use runyard_runners::{Execution, RunnerError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::supervise::timed_out_after;
use super::Worker;
use crate::job::{Command, FinishOutcome};
use crate::store::handoff::Refill;

/// How a bounded launch ended.
pub(super) enum Launched {
    /// It returned; `true`: after the attempt's time limit (no time is left).
    Returned(Result<Box<dyn Execution>, RunnerError>, bool),
    /// It was abandoned; `true`: at the time limit (else at the stop).
    Abandoned(bool),
}

impl Worker {
    /// `launch`, raced against the attempt's `stop` and its time `limit` (see the module docs).
    pub(super) async fn launch_within(
        &self,
        launch: impl Future<Output = Result<Box<dyn Execution>, RunnerError>>,
        stop: &CancellationToken,
        limit: Duration,
    ) -> Launched {
        tokio::pin!(launch);
        let until = tokio::time::Instant::now() + limit.min(crate::config::MAX_DURATION);
        let late = tokio::select! {
            // A launch that has returned is taken, whatever came at the same moment.
            biased;
            r = &mut launch => return Launched::Returned(r, false),
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep_until(until) => true,
        };
        match tokio::time::timeout(self.cfg.kill_grace, &mut launch).await {
            Ok(r) => Launched::Returned(r, late),
            Err(_) => Launched::Abandoned(late),
        }
    }

    /// A launch that failed: nothing runs. Given back when the host lacked resources (not the
    /// job's fault: the attempt given back, the job back in the queue shortly); else the
    /// attempt's outcome: TIMEOUT when it failed after the attempt's time limit
    /// (`out_of_time`, that limit), ERROR without a retry when no retry can fix it, else a
    /// failure retried as any other. Its finish claims into `refill`, if given.
    pub(super) async fn launch_failed(
        &self,
        id: Uuid,
        token: u64,
        e: RunnerError,
        out_of_time: Option<Duration>,
        refill: Option<Arc<Refill>>,
    ) {
        let outcome = match out_of_time {
            Some(limit) => {
                tracing::warn!(error = %e, "launch failed after the attempt's time limit");
                FinishOutcome::Timeout(timed_out_after(limit))
            }
            None if e.is_host_resources() => {
                // Not the job's fault: back to the queue shortly, the attempt given back.
                tracing::warn!(error = %e, "launch failed for lack of host resources: requeued");
                let cmd = Command::HostFailure {
                    token,
                    message: e.to_string(),
                };
                // Nothing runs: refused (cancelled while it launched), the lease it kept goes.
                let r = self.store.apply(id, cmd).await;
                self.settle(id, token, &r).await;
                if let Err(e) = r {
                    tracing::info!(error = %e, "cannot give the launch back");
                }
                return;
            }
            None => {
                tracing::warn!(error = %e, "launch failed");
                let message = e.to_string();
                if e.is_final() {
                    // The same launch would fail the same way: no attempt is spent on it.
                    FinishOutcome::Aborted { message }
                } else {
                    FinishOutcome::Failed {
                        message,
                        exit_code: None,
                    }
                }
            }
        };
        self.finish(id, token, outcome, refill).await;
    }

    /// A launch abandoned at its attempt's stop, or (`late`) at its time `limit`: the attempt is
    /// marked out of time in that case, and its work left to its lease (the module docs).
    pub(super) async fn abandoned(&self, id: Uuid, token: u64, late: bool, limit: Duration) {
        self.work_ended(id, token);
        let at = if late { "time limit" } else { "stop" };
        tracing::warn!(
            kill_grace = ?self.cfg.kill_grace,
            "the launch did not return within kill_grace of the attempt's {at}: abandoned; the \
             job's lease runs out and the reaper makes sure what the launch started is gone, as \
             after a crash"
        );
        if late {
            self.time_limit(id, token, timed_out_after(limit)).await;
        }
    }
}
