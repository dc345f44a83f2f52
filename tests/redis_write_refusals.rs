//! A Redis that answers but refuses every write for a reason of its own that lasts until its
//! operator acts: unable to persist (`MISCONF`), without the replicas `min-replicas-to-write`
//! asks for (`NOREPLICAS`), a read-only replica (`READONLY`). Probe s50 saw `/health/ready` 200
//! and `runyard_store_up` 1 for 50 s while every submit was answered `500 store_error "MISCONF
//! ..."`, and on a replica a submit wait 29.5 s for a 503 saying the job may have been stored.
//! Now: not ready within a few seconds (no write of a client needed), the metric agrees, a
//! submit or a batch is answered 503 at once saying nothing was stored, and nothing stored
//! before is lost; once Redis takes writes again, everything resumes.

mod redis_support;
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use redis_support::TestRedis;
use support::TestServer;

const RUNNERS: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n";

/// Well under `api.request_timeout` and `store.retry` (30 s each): an answer at once.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A private Redis (protected configs enabled: `CONFIG SET dir`) and a node on it with one job
/// already run.
async fn setup(key: &str) -> (TestRedis, TestServer, String) {
    setup_with(key, "").await
}

/// [`setup`] with `extra` in the node's config (after the store's).
async fn setup_with(key: &str, extra: &str) -> (TestRedis, TestServer, String) {
    let r = TestRedis::private(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-protected-configs",
        "yes",
    ]);
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("{}{extra}", r.server_config(key)))
        .start()
        .await;
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = ts.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");
    (r, ts, id)
}

/// While Redis refuses writes (`code`: the word its refusal begins with, which the answers
/// name): not ready within a few seconds though no client wrote, `runyard_store_up` 0, a submit
/// and a batch answered 503 at once saying nothing was stored, and nothing stored.
async fn refused_meanwhile(ts: &TestServer, code: &str) {
    refused_within(ts, code, AT_ONCE).await
}

/// [`refused_meanwhile`], the answers within `within`.
async fn refused_within(ts: &TestServer, code: &str, within: Duration) {
    let (st, v) = support::eventually("not ready", Duration::from_secs(10), || async {
        let (st, v) = ts.get("/health/ready").await;
        (st != StatusCode::OK).then_some((st, v))
    })
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains(code), "{v}");
    assert_eq!(
        ts.metric("runyard_store_up").await,
        Some(0.0),
        "the metric agrees with readiness"
    );
    let before = ts.count_jobs(None).await;
    let t0 = Instant::now();
    let (st, v) = ts.submit(json!({"type": "runyard.noop"})).await;
    let took = t0.elapsed();
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(took < within, "answered after {took:?}: {v}");
    let said = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains(code) && said.contains("nothing of it was stored"),
        "{v}"
    );
    assert!(
        !said.contains("user_script") && !said.contains("may have been stored"),
        "{v}"
    );
    let t0 = Instant::now();
    let items = vec![json!({"type": "runyard.noop"}); 3];
    let (st, v) = ts
        .post("/async/jobs/batch", Some(&json!({"jobs": items})))
        .await;
    let took = t0.elapsed();
    assert!(took < within, "the batch answered after {took:?}: {st} {v}");
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(ts.count_jobs(None).await, before, "nothing stored");
}

