//! The reaper: finds jobs whose lease expired (their worker died or hung) and asks the job's
//! runner to `recover` the work. Live work (a container that outlived its worker) is adopted by
//! this worker under a fresh fencing token, and work that ended meanwhile has its outcome
//! recorded, whether its handle was stored or it was found by its runner's marks (a worker lost
//! in `STARTING`); work that is gone is requeued (or failed when no attempt is left). The work
//! is looked for outside the pass (a cancelled job's stop and an active job's unrecorded work
//! each in a task of its own, at most [`MAX_STOPPING`] at once; recorded work in one task per
//! runner), so a runner whose backend does not answer holds up no other runner's reaps. Safe to
//! run in every worker process at once: every step is a compare-and-set on the expired lease.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use runyard_runners::Recovered;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::reporter::DeferredReporter;
use super::Worker;
use crate::job::{Command, Job, JobStatus, ABANDONED_STOP};
use crate::store::log_quiet::warn_unless_refused;
use crate::store::StoreError;

/// Jobs whose work this worker's reaper is looking for, each in a task of its own (a stop may
/// take `kill_grace` and more, a scan of `/proc` may block: the other expired leases do not wait
/// for it): cancelled ones, whose work it makes sure is gone, and active ones whose handle was
/// never recorded, whose work it adopts or makes sure is gone. And the runners whose active
/// jobs' recorded work it is recovering, one task per runner (see [`reap_once`]).
type Stopping = Arc<parking_lot::Mutex<StopState>>;

/// See [`Stopping`].
#[derive(Default)]
struct StopState {
    /// The jobs with a task running.
    busy: HashSet<Uuid>,
    /// The runners (by name) with a recovery task running.
    recovering: HashSet<String>,
    /// The fence token this reaper put on each handle-less active job's expired lease (see
    /// [`requeue_unrecorded`]): a later pass that finds it there looks for the work again under
    /// it, without another fence.
    fenced: HashMap<Uuid, u64>,
    /// When this reaper first failed to make each job's work sure gone (or found no way to
    /// reach it): the give-up (`ABANDONED_STOP`) also waits that long from here, so a lease
    /// that ran out long before this reaper first looked (an embedded store reopened, every
    /// worker down for minutes) is not given up on one failed try.
    failing: HashMap<Uuid, i64>,
}

/// What a reaper task holds in [`StopState`].
enum Held {
    Job(Uuid),
    Runner(String),
}

/// Takes what its task holds out of [`StopState`] when dropped: when the task ends, is dropped
/// at the stop's bound, or panics (a runner's `recover` that panicked would otherwise leave
/// that runner's recoveries, or the job's reaps, stopped until a restart).
struct Release(Stopping, Held);

impl Drop for Release {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        match &self.1 {
            Held::Job(id) => st.busy.remove(id),
            Held::Runner(name) => st.recovering.remove(name),
        };
    }
}

impl StopState {
    /// Whether the work of job `id`, whose lease ran out at `expires`, has been held for long
    /// enough (`ABANDONED_STOP`) both since then and since this reaper first failed to make it
    /// sure gone (recorded by this call): then the lease goes, the work possibly still running.
    /// `now`: the store's time, which the lease's expiry is.
    fn held_long_enough(&mut self, id: Uuid, expires: i64, now: i64) -> bool {
        let first = *self.failing.entry(id).or_insert(now);
        expires.saturating_add(ABANDONED_STOP) <= now && first.saturating_add(ABANDONED_STOP) <= now
    }
}

/// At most this many such tasks at once; the others wait for a later pass.
const MAX_STOPPING: usize = 16;

/// An active job whose handle was never recorded, claimed by a worker of another machine (or one
/// whose id names none): that machine's reapers stop its work; others requeue it only this many
/// `lease_ttl` after its lease ran out.
const OTHER_MACHINE_LEASES: u32 = 3;

