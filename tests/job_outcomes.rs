//! How a job's end is decided (docs/hooks.md, "When a job ends"): an ERROR a job reports through
//! its hook (a Python exception in `run()`) is retried with backoff once its process has ended,
//! like a crash, unless it said `retry: false` (`NonRetryable`); the exit code is recorded for
//! every job; and a job reads SUCCESS only once its process has ended and its output is stored.
//!
//! Real components: a runyard server on 127.0.0.1:0, the Python client of examples/python run by
//! `python3` (with `requests`) as local-runner child processes.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{gap, time_of, TestServer, WAIT};

fn python_runners() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        r#"
[[runners]]
name = "flaky"
kind = "local"
types = ["py.flaky"]
command = ["python3", "{root}/examples/python/jobs/flaky.py"]
env = {{ PYTHONPATH = "{root}/examples/python" }}
max_attempts = 3
backoff = {{ initial_ms = 700, max_ms = 5000, multiplier = 2.0, jitter = false }}

[[runners]]
name = "tail"
kind = "local"
types = ["py.tail"]
command = ["python3", "-c", """
import sys, time
from runyard_job import JobClient
job = JobClient.from_env()
job.running()
job.result({{"ok": True}})
for i in range(50):
    print(f"after the report {{i}}", flush=True)
time.sleep(0.3)
print("the very last line", flush=True)
"""]
env = {{ PYTHONPATH = "{root}/examples/python" }}

[[runners]]
name = "linger"
kind = "local"
types = ["py.linger"]
command = ["python3", "-c", """
import time
from runyard_job import JobClient
job = JobClient.from_env()
job.result({{"done": True}})
time.sleep(60)
"""]
env = {{ PYTHONPATH = "{root}/examples/python" }}

[[runners]]
name = "big"
kind = "local"
types = ["py.big"]
max_attempts = 3
large_args = "hook"
command = ["python3", "-c", """
import os
from runyard_job import JobClient
job = JobClient.from_env()
args = job.args()
job.result({{"len": len(args["x"]), "env": "JOB_ARGS" in os.environ, "size": os.environ.get("JOB_ARGS_SIZE")}})
"""]
env = {{ PYTHONPATH = "{root}/examples/python" }}

[[runners]]
name = "shell"
kind = "local"
types = ["sh.args"]
max_attempts = 3
command = ["/bin/sh", "-c", "printf %s \"$JOB_ARGS\" | wc -c"]

[[runners]]
name = "chatty"
kind = "local"
types = ["sh.chatty"]
max_attempts = 1
command = ["/bin/sh", "-c", "seq 1 200000; echo 'FATAL: it broke' >&2; exit 1"]

[[runners]]
name = "toobig"
kind = "local"
types = ["sh.toobig"]
max_attempts = 3
command = ["/bin/sh", "-c", "exit 0"]
env = {{ BIG = "{big}" }}
"#,
        big = "B".repeat(200_000)
    )
}

async fn start() -> TestServer {
    TestServer::builder(&python_runners())
        .config("[worker]\nexit_grace = \"3s\"")
        .start()
        .await
}

