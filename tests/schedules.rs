//! Cron schedules through real components.
//!
//! - `api_embedded` / `api_redis`: create (201, same body 200, other body 409), replace, pause,
//!   resume, trigger, backfill, delete, and every refusal (bad cron, unknown zone, unknown policy
//!   words, a job type no runner claims...) naming its field with nothing stored; on each backend.
//! - `backfill_after_recreate_embedded` / `_redis`: a schedule deleted and created again at once
//!   under its name does not take the earlier one's jobs as its backfill's (refused, recorded as
//!   errors), whatever their type.
//! - `odd_cron_fields_are_refused_naming_the_field_and_its_range`: `*/90` in the minute field
//!   (and every step that leaves one value), `*/0`, `30-10`: 422 at `POST` and `PUT`, nothing
//!   stored or changed.
//! - `put_pause_state_embedded` / `_redis`: a `PUT` without `paused` keeps a paused schedule
//!   paused; `paused: false` resumes it without making up the paused period (`misfire: all`).
//! - `overlap_every_active_job_embedded` / `_redis`: `forbid` and `cancel_other` see every
//!   active job of the schedule, a trigger's job does not hide the clock fire's still running.
//! - `forbid_waits_for_a_cancelled_job_to_stop`: a cancelled job whose process ignores SIGTERM
//!   holds `forbid`'s fires back until `kill_grace` has ended it.
//! - `redis_cluster_fires_each_second_exactly_once`: a `*/1 * * * * *` schedule on two API and
//!   two worker processes sharing one Redis, two of them `kill -9`'d along the way: one job per
//!   fire time, no time missing.
//! - `embedded_restart_misfire_policies`: a `runyard serve` process `kill -9`'d for two fire
//!   times of `*/5 * * * * *`, then restarted: `skip`, `run_once`, `all` and `all` with a short
//!   catch-up window each make exactly the jobs they promise.
//! - `a_backlog_of_schedules_due_at_once_misses_none`: 1,500 `skip` schedules due in the same
//!   second all fire; the loop reaches the last ones late, and late is not missed.
//!
//! Every wait is bounded; processes are killed by pid when the test ends.

mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::{TestServer, WAIT};

const RUNNERS: &str = r#"
[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]
concurrency = 16

[[runners]]
name = "loc"
kind = "local"
types = ["loc.*"]
command = ["sleep", "2"]
concurrency = 8
"#;

/// A server on a fresh redis-server (kept alive by the first value), its store checked.
async fn redis_server() -> (TestRedis, TestServer) {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config(MASTER_KEY))
        .start()
        .await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    (r, ts)
}

