//! Jobs stored under a runner name that a config change gave to another runner, or to none
//! (docs/configuration.md, "Runner names"): a runner's default name is its place
//! (`local-0`, `local-1`), so swapping two `[[runners]]` blocks swaps what the names mean. A
//! job runs the command of the runner that claims its type under the config it is claimed with
//! (the claim guard, both stores), a job left under a name the config no longer has is moved
//! at start (embedded store), and a retry routes the job again as a submit would.

mod redis_support;
mod support;

use std::time::Duration;

use redis_support::TestRedis;
use reqwest::StatusCode;
use serde_json::json;
use support::*;

/// Two local runners, unnamed (`local-0`, `local-1`): `email.*` first, `billing.*` second.
const EMAIL_FIRST: &str = r#"
[[runners]]
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo SENDING MAIL for $JOB_TYPE"]

[[runners]]
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo CHARGING CARD for $JOB_TYPE"]
"#;

/// The same two blocks the other way round: `local-0` is now the billing runner.
const BILLING_FIRST: &str = r#"
[[runners]]
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo CHARGING CARD for $JOB_TYPE"]

[[runners]]
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo SENDING MAIL for $JOB_TYPE"]
"#;

/// The ids `GET /async/jobs?runner=RUNNER` lists (every page).
async fn listed_under(ts: &TestServer, runner: &str) -> Vec<String> {
    ts.list_all(&[("runner", runner)], 3)
        .await
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn lines(ts: &TestServer, id: &str) -> Vec<String> {
    ts.all_logs(id).await.into_iter().map(|(_, l)| l).collect()
}

/// Jobs submitted with no worker running, the blocks swapped, the server started again with
/// its worker: each job runs its own type's command, on the runner that claims it now.
async fn swapped_blocks(store: &str) {
    let mut ts = TestServer::builder(EMAIL_FIRST).config(store).start().await;
    ts.restart(false).await;
    let mail = ts.submit_ok(json!({"type": "email.welcome"})).await;
    let bill = ts.submit_ok(json!({"type": "billing.charge"})).await;
    assert_eq!(ts.get_job(&mail).await["runner"], "local-0");
    assert_eq!(ts.get_job(&bill).await["runner"], "local-1");
    ts.set_runners(BILLING_FIRST);
    ts.restart(true).await;
    for (id, want, runner) in [
        (&mail, "SENDING MAIL for email.welcome", "local-1"),
        (&bill, "CHARGING CARD for billing.charge", "local-0"),
    ] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
        assert_eq!(lines(&ts, id).await, vec![want.to_string()], "{job:#}");
        assert_eq!(job["runner"], runner, "{job:#}");
    }
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_runner_blocks_run_each_job_on_its_types_runner_embedded() {
    swapped_blocks("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_runner_blocks_run_each_job_on_its_types_runner_on_redis() {
    let r = TestRedis::start();
    swapped_blocks(&r.server_config("reroute-test-master-key-0123456789")).await;
}

/// A runner renamed (`mail` to `email`): its QUEUED job, and one waiting for its retry, run on
/// the new name after the restart (moved at start: no claim ever names `mail` again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_runners_queued_jobs_run_under_its_new_name() {
    let runner = |name: &str| {
        format!(
            r#"
[[runners]]
name = "{name}"
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo SENT $JOB_TYPE"]
"#
        )
    };
    let mut ts = TestServer::builder(&runner("mail")).start().await;
    ts.restart(false).await;
    let id = ts.submit_ok(json!({"type": "email.welcome"})).await;
    // Due after the restart: SCHEDULED under `mail` when the config changes.
    let at = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(4));
    let later = ts
        .submit_ok(json!({"type": "email.later", "run_at": at.to_string()}))
        .await;
    assert_eq!(status_of(&ts.get_job(&later).await), "SCHEDULED");
    assert_eq!(ts.get_job(&id).await["runner"], "mail");
    ts.set_runners(&runner("email"));
    ts.restart(true).await;
    for (id, want) in [(&id, "SENT email.welcome"), (&later, "SENT email.later")] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
        assert_eq!(job["runner"], "email", "{job:#}");
        assert_eq!(lines(&ts, id).await, vec![want.to_string()]);
    }
    ts.stop().await;
}

