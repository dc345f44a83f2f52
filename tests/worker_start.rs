//! Quick service jobs in bulk through a real server (HTTP on port 0): many of them end before the
//! store's writer gets to their start, and then their finish is recorded with the start
//! (`store/finish_slot.rs`, `worker/start.rs`). Whatever way each went, every job reads as if its
//! start and finish were written apart: QUEUED, STARTING, RUNNING, then its outcome, in order, in
//! both event streams; its result, error or log lines; and `/metrics` counts every start and
//! every outcome.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const RUNNERS: &str = r#"
[[runners]]
name = "quick"
kind = "service"
types = ["q.*"]
concurrency = 64
max_attempts = 1
"#;

const N_OK: usize = 300;
const N_LOG: usize = 50;
const N_FAIL: usize = 50;

/// Sum of the samples of metric `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Submits `items` in one `POST /async/jobs/batch`: the stored jobs' ids, in order.
async fn submit_batch(ts: &TestServer, items: Vec<Value>) -> Vec<String> {
    let (st, v) = ts
        .post("/async/jobs/batch", Some(&json!({"jobs": items})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["job_id"].as_str().expect("stored").to_string())
        .collect()
}

/// One start request per job, and fewer finish requests than jobs: each finish not recorded with
/// its start is a `finish` of its own (`store/finish_slot.rs`).
fn some_finishes_went_with_their_starts(text: &str, total: f64, what: &str) {
    let op = |name: &str| {
        metric(
            text,
            "runyard_store_operation_seconds_count",
            &[&format!("op=\"{name}\"")],
        )
    };
    let (starts, applies) = (op("apply_start"), op("finish"));
    assert_eq!(starts, total, "one start request per job");
    assert!(
        applies < total,
        "no finish was recorded with its start: {applies} finish requests for {total} {what}"
    );
    eprintln!("{total} {what}: {applies} finishes on their own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_jobs_in_bulk_keep_every_event_outcome_and_count() {
    let ts = TestServer::builder(RUNNERS)
        .service("q.ok", |ctx| async move { Ok(json!({"n": ctx.args["n"]})) })
        .service("q.log", |ctx| async move {
            ctx.log(format!("line of {}", ctx.args["n"]));
            Ok(Value::Null)
        })
        .service("q.fail", |_ctx| async {
            Err::<Value, _>("failed on purpose".into())
        })
        .start()
        .await;
    let before = ts.last_event_id().await;
    let mut items = Vec::new();
    for n in 0..N_OK {
        items.push(json!({"type": "q.ok", "args": {"n": n}}));
    }
    for n in 0..N_LOG {
        items.push(json!({"type": "q.log", "args": {"n": n}}));
    }
    for n in 0..N_FAIL {
        items.push(json!({"type": "q.fail", "args": {"n": n}}));
    }
    let ids = submit_batch(&ts, items).await;
    assert_eq!(ids.len(), N_OK + N_LOG + N_FAIL);

    // All terminal (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let jobs: HashMap<String, Value> = loop {
        let all = ts.list_all(&[("type", "q.*")], 500).await;
        if all.len() == ids.len() && all.iter().all(|j| is_terminal(&j["status"])) {
            break all
                .into_iter()
                .map(|j| (j["id"].as_str().expect("id").to_string(), j))
                .collect();
        }
        assert!(Instant::now() < deadline, "jobs not finished in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, id) in ids.iter().enumerate() {
        let j = &jobs[id];
        let (want, n) = match i {
            i if i < N_OK => ("SUCCESS", i),
            i if i < N_OK + N_LOG => ("SUCCESS", i - N_OK),
            i => ("ERROR", i - N_OK - N_LOG),
        };
        assert_eq!(status_of(j), want, "{j:#}");
        assert!(
            j["started_at"].is_string() && j["finished_at"].is_string(),
            "{j:#}"
        );
        assert!(
            time_of(&j["started_at"]) <= time_of(&j["finished_at"]),
            "started before it finished: {j:#}"
        );
        if i < N_OK {
            assert_eq!(j["result"], json!({"n": n}), "{j:#}");
        } else if i >= N_OK + N_LOG {
            assert!(
                j["error"].to_string().contains("failed on purpose"),
                "{j:#}"
            );
        }
    }
    // Every log line was stored, and before its job's SUCCESS was committed (the job is only
    // recorded with its start when nothing it reported waits to be stored).
    for (k, id) in ids[N_OK..N_OK + N_LOG].iter().enumerate() {
        let (st, v) = ts.get(&format!("/async/jobs/{id}/logs")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let lines: Vec<&str> = v["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["line"].as_str())
            .collect();
        assert_eq!(lines, [format!("line of {k}")], "{v}");
    }

    // Every job's events, in order: QUEUED, STARTING, RUNNING, its outcome.
    let events = ts.all_events(&before).await;
    let mut by_job: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &events {
        if e["type"] == "status" {
            by_job
                .entry(e["job_id"].as_str().expect("job id"))
                .or_default()
                .push(e["runyard_status"].as_str().expect("status"));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let end = if i < N_OK + N_LOG { "SUCCESS" } else { "ERROR" };
        assert_eq!(
            by_job.get(id.as_str()).map(Vec::as_slice),
            Some(&["QUEUED", "STARTING", "RUNNING", end][..]),
            "job {id}"
        );
    }
    // The job's own channel has them too.
    let ch = jobs[&ids[0]]["channel_id"].as_str().expect("channel_id");
    let evs = ts.events_page(&format!("channel={ch}")).await;
    let st: Vec<&str> = evs
        .iter()
        .filter_map(|e| e["runyard_status"].as_str())
        .collect();
    assert_eq!(st, ["QUEUED", "STARTING", "RUNNING", "SUCCESS"]);

    // Every start and every outcome counted, however they were written.
    let (st, _) = ts.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    let text = ts.metrics_text().await;
    let total = ids.len() as f64;
    assert_eq!(
        metric(
            &text,
            "runyard_job_transitions_total",
            &["status=\"RUNNING\""]
        ),
        total,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "runyard_job_outcomes_total",
            &["outcome=\"success\""]
        ),
        (N_OK + N_LOG) as f64
    );
    assert_eq!(
        metric(&text, "runyard_job_outcomes_total", &["outcome=\"error\""]),
        N_FAIL as f64
    );
    // With 400 jobs and 64 at a time the writer is behind at least once, so some finishes went
    // with their starts.
    some_finishes_went_with_their_starts(&text, total, "jobs");
}

/// Quick local jobs (child processes) in bulk: most exit before the store's writer gets to their
/// start, and their finish then goes with it (the process runner's `wait` may be dropped and
/// called again: `runners/src/local.rs`). Every job still reads as if written apart: its four
/// status events in order, its exit code, its log line stored before its outcome, its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_local_jobs_in_bulk_keep_every_event_outcome_and_log() {
    const N: usize = 240;
    // Every third job fails with code 3, every third other one prints a line first.
    let script = r#"case "$JOB_ARGS" in *fail*) exit 3;; *log*) echo "line of $JOB_ID";; esac"#;
    let ts = TestServer::start(&quick_local_runner(script, 16)).await;
    let kind = |i: usize| match i % 3 {
        0 => "fail",
        1 => "log",
        _ => "ok",
    };
    let before = ts.last_event_id().await;
    let items: Vec<Value> = (0..N)
        .map(|i| json!({"type": "ql.job", "args": {"k": kind(i)}}))
        .collect();
    let ids = submit_batch(&ts, items).await;
    assert_eq!(ids.len(), N);
    for (i, id) in ids.iter().enumerate() {
        let j = ts.wait_terminal(id, Duration::from_secs(60)).await;
        let runs = j["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{j:#}");
        assert!(
            time_of(&j["started_at"]) <= time_of(&j["finished_at"]),
            "started before it finished: {j:#}"
        );
        if kind(i) == "fail" {
            assert_eq!(status_of(&j), "ERROR", "{j:#}");
            assert_eq!(j["exit_code"], 3, "{j:#}");
            assert_eq!(runs[0]["outcome"], "ERROR", "{j:#}");
        } else {
            assert_eq!(status_of(&j), "SUCCESS", "{j:#}");
            assert_eq!(runs[0]["outcome"], "SUCCESS", "{j:#}");
        }
        if kind(i) == "log" {
            let (st, v) = ts.get(&format!("/async/jobs/{id}/logs")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let lines: Vec<&str> = v["lines"]
                .as_array()
                .expect("lines")
                .iter()
                .filter_map(|l| l["line"].as_str())
                .collect();
            assert_eq!(lines, [format!("line of {id}")], "{v}");
        }
    }
    // Every job's status events, in order.
    let by_job = statuses_by_job(&ts, &before).await;
    for (i, id) in ids.iter().enumerate() {
        let end = if kind(i) == "fail" {
            "ERROR"
        } else {
            "SUCCESS"
        };
        assert_eq!(
            by_job.get(id).map(Vec::as_slice),
            Some(&["QUEUED", "STARTING", "RUNNING", end].map(String::from)[..]),
            "job {id}"
        );
    }
    let text = ts.metrics_text().await;
    let total = N as f64;
    assert_eq!(
        metric(
            &text,
            "runyard_job_transitions_total",
            &["status=\"RUNNING\""]
        ),
        total,
        "{text}"
    );
    // 16 processes at a time keep the writer behind at least once.
    some_finishes_went_with_their_starts(&text, total, "local jobs");
}

/// A local job whose process ends within `worker.quick_exit_wait` of its start has its start and
/// its outcome written in one store change (`worker/start.rs`): the worker waits that long for
/// the exit before it asks for the start, instead of racing the store's writer (which usually
/// won). With a wait far longer than `/bin/sh -c 'exit N'` takes, every finish goes with its
/// start, and every job still reads as started, then ended: its four status events in order, its
/// exit code, one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_job_ending_within_the_quick_exit_wait_is_started_and_finished_in_one_write() {
    const N: usize = 40;
    // Every fourth job fails with code 3: its outcome goes with its start too.
    let script = r#"case "$JOB_ARGS" in *fail*) exit 3;; esac"#;
    let ts = TestServer::builder(&quick_local_runner(script, 4))
        .config("[worker]\nquick_exit_wait = \"60s\"")
        .start()
        .await;
    let before = ts.last_event_id().await;
    let fails = |i: usize| i.is_multiple_of(4);
    let items: Vec<Value> = (0..N)
        .map(|i| json!({"type": "ql.job", "args": {"k": if fails(i) { "fail" } else { "ok" }}}))
        .collect();
    let ids = submit_batch(&ts, items).await;
    assert_eq!(ids.len(), N);
    for (i, id) in ids.iter().enumerate() {
        let j = ts.wait_terminal(id, Duration::from_secs(60)).await;
        let (end, code) = if fails(i) {
            ("ERROR", json!(3))
        } else {
            ("SUCCESS", Value::Null)
        };
        assert_eq!(status_of(&j), end, "{j:#}");
        if fails(i) {
            assert_eq!(j["exit_code"], code, "{j:#}");
        }
        let runs = j["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{j:#}");
        assert_eq!(runs[0]["outcome"], end, "{j:#}");
        assert!(
            time_of(&j["started_at"]) <= time_of(&j["finished_at"]),
            "started before it finished: {j:#}"
        );
    }
    let by_job = statuses_by_job(&ts, &before).await;
    for (i, id) in ids.iter().enumerate() {
        let end = if fails(i) { "ERROR" } else { "SUCCESS" };
        assert_eq!(
            by_job.get(id).map(Vec::as_slice),
            Some(&["QUEUED", "STARTING", "RUNNING", end].map(String::from)[..]),
            "job {id}"
        );
    }
    let text = ts.metrics_text().await;
    let op = |name: &str| {
        metric(
            &text,
            "runyard_store_operation_seconds_count",
            &[&format!("op=\"{name}\"")],
        )
    };
    assert_eq!(op("apply_start"), N as f64, "one start request per job");
    assert_eq!(
        op("finish"),
        0.0,
        "every finish went with its start: no finish request of its own"
    );
}

/// One producer, one job at a time (`runyard bench --connections 1`): the worker waits parked
/// between jobs and each submit claims its job for it in the submit's own transaction
/// (`store/handoff.rs`), instead of a claim request per job. Every job still reads as claimed:
/// its events in order, one run by the worker, and the claim counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_at_a_time_is_handed_to_the_waiting_worker() {
    const N: usize = 24;
    // No claims on a timer during the test: each one counted is the worker's own decision.
    let ts = TestServer::builder(RUNNERS)
        .config("[worker]\npoll_interval = \"1h\"")
        .service("q.ok", |ctx| async move { Ok(json!({"n": ctx.args["n"]})) })
        .start()
        .await;
    let before = ts.last_event_id().await;
    let mut ids = Vec::new();
    for n in 0..N {
        let id = ts
            .submit_ok(json!({"type": "q.ok", "args": {"n": n}}))
            .await;
        let j = ts.wait_terminal(&id, WAIT).await;
        assert_eq!(status_of(&j), "SUCCESS", "{j:#}");
        assert_eq!(j["result"], json!({"n": n}), "{j:#}");
        ids.push(id);
    }
    // (The fencing tokens are not shown by the API: `store/sqlite/handoff_tests.rs` checks them.)
    for id in &ids {
        let j = ts.get_job(id).await;
        let runs = j["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{j:#}");
        assert_eq!(runs[0]["attempt"], 1, "{j:#}");
        assert_eq!(runs[0]["outcome"], "SUCCESS", "{j:#}");
        assert!(
            runs[0]["worker"].as_str().is_some_and(|w| !w.is_empty()),
            "{j:#}"
        );
    }
    let events = ts.all_events(&before).await;
    let mut by_job: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &events {
        if e["type"] == "status" {
            by_job
                .entry(e["job_id"].as_str().expect("job id"))
                .or_default()
                .push(e["runyard_status"].as_str().expect("status"));
        }
    }
    for id in &ids {
        assert_eq!(
            by_job.get(id.as_str()).map(Vec::as_slice),
            Some(&["QUEUED", "STARTING", "RUNNING", "SUCCESS"][..]),
            "job {id}"
        );
    }
    let text = ts.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "runyard_job_transitions_total",
            &["status=\"STARTING\""]
        ),
        N as f64,
        "every hand-off counted as a claim"
    );
    let claims = metric(
        &text,
        "runyard_store_operation_seconds_count",
        &["op=\"claim\""],
    );
    // Without the hand-off every job is a claim of its own (woken by its QUEUED notice).
    assert!(
        claims <= (N / 4) as f64,
        "{claims} claim requests for {N} jobs one at a time"
    );
}