/// Runs until `stop`.
pub async fn run(worker: Arc<Worker>, stop: CancellationToken) {
    let every = (worker.cfg.lease_ttl / 2).max(Duration::from_millis(100));
    let stopping = Stopping::default();
    loop {
        if let Err(e) = reap_once(&worker, &stopping).await {
            warn_unless_refused!(e, "reaper pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass; returns how many jobs were requeued or failed here (the stop of a cancelled job,
/// and the recovery of an active one's work, recorded or not, run on in their tasks, not
/// counted). The active jobs whose work's handle is recorded are recovered in one task per
/// runner, one job after another (as fast as its backend answers, the pass's whole batch at
/// once): a backend that does not answer (a Kubernetes API, each request within
/// `kube.api_timeout`) holds up its own runner's recoveries only, never another runner's, nor
/// the reaps that need no `recover`. A runner whose task still runs is left to a later pass.
async fn reap_once(worker: &Arc<Worker>, stopping: &Stopping) -> crate::store::Result<usize> {
    let store = &worker.store;
    let mut n = 0;
    let mut recorded: HashMap<String, Vec<(Job, runyard_runners::RunHandle)>> = HashMap::new();
    let expired = store.expired(500).await?;
    let seen: HashSet<Uuid> = expired.iter().map(|j| j.id).collect();
    {
        let mut st = stopping.lock();
        st.fenced.retain(|id, _| seen.contains(id));
        st.failing.retain(|id, _| seen.contains(id));
    }
    for job in expired {
        // A lease this worker holds and renews is not expired, whatever the clock says: after a
        // forward step of this node's wall clock its own leases look expired to it, and reaping
        // them would start a second run next to the live one.
        let token = job.lease.as_ref().map(|l| (l.worker.as_str(), l.token));
        if token.is_some_and(|(w, t)| w == worker.id && worker.holds(job.id, t)) {
            continue;
        }
        let cancelled = job.status == JobStatus::Cancelled;
        if cancelled || (job.handle.is_none() && may_have_unrecorded_work(worker, &job)) {
            let taken = {
                let mut st = stopping.lock();
                st.busy.len() < MAX_STOPPING && st.busy.insert(job.id)
            };
            // Spawned with the lock released: a task the runtime shuts down at its spawn drops
            // its `Release` there, which takes the lock.
            if taken {
                let (w, set) = (worker.clone(), stopping.clone());
                let held = Release(stopping.clone(), Held::Job(job.id));
                worker.spawn_task(async move {
                    let _held = held;
                    if cancelled {
                        stop_lost(&w, job, &set).await;
                    } else {
                        requeue_unrecorded(&w, job, &set).await;
                    }
                });
            }
            continue;
        }
        // A stopping worker takes on no work: another worker's reaper adopts it.
        if worker.stopping.load(Ordering::SeqCst) && job.handle.is_some() {
            continue;
        }
        if let Some(handle) = job.handle.clone() {
            if worker.runners.get(&job.runner).is_some() {
                recorded
                    .entry(job.runner.clone())
                    .or_default()
                    .push((job, handle));
                continue;
            }
        }
        let read = job.lease.as_ref().map(|l| l.token);
        if lease_expired(worker, job.id, read).await {
            n += 1;
        }
    }
    for (runner, jobs) in recorded {
        let Some(slot) = worker.runners.get(&runner).cloned() else {
            continue;
        };
        if !stopping.lock().recovering.insert(runner.clone()) {
            continue;
        }
        let (w, held) = (
            worker.clone(),
            Release(stopping.clone(), Held::Runner(runner)),
        );
        worker.spawn_task(async move {
            let _held = held;
            for (job, handle) in jobs {
                // A stopping worker takes on no work (as above).
                if w.stopping.load(Ordering::SeqCst) {
                    break;
                }
                recover_recorded(&w, job, slot.clone(), handle).await;
            }
        });
    }
    Ok(n)
}

/// An active job whose lease ran out, its work's `handle` recorded: the work is `recover`ed;
/// live or ended work is adopted (`Worker::adopt`: its outcome recorded if it ended), work gone
/// has the job requeued (or ended) with `LeaseExpired` of the lease read. A `recover` that fails
/// changes nothing: a later pass tries again.
async fn recover_recorded(
    worker: &Arc<Worker>,
    job: Job,
    slot: Arc<crate::runner_set::RunnerSlot>,
    handle: runyard_runners::RunHandle,
) {
    let spec = worker.spec_factory().spec(&job);
    let (found, deferred) = recover(worker, &job, &slot, &handle, spec).await;
    match found {
        Ok(Recovered::Gone) => {
            let read = job.lease.as_ref().map(|l| l.token);
            lease_expired(worker, job.id, read).await;
        }
        Ok(r) => spawn_adoption(worker, job, slot, r, deferred, None),
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "cannot recover the job's work; will retry")
        }
    }
}

/// `recover`s the work of `handle` to adopt it: what it logs before the adoption is kept for
/// the adopting attempt (kube copies a running pod's log on from the last stored line's time).
async fn recover(
    worker: &Worker,
    job: &Job,
    slot: &crate::runner_set::RunnerSlot,
    handle: &runyard_runners::RunHandle,
    spec: runyard_runners::JobSpec,
) -> (
    Result<Recovered, runyard_runners::RunnerError>,
    Arc<DeferredReporter>,
) {
    let last_log = if handle.kind == runyard_runners::RunKind::Kube {
        last_log_time(worker.store.as_ref(), job.id).await
    } else {
        None
    };
    let deferred = Arc::new(DeferredReporter::with_last_log(last_log));
    let found = slot.runner.recover(handle, spec, deferred.clone()).await;
    (found, deferred)
}

/// Adopts recovered work (`Worker::adopt`, with `expected` the fence's token for work found by
/// its marks) in a task of its own: the adopted attempt's lines are in its `job` span, as a
/// claimed one's.
fn spawn_adoption(
    worker: &Arc<Worker>,
    job: Job,
    slot: Arc<crate::runner_set::RunnerSlot>,
    found: Recovered,
    deferred: Arc<DeferredReporter>,
    expected: Option<u64>,
) {
    let span =
        tracing::info_span!("job", job_id = %job.id, r#type = %job.job_type, attempt = job.attempt);
    let adopt = worker.clone().adopt(job, slot, found, deferred, expected);
    worker.spawn_task(adopt.instrument(span));
}

/// `Command::LeaseExpired` of the lease whose token is `token` (refused if it has another: a
/// later lease, another reaper's fence): the job is requeued (or ends); true when it took.
async fn lease_expired(worker: &Worker, id: Uuid, token: Option<u64>) -> bool {
    match worker
        .store
        .apply(id, Command::LeaseExpired { token })
        .await
    {
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
            // Requeued under a runner this config no longer has for it (embedded: renamed
            // across the restart that orphaned the lease): moved, or parked (`reroute.rs`).
            super::reroute::route_requeued(&worker.store, &worker.runners, &j).await;
            true
        }
        Err(e @ StoreError::Transition(_)) => {
            tracing::debug!(job_id = %id, error = %e, "reap refused (lease renewed or job moved)");
            false
        }
        // The store could not write it (a corrupt record, a key of the wrong type, the store
        // away): said at WARN, once a minute per job, since every pass meets it again.
        Err(e) => {
            if crate::store::log_quiet::loud("reap", &id.to_string()) {
                tracing::warn!(job_id = %id, error = %e, "cannot reap the job: the store refused the write; every pass tries again");
            } else {
                tracing::debug!(job_id = %id, error = %e, "cannot reap the job");
            }
            false
        }
    }
}

/// A job cancelled while it ran whose worker let the lease run out before it said the work
/// stopped (gone, or hung: a worker `SIGSTOP`ped does not stop its jobs' processes, which run
/// on): the work is made sure gone as for any expired lease, by the runner's `recover` (a
/// process group on this machine killed, a container or a Kubernetes Job found; live work is
/// stopped, never adopted), then the lease goes (`Command::StopLost`) and a retry may run a new
/// attempt. Until then it is refused (`Job::still_stopping`). A job cancelled while `STARTING`,
/// its worker hung after it launched the work but before it recorded the handle, is looked for
/// by the runner's marks on its work instead (`Runner::unrecorded`: job id and attempt; for a
/// process, on the claiming worker's machine, [`claimer_node`]). A worker that cannot reach the
/// work (it does not serve the job's runner; a process of another machine or pid namespace, or
/// of a claimer whose id names no machine) leaves it to one that can, and gives the lease up
/// only once `ABANDONED_STOP` has passed (when a retry is let through anyway). A job of a
/// runner that has no such marks (service) gives it up at once. True when the lease went.
async fn stop_lost(worker: &Arc<Worker>, job: crate::job::Job, state: &Stopping) -> bool {
    let Some((token, expires, claimer)) = job
        .lease
        .as_ref()
        .map(|l| (l.token, l.expires_at, l.worker.clone()))
    else {
        return false;
    };
    // Judged by the store's clock, as the lease's expiry is.
    let abandoned = |now| state.lock().held_long_enough(job.id, expires, now);
    let slot = worker.runners.get(&job.runner).cloned();
    let spec = worker.spec_factory().spec(&job);
    let handle = job.handle.clone().or_else(|| {
        let node = claimer_node(&claimer);
        slot.as_ref()?.runner.unrecorded(&spec, node)
    });
    match (handle, slot) {
        (Some(handle), Some(slot)) if slot.runner.reaches(&handle) => {
            if !make_gone(worker, &slot, &handle, spec).await {
                if !abandoned(worker.store.time().await) {
                    return false;
                }
                tracing::warn!(
                    job_id = %job.id,
                    r#type = %job.job_type,
                    "the cancelled job's work was not made sure gone within 5 min of its lease running out: its lease is given up, and its work may still run"
                );
            }
        }
        // Nothing the runner marks: a service job is a task of its worker's own process, stopped
        // with it, or by it once it finds the lease gone.
        (None, Some(_)) => {}
        _ if !abandoned(worker.store.time().await) => return false,
        _ => tracing::warn!(
            job_id = %job.id,
            r#type = %job.job_type,
            "no worker that reaches the cancelled job's work made sure it is gone within 5 min of its lease running out: its lease is given up, and its work may still run"
        ),
    }
    give_up(worker, &job, token).await
}

/// `recover`s the work of `handle` and stops it if it runs (never adopts it); true when it is
/// known gone, false when not (an error, a stop not confirmed): tried again at a later pass.
async fn make_gone(
    worker: &Worker,
    slot: &crate::runner_set::RunnerSlot,
    handle: &runyard_runners::RunHandle,
    spec: runyard_runners::JobSpec,
) -> bool {
    let id = spec.id.clone();
    let reporter = Arc::new(DeferredReporter::with_last_log(None));
    match slot.runner.recover(handle, spec, reporter).await {
        Ok(Recovered::Running(mut exec)) => exec.stop(worker.cfg.kill_grace).await,
        Ok(Recovered::Finished(_) | Recovered::Gone) => true,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "cannot make sure the job's work is gone; will retry");
            false
        }
    }
}

