//! Webhook deliveries stored in Redis's earlier layout (every pending delivery in `P:dlv:due`
//! alone, before deliveries were also kept per endpoint: src/store/redis/deliveries.rs) are
//! delivered after an upgrade: written as that layout's `commit.lua` wrote them, one of them
//! claimed by a process lost before it recorded an answer, then a server of this build started
//! on that Redis. Also one written while it runs, as an older process beside it would. And one
//! claimed by this build while an older process's record put it back in the earlier layout: the
//! move keeps its claim's hold (no second claim, no second POST while its attempt is in flight).

mod redis_support;
mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use parking_lot::Mutex;
use redis_support::TestRedis;
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

const MASTER_KEY: &str = "webhook-test-master-key-0123456789abcdef";

const NOTIFY: &str = r#"
[notify]
allow_private = true
"#;

/// A receiver that accepts every POST at `/hook`; the bodies it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a receiver");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// A job run to its end (no webhook of its own), and its last event as the streams hold it.
async fn ended_job(ts: &TestServer) -> (String, Value) {
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_terminal(&id, WAIT).await;
    let ev = ts
        .all_events("0")
        .await
        .into_iter()
        .rfind(|e| e["job_id"] == id.as_str())
        .expect("the job's events");
    (id, ev)
}

/// A delivery of `ev` (job `job`) to `url` written as the earlier layout's `commit.lua` wrote
/// it; `lost`: with a claim whose hold ran out before its answer was recorded.
async fn write_earlier(r: &TestRedis, job: &str, ev: &Value, url: &str, lost: bool) -> u64 {
    let mut c = redis_support::raw_conn(r).await;
    let p = &r.prefix;
    let n: u64 = ::redis::cmd("INCR")
        .arg(format!("{p}:dlv:seq"))
        .query_async(&mut c)
        .await
        .expect("INCR");
    let mut stored = ev.clone();
    stored["id"] = json!("");
    let created = runyard::job::now_us() - 60_000_000;
    let k = format!("{p}:dlv:{n}");
    let mut hset = ::redis::cmd("HSET");
    hset.arg(&k)
        .arg("j")
        .arg(job)
        .arg("u")
        .arg(url)
        .arg("e")
        .arg(ev["id"].as_str().expect("event id"))
        .arg("b")
        .arg(stored.to_string())
        .arg("t")
        .arg(created)
        .arg("st")
        .arg("pending")
        .arg("n")
        .arg(0);
    let mut due = created;
    if lost {
        due = created + 1_000_000;
        let started = json!({"at": created, "by": "older-1", "outcome": "unknown",
            "status": null, "error": "unknown: the sender was lost before it recorded an answer",
            "duration_ms": 0});
        hset.arg("c")
            .arg(7)
            .arg("a")
            .arg(started.to_string())
            .arg("due")
            .arg(due);
    }
    let () = hset.query_async(&mut c).await.expect("HSET");
    let () = ::redis::pipe()
        .cmd("ZADD")
        .arg(format!("{p}:dlv:due"))
        .arg(due)
        .arg(n)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{p}:dlv:job:{job}"))
        .arg(n)
        .arg(n)
        .ignore()
        .query_async(&mut c)
        .await
        .expect("ZADD");
    n
}

