//! A WebSocket event client for the tests (tokio-tungstenite), and the polling endpoint's view of
//! a channel to compare with. Every wait is bounded.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected client.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `ws://addr/async/events/ws?query`.
pub async fn connect(addr: &str, query: &str) -> Ws {
    let url = format!("ws://{addr}/async/events/ws?{query}");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    ws
}

/// Connects with a small receive buffer (a client that is slow to read fills it fast).
pub async fn connect_small(addr: &str, query: &str) -> Ws {
    use std::os::fd::AsRawFd;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    // A small segment size keeps the server's send buffer small too (Linux sizes it from the
    // segment size): the connection fills after a few dozen KB, not megabytes.
    let mss: libc::c_int = 536;
    // SAFETY: a valid socket, an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mss as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG");
    let stream = sock
        .connect(addr.parse().expect("addr"))
        .await
        .expect("tcp connect");
    let url = format!("ws://{addr}/async/events/ws?{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake");
    ws
}

/// What a client read.
#[derive(Debug, Default)]
pub struct Read {
    /// The events, in order.
    pub events: Vec<Value>,
    /// The close frame, if the server closed: (code, reason).
    pub closed: Option<(u16, String)>,
    /// The connection ended without a close frame.
    pub eof: bool,
}

/// Adds message `m` to `r`; true when the socket closed or ended.
fn take(r: &mut Read, m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> bool {
    match m {
        Some(Ok(Message::Text(t))) => {
            r.events
                .push(serde_json::from_str(t.as_str()).expect("event JSON"));
            false
        }
        Some(Ok(Message::Close(c))) => {
            r.closed = Some(
                c.map(|c| (u16::from(c.code), c.reason.to_string()))
                    .unwrap_or((u16::from(CloseCode::Status), String::new())),
            );
            true
        }
        Some(Ok(_)) => false,
        Some(Err(_)) | None => {
            r.eof = true;
            true
        }
    }
}

/// Reads up to `n` events; returns early, without failing, after `quiet` with no message (the
/// events ran out) or at a close or the end of the stream.
pub async fn read_up_to(ws: &mut Ws, n: usize, quiet: Duration) -> Read {
    let mut r = Read::default();
    while r.events.len() < n {
        let Ok(m) = tokio::time::timeout(quiet, ws.next()).await else {
            return r;
        };
        if take(&mut r, m) {
            return r;
        }
    }
    r
}

/// Reads until `done(events)` holds, the socket closes, or `bound` passes (then panics with
/// what was read).
pub async fn read_until(
    ws: &mut Ws,
    bound: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Read {
    let mut r = Read::default();
    let deadline = tokio::time::Instant::now() + bound;
    while !done(&r.events) {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!(
                "timed out after {bound:?}; read {} events, last {:?}",
                r.events.len(),
                r.events.last()
            ),
            Ok(m) => m,
        };
        if take(&mut r, m) {
            return r;
        }
    }
    r
}

/// Reads until the server closes (or the bound passes: panics).
pub async fn read_to_close(ws: &mut Ws, bound: Duration) -> Read {
    let r = read_until(ws, bound, |_| false).await;
    assert!(r.closed.is_some() || r.eof, "{r:?}");
    r
}

/// Closes from the client side.
pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
}

/// The ids of events.
pub fn ids(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["id"].as_str().expect("event id").to_string())
        .collect()
}

/// Every event of `channel` after `last_id` through the polling endpoint.
pub async fn poll_all(base: &str, channel: &str, last_id: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out: Vec<Value> = Vec::new();
    let mut last = last_id.to_string();
    for _ in 0..10_000 {
        let v: Value = http
            .get(format!(
                "{base}/api/v1/async_event/?channel={channel}&last_id={last}&limit=100"
            ))
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("poll json");
        let page = v["result"].as_array().expect("result").clone();
        let Some(l) = page.last() else { return out };
        last = l["id"].as_str().expect("id").to_string();
        out.extend(page);
    }
    panic!("polling did not end");
}

/// True once `evs` holds a terminal status event of every job in `jobs`.
pub fn all_terminal(evs: &[Value], jobs: &[String]) -> bool {
    jobs.iter().all(|j| {
        evs.iter().any(|e| {
            e["job_id"] == j.as_str()
                && matches!(
                    e["runyard_status"].as_str(),
                    Some("SUCCESS" | "ERROR" | "CANCELLED" | "TIMEOUT")
                )
        })
    })
}
