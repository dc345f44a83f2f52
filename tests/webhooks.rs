//! Signed webhooks out (docs/notifications.md), end to end: a real receiver (an axum server on
//! 127.0.0.1, port 0) that fails the first three attempts of every event and then accepts; the
//! deliveries, their signatures (checked in Rust and with the Python verifier), the address rule,
//! a `kill -9` of a real `runyard serve` between attempts, and Redis with two nodes.

mod redis_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use redis_support::TestRedis;
use serde_json::{json, Value};
use support::child::ChildServer as Server;
use support::{TestServer, WAIT};

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

const MASTER_KEY: &str = "webhook-test-master-key-0123456789abcdef";

/// Fast retries, and the receiver is on 127.0.0.1.
const NOTIFY: &str = r#"
[notify]
allow_private = true
retry_initial = "100ms"
retry_max = "400ms"
"#;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Req {
    event_id: String,
    job_id: String,
    runyard_status: String,
    answered: u16,
    signature: String,
    delivery: String,
    body: Bytes,
}

/// A webhook receiver that answers 500 to the first `fail_first` requests of each event, then 200.
#[derive(Clone)]
struct Receiver {
    url: String,
    fail_first: usize,
    reqs: Arc<Mutex<Vec<Req>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hooks/runyard", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            fail_first,
            reqs: Arc::new(Mutex::new(Vec::new())),
        };
        let r2 = r.clone();
        let app = axum::Router::new().route(
            "/hooks/runyard",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let r = r2.clone();
                async move { r.take(headers, body) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn take(&self, headers: HeaderMap, body: Bytes) -> StatusCode {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let event_id = v["id"].as_str().unwrap_or("").to_string();
        let mut reqs = self.reqs.lock();
        let before = reqs.iter().filter(|r| r.event_id == event_id).count();
        let answered = if before < self.fail_first { 500 } else { 200 };
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        reqs.push(Req {
            event_id,
            job_id: v["job_id"].as_str().unwrap_or("").to_string(),
            runyard_status: v["runyard_status"].as_str().unwrap_or("").to_string(),
            answered,
            signature: h("runyard-signature"),
            delivery: h("runyard-delivery"),
            body,
        });
        StatusCode::from_u16(answered).unwrap()
    }

    fn all(&self) -> Vec<Req> {
        self.reqs.lock().clone()
    }

    fn of_job(&self, job: &str) -> Vec<Req> {
        self.all().into_iter().filter(|r| r.job_id == job).collect()
    }

    /// Accepted requests per event id of `job`.
    fn accepted(&self, job: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.of_job(job).into_iter().filter(|r| r.answered == 200) {
            *m.entry(r.event_id).or_default() += 1;
        }
        m
    }

    /// Waits (bounded) until every event of `events` has an accepted request.
    async fn wait_accepted(&self, job: &str, events: &BTreeSet<String>, bound: Duration) {
        let until = Instant::now() + bound;
        loop {
            let got: BTreeSet<String> = self.accepted(job).into_keys().collect();
            if events.is_subset(&got) {
                return;
            }
            assert!(
                Instant::now() < until,
                "not every event of {job} was accepted within {bound:?}: want {events:?}, got {got:?}; requests: {:#?}",
                self.of_job(job).iter().map(|r| (&r.event_id, r.answered)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks `t=<unix>,v1=<hex HMAC-SHA256(key, t + "." + body)>` in Rust.
fn signature_ok(key: &str, header: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut t = None;
    let mut v1 = Vec::new();
    for p in header.split(',') {
        match p.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1.push(x.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want = hex::encode(mac.finalize().into_bytes());
    v1.contains(&want)
}

/// Runs the Python verifier (examples/python/runyard_job/webhook.py) on a request.
fn python_verify(key: &str, header: &str, body: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let module =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/runyard_job/webhook.py");
    // Loaded by path: the verifier needs the standard library only.
    let code = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("webhook", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
body = open(sys.argv[4], "rb").read()
sys.exit(0 if m.verify(sys.argv[2], sys.argv[3], body) else 1)
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(code)
        .arg(&module)
        .arg(key)
        .arg(header)
        .arg(&body_file)
        .status()
        .expect("python3 runs");
    st.success()
}

async fn endpoint_key(ts_url: &str, url: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{ts_url}/async/notify/keys"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("POST /async/notify/keys");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let v: Value = r.json().await.unwrap();
    v["key"].as_str().expect("key").to_string()
}

/// The status events of `channel` (ids), from the polling endpoint.
async fn status_events(ts: &TestServer, channel: &str, job: &str) -> Vec<Value> {
    ts.events_page(&format!("channel={channel}&limit=1000"))
        .await
        .into_iter()
        .filter(|e| e["job_id"] == job && e["type"] == "status")
        .collect()
}

async fn deliveries(url: &str, job: &str) -> Value {
    let v: Value = reqwest::get(format!("{url}/async/jobs/{job}/deliveries"))
        .await
        .expect("GET deliveries")
        .json()
        .await
        .expect("deliveries JSON");
    v
}

/// Waits (bounded) until every delivery of `job` is delivered; returns them.
async fn wait_delivered(url: &str, job: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + WAIT;
    loop {
        let v = deliveries(url, job).await;
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        if list.len() >= n && list.iter().all(|d| d["state"] == "delivered") {
            return list;
        }
        assert!(
            Instant::now() < until,
            "deliveries of {job} not all delivered: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The case every backend passes: a job with `notify: {events: ["status"]}` and a receiver that
/// fails three times per event: exactly one accepted delivery per status event, 4 attempts each
/// recorded on the job, valid signatures (Rust and Python), nothing for an unnotified job.
async fn delivers_each_event_once(ts: &TestServer, recv: &Receiver, channel: &str) {
    let key = endpoint_key(&ts.url, &recv.url).await;
    let id = ts
        .submit_ok(json!({
            "type": "runyard.noop",
            "channel": channel,
            "notify": {"url": recv.url, "events": ["status"]},
        }))
        .await;
    let quiet = ts
        .submit_ok(json!({"type": "runyard.noop", "channel": channel}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS");
    assert_eq!(
        job["notify"],
        json!({"url": recv.url, "events": ["status"]})
    );
    ts.wait_terminal(&quiet, WAIT).await;
    let events = status_events(ts, channel, &id).await;
    assert!(
        events.len() >= 3,
        "queued, running, success at least: {events:?}"
    );
    let want: BTreeSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    recv.wait_accepted(&id, &want, WAIT).await;
    let list = wait_delivered(&ts.url, &id, want.len()).await;
    // A moment for any duplicate to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let accepted = recv.accepted(&id);
    assert_eq!(
        accepted,
        want.iter()
            .map(|e| (e.clone(), 1))
            .collect::<BTreeMap<_, _>>(),
        "exactly one accepted delivery per status event"
    );
    let reqs = recv.of_job(&id);
    assert_eq!(
        reqs.len(),
        4 * want.len(),
        "3 failures + 1 success per event"
    );
    assert!(
        recv.of_job(&quiet).is_empty(),
        "a job without notify sends nothing"
    );
    // Every request is signed with the endpoint's key, over the exact body; the body is the event.
    for r in &reqs {
        assert!(
            signature_ok(&key, &r.signature, &r.body),
            "bad signature {r:?}"
        );
        assert!(!signature_ok("another-key", &r.signature, &r.body));
        let ev: Value = serde_json::from_slice(&r.body).unwrap();
        let stored = events
            .iter()
            .find(|e| e["id"] == ev["id"])
            .expect("a stored event");
        assert_eq!(&ev, stored, "the body is the event as the streams show it");
        assert!(!r.delivery.is_empty());
    }
    let last = reqs.last().unwrap();
    assert!(
        python_verify(&key, &last.signature, &last.body),
        "the Python verifier accepts it"
    );
    let mut tampered = last.body.to_vec();
    tampered.push(b' ');
    assert!(
        !python_verify(&key, &last.signature, &tampered),
        "and refuses a changed body"
    );
    // Every attempt is recorded on the job.
    assert_eq!(list.len(), want.len());
    for d in &list {
        let statuses: Vec<Value> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].clone())
            .collect();
        assert_eq!(
            statuses,
            vec![json!(500), json!(500), json!(500), json!(200)],
            "{d:#}"
        );
        assert_eq!(d["attempt_count"], 4);
        assert!(d["attempts"][0]["error"].as_str().unwrap().contains("500"));
        assert!(d["attempts"][3]["error"].is_null());
        assert!(want.contains(d["event_id"].as_str().unwrap()));
    }
    let text = serde_json::to_string(&job).unwrap() + &serde_json::to_string(&list).unwrap();
    assert!(!text.contains(&key), "the key is never shown on the job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_after_failures_embedded() {
    let recv = Receiver::start(3).await;
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    delivers_each_event_once(&ts, &recv, "wh-embedded").await;
    let data = std::fs::read(ts.data_dir().join("runyard.db")).unwrap_or_default();
    let key = endpoint_key(&ts.url, &recv.url).await;
    assert!(
        !data.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key is not in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_after_failures_redis_two_nodes() {
    let r = TestRedis::start();
    let cfg = format!(
        "redis = \"{}\"\nmaster_key = \"{MASTER_KEY}\"\n{NOTIFY}\n[store]\nprefix = \"{}\"\n",
        r.url, r.prefix
    );
    let recv = Receiver::start(3).await;
    let a = TestServer::builder(RUNNERS).config(&cfg).start().await;
    assert_eq!(a.get("/health").await.1["store"], "redis");
    // A second node on the same Redis: both delivery loops claim; none may double a delivery.
    let b = TestServer::builder(RUNNERS).config(&cfg).start().await;
    delivers_each_event_once(&a, &recv, "wh-redis").await;
    // More jobs at once, terminal events only, deliveries shared by the two nodes.
    let mut ids = Vec::new();
    for i in 0..6 {
        let ts = if i % 2 == 0 { &a } else { &b };
        ids.push(
            ts.submit_ok(json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
                .await,
        );
    }
    for id in &ids {
        a.wait_terminal(id, WAIT).await;
        let list = wait_delivered(&b.url, id, 1).await;
        assert_eq!(list.len(), 1, "one terminal event: {list:?}");
        assert_eq!(list[0]["event_status"], "SUCCESS");
        let want: BTreeSet<String> = [list[0]["event_id"].as_str().unwrap().to_string()].into();
        recv.wait_accepted(id, &want, WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in &ids {
        assert_eq!(recv.accepted(id).values().sum::<usize>(), 1, "{id}");
        assert_eq!(recv.of_job(id).len(), 4, "{id}: no attempt made twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_and_bad_input_are_refused() {
    let recv = Receiver::start(0).await;
    let ts = TestServer::builder(RUNNERS)
        .config(
            r#"
[notify]
retry_initial = "100ms"
retry_max = "200ms"
horizon = "1s"

[[notify.defaults]]
types = ["runyard.noop"]
url = "http://localhost:9/never"
events = ["terminal"]
"#,
        )
        .start()
        .await;
    let port = recv
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let cases = [
        (json!({"url": recv.url}), "notify.url", "loopback"),
        (
            json!({"url": format!("http://localhost:{port}/hooks/runyard")}),
            "notify.url",
            "loopback",
        ),
        (json!({"url": "http://[::1]/x"}), "notify.url", "loopback"),
        (json!({"url": "http://10.1.2.3/x"}), "notify.url", "private"),
        (
            json!({"url": "http://169.254.169.254/latest"}),
            "notify.url",
            "link-local",
        ),
        (
            json!({"url": "http://[::ffff:127.0.0.1]/x"}),
            "notify.url",
            "IPv4-mapped",
        ),
        (json!({"url": "ftp://example.com/x"}), "notify.url", "http"),
        (json!({"url": "http://"}), "notify.url", ""),
        (
            json!({"url": "https://example.com/x", "events": ["done"]}),
            "notify.events[0]",
            "done",
        ),
        (
            json!({"url": "https://example.com/x", "events": []}),
            "notify.events",
            "",
        ),
        (
            json!({"url": "https://example.com/x", "secret": "x"}),
            "secret",
            "",
        ),
    ];
    for (notify, field, word) in cases {
        let (st, v) = ts
            .submit(json!({"type": "runyard.noop", "notify": notify}))
            .await;
        assert_eq!(st, 422, "{notify}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(field) && msg.contains(word), "{notify}: {v}");
    }
    assert_eq!(ts.count_jobs(None).await, 0, "nothing stored");
    // A schedule's job is checked the same way.
    let sched = json!({"name": "wh", "cron": "@hourly",
        "job": {"type": "runyard.noop", "notify": {"url": recv.url}}});
    let (st, v) = ts.post("/async/schedules", Some(&sched)).await;
    assert_eq!(st, 422, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("job") && msg.contains("notify.url") && msg.contains("loopback"),
        "{v}"
    );
    assert_eq!(
        ts.get("/async/schedules/wh").await.0,
        404,
        "no schedule stored"
    );
    assert!(recv.all().is_empty());
    let (st, v) = ts
        .post("/async/notify/keys", Some(&json!({"url": "gopher://x/"})))
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`url`"),
        "{v}"
    );
    // A default per type, checked at send time: `localhost` resolves to loopback, refused at
    // every attempt (nothing reaches it), given up at the horizon.
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["notify"]["url"], "http://localhost:9/never");
    let until = Instant::now() + WAIT;
    let d = loop {
        let v = deliveries(&ts.url, &id).await;
        if v["deliveries"][0]["state"] == "given_up" {
            break v["deliveries"][0].clone();
        }
        assert!(Instant::now() < until, "not given up: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts = d["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{d:#}");
    for a in attempts {
        assert!(a["status"].is_null(), "{d:#}");
        let e = a["error"].as_str().unwrap();
        assert!(e.contains("loopback") && e.contains("allow_private"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_private_lets_a_loopback_receiver_in() {
    let recv = Receiver::start(0).await;
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    let id = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
        .await;
    ts.wait_terminal(&id, WAIT).await;
    wait_delivered(&ts.url, &id, 1).await;
    assert_eq!(recv.of_job(&id).len(), 1);
    assert_eq!(recv.of_job(&id)[0].runyard_status, "SUCCESS");
}

// ---- kill -9 of a real `runyard serve` between attempts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_kill_9_between_attempts() {
    kill_9_between_attempts("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_kill_9_between_attempts_redis() {
    let r = TestRedis::start();
    kill_9_between_attempts(&format!(
        "redis = \"{}\"\nmaster_key = \"{MASTER_KEY}\"\n[store]\nprefix = \"{}\"\n",
        r.url, r.prefix
    ))
    .await;
}

/// A real `runyard serve` (with `config` added: the store) is killed with SIGKILL once two failed
/// attempts are recorded, and started again: the delivery goes on, accepted exactly once. Each
/// failed attempt is logged with the job and the receiver's host, never the URL's query.
async fn kill_9_between_attempts(store: &str) {
    let recv = Receiver::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runyard.toml");
    let log = dir.path().join("server.log");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {:?}
{store}
{RUNNERS}
[notify]
allow_private = true
retry_initial = "2s"
retry_max = "4s"
"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut s = Server::start(&config, &log);
    s.wait_healthy(WAIT).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/async/jobs", s.url))
        .json(&json!({"type": "runyard.noop", "notify": {"url": format!("{}?secret=q-s3cret", recv.url)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait until two failed attempts are recorded (the third is 2-4 s away), then kill -9.
    let until = Instant::now() + WAIT;
    loop {
        let v = deliveries(&s.url, &id).await;
        let outcomes: Vec<&Value> = v["deliveries"][0]["attempts"]
            .as_array()
            .map(|a| a.iter().map(|a| &a["outcome"]).collect())
            .unwrap_or_default();
        if outcomes == [&json!("failed"), &json!("failed")] {
            assert_eq!(v["deliveries"][0]["state"], "pending");
            break;
        }
        assert!(Instant::now() < until, "two attempts not recorded: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second attempt's log line follows its record: seen in the log before the kill (a
    // kill between the two lost the line, CI run 47e, and the count below was 2).
    let logged = |n: usize| {
        let logs = std::fs::read_to_string(&log).unwrap_or_default();
        logs.lines()
            .filter(|l| l.contains("webhook attempt failed") && l.contains(&id))
            .count()
            >= n
    };
    while !logged(2) {
        assert!(
            Instant::now() < until,
            "the second failed attempt not logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    assert_eq!(recv.of_job(&id).len(), 2, "killed between attempts 2 and 3");
    let mut s = Server::start(&config, &log);
    s.wait_healthy(WAIT).await;
    let list = wait_delivered(&s.url, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reqs = recv.of_job(&id);
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![500, 500, 500, 200],
        "the delivery went on after the restart, accepted once"
    );
    assert_eq!(list[0]["attempt_count"], 4, "{list:#?}");
    let outcomes: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        ["failed", "failed", "failed", "accepted"],
        "killed between attempts, none unknown: {list:#?}"
    );
    assert_eq!(
        reqs[0].delivery, reqs[3].delivery,
        "one delivery id throughout"
    );
    let key = endpoint_key(&s.url, &recv.url).await;
    assert!(python_verify(&key, &reqs[3].signature, &reqs[3].body));
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logs.contains(&key), "the key is never logged");
    assert!(
        !logs.contains("q-s3cret"),
        "the URL's query is never logged"
    );
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("webhook attempt failed") && l.contains(&id))
        .collect();
    assert_eq!(failed.len(), 3, "each failed attempt logged once: {logs}");
    assert!(
        failed
            .iter()
            .all(|l| l.contains("127.0.0.1") && l.contains("answered 500")),
        "{failed:#?}"
    );
}

/// A slow receiver never gets more than `notify.concurrency` requests at once: deliveries wait in
/// the store, not in memory; all of them arrive in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_in_flight_are_bounded_by_concurrency() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let (n2, m2, t2) = (now.clone(), max.clone(), total.clone());
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::post(move || {
            let (now, max, total) = (n2.clone(), m2.clone(), t2.clone());
            async move {
                let cur = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(cur, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                total.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("{NOTIFY}\nconcurrency = 2\n"))
        .start()
        .await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            ts.submit_ok(json!({"type": "runyard.noop", "notify": {"url": url}}))
                .await,
        );
    }
    for id in &ids {
        ts.wait_terminal(id, WAIT).await;
        wait_delivered(&ts.url, id, 1).await;
    }
    assert_eq!(total.load(Ordering::SeqCst), 12);
    let m = max.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&m),
        "at most 2 attempts in flight, saw {m}"
    );
}

/// `runyard_store_operation_seconds_count{op="deliveries_next_due"}` of the server's /metrics.
async fn next_due_looks(ts: &TestServer) -> f64 {
    ts.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("runyard_store_operation_seconds_count{"))
        .filter(|l| l.contains("op=\"deliveries_next_due\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With no webhook configured, jobs cost the delivery loop no reads: it looks at the store after
/// a burst of commits that appended events (one look per 20 ms at most) or once a second, not at
/// every status notice (several per job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_loop_does_not_read_the_store_for_every_job() {
    const N: usize = 1000;
    let ts = TestServer::start(RUNNERS).await;
    let items: Vec<Value> = (0..N)
        .map(|n| json!({"type": "runyard.echo", "args": {"n": n}}))
        .collect();
    let before = next_due_looks(&ts).await;
    let t0 = Instant::now();
    let (st, v) = ts
        .post("/async/jobs/batch", Some(&json!({"jobs": items})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let deadline = Instant::now() + WAIT;
    loop {
        let all = ts.list_all(&[("type", "runyard.echo")], 1000).await;
        if all.len() == N && all.iter().all(|j| support::is_terminal(&j["status"])) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs not finished in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t0.elapsed();
    let looks = next_due_looks(&ts).await - before;
    // The design's bound: one look per 20 ms gap after events, one per second of polling, and a
    // few for the batch's own commit and the attempts' `done` wake-ups.
    let bound = elapsed.as_millis() as f64 / 20.0 + elapsed.as_secs_f64() + 10.0;
    assert!(
        looks <= bound,
        "{looks} looks at the deliveries for {N} jobs in {elapsed:?} (bound {bound})"
    );
    eprintln!("{N} jobs in {elapsed:?}: {looks} looks at the deliveries");
}

/// A receiver that holds the first request it gets until [`Holding::release`] (as a receiver
/// that accepts while its sender dies would), then answers 200 to it and to every other.
#[derive(Clone)]
struct Holding {
    url: String,
    /// Each request's `Runyard-Delivery` and event id.
    reqs: Arc<Mutex<Vec<(String, String)>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Holding {
    async fn start() -> Holding {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let h = Holding {
            url: format!("http://{}/hooks/held", listener.local_addr().unwrap()),
            reqs: Arc::default(),
            release: Arc::default(),
        };
        let h2 = h.clone();
        let app = axum::Router::new().route(
            "/hooks/held",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let h = h2.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let delivery = headers
                        .get("runyard-delivery")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let first = {
                        let mut reqs = h.reqs.lock();
                        reqs.push((delivery, v["id"].as_str().unwrap_or("").to_string()));
                        reqs.len() == 1
                    };
                    if first {
                        let _ = tokio::time::timeout(WAIT * 3, h.release.notified()).await;
                    }
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        h
    }

    fn count(&self) -> usize {
        self.reqs.lock().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_sender_was_killed_shows_as_unknown() {
    killed_while_the_receiver_holds_the_request("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_sender_was_killed_shows_as_unknown_redis() {
    let r = TestRedis::start();
    killed_while_the_receiver_holds_the_request(&format!(
        "redis = \"{}\"\nmaster_key = \"{MASTER_KEY}\"\n[store]\nprefix = \"{}\"\n",
        r.url, r.prefix
    ))
    .await;
}

/// A real `runyard serve` (with `config` added: the store) is killed with SIGKILL while the
/// receiver holds its request, which it then accepts: the sender never recorded the answer. The
/// listing showed the attempt in flight while it was made (stored before the request went out);
/// after the restart the delivery is sent again, accepted, and its log shows both attempts: the
/// first as unknown, by the killed process, the second accepted, by the new one.
async fn killed_while_the_receiver_holds_the_request(store: &str) {
    let recv = Holding::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runyard.toml");
    let log = dir.path().join("server.log");
    // `timeout` 5 s: the kill comes well within it (the hold, on Redis: 15 s).
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{store}\n{RUNNERS}\n[notify]\nallow_private = true\n\
             timeout = \"5s\"\nretry_initial = \"100ms\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut s = Server::start(&config, &log);
    s.wait_healthy(WAIT).await;
    let first_pid = s.pid();
    let r = reqwest::Client::new()
        .post(format!("{}/async/jobs", s.url))
        .json(&json!({"type": "runyard.noop", "notify": {"url": recv.url}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let until = Instant::now() + WAIT;
    while recv.count() == 0 {
        assert!(Instant::now() < until, "no request: {}", s.log_tail());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The receiver has the request: the attempt was stored before it went out.
    let v = deliveries(&s.url, &id).await;
    let d = &v["deliveries"][0];
    assert_eq!(d["attempt_count"], 1, "{v:#}");
    let a = &d["attempts"][0];
    assert_eq!(a["outcome"], "in_flight", "{v:#}");
    assert!(a["status"].is_null() && a["duration_ms"].is_null(), "{v:#}");
    let killed_by = a["by"].as_str().unwrap_or_default().to_string();
    assert!(killed_by.ends_with(&format!("-{first_pid}")), "{v:#}");
    s.kill9();
    recv.release.notify_one();
    let mut s = Server::start(&config, &log);
    s.wait_healthy(WAIT).await;
    let list = wait_delivered(&s.url, &id, 1).await;
    let d = &list[0];
    assert_eq!(d["attempt_count"], 2, "{d:#}");
    let (lost, sent) = (&d["attempts"][0], &d["attempts"][1]);
    assert_eq!(lost["outcome"], "unknown", "{d:#}");
    assert_eq!(lost["by"], killed_by.as_str());
    assert!(
        lost["status"].is_null() && lost["duration_ms"].is_null(),
        "{d:#}"
    );
    assert_eq!(
        lost["error"],
        "unknown: the sender was lost before it recorded an answer"
    );
    assert_eq!(
        (&sent["outcome"], &sent["status"]),
        (&json!("accepted"), &json!(200)),
        "{d:#}"
    );
    assert!(sent["by"]
        .as_str()
        .is_some_and(|b| b.ends_with(&format!("-{}", s.pid()))));
    let reqs = recv.reqs.lock().clone();
    assert_eq!(reqs.len(), 2, "sent again after the restart: {reqs:?}");
    assert_eq!(reqs[0], reqs[1], "the same delivery and event");
}