/// Whether an active job without a handle may have work its runner finds by its marks
/// (`Runner::unrecorded`), or is of a runner this worker does not serve (its work unknown here).
fn may_have_unrecorded_work(worker: &Worker, job: &Job) -> bool {
    let Some(slot) = worker.runners.get(&job.runner) else {
        return true;
    };
    let node = job.lease.as_ref().and_then(|l| claimer_node(&l.worker));
    let spec = worker.spec_factory().spec(job);
    slot.runner.unrecorded(&spec, node).is_some()
}

/// An active job whose worker let the lease run out after it launched the work but before it
/// recorded the handle (hung, or dead, in `STARTING`): the runner looks for the work by its marks
/// (`Runner::unrecorded`). First the lease is fenced (`Store::fence`: a fresh token, the holder,
/// run and expiry kept), so a worker that was only slow can no longer renew it nor write: it
/// never runs on (when it wakes up to its start's write refused it leaves the work to this
/// reaper, `start.rs`; its fence task or a refused heartbeat stops the work, adopted or not, and
/// an adopting worker then records that stop as the attempt's end). Then the work found is
/// `recover`ed as a stored handle's would be: work still running (a container, a Kubernetes Job)
/// is adopted under the fence's token (`Worker::adopt`: same attempt, no second run, the handle
/// found recorded), work that ended has its outcome recorded (a container that exited is left in
/// place by `recover`, for the sweep); work gone (nothing found, a container created but never
/// started, or a local process, which cannot be adopted: `recover` kills it) has the job
/// requeued (`LeaseExpired` of the fence's token: refused if another reaper fenced it since, or
/// the job moved on). A stopping worker adopts no running work: it leaves it, fenced, to another
/// worker's reaper (or its next life's), the execution it recovered dropped (its followers end
/// with it, the work runs on). Work not made sure gone (a `recover` that failed: an inconclusive
/// scan, the engine away) keeps the lease for a later pass, until `ABANDONED_STOP` after the
/// stored expiry: then it is requeued, its work possibly still running. Work this worker cannot
/// reach (a process of another machine, a claimer whose id names no machine, a runner it does
/// not serve) is left to that machine's reapers for [`OTHER_MACHINE_LEASES`] `lease_ttl` after
/// the stored expiry, then requeued (`LeaseExpired` of the token read in the pass).
async fn requeue_unrecorded(worker: &Arc<Worker>, job: Job, state: &Stopping) {
    let Some(lease) = job.lease.as_ref() else {
        return;
    };
    let slot = worker.runners.get(&job.runner).cloned();
    let node = claimer_node(&lease.worker);
    let spec = worker.spec_factory().spec(&job);
    let reached = slot.and_then(|slot| {
        let handle = slot.runner.unrecorded(&spec, node)?;
        slot.runner.reaches(&handle).then_some((slot, handle))
    });
    // A lease whose token is not its run's was fenced by a reaper that reaches the work: it is
    // stopping it, or holding it while it cannot make it sure gone (up to `ABANDONED_STOP`).
    let fenced = job.runs.last().is_some_and(|r| r.token != lease.token);
    let Some((slot, handle)) = reached else {
        let wait = worker.cfg.lease_ttl.saturating_mul(OTHER_MACHINE_LEASES);
        let wait = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
        let wait = if fenced {
            wait.max(ABANDONED_STOP)
        } else {
            wait
        };
        if lease.expires_at.saturating_add(wait) <= worker.store.time().await {
            lease_expired(worker, job.id, Some(lease.token)).await;
        }
        return;
    };
    // Fenced already (by this reaper, or one of another process on this machine): the work is
    // looked for under that fence, not fenced again (two reapers would refuse each other's
    // adoption or requeue).
    let mine = fenced || state.lock().fenced.get(&job.id) == Some(&lease.token);
    let token = if mine {
        lease.token
    } else {
        let Some(token) = fence(worker, job.id, lease.token).await else {
            return;
        };
        state.lock().fenced.insert(job.id, token);
        token
    };
    match recover(worker, &job, &slot, &handle, spec).await {
        (Ok(Recovered::Gone), _) => {}
        // A stopping worker takes on no live work: another worker's reaper (or its next life's)
        // adopts it under this fence.
        (Ok(Recovered::Running(_)), _) if worker.stopping.load(Ordering::SeqCst) => return,
        (Ok(found), deferred) => {
            spawn_adoption(worker, job, slot, found, deferred, Some(token));
            return;
        }
        (Err(e), _) => {
            tracing::warn!(job_id = %job.id, error = %e, "cannot recover the work of a job whose worker was lost while starting; will retry");
            let now = worker.store.time().await;
            if !state.lock().held_long_enough(job.id, lease.expires_at, now) {
                return;
            }
            tracing::warn!(
                job_id = %job.id,
                r#type = %job.job_type,
                "the work of a job whose worker hung while starting was not made sure gone within 5 min: requeued, and its work may still run"
            );
        }
    }
    lease_expired(worker, job.id, Some(token)).await;
}

