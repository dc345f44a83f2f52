//! Live event streams: a real WebSocket client and a real SSE reader follow jobs as they run.

use std::time::Duration;

use futures::StreamExt;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use serde_json::{json, Value};

async fn start(dir: &tempfile::TempDir) -> RunningServer {
    let cfg = Config::from_toml(&format!(
        r#"
data_dir = "{}"
[events]
progress_interval = "0s"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
        dir.path().display()
    ))
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    ServerBuilder::new(cfg)
        .start(listener)
        .await
        .expect("start")
}

async fn submit(base: &str, body: Value) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/async/jobs"))
        .json(&body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    r["job_id"].as_str().expect("job_id").to_string()
}

#[tokio::test]
async fn websocket_follows_a_job_from_last_id_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let base = server.url();
    // A first job, finished before the client connects: replayed from last_id=0.
    let first = submit(&base, json!({"type": "runyard.echo"})).await;
    let ws_url = format!("ws://{}/async/events/ws?last_id=0", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("connect");
    let second = submit(&base, json!({"type": "runyard.sleep", "args": {"ms": 200}})).await;
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|e| e["job_id"] == second.as_str() && e["runyard_status"] == "SUCCESS")
    {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("events in time")
            .expect("open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            seen.push(serde_json::from_str(t.as_str()).expect("event json"));
        }
    }
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    for job in [&first, &second] {
        let statuses: Vec<&str> = seen
            .iter()
            .filter(|e| e["job_id"] == job.as_str() && e["type"] == "status")
            .map(|e| e["runyard_status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["QUEUED", "STARTING", "RUNNING", "SUCCESS"],
            "job {job}"
        );
    }
    let done = seen
        .iter()
        .find(|e| e["job_id"] == second.as_str() && e["runyard_status"] == "SUCCESS")
        .unwrap();
    assert_eq!(done["status"], "done");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_and_bad_last_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let base = server.url();
    let a = submit(&base, json!({"type": "runyard.noop"})).await;
    // Wait until a finished, and note its last event id.
    let http = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..200 {
        let page: Value = http
            .get(format!("{base}/api/v1/async_event/?last_id=0"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let evs = page["result"].as_array().unwrap().clone();
        if evs
            .iter()
            .any(|e| e["job_id"] == a.as_str() && e["runyard_status"] == "SUCCESS")
        {
            last = evs.last().unwrap()["id"].as_str().unwrap().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!last.is_empty(), "first job finished");
    let bad = http
        .get(format!("{base}/async/events/sse"))
        .header("Last-Event-ID", "not-a-number")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Two cursors: refused, not one of them picked.
    let two = http
        .get(format!("{base}/async/events/sse"))
        .header("Last-Event-ID", &last)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 400);
    let body: Value = two.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_last_id", "{body}");
    let resp = http
        .get(format!("{base}/async/events/sse"))
        .header("Last-Event-ID", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = submit(&base, json!({"type": "runyard.noop"})).await;
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !text.contains("\"SUCCESS\"") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("sse in time")
            .expect("open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let datas: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert!(!datas.is_empty());
    assert!(
        datas.iter().all(|e| e["job_id"] == b.as_str()),
        "only events after Last-Event-ID: {datas:?}"
    );
    assert_eq!(datas[0]["runyard_status"], "QUEUED");
    server.stop().await.unwrap();
}
