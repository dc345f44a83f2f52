//! A job that reaches the worker after the shutdown grace's sweep (`Worker::drain`: handed over,
//! claimed, or claimed by a finish on its way as the drain ended) is given back at once, never
//! launched: the `swept` branch of `Worker::run_job` and the stop's check before the launch in
//! `Worker::execute`. No hook of the store holds a finish's commit past the drain, so the sweep is
//! done by the tests (directly, or by the running job's service call as it ends, its finish and
//! refill still to come), on a real embedded store and a real service runner that counts the
//! calls it starts. A local job's marker file may not tell a launch stopped at once (its
//! process may be killed before its shell gets to write it): the service call's count does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use runyard_runners::service::ServiceRegistry;
use serde_json::json;

use super::{StopReason, Worker};
use crate::config::Config;
use crate::job::{now_us, Command, Job, JobStatus};
use crate::runner_set::{RunnerSet, RunnerSlot};
use crate::security::MasterKey;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreSettings};

/// A worker on a real embedded store with one service runner of one slot (full with one job: its
/// finish claims the next, `Worker::refill`): its `slow` operation ends by itself after 200 ms
/// unless stopped; its `sweeps` operation ends at once, the worker stopping and its drain's sweep
/// done as it ends (its finish, and the refill it takes, on their way). The counters: `slow`
/// calls started, and `slow` runs that got to the end.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    slot: Arc<RunnerSlot>,
    worker: Arc<Worker>,
    started: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
    let cfg = Config::from_toml(
        "[[runners]]\nkind = \"service\"\ntypes = [\"slow\", \"sweeps\"]\nconcurrency = 1\n",
    )
    .expect("config");
    let (started, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut services = ServiceRegistry::new();
    let (s, e) = (started.clone(), ended.clone());
    services.register("slow", move |ctx| {
        // Counted as the call starts, whatever follows (a stop at once included).
        s.fetch_add(1, Ordering::SeqCst);
        let e = e.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    e.fetch_add(1, Ordering::SeqCst);
                    Ok(json!("ran"))
                }
                _ = ctx.cancelled() => Err("stopped".into()),
            }
        }
    });
    let me: Arc<OnceLock<Weak<Worker>>> = Arc::default();
    let w = me.clone();
    services.register("sweeps", move |_ctx| {
        // The drain ended early (no work left) and swept while this job's finish, which took
        // the slot's refill before the stop began, is still on its way to the store.
        if let Some(w) = w.get().and_then(Weak::upgrade) {
            w.stopping.store(true, Ordering::SeqCst);
            w.swept.store(true, Ordering::SeqCst);
        }
        async { Ok(json!("done")) }
    });
    let runners = Arc::new(RunnerSet::build(&cfg, Arc::new(services)).expect("runners"));
    let slot = runners.iter().next().expect("a runner").clone();
    let worker = Worker::new(
        store.clone(),
        runners,
        cfg.worker.clone(),
        Arc::new(MasterKey::new(vec![7; 32])),
        None,
        "http://127.0.0.1:9/async".into(),
    );
    me.set(Arc::downgrade(&worker)).expect("set once");
    Setup {
        _dir: dir,
        store,
        slot,
        worker,
        started,
        ended,
    }
}

impl Setup {
    /// Submits a `slow` job (2 attempts) and claims it for the worker: (as submitted, as claimed).
    async fn claimed(&self) -> (Job, Job) {
        let submitted = self.submit("slow").await;
        let job = self
            .store
            .claim(
                &self.slot.name,
                self.worker.id(),
                1,
                Duration::from_secs(30),
            )
            .await
            .expect("claim")
            .pop()
            .expect("claimed");
        assert_eq!(job.id, submitted.id);
        (submitted, job)
    }

    /// Submits a job of `job_type` (2 attempts).
    async fn submit(&self, job_type: &str) -> Job {
        self.store
            .submit(Job {
                max_attempts: 2,
                ..Job::new(job_type, &self.slot.name, now_us())
            })
            .await
            .expect("submit")
            .job
    }
}

#[tokio::test]
async fn a_job_delivered_after_the_sweep_is_given_back_not_launched() {
    let t = setup();
    let (submitted, job) = t.claimed().await;
    let (worker, slot) = (&t.worker, &t.slot);

    // The grace is over and its sweep done; then the job arrives, counted in its slot as a job
    // handed over or claimed is.
    worker.begin_stopping();
    worker.swept.store(true, Ordering::SeqCst);
    slot.active.fetch_add(1, Ordering::AcqRel);
    tokio::time::timeout(
        Duration::from_secs(10),
        worker
            .clone()
            .run_job(job, slot.clone(), tokio::time::Instant::now()),
    )
    .await
    .expect("given back within 10 s");

    assert_eq!(
        t.started.load(Ordering::SeqCst),
        0,
        "a stopping worker starts no new work: the job was not launched"
    );
    assert_eq!(t.ended.load(Ordering::SeqCst), 0, "the job was not run");
    assert_eq!(slot.active.load(Ordering::Acquire), 0, "its slot is free");
    let back = t
        .store
        .get(submitted.id)
        .await
        .expect("read")
        .expect("stored");
    given_back(&back);
    assert_eq!(back.queued_at, submitted.queued_at, "its place kept");
    assert!(worker.idle(), "nothing of it is left running");
}

