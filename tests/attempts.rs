//! Each attempt of a job starts clean (docs/api.md, "Retries"): a job retried by itself after a
//! failed attempt shows none of that attempt's result, details, error, exit code or uploaded
//! files once the next attempt has started, as after a client's retry; the failed attempt's error
//! stays in the events. And a job that reported its outcome is not undone by a late cancel
//! (docs/hooks.md, "When a job ends").
//!
//! Real components: a runyard server on 127.0.0.1:0 on the embedded store and on a real Redis,
//! the Python client of examples/python run by `python3` as local-runner child processes.

mod redis_support;
mod support;

use redis_support::TestRedis;
use serde_json::{json, Value};
use support::{TestServer, WAIT};

/// `py.twice`: attempt 1 reports progress details, uploads `outputs` (out-1.txt), reports ERROR
/// with a result and exits 1. Attempt 2 uploads out-2.txt and waits (at most 30 s) for the file
/// `go` in its job's directory, then exits with `args.exit2` (0 by default), no result.
/// `py.linger`: reports SUCCESS with a result, then sleeps. `py.linger_error`: reports ERROR
/// (retry not refused), then sleeps.
const RUNNERS: &str = r#"
[[runners]]
name = "twice"
kind = "local"
types = ["py.twice"]
env = { PYTHONPATH = "ROOT/examples/python" }
command = ["python3", "-c", '''
import os, sys, time
from runyard_job import JobClient
job = JobClient.from_env()
n = int(os.environ["JOB_ATTEMPT"])
args = job.args() or {}
d = os.path.join("@DIR@", os.environ["JOB_ID"])
os.makedirs(d, exist_ok=True)
path = os.path.join(d, f"out-{n}.txt")
with open(path, "w") as f:
    f.write(f"attempt {n} of {os.environ['JOB_ID']}")
job.upload("outputs", path)
if n == 1:
    job.progress(0.5, {"stage": "attempt-1-stage"})
    job.status("ERROR", results={"from_attempt": 1}, error="first failed")
    sys.exit(1)
for _ in range(600):
    if os.path.exists(os.path.join(d, "go")):
        break
    time.sleep(0.05)
sys.exit(int(args.get("exit2", 0)))
''']

[[runners]]
name = "linger"
kind = "local"
types = ["py.linger"]
env = { PYTHONPATH = "ROOT/examples/python" }
command = ["python3", "-c", '''
import time
from runyard_job import JobClient
job = JobClient.from_env()
job.result({"done": True})
time.sleep(60)
''']

[[runners]]
name = "linger_error"
kind = "local"
types = ["py.linger_error"]
env = { PYTHONPATH = "ROOT/examples/python" }
command = ["python3", "-c", '''
import time
from runyard_job import JobClient
job = JobClient.from_env()
job.status("ERROR", error="gave up")
time.sleep(60)
''']
"#;

async fn start(store: &str) -> TestServer {
    let runners = RUNNERS.replace("ROOT", env!("CARGO_MANIFEST_DIR"));
    TestServer::builder(&runners)
        .config(store)
        .config("[worker]\nexit_grace = \"3s\"")
        .start()
        .await
}

