//! Event streams never take the API's last connections: with `api.max_connections = 40`, streams
//! (WebSocket, SSE, waiting long polls) are refused once they would leave fewer than the reserve
//! (16 here) for ordinary requests, and `/health` and a submit on new connections still answer.
//! A real server on port 0, real WebSocket clients; every wait is bounded.

mod support;
mod ws_support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use support::{TestServer, WAIT};
use tokio_tungstenite::tungstenite::Message;
use ws_support::Ws;

const BUILTINS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

/// The API's connection cap of the test, and what streams may take of it (40 less 16 kept).
const API_CAP: usize = 40;
const STREAM_CAP: usize = 24;

fn open_streams(ts: &TestServer) -> u64 {
    ts.running().app.events.stats().open
}

/// Opens one more WebSocket: `Ok` once its stream is registered, `Err(close code and reason)`
/// when the server refuses it. Panics when the connection is not even served in time (every
/// API connection taken).
async fn one_more(ts: &TestServer, held: usize) -> Result<Ws, (u16, String)> {
    let url = format!("{}/async/events/ws", ts.url.replacen("http://", "ws://", 1));
    let Ok(upgraded) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await
    else {
        panic!(
            "WebSocket {} not served in time: the API has no connection left",
            held + 1
        );
    };
    let (mut ws, _) = upgraded.expect("upgrade");
    let decided = tokio::time::timeout(WAIT, async {
        loop {
            if open_streams(ts) > held as u64 {
                return None;
            }
            tokio::select! {
                m = ws.next() => return Some(m),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("the stream is admitted or refused in time");
    match decided {
        None => Ok(ws),
        Some(Some(Ok(Message::Close(Some(f))))) => Err((f.code.into(), f.reason.to_string())),
        // Admitted, and an event already delivered on it (a job's events still on their way
        // to the streams when it registered) before the gauge was read: admitted all the same.
        Some(Some(Ok(Message::Text(_)))) if open_streams(ts) > held as u64 => Ok(ws),
        Some(other) => panic!("unexpected first message: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_leave_connections_for_health_and_submits() {
    let ts = TestServer::builder(BUILTINS)
        .config(&format!("[api]\nmax_connections = {API_CAP}"))
        .start()
        .await;
    let mut held = Vec::new();
    let (code, reason) = loop {
        assert!(held.len() <= API_CAP, "no stream refused");
        match one_more(&ts, held.len()).await {
            Ok(ws) => held.push(ws),
            Err(refused) => break refused,
        }
    };
    assert_eq!(held.len(), STREAM_CAP, "streams admitted");
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("api.max_connections"), "{reason}");
    // SSE is refused too, with its documented answer.
    let sse = ts
        .client
        .get(ts.at("/async/events/sse"))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status().as_u16(), 503);
    let body: Value = sse.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    // A long poll does not wait (and hold its connection) while there is no room: it answers now.
    let res = tokio::time::timeout(
        WAIT,
        ts.client
            .get(ts.at("/api/v1/async_event/?wait_ms=30000"))
            .send(),
    )
    .await
    .expect("a long poll with no room answers before its wait")
    .expect("poll");
    assert_eq!(res.status().as_u16(), 200);
    // It says so, and when to come back: the usual page (backward compatible) with `Retry-After`.
    let retry = res.headers().get("retry-after").cloned();
    assert_eq!(
        retry.as_ref().and_then(|v| v.to_str().ok()),
        Some("1"),
        "a poll that could not wait says when to come back"
    );
    let page: Value = res.json().await.expect("json");
    assert!(page["result"].is_array(), "{page}");
    // A poll that does not ask to wait is an ordinary answer, even with no room.
    let res = ts
        .client
        .get(ts.at("/api/v1/async_event/"))
        .send()
        .await
        .expect("poll");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().get("retry-after").is_none());
    // Ordinary requests on new connections (a probe, a client) are served promptly.
    let fresh = || {
        reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .expect("client")
    };
    let health = fresh()
        .get(ts.at("/health"))
        .send()
        .await
        .expect("/health answers");
    assert_eq!(health.status().as_u16(), 200);
    let submit = fresh()
        .post(ts.at("/async/jobs"))
        .json(&json!({"type": "runyard.noop"}))
        .send()
        .await
        .expect("submit answers");
    assert_eq!(submit.status().as_u16(), 202);
    // A stream closed frees its place.
    drop(held.pop());
    support::eventually("a stream slot freed", WAIT, || async {
        (open_streams(&ts) == STREAM_CAP as u64 - 1).then_some(())
    })
    .await;
    held.push(one_more(&ts, held.len()).await.expect("admitted again"));
}

/// The long polls waiting are a gauge of `/metrics`; a poll that waited and got its event answers
/// without `Retry-After` (the header is only for a poll that found no room to wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_polls_are_a_gauge_and_an_answered_wait_has_no_retry_after() {
    let ts = TestServer::builder(BUILTINS).start().await;
    let gauge = "runyard_event_polls_waiting";
    assert_eq!(ts.metric(gauge).await, Some(0.0), "the gauge is there at 0");
    let client = ts.client.clone();
    let url = ts.at("/api/v1/async_event/?wait_ms=30000");
    let waiting = tokio::spawn(async move { client.get(url).send().await });
    support::eventually("the poll counted as waiting", WAIT, || async {
        (ts.metric(gauge).await == Some(1.0)).then_some(())
    })
    .await;
    let submit = ts
        .client
        .post(ts.at("/async/jobs"))
        .json(&json!({"type": "runyard.noop"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(submit.status().as_u16(), 202);
    let res = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting poll answers once an event comes")
        .expect("task")
        .expect("poll");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().get("retry-after").is_none());
    let page: Value = res.json().await.expect("json");
    assert!(
        page["result"].as_array().is_some_and(|r| !r.is_empty()),
        "{page}"
    );
    support::eventually("the gauge back to 0", WAIT, || async {
        (ts.metric(gauge).await == Some(0.0)).then_some(())
    })
    .await;
}
