//! Signed webhooks out (docs/notifications.md), what a user sees of them through the API: every
//! delivery of a job reachable a page at a time (oldest or newest first), a receiver's
//! `Retry-After` and `410 Gone` honoured, the deliveries route's OpenAPI schema, and the submit's
//! `notify` (port 0 refused, `null` opting out of a type's default). Real HTTP on port 0: the
//! server under test and a scripted receiver (an axum server on 127.0.0.1).

mod redis_support;
mod support;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use redis_support::TestRedis;
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

const MASTER_KEY: &str = "webhook-api-test-master-key-0123456789ab";

/// Fast retries; the receiver is on 127.0.0.1.
const NOTIFY: &str = r#"
[notify]
allow_private = true
retry_initial = "100ms"
retry_max = "200ms"
"#;

/// An answer of the receiver: its status and `Retry-After`, if any.
type Answer = (u16, Option<&'static str>);

/// A receiver that answers its script in order (a status and an optional `Retry-After`), then 200;
/// it notes when each request came.
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl Receiver {
    async fn start(script: &[Answer]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let r2 = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let r = r2.clone();
                async move {
                    let (status, after) = r.script.lock().pop_front().unwrap_or((200, None));
                    r.seen.lock().push((Instant::now(), status));
                    let mut res = axum::response::Response::new(axum::body::Body::empty());
                    *res.status_mut() = StatusCode::from_u16(status).unwrap();
                    if let Some(a) = after {
                        res.headers_mut().insert(
                            HeaderName::from_static("retry-after"),
                            HeaderValue::from_static(a),
                        );
                    }
                    res
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn seen(&self) -> Vec<(Instant, u16)> {
        self.seen.lock().clone()
    }
}

async fn get(ts: &TestServer, path: &str) -> (u16, Value) {
    let (st, v) = ts.get(path).await;
    (st.as_u16(), v)
}

/// Waits (bounded) until the first delivery of `job` is no longer pending; returns it.
async fn wait_ended(ts: &TestServer, job: &str) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let (_, v) = get(ts, &format!("/async/jobs/{job}/deliveries")).await;
        let d = &v["deliveries"][0];
        if d.is_object() && d["state"] != "pending" {
            return d.clone();
        }
        assert!(Instant::now() < until, "still pending: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows `next` from `first` (a query without the cursor) with `cursor` (`after`/`before`);
/// returns the delivery ids in the order listed.
async fn follow(ts: &TestServer, job: &str, first: &str, cursor: &str) -> Vec<u64> {
    let (mut ids, mut q) = (Vec::new(), first.to_string());
    for _ in 0..100 {
        let (st, v) = get(ts, &format!("/async/jobs/{job}/deliveries?{q}")).await;
        assert_eq!(st, 200, "{q}: {v}");
        let page = v["deliveries"].as_array().unwrap();
        ids.extend(page.iter().map(|d| d["id"].as_u64().unwrap()));
        if page.is_empty() {
            return ids;
        }
        assert_eq!(v["next"], page.last().unwrap()["id"], "{v}");
        q = format!("{first}&{cursor}={}", v["next"]);
    }
    panic!("more than 100 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_is_reachable_oldest_or_newest_first() {
    let recv = Receiver::start(&[]).await;
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    let id = ts
        .submit_ok(json!({"type": "runyard.noop",
            "notify": {"url": recv.url, "events": ["status"]}}))
        .await;
    ts.wait_terminal(&id, WAIT).await;
    let (_, v) = get(&ts, &format!("/async/jobs/{id}/deliveries?limit=1000")).await;
    let all: Vec<u64> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert!(all.len() >= 3, "a delivery per status event: {v:#}");
    // One at a time, oldest first: every delivery once, in order.
    assert_eq!(follow(&ts, &id, "limit=1", "after").await, all);
    // Newest first: the first is the terminal event's; following `before` reaches the oldest.
    let (st, v) = get(
        &ts,
        &format!("/async/jobs/{id}/deliveries?order=newest&limit=1"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["deliveries"][0]["event_status"], "SUCCESS", "{v:#}");
    let mut back = follow(&ts, &id, "order=newest&limit=2", "before").await;
    back.reverse();
    assert_eq!(back, all);
    // `before` alone is newest first too.
    let (_, v) = get(
        &ts,
        &format!("/async/jobs/{id}/deliveries?before={}", all[2]),
    )
    .await;
    let ids: Vec<u64> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![all[1], all[0]]);
    // An empty page keeps the cursor given.
    let last = *all.last().unwrap();
    let (_, v) = get(&ts, &format!("/async/jobs/{id}/deliveries?after={last}")).await;
    assert_eq!(
        (v["deliveries"].as_array().unwrap().len(), &v["next"]),
        (0, &json!(last))
    );
    for q in [
        "after=1&before=9",
        "order=newest&after=1",
        "order=oldest&before=9",
        "order=sideways",
        "after=-1",
        "limit=0",
        "limit=1001",
    ] {
        let (st, v) = get(&ts, &format!("/async/jobs/{id}/deliveries?{q}")).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("bad_query")),
            "{q}: {v}"
        );
    }
}

/// A receiver answering 503 with `Retry-After: 2`: the next attempt comes no sooner (the backoff
/// alone is 100-200 ms); then 200.
async fn retry_after_is_waited_for(extra: &str) {
    let recv = Receiver::start(&[(503, Some("2"))]).await;
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("{extra}\n{NOTIFY}"))
        .start()
        .await;
    let id = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
        .await;
    let d = wait_ended(&ts, &id).await;
    assert_eq!(d["state"], "delivered", "{d:#}");
    let seen = recv.seen();
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), vec![503, 200]);
    let gap = seen[1].0 - seen[0].0;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(d["attempts"][0]["status"], 503);
    let e = d["attempts"][0]["error"].as_str().unwrap();
    assert!(e.contains("Retry-After: 2 s"), "{e}");
}

