//! Event ids and cursors: the `last_id` parsers of both backends (embedded: an integer; Redis: a
//! stream id `ms-seq`), and the query strings of the endpoints that take them, through the real
//! router: the polling endpoint (`last_id`, `channel`, `limit`, `wait_ms`), the SSE endpoint
//! (`last_id` query or `Last-Event-ID` header), the job list (`cursor`, `limit`, `status`,
//! `type`) and the log endpoint (`after`, `limit`).
//!
//! Byte 0 picks the mode, the rest is the text. Never a panic, never a 5xx; a parsed id is in
//! normal form and parses back to itself.
#![no_main]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use runyard::store::{redis, sqlite};
use runyard_fuzz::{check_error_shape, harness};

fn pure(s: &str) {
    match sqlite::parse_event_id(s) {
        Ok(v) => {
            assert!(v >= 0);
            assert_eq!(sqlite::parse_event_id(&v.to_string()).ok(), Some(v));
        }
        Err(e) => assert!(matches!(e, runyard::store::StoreError::BadInput(_))),
    }
    match redis::parse_event_id(s) {
        Ok(n) => {
            let (ms, seq) = n.split_once('-').expect("ms-seq");
            let ms: u64 = ms.parse().expect("ms");
            let seq: u64 = seq.parse().expect("seq");
            assert_eq!(n, format!("{ms}-{seq}"));
            assert_eq!(redis::parse_event_id(&n).ok().as_deref(), Some(n.as_str()));
            // The embedded id `v` and the stream id `v-0` name the same position.
            if let Ok(v) = sqlite::parse_event_id(s) {
                assert_eq!(n, format!("{v}-0"));
            }
        }
        Err(e) => assert!(matches!(e, runyard::store::StoreError::BadInput(_))),
    }
    let _ = runyard::api::extract::parse_job_id(s);
}

/// A GET through the router, given at most 100 ms (long polls and streams are cut there).
fn get(uri: &str, last_event_id: Option<&str>) {
    let h = harness();
    let Ok(mut req) = Request::get(uri).body(Body::empty()) else {
        return;
    };
    if let Some(v) = last_event_id {
        let Ok(v) = axum::http::HeaderValue::from_str(v) else {
            return;
        };
        req.headers_mut().insert("last-event-id", v);
    }
    let answer = h.block_on(async {
        use tower::ServiceExt;
        let res = tokio::time::timeout(Duration::from_millis(100), h.router.clone().oneshot(req))
            .await
            .ok()?
            .expect("infallible");
        let status = res.status();
        if status == StatusCode::OK {
            // A stream (SSE) may not end: its status is what matters.
            return Some((status, serde_json::Value::Null));
        }
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .expect("body");
        Some((status, serde_json::from_slice(&bytes).unwrap_or_default()))
    });
    if let Some((status, body)) = answer {
        assert!(!status.is_server_error(), "GET {uri}: {status} {body}");
        if status != StatusCode::OK {
            check_error_shape(status, &body);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => pure(&text),
        1 => get(&format!("/api/v1/async_event/?{text}"), None),
        2 => get(&format!("/async/events/sse?{text}"), None),
        3 => get("/async/events/sse", Some(&text)),
        _ => {
            get(&format!("/async/jobs?{text}"), None);
            let id = harness().active_job().0;
            get(&format!("/async/jobs/{id}/logs?{text}"), None);
        }
    }
});
