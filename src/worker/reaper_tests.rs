//! The reaper and a job cancelled while it ran whose worker let the lease run out (hung or gone)
//! before it said the work stopped: on a real embedded store, with a real process started by
//! the local runner.

use std::sync::Arc;
use std::time::Duration;

use runyard_runners::{Execution, NullReporter};
use serde_json::json;

use super::{reap_once, Stopping};
use crate::config::Config;
use crate::job::{now_us, Command, Job, JobStatus};
use crate::runner_set::RunnerSet;
use crate::security::MasterKey;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreSettings};
use crate::worker::Worker;

/// A worker (never started) on an embedded store, a local runner whose jobs sleep 30 s, and a
/// job of it (3 attempts) claimed by another worker with a lease of 1 ms, started (a real
/// process), then cancelled: the other worker is hung, its lease runs out.
async fn cancelled_on_a_hung_worker(
    dir: &std::path::Path,
) -> (Arc<dyn Store>, Arc<Worker>, Job, Box<dyn Execution>) {
    cancelled_on(dir, "hung", true).await
}

/// As [`cancelled_on_a_hung_worker`], claimed by the worker id `claimer`; with `record` false
/// the handle is never stored: the job is cancelled while `STARTING`, its process running.
async fn cancelled_on(
    dir: &std::path::Path,
    claimer: &str,
    record: bool,
) -> (Arc<dyn Store>, Arc<Worker>, Job, Box<dyn Execution>) {
    hung_on(dir, claimer, record, true).await
}

/// As [`cancelled_on`], cancelled only when `cancel`.
async fn hung_on(
    dir: &std::path::Path,
    claimer: &str,
    record: bool,
    cancel: bool,
) -> (Arc<dyn Store>, Arc<Worker>, Job, Box<dyn Execution>) {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir, StoreSettings::default(), false).expect("open"));
    let cfg = Config::from_toml(
        "[[runners]]\nkind = \"local\"\ntypes = [\"nap\"]\ncommand = [\"sleep\", \"30\"]\n",
    )
    .expect("config");
    let runners = Arc::new(RunnerSet::build(&cfg, Arc::default()).expect("runners"));
    let slot = runners.iter().next().expect("a runner").clone();
    let worker = Worker::new(
        store.clone(),
        runners,
        cfg.worker.clone(),
        Arc::new(MasterKey::new(vec![7; 32])),
        None,
        "http://127.0.0.1:9/async".into(),
    );
    let mut job = Job::new("nap", &slot.name, now_us());
    job.max_attempts = 3;
    store.submit(job.clone()).await.expect("submit");
    let claimed = store
        .claim(&slot.name, claimer, 1, Duration::from_millis(1))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let token = claimed.lease.as_ref().expect("leased").token;
    let spec = worker.spec_factory().spec(&claimed);
    let exec = slot
        .runner
        .launch(spec, Arc::new(NullReporter))
        .await
        .expect("launched");
    if record {
        let handle = Some(exec.handle());
        store
            .apply(job.id, Command::Started { token, handle })
            .await
            .expect("started");
    }
    if cancel {
        store.apply(job.id, Command::Cancel).await.expect("cancel");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let job = store.get(job.id).await.expect("read").expect("stored");
    (store, worker, job, exec)
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let st = s.rfind(')').map(|i| s[i + 1..].trim_start().to_string())?;
            Some(!st.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_kills_the_work_then_gives_the_lease_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, worker, job, exec) = cancelled_on_a_hung_worker(dir.path()).await;
    reap_kills_then_lets_the_retry_run(&store, &worker, &job, exec).await;
}