/// The deliveries of `job`, once all are delivered.
async fn delivered(ts: &TestServer, job: &str) -> Vec<Value> {
    support::eventually(&format!("{job}'s deliveries delivered"), WAIT, || async {
        let (st, v) = ts.get(&format!("/async/jobs/{job}/deliveries")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        (!list.is_empty() && list.iter().all(|d| d["state"] == "delivered")).then_some(list)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_the_earlier_redis_layout_are_delivered_after_an_upgrade() {
    let r = TestRedis::start();
    let cfg = format!("{}{NOTIFY}", r.server_config(MASTER_KEY));
    let mut ts = TestServer::builder(RUNNERS).config(&cfg).start().await;
    let (url, got) = receiver().await;
    let (plain, plain_ev) = ended_job(&ts).await;
    let (lost, lost_ev) = ended_job(&ts).await;
    let (beside, beside_ev) = ended_job(&ts).await;
    ts.stop().await;

    // Stored by the earlier build; this one starts on them.
    write_earlier(&r, &plain, &plain_ev, &url, false).await;
    write_earlier(&r, &lost, &lost_ev, &url, true).await;
    ts.restart(true).await;
    let list = delivered(&ts, &plain).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["attempt_count"], 1, "{list:?}");
    // The lost claim's attempt is in the log, unknown, before the one that was accepted.
    let list = delivered(&ts, &lost).await;
    let outcomes: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, ["unknown", "accepted"], "{list:?}");
    assert_eq!(list[0]["attempt_count"], 2, "{list:?}");

    // Written while this build runs, as an older process beside it would.
    write_earlier(&r, &beside, &beside_ev, &url, false).await;
    let list = delivered(&ts, &beside).await;
    assert_eq!(list.len(), 1, "{list:?}");

    // Each event once, as its id names it.
    let mut ids: Vec<String> = got
        .lock()
        .iter()
        .map(|b| format!("{}/{}", b["job_id"], b["id"]))
        .collect();
    ids.sort();
    let mut want: Vec<String> = [plain_ev, lost_ev, beside_ev]
        .iter()
        .map(|e| format!("{}/{}", e["job_id"], e["id"]))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    // Nothing is left in the earlier layout, and nothing pending.
    assert_eq!(
        r.cli(&["EXISTS", &format!("{}:dlv:due", r.prefix)]).trim(),
        "0"
    );
    assert_eq!(
        ts.metric("runyard_webhook_deliveries_pending").await,
        Some(0.0)
    );
}

/// The id of `url`'s endpoint in key names (the SHA-1 hex of the URL up to its query), as Redis's
/// own `redis.sha1hex` makes it.
fn endpoint_id(r: &TestRedis, url: &str) -> String {
    let endpoint = url.split_once('?').map_or(url, |(head, _)| head);
    let id = r.cli(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", endpoint]);
    id.trim().to_string()
}

/// During a rolling upgrade an older process's record of a failed attempt puts its retry in
/// `P:dlv:due` (the earlier layout) after this build moved the delivery; this build then claims
/// it (its hold: `due`, `P:dlv:pend`, the endpoint's set) while it is still in `P:dlv:due` at the
/// earlier retry time. Moving it must keep the claim's hold: an earlier score would make it due
/// again while its attempt is in flight, and another claim would POST it a second time at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_earlier_layout_keeps_a_claim_of_this_build() {
    let r = TestRedis::start();
    let cfg = format!("{}{NOTIFY}", r.server_config(MASTER_KEY));
    let mut ts = TestServer::builder(RUNNERS).config(&cfg).start().await;
    let (url, got) = receiver().await;
    let (plain, plain_ev) = ended_job(&ts).await;
    let (held, held_ev) = ended_job(&ts).await;
    ts.stop().await;

    // `held`: in `P:dlv:due` at its retry time (a minute ago), and claimed by this build for
    // ten minutes more, under token 99.
    let n = write_earlier(&r, &held, &held_ev, &url, false).await;
    let hold_end = runyard::job::now_us() + 600_000_000;
    let (p, ep) = (&r.prefix, endpoint_id(&r, &url));
    let started = json!({"at": runyard::job::now_us(), "by": "this-1", "outcome": "unknown",
        "status": null, "error": "unknown: the sender was lost before it recorded an answer",
        "duration_ms": 0});
    let mut c = redis_support::raw_conn(&r).await;
    let () = ::redis::pipe()
        .cmd("HSET")
        .arg(format!("{p}:dlv:{n}"))
        .arg("c")
        .arg(99)
        .arg("a")
        .arg(started.to_string())
        .arg("due")
        .arg(hold_end)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{p}:dlv:pend"))
        .arg(hold_end)
        .arg(n)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{p}:dlv:ep:{ep}"))
        .arg(hold_end)
        .arg(n)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{p}:dlv:eps"))
        .arg(hold_end)
        .arg(&ep)
        .ignore()
        .query_async(&mut c)
        .await
        .expect("the claim of this build");
    // `plain`: due in the earlier layout; its delivery shows that a claim (and the move) ran.
    write_earlier(&r, &plain, &plain_ev, &url, false).await;
    ts.restart(true).await;
    delivered(&ts, &plain).await;
    assert_eq!(
        r.cli(&["EXISTS", &format!("{p}:dlv:due")]).trim(),
        "0",
        "moved"
    );

    // The claim is untouched: its token, due at the end of its hold in both sets.
    assert_eq!(r.cli(&["HGET", &format!("{p}:dlv:{n}"), "c"]).trim(), "99");
    for set in [format!("{p}:dlv:pend"), format!("{p}:dlv:ep:{ep}")] {
        let score = r.cli(&["ZSCORE", &set, &n.to_string()]);
        assert_eq!(score.trim(), hold_end.to_string(), "{set}");
    }
    // The receiver got `plain` only; `held` waits for its claim's hold to run out.
    let ids: Vec<Value> = got.lock().iter().map(|b| b["job_id"].clone()).collect();
    assert_eq!(ids, [json!(plain)]);
    let (st, v) = ts.get(&format!("/async/jobs/{held}/deliveries")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["deliveries"][0]["state"], "pending", "{v}");
}