/// A job that comes QUEUED while the worker waits parked (a delayed job come due) is claimed into
/// the parked places (`JobQueue::claim_parked`), and the worker stays parked: no claim request of
/// its own, and the submits after it are still handed over (before, it left the park and
/// claimed, and the submits meanwhile were stored QUEUED for further claims: 76% of the jobs at
/// 32 in flight, docs/benchmarks.md "Session 27").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_while_the_worker_is_parked_is_claimed_into_its_places() {
    let ts = TestServer::builder(RUNNERS)
        .config("[worker]\npoll_interval = \"1h\"")
        .service("q.ok", |ctx| async move { Ok(json!({"n": ctx.args["n"]})) })
        .start()
        .await;
    // Idle: the worker's first round claimed nothing and it parked.
    let first = ts
        .submit_ok(json!({"type": "q.ok", "args": {"n": 0}}))
        .await;
    assert_eq!(status_of(&ts.wait_terminal(&first, WAIT).await), "SUCCESS");
    let count = |text: &str, op: &str| {
        metric(
            text,
            "runyard_store_operation_seconds_count",
            &[&format!("op=\"{op}\"")],
        )
    };
    let before = ts.metrics_text().await;
    let run_at = (chrono::Utc::now() + chrono::Duration::milliseconds(300))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let due = ts
        .submit_ok(json!({"type": "q.ok", "args": {"n": 1}, "run_at": run_at}))
        .await;
    let j = ts.wait_terminal(&due, WAIT).await;
    assert_eq!(status_of(&j), "SUCCESS", "{j:#}");
    for n in 2..8 {
        let id = ts
            .submit_ok(json!({"type": "q.ok", "args": {"n": n}}))
            .await;
        let j = ts.wait_terminal(&id, WAIT).await;
        assert_eq!(j["result"], json!({"n": n}), "{j:#}");
    }
    let after = ts.metrics_text().await;
    assert_eq!(
        count(&after, "claim") - count(&before, "claim"),
        0.0,
        "claim requests of the worker's own"
    );
    let into_places = count(&after, "claim_parked") - count(&before, "claim_parked");
    // The due job's; the six submits after it were handed over (one stored QUEUED would be
    // claimed into the places too: one request each).
    assert!(
        (1.0..=2.0).contains(&into_places),
        "{into_places} claims into the parked places"
    );
}