/// A worker that cannot reach the work (a process of another machine or pid namespace) leaves
/// the lease to one that can: the work is not taken for gone, the retry still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_that_cannot_reach_the_work_leaves_the_lease() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, worker, job, mut exec) = cancelled_on_a_hung_worker(dir.path()).await;
    let token = job.lease.as_ref().expect("kept").token;
    // The same job, as the store would hold it had another machine started it.
    let mut elsewhere = exec.handle();
    elsewhere.data["boot_id"] = json!("another-machine/pid:[1]");
    let mut far = job.clone();
    far.handle = Some(elsewhere);
    super::stop_lost(&worker, far, &Stopping::default()).await;
    let j = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(j.lease.as_ref().map(|l| l.token), Some(token), "{j:#?}");
    assert!(alive(&exec.handle().id));
    assert!(store
        .apply(job.id, Command::Retry { runner: None })
        .await
        .is_err());
    exec.stop(Duration::from_millis(100)).await;
}

/// Waits (bounded) until the job's lease is gone, and returns the job.
async fn lease_gone(store: &Arc<dyn Store>, id: uuid::Uuid) -> Job {
    let start = std::time::Instant::now();
    loop {
        let j = store.get(id).await.expect("read").expect("stored");
        if j.lease.is_none() {
            return j;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{j:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A job cancelled while `STARTING`: its worker (on this machine, as its id says) launched the
/// process, then hung before it recorded the handle. The reaper finds the process by its
/// `JOB_ID` and `JOB_ATTEMPT`, kills it, and only then gives the lease up: the retry never
/// runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_starting_has_its_unrecorded_process_killed_before_a_retry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let claimer = format!("hung-1-abc@{}", runyard_runners::node_id().expect("node"));
    let (store, worker, job, exec) = cancelled_on(dir.path(), &claimer, false).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.handle.is_none(), "{job:#?}");
    reap_kills_then_lets_the_retry_run(&store, &worker, &job, exec).await;
}

/// The same job claimed by a worker of another machine, or by one whose id names no machine
/// (an older build): this reaper cannot look there, so it leaves the lease (the retry waits
/// for `ABANDONED_STOP`) and kills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_process_of_another_machine_is_left_with_its_lease() {
    for claimer in ["hung-1-abc@0123456789abcdef", "hung-1-abc"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, worker, job, mut exec) = cancelled_on(dir.path(), claimer, false).await;
        let token = job.lease.as_ref().expect("kept").token;
        assert!(!super::stop_lost(&worker, job.clone(), &Stopping::default()).await);
        let j = store.get(job.id).await.expect("read").expect("stored");
        assert_eq!(j.lease.as_ref().map(|l| l.token), Some(token), "{j:#?}");
        assert!(alive(&exec.handle().id), "{claimer}");
        assert!(store
            .apply(job.id, Command::Retry { runner: None })
            .await
            .is_err());
        exec.stop(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_claimer_node_is_the_worker_ids_suffix() {
    assert_eq!(super::claimer_node("web-1-12-abc@0123"), Some("0123"));
    assert_eq!(super::claimer_node("web-1-12-abc"), None);
}

/// Waits (bounded) until the reaper's stop tasks are done.
async fn stops_done(stopping: &Stopping) {
    let start = std::time::Instant::now();
    while !stopping.lock().busy.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "a stop task hangs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Not cancelled: a job whose worker hung in `STARTING` (process launched, handle not stored)
/// is requeued by the reaper only once that process is killed, so its next attempt never runs
/// beside it (a process cannot be adopted: the local runner's `recover` kills it and answers
/// `Gone`; a container or a Kubernetes Job found so is adopted instead, tests/docker.rs and
/// tests/kube.rs). The stop runs in a task of its own (bounded in number), not in the pass: a
/// slow stop or scan does not hold the other expired leases back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_hung_while_starting_is_requeued_once_its_process_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let claimer = format!("hung-1-abc@{}", runyard_runners::node_id().expect("node"));
    let (store, worker, job, mut exec) = hung_on(dir.path(), &claimer, false, false).await;
    assert_eq!(job.status, JobStatus::Starting);
    let pid = exec.handle().id;
    assert!(alive(&pid));
    let stopping = Stopping::default();
    let counted = reap_once(&worker, &stopping).await.expect("pass");
    assert_eq!(counted, 0, "the stop is not done in the pass");
    stops_done(&stopping).await;
    let back = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    assert!(!alive(&pid), "attempt 1 runs on while attempt 2 may start");
    let _ = exec.wait().await;
}

/// The lease is fenced before the work is stopped: the worker that let it run out (only slow,
/// not dead) can no longer renew it once the reaper started on it, so it never goes on beside
/// a requeue, nor makes the requeue be refused after its work was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_cannot_renew_a_lease_the_reaper_fenced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let claimer = format!("hung-1-abc@{}", runyard_runners::node_id().expect("node"));
    let (store, worker, job, mut exec) = hung_on(dir.path(), &claimer, false, false).await;
    let token = job.lease.as_ref().expect("leased").token;
    assert!(super::fence(&worker, job.id, token).await.is_some());
    // The slow worker wakes up and heartbeats: refused (the lease is no longer its own).
    let lost = store
        .heartbeat(&claimer, &[(job.id, token)], Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert_eq!(lost, vec![job.id], "the expired lease was renewed");
    let j = store.get(job.id).await.expect("read").expect("stored");
    assert_ne!(j.lease.as_ref().map(|l| l.token), Some(token), "{j:#?}");
    // The reaper goes on: the work killed, then the job requeued.
    let stopping = Stopping::default();
    reap_once(&worker, &stopping).await.expect("pass");
    stops_done(&stopping).await;
    let back = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    assert!(!alive(&exec.handle().id));
    let _ = exec.wait().await;
}

/// Not cancelled, claimed by a worker of another machine (or one whose id names none): this
/// reaper leaves the lease to that machine's reapers (which kill the work first) for three
/// `lease_ttl` after it ran out, then requeues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_job_of_another_machine_is_requeued_only_after_three_leases() {
    for claimer in ["hung-1-abc@0123456789abcdef", "hung-1-abc"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, worker, job, mut exec) = hung_on(dir.path(), claimer, false, false).await;
        let token = job.lease.as_ref().expect("leased").token;
        let stopping = Stopping::default();
        reap_once(&worker, &stopping).await.expect("pass");
        stops_done(&stopping).await;
        let j = store.get(job.id).await.expect("read").expect("stored");
        assert_eq!(j.status, JobStatus::Starting, "{claimer}: {j:#?}");
        assert_eq!(j.lease.as_ref().map(|l| l.token), Some(token), "{j:#?}");
        assert!(alive(&exec.handle().id), "{claimer}");
        // Three leases later (as the reaper would find it then): requeued.
        let mut later = job.clone();
        let ttl = i64::try_from(worker.cfg.lease_ttl.as_micros()).expect("ttl");
        later.lease.as_mut().expect("leased").expires_at -= 3 * ttl + 1;
        super::requeue_unrecorded(&worker, later, &stopping).await;
        let j = store.get(job.id).await.expect("read").expect("stored");
        assert_eq!(j.status, JobStatus::Queued, "{claimer}: {j:#?}");
        exec.stop(Duration::from_millis(100)).await;
    }
}

/// A reaper's stop of unrecorded work runs long (a scan, a kill): meanwhile another reaper may
/// fence, kill and requeue the job, and attempt 2 be claimed and its lease run out. The late
/// reaper, deciding on the lease of attempt 1 it read, neither fences nor requeues attempt 2
/// (its `LeaseExpired` carries the token it decided on), on this machine's path (fence, kill)
/// as on another machine's (three leases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reaper_never_requeues_the_next_attempt() {
    let node = format!("@{}", runyard_runners::node_id().expect("node"));
    for claimer in [
        format!("hung-1-abc{node}"),
        "hung-1-abc@0123456789abcdef".into(),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, worker, job, mut exec) = hung_on(dir.path(), &claimer, false, false).await;
        // Read in an earlier pass, three leases back (as the other machine's path needs).
        let mut stale = job.clone();
        let ttl = i64::try_from(worker.cfg.lease_ttl.as_micros()).expect("ttl");
        stale.lease.as_mut().expect("leased").expires_at -= 3 * ttl + 1;
        // Another reaper: attempt 1 requeued; attempt 2 claimed, its lease run out.
        exec.stop(Duration::from_millis(100)).await;
        store
            .apply(job.id, Command::LeaseExpired { token: None })
            .await
            .expect("requeued");
        let two = store
            .claim(
                &job.runner,
                "other-2-def@0123456789abcdef",
                1,
                Duration::from_millis(1),
            )
            .await
            .expect("claim")
            .pop()
            .expect("claimed");
        assert_eq!(two.attempt, 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        super::requeue_unrecorded(&worker, stale, &Stopping::default()).await;
        let j = store.get(job.id).await.expect("read").expect("stored");
        assert_eq!(
            (j.status, j.attempt),
            (JobStatus::Starting, 2),
            "{claimer}: {j:#?}"
        );
        assert_eq!(
            j.lease, two.lease,
            "{claimer}: attempt 2's lease was touched"
        );
    }
}