/// A `Retry-After` past the horizon gives the delivery up at once; a `410 Gone` too.
async fn gone_and_too_late_are_given_up_at_once(extra: &str) {
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("{extra}\n{NOTIFY}\nhorizon = \"1h\"\n"))
        .start()
        .await;
    for (answer, after, word) in [(410, None, "Gone"), (429, Some("7200"), "Retry-After")] {
        let recv = Receiver::start(&[(answer, after)]).await;
        let id = ts
            .submit_ok(json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
            .await;
        let d = wait_ended(&ts, &id).await;
        assert_eq!(d["state"], "given_up", "{answer}: {d:#}");
        assert_eq!(d["attempt_count"], 1, "{answer}: {d:#}");
        assert_eq!(d["attempts"][0]["status"], answer, "{d:#}");
        assert!(d["next_attempt_at"].is_null(), "{d:#}");
        // The attempt that gave it up says so, whichever way (probe s53c F6: a `Retry-After`
        // past the horizon said only the delay asked).
        let e = d["attempts"][0]["error"].as_str().unwrap();
        assert!(e.contains(word) && e.contains("given up"), "{e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(recv.seen().len(), 1, "{answer}: no attempt after it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_embedded() {
    retry_after_is_waited_for("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_redis() {
    let r = TestRedis::start();
    retry_after_is_waited_for(&r.server_config(MASTER_KEY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_and_retry_after_past_the_horizon_give_up_embedded() {
    gone_and_too_late_are_given_up_at_once("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_and_retry_after_past_the_horizon_give_up_redis() {
    let r = TestRedis::start();
    gone_and_too_late_are_given_up_at_once(&r.server_config(MASTER_KEY)).await;
}

/// Follows `$ref`s.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, doc.pointer(r.trim_start_matches('#')).expect("$ref")),
        None => v,
    }
}

/// The object schema of a property that may be null (`oneOf`/`anyOf` with null, or plain).
fn object_of<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let v = resolve(doc, v);
    for k in ["oneOf", "anyOf"] {
        if let Some(alts) = v[k].as_array() {
            if let Some(o) = alts
                .iter()
                .map(|a| resolve(doc, a))
                .find(|a| a["properties"].is_object())
            {
                return o;
            }
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_route_is_documented_as_it_answers() {
    let recv = Receiver::start(&[]).await;
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    let (_, doc) = ts.get("/openapi.json").await;
    let op = &doc["paths"]["/async/jobs/{id}/deliveries"]["get"];
    let param = |n: &str| {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no parameter {n}: {op:#}"))
            .clone()
    };
    let limit = param("limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000)),
        "{limit:#}"
    );
    for p in ["after", "before", "order"] {
        assert_eq!(param(p)["in"], "query");
    }
    let body = resolve(
        &doc,
        &op["responses"]["200"]["content"]["application/json"]["schema"],
    );
    let item = resolve(&doc, &body["properties"]["deliveries"]["items"]);
    let notify = object_of(&doc, &body["properties"]["notify"]);
    // A real answer has exactly the documented fields, each of them.
    let id = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
        .await;
    ts.wait_terminal(&id, WAIT).await;
    let d = wait_ended(&ts, &id).await;
    let (_, v) = get(&ts, &format!("/async/jobs/{id}/deliveries")).await;
    let keys = |o: &Value| {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let props = |s: &Value| {
        let mut k: Vec<String> = s["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("untyped: {s:#}"))
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&d), props(item), "{item:#}");
    assert_eq!(keys(&v["notify"]), props(notify), "{notify:#}");
    assert_eq!(keys(&v), props(body));
    // The job's own `notify` (`JobView`, and so a `fields=` listing's `JobFields`) had only a
    // description: generated clients typed it as anything (probe s53c F4). It is the webhook's
    // schema, and the member is always there, null for a job without one.
    let (_, job) = get(&ts, &format!("/async/jobs/{id}")).await;
    for view in ["JobView", "JobFields"] {
        let s = &doc["components"]["schemas"][view];
        let notify = &s["properties"]["notify"];
        assert_eq!(
            keys(&job["notify"]),
            props(object_of(&doc, notify)),
            "{view}: {notify:#}"
        );
        let alts = notify["oneOf"].as_array().cloned().unwrap_or_default();
        assert!(
            alts.contains(&json!({"type": "null"})),
            "{view}: {notify:#}"
        );
    }
    let required = &doc["components"]["schemas"]["JobView"]["required"];
    assert!(
        required.as_array().unwrap().contains(&json!("notify")),
        "{required}"
    );
    let attempt = resolve(&doc, &item["properties"]["attempts"]["items"]);
    assert_eq!(keys(&d["attempts"][0]), props(attempt), "{attempt:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_is_refused_and_null_opts_out_of_the_default() {
    let recv = Receiver::start(&[]).await;
    let ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "{NOTIFY}\n[[notify.defaults]]\ntypes = [\"runyard.noop\"]\nurl = \"{}\"\n",
            recv.url
        ))
        .start()
        .await;
    for url in ["http://127.0.0.1:0/x", "https://example.com:0/x"] {
        let (st, v) = ts
            .submit(json!({"type": "runyard.noop", "notify": {"url": url}}))
            .await;
        assert_eq!(st, 422, "{url}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("notify.url") && m.contains("port 0"), "{m}");
    }
    assert_eq!(ts.count_jobs(None).await, 0, "nothing stored");
    // Left out: the type's default. `null`: none, on a submit, a batch item and a schedule's job.
    let with = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let without = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": null}))
        .await;
    let (st, v) = ts
        .post(
            "/async/jobs/batch",
            Some(&json!({"jobs": [{"type": "runyard.noop", "notify": null}]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let batched = v["results"][0]["job_id"].as_str().unwrap().to_string();
    let sched = json!({"name": "quiet", "cron": "@yearly",
        "job": {"type": "runyard.noop", "notify": null}});
    let (st, v) = ts.post("/async/schedules", Some(&sched)).await;
    assert!(st.is_success(), "{v}");
    let (st, v) = ts.post("/async/schedules/quiet/trigger", None).await;
    assert_eq!(st, 202, "{v}");
    let fired = v["job_id"].as_str().unwrap().to_string();
    let job = ts.wait_terminal(&with, WAIT).await;
    assert_eq!(job["notify"]["url"], recv.url.as_str());
    wait_ended(&ts, &with).await;
    // Without a webhook the job says `"notify": null`, as notifications.md has it: the member
    // was left out, and a client reading `job["notify"]` failed on it (probe s53c F4).
    for id in [&without, &batched, &fired] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(job.get("notify"), Some(&Value::Null), "{job:#}");
        let (_, v) = get(&ts, &format!("/async/jobs/{id}/deliveries")).await;
        assert_eq!(v["deliveries"], json!([]), "{v:#}");
    }
    // A listing with `fields=notify` says the same of each job.
    let (st, page) = get(&ts, "/async/jobs?fields=notify").await;
    assert_eq!(st, 200, "{page}");
    for j in page["jobs"].as_array().unwrap() {
        let want = if j["id"] == with.as_str() {
            json!({"url": recv.url, "events": ["terminal"]})
        } else {
            Value::Null
        };
        assert_eq!(j.get("notify"), Some(&want), "{page:#}");
    }
    assert_eq!(
        recv.seen().len(),
        1,
        "only the job with the default was delivered"
    );
}