fn output_names(job: &Value) -> Vec<&str> {
    job["files"]["outputs"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Submits `py.twice` with `args` and `max_attempts`, checks the job while attempt 2 runs, lets attempt 2 end and
/// returns the job as it ended.
async fn twice(ts: &TestServer, args: Value, max_attempts: u32) -> (String, Value) {
    let id = ts
        .submit_ok(
            json!({"type": "py.twice", "args": args, "max_attempts": max_attempts,
                          "backoff": {"initial_ms": 200}}),
        )
        .await;
    let running = ts
        .wait_for(&id, WAIT, |j| {
            j["attempt"] == 2 && j["status"] == "RUNNING" && output_names(j).contains(&"out-2.txt")
        })
        .await;
    // Attempt 2 runs: nothing of attempt 1 is the job's, polled or in its events.
    assert_eq!(running["error"], Value::Null, "{running:#}");
    assert_eq!(running["exit_code"], Value::Null, "{running:#}");
    assert_eq!(running["result"], Value::Null, "{running:#}");
    assert_eq!(running["status_details"], Value::Null, "{running:#}");
    assert_eq!(output_names(&running), ["out-2.txt"], "{running:#}");
    // Attempt 1's error lasts on its run record.
    assert_eq!(running["runs"][0]["error"], "first failed", "{running:#}");
    assert_eq!(running["runs"][1]["error"], Value::Null, "{running:#}");
    let events: Vec<Value> = ts
        .all_events("")
        .await
        .into_iter()
        .filter(|e| e["job_id"] == id.as_str())
        .collect();
    // Attempt 1's error is in the event that ended it.
    let ended1 = events
        .iter()
        .find(|e| e["runyard_status"] == "SCHEDULED" && e["attempt"] == 1)
        .unwrap_or_else(|| panic!("no SCHEDULED event: {events:#?}"));
    assert_eq!(ended1["errors"][0]["message"], "first failed", "{ended1:#}");
    for e in events.iter().filter(|e| e["attempt"] == 2) {
        assert_eq!(e["errors"], json!([]), "{e:#}");
    }
    std::fs::write(ts.dir().join(&id).join("go"), b"").expect("let attempt 2 end");
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["attempt"], 2, "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "ERROR", "{job:#}");
    (id, job)
}

async fn a_retried_attempt_starts_clean(store: &str) {
    let ts = start(store).await;
    let (id, job) = twice(&ts, json!({}), 3).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["result"], Value::Null, "{job:#}");
    assert_eq!(job["status_details"], Value::Null, "{job:#}");
    assert_eq!(job["error"], Value::Null, "{job:#}");
    assert_eq!(job["exit_code"], 0, "{job:#}");
    assert_eq!(output_names(&job), ["out-2.txt"], "{job:#}");
    assert_eq!(job["files"]["outputs"][0]["attempt"], 2, "{job:#}");
    let (code, result) = ts
        .get(job["result_url"].as_str().expect("result_url"))
        .await;
    assert_eq!(code, 200, "{result:#}");
    assert_eq!(result["result"], Value::Null, "{result:#}");
    let file = ts
        .client
        .get(ts.at(&format!("/async/jobs/{id}/files/outputs/0")))
        .send()
        .await
        .expect("download");
    assert_eq!(file.status(), 200);
    let body = file.text().await.expect("body");
    assert_eq!(body, format!("attempt 2 of {id}"));
    // A failing last attempt ends with its own error and no result of attempt 1.
    let (_, job) = twice(&ts, json!({"exit2": 4}), 2).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["exit_code"], 4, "{job:#}");
    assert_eq!(job["result"], Value::Null, "{job:#}");
    assert_eq!(job["status_details"], Value::Null, "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(!error.contains("first failed"), "{job:#}");
    assert_eq!(output_names(&job), ["out-2.txt"], "{job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_starts_clean_embedded() {
    a_retried_attempt_starts_clean("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_starts_clean_on_redis() {
    let r = TestRedis::start();
    a_retried_attempt_starts_clean(&r.server_config("attempts-test-master-key-0123456789")).await;
}

/// A job reported SUCCESS and lingers: a cancel then is refused (409) and the job ends SUCCESS
/// with its result when its process is stopped after `exit_grace`, as a timeout at that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_a_reported_success_leaves_it_standing() {
    let ts = start("").await;
    let id = ts.submit_ok(json!({"type": "py.linger"})).await;
    ts.wait_for(&id, WAIT, |j| j["runs"][0]["reported"] == "SUCCESS")
        .await;
    let (code, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(code, 409, "{body:#}");
    let (kind, message) = support::error_of(&body);
    assert_eq!(kind, "illegal_transition", "{body:#}");
    assert!(
        message.contains("reported an outcome that ends it"),
        "{body:#}"
    );
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"done": true}), "{job:#}");
    assert_eq!(job["exit_code"], 143, "{job:#}");
}

/// A job on its last attempt (max_attempts 1) reported ERROR without refusing a
/// retry and lingers: no attempt is left, so the ERROR ends the job and a cancel then is refused
/// (409) as after `retry: false`; the job ends ERROR with the reported error, not CANCELLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_an_error_on_the_last_attempt_leaves_it_standing() {
    let ts = start("").await;
    let id = ts
        .submit_ok(json!({"type": "py.linger_error", "max_attempts": 1}))
        .await;
    ts.wait_for(&id, WAIT, |j| j["runs"][0]["reported"] == "ERROR")
        .await;
    let (code, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(code, 409, "{body:#}");
    let (kind, message) = support::error_of(&body);
    assert_eq!(kind, "illegal_transition", "{body:#}");
    assert!(message.contains("no attempts left"), "{body:#}");
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["error"], "gave up", "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "ERROR", "{job:#}");
}
