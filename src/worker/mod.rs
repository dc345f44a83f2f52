//! The worker: claims QUEUED jobs with a lease, launches them on their runner, heartbeats the
//! leases, enforces timeouts and cancellation, and writes the outcome with its fencing token.
//!
//! - [`Worker::run`] is the claim loop; each claimed job runs in its own task ([`Worker::run_job`]),
//!   which then runs each job its finish claimed for the slot (`store/handoff.rs`, `Refill`).
//! - A heartbeat task renews the leases of running jobs; jobs the store says we no longer hold
//!   (cancelled, or taken over after our lease expired) are stopped.
//! - A fence task (shared stores: Redis) stops, on its own, every job whose lease this worker
//!   could not renew for nearly a lease period (Redis away, or a network partition): by the time
//!   another worker may reap the expired lease and run the job again, this copy is gone, so two
//!   runs of a job never overlap even when the worker cannot hear from the store.
//! - [`reaper`] finds expired leases of dead workers and requeues (or fails) their jobs.
//! - [`orphans`] sweeps containers and Kubernetes Jobs left behind by jobs done with them.
//! - At shutdown the worker stops claiming (its loop and its jobs' finishes), lets running jobs
//!   finish within `shutdown_grace`, then stops the rest and gives them back to the queue; the
//!   whole stop is bounded whatever the store does (`stop.rs`).

mod adopt;
mod claims;
pub mod held_progress;
mod launch;
mod leases;
pub mod orphans;
mod park;
pub mod reaper;
pub mod reporter;
pub mod reports;
pub mod reroute;
mod start;
mod stop;
mod supervise;
#[cfg(test)]
mod sweep_tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use runyard_runners::{JobSpec, SharedReporter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::job::{Job, JobStatus};
use crate::runner_set::{RunnerSet, RunnerSlot};
use crate::store::handoff::{NextJob, Refill};
use crate::store::{Notice, Store};
use launch::Launched;
use reporter::StoreSink;
pub use stop::STOP_MARGIN;
use supervise::{time_limit, Supervised};

/// Why a running job is being stopped by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Cancelled, or no longer ours: the store already says what happened.
    Gone,
    /// Shutdown: give the job back to the queue.
    Release,
}

struct Running {
    token: u64,
    stop: CancellationToken,
    reason: Arc<Mutex<StopReason>>,
    /// When the lease was last known to be renewed: the moment before the claim, adoption or
    /// heartbeat that set it was sent (its expiry is at least this plus `lease_ttl`).
    renewed: tokio::time::Instant,
    /// Stopped by the fence task (logged once).
    fenced: bool,
    /// Its work has ended or was stopped: only writes are left (`Worker::work_ended`).
    work_over: bool,
    /// Where the job's finish may claim the slot's next job; closed when the worker stops.
    refill: Option<Arc<Refill>>,
    /// The attempt's `job` span: the heartbeat's and the fence's lines about it are in it.
    span: tracing::Span,
}

/// One worker process's claim loop and running jobs.
pub struct Worker {
    id: String,
    store: Arc<dyn Store>,
    runners: Arc<RunnerSet>,
    cfg: WorkerConfig,
    master_key: Arc<crate::security::MasterKey>,
    /// The store's copy id (`runyard backup`; `None`: not a copy), in its deployment fingerprint.
    copy: Option<u64>,
    hook_url: String,
    running: Mutex<HashMap<Uuid, Running>>,
    wake: tokio::sync::Notify,
    /// A heartbeat now, not at its next tick (`leases.rs`, `renew_soon_if_old`).
    beat_now: tokio::sync::Notify,
    /// A job was QUEUED (or notices were missed) since the claim loop last looked.
    queued: AtomicBool,
    /// Shutdown has begun: no finish claims a next job (`Worker::begin_stopping`).
    stopping: AtomicBool,
    /// The shutdown grace is over and the running jobs were told to stop: a job tracked after
    /// that is stopped at once (`Worker::drain`).
    swept: AtomicBool,
    /// When the stop began (`stop.rs`): its graces count from then.
    stop_began: OnceLock<tokio::time::Instant>,
    /// Every job and adoption task: `run` returns only once they have all ended (or were left
    /// to their leases at the stop's bound, `quit`), so a stopped worker holds nothing (the
    /// embedded store's lock included).
    jobs: TaskTracker,
    /// Cancelled at the stop's bound: the job tasks still waiting for the store end.
    quit: CancellationToken,
}

