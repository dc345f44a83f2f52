//! A request body that trickles in costs the server its own size, and a hook call that cannot
//! pass is refused before its body is read (probe "front", F1/F2): a client without a credential
//! held 300 unsigned uploads open and made the server hold ~4 KiB per body byte (382 MB for 90 KB).
//! Each test runs a real server on 127.0.0.1:0 and writes raw HTTP over TCP.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::TestServer;

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["edge.*"]
"#;

fn addr(ts: &TestServer) -> String {
    ts.url.trim_start_matches("http://").to_string()
}

/// The status line of the answer on `s`, waiting at most `within`.
async fn status_line(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
                return Some(String::from_utf8_lossy(&got[..end]).into_owned());
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// A hook call without its signature headers (or with a stale signed time) is refused 401 at
/// once, its body never waited for: before, the server read the whole body first (no answer
/// until `api.body_timeout` or the body's end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_call_that_cannot_pass_is_refused_before_its_body() {
    let ts = TestServer::builder(RUNNERS).start().await;
    let a = addr(&ts);
    let job = uuid::Uuid::now_v7();
    let stale = runyard_hooks::now_ms() - 3_600_000;
    let cases = [
        ("POST", "/async/status".to_string(), String::new()),
        ("PUT", format!("/async/upload/jobs/{job}/out"), String::new()),
        ("POST", "/async/signal/k".to_string(), String::new()),
        (
            "POST",
            "/async/status".to_string(),
            format!("X-Job-Id: {job}\r\nX-Job-Time: {stale}\r\nX-Job-Hash: {}\r\nX-Job-Signature: v2\r\n", "0".repeat(64)),
        ),
    ];
    let tries = cases.into_iter().map(|(method, path, extra)| {
        let a = a.clone();
        async move {
            let mut s = TcpStream::connect(&a).await.expect("connect");
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n{extra}\r\n{{"
            );
            s.write_all(head.as_bytes()).await.expect("write");
            // Answered once the unread body has been drained (`connections::linger`: up to
            // 5 s), not after `api.body_timeout` (30 s) of waiting for it.
            let line = status_line(&mut s, Duration::from_secs(12)).await;
            assert!(
                line.as_deref().is_some_and(|l| l.contains(" 401 ")),
                "{method} {path} ({extra:?}): {line:?}"
            );
        }
    });
    futures::future::join_all(tries).await;
}

/// A hook call with forged but well-formed headers passes the checks made before its body; its
/// body must then arrive within `api.request_timeout`, on the upload's route too (exempt from it
/// otherwise: it may hash a stored file again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_hook_call_is_held_at_most_the_request_timeout() {
    let ts = TestServer::builder(RUNNERS)
        .config("[api]\nrequest_timeout = \"2s\"")
        .start()
        .await;
    let a = addr(&ts);
    let job = uuid::Uuid::now_v7();
    let now = runyard_hooks::now_ms();
    let forged = format!(
        "X-Job-Id: {job}\r\nX-Job-Time: {now}\r\nX-Job-Hash: {}\r\nX-Job-Signature: v2\r\n",
        "0".repeat(64)
    );
    let tries = [
        format!("PUT /async/upload/jobs/{job}/out"),
        "POST /async/status".to_string(),
    ]
    .into_iter()
    .map(|line| {
        let (a, forged) = (a.clone(), forged.clone());
        async move {
            let mut s = TcpStream::connect(&a).await.expect("connect");
            let head = format!(
                "{line} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n{forged}\r\n{{"
            );
            s.write_all(head.as_bytes()).await.expect("write");
            let got = status_line(&mut s, Duration::from_secs(10)).await;
            assert!(
                got.as_deref().is_some_and(|l| l.contains(" 503 ")),
                "{line}: {got:?}"
            );
        }
    });
    futures::future::join_all(tries).await;
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 100 connections each trickle 300 bytes of a submit's body, a byte per TCP segment: the server
/// holds about the bytes it got, not a read buffer per segment (before: ~4 KiB per byte, over
/// 100 MB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_costs_its_size() {
    const CONNS: usize = 100;
    const BYTES: usize = 300;
    let ts = TestServer::builder(RUNNERS).start().await;
    let a = addr(&ts);
    let before = rss_kib();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&a).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let head = format!(
                "POST /async/jobs HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.expect("write");
            for _ in 0..BYTES {
                s.write_all(b" ").await.expect("write a byte");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            s
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.expect("task"));
    }
    // Every connection still open, its body unfinished: what the server holds for them now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss_kib().saturating_sub(before);
    drop(open);
    assert!(
        grown < 24 * 1024,
        "RSS grew {grown} KiB for {} body bytes",
        CONNS * BYTES
    );
}
