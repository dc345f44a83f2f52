//! The client API over real HTTP: bad input gets its 4xx and changes nothing, idempotent submits,
//! listing with filters and a cursor, delayed jobs.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const BUILTINS: &str = r#"
[[runners]]
name = "builtins"
kind = "service"
types = ["runyard.*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_4xx_and_leave_the_store_unchanged() {
    let ts = TestServer::builder(BUILTINS)
        .config("[api]\nmax_body_bytes = 2048")
        .start()
        .await;
    // One finished job, so that "unchanged" has something to compare.
    let known = ts
        .submit_ok(json!({"type": "runyard.echo", "args": {"a": 1}}))
        .await;
    let known_job = ts.wait_terminal(&known, WAIT).await;
    assert_eq!(status_of(&known_job), "SUCCESS", "{known_job:#}");
    let jobs_before = ts.count_jobs(None).await;
    let events_before = ts.last_event_id().await;
    assert_eq!(jobs_before, 1);
    assert_ne!(events_before, "0");

    // Submits that must be refused, with the status and (when useful) what the message names.
    let cases: Vec<(&str, Value, StatusCode, Option<&str>)> = vec![
        (
            "unknown type",
            json!({"type": "nobody.handles.this"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("nobody.handles.this"),
        ),
        (
            "unknown field",
            json!({"type": "runyard.noop", "colour": "blue"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("colour"),
        ),
        (
            "missing type",
            json!({"args": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("type"),
        ),
        (
            "args not an object",
            json!({"type": "runyard.noop", "args": [1, 2]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("args"),
        ),
        (
            "args a string",
            json!({"type": "runyard.noop", "args": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("args"),
        ),
        (
            "max_attempts 0",
            json!({"type": "runyard.noop", "max_attempts": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("max_attempts"),
        ),
        (
            "bad timeout",
            json!({"type": "runyard.noop", "timeout": "soonish"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("timeout"),
        ),
        (
            "negative timeout",
            json!({"type": "runyard.noop", "timeout": -5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("timeout"),
        ),
        (
            "timeout under 1 ms (seconds)",
            json!({"type": "runyard.noop", "timeout": 0.0001}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("timeout"),
        ),
        (
            "timeout under 1 ms (text)",
            json!({"type": "runyard.noop", "timeout": "0.5ms"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("timeout"),
        ),
        (
            "partial backoff, bad multiplier",
            json!({"type": "runyard.noop", "backoff": {"multiplier": 0.5}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("multiplier"),
        ),
        (
            "backoff, unknown field",
            json!({"type": "runyard.noop", "backoff": {"initial": 5}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("initial"),
        ),
        (
            "bad run_at",
            json!({"type": "runyard.noop", "run_at": "tomorrow"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("run_at"),
        ),
        (
            "bad backoff",
            json!({"type": "runyard.noop", "backoff": {"initial_ms": 10, "max_ms": 5, "multiplier": 2.0, "jitter": false}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("backoff"),
        ),
        (
            "bad type name",
            json!({"type": "has spaces"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("type"),
        ),
    ];
    for (what, body, want, names) in cases {
        let (st, v) = ts.submit(body.clone()).await;
        assert_eq!(st, want, "{what}: {body} -> {v}");
        let (code, message) = error_of(&v);
        assert!(!code.is_empty(), "{what}: {v}");
        if let Some(n) = names {
            assert!(
                message.contains(n),
                "{what}: message should name `{n}`: {v}"
            );
        }
    }
    let (_, v) = ts.submit(json!({"type": "nobody.handles.this"})).await;
    assert_eq!(error_of(&v).0, "unknown_type", "{v}");

    // Malformed JSON, an empty body, a body over the limit.
    let (st, v) = ts
        .post_raw("/async/jobs", r#"{"type": "runyard.noop""#)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    error_of(&v);
    let (st, v) = ts.post_raw("/async/jobs", "not json at all").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = ts.post_raw("/async/jobs", "").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let big = json!({"type": "runyard.noop", "args": {"blob": "x".repeat(4000)}});
    let (st, v) = ts.submit(big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    error_of(&v);

    // Bad ids, unknown ids.
    for path in [
        "/async/jobs/not-a-uuid",
        "/async/jobs/not-a-uuid/logs",
        "/async/jobs/not-a-uuid/result",
    ] {
        let (st, v) = ts.get(path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "GET {path}: {v}");
        error_of(&v);
    }
    for path in ["/async/jobs/123/cancel", "/async/jobs/123/retry"] {
        let (st, v) = ts.post(path, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "POST {path}: {v}");
        error_of(&v);
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    for path in [
        format!("/async/jobs/{unknown}"),
        format!("/async/jobs/{unknown}/logs"),
        format!("/async/jobs/{unknown}/result"),
    ] {
        let (st, v) = ts.get(&path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "GET {path}: {v}");
        error_of(&v);
    }
    for path in [
        format!("/async/jobs/{unknown}/cancel"),
        format!("/async/jobs/{unknown}/retry"),
    ] {
        let (st, v) = ts.post(&path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "POST {path}: {v}");
        error_of(&v);
    }
    // Retrying a job that succeeded is refused.
    let (st, v) = ts.post(&format!("/async/jobs/{known}/retry"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    // Bad list and event queries.
    for q in [
        "/async/jobs?status=FINISHED",
        "/async/jobs?limit=0",
        "/async/jobs?limit=abc",
        "/async/jobs?cursor=nope",
        "/async/jobs?colour=blue",
        "/api/v1/async_event/?last_id=abc",
        "/api/v1/async_event/?last_id=-3",
        "/api/v1/async_event/?channel=",
        "/api/v1/async_event/?channel=a%20b%2F..%00x",
        "/async/events/sse?channel=%2F",
    ] {
        let (st, v) = ts.get(q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "GET {q}: {v}");
        error_of(&v);
    }
    let long = format!("/async/events/sse?channel={}", "c".repeat(5000));
    let (st, v) = ts.get(&long).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a 5000-character channel: {v}");
    let (_, v) = ts.get("/async/jobs?status=FINISHED").await;
    assert!(error_of(&v).1.contains("FINISHED"), "{v}");

    // Nothing changed.
    assert_eq!(ts.count_jobs(None).await, jobs_before);
    assert_eq!(ts.last_event_id().await, events_before);
    assert_eq!(ts.get_job(&known).await, known_job);

    // And the API still accepts good work; a partial backoff takes the rest from the runner.
    let ok = ts
        .submit_ok(
            json!({"type": "runyard.noop", "timeout": "10s", "max_attempts": 1,
            "backoff": {"initial_ms": 50}}),
        )
        .await;
    let stored = ts
        .running()
        .app
        .store
        .get(ok.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        serde_json::to_value(stored.backoff).expect("json"),
        json!({"initial_ms": 50, "max_ms": 300000, "multiplier": 2.0, "jitter": true})
    );
    assert_eq!(status_of(&ts.wait_terminal(&ok, WAIT).await), "SUCCESS");
    assert_eq!(ts.count_jobs(None).await, jobs_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_job_and_one_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["idem.*"]
"#,
    )
    .service("idem.count", move |_ctx| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok(json!("counted")) }
    })
    .start()
    .await;
    let body = json!({"type": "idem.count", "idempotency_key": "order-42"});
    let first = ts.submit_ok(body.clone()).await;
    let second = ts.submit_ok(body.clone()).await;
    assert_eq!(first, second);
    // Concurrent submits with one key too.
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let client = ts.client.clone();
            let url = ts.at("/async/jobs");
            let body = json!({"type": "idem.count", "idempotency_key": "order-43"});
            tokio::spawn(async move {
                let res = client.post(url).json(&body).send().await.expect("submit");
                assert_eq!(res.status(), StatusCode::ACCEPTED);
                let v: Value = res.json().await.expect("json");
                v["job_id"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut other = Vec::new();
    for h in handles {
        other.push(h.await.expect("task"));
    }
    assert!(other.iter().all(|id| *id == other[0]), "{other:?}");
    assert_ne!(other[0], first);

    for id in [&first, &other[0]] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
        assert_eq!(job["attempt"], 1);
    }
    // Submitting again after it finished still gives the same job, and nothing runs.
    assert_eq!(ts.submit_ok(body).await, first);
    assert_eq!(ts.count_jobs(Some("idem.*")).await, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(status_of(&ts.get_job(&first).await), "SUCCESS");
}

/// `a.*` jobs succeed, `b.*` jobs fail with one attempt: the listing tests' two outcomes.
const NOOP_A_FAIL_B: &str = r#"
[[runners]]
kind = "service"
types = ["a.*"]
operation = "runyard.noop"

[[runners]]
kind = "service"
types = ["b.*"]
operation = "runyard.fail"
max_attempts = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_status_and_type_glob_and_pages_with_a_cursor() {
    let ts = TestServer::start(NOOP_A_FAIL_B).await;
    let mut submitted = Vec::new();
    for i in 0..8 {
        let t = if i % 3 == 2 { "b.broken" } else { "a.fine" };
        let id = ts.submit_ok(json!({"type": t, "args": {"i": i}})).await;
        submitted.push((id, t));
    }
    for (id, _) in &submitted {
        ts.wait_terminal(id, WAIT).await;
    }
    let newest_first = |t: Option<&str>| -> Vec<String> {
        submitted
            .iter()
            .rev()
            .filter(|(_, ty)| t.is_none_or(|t| t == *ty))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let ids = |jobs: &[Value]| -> Vec<String> {
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };

    // Everything, two at a time: each job exactly once, newest first.
    let all = ts.list_all(&[], 2).await;
    assert_eq!(ids(&all), newest_first(None));
    let (st, page) = ts.get("/async/jobs?limit=2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string(), "{page}");
    let (_, page) = ts.get("/async/jobs?limit=100").await;
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
    assert_eq!(page["jobs"].as_array().unwrap().len(), 8);

    // By type glob.
    let a = ts.list_all(&[("type", "a.*")], 2).await;
    assert_eq!(ids(&a), newest_first(Some("a.fine")));
    let b = ts.list_all(&[("type", "b.*")], 100).await;
    assert_eq!(ids(&b), newest_first(Some("b.broken")));
    assert!(ts.list_all(&[("type", "c.*")], 100).await.is_empty());

    // By status.
    let ok = ts.list_all(&[("status", "SUCCESS")], 2).await;
    assert_eq!(ids(&ok), newest_first(Some("a.fine")));
    assert!(ok.iter().all(|j| j["status"] == "SUCCESS"));
    let err = ts.list_all(&[("status", "ERROR")], 1).await;
    assert_eq!(ids(&err), newest_first(Some("b.broken")));
    assert!(ts.list_all(&[("status", "RUNNING")], 10).await.is_empty());
    // Both.
    let both = ts
        .list_all(&[("status", "ERROR"), ("type", "a.*")], 10)
        .await;
    assert!(both.is_empty(), "{both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_waits_for_its_run_at() {
    let ts = TestServer::start(BUILTINS).await;
    let run_at = SystemTime::now() + Duration::from_millis(1500);
    let run_at_text = humantime::format_rfc3339_millis(run_at).to_string();
    let (st, v) = ts
        .submit(json!({"type": "runyard.noop", "run_at": run_at_text}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "SCHEDULED", "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let job = ts.get_job(&id).await;
    assert_eq!(status_of(&job), "SCHEDULED", "{job:#}");
    let listed = ts.list_all(&[("status", "SCHEDULED")], 10).await;
    assert_eq!(listed.len(), 1);

    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    let run_at = time_of(&json!(run_at_text));
    let claimed = time_of(&job["runs"][0]["claimed_at"]);
    let started = time_of(&job["started_at"]);
    assert!(claimed >= run_at, "claimed before run_at: {job:#}");
    assert!(started >= run_at, "started before run_at: {job:#}");
    assert_eq!(job["runs"].as_array().unwrap().len(), 1);

    // A run_at in the past runs at once.
    let past = humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(60));
    let (st, v) = ts
        .submit(json!({"type": "runyard.noop", "run_at": past.to_string()}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "QUEUED", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_channel_time_text_dead_and_bad_values_name_their_field() {
    let ts = TestServer::start(NOOP_A_FAIL_B).await;
    let wanted = ts
        .submit_ok(json!({"type": "a.x", "channel": "orders", "args": {"customer": "ACME Corp"}}))
        .await;
    let failed = ts.submit_ok(json!({"type": "b.x", "args": {"n": 1}})).await;
    ts.wait_terminal(&failed, WAIT).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // Newer jobs that match none of the filters: the wanted one is past the first page.
    for i in 0..30 {
        ts.submit_ok(json!({"type": "a.noise", "args": {"i": i}}))
            .await;
    }
    let one = |jobs: Vec<Value>| -> Vec<String> {
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, page) = ts.get("/async/jobs?limit=5&channel=orders").await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(
        one(page["jobs"].as_array().unwrap().clone()),
        vec![wanted.clone()]
    );
    assert_eq!(
        one(ts.list_all(&[("text", "acme corp")], 5).await),
        vec![wanted.clone()]
    );
    assert_eq!(
        one(ts.list_all(&[("dead", "true")], 5).await),
        vec![failed.clone()]
    );
    let before = ts.list_all(&[("created_before", mid.as_str())], 5).await;
    assert_eq!(one(before), vec![failed.clone(), wanted.clone()]);
    let after = ts.list_all(&[("created_after", mid.as_str())], 7).await;
    assert_eq!(after.len(), 30);
    assert!(after.iter().all(|j| j["type"] == "a.noise"));

    // Bad values: 400 naming the field.
    for (query, field) in [
        ("status=DONE", "status"),
        ("channel=a%20b", "channel"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01T00:00:00Z", "created_before"),
        (
            "created_after=2026-12-02T00:00:00Z&created_before=2026-12-01T00:00:00Z",
            "created_after",
        ),
        ("text=", "text"),
        ("schedule=", "schedule"),
        ("runner=", "runner"),
        ("dead=maybe", "dead"),
        ("type=a.%5Bx%5D", "type"),
        ("type=a%5C.b", "type"),
        ("type=%ff", "UTF-8"),
        ("channel=caf%C3", "UTF-8"),
    ] {
        let (st, body) = ts.get(&format!("/async/jobs?{query}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{query}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field),
            "{query}: the message names `{field}`: {msg}"
        );
    }
}