/// The fence changes the lease's token only: the run lost is the hung worker's (as the API's
/// `runs[].worker` and the job's `worker` say), not the reaper's, and the stored expiry stays (the
/// give-up and the three leases count from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_keeps_the_worker_and_expiry_and_the_lost_run_is_the_hung_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let claimer = format!("hung-1-abc@{}", runyard_runners::node_id().expect("node"));
    let (store, worker, job, mut exec) = hung_on(dir.path(), &claimer, false, false).await;
    let lease = job.lease.clone().expect("leased");
    let fenced = super::fence(&worker, job.id, lease.token)
        .await
        .expect("fenced");
    let j = store.get(job.id).await.expect("read").expect("stored");
    let l = j.lease.clone().expect("kept");
    assert_eq!(
        (l.token, &l.worker, l.expires_at),
        (fenced, &claimer, lease.expires_at)
    );
    assert_eq!(j.runs.last().map(|r| &r.worker), Some(&claimer));
    // A second fence from the token read before is refused: one reaper fences a lease.
    assert!(super::fence(&worker, job.id, lease.token).await.is_none());
    let stopping = Stopping::default();
    reap_once(&worker, &stopping).await.expect("pass");
    stops_done(&stopping).await;
    let back = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    let run = back.runs.last().expect("a run");
    assert_eq!(
        (run.worker.as_str(), run.outcome.as_deref()),
        (claimer.as_str(), Some("LOST"))
    );
    let _ = exec.wait().await;
}

