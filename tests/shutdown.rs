//! Graceful shutdown over real HTTP: running jobs finish within `worker.shutdown_grace`, and
//! those that cannot are stopped and given back to the queue, to run again after a restart on
//! the same data dir.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runyard::job::JobStatus;
use runyard::store::Store;
use serde_json::{json, Value};
use support::*;

/// The job as the store holds it, read through the stopped server's own store handle: what was
/// committed by the time `stop()` returned, before anything else could run it.
async fn stored(store: &Arc<dyn Store>, id: &str) -> runyard::job::Job {
    store
        .get(id.parse().expect("uuid"))
        .await
        .expect("store read")
        .expect("job exists")
}

/// Stops the server and checks that job `id` was given back by the stop: QUEUED with no lease
/// when `stop()` returned, and, read back through a new server without a worker, QUEUED with its
/// attempt recorded as released (not failed) and given back: as many attempts left as it was
/// submitted with (the runner's default, 3). Returns the job as read back.
async fn stop_and_read_given_back(ts: &mut TestServer, id: &str) -> Value {
    let store = ts.running().app.store.clone();
    ts.stop().await;
    let job = stored(&store, id).await;
    assert_eq!(job.status, JobStatus::Queued, "{job:#?}");
    assert!(job.lease.is_none(), "{job:#?}");
    drop(store);
    ts.restart(false).await;
    let job = ts.get_job(id).await;
    assert_eq!(status_of(&job), "QUEUED", "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "RELEASED", "{job:#}");
    let left = job["max_attempts"].as_u64().expect("max_attempts")
        - job["attempt"].as_u64().expect("attempt");
    assert_eq!(left, 3, "the released attempt is given back: {job:#}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_finishes_within_the_shutdown_grace() {
    // The job cannot end before the gate opens, and the gate opens only once stop() has begun.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let mut ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["gated"]
"#,
    )
    .service("gated", move |_ctx| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(json!({"slept_ms": 300}))
        }
    })
    .start()
    .await;
    let id = ts.submit_ok(json!({"type": "gated"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    let (http, url) = (ts.client.clone(), ts.url.clone());
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{url}{path}"));
        async move {
            let r = http.get(url).send().await.expect("answer while draining");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(get("/health/ready").await.0, 200);
    let store = ts.running().app.store.clone();
    tokio::join!(ts.stop(), async {
        // While the worker drains, readiness says so (a load balancer sends no new client),
        // while the process lives and its API still answers.
        let ready = eventually("readiness answers 503 draining", WAIT, || async {
            let (status, body) = get("/health/ready").await;
            (status == 503).then_some(body)
        })
        .await;
        assert_eq!(ready["status"], "draining", "{ready}");
        assert_eq!(get("/health").await.0, 503);
        assert_eq!(get("/health/live").await.0, 200);
        let (status, job) = get(&format!("/async/jobs/{id}")).await;
        assert_eq!((status, status_of(&job)), (200, "RUNNING"), "{job}");
        gate.add_permits(1);
    });
    // Finished by the time stop() returned.
    let job = stored(&store, &id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:#?}");
    drop(store);

    // Read it back from the data dir, through a new server without a worker.
    ts.restart(false).await;
    let job = ts.get_job(&id).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"slept_ms": 300}));
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["runs"].as_array().unwrap().len(), 1, "{job:#}");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_shutdown_grace_is_requeued_and_runs_after_restart() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["long.*"]
"#,
    )
    .config("[worker]\nshutdown_grace = \"200ms\"")
    .service("long.job", move |ctx| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            // The first attempt would take 30s; a later one is quick.
            let ms = if ctx.attempt == 1 { 30_000 } else { 10 };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"attempt": ctx.attempt})),
                _ = ctx.cancelled() => Err("cancelled".into()),
            }
        }
    })
    .start()
    .await;
    let id = ts.submit_ok(json!({"type": "long.job"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    let job = stop_and_read_given_back(&mut ts, &id).await;
    assert_eq!(job["worker"], Value::Null, "no lease is left: {job:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A server with a worker runs it again.
    ts.restart(true).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"attempt": 2}));
    assert_eq!(job["runs"].as_array().unwrap().len(), 2, "{job:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let events = ts.all_events("0").await;
    let story: Vec<&str> = events
        .iter()
        .filter(|e| e["job_id"] == id.as_str())
        .map(|e| e["runyard_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        story,
        ["QUEUED", "STARTING", "RUNNING", "QUEUED", "STARTING", "RUNNING", "SUCCESS"]
    );
    ts.stop().await;
}

/// The finish of the job running when the shutdown began claims nothing for its busy slot
/// (`store/handoff.rs`, `Refill`): the jobs queued behind it stay QUEUED as they were (no
/// attempt spent, their place in the queue kept) and run after a restart, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_queued_behind_a_busy_slot_starts_once_the_shutdown_began() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (g, c, r) = (gate.clone(), calls.clone(), ran.clone());
    let mut ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["gated"]
concurrency = 1
"#,
    )
    .config("[worker]\nshutdown_grace = \"5s\"")
    .service("gated", move |ctx| {
        let g = g.clone();
        c.fetch_add(1, Ordering::SeqCst);
        r.lock().unwrap().push(ctx.job_id.clone());
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(json!("done"))
        }
    })
    .start()
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ts.submit_ok(json!({"type": "gated"})).await);
    }
    ts.wait_status(&ids[0], "RUNNING", WAIT).await;
    let store = ts.running().app.store.clone();
    // `stop()` closes the refills as it is first polled (`Core::stop_worker`): the gate opens
    // right after that first poll, and however late the worker's own task sees the shutdown,
    // job 1's finish must claim nothing.
    {
        let stop = ts.stop();
        tokio::pin!(stop);
        assert!(futures::poll!(&mut stop).is_pending(), "job 1 still runs");
        gate.add_permits(1);
        stop.await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the job running when the shutdown began"
    );
    assert_eq!(stored(&store, &ids[0]).await.status, JobStatus::Success);
    for id in &ids[1..] {
        let job = stored(&store, id).await;
        assert_eq!(job.status, JobStatus::Queued, "{job:#?}");
        assert!(job.lease.is_none(), "{job:#?}");
        assert_eq!((job.attempt, job.runs.len()), (0, 0), "untouched: {job:#?}");
    }
    drop(store);
    gate.add_permits(2);
    ts.restart(true).await;
    for id in &ids[1..] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
        assert_eq!(job["attempt"], 1, "{job:#}");
    }
    assert_eq!(*ran.lock().unwrap(), ids, "each once, in submit order");
    ts.stop().await;
}