/// The race itself, through a real refill: the finish of the slot's running job claims the next
/// QUEUED one, and the drain ends early and sweeps while that finish is on its way. The job it
/// brings reaches the worker after the sweep: given back QUEUED, its attempt not spent, and never
/// launched (before, its service call was started, then stopped at once).
#[tokio::test]
async fn a_job_a_finish_brings_after_an_early_drain_is_given_back_not_launched() {
    let t = setup();
    let (first, next) = (t.submit("sweeps").await, t.submit("slow").await);
    let job = t
        .store
        .claim(&t.slot.name, t.worker.id(), 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    assert_eq!(job.id, first.id, "the oldest first");
    // The slot is full with it: its finish claims the next job (`Worker::refill`).
    t.slot.active.fetch_add(1, Ordering::AcqRel);
    tokio::time::timeout(
        Duration::from_secs(10),
        t.worker
            .clone()
            .run_job(job, t.slot.clone(), tokio::time::Instant::now()),
    )
    .await
    .expect("both settled within 10 s");

    let done = t.store.get(first.id).await.expect("read").expect("stored");
    assert_eq!(done.status, JobStatus::Success, "{done:#?}");
    assert_eq!(
        t.started.load(Ordering::SeqCst),
        0,
        "the next job not launched"
    );
    let back = t.store.get(next.id).await.expect("read").expect("stored");
    given_back(&back);
    assert_eq!(t.slot.active.load(Ordering::Acquire), 0, "its slot is free");
    assert!(t.worker.idle(), "nothing of them is left running");
}

/// The job (submitted with 2 attempts) given back by its first: QUEUED, no lease, its run
/// `RELEASED`, the attempt given back.
fn given_back(back: &Job) {
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    assert!(back.lease.is_none(), "{back:#?}");
    assert_eq!(
        back.runs.last().and_then(|r| r.outcome.as_deref()),
        Some("RELEASED"),
        "{back:#?}"
    );
    assert_eq!(
        (back.attempt, back.max_attempts),
        (1, 3),
        "the attempt given back"
    );
}

/// Runs the claimed `job`'s attempt with its stop told before the launch (`StopReason::Gone`: a
/// cancel or the fence), checks nothing was launched, and reads the job back.
async fn stopped_before_launch(t: &Setup, job: &Job, token: u64) -> Job {
    let (stop, reason) = t
        .worker
        .track(job.id, token, tokio::time::Instant::now(), None);
    *reason.lock() = StopReason::Gone;
    stop.cancel();
    tokio::time::timeout(
        Duration::from_secs(10),
        t.worker.execute(job, &t.slot, token, stop, reason, None),
    )
    .await
    .expect("settled within 10 s");
    t.worker.untrack(job.id, token);
    assert_eq!(t.started.load(Ordering::SeqCst), 0, "not launched");
    t.store.get(job.id).await.expect("read").expect("stored")
}

/// Cancelled between its claim and its launch (the stop told before the launch): not started,
/// and the lease the cancel kept is given up, so nothing waits for it to run out.
#[tokio::test]
async fn a_job_cancelled_before_its_launch_is_not_launched_and_its_lease_goes() {
    let t = setup();
    let (_, job) = t.claimed().await;
    let token = job.lease.as_ref().map(|l| l.token).expect("a lease");
    t.store
        .apply(job.id, Command::Cancel)
        .await
        .expect("cancel");
    let back = stopped_before_launch(&t, &job, token).await;
    assert_eq!(back.status, JobStatus::Cancelled, "{back:#?}");
    assert!(back.lease.is_none(), "the lease goes: {back:#?}");
}

/// The fence's stop (`StopReason::Gone` on a job that is still the attempt's: its lease was not
/// renewed in time) told before the launch: nothing ran, so the job goes back to its queue with
/// its attempt given back, not left `STARTING` until the reaper spends the attempt as `LOST`.
#[tokio::test]
async fn a_job_fenced_before_its_launch_is_given_back_with_its_attempt() {
    let t = setup();
    let (_, job) = t.claimed().await;
    let token = job.lease.as_ref().map(|l| l.token).expect("a lease");
    let back = stopped_before_launch(&t, &job, token).await;
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    assert!(back.lease.is_none(), "{back:#?}");
    assert_eq!(
        back.max_attempts,
        job.max_attempts + 1,
        "the attempt given back: {back:#?}"
    );
}
