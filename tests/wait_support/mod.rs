//! Helpers of the waiting-job tests (`tests/waiting.rs`, `tests/waiting_size.rs`): the service
//! runner they run jobs on, writing a signal record, reading `signal_ids`, and holding a job to
//! WAITING for a while. The test file declares `mod support;` and `mod wait_support;`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestServer;

/// A service runner for the `runyard.*` types, one job at a time.
pub const RUNNERS: &str = r#"
[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]
concurrency = 1
"#;

/// Writes one record of `key` (`POST /async/signals/{key}`, 201); its answer.
pub async fn signal(ts: &TestServer, key: &str) -> Value {
    let (st, v) = ts.post(&format!("/async/signals/{key}"), None).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// The numbers of a `signal_ids` array (empty when it is not one).
pub fn seqs(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Stays WAITING for `hold` (checked several times); the job as last read.
pub async fn still_waiting(ts: &TestServer, id: &str, hold: Duration) -> Value {
    let until = Instant::now() + hold;
    loop {
        let j = ts.get_job(id).await;
        assert_eq!(j["status"], "WAITING", "released too early: {j:#}");
        if Instant::now() >= until {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