/// A job stopped at shutdown before its start was recorded is given back to the queue at once,
/// as a RUNNING one is, not left STARTING under the stopped worker's lease until it expires. A
/// local job's start waits for `worker.quick_exit_wait` (here longer than the test), so the stop
/// always comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_before_its_start_was_recorded_is_requeued_at_once() {
    let mut ts = TestServer::builder(
        r#"
[[runners]]
kind = "local"
types = ["slow.*"]
command = ["/bin/sh", "-c", "sleep 30"]
"#,
    )
    .config("[worker]\nshutdown_grace = \"200ms\"\nquick_exit_wait = \"60s\"")
    .start()
    .await;
    let id = ts.submit_ok(json!({"type": "slow.job"})).await;
    ts.wait_status(&id, "STARTING", WAIT).await;
    let job = stop_and_read_given_back(&mut ts, &id).await;
    assert_eq!(job["attempt"], 1, "{job:#}");
    ts.stop().await;
}

/// `RunningServer::stop()` releases the data dir, so that a new server can open it at once (an
/// embedding program restarting in-process): 50 restarts, each while a job runs. It fails when
/// anything (a job task, a reporter, an HTTP connection task) still holds the store after `stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_releases_the_data_dir_at_once() {
    let mut ts = TestServer::start(
        r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
    )
    .await;
    for round in 0..50 {
        // Stopped while a job runs (it finishes within the grace).
        let id = ts
            .submit_ok(json!({"type": "runyard.sleep", "args": {"ms": 100}}))
            .await;
        // A poll that comes late (a loaded machine, a debug build) can miss the 100 ms of
        // RUNNING; the round then restarts after the job and must still succeed.
        ts.wait_for(&id, WAIT, |j| matches!(status_of(j), "RUNNING" | "SUCCESS"))
            .await;
        if let Err(e) = ts.try_restart(true).await {
            panic!("round {round}: restart right after stop() failed: {e}");
        }
    }
    ts.stop().await;
}

/// `runyard serve` on the embedded store runs the server on a single-thread runtime and gives
/// the worker a thread of its own (`server.rs`, `WorkerThread`): a job runs on that thread, not
/// on the server's, and a graceful stop still lets a running job finish, then ends the thread
/// and releases the data dir.
#[tokio::test(flavor = "current_thread")]
async fn on_a_single_thread_runtime_the_worker_has_a_thread_of_its_own() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let r = ran_on.clone();
    let mut ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["gated"]
"#,
    )
    .service("gated", move |_ctx| {
        let (g, r) = (g.clone(), r.clone());
        async move {
            let me = std::thread::current();
            *r.lock().expect("lock") = Some((me.id(), me.name().map(str::to_owned)));
            g.acquire().await.expect("gate").forget();
            Ok(json!({"done": true}))
        }
    })
    .start()
    .await;
    let id = ts.submit_ok(json!({"type": "gated"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    let (thread, name) = ran_on.lock().expect("lock").clone().expect("the job ran");
    assert_ne!(
        thread,
        std::thread::current().id(),
        "the job ran on the server's thread"
    );
    assert_eq!(name.as_deref(), Some("runyard-worker"));
    let store = ts.running().app.store.clone();
    tokio::join!(ts.stop(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.add_permits(1);
    });
    // Drained by the time stop() returned.
    let job = stored(&store, &id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:#?}");
    drop(store);
    // The worker's thread is gone with everything it held: the data dir opens again at once.
    if let Err(e) = ts.try_restart(true).await {
        panic!("restart right after stop() failed: {e}");
    }
    let id = ts.submit_ok(json!({"type": "gated"})).await;
    gate.add_permits(1);
    ts.wait_status(&id, "SUCCESS", WAIT).await;
    ts.stop().await;
}
