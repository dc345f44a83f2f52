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
/// job of it claimed by another worker with a lease of 1 ms, started (a real process), then
/// cancelled: the other worker is hung, its lease runs out.
async fn cancelled_on_a_hung_worker(
    dir: &std::path::Path,
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
        "http://127.0.0.1:9/async".into(),
    );
    let job = Job::new("nap", &slot.name, now_us());
    store.submit(job.clone()).await.expect("submit");
    let claimed = store
        .claim(&slot.name, "hung", 1, Duration::from_millis(1))
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
    let handle = Some(exec.handle());
    store
        .apply(job.id, Command::Started { token, handle })
        .await
        .expect("started");
    store.apply(job.id, Command::Cancel).await.expect("cancel");
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
    let (store, worker, job, mut exec) = cancelled_on_a_hung_worker(dir.path()).await;
    let pid = exec.handle().id;
    assert!(alive(&pid), "the work runs on after the lease ran out");
    assert!(store.apply(job.id, Command::Retry).await.is_err());
    reap_once(&worker, &Stopping::default())
        .await
        .expect("pass");
    let start = std::time::Instant::now();
    let back = loop {
        let j = store.get(job.id).await.expect("read").expect("stored");
        if j.lease.is_none() {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{j:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(back.status, JobStatus::Cancelled);
    assert!(!alive(&pid), "the work was killed before the lease went");
    let _ = exec.wait().await;
    let retried = store.apply(job.id, Command::Retry).await.expect("retry");
    assert_eq!(retried.status, JobStatus::Queued);
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
    super::stop_lost(&worker, far).await;
    let j = store.get(job.id).await.expect("read").expect("stored");
    assert_eq!(j.lease.as_ref().map(|l| l.token), Some(token), "{j:#?}");
    assert!(alive(&exec.handle().id));
    assert!(store.apply(job.id, Command::Retry).await.is_err());
    exec.stop(Duration::from_millis(100)).await;
}
