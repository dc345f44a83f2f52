//! A job that reaches the worker after the shutdown grace's sweep (`Worker::drain`: handed over,
//! claimed, or claimed by a finish whose commit outlasted the grace) is stopped at once and given
//! back, not run: the `swept` branch of `Worker::run_job`. The real race needs a commit that spans
//! the whole grace, so this drives the branch directly, on a real embedded store and a real
//! service runner.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runyard_runners::service::ServiceRegistry;
use serde_json::json;

use super::Worker;
use crate::config::Config;
use crate::job::{now_us, Job, JobStatus};
use crate::runner_set::RunnerSet;
use crate::security::MasterKey;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreSettings};

#[tokio::test]
async fn a_job_delivered_after_the_sweep_is_given_back_not_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
    let cfg =
        Config::from_toml("[[runners]]\nkind = \"service\"\ntypes = [\"slow\"]\n").expect("config");
    // Ends by itself after 200 ms unless stopped; counts the runs that got to the end.
    let ended = Arc::new(AtomicUsize::new(0));
    let mut services = ServiceRegistry::new();
    let e = ended.clone();
    services.register("slow", move |ctx| {
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
    let runners = Arc::new(RunnerSet::build(&cfg, Arc::new(services)).expect("runners"));
    let slot = runners.iter().next().expect("a runner").clone();
    let worker = Worker::new(
        store.clone(),
        runners,
        cfg.worker.clone(),
        Arc::new(MasterKey::new(vec![7; 32])),
        "http://127.0.0.1:9/async".into(),
    );
    let submitted = store
        .submit(Job {
            max_attempts: 2,
            ..Job::new("slow", &slot.name, now_us())
        })
        .await
        .expect("submit")
        .job;
    let job = store
        .claim(&slot.name, worker.id(), 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    assert_eq!(job.id, submitted.id);

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

    assert_eq!(ended.load(Ordering::SeqCst), 0, "the job was not run");
    assert_eq!(slot.active.load(Ordering::Acquire), 0, "its slot is free");
    let back = store
        .get(submitted.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:#?}");
    assert!(back.lease.is_none(), "{back:#?}");
    assert_eq!(back.queued_at, submitted.queued_at, "its place kept");
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
    assert!(worker.idle(), "nothing of it is left running");
}