/// Once Redis takes writes again: ready, the metric 1, and a submit runs; nothing lost.
async fn resumes(ts: &TestServer, first: &str) {
    support::eventually("ready again", Duration::from_secs(10), || async {
        (ts.get("/health/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(ts.metric("runyard_store_up").await, Some(1.0));
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = ts.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");
    let job = ts.get_job(first).await;
    assert_eq!(
        support::status_of(&job),
        "SUCCESS",
        "the first job kept: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_cannot_persist_is_not_ready_and_refuses_submits_at_once() {
    let (r, ts, first) = setup("misconf-test-master-key-0123456789ab").await;
    let dir = r.cli(&["CONFIG", "GET", "dir"]);
    let dir = dir
        .lines()
        .nth(1)
        .expect("CONFIG GET dir")
        .trim()
        .to_string();
    for set in [
        ["save", "3600 1"],
        ["stop-writes-on-bgsave-error", "yes"],
        ["dir", "/proc"],
    ] {
        assert!(r.cli(&["CONFIG", "SET", set[0], set[1]]).contains("OK"));
    }
    r.cli(&["BGSAVE"]);
    let saved = |r: &TestRedis, want: &str| {
        let start = Instant::now();
        while r.info("rdb_last_bgsave_status").as_deref() != Some(want)
            || r.info("rdb_bgsave_in_progress").as_deref() != Some("0")
        {
            assert!(start.elapsed() < support::WAIT, "no BGSAVE {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    saved(&r, "err");
    refused_meanwhile(&ts, "MISCONF").await;
    assert!(r.cli(&["CONFIG", "SET", "dir", &dir]).contains("OK"));
    r.cli(&["BGSAVE"]);
    saved(&r, "ok");
    resumes(&ts, &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_without_its_replicas_is_not_ready_and_refuses_submits_at_once() {
    let (r, ts, first) = setup("noreplicas-test-master-key-0123456789").await;
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .contains("OK"));
    refused_meanwhile(&ts, "NOREPLICAS").await;
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "0"])
        .contains("OK"));
    resumes(&ts, &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_made_a_replica_refuses_submits_after_store_retry() {
    // `store.retry` short: a replica's refusal is waited on that long (a failover behind the
    // address ends within it), then answered as the other refusals, not "may have been stored".
    let (r, ts, first) =
        setup_with("readonly-test-master-key-0123456789ab", "retry = \"2s\"\n").await;
    // A primary that is not there: the replica keeps its data and refuses writes.
    assert!(r.cli(&["REPLICAOF", "127.0.0.1", "1"]).contains("OK"));
    refused_within(&ts, "read-only replica", Duration::from_secs(10)).await;
    assert!(r.cli(&["REPLICAOF", "NO", "ONE"]).contains("OK"));
    resumes(&ts, &first).await;
}

/// Redis busy running a script for the whole of `store.retry`: a submit was answered "the job
/// may have been stored ... a retry without an idempotency_key may make a second job", with
/// Redis's "You can only call SCRIPT KILL or SHUTDOWN NOSAVE" (probe s54a F2), though Redis
/// refuses `BUSY` before running anything. Now: 503 saying nothing was stored and to try again
/// later, no job id to look up, no advice meant for Redis's operator; and nothing stored.
///
/// The same when `api.request_timeout` comes first (the defaults: both 30 s): the submit is
/// answered before it and the store gives up by then with what it knows (review of session 54:
/// the API's own cut came first and said "may have been stored").
async fn busy_all_along_is_nothing_stored(extra: &str) {
    let (r, ts, first) = setup_with("busyall-test-master-key-0123456789ab", extra).await;
    let before = ts.count_jobs(None).await;
    let script = r.busy();
    let (st, v) = ts.submit(json!({"type": "runyard.noop"})).await;
    let keyed = ts
        .submit(json!({"type": "runyard.noop", "idempotency_key": "busy-all-along"}))
        .await;
    r.unbusy(script);
    for (st, v) in [(st, v), keyed] {
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let said = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            said.contains("BUSY") && said.contains("nothing of it was stored"),
            "{v}"
        );
        assert!(
            !said.contains("may have been stored") && !said.contains("SCRIPT KILL"),
            "{v}"
        );
        assert!(
            v["error"].get("job_id").is_none(),
            "nothing to look up: {v}"
        );
    }
    assert_eq!(ts.count_jobs(None).await, before, "nothing stored");
    resumes(&ts, &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_refused_busy_for_all_of_store_retry_says_nothing_was_stored() {
    busy_all_along_is_nothing_stored("retry = \"1s\"\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_refused_busy_until_the_request_timeout_says_nothing_was_stored() {
    busy_all_along_is_nothing_stored("retry = \"20s\"\n[api]\nrequest_timeout = \"2s\"\n").await;
}

/// The log of a real `runyard serve` while Redis refuses writes: the refusal said at ERROR once
/// (a minute) by the store, not a WARN or an ERROR per loop round or per request (probe s50: a
/// WARN a second per loop, an ERROR per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_logged_once_not_per_request_or_round() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runyard.toml");
    let config = format!(
        "{}[worker]\npoll_interval = \"100ms\"\n{RUNNERS}",
        r.server_config("refusal-log-master-key-0123456789ab")
    );
    std::fs::write(&cfg, config).unwrap();
    let log = dir.path().join("server.log");
    let mut server = support::child::ChildServer::start(&cfg, &log);
    server.wait_healthy(support::WAIT).await;
    let http = reqwest::Client::new();
    let submit = || async {
        http.post(format!("{}/async/jobs", server.url))
            .json(&json!({"type": "runyard.noop"}))
            .send()
            .await
            .map(|r| r.status())
    };
    assert!(submit().await.unwrap().is_success());
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .contains("OK"));
    let mut answered = Vec::new();
    for _ in 0..5 {
        answered.push(submit().await.unwrap());
        let _ = http
            .get(format!("{}/health/ready", server.url))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "0"])
        .contains("OK"));
    let text = std::fs::read_to_string(&log).unwrap();
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("NOREPLICAS") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert_eq!(loud.len(), 1, "said once: {loud:#?}");
    assert!(loud[0].contains("redis refuses writes"), "{loud:#?}");
    assert!(
        answered
            .iter()
            .all(|st| *st == StatusCode::SERVICE_UNAVAILABLE),
        "{answered:?}"
    );
    server.kill9();
}

/// A Redis busy running a script past `busy-reply-threshold` (someone's long `EVAL` on a shared
/// Redis) answers every other client `BUSY` until the script ends: a submit meanwhile was
/// answered `500 store_error "BUSY ..."` at once. It is now waited on within `store.retry`, as
/// Redis away is (nothing of it ran: Redis refused it before running it), and taken once the
/// script ends (killed); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_while_redis_runs_a_long_script_is_taken_once_it_ends() {
    let (r, ts, first) = setup("busy-test-master-key-0123456789abcdef").await;
    let ts = std::sync::Arc::new(ts);
    let script = r.busy();
    let submitting = ts.clone();
    let submit =
        tokio::spawn(async move { submitting.submit(json!({"type": "runyard.noop"})).await });
    // Still waiting while Redis is busy (it was answered 500 at once).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!submit.is_finished(), "{:?}", submit.await);
    r.unbusy(script);
    let (st, v) = submit.await.expect("the submit task");
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["job_id"].as_str().expect("a job id").to_string();
    let job = ts.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");
    resumes(&ts, &first).await;
}
