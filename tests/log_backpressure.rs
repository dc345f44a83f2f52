//! A job that writes faster than its lines can be stored waits in its write (backpressure, as
//! with Docker's and Kubernetes' logs) rather than losing lines while the store keeps up: a real
//! child printing 30,000 lines at once has every one of them in `/logs`, in order, on both
//! backends (its lines were dropped past the 5,000 waiting before the first batch); so has a
//! service function logging 30,000 lines in a loop with `ServiceContext::log_wait`.
//!
//! Real components: a runyard server on 127.0.0.1:0 (embedded store, or a real redis-server on a
//! free port), `seq` as a local-runner child process.

mod redis_support;
mod support;

use serde_json::{json, Value};
use support::*;

const RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["sh.flood"]
max_attempts = 1
command = ["/bin/sh", "-c", "seq 1 30000; echo done >&2"]

[[runners]]
kind = "service"
types = ["svc.flood"]
max_attempts = 1
"#;

/// A server on the embedded store, or on `redis`, with both flooding jobs.
async fn server(redis: Option<&redis_support::TestRedis>) -> TestServer {
    let store = redis.map_or_else(String::new, |r| {
        r.server_config("log-backpressure-test-master-key-0123456789")
    });
    // Retention keeps more than the flood, so every line stored is still there to read.
    let config = format!("{store}[retention]\nlog_lines_per_job = 40000\n");
    TestServer::builder(RUNNERS)
        .config(&config)
        .service("svc.flood", |ctx| async move {
            for i in 1..=30_000 {
                ctx.log_wait(i.to_string()).await;
            }
            Ok(Value::Null)
        })
        .start()
        .await
}

async fn a_flood_is_stored_whole(redis: Option<redis_support::TestRedis>) {
    let ts = server(redis.as_ref()).await;
    let id = ts.submit_ok(json!({"type": "sh.flood"})).await;
    let job = ts.wait_terminal(&id, WAIT * 2).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    let lines = ts.numbered_lines_stored(&id, "stdout", 30_000).await;
    assert!(
        lines.iter().any(|(s, l)| s == "stderr" && l == "done"),
        "the stderr line too"
    );
}

/// A service function logging in a loop with `log_wait` waits for room: every line is stored.
async fn a_service_flood_is_stored_whole(redis: Option<redis_support::TestRedis>) {
    let ts = server(redis.as_ref()).await;
    let id = ts.submit_ok(json!({"type": "svc.flood"})).await;
    let job = ts.wait_terminal(&id, WAIT * 2).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    ts.numbered_lines_stored(&id, "job", 30_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_writing_30000_lines_at_once_has_all_of_them_stored_embedded() {
    a_flood_is_stored_whole(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_writing_30000_lines_at_once_has_all_of_them_stored_redis() {
    a_flood_is_stored_whole(Some(redis_support::TestRedis::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logging_30000_lines_in_a_loop_has_all_of_them_stored_embedded() {
    a_service_flood_is_stored_whole(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logging_30000_lines_in_a_loop_has_all_of_them_stored_redis() {
    a_service_flood_is_stored_whole(Some(redis_support::TestRedis::start())).await;
}