fn err_of(v: &Value) -> (String, String) {
    (
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

async fn send(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, &url);
    if let Some(b) = body {
        r = r.json(b);
    }
    let res = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let st = res.status();
    let text = res.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every job, following cursors.
async fn all_jobs(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/async/jobs?limit=500");
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let (st, v) = send(c, reqwest::Method::GET, url, None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        out.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

fn secs(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .unwrap_or_else(|e| panic!("{rfc}: {e}"))
        .timestamp()
}

/// Fire times (whole seconds) of the jobs of schedule `name`, with how many jobs each has.
fn fires_of(jobs: &[Value], name: &str) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for j in jobs.iter().filter(|j| j["schedule"] == name) {
        let ft = j["fire_time"]
            .as_str()
            .expect("a scheduled job has fire_time");
        assert_eq!(
            j["idempotency_key"],
            format!("schedule:{name}:{ft}"),
            "the fire's idempotency key"
        );
        *m.entry(secs(ft)).or_insert(0) += 1;
    }
    m
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn sleep_until(t: f64) {
    let d = t - now_s();
    if d > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
    }
}

// ---------------------------------------------------------------- API, both backends

async fn api_suite(ts: &TestServer) {
    let c = &ts.client;
    let url = |p: &str| ts.at(p);
    let body = json!({
        "name": "nightly",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "job": {"type": "runyard.noop", "args": {"flow": "orders"}},
        "overlap": "forbid",
        "misfire": "run_once",
        "catchup_window": "2h",
        "jitter": "0s"
    });
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let next: Vec<&str> = v["next_fires"]
        .as_array()
        .expect("next_fires")
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 5, "{v}");
    for (a, b) in next.iter().zip(next.iter().skip(1)) {
        assert!(secs(a) < secs(b), "increasing: {next:?}");
        // Consecutive nights are 23, 24 or 25 hours apart (DST).
        assert!(
            (23 * 3600..=25 * 3600).contains(&(secs(b) - secs(a))),
            "{next:?}"
        );
    }
    for t in &next {
        let local = chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono_tz::Europe::Berlin);
        use chrono::Timelike;
        assert!(
            (local.hour(), local.minute()) == (2, 30) || (local.hour(), local.minute()) == (3, 0),
            "02:30 Berlin time (03:00 on a spring-forward night): {t} = {local}"
        );
    }
    assert_eq!(v["overlap"], "forbid");
    assert_eq!(v["paused"], false);

    // The same body again: 200, nothing new. Another body under the name: 409, unchanged.
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Spaces between the fields are not the body: the same schedule.
    let mut spaced = body.clone();
    spaced["cron"] = json!(" 30  2 *\t* * ");
    let (st, v) = ts.post("/async/schedules", Some(&spaced)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["cron"], "30 2 * * *");
    let mut other = body.clone();
    other["cron"] = json!("0 3 * * *");
    let (st, v) = ts.post("/async/schedules", Some(&other)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(err_of(&v).0, "schedule_exists");
    assert!(err_of(&v).1.contains("`name`"), "{v}");
    let (_, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(v["cron"], "30 2 * * *", "the 409 changed nothing");

    // PUT replaces.
    let (st, v) = send(
        c,
        reqwest::Method::PUT,
        url("/async/schedules/nightly"),
        Some(&other),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["cron"], "0 3 * * *");
    let (_, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(v["cron"], "0 3 * * *");

    // Refusals: 4xx naming the field, nothing stored.
    let base = json!({"name": "bad", "cron": "* * * * *", "job": {"type": "runyard.noop"}});
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"cron": "61 * * * *"}), "`cron`", "invalid_request"),
        (json!({"cron": "* * *"}), "`cron`", "invalid_request"),
        (json!({"cron": "0 0 30 2 *"}), "`cron`", "invalid_request"),
        (
            json!({"timezone": "Mars/Olympus"}),
            "`timezone`",
            "invalid_request",
        ),
        (
            json!({"overlap": "sometimes"}),
            "`overlap`",
            "invalid_request",
        ),
        (json!({"misfire": "never"}), "`misfire`", "invalid_request"),
        (
            json!({"catchup_window": "soon"}),
            "`catchup_window`",
            "invalid_request",
        ),
        (json!({"jitter": -1}), "`jitter`", "invalid_request"),
        (json!({"jitter": "2d"}), "`jitter`", "invalid_request"),
        (
            json!({"catchup_window": "500000000000y"}),
            "`catchup_window`",
            "invalid_request",
        ),
        (json!({"name": "no spaces!"}), "`name`", "invalid_request"),
        (json!({"name": ".."}), "`name`", "invalid_request"),
        (json!({"name": "."}), "`name`", "invalid_request"),
        (
            json!({"job": {"type": "nobody.claims"}}),
            "`job`",
            "unknown_type",
        ),
        (
            json!({"job": {"type": "runyard.noop", "args": 3}}),
            "`job`",
            "invalid_request",
        ),
        (
            json!({"job": {"type": "runyard.noop", "idempotency_key": "k"}}),
            "`job.idempotency_key`",
            "invalid_request",
        ),
        (json!({"job": "runyard.noop"}), "`job`", "invalid_request"),
    ];
    for (patch, field, code) in cases {
        let mut b = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            b[k] = val.clone();
        }
        let (st, v) = ts.post("/async/schedules", Some(&b)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b} -> {v}");
        let (c2, m) = err_of(&v);
        assert_eq!(c2, code, "{b} -> {v}");
        assert!(m.contains(field), "{b}: message should name {field}: {m}");
        let name = b["name"].as_str().unwrap();
        let (st, _) = ts
            .get(&format!("/async/schedules/{}", urlencode(name)))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{b} stored nothing");
    }
    let (st, v) = ts.post_raw("/async/schedules", "{\"name\": ").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = ts
        .post("/async/schedules", Some(&json!({"name": "x", "cron": "* * * * *", "job": {"type": "runyard.noop"}, "colour": "red"})))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "unknown field: {v}");
    assert!(err_of(&v).1.contains("colour"), "{v}");

    // Pause and resume.
    let (st, v) = ts.post("/async/schedules/nightly/pause", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["paused"], true);
    assert_eq!(v["next_fires"], json!([]));
    let (_, v) = ts.post("/async/schedules/nightly/resume", None).await;
    assert_eq!(v["paused"], false);
    assert_eq!(v["next_fires"].as_array().unwrap().len(), 5);

    // Trigger: one job now, carrying the schedule and its fire time.
    let (st, v) = ts.post("/async/schedules/nightly/trigger", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["job_id"].as_str().expect("job_id").to_string();
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(job["schedule"], "nightly");
    assert_eq!(job["args"], json!({"flow": "orders"}));
    let ft = job["fire_time"].as_str().unwrap().to_string();
    assert_eq!(job["idempotency_key"], format!("schedule:nightly:{ft}"));
    let (_, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(v["last_runs"][0]["job_id"], id.as_str(), "{v}");
    assert_eq!(v["last_runs"][0]["outcome"], "submitted");
    assert_eq!(v["counters"]["fires"], 1);

    // Backfill three past nights; again: the same three jobs, none new.
    let bf = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-03T23:00:00Z"});
    let (st, v) = ts
        .post("/async/schedules/nightly/backfill", Some(&bf))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let fires = v["fires"].as_array().unwrap().clone();
    assert_eq!(fires.len(), 3, "{v}");
    assert_eq!(fires[0]["fire_time"], "2026-01-01T02:00:00Z", "03:00 CET");
    assert!(fires.iter().all(|f| f["created"] == true));
    let (_, v2) = ts
        .post("/async/schedules/nightly/backfill", Some(&bf))
        .await;
    let again = v2["fires"].as_array().unwrap();
    assert_eq!(
        again
            .iter()
            .map(|f| f["job_id"].clone())
            .collect::<Vec<_>>(),
        fires
            .iter()
            .map(|f| f["job_id"].clone())
            .collect::<Vec<_>>(),
        "a fire time makes one job"
    );
    assert!(again.iter().all(|f| f["created"] == false));
    // Fired again, recorded and counted once: the trigger's and the three nights'.
    let (_, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(v["counters"]["fires"], 4, "{v}");
    let runs = v["last_runs"].as_array().unwrap();
    for f in &fires {
        let n = runs.iter().filter(|r| r["job_id"] == f["job_id"]).count();
        assert_eq!(n, 1, "one run entry for {}: {v}", f["job_id"]);
    }
    // A backfill of 1,000 nights: one job each, and the schedule's record written a few times
    // (one write per 100 fires, with their jobs submitted together), not once per fire.
    let writes = ts.store_calls("schedule_cas").await;
    let big = json!({"from": "2023-01-01T00:00:00Z", "to": "2025-09-26T12:00:00Z"});
    let (st, v) = ts
        .post("/async/schedules/nightly/backfill", Some(&big))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let many = v["fires"].as_array().unwrap();
    assert_eq!(many.len(), 1000, "one fire a night");
    assert!(many.iter().all(|f| f["created"] == true));
    let ids: std::collections::BTreeSet<&str> =
        many.iter().filter_map(|f| f["job_id"].as_str()).collect();
    assert_eq!(ids.len(), 1000, "a job per fire");
    let writes = ts.store_calls("schedule_cas").await - writes;
    assert!(
        (11..=15).contains(&writes),
        "the record written once for the decision and once per 100 fires, not per fire: {writes}"
    );
    let (_, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(v["counters"]["fires"], 1004, "{v}");
    assert!(v["pending"].as_array().is_none_or(|p| p.is_empty()), "{v}");
    let runs = v["last_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 20, "{v}");
    assert!(runs
        .iter()
        .all(|r| r["outcome"] == "submitted"
            && r["job_id"].as_str().is_some_and(|id| ids.contains(id))));
    let (st, v) = ts
        .post(
            "/async/schedules/nightly/backfill",
            Some(&json!({"from": "2026-01-03T00:00:00Z", "to": "2026-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(err_of(&v).1.contains("`to`"));
    // Before 1970 (job times count from it; the cron library finds nothing before year 2):
    // refused with the rule, no job.
    let newest = |v: Value| -> Vec<Value> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect()
    };
    let (_, before) = ts.get("/async/jobs?limit=10").await;
    for from in ["0000-01-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
        let (st, v) = ts
            .post(
                "/async/schedules/nightly/backfill",
                Some(&json!({"from": from, "to": "2026-01-01T00:00:00Z"})),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{from}: {v}");
        assert!(err_of(&v).1.contains("1970"), "{v}");
    }
    let (_, after) = ts.get("/async/jobs?limit=10").await;
    assert_eq!(
        newest(before),
        newest(after),
        "a refused backfill submits nothing"
    );

    // List, delete, gone.
    let (_, v) = ts.get("/async/schedules").await;
    let names: Vec<&str> = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["nightly"]);
    let (st, _) = send(
        c,
        reqwest::Method::DELETE,
        url("/async/schedules/nightly"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = ts.get("/async/schedules/nightly").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = ts.post("/async/schedules/nightly/trigger", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = ts.get("/async/schedules").await;
    assert_eq!(v["schedules"], json!([]));

    // Deleted and created again: a write of the first schedule (a tick, a pause or a trigger that
    // read it just before the delete) no longer matches, whatever its version.
    let body = json!({"name": "again", "cron": "0 3 * * *", "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // Its template's `args` absent, `null` or `{}` submit the same job: the same body (200);
    // other args are another body (409).
    for (args, want) in [
        (json!({}), StatusCode::OK),
        (json!(null), StatusCode::OK),
        (json!({"x": 1}), StatusCode::CONFLICT),
    ] {
        let mut again = body.clone();
        again["job"]["args"] = args.clone();
        let (st, v) = ts.post("/async/schedules", Some(&again)).await;
        assert_eq!(st, want, "args {args}: {v}");
    }
    let store = ts.running().app.store.clone();
    let old = store
        .schedule("again")
        .await
        .expect("read")
        .expect("stored");
    let (st, _) = send(
        c,
        reqwest::Method::DELETE,
        url("/async/schedules/again"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let body2 = json!({"name": "again", "cron": "0 4 * * *", "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&body2)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let mut stale = old.clone();
    stale.paused = true;
    stale.version = old.version + 1;
    assert!(!store
        .schedule_cas(&stale, Some(old.version))
        .await
        .expect("cas"));
    let (_, v) = ts.get("/async/schedules/again").await;
    assert_eq!(
        (v["cron"].as_str(), v["paused"].as_bool()),
        (Some("0 4 * * *"), Some(false)),
        "{v}"
    );
    let (st, _) = send(
        c,
        reqwest::Method::DELETE,
        url("/async/schedules/again"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20").replace('!', "%21")
}

/// A per-second schedule on a live server fires each second once.
async fn live_fires(ts: &TestServer) {
    let body = json!({"name": "tick", "cron": "*/1 * * * * *", "misfire": "all",
                      "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let start = now_s();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (st, _) = send(
        &ts.client,
        reqwest::Method::DELETE,
        ts.at("/async/schedules/tick"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let end = now_s();
    let fires = fires_of(&all_jobs(&ts.client, &ts.url).await, "tick");
    assert!(
        fires.values().all(|n| *n == 1),
        "one job per fire time: {fires:?}"
    );
    let first = *fires.keys().next().expect("fired");
    let last = *fires.keys().last().unwrap();
    assert_eq!(
        fires.len() as i64,
        last - first + 1,
        "no second missing: {fires:?}"
    );
    assert!(
        (first as f64) <= start + 2.0 && (last as f64) >= end - 2.0,
        "{start} {end} {fires:?}"
    );
}

/// `overlap = "forbid"` with a 2 s job every second: fires are skipped while a job runs, and no
/// two jobs of the schedule ever run at once.
async fn live_forbid(ts: &TestServer) {
    let body = json!({"name": "slow", "cron": "*/1 * * * * *", "overlap": "forbid",
                      "job": {"type": "loc.sleep"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, v) = ts.post("/async/schedules/slow/pause", None).await;
    assert!(
        v["counters"]["skipped_overlaps"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert!(
        v["last_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "skipped_overlap"),
        "{v}"
    );
    let jobs: Vec<Value> = all_jobs(&ts.client, &ts.url)
        .await
        .into_iter()
        .filter(|j| j["schedule"] == "slow")
        .collect();
    assert!(
        (2..=5).contains(&jobs.len()),
        "a 2 s job every second, forbidden to overlap: {} jobs",
        jobs.len()
    );
    let mut spans = Vec::new();
    for j in &jobs {
        let j = ts.wait_terminal(j["id"].as_str().unwrap(), WAIT).await;
        assert_eq!(j["status"], "SUCCESS", "{j}");
        let t = |k: &str| chrono::DateTime::parse_from_rfc3339(j[k].as_str().unwrap()).unwrap();
        spans.push((t("created_at"), t("finished_at")));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "two jobs of a forbid schedule overlapped: {spans:?}"
        );
    }
}

/// A `PUT` that leaves `paused` out keeps the schedule paused (a deploy tool re-sending the
/// body with a changed `job.args`); one saying `paused: false` resumes it as `.../resume` does:
/// with `misfire: all` and a 1 h window, the seconds it was paused are still not made up; one
/// saying `paused: true` pauses it.
async fn put_keeps_or_sets_pause(ts: &TestServer) {
    let name = "paused-put";
    let path = format!("/async/schedules/{name}");
    let put = |b: Value| {
        let url = ts.at(&path);
        async move { send(&ts.client, reqwest::Method::PUT, url, Some(&b)).await }
    };
    let mut body = json!({"name": name, "cron": "*/1 * * * * *", "misfire": "all",
                          "catchup_window": "1h",
                          "job": {"type": "runyard.noop", "args": {"v": 1}}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = ts.post(&format!("{path}/pause"), None).await;
    assert_eq!((st, &v["paused"]), (StatusCode::OK, &json!(true)), "{v}");
    let paused_at = now_s();
    // A POST of the same body, `paused` given either way, is "the same schedule" (200) and
    // changes nothing: the answer shows it paused, as it is.
    for p in [false, true] {
        let mut again = body.clone();
        again["paused"] = json!(p);
        let (st, v) = ts.post("/async/schedules", Some(&again)).await;
        assert_eq!((st, &v["paused"]), (StatusCode::OK, &json!(true)), "{v}");
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // The same body with other args, `paused` left out: still paused, nothing fires.
    body["job"]["args"] = json!({"v": 2});
    let (st, v) = put(body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["job"]["args"], json!({"v": 2}), "{v}");
    assert_eq!(
        v["paused"], true,
        "a PUT without `paused` keeps it paused: {v}"
    );
    assert_eq!(v["next_fires"], json!([]), "{v}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(ts.get(&path).await.1["paused"], true);
    let fires = fires_of(&all_jobs(&ts.client, &ts.url).await, name);
    assert!(
        fires.keys().all(|t| (*t as f64) <= paused_at),
        "fires while paused (paused at {paused_at}): {fires:?}"
    );

    // `paused: false`: resumes from the next fire time; the paused period is not made up.
    body["paused"] = json!(false);
    let resumed_at = now_s();
    let (st, v) = put(body.clone()).await;
    assert_eq!((st, &v["paused"]), (StatusCode::OK, &json!(false)), "{v}");
    let next = v["next_fires"].as_array().cloned().unwrap_or_default();
    assert_eq!(next.len(), 5, "{v}");
    assert!(
        next.iter()
            .all(|t| secs(t.as_str().unwrap()) as f64 > resumed_at),
        "resumed at {resumed_at}: {v}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fires = fires_of(&all_jobs(&ts.client, &ts.url).await, name);
    let made_up: Vec<_> = fires
        .keys()
        .filter(|t| (**t as f64) > paused_at && (**t as f64) < resumed_at)
        .collect();
    assert!(
        made_up.is_empty(),
        "the paused period ({paused_at}..{resumed_at}) was made up: {made_up:?} of {fires:?}"
    );
    assert!(
        fires.keys().any(|t| (*t as f64) > resumed_at),
        "fires again after the resume: {fires:?}"
    );

    // `paused: true`: pauses, as `.../pause`.
    body["paused"] = json!(true);
    let (st, v) = put(body.clone()).await;
    assert_eq!((st, &v["paused"]), (StatusCode::OK, &json!(true)), "{v}");
    assert_eq!(ts.get(&path).await.1["paused"], true);
    let (st, _) = send(&ts.client, reqwest::Method::DELETE, ts.at(&path), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_pause_state_embedded() {
    let ts = TestServer::start(RUNNERS).await;
    put_keeps_or_sets_pause(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_pause_state_redis() {
    let (_r, ts) = redis_server().await;
    put_keeps_or_sets_pause(&ts).await;
}

/// Runners of the overlap test: a job of `long.*` runs 30 s (cancelled before then).
const LONG_RUNNERS: &str = r#"
[[runners]]
name = "long"
kind = "local"
types = ["long.*"]
command = ["sleep", "30"]
concurrency = 16
"#;

/// The jobs of schedule `name`, oldest first.
async fn jobs_of(ts: &TestServer, name: &str) -> Vec<Value> {
    let mut jobs: Vec<Value> = all_jobs(&ts.client, &ts.url)
        .await
        .into_iter()
        .filter(|j| j["schedule"] == name)
        .collect();
    jobs.sort_by_key(|j| j["created_at"].as_str().unwrap_or("").to_string());
    jobs
}

/// The ids of schedule `name`'s jobs, oldest first.
async fn job_ids_of(ts: &TestServer, name: &str) -> Vec<String> {
    jobs_of(ts, name)
        .await
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

/// The overlap policy looks at every active job of the schedule, not only the last one it
/// recorded: a trigger's job that ended (or runs) does not hide the clock fire's job still
/// running. `forbid`: a per-second schedule whose first job runs 30 s, with a trigger whose job
/// is cancelled at once, submits nothing more. `cancel_other`: with a trigger's job running next
/// to a clock fire's, the next fire cancels both, so one job runs at a time.
async fn overlap_sees_every_active_job(ts: &TestServer) {
    let first_job = |name: &'static str| async move {
        support::eventually(&format!("`{name}` fires"), WAIT, || async {
            jobs_of(ts, name).await.into_iter().next()
        })
        .await
    };
    // forbid
    let body = json!({"name": "fb", "cron": "*/1 * * * * *", "overlap": "forbid",
                      "misfire": "skip", "job": {"type": "long.run"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let a = first_job("fb").await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let (st, t) = ts.post("/async/schedules/fb/trigger", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{t}");
    let t_id = t["job_id"].as_str().unwrap().to_string();
    let (st, v) = ts.post(&format!("/async/jobs/{t_id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ts.wait_terminal(&t_id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, v) = ts.post("/async/schedules/fb/pause", None).await;
    let ids = job_ids_of(ts, "fb").await;
    assert_eq!(
        ids,
        vec![a_id.clone(), t_id.clone()],
        "forbid: no fire while the first job runs, though the trigger's job ended: {v}"
    );
    assert!(!support::is_terminal(&ts.get_job(&a_id).await["status"]));
    assert!(
        v["counters"]["skipped_overlaps"].as_u64().unwrap() >= 2,
        "{v}"
    );
    let (st, _) = ts.post(&format!("/async/jobs/{a_id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK);

    // cancel_other
    let body = json!({"name": "co", "cron": "*/1 * * * * *", "overlap": "cancel_other",
                      "misfire": "skip", "job": {"type": "long.run"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    first_job("co").await;
    let (st, t) = ts.post("/async/schedules/co/trigger", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{t}");
    // Two more fires at least, each deciding after the trigger's job was recorded.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, v) = ts.post("/async/schedules/co/pause", None).await;
    // A fire decided before the pause does its cancels, then submits its job: once it is done
    // (the jobs and their statuses the same twice, 500 ms apart; waited for, not slept: a
    // loaded machine may take a while), one job runs.
    let mut last: Option<Vec<(Value, Value)>> = None;
    let mut settled = None;
    for _ in 0..40 {
        let jobs = jobs_of(ts, "co").await;
        let now: Vec<(Value, Value)> = jobs
            .iter()
            .map(|j| (j["id"].clone(), j["status"].clone()))
            .collect();
        if last.as_ref() == Some(&now) {
            settled = Some(jobs);
            break;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let jobs = settled.expect("the schedule's jobs settle after the pause");
    assert!(jobs.len() >= 3, "{jobs:?}");
    let active: Vec<&Value> = jobs
        .iter()
        .filter(|j| !support::is_terminal(&j["status"]))
        .collect();
    assert_eq!(
        active.len(),
        1,
        "cancel_other: only the newest job runs; active: {active:?}; schedule: {v}"
    );
    for j in active {
        ts.post(
            &format!("/async/jobs/{}/cancel", j["id"].as_str().unwrap()),
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_every_active_job_embedded() {
    let ts = TestServer::start(LONG_RUNNERS).await;
    overlap_sees_every_active_job(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_every_active_job_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(LONG_RUNNERS)
        .config(&r.server_config(MASTER_KEY))
        .start()
        .await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    overlap_sees_every_active_job(&ts).await;
}

/// A job of `trap.*` ignores SIGTERM (its `sleep` inherits the ignored signal), so a cancel
/// stops it only at `worker.kill_grace`'s SIGKILL (8 s in the test); it marks in `@DIR@/started` that it began.
const TRAP_RUNNERS: &str = r#"
[[runners]]
name = "trap"
kind = "local"
types = ["trap.*"]
command = ["sh", "-c", "trap '' TERM; echo \"$JOB_ID\" >> @DIR@/started; sleep 30"]
concurrency = 4
"#;

/// `forbid` counts a cancelled job whose process is still being stopped as active: between the
/// cancel (the job `CANCELLED` at once) and the end of its process (`kill_grace` later), the
/// per-second fires are skipped, not run beside it; once the process has ended, fires run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_waits_for_a_cancelled_job_to_stop() {
    let ts = TestServer::builder(TRAP_RUNNERS)
        .config("[worker]\nkill_grace = \"8s\"")
        .start()
        .await;
    let started = ts.dir().join("started");
    let body = json!({"name": "tr", "cron": "*/1 * * * * *", "overlap": "forbid",
                      "misfire": "skip", "job": {"type": "trap.run"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let a_id = support::eventually("the first fire's job ignores SIGTERM", WAIT, || async {
        std::fs::read_to_string(&started)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    })
    .await;
    let (st, v) = ts.post(&format!("/async/jobs/{a_id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "CANCELLED", "{v}");
    // Two fires and more while the process lives on (it has 8 s before its SIGKILL: the pause
    // below must come before it on a loaded machine).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (st, v) = ts.post("/async/schedules/tr/pause", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ids = job_ids_of(&ts, "tr").await;
    assert_eq!(
        ids,
        vec![a_id.clone()],
        "forbid: no fire while the cancelled job's process is still being stopped: {v}"
    );
    assert!(
        v["counters"]["skipped_overlaps"].as_u64().unwrap() >= 2,
        "{v}"
    );
    // Once it is stopped (SIGKILL at 8 s), the schedule fires again.
    let (st, v) = ts.post("/async/schedules/tr/resume", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let b = support::eventually("a fire after the cancelled job stopped", WAIT, || async {
        jobs_of(&ts, "tr").await.into_iter().nth(1)
    })
    .await;
    let (_, v) = ts.post("/async/schedules/tr/pause", None).await;
    assert_eq!(v["paused"], true, "{v}");
    let b_created = support::time_of(&b["created_at"]);
    let a = ts.get_job(&a_id).await;
    assert!(
        b_created >= support::time_of(&a["finished_at"]) + Duration::from_secs(3),
        "the next job came only after the cancelled one's kill_grace: {a} {b}"
    );
    ts.post(
        &format!("/async/jobs/{}/cancel", b["id"].as_str().unwrap()),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_embedded() {
    let ts = TestServer::start(RUNNERS).await;
    api_suite(&ts).await;
    live_fires(&ts).await;
    live_forbid(&ts).await;
}

/// A schedule deleted and created again under its name (same job type, new pattern and args),
/// right away: a backfill over times the earlier one had backfilled must not answer that one's
/// jobs as its own (`created: false`) nor leave its runs without them; each such time is in
/// `refused` with why, recorded as an `error` naming no job, and the earlier jobs are left as
/// they were.
async fn backfill_after_recreate(ts: &TestServer) {
    let name = "reborn";
    let path = format!("/async/schedules/{name}");
    let backfill = format!("{path}/backfill");
    let now = chrono::Utc::now();
    let range = json!({
        "from": (now - chrono::Duration::hours(3)).to_rfc3339(),
        "to": now.to_rfc3339(),
    });
    let first = json!({"name": name, "cron": "0 * * * *",
                       "job": {"type": "runyard.noop", "args": {"v": 1}}});
    let (st, v) = ts.post("/async/schedules", Some(&first)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = ts.post(&backfill, Some(&range)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let old: Vec<String> = v["fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(old.len(), 3, "three hours, three fires: {v}");
    let (st, _) = send(&ts.client, reqwest::Method::DELETE, ts.at(&path), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let second = json!({"name": name, "cron": "0 */1 * * *",
                        "job": {"type": "runyard.noop", "args": {"v": 2}}});
    let (st, v) = ts.post("/async/schedules", Some(&second)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for round in 0..2 {
        let (st, v) = ts.post(&backfill, Some(&range)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        for id in &old {
            assert!(
                !v.to_string().contains(id.as_str()),
                "round {round}: the backfill answered the earlier schedule's job {id}: {v}"
            );
        }
        assert_eq!(v["fires"], json!([]), "round {round}: {v}");
        let refused = v["refused"].as_array().unwrap();
        assert_eq!(refused.len(), 3, "round {round}: {v}");
        for r in refused {
            let why = r["error"].as_str().unwrap_or_default();
            assert!(why.contains("did not make"), "round {round}: {v}");
        }
    }
    let (_, v) = ts.get(&path).await;
    let runs = v["last_runs"].as_array().unwrap();
    assert!(!runs.is_empty(), "the refused fires are recorded: {v}");
    for r in runs {
        assert_eq!(
            (r["outcome"].as_str(), r["job_id"].is_null()),
            (Some("error"), true),
            "{v}"
        );
    }
    assert_eq!(v["counters"]["fires"], 0, "{v}");
    // The earlier jobs are as they were: the earlier template's args, the same keys.
    for id in &old {
        let (st, j) = ts.get(&format!("/async/jobs/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{j}");
        assert_eq!(j["args"], json!({"v": 1}), "{j}");
    }
    let (st, _) = send(&ts.client, reqwest::Method::DELETE, ts.at(&path), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_after_recreate_embedded() {
    let ts = TestServer::start(RUNNERS).await;
    backfill_after_recreate(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_after_recreate_redis() {
    let (_r, ts) = redis_server().await;
    backfill_after_recreate(&ts).await;
}

/// A step that leaves one value (`*/90` in the minute field fires only at :00), a step of 0 and
/// a range that ends before it starts are refused at `POST` and at `PUT` with a 422 naming the
/// field and its range, and nothing is stored or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_cron_fields_are_refused_naming_the_field_and_its_range() {
    let ts = TestServer::start(RUNNERS).await;
    let cases = [
        ("*/90 * * * *", "minute field (0-59) `*/90`"),
        ("0 */24 * * *", "hour field (0-23) `*/24`"),
        ("0 0 */40 * *", "day-of-month field (1-31) `*/40`"),
        ("0 0 1 */13 *", "month field (1-12) `*/13`"),
        ("0 0 * * */7", "day-of-week field (0-7) `*/7`"),
        ("*/75 * * * * *", "second field (0-59) `*/75`"),
        ("10-20/30 * * * *", "minute field (0-59) `10-20/30`"),
        ("*/0 * * * *", "minute field (0-59) `*/0`"),
        ("30-10 * * * *", "minute field (0-59) `30-10`"),
    ];
    for (cron, named) in cases {
        let body = json!({"name": "odd", "cron": cron, "job": {"type": "runyard.noop"}});
        let (st, v) = ts.post("/async/schedules", Some(&body)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{cron}: {v}");
        let (code, msg) = err_of(&v);
        assert_eq!(code, "invalid_request", "{cron}: {v}");
        assert!(
            msg.starts_with("`cron`: ") && msg.contains(named),
            "{cron}: {msg}"
        );
        let (st, v) = ts.get("/async/schedules/odd").await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{cron} was stored: {v}");
    }
    // A PUT over a stored schedule is refused the same way, and changes nothing.
    let good = json!({"name": "odd", "cron": "*/15 * * * *", "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&good)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for (cron, named) in cases {
        let mut put = good.clone();
        put["cron"] = json!(cron);
        let (st, v) = send(
            &ts.client,
            reqwest::Method::PUT,
            ts.at("/async/schedules/odd"),
            Some(&put),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "PUT {cron}: {v}");
        assert!(err_of(&v).1.contains(named), "PUT {cron}: {v}");
        let (_, v) = ts.get("/async/schedules/odd").await;
        assert_eq!(v["cron"], "*/15 * * * *", "PUT {cron} changed it: {v}");
    }
    // Steps that leave two values or more are still taken.
    for cron in [
        "*/59 * * * *",
        "0 */12 * * *",
        "0 0 * * */2",
        "0-50/10 * * * *",
    ] {
        let mut put = good.clone();
        put["cron"] = json!(cron);
        let (st, v) = send(
            &ts.client,
            reqwest::Method::PUT,
            ts.at("/async/schedules/odd"),
            Some(&put),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "PUT {cron}: {v}");
    }
    // Weekend ranges ending on Sunday by name are real patterns.
    for cron in ["0 9 * * SAT-SUN", "0 9 * * MON-SUN"] {
        let mut put = good.clone();
        put["cron"] = json!(cron);
        let (st, v) = send(
            &ts.client,
            reqwest::Method::PUT,
            ts.at("/async/schedules/odd"),
            Some(&put),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "PUT {cron}: {v}");
    }
    // A pattern stored before these checks (written here into the store) keeps working: a
    // deploy tool re-sending it unchanged is not refused; changing it to another odd one is.
    let store = ts.running().app.store.clone();
    let mut s = store.schedule("odd").await.unwrap().expect("stored");
    let was = s.version;
    s.spec.cron = "0 */24 * * *".into();
    s.version += 1;
    assert!(store.schedule_cas(&s, Some(was)).await.unwrap());
    for (cron, want) in [
        ("0 */24 * * *", StatusCode::OK),
        ("0  */24 * * *", StatusCode::OK),
        ("0 */30 * * *", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let mut put = good.clone();
        put["cron"] = json!(cron);
        let (st, v) = send(
            &ts.client,
            reqwest::Method::PUT,
            ts.at("/async/schedules/odd"),
            Some(&put),
        )
        .await;
        assert_eq!(st, want, "PUT {cron}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_patterns_that_never_fire_does_not_stall_the_api() {
    // Refusing a pattern that never fires searches croner's whole range (about 0.4 s of CPU in
    // a release build): done inline, a few such requests held every worker thread and
    // `/health` waited seconds.
    let ts = TestServer::start(RUNNERS).await;
    let c = ts.client.clone();
    let url = format!("{}/async/schedules", ts.url);
    let body = json!({"name": "never", "cron": "0-59 0-59 0-23 31 2,4,6,9,11 *",
                      "job": {"type": "runyard.noop"}});
    let started = Instant::now();
    let (st, v) = send(&c, reqwest::Method::POST, url.clone(), Some(&body)).await;
    let one = started.elapsed();
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(err_of(&v).1.contains("never fires"), "{v}");
    let refusals: Vec<_> = (0..6)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move { send(&c, reqwest::Method::POST, url, Some(&body)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let (st, _) = send(&c, reqwest::Method::GET, format!("{}/health", ts.url), None).await;
    let health = asked.elapsed();
    eprintln!("one refusal alone: {one:?}; /health meanwhile: {health:?}");
    assert_eq!(st, StatusCode::OK);
    assert!(
        health < one / 2,
        "/health took {health:?} while six refusals ran (one alone: {one:?})"
    );
    for r in refusals {
        // Refused, or told to try again after waiting its turn for a bounded time.
        let (st, v) = r.await.expect("refusal");
        assert!(
            st == StatusCode::UNPROCESSABLE_ENTITY
                || (st == StatusCode::SERVICE_UNAVAILABLE && err_of(&v).0 == "busy"),
            "{st}: {v}"
        );
    }
    let (st, _) = send(&c, reqwest::Method::GET, format!("{url}/never"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_checks_queued_on_one_server_do_not_hold_up_another() {
    // The check runs one at a time per server: two servers embedded in one process (this test
    // binary, an application embedding runyard) each have their own turn. With one turn per
    // process, a queue of refusals on one server made the other's valid create wait its 5 s
    // and answer 503 `busy`.
    let (a, b) = (
        TestServer::start(RUNNERS).await,
        TestServer::start(RUNNERS).await,
    );
    let c = a.client.clone();
    let never = json!({"name": "never", "cron": "0-59 0-59 0-23 31 2,4,6,9,11 *",
                       "job": {"type": "runyard.noop"}});
    let url = format!("{}/async/schedules", a.url);
    let started = Instant::now();
    let (st, v) = send(&c, reqwest::Method::POST, url.clone(), Some(&never)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    eprintln!("one refusal alone: {:?}", started.elapsed());
    // Enough refusals queued on `a` to fill twice the 5 s wait (0.4 s each in a release build,
    // ~1.2 s in a debug one), at most 30.
    let n = (10_000 / started.elapsed().as_millis().max(1) + 2).min(30) as usize;
    let refusals: Vec<_> = (0..n)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), never.clone());
            tokio::spawn(async move { send(&c, reqwest::Method::POST, url, Some(&body)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let valid = json!({"name": "nightly", "cron": "0 3 * * *", "job": {"type": "runyard.noop"}});
    let (st, v) = send(
        &c,
        reqwest::Method::POST,
        format!("{}/async/schedules", b.url),
        Some(&valid),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "the other server's create: {v}");
    assert_eq!(b.get("/async/schedules/nightly").await.0, StatusCode::OK);
    for r in refusals {
        let (st, v) = r.await.expect("refusal");
        assert!(
            st == StatusCode::UNPROCESSABLE_ENTITY
                || (st == StatusCode::SERVICE_UNAVAILABLE && err_of(&v).0 == "busy"),
            "{st}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_redis() {
    let (_r, ts) = redis_server().await;
    api_suite(&ts).await;
    live_fires(&ts).await;
    live_forbid(&ts).await;
}

// ---------------------------------------------------------------- real processes

const MASTER_KEY: &str = "schedule-test-master-key-0123456789abcdef";

struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(
    dir: &Path,
    name: &str,
    port: u16,
    api_port: u16,
    redis: Option<(&str, &str)>,
) -> PathBuf {
    let redis = redis
        .map(|(u, p)| format!("redis = \"{u}\"\n[store]\nprefix = \"{p}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{api_port}"
data_dir = "{data}"
master_key = "{MASTER_KEY}"
{redis}
[worker]
lease_ttl = "2s"
poll_interval = "200ms"
shutdown_grace = "2s"
{RUNNERS}"#,
        data = dir.join(format!("data-{name}")).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(dir: &Path, name: &str, args: &[&str], config: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("RUNYARD_LOG", "warn")
        .env_remove("RUNYARD_REDIS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f);
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Proc {
        child: Some(cmd.spawn().expect("runyard starts")),
        log,
    }
}

fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            let s = std::fs::read_to_string(&p.log).unwrap_or_default();
            let start = s.len().saturating_sub(2000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            format!("--- {} ---\n{}", p.log.display(), &s[start..])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_healthy(c: &reqwest::Client, base: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = c.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{base} never healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_fires_each_second_exactly_once() {
    let r = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (p1, p2) = (free_port(), free_port());
    let redis = Some((r.url.as_str(), r.prefix.as_str()));
    let api1 = spawn(
        d,
        "api1",
        &["serve", "--no-worker"],
        &write_config(d, "api1", p1, p1, redis),
    );
    let mut api2 = spawn(
        d,
        "api2",
        &["serve", "--no-worker"],
        &write_config(d, "api2", p2, p1, redis),
    );
    let mut w1 = spawn(d, "w1", &["worker"], &write_config(d, "w1", 0, p1, redis));
    let w2 = spawn(d, "w2", &["worker"], &write_config(d, "w2", 0, p1, redis));
    let c = http();
    let base = format!("http://127.0.0.1:{p1}");
    wait_healthy(&c, &base).await;
    wait_healthy(&c, &format!("http://127.0.0.1:{p2}")).await;
    // Let the worker nodes' loops start too.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let body = json!({"name": "every-second", "cron": "*/1 * * * * *", "misfire": "all",
                      "catchup_window": "1h", "job": {"type": "runyard.noop"}});
    let (st, v) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/async/schedules"),
        Some(&body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let created = now_s();
    // The same body through the other API node: 200, the same schedule.
    let (st, v) = send(
        &c,
        reqwest::Method::POST,
        format!("http://127.0.0.1:{p2}/async/schedules"),
        Some(&body),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    sleep_until(created + 6.3).await;
    w1.kill9();
    sleep_until(created + 11.6).await;
    api2.kill9();
    sleep_until(created + 18.0).await;
    let (st, _) = send(
        &c,
        reqwest::Method::DELETE,
        format!("{base}/async/schedules/every-second"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let deleted = now_s();
    // A fire decided just before the delete is submitted by its decider.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let jobs = all_jobs(&c, &base).await;
    let fires = fires_of(&jobs, "every-second");
    let doubled: Vec<_> = fires.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "fire times with more than one job: {doubled:?}\n{}",
        logs(&[&api1, &w2])
    );
    let first = *fires.keys().next().expect("it fired");
    let last = *fires.keys().last().unwrap();
    let missing: Vec<i64> = (first..=last).filter(|t| !fires.contains_key(t)).collect();
    assert!(
        missing.is_empty(),
        "fire times without a job: {missing:?}\n{}",
        logs(&[&api1, &w2])
    );
    assert!(
        (first as f64) <= created + 2.0,
        "first fire {first}, created {created}"
    );
    assert!(
        (last as f64) >= deleted - 4.0,
        "last fire {last}, deleted {deleted}"
    );
    let n = fires.len() as f64;
    assert!(
        (n - (deleted - created)).abs() <= 4.0,
        "{n} fires in {:.1}s",
        deleted - created
    );
    // Every job runs (the remaining worker does them all).
    let ids: Vec<String> = jobs
        .iter()
        .filter(|j| j["schedule"] == "every-second")
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = all_jobs(&c, &base).await;
        let done = jobs
            .iter()
            .filter(|j| {
                ids.contains(&j["id"].as_str().unwrap().to_string()) && j["status"] == "SUCCESS"
            })
            .count();
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done}/{} jobs done\n{}",
            ids.len(),
            logs(&[&api1, &w2])
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "{} fire times, one job each, over {:.1}s, two of four processes killed",
        fires.len(),
        deleted - created
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_restart_misfire_policies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cfg = write_config(d, "solo", port, port, None);
    let mut p = spawn(d, "solo", &["serve"], &cfg);
    let c = http();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&c, &base).await;
    let policies = [
        ("skip", "1h"),
        ("once", "1h"),
        ("all", "1h"),
        ("window", "6s"),
    ];
    for (name, window) in policies {
        let misfire = match name {
            "skip" => "skip",
            "once" => "run_once",
            _ => "all",
        };
        let body = json!({"name": name, "cron": "*/5 * * * * *", "misfire": misfire,
                          "catchup_window": window, "job": {"type": "runyard.noop"}});
        let (st, v) = send(
            &c,
            reqwest::Method::POST,
            format!("{base}/async/schedules"),
            Some(&body),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    // F0: a fire time at least 2 s ahead; kill right after it fired for every schedule.
    let f0 = ((now_s() + 2.0) / 5.0).ceil() as i64 * 5;
    sleep_until(f0 as f64 + 0.4).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let jobs = all_jobs(&c, &base).await;
        if policies
            .iter()
            .all(|(n, _)| fires_of(&jobs, n).contains_key(&f0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "F0 did not fire for every schedule\n{}",
            logs(&[&p])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.kill9();
    // Down through F0+5 and F0+10; back 2.2 s after F0+10 (so it is late), before F0+15.
    sleep_until(f0 as f64 + 12.2).await;
    let mut p = spawn(d, "solo", &["serve"], &cfg);
    wait_healthy(&c, &base).await;
    // Back before F0+15 (a very slow start would make F0+15 the newest missed time instead).
    let up_in_time = now_s() < f0 as f64 + 14.5;
    sleep_until(f0 as f64 + 21.5).await;
    let jobs = all_jobs(&c, &base).await;
    let got = |n: &str| -> Vec<i64> {
        let f = fires_of(&jobs, n);
        assert!(
            f.values().all(|k| *k == 1),
            "{n}: one job per fire time: {f:?}"
        );
        f.keys().filter(|t| **t >= f0).map(|t| t - f0).collect()
    };
    let detail = logs(&[&p]);
    assert_eq!(
        got("skip"),
        vec![0, 15, 20],
        "skip: missed times dropped\n{detail}"
    );
    if up_in_time {
        assert_eq!(
            got("once"),
            vec![0, 10, 15, 20],
            "run_once: the newest missed time once\n{detail}"
        );
        assert_eq!(
            got("window"),
            vec![0, 10, 15, 20],
            "all within a 6s window\n{detail}"
        );
    } else {
        eprintln!("the restart took past F0+14.5: run_once and window checked loosely");
        assert!(
            !got("once").contains(&5),
            "run_once: one job for the missed times"
        );
        assert!(!got("window").contains(&5), "F0+5 is outside the 6s window");
    }
    assert_eq!(
        got("all"),
        vec![0, 5, 10, 15, 20],
        "all: every missed time\n{detail}"
    );
    let (_, v) = send(
        &c,
        reqwest::Method::GET,
        format!("{base}/async/schedules/skip"),
        None,
    )
    .await;
    assert!(v["counters"]["misfires"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        v["last_runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "missed")
            .count(),
        1,
        "{v}"
    );
    let m = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !up_in_time || m.contains("runyard_schedule_misfires_total 4\n"),
        "2 (skip) + 1 (run_once) + 1 (6s window) missed since the restart:\n{m}"
    );
    p.kill9();
}

// ---------------------------------------------------------------- CLI

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(args)
        .arg("--server")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("runyard runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_schedules() {
    let ts = TestServer::start(RUNNERS).await;
    let body = json!({"name": "report.daily", "cron": "0 6 * * *", "timezone": "America/New_York",
                      "job": {"type": "runyard.noop"}});
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let url = ts.url.clone();
    let run = move |args: Vec<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || cli(&url, &args))
    };

    let (ok, out, err) = run(vec!["schedules"]).await.unwrap();
    assert!(ok, "{err}");
    // A header, then one line per schedule.
    assert!(out.starts_with("NAME "), "{out}");
    assert!(
        out.lines().nth(1).unwrap_or("").starts_with("report.daily"),
        "{out}"
    );
    assert!(
        out.contains("active") && out.contains("America/New_York"),
        "{out}"
    );
    let (ok, out, _) = run(vec!["schedules", "get", "report.daily"]).await.unwrap();
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("get prints JSON");
    assert_eq!(v["cron"], "0 6 * * *");
    let (ok, out, _) = run(vec!["schedules", "pause", "report.daily"])
        .await
        .unwrap();
    assert!(ok && out.contains("paused"), "{out}");
    assert_eq!(
        ts.get("/async/schedules/report.daily").await.1["paused"],
        true
    );
    let (ok, out, _) = run(vec!["schedules", "list"]).await.unwrap();
    assert!(ok && out.contains("paused"), "{out}");
    let (ok, _, _) = run(vec!["schedules", "resume", "report.daily"])
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(
        ts.get("/async/schedules/report.daily").await.1["paused"],
        false
    );
    let (ok, out, _) = run(vec!["schedules", "trigger", "report.daily"])
        .await
        .unwrap();
    assert!(ok);
    let job = ts.wait_terminal(out.trim(), WAIT).await;
    assert_eq!(job["schedule"], "report.daily");
    let (ok, _, err) = run(vec!["schedules", "get", "nope"]).await.unwrap();
    assert!(!ok, "an unknown schedule fails");
    assert!(err.contains("not found"), "{err}");
}

/// Many `skip` schedules due in the same second: the fire loop reaches the last ones seconds
/// after their time, and they fire (late), none `missed`, since the loop was working all along
/// (before: the ones late in name order were missed at every fire time, on a healthy server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_schedules_due_at_once_misses_none() {
    use futures::StreamExt;
    const N: usize = 1500;
    const PERIOD: f64 = 20.0;
    let ts = TestServer::start(RUNNERS).await;
    let made: Vec<StatusCode> = futures::stream::iter(0..N)
        .map(|i| {
            let ts = &ts;
            async move {
                let body = json!({"name": format!("b{i:04}"), "cron": "*/20 * * * * *",
                                  "misfire": "skip", "job": {"type": "runyard.noop"}});
                ts.post("/async/schedules", Some(&body)).await.0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(made.iter().all(|s| *s == StatusCode::CREATED), "{made:?}");
    // The next fire time: every schedule is due then.
    let fire = ((now_s() / PERIOD).floor() + 1.0) * PERIOD;
    let fire_us = (fire * 1e6) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let schedules = loop {
        sleep_until(fire + 1.0).await;
        let (st, v) = ts.get("/async/schedules").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let all = v["schedules"].as_array().cloned().unwrap_or_default();
        let handled = |s: &Value| {
            s["last_runs"].as_array().is_some_and(|runs| {
                runs.iter().any(|r| {
                    r["fire_time"]
                        .as_str()
                        .is_some_and(|t| secs(t) * 1_000_000 == fire_us)
                })
            })
        };
        if all.len() == N && all.iter().all(handled) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not every schedule handled its fire time"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missed: Vec<&str> = schedules
        .iter()
        .filter(|s| s["counters"]["misfires"].as_u64() != Some(0))
        .map(|s| s["name"].as_str().unwrap_or_default())
        .collect();
    assert!(
        missed.is_empty(),
        "{} of {N} missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
}

/// A job type or schedule name refused for an invisible or bidirectional character echoed it raw:
/// "got `s<U+200B>x`" looked like a valid name, and U+202E reversed the rest of the message (probe s54b
/// F9). They are shown escaped (`\u{200b}`), and a long value is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_names_show_invisible_characters_escaped_and_long_ones_cut() {
    let ts = TestServer::start(RUNNERS).await;
    let shown = |v: &Value, escape: &str| {
        let m = err_of(v).1;
        assert!(m.contains(escape), "{m}");
        assert!(
            !m.contains(['\u{200b}', '\u{202e}', '\u{feff}']),
            "raw in {m:?}"
        );
    };
    for (raw, escape) in [
        ("s\u{200b}x", "s\\u{200b}x"),
        ("s\u{202e}x", "s\\u{202e}x"),
        ("s\u{feff}x", "s\\u{feff}x"),
    ] {
        let (st, v) = ts.post("/async/jobs", Some(&json!({"type": raw}))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        shown(&v, escape);
        let body = json!({"name": raw, "cron": "0 * * * *", "job": {"type": "runyard.noop"}});
        let (st, v) = ts.post("/async/schedules", Some(&body)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        shown(&v, escape);
    }
    let long = "x".repeat(300);
    let (st, v) = ts.post("/async/jobs", Some(&json!({"type": long}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let m = err_of(&v).1;
    assert!(m.len() < 300 && m.contains("(300 bytes)"), "{m}");
}
