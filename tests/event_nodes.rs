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
    let cfg = Config::from_toml(&format!(
        r#"
data_dir = "{data}"
redis = "{url}"
master_key = "{MASTER_KEY}"
[store]
prefix = "{prefix}"
[worker]
poll_interval = "200ms"
[events]
progress_interval = "0s"
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