/// A job of a docker runner whose engine cannot be reached, cancelled while it ran, its worker
/// hung: the stop fails every pass. Within 5 minutes of the stored expiry the lease is kept (a
/// retry waits); after them it is given up, as the docs promise, not kept for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_whose_stop_keeps_failing_gives_its_lease_up_after_five_minutes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
    let cfg = Config::from_toml(
        "[[runners]]\nkind = \"docker\"\ntypes = [\"box\"]\nimage = \"busybox\"\n\
         docker_host = \"unix:///nonexistent/docker.sock\"\n",
    )
    .expect("config");
    let runners = Arc::new(RunnerSet::build(&cfg, Arc::default()).expect("runners"));
    let runner = runners.iter().next().expect("a runner").name.clone();
    let worker = Worker::new(
        store.clone(),
        runners,
        cfg.worker.clone(),
        Arc::new(MasterKey::new(vec![7; 32])),
        None,
        "http://127.0.0.1:9/async".into(),
    );
    let job = Job::new("box", &runner, now_us());
    store.submit(job.clone()).await.expect("submit");
    store
        .claim(&runner, "hung", 1, Duration::from_millis(1))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    store.apply(job.id, Command::Cancel).await.expect("cancel");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let job = store.get(job.id).await.expect("read").expect("stored");
    let st = Stopping::default();
    assert!(!super::stop_lost(&worker, job.clone(), &st).await);
    assert!(store
        .get(job.id)
        .await
        .expect("read")
        .expect("stored")
        .lease
        .is_some());
    let mut later = job.clone();
    let five_min = crate::job::ABANDONED_STOP;
    later.lease.as_mut().expect("kept").expires_at -= five_min + 1;
    // Five minutes after the expiry is not enough on its own: this reaper's first failed try
    // was just now.
    assert!(!super::stop_lost(&worker, later.clone(), &st).await);
    st.lock().failing.insert(job.id, now_us() - five_min - 1);
    assert!(
        super::stop_lost(&worker, later, &st).await,
        "the lease is kept for ever"
    );
    let back = store.get(job.id).await.expect("read").expect("stored");
    assert!(back.lease.is_none(), "{back:#?}");
    store
        .apply(job.id, Command::Retry { runner: None })
        .await
        .expect("retry");
}