/// Fences the expired lease of job `id` whose token is `read` (`Store::fence`): the worker that
/// held it can no longer renew it (its heartbeat is refused, so it stops its work if it wakes
/// up) nor write. The fence's token, when it took.
async fn fence(worker: &Worker, id: Uuid, read: u64) -> Option<u64> {
    match worker.store.fence(id, read).await {
        Ok(j) => j.lease.map(|l| l.token),
        Err(e) => {
            tracing::debug!(job_id = %id, error = %e, "fence refused (lease renewed or fenced, or job moved)");
            None
        }
    }
}

/// The node (`runyard_runners::node_id`) of the worker whose id is `worker`, when it says one
/// (`{host}-{pid}-{random}@{node}`; the ids of older builds do not).
pub(crate) fn claimer_node(worker: &str) -> Option<&str> {
    worker.rsplit_once('@').map(|(_, node)| node)
}

/// `Command::StopLost` for `job`'s lease `token`; true when it took.
async fn give_up(worker: &Worker, job: &crate::job::Job, token: u64) -> bool {
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
                "lease expired (worker lost or hung) while the cancelled job's work was being stopped: lease given up, a retry may run"
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

#[cfg(test)]
#[path = "reaper_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "reaper_guard_tests.rs"]
mod guard_tests;
