//! One slow or dead webhook receiver delays no other receiver's webhooks (docs/notifications.md,
//! "One receiver at a time"): a real receiver on 127.0.0.1 that reads each POST and never answers,
//! 64 jobs notifying it, then one job notifying a healthy receiver, on the embedded store and on
//! Redis. The healthy delivery must arrive within a few seconds, while the hanging receiver gets
//! at most `notify.per_endpoint` requests at once and its deliveries stay pending (none lost).
//! The same with a backlog of 2,100 deliveries at the hanging receiver (on Redis, past the 2,000
//! due deliveries the claim once looked past at most). The hanging receiver's path is a secret
//! (as a Slack-style webhook's is): on Redis no key name and no member of `P:dlv:eps` shows it.

mod redis_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use redis_support::TestRedis;
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

const MASTER_KEY: &str = "webhook-test-master-key-0123456789abcdef";

/// The receivers are on 127.0.0.1; an attempt of the hanging one lasts 10 s (the default), far
/// beyond the bound the healthy delivery is held to.
const NOTIFY: &str = r#"
[notify]
allow_private = true
timeout = "10s"
"#;

/// Jobs notifying the hanging receiver: four times `notify.concurrency` (16).
const HANGING_JOBS: usize = 64;

/// How long the healthy receiver's delivery may take: "a few seconds", while every attempt at
/// the hanging receiver holds on for 10 s.
const HEALTHY_WITHIN: Duration = Duration::from_secs(5);