/// The `quick-local` runner (types `ql.*`): `/bin/sh -c script`, one attempt.
fn quick_local_runner(script: &str, concurrency: usize) -> String {
    format!(
        r#"
[[runners]]
name = "quick-local"
kind = "local"
types = ["ql.*"]
command = ["/bin/sh", "-c", {}]
env_allow = ["PATH"]
concurrency = {concurrency}
max_attempts = 1
"#,
        serde_json::to_string(script).expect("toml string")
    )
}

/// Every job's status events since `before`, in order, by job id.
async fn statuses_by_job(ts: &TestServer, before: &str) -> HashMap<String, Vec<String>> {
    let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
    for e in ts.all_events(before).await {
        if e["type"] == "status" {
            by_job
                .entry(e["job_id"].as_str().expect("job id").to_string())
                .or_default()
                .push(e["runyard_status"].as_str().expect("status").to_string());
        }
    }
    by_job
}

/// A batch of ten times more jobs than the worker has slots, with a poll interval of an hour: the
/// jobs its free slots hold are handed over in the batch's own transaction, the rest are QUEUED,
/// and each slot that frees takes the next of them, so every job ends without the poll (a worker
/// that stayed parked through job ends while jobs were QUEUED waited for it: issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_slots_ends_without_waiting_for_the_poll_interval() {
    const SMALL: &str = r#"
[[runners]]
name = "small"
kind = "service"
types = ["s.*"]
concurrency = 4
max_attempts = 1
"#;
    let ts = TestServer::builder(SMALL)
        .config("[worker]\npoll_interval = \"1h\"")
        .service("s.ok", |ctx| async move { Ok(json!({"n": ctx.args["n"]})) })
        .start()
        .await;
    for round in 0..3 {
        let items: Vec<Value> = (0..40)
            .map(|n| json!({"type": "s.ok", "args": {"n": n}}))
            .collect();
        let ids = submit_batch(&ts, items).await;
        for (n, id) in ids.iter().enumerate() {
            let job = ts.wait_terminal(id, Duration::from_secs(60)).await;
            assert_eq!(status_of(&job), "SUCCESS", "round {round}, job {n}: {job}");
            assert_eq!(job["result"]["n"], json!(n), "{job}");
        }
    }
}
