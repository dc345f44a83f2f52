//! An attempt's end that went with a start the store refused (a full disk, Redis out of memory:
//! `StoreError::Backend`, nothing written), then a stop at shutdown (`StopReason::Release`)
//! before the start was recorded: the job that ran to its end is finished with its outcome, once,
//! and not given back to the queue to run again. On a real embedded store behind a wrapper that
//! refuses the first start once the attempt's finish was offered to it, with a real service and
//! a real local process. And the read back of a start the store did not confirm: ended at once
//! by a stop, and an end the job moved on from not told as the attempt's own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use runyard_runners::service::ServiceRegistry;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::job::{now_us, Command, Event, Job, JobStatus, Micros};
use crate::runner_set::{RunnerSet, RunnerSlot};
use crate::schedule::Schedule;
use crate::security::MasterKey;
use crate::store::activity::{Activity, ActivityStore};
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::deliveries::{
    Attempt, ClaimLimits, Claimed, Delivery, DeliveryPage, DeliveryState, Outcome,
};
use crate::store::signals::{Signal, SignalKey, SignalPage};
use crate::store::sqlite::SqliteStore;
use crate::store::waits::WaitStore;
use crate::store::{
    DeliveryStore, EventLog, FinishSlot, JobPage, JobQueue, JobStore, ListQuery, LogLine, LogStore,
    LogStream, Maintenance, Notice, Result, RetentionReport, ScheduleStore, SignalStore, Store,
    StoreError, StoreSettings, Submitted,
};
use crate::worker::{StopReason, Worker};

use super::write::StartWrite;

/// A store that refuses the first start with `Backend` once the attempt's finish was offered to
/// it (taking the finish, as a store does as it applies a start), and holds every later start
/// until `gate` is opened; otherwise the store it wraps.
struct RefusingStarts {
    inner: Arc<dyn Store>,
    starts: AtomicUsize,
    /// The first start found the finish offered (else it was refused without one).
    with_finish: AtomicBool,
    /// Cancelled once the first start was refused.
    refused: CancellationToken,
    /// Cancelled once a later start arrived (it waits for `gate`).
    held: CancellationToken,
    gate: CancellationToken,
    /// Every start is answered `Unavailable` (not confirmed) and every read hangs.
    unconfirmed: AtomicBool,
    /// Cancelled once a read hangs.
    reading: CancellationToken,
    /// Every start is carried out and then answered `Unavailable` (its answer lost); reads
    /// answer.
    answer_lost: AtomicBool,
    /// With `answer_lost`: the job is cancelled right after its start was carried out.
    cancel_after_start: AtomicBool,
}

impl RefusingStarts {
    async fn start(&self, id: Uuid, start: Command, finish: Arc<FinishSlot>) -> StartResult {
        if self.answer_lost.load(Ordering::SeqCst) {
            self.inner.apply_start(id, start, finish).await?;
            if self.cancel_after_start.load(Ordering::SeqCst) {
                self.inner.apply(id, Command::Cancel).await?;
            }
            return Err(StoreError::Unavailable(
                "no answer within store.retry".into(),
            ));
        }
        if self.unconfirmed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "no answer within store.retry".into(),
            ));
        }
        if self.starts.fetch_add(1, Ordering::SeqCst) > 0 {
            self.held.cancel();
            self.gate.cancelled().await;
            return self.inner.apply_start(id, start, finish).await;
        }
        // The attempt ends by itself at once: its finish is offered to this start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !finish.offered() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let taken = finish.take();
        self.with_finish.store(taken.is_some(), Ordering::SeqCst);
        self.refused.cancel();
        Err(StoreError::Backend("database or disk is full".into()))
    }
}

type StartResult = Result<(Job, Option<Result<Job>>)>;

/// Forwards each listed method to the wrapped store.
macro_rules! forward {
    ($($trait:ident { $($name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ok:ty;)* $(@by_hand { $($hand:tt)* })? })*) => {$(
        #[async_trait]
        impl $trait for RefusingStarts {
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$ok> {
                    self.inner.$name($($arg),*).await
                }
            )*
            $($($hand)*)?
        }
    )*};
}