/// A lease fenced by a reaper of the claimer's machine (its token no longer its run's) is held
/// by that reaper while it cannot make the work sure gone (up to `ABANDONED_STOP`): a reaper of
/// another machine does not requeue it after three leases, only once `ABANDONED_STOP` has
/// passed, so attempt 2 never starts beside work that machine is still trying to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_machines_fenced_lease_is_requeued_only_after_the_abandoned_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let claimer = "hung-1-abc@0123456789abcdef";
    let (store, worker, job, mut exec) = hung_on(dir.path(), claimer, false, false).await;
    let token = job.lease.as_ref().expect("leased").token;
    let fenced = store.fence(job.id, token).await.expect("fenced");
    assert_ne!(fenced.lease.as_ref().map(|l| l.token), Some(token));
    let ttl = i64::try_from(worker.cfg.lease_ttl.as_micros()).expect("ttl");
    let mut later = fenced.clone();
    later.lease.as_mut().expect("leased").expires_at -= 3 * ttl + 1;
    super::requeue_unrecorded(&worker, later, &Stopping::default()).await;
    let j = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(j.status, JobStatus::Starting, "held by its fencer: {j:#?}");
    let mut much_later = fenced.clone();
    much_later.lease.as_mut().expect("leased").expires_at -= crate::job::ABANDONED_STOP + 1;
    super::requeue_unrecorded(&worker, much_later, &Stopping::default()).await;
    let j = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(j.status, JobStatus::Queued, "{j:#?}");
    exec.stop(Duration::from_millis(100)).await;
}

/// The give-up waits `ABANDONED_STOP` from the stored expiry and from this reaper's first
/// failed try: a lease that ran out long before (a reopened store, workers down for minutes)
/// is not given up on the first failure.
#[test]
fn the_give_up_waits_from_the_first_failed_try_too() {
    let mut st = super::StopState::default();
    let id = uuid::Uuid::now_v7();
    let now = now_us();
    let long_ago = now - 10 * crate::job::ABANDONED_STOP;
    assert!(!st.held_long_enough(id, long_ago, now), "first failed try");
    assert!(!st.held_long_enough(id, now, now), "lease ran out just now");
    st.failing.insert(id, long_ago);
    assert!(st.held_long_enough(id, long_ago, now));
    assert!(!st.held_long_enough(id, now, now));
}