async fn logs(ts: &TestServer, id: &str) -> Vec<String> {
    let (st, v) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    assert!(st.is_success(), "{v}");
    v["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A job that writes faster than its lines can be stored (200,000 lines at once, then its
/// error): the newest lines are kept, so its last stdout line and its final stderr line are
/// there (the buffer used to drop the newest, the job's error among them). The two pipes are
/// read apart, so which of those two lines is stored first is not defined (nor where runyard's
/// "lines dropped" notes fall).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_job_keeps_its_last_lines() {
    let ts = start().await;
    let id = ts.submit_ok(json!({"type": "sh.chatty"})).await;
    let job = ts.wait_terminal(&id, WAIT * 2).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    let lines = ts.all_logs(&id).await;
    let last = |stream: &str| {
        lines
            .iter()
            .rev()
            .find(|(s, l)| s == stream && !l.starts_with("[runyard]"))
            .map(|(_, l)| l.as_str())
    };
    let n = lines.len();
    assert_eq!(last("stdout"), Some("200000"), "{n} lines stored");
    assert_eq!(last("stderr"), Some("FATAL: it broke"), "{n} lines stored");
}

fn runs(job: &Value) -> &Vec<Value> {
    job["runs"].as_array().expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_exception_is_retried_with_backoff_until_the_job_succeeds() {
    let ts = start().await;
    let id = ts.submit_ok(json!({"type": "py.flaky"})).await;
    let job = ts.wait_terminal(&id, WAIT * 2).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 3, "{job:#}");
    assert_eq!(job["result"], json!({"attempt": 3}));
    assert_eq!(job["exit_code"], 0, "{job:#}");
    let r = runs(&job);
    let outcomes: Vec<&str> = r.iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["ERROR", "ERROR", "SUCCESS"], "{job:#}");
    // Backoff between the attempts: 700 ms after the first, 1400 ms after the second.
    for (i, min) in [(1, 700), (2, 1400)] {
        let waited = gap(time_of(&r[i - 1]["ended_at"]), time_of(&r[i]["claimed_at"]));
        assert!(
            waited >= Duration::from_millis(min),
            "attempt {} started {waited:?} after attempt {i} ended (backoff {min} ms): {job:#}",
            i + 1
        );
    }
    // Each attempt's output is there, the last one's too.
    let lines = logs(&ts, &id).await;
    for n in 1..=3 {
        assert!(
            lines.iter().any(|l| l == &format!("flaky.py: attempt {n}")),
            "{lines:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("transient failure on attempt 2")),
        "the traceback is logged: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_ends_the_job_at_once_with_its_exit_code() {
    let ts = start().await;
    let id = ts
        .submit_ok(json!({"type": "py.flaky", "args": {"fatal": true}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["exit_code"], 1, "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("no retry can fix it"), "{job:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = ts.get_job(&id).await;
    assert_eq!(later["status"], "ERROR");
    assert_eq!(later["attempt"], 1, "no second attempt: {later:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_success_only_once_its_last_output_is_stored() {
    let ts = start().await;
    let id = ts.submit_ok(json!({"type": "py.tail"})).await;
    // Poll tightly: the moment SUCCESS shows, the process's last line must already be there.
    let job = ts
        .wait_for(&id, WAIT, |j| {
            j["status"] == "SUCCESS" || support::is_terminal(&j["status"])
        })
        .await;
    let lines = logs(&ts, &id).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("the very last line"),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("after the report"))
            .count(),
        50
    );
    assert_eq!(job["exit_code"], 0, "{job:#}");
    assert_eq!(job["result"], json!({"ok": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_lingers_after_its_report_is_stopped_and_its_outcome_kept() {
    let ts = start().await;
    let id = ts.submit_ok(json!({"type": "py.linger"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"done": true}));
    // Stopped with SIGTERM after `exit_grace` (3 s): 128 + 15.
    assert_eq!(job["exit_code"], 143, "{job:#}");
    let took = gap(
        time_of(&runs(&job)[0]["started_at"]),
        time_of(&job["finished_at"]),
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// Audit 18, L2: args over what Linux takes in one environment string (128 KiB) reach the job
/// through its hook on a runner set to `large_args = "hook"`: the Python client fetches them
/// when `JOB_ARGS` is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_300_kb_of_args_starts_and_reads_them() {
    let ts = start().await;
    let x = "A".repeat(300_000);
    let id = ts
        .submit_ok(json!({"type": "py.big", "args": {"x": x}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["result"]["len"], 300_000, "{job:#}");
    assert_eq!(job["result"]["env"], false, "{job:#}");
    assert_eq!(job["result"]["size"], "300008", "{job:#}");
    // Small args still come in the environment.
    let id = ts
        .submit_ok(json!({"type": "py.big", "args": {"x": "small"}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(
        job["result"],
        json!({"len": 5, "env": true, "size": null}),
        "{job:#}"
    );
}

/// A launch the kernel refuses for its size (`E2BIG`: here an environment string of 200 KB from
/// the runner's `env`) fails the same way every time: the job ends ERROR at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_refused_as_too_big_is_not_retried() {
    let ts = start().await;
    let id = ts.submit_ok(json!({"type": "sh.toobig"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 1, "no attempt spent again: {job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("Argument list too long"), "{job:#}");
}

/// Args of 200 KB as JSON (`{"x":"AAA…"}`).
fn args_200_kb() -> Value {
    json!({"x": "A".repeat(200_000 - 8)})
}

/// A refusal of 200 KB args by the shell runner: 422 `invalid_request` naming `args`, their
/// size, the limit and the setting that allows them.
fn assert_refused_for_size(status: u64, error: &Value, what: &str) {
    assert_eq!(status, 422, "{what}: {error}");
    assert_eq!(error["code"], "invalid_request", "{what}: {error}");
    let m = error["message"].as_str().unwrap_or_default();
    for part in [
        "`args`",
        "200000 bytes",
        "122880",
        "large_args = \"hook\"",
        "`shell`",
    ] {
        assert!(m.contains(part), "{what}: `{part}` in {m}");
    }
}

/// Review 18: a shell command reading `$JOB_ARGS` on a runner with the default `large_args`
/// (`refuse`) never starts with empty args: args too large for its environment are refused at
/// submit time, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_too_large_for_the_environment_are_refused_at_submit_by_default() {
    let ts = start().await;
    let (st, v) = ts
        .submit(json!({"type": "sh.args", "args": args_200_kb()}))
        .await;
    assert_refused_for_size(u64::from(st.as_u16()), &v["error"], "submit");
    assert_eq!(ts.count_jobs(None).await, 0, "nothing stored");

    // A batch: the item is refused in its slot, the small one beside it is stored.
    let batch = json!({"jobs": [
        {"type": "sh.args", "args": args_200_kb()},
        {"type": "sh.args", "args": {"x": "small"}},
    ]});
    let (st, v) = ts.post("/async/jobs/batch", Some(&batch)).await;
    assert_eq!(st, 200, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_refused_for_size(
        results[0]["status_code"].as_u64().unwrap_or_default(),
        &results[0]["error"],
        "batch",
    );
    assert_eq!(results[1]["status_code"], 202, "{v}");
    assert_eq!(ts.count_jobs(None).await, 1, "only the small item: {v}");

    // A schedule whose job template has such args is refused at create time.
    let body = json!({"name": "big", "cron": "* * * * *",
        "job": {"type": "sh.args", "args": args_200_kb()}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_refused_for_size(u64::from(st.as_u16()), &v["error"], "schedule");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`job`"),
        "{v}"
    );
    let (st, v) = ts.get("/async/schedules/big").await;
    assert_eq!(st, 404, "no schedule stored: {v}");
    let (_, v) = ts.get("/async/schedules").await;
    assert_eq!(v["schedules"], json!([]), "{v}");

    // Args up to the limit still go in the environment.
    let id = ts
        .submit_ok(json!({"type": "sh.args", "args": {"x": "A".repeat(120 * 1024 - 8)}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(logs(&ts, &id).await, [(120 * 1024).to_string()]);
}

/// A job stored with args too large for the environment (here: submitted while its runner took
/// them through the hook) that reaches a runner set to refuse them ends ERROR at its first
/// launch, with a message saying why: no attempt is retried, no process starts without args.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_job_whose_args_the_runner_refuses_ends_error_at_launch() {
    let hook = r#"
[[runners]]
name = "shell"
kind = "local"
types = ["sh.args"]
max_attempts = 3
large_args = "hook"
command = ["/bin/sh", "-c", "echo started"]
"#;
    let mut ts = TestServer::start(hook).await;
    // No worker until the restart below: the job must not run under the hook runner, however
    // long the steps before it take.
    ts.restart(false).await;
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let id = ts
        .submit_ok(json!({"type": "sh.args", "args": args_200_kb(),
            "run_at": run_at.to_rfc3339()}))
        .await;
    // One that has not run yet: a retry of it is the 409 of any unfinished job.
    let later = ts
        .submit_ok(json!({"type": "sh.args", "args": args_200_kb(),
            "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    ts.stop().await;
    ts.set_runners(&hook.replace("large_args = \"hook\"\n", ""));
    // Another test's server in this process may fork a job between our stop and the restart:
    // its child shares the data dir's lock until it execs, for a moment.
    let mut tries = 0;
    while let Err(e) = ts.try_restart(true).await {
        tries += 1;
        assert!(tries < 50, "restart: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 1, "no attempt spent again: {job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    for part in ["`args`", "200000 bytes", "large_args = \"hook\""] {
        assert!(error.contains(part), "`{part}` in {job:#}");
    }
    assert!(logs(&ts, &id).await.iter().all(|l| l != "started"));
    // A retry would only end ERROR again, an attempt spent: refused, nothing changed.
    let res = ts
        .client
        .post(format!("{}/async/jobs/{id}/retry", ts.url))
        .send()
        .await
        .expect("retry");
    assert_eq!(res.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`args`"),
        "{v}"
    );
    let job = ts.get_job(&id).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("ERROR"), Some(1))
    );
    let res = ts
        .client
        .post(format!("{}/async/jobs/{later}/retry", ts.url))
        .send()
        .await
        .expect("retry");
    assert_eq!(res.status(), reqwest::StatusCode::CONFLICT);
}
