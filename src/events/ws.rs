//! The WebSocket driver: events out, pings, and every way a socket ends, each with its close
//! code (documented in docs/api.md "Events"):
//!
//! | code | when |
//! | --- | --- |
//! | 1013 | refused at a cap (`events.max_connections`, `events.max_per_channel`) |
//! | 1008 | slow consumer: `events.send_buffer` events behind; resume with `last_id` |
//! | 1008 | the JWT it was opened with expired (`credential expired`): reconnect with a new one |
//! | 1001 | no pong within `events.ping_interval` of a ping |
//! | 1012 | the server stops: reconnect (to another node) with `last_id` |
//! | 1011 | the store failed |
//! | 1009 | the client sent a message over 64 KiB |
//!
//! Reading and writing run side by side in one task: a pong is seen even while a write waits
//! on a full socket, and a write that waits while the stream falls behind ends the socket
//! (1008) without holding up any other socket (each has its own task; the hub never waits).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::follow::{Follower, Stop};
use super::Refused;

/// Close codes.
pub mod code {
    /// The server is going away (restart): reconnect elsewhere.
    pub const RESTART: u16 = 1012;
    /// At a connection cap: try again later.
    pub const TRY_AGAIN: u16 = 1013;
    /// Slow consumer (policy).
    pub const SLOW: u16 = 1008;
    /// No pong.
    pub const GOING_AWAY: u16 = 1001;
    /// The store failed.
    pub const ERROR: u16 = 1011;
    /// The credential the socket was opened with expired (policy): reconnect with a new one.
    pub const EXPIRED: u16 = 1008;
    /// The client sent a message over the size the server reads.
    pub const TOO_BIG: u16 = 1009;
}

/// The largest message a client may send, in KiB (it has nothing to send but pings and pongs).
pub const MAX_MESSAGE_KIB: usize = 64;

/// Whether a read failed for a message over the limit: tungstenite's capacity error ("Space limit
/// exceeded: Message too long: ..."), seen through axum's error, which names no type of its own.
fn too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Message too long") || text.contains("Space limit exceeded")
}

/// How long a close frame may take to leave.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting write checks how far behind its stream is.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// Why the writer ended.
enum End {
    /// The client went away (closed, or the connection broke).
    Gone,
    /// Close with this code and reason.
    Close(u16, String),
}

/// Closes a socket refused at a cap with 1013.
pub async fn refuse(mut socket: WebSocket, why: Refused) {
    let frame = close_frame(code::TRY_AGAIN, why.reason().to_string());
    let _ = tokio::time::timeout(CLOSE_WAIT, socket.send(frame)).await;
}