forward! {
    JobStore {
        submit(job: Job) -> Submitted;
        submit_many(jobs: Vec<Job>) -> Vec<Result<Submitted>>;
        list(q: ListQuery) -> JobPage;
        apply(id: Uuid, cmd: Command) -> Job;
        finish(id: Uuid, cmd: Command, refill: Option<Arc<crate::store::handoff::Refill>>) -> Job;
        @by_hand {
            async fn get(&self, id: Uuid) -> Result<Option<Job>> {
                if self.unconfirmed.load(Ordering::SeqCst) {
                    self.reading.cancel();
                    std::future::pending::<()>().await;
                }
                self.inner.get(id).await
            }
            async fn apply_start(&self, id: Uuid, start: Command, finish: Arc<FinishSlot>) -> StartResult {
                self.start(id, start, finish).await
            }
        }
    }
    JobQueue {
        claim(runner: &str, worker: &str, max: usize, lease_ttl: Duration) -> Vec<Job>;
        heartbeat(worker: &str, held: &[(Uuid, u64)], lease_ttl: Duration) -> Vec<Uuid>;
        adopt(id: Uuid, expected: Option<u64>, worker: &str, lease_ttl: Duration) -> Job;
        fence(id: Uuid, expected: u64) -> Job;
        promote_due(max: usize) -> usize;
        next_due() -> Option<Micros>;
        expired(max: usize) -> Vec<Job>;
        queued_ids(runner: &str, skip: usize, max: usize) -> Vec<Uuid>;
    }
    LogStore {
        append_logs(id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> ();
        logs(id: Uuid, after: u64, limit: usize) -> Vec<LogLine>;
    }
    EventLog {
        events(channel: Option<&str>, last_id: Option<&str>, limit: usize) -> Vec<Event>;
        last_event_id() -> Option<String>;
    }
    Maintenance {
        retention(finished_before: Micros) -> RetentionReport;
        file_hashes() -> std::collections::HashSet<String>;
        health() -> ();
        @by_hand {
            async fn time(&self) -> Micros {
                self.inner.time().await
            }
        }
    }
    ScheduleStore {
        schedule(name: &str) -> Option<Schedule>;
        schedules() -> Vec<Schedule>;
        schedules_due(now: Micros, max: usize) -> Vec<String>;
        schedules_next_wake() -> Option<Micros>;
        schedule_cas(s: &Schedule, expected: Option<u64>) -> bool;
        schedule_delete(name: &str, expected: u64) -> bool;
        schedule_unreadable(name: &str, what: crate::store::schedules::Unreadable) -> bool;
        schedule_orphan(name: &str) -> bool;
    }
    SignalStore {
        signal_append(key: &str, id: Option<String>, payload: Option<Value>, at: Micros)
            -> (Signal, bool);
        signals_page(key: &str, since: Micros, limit: usize, bytes: usize) -> SignalPage;
        signal_seqs(key: &str, since: Micros, until: Micros, limit: usize) -> Vec<u64>;
        signal_count(key: &str, since: Micros, until: Micros, limit: u64) -> u64;
        signals_trim(before: Micros) -> u64;
        signal_keys(after: Option<&str>, limit: usize) -> Vec<SignalKey>;
    }
    JobCountStore {
        job_counts() -> JobCounts;
    }
    ActivityStore {
        finished_per_minute(minutes: u32) -> Activity;
        dead_letters() -> std::collections::BTreeMap<String, u64>;
    }
    DeliveryStore {
        deliveries_claim(max: usize, hold: Duration, limits: ClaimLimits) -> Vec<Claimed>;
        delivery_record(claimed: &Claimed, attempt: Attempt, outcome: Outcome)
            -> Option<DeliveryState>;
        deliveries_page(job: Uuid, page: DeliveryPage, limit: usize) -> Vec<Delivery>;
        deliveries_next_due() -> Option<Micros>;
        deliveries_pending() -> u64;
        deliveries_trim(before: Micros) -> u64;
    }
    WaitStore {
        wait_check(id: Uuid) -> bool;
        wait_check_marked(max: usize) -> usize;
        wait_next_deadline() -> Option<Micros>;
        wait_fire_deadlines(max: usize) -> Vec<Job>;
    }
}

#[async_trait]
impl crate::store::ReplayMemory for RefusingStarts {
    async fn remember_once(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> std::result::Result<bool, crate::store::replay::ReplayError> {
        self.inner.remember_once(key, expires_at_ms, now_ms).await
    }
}

impl crate::store::EventTail for RefusingStarts {
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn crate::store::tail::TailReader>> {
        self.inner.clone().event_tail()
    }
}

impl Store for RefusingStarts {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.subscribe()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// A worker over a [`RefusingStarts`] embedded store, running `runners` (TOML), and a job of
/// the first runner claimed for it.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<RefusingStarts>,
    worker: Arc<Worker>,
    slot: Arc<RunnerSlot>,
    job: Job,
}

/// One service runner, for `quick` jobs.
const SERVICE: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"quick\"]\n";

async fn setup(runners: &str, services: ServiceRegistry) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    let store = Arc::new(RefusingStarts {
        inner: Arc::new(inner),
        starts: AtomicUsize::new(0),
        with_finish: AtomicBool::new(false),
        refused: CancellationToken::new(),
        held: CancellationToken::new(),
        gate: CancellationToken::new(),
        unconfirmed: AtomicBool::new(false),
        reading: CancellationToken::new(),
        answer_lost: AtomicBool::new(false),
        cancel_after_start: AtomicBool::new(false),
    });
    let cfg = Config::from_toml(runners).expect("config");
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
    let submitted = Job {
        max_attempts: 2,
        ..Job::new("quick", &slot.name, now_us())
    };
    store.submit(submitted).await.expect("submit");
    let job = store
        .claim(&slot.name, worker.id(), 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    Setup {
        _dir: dir,
        store,
        worker,
        slot,
        job,
    }
}

impl Setup {
    /// Runs the claimed attempt (stopped by `stop` as at shutdown) in a task of its own.
    fn execute(&self, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
        let token = self.job.lease.as_ref().expect("leased").token;
        let (worker, job, slot) = (self.worker.clone(), self.job.clone(), self.slot.clone());
        let stop = stop.clone();
        let reason = Arc::new(Mutex::new(StopReason::Release));
        tokio::spawn(async move { worker.execute(&job, &slot, token, stop, reason, None).await })
    }

    /// The job ended `SUCCESS` in its one attempt: recorded once, not given back to run again.
    async fn ended_once(&self, run: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the attempt settled within 20 s")
            .expect("the attempt's task");
        assert!(
            self.store.with_finish.load(Ordering::SeqCst),
            "the refused start carried the finish"
        );
        let j = self
            .store
            .get(self.job.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(j.status, JobStatus::Success, "{j:#?}");
        assert_eq!(j.attempt, 1, "{j:#?}");
        let outcomes: Vec<_> = j.runs.iter().map(|r| r.outcome.as_deref()).collect();
        assert_eq!(outcomes, [Some("SUCCESS")], "one run, not released: {j:#?}");
    }
}

/// A service's attempt ends at once; its start (a task of its own) is refused with the finish;
/// a shutdown stops the attempt while the next try is in flight: its outcome is recorded, the
/// job not given back. Before, that try wrote the start alone and the job went back to the
/// queue (`QUEUED`, its run `RELEASED`) after it had run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_taken_by_a_refused_start_survives_a_shutdown_during_the_next_try() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut services = ServiceRegistry::new();
    let r = ran.clone();
    services.register("quick", move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        async move { Ok(json!("done")) }
    });
    let s = setup(SERVICE, services).await;
    let stop = CancellationToken::new();
    let run = s.execute(&stop);
    within(&s.store.held, "the start's next try").await;
    stop.cancel();
    // The attempt sees its stop while the try is in flight (with the fix either order ends the
    // same way; before, this order gave the job back).
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.store.gate.cancel();
    s.ended_once(run).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1, "run once");
}

