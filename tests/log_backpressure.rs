//! A job that writes faster than its lines can be stored waits in its write (backpressure, as
//! with Docker's and Kubernetes' logs) rather than losing lines while the store keeps up: a real
//! child printing 30,000 lines at once has every one of them in `/logs`, in order, on both
//! backends (its lines were dropped past the 5,000 waiting before the first batch).
//!
//! Real components: a runyard server on 127.0.0.1:0 (embedded store, or a real redis-server on a
//! free port), `seq` as a local-runner child process.

mod redis_support;
mod support;

use serde_json::json;
use support::*;

const RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["sh.flood"]
max_attempts = 1
command = ["/bin/sh", "-c", "seq 1 30000; echo done >&2"]
"#;

async fn a_flood_is_stored_whole(redis: Option<redis_support::TestRedis>) {
    let store = redis.as_ref().map_or_else(String::new, |r| {
        r.server_config("log-backpressure-test-master-key-0123456789")
    });
    // Retention keeps more than the flood, so every line stored is still there to read.
    let config = format!("{store}[retention]\nlog_lines_per_job = 40000\n");
    let ts = TestServer::builder(RUNNERS).config(&config).start().await;
    let id = ts.submit_ok(json!({"type": "sh.flood"})).await;
    let job = ts.wait_terminal(&id, WAIT * 2).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    let lines = ts.numbered_lines_stored(&id, "stdout", 30_000).await;
    assert!(
        lines.iter().any(|(s, l)| s == "stderr" && l == "done"),
        "the stderr line too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_writing_30000_lines_at_once_has_all_of_them_stored_embedded() {
    a_flood_is_stored_whole(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_writing_30000_lines_at_once_has_all_of_them_stored_redis() {
    a_flood_is_stored_whole(Some(redis_support::TestRedis::start())).await;
}