/// Requests a receiver got, and the most it held at once (a request is held until answered or
/// dropped by the client).
#[derive(Default)]
struct Seen {
    total: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Counts a request held until dropped.
struct Held(Arc<Seen>);

impl Held {
    fn new(s: &Arc<Seen>) -> Held {
        s.total.fetch_add(1, Ordering::SeqCst);
        let now = s.now.fetch_add(1, Ordering::SeqCst) + 1;
        s.most.fetch_max(now, Ordering::SeqCst);
        Held(s.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The path of the hanging receiver: the secret of its webhook URL.
const SECRET: &str = "SECRET-PATH-TOKEN";

/// A receiver at `url` (`path`) that answers after `answer_after` (`None`: never).
async fn receiver(path: &str, answer_after: Option<Duration>) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a receiver");
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let got = Arc::new(Seen::default());
    let g = got.clone();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |_body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                let _held = Held::new(&g);
                match answer_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// The deliveries of `job` as the API shows them.
async fn deliveries(ts: &TestServer, job: &str) -> Vec<Value> {
    let (st, v) = ts.get(&format!("/async/jobs/{job}/deliveries")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Returns the hanging receiver's URL (its deliveries still pending).
async fn one_hanging_receiver_delays_no_other(ts: &TestServer) -> String {
    let (hang_url, hang_got) = receiver(&format!("/hooks/{SECRET}"), None).await;
    let (ok_url, ok_got) = receiver("/hook", Some(Duration::ZERO)).await;
    let items: Vec<Value> = (0..HANGING_JOBS)
        .map(|_| json!({"type": "runyard.noop", "notify": {"url": hang_url}}))
        .collect();
    let (st, v) = ts
        .post("/async/jobs/batch", Some(&json!({"jobs": items})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let hanging: Vec<String> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["job_id"].as_str().expect("stored").to_string())
        .collect();
    assert_eq!(hanging.len(), HANGING_JOBS, "{v}");
    for id in &hanging {
        ts.wait_terminal(id, WAIT).await;
    }
    // The hanging receiver has its requests in hand (and answers none of them).
    support::eventually("a request at the hanging receiver", WAIT, || async {
        (hang_got.total.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;

    let t0 = Instant::now();
    let victim = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": {"url": ok_url}}))
        .await;
    ts.wait_terminal(&victim, WAIT).await;
    let until = t0 + WAIT;
    loop {
        let list = deliveries(ts, &victim).await;
        if list.len() == 1 && list[0]["state"] == "delivered" {
            break;
        }
        assert!(
            Instant::now() < until,
            "not delivered in {:?}: {list:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t0.elapsed();
    assert_eq!(ok_got.total.load(Ordering::SeqCst), 1, "delivered once");
    assert!(
        took <= HEALTHY_WITHIN,
        "the healthy receiver's webhook took {took:?} behind {HANGING_JOBS} deliveries to a \
         receiver that never answers (bound {HEALTHY_WITHIN:?})"
    );
    // The hanging receiver held at most its share of the slots (`notify.per_endpoint`, 4)...
    let most = hang_got.most.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "{most} requests at once to one receiver (notify.per_endpoint = 4)"
    );
    // ...and its deliveries wait in the store, none lost, none given up.
    let mut pending = 0;
    for id in &hanging {
        let list = deliveries(ts, id).await;
        assert_eq!(list.len(), 1, "{id}: {list:?}");
        assert_eq!(list[0]["state"], "pending", "{id}: {list:?}");
        pending += 1;
    }
    assert_eq!(pending, HANGING_JOBS);
    // ...which `/metrics` shows.
    assert_eq!(
        ts.metric("runyard_webhook_deliveries_pending").await,
        Some(HANGING_JOBS as f64)
    );
    hang_url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hanging_receiver_delays_no_other_embedded() {
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    one_hanging_receiver_delays_no_other(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hanging_receiver_delays_no_other_redis() {
    let r = TestRedis::start();
    let cfg = format!(
        "redis = \"{}\"\nmaster_key = \"{MASTER_KEY}\"\n{NOTIFY}\n[store]\nprefix = \"{}\"\n",
        r.url, r.prefix
    );
    let ts = TestServer::builder(RUNNERS).config(&cfg).start().await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    let hang_url = one_hanging_receiver_delays_no_other(&ts).await;
    no_secret_in_key_names(&r, &hang_url, HANGING_JOBS);
}

/// With `pending` deliveries to `url` waiting in Redis: no key name (`SCAN`) and no member of
/// `P:dlv:eps` holds the URL's secret path; the endpoint's pending set is named by the SHA-1 hex of
/// the endpoint, as Redis's own `redis.sha1hex` makes it, and holds them all.
fn no_secret_in_key_names(r: &TestRedis, url: &str, pending: usize) {
    let p = &r.prefix;
    let keys = r.cli(&["--scan", "--pattern", &format!("{p}:*")]);
    assert!(keys.contains(&format!("{p}:dlv:eps")), "{keys}");
    let shown: Vec<&str> = keys.lines().filter(|k| k.contains(SECRET)).collect();
    assert!(
        shown.is_empty(),
        "key names show the webhook's secret path: {shown:?}"
    );
    let eps = r.cli(&["ZRANGE", &format!("{p}:dlv:eps"), "0", "-1"]);
    assert!(
        !eps.contains(SECRET),
        "P:dlv:eps shows the secret path: {eps}"
    );
    let id = r.cli(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", url]);
    let id = id.trim();
    assert_eq!(id.len(), 40, "{id}");
    assert_eq!(eps.trim(), id, "the endpoint's id, alone");
    let n = r.cli(&["ZCARD", &format!("{p}:dlv:ep:{id}")]);
    assert_eq!(n.trim(), pending.to_string(), "its pending deliveries");
}

/// Deliveries to the hanging receiver in the deep backlog: more than the 2,000 due deliveries the
/// claim on Redis once looked past at most (then the healthy receiver waited behind them until
/// the backlog drained or was given up).
const DEEP_BACKLOG: usize = 2_100;

/// Submits `n` jobs notifying `url`, in batches.
async fn submit_notifying(ts: &TestServer, url: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let items: Vec<Value> = (0..k)
            .map(|_| json!({"type": "runyard.noop", "notify": {"url": url}}))
            .collect();
        let (st, v) = ts
            .post("/async/jobs/batch", Some(&json!({"jobs": items})))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let stored = v["results"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["job_id"].is_string()).count());
        assert_eq!(stored, k, "{v}");
        left -= k;
    }
}

/// A backlog of any depth at one receiver delays no other: 2,100 deliveries due at a receiver
/// that never answers (all but its `notify.per_endpoint` in flight wait, due, in the store),
/// then one job notifying a healthy receiver: its webhook arrives within a few seconds.
async fn a_backlog_of_thousands_delays_no_other(ts: &TestServer) {
    let (hang_url, hang_got) = receiver(&format!("/hooks/{SECRET}"), None).await;
    let (ok_url, ok_got) = receiver("/hook", Some(Duration::ZERO)).await;
    submit_notifying(ts, &hang_url, DEEP_BACKLOG).await;
    // Every job ended and wrote its delivery; the hanging receiver holds its share.
    support::eventually("the backlog stored", Duration::from_secs(60), || async {
        (ts.metric("runyard_webhook_deliveries_pending").await == Some(DEEP_BACKLOG as f64))
            .then_some(())
    })
    .await;
    support::eventually("requests at the hanging receiver", WAIT, || async {
        (hang_got.now.load(Ordering::SeqCst) == 4).then_some(())
    })
    .await;

    let t0 = Instant::now();
    let victim = ts
        .submit_ok(json!({"type": "runyard.noop", "notify": {"url": ok_url}}))
        .await;
    ts.wait_terminal(&victim, WAIT).await;
    let until = t0 + WAIT;
    loop {
        let list = deliveries(ts, &victim).await;
        if list.len() == 1 && list[0]["state"] == "delivered" {
            break;
        }
        assert!(
            Instant::now() < until,
            "not delivered in {:?} behind {DEEP_BACKLOG} deliveries to a receiver that never \
             answers: {list:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t0.elapsed();
    assert_eq!(ok_got.total.load(Ordering::SeqCst), 1, "delivered once");
    assert!(
        took <= HEALTHY_WITHIN,
        "the healthy receiver's webhook took {took:?} behind {DEEP_BACKLOG} deliveries to a \
         receiver that never answers (bound {HEALTHY_WITHIN:?})"
    );
    let most = hang_got.most.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "{most} requests at once to one receiver (notify.per_endpoint = 4)"
    );
    // None of the backlog was lost or given up.
    assert_eq!(
        ts.metric("runyard_webhook_deliveries_pending").await,
        Some(DEEP_BACKLOG as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_thousands_at_one_receiver_delays_no_other_embedded() {
    let ts = TestServer::builder(RUNNERS).config(NOTIFY).start().await;
    a_backlog_of_thousands_delays_no_other(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_thousands_at_one_receiver_delays_no_other_redis() {
    let r = TestRedis::start();
    let cfg = format!("{}{NOTIFY}", r.server_config(MASTER_KEY));
    let ts = TestServer::builder(RUNNERS).config(&cfg).start().await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    a_backlog_of_thousands_delays_no_other(&ts).await;
}
