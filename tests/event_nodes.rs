//! Many API nodes on one Redis: every node serves every channel, and an event committed on any
//! node reaches the sockets of every node, read from the Redis Streams (not pub/sub).

mod redis_support;
mod ws_support;

use std::time::Duration;

use redis_support::TestRedis;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use serde_json::{json, Value};
use ws_support::*;

const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef";

async fn node(
    redis: &TestRedis,
    dir: &tempfile::TempDir,
    name: &str,
    worker: bool,
) -> RunningServer {
    node_with(redis, dir, name, worker, "", "").await
}

/// [`node`] with more `[store]` and `[events]` settings.
async fn node_with(
    redis: &TestRedis,
    dir: &tempfile::TempDir,
    name: &str,
    worker: bool,
    store: &str,
    events: &str,
) -> RunningServer {
    let cfg = Config::from_toml(&format!(
        r#"
data_dir = "{data}"
redis = "{url}"
master_key = "{MASTER_KEY}"
[store]
prefix = "{prefix}"
{store}
[worker]
poll_interval = "200ms"
[events]
progress_interval = "0s"
{events}
[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
        data = dir.path().join(name).display(),
        url = redis.url,
        prefix = redis.prefix,
    ))
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    ServerBuilder::new(cfg)
        .worker(worker)
        .start(listener)
        .await
        .expect("node starts")
}

async fn submit(base: &str, channel: &str) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{base}/async/jobs"))
        .json(&json!({"type": "runyard.noop", "channel": channel}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    v["job_id"].as_str().expect("job_id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_on_one_redis_deliver_the_same_events_to_sockets_on_each() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    // Node A runs the worker; node B is an API node only (`serve --no-worker`).
    let a = node(&redis, &dir, "a", true).await;
    let b = node(&redis, &dir, "b", false).await;
    let (ua, ub) = (a.url(), b.url());
    let mut on_a = connect(&a.addr.to_string(), "channel=m").await;
    let mut on_b = connect(&b.addr.to_string(), "channel=m").await;
    let mut other_b = connect(&b.addr.to_string(), "channel=n").await;
    // Jobs submitted on both nodes; every status change after QUEUED is committed by node A.
    let mut jobs = Vec::new();
    for i in 0..10 {
        jobs.push(submit(if i % 2 == 0 { &ua } else { &ub }, "m").await);
    }
    let n_job = submit(&ub, "n").await;
    let ra = read_until(&mut on_a, Duration::from_secs(30), |e| {
        all_terminal(e, &jobs)
    })
    .await;
    let rb = read_until(&mut on_b, Duration::from_secs(30), |e| {
        all_terminal(e, &jobs)
    })
    .await;
    let rn = read_until(&mut other_b, Duration::from_secs(30), |e| {
        all_terminal(e, std::slice::from_ref(&n_job))
    })
    .await;
    let polled_a = poll_all(&ua, "m", "").await;
    let polled_b = poll_all(&ub, "m", "").await;
    assert_eq!(
        polled_a, polled_b,
        "both nodes poll the same channel stream"
    );
    assert_eq!(polled_a.len(), 40, "four events per job");
    assert_eq!(ra.events, polled_a, "the socket on node A");
    assert_eq!(rb.events, polled_a, "the socket on node B");
    assert!(rn.events.iter().all(|e| e["channel_id"] == "n"));
    assert_eq!(rn.events, poll_all(&ub, "n", "").await);
    // Resuming on the other node from a cursor read on the first: exactly the rest.
    let k = 17;
    let from = polled_a[k]["id"].as_str().unwrap();
    let mut resumed = connect(&b.addr.to_string(), &format!("channel=m&last_id={from}")).await;
    let rr = read_until(&mut resumed, Duration::from_secs(30), |e| {
        e.len() >= polled_a.len() - k - 1
    })
    .await;
    assert_eq!(rr.events, polled_a[k + 1..].to_vec());
    assert!(b.app.events.stats().tail_errors == 0);
    drop((on_a, on_b, other_b, resumed));
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A socket opened while the store is away ends with close 1011 and says how to resume, rather
/// than waiting in silence; once Redis is back, a new socket replays the channel whole. Pings
/// more often than the store's retry bound: each ping tick cancelled the stream's replay read,
/// which then started over, so the socket never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_opened_while_redis_is_away_closes_1011_and_a_later_one_replays_all() {
    // Its own Redis, which saves its data when stopped and loads it when started again.
    let mut redis = TestRedis::private(&[]);
    let dir = tempfile::tempdir().unwrap();
    // A read gives up after 2 s of Redis away (30 s by default); a ping every second.
    let a = node_with(
        &redis,
        &dir,
        "a",
        true,
        "retry = \"2s\"",
        "ping_interval = \"1s\"",
    )
    .await;
    let addr = a.addr.to_string();
    let job = submit(&a.url(), "m").await;
    let mut live = connect(&addr, "channel=m").await;
    let before = read_until(&mut live, Duration::from_secs(30), |e| {
        all_terminal(e, std::slice::from_ref(&job))
    })
    .await;
    drop(live);
    redis.stop();
    let mut ws = connect(&addr, "channel=m").await;
    let r = read_to_close(&mut ws, Duration::from_secs(30)).await;
    let (code, reason) = r.closed.clone().unwrap_or_default();
    assert_eq!(code, 1011, "{r:?}");
    assert!(reason.contains("store unavailable"), "{r:?}");
    assert!(r.events.is_empty(), "{r:?}");
    redis.restart();
    let mut again = connect(&addr, "channel=m").await;
    let after = read_until(&mut again, Duration::from_secs(30), |e| {
        e.len() >= before.events.len()
    })
    .await;
    assert_eq!(after.events, before.events, "the channel replayed whole");
    drop(again);
    a.stop().await.unwrap();
}
