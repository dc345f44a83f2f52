//! The reaper: finds jobs whose lease expired (their worker died or hung) and asks the job's
//! runner to `recover` the work. Live work (a container that outlived its worker) is adopted by
//! this worker under a fresh fencing token; work that is gone is requeued (or failed when no
//! attempt is left). Safe to run in every worker process at once: every step is a
//! compare-and-set on the expired lease.

use std::sync::Arc;
use std::time::Duration;

use runyard_runners::Recovered;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::reporter::DeferredReporter;
use super::Worker;
use crate::job::{Command, JobStatus};

/// Runs until `stop`.
pub async fn run(worker: Arc<Worker>, stop: CancellationToken) {
    let every = (worker.cfg.lease_ttl / 2).max(Duration::from_millis(100));
    loop {
        if let Err(e) = reap_once(&worker).await {
            tracing::warn!(error = %e, "reaper pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass; returns how many jobs were requeued, failed or adopted.
pub async fn reap_once(worker: &Arc<Worker>) -> crate::store::Result<usize> {
    let store = &worker.store;
    let mut n = 0;
    for job in store.expired(500).await? {
        // A lease this worker holds and renews is not expired, whatever the clock says: after a
        // forward step of this node's wall clock its own leases look expired to it, and reaping
        // them would start a second run next to the live one.
        let token = job.lease.as_ref().map(|l| (l.worker.as_str(), l.token));
        if token.is_some_and(|(w, t)| w == worker.id && worker.holds(job.id, t)) {
            continue;
        }
        if job.status == JobStatus::Cancelled {
            n += usize::from(stop_lost(worker, job).await);
            continue;
        }
        let slot = worker.runners.get(&job.runner).cloned();
        if let (Some(handle), Some(slot)) = (job.handle.clone(), slot) {
            let spec = worker.spec_factory().spec(&job);
            // What the recovered work logs before it is adopted is kept for the adopting attempt.
            // kube copies a running pod's log on from the last stored line's time.
            let last_log = if handle.kind == runyard_runners::RunKind::Kube {
                last_log_time(store.as_ref(), job.id).await
            } else {
                None
            };
            let deferred = Arc::new(DeferredReporter::with_last_log(last_log));
            match slot.runner.recover(&handle, spec, deferred.clone()).await {
                Ok(Recovered::Gone) => {}
                Ok(r) => {
                    // The adopted attempt's lines are in its `job` span, as a claimed one's.
                    let span = tracing::info_span!("job", job_id = %job.id, r#type = %job.job_type, attempt = job.attempt);
                    worker.jobs.spawn(
                        worker
                            .clone()
                            .adopt(job, slot, r, deferred)
                            .instrument(span),
                    );
                    n += 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "cannot recover the job's work; will retry");
                    continue;
                }
            }
        }
        match store.apply(job.id, Command::LeaseExpired).await {
            Ok(j) => {
                tracing::warn!(
                    job_id = %j.id,
                    r#type = %j.job_type,
                    attempt = j.attempt,
                    status = %j.status,
                    "lease expired (worker lost or hung): job {}",
                    if j.status.is_terminal() { "ended" } else { "requeued" }
                );
                crate::outcomes::log_change(&j);
                n += 1;
            }
            Err(e) => {
                tracing::debug!(job_id = %job.id, error = %e, "reap refused (lease renewed or job moved)")
            }
        }
    }
    Ok(n)
}

/// A job cancelled while it ran whose worker let the lease run out before it said the work
/// stopped (gone, or hung: a worker `SIGSTOP`ped does not stop its jobs' processes, which run
/// on): the work is made sure gone as for any expired lease, by the runner's `recover` (a
/// process group on this machine killed, a container or a Kubernetes Job found; live work is
/// stopped, never adopted), then the lease goes (`Command::StopLost`) and a retry may run a new
/// attempt. Until then it is refused (`Job::still_stopping`). A job of a runner this worker does
/// not serve, or without a handle (cancelled before its work was recorded started), gives up
/// its lease at once, as such an active job is requeued at once. True when the lease went.
async fn stop_lost(worker: &Arc<Worker>, job: crate::job::Job) -> bool {
    let Some(token) = job.lease.as_ref().map(|l| l.token) else {
        return false;
    };
    let slot = worker.runners.get(&job.runner).cloned();
    if let (Some(handle), Some(slot)) = (job.handle.clone(), slot) {
        let spec = worker.spec_factory().spec(&job);
        let reporter = Arc::new(DeferredReporter::with_last_log(None));
        let gone = match slot.runner.recover(&handle, spec, reporter).await {
            Ok(Recovered::Running(mut exec)) => exec.stop(worker.cfg.kill_grace).await,
            Ok(Recovered::Finished(_) | Recovered::Gone) => true,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot make sure the cancelled job's work is gone; will retry");
                false
            }
        };
        if !gone {
            return false;
        }
    }
    match worker
        .store
        .apply(job.id, Command::StopLost { token })
        .await
    {
        Ok(_) => {
            tracing::warn!(
                job_id = %job.id,
                r#type = %job.job_type,
                attempt = job.attempt,
                "lease expired (worker lost or hung) while the cancelled job's work was being stopped: its work is gone"
            );
            true
        }
        Err(e) => {
            tracing::debug!(job_id = %job.id, error = %e, "refused (the worker said the work stopped, or renewed the lease)");
            false
        }
    }
}

/// When the job's last stored log line was received (pages through its log, bounded).
async fn last_log_time(
    store: &dyn crate::store::Store,
    id: uuid::Uuid,
) -> Option<std::time::SystemTime> {
    let mut after = 0;
    let mut last = None;
    for _ in 0..1000 {
        let page = store.logs(id, after, 5000).await.ok()?;
        let Some(l) = page.last() else { break };
        after = l.seq;
        last = Some(l.ts);
    }
    last.map(|us| std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64))
}
