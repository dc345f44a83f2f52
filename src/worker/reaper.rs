//! The reaper: finds jobs whose lease expired (their worker died or hung), makes sure their work
//! is gone through the runner's `recover`, and requeues them (attempt + 1 at the next claim) or
//! fails them when no attempt is left. Safe to run in every worker process at once: the requeue is
//! a compare-and-set on the expired lease.

use std::sync::Arc;
use std::time::Duration;

use runyard_runners::{NullReporter, Recovered};
use tokio_util::sync::CancellationToken;

use super::SpecFactory;
use crate::config::WorkerConfig;
use crate::job::Command;
use crate::runner_set::RunnerSet;
use crate::store::Store;

/// Runs until `stop`.
pub async fn run(
    store: Arc<dyn Store>,
    runners: Arc<RunnerSet>,
    cfg: WorkerConfig,
    specs: SpecFactory,
    stop: CancellationToken,
) {
    let every = (cfg.lease_ttl / 2).max(Duration::from_millis(100));
    loop {
        if let Err(e) = reap_once(&store, &runners, &specs).await {
            tracing::warn!(error = %e, "reaper pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass; returns how many jobs were requeued or failed.
pub async fn reap_once(
    store: &Arc<dyn Store>,
    runners: &RunnerSet,
    specs: &SpecFactory,
) -> crate::store::Result<usize> {
    let mut n = 0;
    for job in store.expired(500).await? {
        if let (Some(handle), Some(slot)) = (&job.handle, runners.get(&job.runner)) {
            let spec = specs.spec(&job);
            match slot
                .runner
                .recover(handle, spec, Arc::new(NullReporter))
                .await
            {
                Ok(Recovered::Gone) => {}
                Ok(Recovered::Finished(_)) => {}
                Ok(Recovered::Running(mut exec)) => {
                    // Adopting live work comes with the container runners; until then, stop it
                    // so that it never runs twice.
                    exec.stop(Duration::from_secs(5)).await;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "cannot recover the job's work; will retry");
                    continue;
                }
            }
        }
        match store.apply(job.id, Command::LeaseExpired).await {
            Ok(j) => {
                tracing::info!(job_id = %j.id, status = %j.status, "expired lease reaped");
                n += 1;
            }
            Err(e) => {
                tracing::debug!(job_id = %job.id, error = %e, "reap refused (lease renewed or job moved)")
            }
        }
    }
    Ok(n)
}