impl Worker {
    /// A worker with a fresh id. `copy`: the store's copy id, when `runyard backup` made it
    /// (`SqliteStore::copy_id`): its work is labelled as a deployment of its own.
    pub fn new(
        store: Arc<dyn Store>,
        runners: Arc<RunnerSet>,
        cfg: WorkerConfig,
        master_key: Arc<crate::security::MasterKey>,
        copy: Option<u64>,
        hook_url: String,
    ) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        // Its machine, for the reaper (`reaper::claimer_node`).
        let node = runyard_runners::node_id().map_or_else(String::new, |n| format!("@{n}"));
        Arc::new(Self {
            id: format!(
                "{host}-{}-{}{node}",
                std::process::id(),
                &Uuid::now_v7().simple().to_string()[24..]
            ),
            store,
            runners,
            cfg,
            master_key,
            copy,
            hook_url,
            running: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            beat_now: tokio::sync::Notify::new(),
            queued: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            stop_began: OnceLock::new(),
            jobs: TaskTracker::new(),
            quit: CancellationToken::new(),
        })
    }

    /// The worker's id, as recorded on leases.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` is cancelled, then drains as described in the module docs.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(worker = %self.id, "worker started");
        let bg = CancellationToken::new();
        let stopping = {
            let (me, shutdown) = (self.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                me.begin_stopping()
            }
        };
        let mut tasks = vec![
            // Wherever the claim loop is when the shutdown comes, finishes stop claiming.
            tokio::spawn(stopping),
            tokio::spawn(self.clone().listen(bg.clone())),
            tokio::spawn(self.clone().heartbeats(bg.clone())),
            tokio::spawn(reaper::run(self.clone(), bg.clone())),
            tokio::spawn(orphans::run(self.clone(), bg.clone())),
        ];
        // The embedded store is held by this one process (its data dir is locked) and a worker
        // never reaps a lease it holds: nobody else can take a job over, so fencing would only
        // stop jobs whose heartbeat a busy machine delayed.
        if self.store.backend_name() != "embedded" {
            tasks.push(tokio::spawn(self.clone().fence(bg.clone())));
        }
        let mut error_backoff = Duration::from_millis(50);
        // Claim in this round: at the start, after the poll interval, when a slot was full or
        // filled up (more may be queued), and on every round where the store cannot hand jobs
        // over; otherwise only when a job was QUEUED since the last round (`listen`).
        let mut must_claim = true;
        let mut pacing = claims::Pacing::new(self.cfg.claim_interval, self.store.backend_name());
        while !shutdown.is_cancelled() {
            if !pacing.wait(&shutdown).await {
                break;
            }
            // A claim the store does not answer (Redis away) is not waited for past the grace:
            // a job it may have claimed is recovered by its lease.
            let round = tokio::select! {
                r = self.claim_round(must_claim) => r,
                _ = self.grace_over(&shutdown) => break,
            };
            pacing.claimed(&round);
            let (failed, full) = (round.failed, round.full);
            // A failed claim is tried again after the backoff.
            must_claim = full || failed;
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(error_backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            error_backoff = Duration::from_millis(50);
            must_claim |= self.wait_for_work(&shutdown, must_claim).await;
        }
        self.begin_stopping();
        self.drain().await;
        self.end_tasks(bg, tasks).await;
        tracing::info!(worker = %self.id, "worker stopped");
    }

    /// Runs a job claimed (or handed over) for `slot` in its own task.
    fn spawn_job(self: &Arc<Self>, job: Job, slot: &Arc<RunnerSlot>, asked: tokio::time::Instant) {
        slot.active.fetch_add(1, Ordering::AcqRel);
        self.spawn_task(self.clone().run_job(job, slot.clone(), asked));
    }

    /// Reacts to what the store commits: new work wakes the claim loop, a cancelled job is stopped.
    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut rx = self.store.subscribe_to(supervise::listened);
        loop {
            let n = tokio::select! {
                n = rx.recv() => n,
                _ = stop.cancelled() => return,
            };
            match n {
                Ok(Notice::Queued { .. }) => {
                    self.queued.store(true, Ordering::Release);
                    self.wake.notify_one();
                }
                Ok(Notice::Changed { job_id, status }) if status.is_terminal() => {
                    if matches!(status, JobStatus::Cancelled) {
                        self.stop_job(job_id, StopReason::Gone);
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.queued.store(true, Ordering::Release);
                    self.wake.notify_one();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Records a job this worker now runs under `token` (its lease asked for at `asked`), with
    /// the refill its finish may claim into: the token that stops it and where the reason for
    /// stopping it is written.
    fn track(
        &self,
        id: Uuid,
        token: u64,
        asked: tokio::time::Instant,
        refill: Option<Arc<Refill>>,
    ) -> (CancellationToken, Arc<Mutex<StopReason>>) {
        let stop = CancellationToken::new();
        let reason = Arc::new(Mutex::new(StopReason::Gone));
        self.running.lock().insert(
            id,
            Running {
                token,
                stop: stop.clone(),
                reason: reason.clone(),
                renewed: asked,
                fenced: false,
                work_over: false,
                refill,
                // `track` runs in the attempt's span.
                span: tracing::Span::current(),
            },
        );
        // After the insert: the heartbeat it wakes must find the job.
        self.renew_soon_if_old(asked);
        (stop, reason)
    }

    /// Forgets a job this worker ran under `token`, unless a later attempt of it is tracked
    /// already (claimed here once this one's lease went).
    fn untrack(&self, id: Uuid, token: u64) {
        let mut running = self.running.lock();
        if running.get(&id).is_some_and(|r| r.token == token) {
            running.remove(&id);
        }
    }

    /// True while this worker runs the job under this fencing token (and has not fenced it).
    fn holds(&self, id: Uuid, token: u64) -> bool {
        self.running
            .lock()
            .get(&id)
            .is_some_and(|r| r.token == token && !r.fenced)
    }

    /// The `job` span of the attempt of `id` this worker runs (none when it runs none).
    fn span_of(&self, id: Uuid) -> tracing::Span {
        self.running
            .lock()
            .get(&id)
            .map_or_else(tracing::Span::none, |r| r.span.clone())
    }

    fn stop_job(&self, id: Uuid, reason: StopReason) {
        if let Some(r) = self.running.lock().get(&id) {
            *r.reason.lock() = reason;
            r.stop.cancel();
        }
    }

    fn spec_factory(&self) -> SpecFactory {
        SpecFactory {
            master_key: self.master_key.clone(),
            copy: self.copy,
            hook_url: self.hook_url.clone(),
        }
    }

    /// Runs one claimed job to its end, then each job its finish claimed for the slot
    /// (`Worker::refill`) in the same place.
    async fn run_job(
        self: Arc<Self>,
        mut job: Job,
        slot: Arc<RunnerSlot>,
        mut asked: tokio::time::Instant,
    ) {
        loop {
            let span = tracing::info_span!("job", job_id = %job.id, r#type = %job.job_type, attempt = job.attempt);
            let id = job.id;
            let next = async {
                let token = job.lease.as_ref().map(|l| l.token).unwrap_or_default();
                let (refill, next) = self.refill(&slot);
                let (stop, reason) = self.track(id, token, asked, refill.clone());
                if let Some(f) = refill
                    .as_ref()
                    .filter(|_| self.stopping.load(Ordering::SeqCst))
                {
                    // Tracked first: either `begin_stopping` closed it, or this sees the flag.
                    f.close();
                }
                if self.swept.load(Ordering::SeqCst) {
                    // Came after the grace's sweep (handed over, claimed, or claimed by a
                    // finish just before the shutdown): given back at once, never launched
                    // (`Worker::execute`).
                    *reason.lock() = StopReason::Release;
                    stop.cancel();
                }
                // On the heap: an attempt's future is about 7 KB (every runner's launch and
                // supervision inlined), and inline it made the job's task about 9 KB, copied
                // whole at each spawn and each loop turn; memcpy was about a quarter of
                // the worker thread's samples at 32 in flight (docs/benchmarks.md, "Session 41").
                // A job of a type its runner does not claim (the config changed since its
                // submit) is not run here: given back, re-routed (`reroute.rs`).
                // Checked here first: the guard's future is made only for a misrouted job.
                if slot.claims(&job.job_type) || !Box::pin(self.misrouted(&job, &slot, token)).await
                {
                    let run = self.execute(&job, &slot, token, stop, reason, refill.clone());
                    Box::pin(run).await;
                }
                self.untrack(id, token);
                let (job, asked) = next?.get(refill.as_deref()?).await?;
                Some((job, tokio::time::Instant::from_std(asked)))
            }
            .instrument(span)
            .await;
            let Some((next, at)) = next else { break };
            (job, asked) = (next, at);
        }
        slot.active.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Where the finish of a job starting now in `slot` may claim the slot's next QUEUED job
    /// (`store/handoff.rs`, `Refill`), for this task to run next without a wake-up of the claim
    /// loop and a claim of its own: only when the slot is full (jobs are likely QUEUED behind
    /// it), the store can, and the worker is not stopping. Not in a slot with room: there new
    /// jobs are handed over at submit or claimed many at a time, and a query in every finish
    /// cost more than it saved (docs/benchmarks.md, "Session 25").
    fn refill(&self, slot: &RunnerSlot) -> (Option<Arc<Refill>>, Option<NextJob>) {
        let full = slot.active.load(Ordering::Acquire) >= slot.concurrency;
        if !full || self.stopping.load(Ordering::SeqCst) {
            return (None, None);
        }
        self.store
            .refill(&slot.name, &self.id, self.cfg.lease_ttl)
            .unzip()
    }

    /// Runs one attempt to its end; its finish claims into `refill`, if given.
    async fn execute(
        &self,
        job: &Job,
        slot: &RunnerSlot,
        token: u64,
        stop: CancellationToken,
        reason: Arc<Mutex<StopReason>>,
        refill: Option<Arc<Refill>>,
    ) {
        let id = job.id;
        let reporter = StoreSink::reporter(self.store.clone(), id, token);
        let shared: SharedReporter = reporter.clone();
        // Registered before the launch: the job may report before its start is recorded.
        let watch = reports::Watch::new(id);
        let mut spec = self.spec_factory().spec(job);
        spec.timeout = spec.timeout.or(slot.timeout);
        if stop.is_cancelled() {
            // Stopped before its launch (delivered after the shutdown's sweep, cancelled or
            // fenced meanwhile): nothing is started (`start.rs`, `not_launched`). A job tracked
            // just before the sweep passes this and is stopped once launched (the window left).
            drop((spec, shared, reporter, watch));
            return Box::pin(self.not_launched(id, token)).await;
        }
        // Bounded by the attempt's stop and time limit (`launch.rs`).
        let limit = time_limit(job, slot);
        let began = tokio::time::Instant::now();
        let launch = slot.runner.launch(spec, shared);
        let (launched, late) = match self.launch_within(launch, &stop, limit).await {
            Launched::Returned(r, late) => (r, late),
            Launched::Abandoned(late) => {
                // Rare: on the heap, not in every attempt's future.
                return Box::pin(self.abandoned(id, token, late, limit)).await;
            }
        };
        let mut exec = match launched {
            Ok(e) => e,
            Err(e) => {
                // Nothing runs: what is left are writes.
                self.work_ended(id, token);
                let out_of_time = late.then_some(limit);
                return self.launch_failed(id, token, e, out_of_time, refill).await;
            }
        };
        match self
            .record_start(
                id,
                token,
                job.attempt,
                slot.kind,
                &mut exec,
                &reporter,
                &stop,
                refill.clone(),
            )
            .await
        {
            start::Start::Running => {}
            start::Start::Finished | start::Start::Detached => return,
            start::Start::Gone(true) => return self.stopped_gone(id, token).await,
            start::Start::Gone(false) => return supervise::not_confirmed(id),
            start::Start::Stopped(false, _, _) => return supervise::not_confirmed(id),
            start::Start::Stopped(true, record, ended) => {
                let release = *reason.lock() == StopReason::Release;
                // Rare: on the heap, not in every attempt's future.
                let settle = self.stopped_unstarted(id, token, record, ended, release);
                return Box::pin(settle).await;
            }
        }
        let run = Supervised {
            kind: slot.kind,
            watch,
            reported: false,
            refill,
            whole_limit: limit,
        };
        // The limit counts from the launch (a pull, a Job's creation): what it left, none when
        // it returned after the limit.
        let left = if late {
            Duration::ZERO
        } else {
            limit.saturating_sub(began.elapsed())
        };
        self.supervise(id, token, exec, reporter, left, stop, reason, run)
            .await;
    }
}

/// Builds the [`JobSpec`] of an attempt, with its derived secret.
#[derive(Clone)]
pub struct SpecFactory {
    master_key: Arc<crate::security::MasterKey>,
    copy: Option<u64>,
    hook_url: String,
}

impl SpecFactory {
    /// The spec of the job's current attempt.
    pub fn spec(&self, job: &Job) -> JobSpec {
        JobSpec {
            id: job.id.to_string(),
            job_type: job.job_type.clone(),
            args: job.args.clone(),
            attempt: job.attempt,
            secret: runyard_hooks::derive_job_secret(
                &self.master_key,
                &job.id.to_string(),
                job.attempt,
            ),
            hook_url: self.hook_url.clone(),
            timeout: job.timeout_ms.map(Duration::from_millis),
            deployment: self.deployment(),
        }
    }

    /// The deployment's fingerprint (`runyard_hooks::deployment_id`): a copy's is its own.
    pub fn deployment(&self) -> String {
        runyard_hooks::deployment_id(&self.master_key, self.copy)
    }
}