fn close_frame(code: u16, reason: String) -> Message {
    let mut reason = reason;
    // A close reason is at most 123 bytes.
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// Serves one socket until it ends; `expires`: how long the credential it was opened with still
/// verifies (a JWT's `exp`), after which it closes with [`code::EXPIRED`].
pub async fn run(
    socket: WebSocket,
    mut follower: Follower,
    ping_interval: Duration,
    closing: CancellationToken,
    expires: Option<Duration>,
) {
    let (mut sink, mut incoming) = socket.split();
    let started = tokio::time::Instant::now();
    let ms = move || started.elapsed().as_millis() as u64 + 1;
    // The last pong seen, in ms since `started` (0: none yet).
    let last_pong = AtomicU64::new(0);
    let peer_closed = AtomicBool::new(false);
    let reader = async {
        while let Some(m) = incoming.next().await {
            match m {
                Ok(Message::Pong(_)) => last_pong.store(ms(), Ordering::Relaxed),
                // Over `max_message_size`: the socket still writes, so it says why (1009).
                Err(e) if too_big(&e) => return true,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        peer_closed.store(true, Ordering::Relaxed);
        false
    };
    let writer = async {
        let mut ping = tokio::time::interval_at(started + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the last ping was sent (ms since `started`; 0: none yet).
        let mut ping_sent = 0u64;
        // The id of the last event the socket took (what the client resumes from).
        let mut sent: Option<Box<str>> = None;
        let expiry = super::follow::until(expires);
        tokio::pin!(expiry);
        let pong_missed = |sent: u64| sent > 0 && last_pong.load(Ordering::Relaxed) < sent;
        let ping_deadline = |sent: u64| sent > 0 && ms() >= sent + ping_interval.as_millis() as u64;
        loop {
            let msgs: Vec<(Message, Option<Box<str>>)> = tokio::select! {
                biased;
                _ = closing.cancelled() => return shutdown(&follower, &sent),
                _ = &mut expiry => return expired(&follower, &sent),
                _ = ping.tick() => {
                    if pong_missed(ping_sent) {
                        return ping_timeout(&follower, &sent);
                    }
                    ping_sent = ms();
                    vec![(Message::Ping(Default::default()), None)]
                }
                page = follower.next() => match page {
                    Ok(frames) => frames
                        .iter()
                        .map(|f| (Message::Text(f.json.clone()), Some(f.id_text.clone())))
                        .collect(),
                    Err(Stop::Store(e)) => {
                        tracing::warn!(error = %e, "event stream: store read failed");
                        return End::Close(code::ERROR, resume("store unavailable", &sent));
                    }
                },
            };
            let n = msgs.len();
            for (i, (m, id)) in msgs.into_iter().enumerate() {
                let flush = i + 1 == n;
                let timed_out = || ping_deadline(ping_sent) && pong_missed(ping_sent);
                if let Some(end) = write_watched(
                    &mut sink, m, id, flush, &closing, &follower, &mut sent, timed_out,
                )
                .await
                {
                    return end;
                }
            }
        }
    };
    let end = tokio::select! {
        e = writer => e,
        big = reader => if big {
            End::Close(code::TOO_BIG, format!("a message over {MAX_MESSAGE_KIB} KiB"))
        } else {
            End::Gone
        },
    };
    // Out of the hub before waiting on the close frame: the slot and the ring are free.
    drop(follower);
    if peer_closed.load(Ordering::Relaxed) {
        return;
    }
    if let End::Close(code, reason) = end {
        send_close(&mut sink, code, reason, ping_interval).await;
    }
}

/// Sends the close frame: a client that does not read takes it only once it reads what is in
/// flight, so this waits for it up to a ping interval (at a stop, briefly), then gives up.
async fn send_close(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: String,
    ping_interval: Duration,
) {
    let wait = if code == code::RESTART {
        CLOSE_WAIT
    } else {
        ping_interval.max(CLOSE_WAIT)
    };
    let _ = tokio::time::timeout(wait, sink.send(close_frame(code, reason))).await;
}

/// Writes one message (fed, then flushed when `flush`), checking while it waits: the server
/// stopping, the stream falling behind (slow consumer) and a missed pong each end the socket.
/// An event is the socket's once fed (the sink holds it, and writes it before any close frame),
/// so `sent` moves to its id then, before a flush that may wait: a close while the flush waits
/// names it as the last one sent. `None` when the message went out.
#[allow(clippy::too_many_arguments)]
async fn write_watched(
    sink: &mut SplitSink<WebSocket, Message>,
    m: Message,
    id: Option<Box<str>>,
    flush: bool,
    closing: &CancellationToken,
    follower: &Follower,
    sent: &mut Option<Box<str>>,
    ping_timed_out: impl Fn() -> bool,
) -> Option<End> {
    if let Some(end) = watched(sink.feed(m), closing, follower, sent, &ping_timed_out).await {
        return Some(end);
    }
    if id.is_some() {
        follower.delivered(1);
        *sent = id;
    }
    if flush {
        return watched(sink.flush(), closing, follower, sent, &ping_timed_out).await;
    }
    None
}

/// Waits for one write of the sink, ending the socket meanwhile as [`write_watched`] says.
async fn watched<E>(
    write: impl std::future::Future<Output = Result<(), E>>,
    closing: &CancellationToken,
    follower: &Follower,
    sent: &Option<Box<str>>,
    ping_timed_out: &impl Fn() -> bool,
) -> Option<End> {
    tokio::pin!(write);
    let mut check = tokio::time::interval(STALL_CHECK);
    check.tick().await;
    loop {
        tokio::select! {
            r = &mut write => {
                if r.is_err() {
                    return Some(End::Gone);
                }
                return None;
            }
            _ = closing.cancelled() => return Some(shutdown(follower, sent)),
            _ = check.tick() => {
                if follower.lagging() {
                    follower.count_slow();
                    return Some(slow(sent));
                }
                if ping_timed_out() {
                    return Some(ping_timeout(follower, sent));
                }
            }
        }
    }
}

fn shutdown(f: &Follower, sent: &Option<Box<str>>) -> End {
    f.stats().shutdown_closed.fetch_add(1, Ordering::Relaxed);
    End::Close(code::RESTART, resume("server restarting", sent))
}

fn expired(f: &Follower, sent: &Option<Box<str>>) -> End {
    f.stats().expired_closed.fetch_add(1, Ordering::Relaxed);
    End::Close(code::EXPIRED, resume("credential expired", sent))
}

fn ping_timeout(f: &Follower, sent: &Option<Box<str>>) -> End {
    f.stats().ping_timeouts.fetch_add(1, Ordering::Relaxed);
    End::Close(
        code::GOING_AWAY,
        resume("no pong within ping_interval", sent),
    )
}

fn slow(sent: &Option<Box<str>>) -> End {
    End::Close(code::SLOW, resume("slow consumer", sent))
}

fn resume(what: &str, sent: &Option<Box<str>>) -> String {
    match sent {
        Some(c) => format!("{what}; resume with last_id={c}"),
        None => format!("{what}; reconnect with the same last_id"),
    }
}
