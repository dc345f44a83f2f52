//! Connections: runyard's own HTTP accept loop on hyper, so that no client can starve the server.
//!
//! - **Connection cap**: at most `max_connections` connections are open at once (WebSockets
//!   included: the slot travels with the upgraded socket). At the cap the loop stops accepting, so
//!   further clients wait in the kernel's listen backlog (and are served, in order, as slots free
//!   up, see [`BACKLOG`]) instead of being accepted and refused. The cap is clamped to the open-file limit minus
//!   `fd_reserve` (see [`connection_cap`]), so that clients can never take the file descriptors
//!   jobs, the store and the runners need.
//! - **Pressure**: while the cap is reached, silent connections (no request in flight) get only
//!   [`PRESSURE_GRACE`] instead of the header or idle timeout, so idle and slowloris clients make
//!   room for the clients queued behind them within a second or two.
//! - **Header timeout**: a request's line and headers must arrive within `header_timeout` (from
//!   the connection's start for its first request, from the first byte for later ones): a
//!   slowloris client is disconnected.
//! - **Idle timeout**: a kept-alive connection may sit at most `idle_timeout` between requests.
//! - **Body timeout**: a request body may pause at most `body_timeout` between two pieces.
//! - **Request timeout**: an ordinary request gets `request_timeout` in all (503
//!   `request_timeout`); event streams, long polls, WebSocket upgrades and file transfers are
//!   exempt (see [`crate::api::gate::is_long_lived`]), they only have the body timeout.
//! - **Unread bodies**: a request body its handler left unread when it refused the request (a 4xx
//!   before the body was read: over the limit, wrong type, no right) is read and dropped before
//!   the answer is sent, for at most [`LINGER_TIME`] (nginx's "lingering close"). Closing a
//!   socket with unread data resets the connection, and a client still sending would lose the
//!   answer to the reset ("broken pipe" instead of its 413). Not read: a body declared longer
//!   than [`LINGER_BYTES`] (nor more than that of one of unknown length), a body that failed
//!   (stalled past `body_timeout`), one held back by `Expect: 100-continue`, and any while the
//!   connection cap is reached (silent clients are being closed then: a refused one is too).
//! - **Graceful stop**: on `stop`, the listener closes, idle connections close, requests in flight
//!   finish (long-lived responses end on `App::closing`), and the loop returns once every
//!   connection has ended. Dropping the loop's task aborts the connections still open.
//!
//! Errors: nothing here refuses a connection with an answer (at the cap, clients wait in the
//! backlog; a silent one is closed). The request timeout answers through `ApiError` like the
//! routes. The only answers not in the API's error body are hyper's own, before any request
//! reaches the router: an empty 400 for a request it cannot parse and an empty 431 for headers
//! over its bound (docs/api.md).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};

use crate::api::gate::{TimeLimit, TimeLimitLayer};

mod linger;
use linger::{linger, Returned, Unread};
pub use linger::{LINGER_BYTES, LINGER_TIME};

/// What serves each request: the router under the request id and the request timeout.
type Stack = SetRequestId<PropagateRequestId<TimeLimit<Router>>, MakeRequestUuid>;

/// How long a silent connection may stay while the connection cap is reached.
pub const PRESSURE_GRACE: Duration = Duration::from_millis(500);

/// The accept loop's limits (from `[api]`, with the connection cap already clamped).
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings {
    /// Most connections open at once.
    pub max_connections: usize,
    /// See `api.header_timeout`.
    pub header_timeout: Duration,
    /// See `api.idle_timeout`.
    pub idle_timeout: Duration,
    /// See `api.request_timeout`.
    pub request_timeout: Duration,
    /// See `api.body_timeout`.
    pub body_timeout: Duration,
}

impl EdgeSettings {
    /// The settings of `api`, with the cap clamped to the process's open-file limit.
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        let soft = crate::limits::nofile().map(|(soft, _)| soft);
        let max_connections = match soft {
            Some(soft) => connection_cap(api.max_connections, soft, api.fd_reserve),
            None => api.max_connections,
        };
        if max_connections < api.max_connections {
            tracing::info!(
                configured = api.max_connections,
                cap = max_connections,
                open_file_limit = soft.unwrap_or_default(),
                fd_reserve = api.fd_reserve,
                "api.max_connections lowered to keep file descriptors for jobs"
            );
        }
        Self {
            max_connections,
            header_timeout: api.header_timeout,
            idle_timeout: api.idle_timeout,
            request_timeout: api.request_timeout,
            body_timeout: api.body_timeout,
        }
    }
}