/// A local process ends within `quick_exit_wait`: its start is written with its finish, inline,
/// and refused; a shutdown comes before the next try: its outcome is recorded, the job not given
/// back. Before, the stop ended the tries with the store's refusal, taken as "gone before it
/// started": the job was left `STARTING` under the lease, to be counted `LOST` and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_taken_by_a_refused_start_survives_a_shutdown_between_tries() {
    let s = setup(
        "[worker]\nquick_exit_wait = \"10s\"\n[[runners]]\nkind = \"local\"\ntypes = [\"quick\"]\ncommand = [\"true\"]\n",
        ServiceRegistry::new(),
    )
    .await;
    let stop = CancellationToken::new();
    let run = s.execute(&stop);
    within(&s.store.refused, "the start's first try").await;
    stop.cancel();
    // A next try that came before the stop waits until the stop was seen.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.store.gate.cancel();
    s.ended_once(run).await;
}

/// The claimed attempt's start, to be written for up to a minute (the lease), until `stop`.
fn start_write(s: &Setup, stop: &CancellationToken) -> StartWrite {
    let token = s.job.lease.as_ref().expect("leased").token;
    StartWrite {
        store: s.store.clone(),
        id: s.job.id,
        token,
        start: Command::Started {
            token,
            handle: None,
        },
        finish: FinishSlot::new(),
        until: tokio::time::Instant::now() + Duration::from_secs(60),
        stop: stop.clone(),
    }
}

/// [`start_write`] through a store that counts its changes in the metrics returned.
fn metered_start_write(s: &Setup) -> (StartWrite, Arc<crate::metrics::Metrics>) {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let mut w = start_write(s, &CancellationToken::new());
    w.store = crate::metrics::MeteredStore::wrap(s.store.clone(), metrics.clone());
    (w, metrics)
}

