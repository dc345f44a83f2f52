//! The sweep of work left behind: containers and Kubernetes Jobs that outlived their job because
//! the runner's one bounded attempt to stop or remove them failed (the engine or the API out of
//! reach during a cancel, a job that lost contact with its engine, a server killed between a
//! cancel and the removal). Every worker, at start and every `worker.sweep_interval`, asks each
//! runner for the work its backend holds under runyard's labels and this deployment's
//! fingerprint ([`Runner::leftovers`]: one list call per runner; another deployment sharing the
//! engine or namespace, with another store, is left alone) and removes an item only when its job is done with it ([`done_with`]):
//!
//! - the job does not exist any more (retention deleted it);
//! - the job is terminal and holds no live lease (a cancelled job keeps its lease while the
//!   worker that ran it is still stopping the work: `Command::Stopped` gives it up, or it runs
//!   out);
//! - the item's attempt is older than the job's current attempt (a job runs only its current
//!   attempt).
//!
//! Never the work of the job's current attempt while the job is not terminal (QUEUED, STARTING,
//! RUNNING...), so not a container being created right now: the claim that made its attempt was
//! committed before the launch, and the list is read before the jobs are. Nor the attempt this
//! worker is running (or still stopping). A store error removes nothing in that pass. Safe on every
//! node at once: removing what is already gone is fine.
//!
//! [`Runner::leftovers`]: runyard_runners::Runner::leftovers

use std::sync::Arc;

use runyard_runners::Leftover;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Worker;
use crate::job::{Job, Micros};
use crate::runner_set::RunnerSlot;

/// Items whose job is read per runner and pass (a backend holding more is read in turns).
const CHECKED_PER_PASS: usize = 500;
/// Items removed per pass, all runners together.
const REMOVED_PER_PASS: usize = 50;

/// Runs a pass at once, then one every `worker.sweep_interval`, until `stop`.
pub async fn run(worker: Arc<Worker>, stop: CancellationToken) {
    let mut turn = 0usize;
    loop {
        tokio::select! {
            r = sweep_once(&worker, turn) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "sweep of work left behind failed; nothing removed");
                }
            }
            _ = stop.cancelled() => return,
        }
        turn = turn.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(worker.cfg.sweep_interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Whether an item of `attempt` may be removed, given its job as the store has it (`None`: the
/// job does not exist), at `now`.
pub(super) fn done_with(job: Option<&Job>, attempt: u32, now: Micros) -> bool {
    let Some(job) = job else {
        return true;
    };
    if attempt < job.attempt {
        return true;
    }
    let leased = job.lease.as_ref().is_some_and(|l| l.expires_at > now);
    attempt == job.attempt && job.status.is_terminal() && !leased
}

/// One pass (the `turn`-th: which items are read when a backend holds more than
/// [`CHECKED_PER_PASS`]); returns how many items were removed. The jobs are all read before
/// anything is removed: a store error removes nothing.
pub async fn sweep_once(worker: &Arc<Worker>, turn: usize) -> crate::store::Result<usize> {
    let mut doomed: Vec<(Arc<RunnerSlot>, Leftover, Uuid, &'static str)> = Vec::new();
    let deployment = worker.spec_factory().deployment();
    'slots: for slot in worker.runners.iter() {
        let items = match slot.runner.leftovers(&deployment).await {
            Ok(items) => items,
            Err(e) => {
                tracing::debug!(runner = %slot.name, error = %e, "cannot list the runner's work");
                continue;
            }
        };
        let skip = if items.len() > CHECKED_PER_PASS {
            turn.wrapping_mul(CHECKED_PER_PASS) % items.len()
        } else {
            0
        };
        let n = items.len();
        for item in items
            .into_iter()
            .cycle()
            .skip(skip)
            .take(n.min(CHECKED_PER_PASS))
        {
            let Ok(id) = Uuid::parse_str(&item.job_id) else {
                continue;
            };
            // The attempt this worker runs (its stop maybe still under way) is its own business.
            let tracked = worker.running.lock().contains_key(&id);
            let job = worker.store.get(id).await?;
            let current = job.as_ref().is_some_and(|j| item.attempt >= j.attempt);
            // The lease's expiry is the store's time: judged by its clock.
            let now = worker.store.time().await;
            if done_with(job.as_ref(), item.attempt, now) && !(tracked && current) {
                let status = job.as_ref().map_or("deleted", |j| j.status.as_str());
                doomed.push((slot.clone(), item, id, status));
                if doomed.len() >= REMOVED_PER_PASS {
                    break 'slots;
                }
            }
        }
    }
    let mut removed = 0;
    for (slot, item, id, status) in doomed {
        match slot
            .runner
            .remove_leftover(&item, worker.cfg.kill_grace)
            .await
        {
            Ok(()) => {
                removed += 1;
                tracing::info!(
                    job_id = %id,
                    attempt = item.attempt,
                    runner = %slot.name,
                    work = %short(&item.name),
                    job_status = status,
                    "removed work left behind by a job that is done with it"
                );
            }
            Err(e) => tracing::warn!(
                job_id = %id,
                runner = %slot.name,
                error = %e,
                "cannot remove work left behind; the next sweep tries again"
            ),
        }
    }
    Ok(removed)
}

fn short(name: &str) -> &str {
    name.get(..12).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobStatus, Lease};

    fn job(status: JobStatus, attempt: u32, lease_until: Option<Micros>) -> Job {
        Job {
            status,
            attempt,
            lease: lease_until.map(|expires_at| Lease {
                worker: "w".into(),
                token: 1,
                expires_at,
            }),
            ..Job::new("t", "dock", 0)
        }
    }

    #[test]
    fn only_work_its_job_is_done_with_is_swept() {
        use JobStatus::*;
        let now = 1_000_000;
        // The job was deleted (retention).
        assert!(done_with(None, 1, now));
        // Terminal, no lease or an expired one.
        for s in [Success, Error, Timeout, Cancelled] {
            assert!(done_with(Some(&job(s, 2, None)), 2, now), "{s:?}");
            assert!(done_with(Some(&job(s, 2, Some(now - 1))), 2, now), "{s:?}");
        }
        // A cancel whose worker is still stopping the work keeps the lease: not yet.
        assert!(!done_with(Some(&job(Cancelled, 2, Some(now + 1))), 2, now));
        // The current attempt of a job that is not terminal: never (a container being created
        // for a STARTING job included), whatever its lease.
        for s in [Scheduled, Waiting, Queued, Starting, Running] {
            assert!(!done_with(Some(&job(s, 2, Some(now + 1))), 2, now), "{s:?}");
            assert!(!done_with(Some(&job(s, 2, None)), 2, now), "{s:?}");
            // An earlier attempt's work: the job runs only its current one.
            assert!(done_with(Some(&job(s, 2, Some(now + 1))), 1, now), "{s:?}");
        }
        // An attempt the job has not reached (read before its claim): never.
        assert!(!done_with(Some(&job(Success, 1, None)), 2, now));
        assert!(!done_with(Some(&job(Queued, 1, None)), 2, now));
    }
}