/// Connections the kernel queues for us while the cap is reached (it clamps this to
/// `net.core.somaxconn`).
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` with a [`BACKLOG`]-deep accept queue (the default of 128 would make
/// clients beyond it retry their handshake for seconds while the cap is reached).
pub fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The connection cap for an open-file limit of `soft`: `configured`, but never more than
/// `soft - reserve`, and when the limit is too low for the reserve, half of it (at least 1).
pub fn connection_cap(configured: usize, soft: u64, reserve: u64) -> usize {
    let room = soft.saturating_sub(reserve).max(soft / 2).max(1);
    usize::try_from(room).map_or(configured, |room| configured.min(room))
}

/// Serves `router` on `listener` until `stop` is cancelled, then drains (module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: EdgeSettings,
    stop: CancellationToken,
) -> io::Result<()> {
    // Around the router, not in it (no route box): the request id outermost, so the timeout's
    // 503 carries `x-request-id` like every answer (the router's own id layer then keeps it).
    let router = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TimeLimitLayer(settings.request_timeout))
        .service(router);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (pressure, _) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut accept_errors = 0u32;
    loop {
        while conns.try_join_next().is_some() {}
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                pressure.send_replace(true);
                tracing::debug!(cap = settings.max_connections, "connection cap reached");
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        };
        if slots.available_permits() > 0 {
            pressure.send_if_modified(|p| std::mem::replace(p, false));
        }
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => break,
        };
        let stream = match stream {
            Ok((s, _)) => {
                accept_errors = 0;
                s
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: wait a little instead of spinning; the
                // connection waits in the backlog meanwhile.
                accept_errors = accept_errors.saturating_add(1);
                if accept_errors == 1 || accept_errors.is_multiple_of(100) {
                    tracing::warn!(error = %e, count = accept_errors, "accept failed; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(
            stream,
            permit,
            router.clone(),
            settings,
            pressure.subscribe(),
            stop.clone(),
        ));
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the watchdog knows of one connection. Times are milliseconds since the connection's
/// start, plus one (0 means "not set").
struct ConnState {
    start: Instant,
    /// First byte of a request head not yet complete.
    head_started: AtomicU64,
    /// When the last response ended.
    idle_since: AtomicU64,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// Requests seen.
    served: AtomicU64,
    changed: Notify,
}

impl ConnState {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, stamp: u64) -> Instant {
        self.start + Duration::from_millis(stamp.saturating_sub(1))
    }

    /// Bytes arrived.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started.store(self.now(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A request head is complete: the request is in flight until its response ends.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When the connection must be closed if nothing changes meanwhile, and why.
    fn deadline(&self, s: &EdgeSettings, pressure: bool) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let (header, idle) = if pressure {
            (
                s.header_timeout.min(PRESSURE_GRACE),
                s.idle_timeout.min(PRESSURE_GRACE),
            )
        } else {
            (s.header_timeout, s.idle_timeout)
        };
        let head = self.head_started.load(Ordering::Acquire);
        Some(if head != 0 {
            (self.at(head) + header, "header timeout")
        } else if self.served.load(Ordering::Acquire) == 0 {
            (self.start + header, "header timeout")
        } else {
            let since = self.idle_since.load(Ordering::Acquire);
            (self.at(since) + idle, "idle timeout")
        })
    }

    /// Completes when the connection has been silent too long (no request in flight).
    async fn expired(
        &self,
        s: &EdgeSettings,
        pressure: &mut tokio::sync::watch::Receiver<bool>,
    ) -> &'static str {
        loop {
            let under = *pressure.borrow_and_update();
            let changed = async {
                if pressure.changed().await.is_err() {
                    // The accept loop is gone: no more pressure changes.
                    std::future::pending::<()>().await;
                }
            };
            match self.deadline(s, under) {
                None => tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = changed => {}
                },
                Some((at, why)) => {
                    if Instant::now() >= at {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                        _ = changed => {}
                    }
                }
            }
        }
    }
}

/// A request in flight; dropped with its response body (or with the request, if it fails).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since.store(s.now(), Ordering::Release);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        s.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it ends.
struct TrackedBody {
    inner: Body,
    _flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, reporting reads to the watchdog and holding the connection's slot (an upgraded
/// WebSocket keeps it until it closes).
struct Tracked {
    io: TcpStream,
    state: Arc<ConnState>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One request through `router`, its body under `body_timeout`; a refused request's unread body
/// is read before the answer unless the connection cap is reached (`busy`; module docs, "Unread
/// bodies").
async fn serve_request(
    req: Request<hyper::body::Incoming>,
    router: Stack,
    body_timeout: Duration,
    busy: &tokio::sync::watch::Receiver<bool>,
) -> axum::response::Response {
    // Only a request with a body, not declared over the bound, gets the slot its unread rest
    // comes back in (read here: the wrappers below do not pass the size on).
    let hint = http_body::Body::size_hint(req.body());
    let unread = (!http_body::Body::is_end_stream(req.body()) && hint.lower() <= LINGER_BYTES)
        .then(Unread::default);
    let held_back = req
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let req = req.map(|b| {
        let body = Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, b));
        match &unread {
            Some(back) => Body::new(Returned::new(body, back.clone(), held_back)),
            None => body,
        }
    });
    let res = match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    if let Some(rest) = unread.and_then(|back| back.lock().take()) {
        // A refusal only (a 5xx, a timeout's 503 included, is not the body's fault), and not
        // while silent clients are being closed to make room.
        if res.status().is_client_error() && !*busy.borrow() {
            linger(rest).await;
        }
    }
    res
}

async fn serve_connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    router: Stack,
    settings: EdgeSettings,
    mut pressure: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let state = Arc::new(ConnState {
        start: Instant::now(),
        head_started: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Tracked {
        io: stream,
        state: state.clone(),
        _slot: slot,
    });
    let st = state.clone();
    let body_timeout = settings.body_timeout;
    let busy = pressure.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let flight = st.begin();
        let router = router.clone();
        let busy = busy.clone();
        async move {
            let res = serve_request(req, router, body_timeout, &busy).await;
            Ok::<_, Infallible>(res.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _flight: flight,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below times heads and idle connections itself: hyper's own header timer
    // would also cut kept-alive connections at the header timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = state.expired(&settings, &mut pressure) => {
                // Nothing is in flight: dropping the connection closes the socket.
                tracing::debug!(reason = why, "closing a silent connection");
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gate::is_long_lived;

    #[test]
    fn cap_keeps_the_reserve() {
        assert_eq!(connection_cap(4096, 1_048_576, 256), 4096);
        assert_eq!(connection_cap(4096, 1024, 256), 768);
        assert_eq!(connection_cap(4096, 300, 256), 150);
        assert_eq!(connection_cap(4096, 0, 256), 1);
        assert_eq!(connection_cap(10, 1024, 256), 10);
    }

    #[test]
    fn bad_edge_settings_name_their_key() {
        for (toml, key) in [
            ("[api]\nheader_timeout = \"0s\"", "api.header_timeout"),
            ("[api]\nidle_timeout = \"1ms\"", "api.idle_timeout"),
            ("[api]\nrequest_timeout = \"100d\"", "api.request_timeout"),
            ("[api]\nbody_timeout = \"0s\"", "api.body_timeout"),
            ("[api]\nmax_connections = 0", "api.max_connections"),
        ] {
            let e = crate::config::Config::from_toml(toml)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        let ok = crate::config::Config::from_toml("[api]\nmax_connections = 10\nfd_reserve = 0")
            .unwrap();
        assert_eq!(EdgeSettings::from_config(&ok.api).max_connections, 10);
    }

    #[test]
    fn long_lived_routes() {
        let req = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();
        for p in [
            "/async/events/ws",
            "/async/events/sse?channel=x",
            "/api/v1/async_event/?wait=30",
            "/async/blobs/upload",
            "/async/jobs/0190/files/inputs/0",
            "/async/download/s/u/p/0",
        ] {
            assert!(is_long_lived(&req(p)), "{p}");
        }
        for p in [
            "/async/jobs",
            "/async/jobs/0190",
            "/health",
            "/async/status",
        ] {
            assert!(!is_long_lived(&req(p)), "{p}");
        }
        // A multipart submit carries files; the headers lift the limit nowhere else.
        let with = |method: &str, p: &str, name: &str, value: &str| {
            Request::builder()
                .method(method)
                .uri(p)
                .header(name, value)
                .body(Body::empty())
                .unwrap()
        };
        let multipart = "multipart/form-data; boundary=x";
        assert!(is_long_lived(&with(
            "POST",
            "/async/jobs",
            "content-type",
            multipart
        )));
        for r in [
            with("GET", "/async/jobs", "upgrade", "websocket"),
            with("POST", "/async/jobs/batch", "upgrade", "x"),
            with("POST", "/async/jobs/batch", "content-type", multipart),
            with("POST", "/async/jobs/0190/cancel", "content-type", multipart),
            with("GET", "/async/jobs", "content-type", multipart),
        ] {
            assert!(!is_long_lived(&r), "{} {}", r.method(), r.uri());
        }
    }
}