/// A job that failed under a runner the config no longer has: a retry runs it on the runner
/// that claims its type now; with none that does, `422 unknown_type` and nothing changed.
async fn retry_after_the_runner_is_gone(store: &str) {
    let failing = r#"
[[runners]]
name = "old"
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo OLD; exit 1"]
"#;
    let mut ts = TestServer::builder(failing).config(store).start().await;
    let id = ts
        .submit_ok(json!({"type": "email.welcome", "max_attempts": 1}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");

    // No runner claims `email.*`: refused as a submit is, the job as it was.
    ts.set_runners(
        r#"
[[runners]]
name = "other"
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo BILLING"]
"#,
    );
    ts.restart(true).await;
    let (st, body) = ts.post(&format!("/async/jobs/{id}/retry"), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body).0, "unknown_type", "{body}");
    let job = ts.get_job(&id).await;
    assert_eq!((status_of(&job), &job["runner"]), ("ERROR", &json!("old")));

    // A runner that claims it: the retry runs there.
    ts.set_runners(
        r#"
[[runners]]
name = "new"
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo NEW"]
"#,
    );
    ts.restart(true).await;
    let (st, body) = ts.post(&format!("/async/jobs/{id}/retry"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["runner"], "new", "{job:#}");
    assert_eq!(lines(&ts, &id).await, vec!["OLD", "NEW"]);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_routes_a_job_whose_runner_is_gone_embedded() {
    retry_after_the_runner_is_gone("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_routes_a_job_whose_runner_is_gone_on_redis() {
    let r = TestRedis::start();
    retry_after_the_runner_is_gone(&r.server_config("reroute-test-master-key-0123456789")).await;
}

/// A stored job whose type no runner claims any more is not run: parked at the start (runner
/// `(no runner)`, which no claim meets), and moved and run at a start with a runner for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_job_no_runner_claims_is_not_run() {
    let mut ts = TestServer::builder(EMAIL_FIRST).start().await;
    ts.restart(false).await;
    let id = ts.submit_ok(json!({"type": "email.welcome"})).await;
    let max_attempts = ts.get_job(&id).await["max_attempts"]
        .as_u64()
        .expect("max_attempts");
    // `local-0` is still there, for `billing.*` only; nothing claims `email.*`.
    ts.set_runners(
        r#"
[[runners]]
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo CHARGING CARD for $JOB_TYPE"]
"#,
    );
    ts.restart(true).await;
    // Parked by the start's pass: under a runner name no claim meets, its attempt untouched.
    let job = ts.get_job(&id).await;
    assert_eq!(job["status"], "QUEUED", "{job:#}");
    assert_eq!(job["runner"], "(no runner)", "{job:#}");
    assert_eq!(job["max_attempts"], max_attempts, "{job:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = ts.get_job(&id).await;
    assert_eq!(
        job["runner"], "(no runner)",
        "not claimed meanwhile: {job:#}"
    );
    assert!(
        job["runs"].as_array().is_none_or(|r| r.is_empty()),
        "{job:#}"
    );
    assert!(lines(&ts, &id).await.is_empty(), "nothing ran");
    // The parked jobs, found by their runner name (another job, not parked, is not listed).
    let other = ts.submit_ok(json!({"type": "billing.charge"})).await;
    assert_eq!(listed_under(&ts, "(no runner)").await, [id.as_str()]);
    assert_eq!(listed_under(&ts, "local-0").await, [other]);
    // A start with a runner for the type again: moved there, and run.
    ts.set_runners(EMAIL_FIRST);
    ts.restart(true).await;
    let job = ts.wait_status(&id, "SUCCESS", WAIT).await;
    assert_eq!(job["runner"], "local-0", "{job:#}");
    assert_eq!(lines(&ts, &id).await, ["SENDING MAIL for email.welcome"]);
    ts.stop().await;
}

/// On Redis (processes may run different runners: the start's pass moves parked jobs only),
/// the claim guard parks a claimed job no runner of the process claims, its attempt given back;
/// it stays parked through a start without a runner for its type, and the start of a process
/// with one moves it there, where it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_job_no_runner_claims_is_parked_on_redis() {
    let r = TestRedis::start();
    let store = r.server_config("reroute-test-master-key-0123456789");
    let mut ts = TestServer::builder(EMAIL_FIRST)
        .config(&store)
        .start()
        .await;
    ts.restart(false).await;
    let id = ts.submit_ok(json!({"type": "email.welcome"})).await;
    let max_attempts = ts.get_job(&id).await["max_attempts"]
        .as_u64()
        .expect("max_attempts");
    ts.set_runners(
        r#"
[[runners]]
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo CHARGING CARD for $JOB_TYPE"]
"#,
    );
    ts.restart(true).await;
    let deadline = std::time::Instant::now() + WAIT;
    let job = loop {
        let job = ts.get_job(&id).await;
        if job["runner"] == "(no runner)" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "not parked: {job:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "QUEUED", "{job:#}");
    assert_eq!(
        job["max_attempts"],
        max_attempts + 1,
        "the attempt given back: {job:#}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = ts.get_job(&id).await;
    assert_eq!(
        later["attempt"], job["attempt"],
        "not claimed again: {later:#}"
    );
    assert!(lines(&ts, &id).await.is_empty(), "nothing ran");
    assert_eq!(listed_under(&ts, "(no runner)").await, [id.as_str()]);
    // A start still without a runner for `email.*`: left parked.
    ts.restart(true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = ts.get_job(&id).await;
    assert_eq!(again["runner"], "(no runner)", "{again:#}");
    assert_eq!(again["attempt"], job["attempt"], "{again:#}");
    // A start with one: moved to it and run, without a cancel and retry.
    ts.set_runners(EMAIL_FIRST);
    ts.restart(true).await;
    let job = ts.wait_status(&id, "SUCCESS", WAIT).await;
    assert_eq!(job["runner"], "local-0", "{job:#}");
    assert_eq!(lines(&ts, &id).await, ["SENDING MAIL for email.welcome"]);
    ts.stop().await;
}

/// The runner `local-0` claiming `billing.*` only: jobs of `email.*` stored under it are parked
/// at their claim.
const BILLING_ONLY: &str = r#"
[[runners]]
kind = "local"
types = ["billing.*"]
command = ["/bin/sh", "-c", "echo CHARGING CARD for $JOB_TYPE"]
"#;

/// On Redis, more parked jobs than one page of the pass's reads (500 ids): the start of a
/// process with a runner for their type moves every one in its first pass (well before a
/// second one, 30 s later), and each runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parked_job_is_moved_past_one_page_on_redis() {
    let r = TestRedis::start();
    let store = r.server_config("reroute-test-master-key-0123456789");
    let mut ts = TestServer::builder(EMAIL_FIRST)
        .config(&store)
        .start()
        .await;
    ts.restart(false).await;
    let n = 620;
    let batch: Vec<_> = (0..n).map(|_| json!({"type": "email.welcome"})).collect();
    let (st, v) = ts
        .post("/async/jobs/batch", Some(&json!({"jobs": batch})))
        .await;
    assert!(st.is_success(), "{v}");
    ts.set_runners(BILLING_ONLY);
    ts.restart(true).await;
    let deadline = std::time::Instant::now() + WAIT * 3;
    while listed_under(&ts, "(no runner)").await.len() < n {
        assert!(std::time::Instant::now() < deadline, "not all parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ts.set_runners(EMAIL_FIRST);
    ts.restart(true).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let parked = listed_under(&ts, "(no runner)").await.len();
        if parked == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{parked} of {n} still parked after the first pass"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = std::time::Instant::now() + WAIT * 3;
    loop {
        let done = ts.list_all(&[("status", "SUCCESS")], 500).await.len();
        if done == n {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {n} ran; parked: {}",
            listed_under(&ts, "(no runner)").await.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(listed_under(&ts, "(no runner)").await.is_empty());
    for j in ts.list_all(&[("status", "SUCCESS")], 500).await {
        assert_eq!(j["runner"], "local-0", "{j:#}");
        // Parked at one claim; its run may have been given back first (a busy machine's lease),
        // never re-routed twice.
        let rerouted = j["runs"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["outcome"] == "REROUTED").count()
        });
        assert_eq!(rerouted, 1, "{j:#}");
    }
    ts.stop().await;
}

/// On Redis, a process already running with a runner for a parked job's type moves it there
/// (its pass runs every 30 s, not only at start), and it runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_with_a_runner_for_the_type_takes_a_parked_job_on_redis() {
    let r = TestRedis::start();
    let store = r.server_config("reroute-test-master-key-0123456789");
    // B: the only runner for `email.*`, named `mail`; it never claims `local-0`.
    let mut b = TestServer::builder(
        r#"
[[runners]]
name = "mail"
kind = "local"
types = ["email.*"]
command = ["/bin/sh", "-c", "echo MAIL RUNNER for $JOB_TYPE"]
"#,
    )
    .config(&store)
    .start()
    .await;
    // A: the job stored under `local-0` for `email.*`, then `local-0` made billing's: parked.
    let mut a = TestServer::builder(EMAIL_FIRST)
        .config(&store)
        .start()
        .await;
    a.restart(false).await;
    let id = a.submit_ok(json!({"type": "email.welcome"})).await;
    a.set_runners(BILLING_ONLY);
    a.restart(true).await;
    let job = b.wait_status(&id, "SUCCESS", Duration::from_secs(60)).await;
    assert_eq!(job["runner"], "mail", "{job:#}");
    assert_eq!(lines(&b, &id).await, ["MAIL RUNNER for email.welcome"]);
    let runs = job["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "parked once, then run: {job:#}");
    assert_eq!(runs[0]["outcome"], "REROUTED", "{job:#}");
    a.stop().await;
    b.stop().await;
}

/// On Redis, processes that disagree on a type do not pass a job between them for ever: B (no
/// worker, `local-0` claims `email.*`) moves a parked job to `local-0` once; A (`local-0` claims
/// `billing.*` only) parks it again at its claim; B does not move it again in its later passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_moves_a_parked_job_once_even_if_it_is_parked_again_on_redis() {
    let r = TestRedis::start();
    let store = r.server_config("reroute-test-master-key-0123456789");
    let mut b = TestServer::builder(EMAIL_FIRST)
        .config(&store)
        .start()
        .await;
    b.restart(false).await;
    let mut a = TestServer::builder(BILLING_ONLY)
        .config(&store)
        .start()
        .await;
    let id = b.submit_ok(json!({"type": "email.welcome"})).await;
    let rerouted = |job: &serde_json::Value| {
        job["runs"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["outcome"] == "REROUTED").count()
        })
    };
    // Parked by A's claim, moved by B's pass (at most 30 s later), parked again by A's claim.
    let job = b
        .wait_for(&id, Duration::from_secs(60), |j| {
            rerouted(j) == 2 && j["runner"] == "(no runner)"
        })
        .await;
    assert_eq!(job["status"], "QUEUED", "{job:#}");
    // Two more of B's passes: not moved again.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let later = b.get_job(&id).await;
    assert_eq!(rerouted(&later), 2, "{later:#}");
    assert_eq!(later["runner"], "(no runner)", "{later:#}");
    assert!(lines(&b, &id).await.is_empty(), "nothing ran");
    a.stop().await;
    b.stop().await;
}
