//! Jobs run on the local and service runners over real HTTP: success with logs and results,
//! failing processes, cancel and timeout stopping the work, retries with backoff, and
//! concurrency limits.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

/// runyard's built-in operations (`runyard.noop`, `runyard.echo`, ...) on a service runner.
const BUILTINS: &str = r#"
[[runners]]
name = "builtins"
kind = "service"
types = ["runyard.*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_service_jobs_succeed_with_logs_and_results() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let ts = TestServer::builder(&format!(
        r#"
[[runners]]
name = "sh"
kind = "local"
types = ["local.*"]
command = ["/bin/sh", "-c", "echo hello from $JOB_TYPE; echo attempt=$JOB_ATTEMPT; echo args=$JOB_ARGS; echo id=$JOB_ID"]

[[runners]]
kind = "service"
types = ["svc.*"]
{BUILTINS}"#
    ))
    .service("svc.gated", move |ctx| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(json!({"got": ctx.args, "attempt": ctx.attempt}))
        }
    })
    .start()
    .await;

    // The local job: its stdout lines become the job's logs.
    let local = ts
        .submit_ok(json!({"type": "local.greet", "args": {"n": 1}}))
        .await;
    let job = ts.wait_terminal(&local, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["runner"], "sh");
    let (st, logs) = ts.get(&format!("/async/jobs/{local}/logs")).await;
    assert_eq!(st, StatusCode::OK, "{logs}");
    assert_eq!(logs["status"], "SUCCESS");
    let lines = logs["lines"].as_array().expect("lines");
    let texts: Vec<&str> = lines.iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec![
            "hello from local.greet".to_string(),
            "attempt=1".to_string(),
            r#"args={"n":1}"#.to_string(),
            format!("id={local}"),
        ],
        "{logs:#}"
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], json!(i as u64 + 1), "{l}");
        assert_eq!(l["stream"], "stdout", "{l}");
        assert!(l["ts"].as_i64().is_some_and(|t| t > 0), "{l}");
    }
    assert_eq!(logs["next"], json!(lines.len()));
    // `after` is exclusive: nothing after the last line.
    let (_, rest) = ts
        .get(&format!("/async/jobs/{local}/logs?after={}", lines.len()))
        .await;
    assert_eq!(rest["lines"], json!([]), "{rest}");
    let (st, res) = ts.get(&format!("/async/jobs/{local}/result")).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["status"], "SUCCESS");

    // The service job: its result is readable once it is finished, 409 before.
    let (st, sub) = ts
        .submit(json!({"type": "svc.gated", "args": {"x": [1, 2]}}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let svc = sub["job_id"].as_str().unwrap().to_string();
    assert_eq!(sub["result_url"], format!("/async/jobs/{svc}/result"));
    assert_eq!(sub["status"], "QUEUED");
    let (st, early) = ts.get(&format!("/async/jobs/{svc}/result")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{early}");
    error_of(&early);
    ts.wait_status(&svc, "RUNNING", WAIT).await;
    let (st, early) = ts.get(&format!("/async/jobs/{svc}/result")).await;
    assert_eq!(st, StatusCode::CONFLICT, "result of a running job: {early}");
    gate.add_permits(1);
    let job = ts.wait_terminal(&svc, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["progress"], json!(1.0));
    let (st, res) = ts.get(&format!("/async/jobs/{svc}/result")).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(
        res,
        json!({
            "job_id": svc,
            "status": "SUCCESS",
            "result": {"got": {"x": [1, 2]}, "attempt": 1},
            "error": null,
            "exit_code": null,
        })
    );

    // A built-in.
    let echo = ts
        .submit_ok(json!({"type": "runyard.echo", "args": {"hi": "there"}}))
        .await;
    let job = ts.wait_terminal(&echo, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"hi": "there"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_process_ends_in_error_with_its_exit_code() {
    let ts = TestServer::start(
        r#"
[[runners]]
kind = "local"
types = ["fail.*"]
command = ["/bin/sh", "-c", "echo about to fail; echo bad thing >&2; exit 3"]
"#,
    )
    .await;
    let id = ts
        .submit_ok(json!({"type": "fail.now", "max_attempts": 1}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["error"], "process exited with code 3");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["runs"].as_array().unwrap().len(), 1, "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "ERROR");
    let (st, res) = ts.get(&format!("/async/jobs/{id}/result")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(res["status"], "ERROR");
    assert_eq!(res["exit_code"], 3);
    assert_eq!(res["error"], "process exited with code 3");
    assert_eq!(res["result"], Value::Null);
    let (_, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    let lines: Vec<(String, String)> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "about to fail".into())),
        "{logs:#}"
    );
    assert!(
        lines.contains(&("stderr".into(), "bad thing".into())),
        "{logs:#}"
    );
}

/// Reads the pids a job wrote to its pid file: exactly `n` of them.
async fn read_pids(path: &std::path::Path, n: usize) -> Vec<u32> {
    eventually("the job wrote its pids", WAIT, || async {
        let text = std::fs::read_to_string(path).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() == n).then_some(pids)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_process_tree_and_a_terminal_job_cannot_be_cancelled() {
    let ts = TestServer::start(
        r#"
[[runners]]
kind = "local"
types = ["tree.*"]
command = ["/bin/sh", "-c", "sleep 300 & echo $! > \"$PIDFILE.tmp\"; echo $$ >> \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; echo ready; wait"]
env = { PIDFILE = "@DIR@/tree.pids" }

[[runners]]
kind = "local"
types = ["quick"]
command = ["/bin/sh", "-c", "exit 0"]
"#,
    )
    .await;
    let id = ts.submit_ok(json!({"type": "tree.sleep"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    let pids = read_pids(&ts.dir().join("tree.pids"), 2).await;
    for p in &pids {
        assert!(!pid_gone(*p), "pid {p} should be running before the cancel");
    }
    let (st, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCELLED", "{body}");
    wait_pids_gone(&pids, WAIT).await;
    // The worker lets go of the job once its tree is stopped (`worker` null: a retry may start).
    let job = eventually("the worker let go of the cancelled job", WAIT, || async {
        let job = ts.get_job(&id).await;
        job["worker"].is_null().then_some(job)
    })
    .await;
    assert_eq!(status_of(&job), "CANCELLED", "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "CANCELLED", "{job:#}");

    // A terminal job: 409, and neither the job nor the event stream changes.
    let before = ts.get_job(&id).await;
    let events_before = ts.last_event_id().await;
    let (st, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    error_of(&body);
    assert_eq!(ts.get_job(&id).await, before);
    assert_eq!(ts.last_event_id().await, events_before);

    // The same for a job that succeeded.
    let ok = ts.submit_ok(json!({"type": "quick"})).await;
    let done = ts.wait_terminal(&ok, WAIT).await;
    assert_eq!(status_of(&done), "SUCCESS", "{done:#}");
    let events_before = ts.last_event_id().await;
    let (st, body) = ts.post(&format!("/async/jobs/{ok}/cancel"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(ts.get_job(&ok).await, done);
    assert_eq!(ts.last_event_id().await, events_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_cancel_never_runs_beside_the_attempt_being_stopped() {
    // Attempt 1 takes 3 s to clean up after SIGTERM. The lease (30 s) outlives the test's
    // waits: the retry is accepted because the worker said attempt 1 stopped, not because its
    // lease ran out.
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "local"
types = ["slow.stop"]
command = ["/bin/sh", "-c", "t=$TRACE; trap 'echo stopping $JOB_ATTEMPT >> $t; sleep 3; echo stopped $JOB_ATTEMPT >> $t; exit 143' TERM; echo started $JOB_ATTEMPT >> $t; if [ $JOB_ATTEMPT = 1 ]; then while :; do sleep 0.05; done; fi; sleep 1; echo done $JOB_ATTEMPT >> $t"]
env = { TRACE = "@DIR@/trace" }
"#,
    )
    .config("[worker]\nlease_ttl = \"30s\"\nkill_grace = \"4s\"")
    .start()
    .await;
    let trace = ts.dir().join("trace");
    let lines = || std::fs::read_to_string(&trace).unwrap_or_default();
    let id = ts.submit_ok(json!({"type": "slow.stop"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    eventually("attempt 1 started", WAIT, || async {
        lines().contains("started 1").then_some(())
    })
    .await;
    let (st, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Attempt 1 is still cleaning up: the retry is refused, and changes nothing.
    let (st, body) = ts.post(&format!("/async/jobs/{id}/retry"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(error_of(&body).1.contains("still being stopped"), "{body}");
    assert_eq!(status_of(&ts.get_job(&id).await), "CANCELLED");
    // Accepted once its process has ended.
    let retried = eventually("the retry accepted", WAIT, || async {
        let (st, body) = ts.post(&format!("/async/jobs/{id}/retry"), None).await;
        (st == StatusCode::ACCEPTED).then_some(body)
    })
    .await;
    assert_eq!(retried["status"], "QUEUED", "{retried}");
    let job = ts.wait_terminal(&id, WAIT).await;
    // Attempt 2 ran to its end, after attempt 1 had stopped.
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    let t = lines();
    let at = |l: &str| t.find(l).unwrap_or_else(|| panic!("no `{l}` in:\n{t}"));
    assert!(at("stopped 1") < at("started 2"), "{t}");
    assert!(at("started 2") < at("done 2"), "{t}");
    assert!(!t.contains("stopping 2"), "attempt 2 was stopped:\n{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_a_process_and_a_service_that_ignores_cancellation() {
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (d, s) = (dropped.clone(), started.clone());
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "local"
types = ["slow.*"]
command = ["/bin/sh", "-c", "echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; exec sleep 30"]
env = { PIDFILE = "@DIR@/slow.pid" }

[[runners]]
kind = "service"
types = ["stubborn"]
"#,
    )
    .service("stubborn", move |_ctx| {
        let d = d.clone();
        s.store(true, Ordering::SeqCst);
        async move {
            // Ignores ctx.cancelled(): only dropping the future ends it.
            struct OnDrop(Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = OnDrop(d);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Value::Null)
        }
    })
    .start()
    .await;

    let id = ts
        .submit_ok(json!({"type": "slow.sleep", "timeout": "1s", "max_attempts": 1}))
        .await;
    let pid = read_pids(&ts.dir().join("slow.pid"), 1).await[0];
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert!(
        job["error"].as_str().unwrap_or("").contains("timed out"),
        "{job:#}"
    );
    assert_eq!(job["timeout_ms"], 1000);
    assert_eq!(job["runs"][0]["outcome"], "TIMEOUT");
    assert_eq!(job["handle"]["id"], pid.to_string(), "{job:#}");
    wait_pids_gone(&[pid], WAIT).await;

    let id = ts
        .submit_ok(json!({"type": "stubborn", "timeout": 1, "max_attempts": 1}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert!(started.load(Ordering::SeqCst));
    eventually("the stubborn operation was dropped", WAIT, || async {
        dropped.load(Ordering::SeqCst).then_some(())
    })
    .await;
}

/// A job whose time limit ran out cannot turn its TIMEOUT into a SUCCESS by reporting while it
/// is being stopped: `runyard launch` around a command that exits 0 on SIGTERM reports SUCCESS
/// then (it did before the time limit was marked in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_reports_success_while_stopped_for_its_timeout_ends_timeout() {
    let bin = env!("CARGO_BIN_EXE_runyard");
    let ts = TestServer::builder(&format!(
        r#"
[[runners]]
kind = "local"
types = ["graceful"]
command = [{bin:?}, "launch", "--", "/bin/sh", "-c", "trap 'touch \"$MARK\"; exit 0' TERM; sleep 30 & wait"]
env = {{ MARK = "@DIR@/term" }}
"#
    ))
    // Time enough for `launch` to report after its command ended.
    .config("[worker]\nkill_grace = \"10s\"")
    .start()
    .await;
    let id = ts
        .submit_ok(json!({"type": "graceful", "timeout": "1s", "max_attempts": 2}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert!(
        ts.dir().join("term").exists(),
        "the command was not stopped by SIGTERM: {job:#}"
    );
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert_eq!(job["error"], "timed out after 1s", "{job:#}");
    assert_eq!(job["attempt"], 1, "a timeout is not retried: {job:#}");
    assert_eq!(job["runs"][0]["outcome"], "TIMEOUT", "{job:#}");
    assert_eq!(job["runs"][0]["reported"], "TIMEOUT", "{job:#}");
    assert_eq!(job["result"], Value::Null, "{job:#}");
}

/// `runyard launch -- CMD` stopped by a signal (docker stop, a pod's eviction) reports ERROR
/// "stopped by a signal", as `launch OP` does, even when its command makes a clean exit 0 of the
/// SIGTERM it passes on; and that error is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_of_a_command_stopped_by_a_signal_reports_an_error_that_is_retried() {
    let bin = env!("CARGO_BIN_EXE_runyard");
    let ts = TestServer::builder(&format!(
        r#"
[[runners]]
kind = "local"
types = ["stoppable"]
command = [{bin:?}, "launch", "--", "/bin/sh", "-c", "test \"$JOB_ATTEMPT\" = 1 || exit 0; trap 'kill $! ; exit 0' TERM; echo ready; sleep 30 & wait"]
"#
    ))
    .config("[worker]\nkill_grace = \"10s\"")
    .start()
    .await;
    let id = ts
        .submit_ok(json!({"type": "stoppable", "max_attempts": 2, "backoff": {"initial_ms": 10, "jitter": false}}))
        .await;
    let pid = eventually("the command said it is ready", WAIT, || async {
        let (_, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
        let ready = logs.to_string().contains("ready");
        let job = ts.get_job(&id).await;
        ready
            .then(|| job["handle"]["id"].as_str()?.parse::<i32>().ok())
            .flatten()
    })
    .await;
    // SIGTERM to `runyard launch` itself (the local runner's process), as `docker stop` does.
    // Safety: a plain syscall on a process of this test's server.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "attempt 2 ran: {job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    let first = &job["runs"][0];
    assert_eq!(first["reported"], "ERROR", "{job:#}");
    // The first attempt's error, as its status event carries it.
    let events = ts.all_events("0").await;
    assert!(
        events.iter().any(|e| e["job_id"] == id.as_str()
            && e.to_string()
                .contains("stopped by a signal (command exited with code 0)")),
        "{events:#?}"
    );
    // Launch notes the signal as runyard's own, in the `job` stream; nothing of its own is among
    // the command's stdout and stderr lines.
    let (_, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    let lines = logs["lines"].as_array().expect("lines");
    assert!(
        lines.iter().any(|l| l["stream"] == "job"
            && l["line"]
                .as_str()
                .is_some_and(|t| t.starts_with("runyard launch: SIGTERM received"))),
        "{logs:#}"
    );
    for l in lines.iter().filter(|l| l["stream"] != "job") {
        let text = l["line"].as_str().unwrap_or_default();
        assert!(
            !text.contains("shutdown requested") && !text.contains("runyard launch"),
            "runyard's own line among the command's output: {logs:#}"
        );
    }
}

/// Out of time, a job whose process ignores SIGTERM is marked before it is stopped: from then
/// on its reports are refused (409), the lines it sends are kept, and it ends TIMEOUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_time_cannot_report_but_its_last_lines_are_kept() {
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "local"
types = ["deaf"]
command = ["/bin/sh", "-c", "trap '' TERM; sleep 30"]
"#,
    )
    .config("[worker]\nkill_grace = \"3s\"")
    .start()
    .await;
    let id = ts
        .submit_ok(json!({"type": "deaf", "timeout": "1s", "max_attempts": 1}))
        .await;
    let marked = ts
        .wait_for(&id, WAIT, |j| j["runs"][0]["reported"] == "TIMEOUT")
        .await;
    assert_eq!(status_of(&marked), "RUNNING", "{marked:#}");
    let master = &ts.running().app.master_key;
    let secret = runyard_hooks::derive_job_secret(master, &id, 1);
    let client = runyard_hooks::JobClient::new(id.clone(), secret, &format!("{}/async", ts.url))
        .expect("job client");
    let refused = client
        .success(Some(json!({"ok": 1})))
        .await
        .expect_err("a report after the time limit");
    assert!(refused.to_string().contains("time limit"), "{refused}");
    client
        .log(vec!["cleaning up after SIGTERM".into()])
        .await
        .expect("lines are kept");
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert_eq!(job["result"], Value::Null, "{job:#}");
    let (_, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    assert!(
        logs.to_string().contains("cleaning up after SIGTERM"),
        "{logs}"
    );
}

/// A runner whose `cwd` does not exist: the error names the directory, not the program (the OS
/// says "No such file or directory" for both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cwd_is_named_in_the_launch_error() {
    let ts = TestServer::start(
        r#"
[[runners]]
kind = "local"
types = ["nowhere"]
command = ["/bin/true"]
cwd = "@DIR@/no/such/dir"
"#,
    )
    .await;
    let id = ts
        .submit_ok(json!({"type": "nowhere", "max_attempts": 1}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    let error = job["error"].as_str().unwrap_or("");
    assert!(
        error.contains("`cwd`") && error.contains("no/such/dir"),
        "{error}"
    );
}

/// A runner whose program is missing (`ENOENT`) or not executable (`EACCES`): a configuration
/// error no retry can mend. The job ends ERROR at its first attempt, however many it has, its
/// error naming the program and the cause. (A forked start: the in-process server has no
/// spawner; tests/server_log.rs covers the spawner's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unexecutable_program_ends_the_job_at_once() {
    let ts = TestServer::start(
        r#"
[[runners]]
kind = "local"
types = ["absent"]
command = ["@DIR@/no-such-program", "arg"]

[[runners]]
kind = "local"
types = ["not_exec"]
command = ["@DIR@/plain-file"]
"#,
    )
    .await;
    std::fs::write(ts.dir().join("plain-file"), "#!/bin/sh\necho hi\n").expect("write");
    let backoff = json!({"initial_ms": 10, "max_ms": 10, "jitter": false});
    for (ty, program, cause) in [
        ("absent", "no-such-program", "No such file or directory"),
        ("not_exec", "plain-file", "Permission denied"),
    ] {
        let id = ts
            .submit_ok(json!({"type": ty, "max_attempts": 3, "backoff": backoff}))
            .await;
        let job = ts.wait_terminal(&id, WAIT).await;
        assert_eq!(status_of(&job), "ERROR", "{job:#}");
        assert_eq!(job["attempt"], 1, "not retried: {job:#}");
        assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
        let error = job["error"].as_str().unwrap_or("");
        assert!(
            error.contains(&format!("/{program}`")) && error.contains(cause),
            "the error names the program and the cause: {error}"
        );
        assert!(error.contains("not retried"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_their_backoff_and_stop_after_max_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["retry.*"]
"#,
    )
    .service("retry.third_time_lucky", |ctx| async move {
        if ctx.attempt < 3 {
            Err(format!("attempt {} failed", ctx.attempt).into())
        } else {
            Ok(json!({"attempt": ctx.attempt}))
        }
    })
    .service("retry.always_fails", move |ctx| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Err(format!("no luck on attempt {}", ctx.attempt).into()) }
    })
    .start()
    .await;

    let backoff = json!({"initial_ms": 200, "max_ms": 1000, "multiplier": 2.0, "jitter": false});
    let id = ts
        .submit_ok(json!({"type": "retry.third_time_lucky", "max_attempts": 3, "backoff": backoff}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 3);
    assert_eq!(job["result"], json!({"attempt": 3}));
    let runs = job["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{job:#}");
    let outcomes: Vec<&str> = runs
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ERROR", "ERROR", "SUCCESS"]);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["attempt"], json!(i + 1));
    }
    // The delay before each retry: initial, then initial * multiplier.
    for (i, want) in [(1, 200u64), (2, 400)] {
        let ended = time_of(&runs[i - 1]["ended_at"]);
        let claimed = time_of(&runs[i]["claimed_at"]);
        let g = gap(ended, claimed);
        assert!(
            g >= Duration::from_millis(want),
            "attempt {} was claimed {g:?} after attempt {i} ended; the backoff is {want}ms: {job:#}",
            i + 1
        );
    }

    let id = ts
        .submit_ok(json!({
            "type": "retry.always_fails",
            "max_attempts": 3,
            "backoff": {"initial_ms": 50, "max_ms": 50, "multiplier": 1.0, "jitter": false},
        }))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 3);
    assert_eq!(job["runs"].as_array().unwrap().len(), 3);
    assert_eq!(job["error"], "no luck on attempt 3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // An explicit retry runs it once more.
    let (st, body) = ts.post(&format!("/async/jobs/{id}/retry"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "QUEUED", "{body}");
    let job = ts
        .wait_for(&id, WAIT, |j| {
            j["attempt"] == 4 && is_terminal(&j["status"])
        })
        .await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["error"], "no luck on attempt 4");
    assert_eq!(job["runs"].as_array().unwrap().len(), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_never_runs_more_than_its_concurrency() {
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), max.clone());
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["conc.*"]
concurrency = 2
"#,
    )
    .service("conc.work", move |_ctx| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let here = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(here, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    })
    .start()
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            ts.submit_ok(json!({"type": "conc.work", "args": {"i": i}}))
                .await,
        );
    }
    for id in &ids {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    }
    assert_eq!(now.load(Ordering::SeqCst), 0);
    assert_eq!(
        max.load(Ordering::SeqCst),
        2,
        "the most jobs seen running at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_timed_out_service_job_ends_and_frees_its_slot() {
    // One slot: if a stopped job kept it, nothing else would ever run on this runner.
    let ts = TestServer::start(
        r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
concurrency = 1
"#,
    )
    .await;
    let id = ts
        .submit_ok(json!({"type": "runyard.sleep", "args": {"ms": 60000}}))
        .await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    let (st, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    let next = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = ts.wait_terminal(&next, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(status_of(&ts.get_job(&id).await), "CANCELLED");

    // A cooperative operation past its timeout: TIMEOUT, and the slot is free again.
    let id = ts
        .submit_ok(json!({"type": "runyard.sleep", "args": {"ms": 60000}, "timeout": "1s", "max_attempts": 1}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert!(
        job["error"].as_str().unwrap_or("").contains("timed out"),
        "{job:#}"
    );
    let next = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = ts.wait_terminal(&next, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
}

/// A service function that returns a `RetryAfterError` is tried again after the delay it named,
/// not after the job's (much shorter) backoff, and the retry counts as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_function_can_say_when_to_retry() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["later.*"]
"#,
    )
    .service("later.rate_limited", move |_ctx| {
        let first = c.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                let e = runyard_runners::service::RetryAfterError::new(
                    "rate limited",
                    Duration::from_millis(1500),
                );
                return Err(e.into());
            }
            Ok(json!("done"))
        }
    })
    .start()
    .await;
    let backoff = json!({"initial_ms": 50, "max_ms": 50, "multiplier": 1.0, "jitter": false});
    let id = ts
        .submit_ok(json!({"type": "later.rate_limited", "max_attempts": 3, "backoff": backoff}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    let runs = job["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{job:#}");
    let waited = gap(
        time_of(&runs[0]["ended_at"]),
        time_of(&runs[1]["claimed_at"]),
    );
    assert!(
        waited >= Duration::from_millis(1400),
        "the second attempt came {waited:?} after the first, not after the 1.5 s asked for: {job:#}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A service function that returns an `AbortError` ends its job ERROR after one attempt, though
/// the job has three; the built-in `runyard.fail` does the same with `retry: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborting_service_function_is_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ts =
        TestServer::builder(&format!(
            r#"
[[runners]]
kind = "service"
types = ["abort.*"]
{BUILTINS}"#
        ))
        .service("abort.bad_input", move |_ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                Err(runyard_runners::service::AbortError::new("the input can never work").into())
            }
        })
        .start()
        .await;
    let backoff = json!({"initial_ms": 100, "max_ms": 100, "multiplier": 1.0, "jitter": false});
    let id = ts
        .submit_ok(json!({"type": "abort.bad_input", "max_attempts": 3, "backoff": backoff}))
        .await;
    let builtin = ts
        .submit_ok(
            json!({"type": "runyard.fail", "max_attempts": 3, "backoff": backoff,
                          "args": {"message": "final", "retry": false}}),
        )
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["error"], "the input can never work", "{job:#}");
    assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
    let b = ts.wait_terminal(&builtin, WAIT).await;
    assert_eq!(
        (status_of(&b), &b["attempt"]),
        ("ERROR", &json!(1)),
        "{b:#}"
    );
    // Well past the backoff: no second attempt was scheduled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = ts.get_job(&id).await;
    assert_eq!(
        (status_of(&later), &later["attempt"]),
        ("ERROR", &json!(1)),
        "{later:#}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Review 18: a docker runner with the default `large_args` refuses args too large for a
/// container's `JOB_ARGS` at submit (422 `invalid_request` naming `args`, before any engine is
/// asked: this one has none), nothing stored; set to `hook` it takes them; a service runner
/// takes its args in-process and has no such limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_too_large_for_a_containers_environment_are_refused_unless_the_runner_says_hook() {
    let ts = TestServer::builder(&format!(
        r#"
[[runners]]
name = "box"
kind = "docker"
types = ["box.*"]
image = "busybox:local"
docker_host = "unix:///nonexistent/docker.sock"

[[runners]]
name = "box-hook"
kind = "docker"
types = ["hookbox.*"]
image = "busybox:local"
docker_host = "unix:///nonexistent/docker.sock"
large_args = "hook"
max_attempts = 1
{BUILTINS}"#
    ))
    .start()
    .await;
    let big = json!({"x": "A".repeat(200_000 - 8)});
    let (st, v) = ts.submit(json!({"type": "box.run", "args": big})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    for part in [
        "`args`",
        "200000 bytes",
        "122880",
        "large_args = \"hook\"",
        "`box`",
    ] {
        assert!(m.contains(part), "`{part}` in {m}");
    }
    assert_eq!(ts.count_jobs(None).await, 0, "nothing stored");
    // Set to `hook`, the runner takes them (the launch then fails here: no engine).
    let (st, v) = ts.submit(json!({"type": "hookbox.run", "args": big})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    // In-process, no environment: no limit.
    let id = ts
        .submit_ok(json!({"type": "runyard.echo", "args": big}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{}", job["error"]);
    assert_eq!(job["result"]["x"].as_str().map(str::len), Some(200_000 - 8));
}

/// Jobs queued behind a runner whose one slot is busy: each starts when the one before it ends
/// (its finish claims the next, `store/handoff.rs` `Refill`), in the order they were submitted,
/// each runs once, and `/metrics` counts each claimed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_behind_a_busy_slot_run_in_order_each_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let order = dir.path().join("order");
    let ts = TestServer::start(&format!(
        r#"
[[runners]]
name = "one"
kind = "local"
types = ["line.*"]
concurrency = 1
command = ["/bin/sh", "-c", "sleep 0.2; echo $JOB_ID >> {}"]
"#,
        order.display()
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(ts.submit_ok(json!({"type": "line.up"})).await);
    }
    for id in &ids {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
        assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
    }
    let ran = std::fs::read_to_string(&order).expect("the jobs' lines");
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ids,
        "submit order, once each"
    );
    let text = ts.metrics_text().await;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        value(r#"runyard_job_queue_wait_seconds_count{type="line.up"}"#),
        6.0,
        "each job counted claimed once\n{text}"
    );
    // The five behind the first were claimed by the finishes before them, not each by a claim
    // of its own (the claim loop's rounds: at start, and once the queue is empty).
    let claims = value(r#"runyard_store_operation_seconds_count{op="claim"}"#);
    assert!(claims < 5.0, "{claims} claims\n{text}");
}