/// A start the store did not confirm is read back to tell whether it was written; the store
/// does not answer the read either: a stop (shutdown, fencing) ends it at once, not the lease
/// (a minute here). Before, the read was not raced against the stop.
#[tokio::test]
async fn a_stop_ends_the_read_back_of_an_unconfirmed_start() {
    let s = setup(SERVICE, ServiceRegistry::new()).await;
    s.store.unconfirmed.store(true, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let run = tokio::spawn(start_write(&s, &stop).run());
    within(&s.store.reading, "the read back").await;
    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("ended by the stop, not by the lease")
        .expect("the write's task");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

/// A start read back recorded with the attempt's end: only an end that is the job's last is
/// answered as the finish's own (then logged as `job ended`); one the job moved on from, or
/// decided before (the reaper may have committed and logged it), is answered as the attempt's
/// lease gone, which is not logged again.
#[tokio::test]
async fn a_start_read_back_with_an_end_moved_on_from_is_not_the_finishs_answer() {
    use crate::worker::supervise::Late;
    let s = setup(SERVICE, ServiceRegistry::new()).await;
    let w = start_write(&s, &CancellationToken::new());
    let e = StoreError::Unavailable("no answer".into());
    let end = w.finished_late(Late::Recorded, s.job.clone(), &e);
    assert!(matches!(end.as_deref(), Some(Ok(_))), "{end:?}");
    for late in [Late::MovedOn, Late::Decided] {
        let end = w.finished_late(late, s.job.clone(), &e);
        assert!(
            matches!(
                end.as_deref(),
                Some(Err(StoreError::Transition(
                    crate::job::TransitionError::StaleLease
                )))
            ),
            "{end:?}"
        );
    }
}

/// The sum of `runyard_job_transitions_total`'s series for `status`.
fn transitions(text: &str, status: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("runyard_job_transitions_total{"))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A start the store carried out but did not confirm in time (`Unavailable`), found recorded by
/// the read back, is counted as an answered start is: one transition to RUNNING
/// (`runyard_job_transitions_total{status="RUNNING"}`), and with the attempt's end that went
/// with it, that end too. Before, the metered store counted nothing for the start: RUNNING was
/// one short.
#[tokio::test]
async fn a_start_found_recorded_by_the_read_back_counts_its_transition_once() {
    for with_end in [false, true] {
        let s = setup(SERVICE, ServiceRegistry::new()).await;
        s.store.answer_lost.store(true, Ordering::SeqCst);
        let (w, metrics) = metered_start_write(&s);
        if with_end {
            let token = s.job.lease.as_ref().expect("leased").token;
            w.finish
                .offer(token, crate::job::FinishOutcome::Success(None))
                .expect("an open slot");
        }
        let r = tokio::time::timeout(Duration::from_secs(10), w.run())
            .await
            .expect("told by the read back");
        assert!(r.is_ok(), "{with_end}: {r:?}");
        let j = s.store.get(s.job.id).await.expect("read").expect("stored");
        let text = metrics.render();
        assert_eq!(transitions(&text, "RUNNING"), 1.0, "{with_end}: {text}");
        let (status, ended) = if with_end {
            (JobStatus::Success, 1.0)
        } else {
            (JobStatus::Running, 0.0)
        };
        assert_eq!(j.status, status, "{j:#?}");
        assert_eq!(transitions(&text, "SUCCESS"), ended, "{with_end}: {text}");
    }
}

/// A start carried out (its answer lost) and the job cancelled before the read back: the read
/// back tells the start refused (the job moved on), but the start was recorded, so it counts its
/// transition to RUNNING as an answered start did. Before, it counted nothing.
#[tokio::test]
async fn a_start_recorded_then_cancelled_before_the_read_back_counts_its_transition() {
    let s = setup(SERVICE, ServiceRegistry::new()).await;
    s.store.answer_lost.store(true, Ordering::SeqCst);
    s.store.cancel_after_start.store(true, Ordering::SeqCst);
    let (w, metrics) = metered_start_write(&s);
    let r = tokio::time::timeout(Duration::from_secs(10), w.run())
        .await
        .expect("told by the read back");
    assert!(matches!(r, Err(StoreError::Transition(_))), "{r:?}");
    let j = s.store.get(s.job.id).await.expect("read").expect("stored");
    assert_eq!(j.status, JobStatus::Cancelled, "{j:#?}");
    assert_eq!(transitions(&metrics.render(), "RUNNING"), 1.0);
}

/// A local runner whose process writes its pid to `pid` and sleeps 30 s.
fn sleeper(pid: &std::path::Path) -> String {
    format!(
        "[[runners]]\nkind = \"local\"\ntypes = [\"quick\"]\ncommand = [\"/bin/sh\", \"-c\", \
         \"echo $$ > {}; exec sleep 30\"]\n",
        pid.display()
    )
}

/// The pid the process wrote to `file` (waited for, at most 10 s).
async fn pid_of(file: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pid = std::fs::read_to_string(file).unwrap_or_default();
        if pid.ends_with('\n') {
            return pid.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process wrote no pid"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether process `pid` runs (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(!s[s.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A worker that hung (or was late) after it launched an attempt and before its start was
/// recorded finds, when its start write comes back refused, the job taken over by a reaper: the
/// lease fenced (`Store::fence`), and the work found by its marks adopted by another worker
/// (`Store::adopt` under the fence). It leaves the work to that reaper or adopter (its
/// followers dropped), where it stopped it: the adopter then recorded the stop's exit (143, 137,
/// or "the container disappeared") as the attempt's failure. A start refused because the job
/// moved on (cancelled) still stops the work. The start is held by the store here until the
/// reaper's steps are done; a real process of the local runner stands for the container (the
/// worker's side does not depend on the runner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refused_because_a_reaper_took_the_job_over_leaves_the_work_alone() {
    for case in ["adopted", "fenced", "cancelled"] {
        let pids = tempfile::tempdir().expect("temp dir");
        let pid_file = pids.path().join("pid");
        let s = setup(&sleeper(&pid_file), ServiceRegistry::new()).await;
        // The first start is held until `gate`.
        s.store.starts.store(1, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let run = s.execute(&stop);
        within(&s.store.held, "the start").await;
        let pid = pid_of(&pid_file).await;
        assert!(alive(&pid), "{case}: launched");
        let id = s.job.id;
        let claimed = s.job.lease.as_ref().expect("leased").token;
        if case == "cancelled" {
            s.store.apply(id, Command::Cancel).await.expect("cancel");
        } else {
            // The lease runs out (the worker hung), a reaper fences it, and maybe adopts the work.
            s.store
                .apply(id, Command::OrphanLease)
                .await
                .expect("expire");
            let fenced = s.store.fence(id, claimed).await.expect("fence");
            let fence = fenced.lease.expect("fenced").token;
            if case == "adopted" {
                let ttl = Duration::from_secs(30);
                s.store
                    .adopt(id, Some(fence), "reaper-1-abc", ttl)
                    .await
                    .expect("adopt");
            }
        }
        s.store.gate.cancel();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the attempt settled within 20 s")
            .expect("the attempt's task");
        let j = s.store.get(id).await.expect("read").expect("stored");
        if case == "cancelled" {
            assert_eq!(j.status, JobStatus::Cancelled, "{j:#?}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while alive(&pid) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!alive(&pid), "a cancelled job's work is stopped");
        } else {
            assert_eq!(
                (j.status, j.attempt),
                (JobStatus::Starting, 1),
                "{case}: {j:#?}"
            );
            let alive_now = alive(&pid);
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .output();
            assert!(alive_now, "{case}: the work taken over was stopped");
        }
    }
}

/// Waits (at most 10 s) for `what` to happen.
async fn within(t: &CancellationToken, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), t.cancelled())
        .await
        .unwrap_or_else(|_| panic!("{what} never came"));
}

/// An attempt's futures are copied whole at every spawn and box (`Box::pin(execute)` once per
/// job, the start's task at its spawn): grown by a few KB they cost several per cent of the
/// worker's CPU per job (session 44: execute 9.6 KB, the start's task 3.3 KB; docs/benchmarks.md,
/// "Session 45"). This guards the sizes, with room: 3,912 and 896 bytes when this was written,
/// the same in the test and release builds (a future's layout is decided before optimization).
#[tokio::test]
async fn an_attempts_futures_stay_small() {
    let s = setup(SERVICE, ServiceRegistry::new()).await;
    let stop = CancellationToken::new();
    let token = s.job.lease.as_ref().expect("leased").token;
    let reason = Arc::new(Mutex::new(StopReason::Release));
    let execute = s
        .worker
        .execute(&s.job, &s.slot, token, stop.clone(), reason, None);
    let start = start_write(&s, &stop).run();
    let (execute, start) = (
        std::mem::size_of_val(&execute),
        std::mem::size_of_val(&start),
    );
    println!("execute {execute} bytes, the start's task {start} bytes");
    assert!(execute <= 5 * 1024, "execute's future is {execute} bytes");
    assert!(start <= 1024, "the start's task is {start} bytes");
}