/// The cancelled `job`'s work (`exec`) runs on and the retry is refused; one reaper pass kills
/// it, then gives the lease up; then the retry runs.
async fn reap_kills_then_lets_the_retry_run(
    store: &Arc<dyn Store>,
    worker: &Arc<Worker>,
    job: &Job,
    mut exec: Box<dyn Execution>,
) {
    let pid = exec.handle().id;
    assert!(alive(&pid), "the work runs on after the lease ran out");
    assert!(store
        .apply(job.id, Command::Retry { runner: None })
        .await
        .is_err());
    reap_once(worker, &Stopping::default()).await.expect("pass");
    let back = lease_gone(store, job.id).await;
    assert_eq!(back.status, JobStatus::Cancelled);
    assert!(!alive(&pid), "the work was killed before the lease went");
    let _ = exec.wait().await;
    let retried = store
        .apply(job.id, Command::Retry { runner: None })
        .await
        .expect("retry");
    assert_eq!(retried.status, JobStatus::Queued);
}

/// `Worker::adopt` of `exec`, work found for `job` (as the reaper read it), with `expected` the
/// fence's token; bounded.
async fn adopt_found(
    worker: &Arc<Worker>,
    job: &Job,
    exec: Box<dyn Execution>,
    expected: Option<u64>,
) {
    let slot = worker
        .runners
        .get(&job.runner)
        .cloned()
        .expect("its runner");
    let deferred = Arc::new(crate::worker::reporter::DeferredReporter::with_last_log(
        None,
    ));
    let found = runyard_runners::Recovered::Running(exec);
    let adopt = worker
        .clone()
        .adopt(job.clone(), slot, found, deferred, expected);
    tokio::time::timeout(Duration::from_secs(20), adopt)
        .await
        .expect("the adoption settles");
}

/// Kills process `pid` (the work a test left running).
fn kill(pid: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-9", pid])
        .output();
}

/// An adoption that does not take leaves the recovered work running while the job is still
/// active on the same attempt, and stops it only once the job moved on. Each case on a job
/// whose worker was lost in `STARTING`, its lease fenced by this reaper (a real process of the
/// local runner stands for the container found by its marks):
/// - another reaper adopted the work first, under a lease that looks expired to this worker's
///   clock (Redis's times are the store's clock, not this node's): left to it;
/// - the store cannot carry the adoption out (here the job's record does not read: an error of
///   the store's own, not a refusal): left for the next pass;
/// - the job was requeued meanwhile (moved on): stopped.
///
/// Before, the first two stopped the work: the other adopter then recorded the stop as the
/// attempt's failure, and after a store error the job was requeued and ran again beside nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_adoption_stops_the_work_only_once_the_job_moved_on() {
    for case in ["adopted elsewhere", "store error", "requeued"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let claimer = format!("hung-1-abc@{}", runyard_runners::node_id().expect("node"));
        let (store, worker, job, exec) = hung_on(dir.path(), &claimer, false, false).await;
        let pid = exec.handle().id;
        let read = job.lease.as_ref().expect("leased").token;
        let fence = super::fence(&worker, job.id, read).await.expect("fenced");
        match case {
            "adopted elsewhere" => {
                let other = store
                    .adopt(job.id, Some(fence), "other-1-abc", Duration::ZERO)
                    .await
                    .expect("adopted by another worker");
                let lease = other.lease.expect("its lease");
                assert!(lease.expires_at <= now_us(), "looks expired here");
            }
            "store error" => {
                let db = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
                db.busy_timeout(Duration::from_secs(10)).expect("timeout");
                db.execute(
                    "UPDATE jobs SET body = 'not a record' WHERE id = ?1",
                    [job.id.to_string()],
                )
                .expect("spoil the record");
                assert!(store.get(job.id).await.is_err(), "the record does not read");
            }
            _ => {
                let requeued = store
                    .apply(job.id, Command::LeaseExpired { token: Some(fence) })
                    .await
                    .expect("requeued");
                assert_eq!(requeued.status, JobStatus::Queued);
            }
        }
        adopt_found(&worker, &job, exec, Some(fence)).await;
        let alive_now = alive(&pid);
        kill(&pid);
        if case == "requeued" {
            assert!(
                !alive_now,
                "the work of an attempt the job moved on from runs on"
            );
        } else {
            assert!(alive_now, "{case}: the work was stopped");
        }
    }
}
