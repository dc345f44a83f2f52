//! The hand-written services of the request path: each is a plain tower [`Service`] whose
//! future is a small state machine, so a request passing them allocates nothing for them (an
//! `axum::middleware::from_fn` layer boxes its future and clones a boxed copy of everything
//! below it on every request; one layer per `Router::layer` call boxes the whole route again).
//!
//! - [`GateLayer`]: without `[auth]`, the check of the host a request names (DNS rebinding,
//!   [`HostRule`]); the cross-origin check of unsafe requests (module docs of `super::edge`) and,
//!   inside it, the count of every request by method, route template and status
//!   (`crate::metrics::http`);
//! - [`TimeLimitLayer`]: `api.request_timeout` for ordinary requests (laid by
//!   `crate::connections` around the router).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::error::ApiError;
use crate::metrics::Metrics;

/// The cross-origin check and the request count, as one layer (see the module docs).
#[derive(Clone)]
pub struct GateLayer {
    allowed: Arc<[String]>,
    hosts: Option<Arc<HostRule>>,
    metrics: Arc<Metrics>,
}

impl GateLayer {
    /// Origins in `api.cors_origins` may send unsafe requests; every request is counted into
    /// `metrics`.
    pub fn new(cors_origins: &[String], metrics: Arc<Metrics>) -> Self {
        Self {
            allowed: cors_origins.into(),
            hosts: None,
            metrics,
        }
    }

    /// Refuses requests naming a host `rule` does not allow (see [`HostRule`]).
    pub fn with_hosts(mut self, rule: Option<HostRule>) -> Self {
        self.hosts = rule.map(Arc::new);
        self
    }
}

/// The host names a server without `[auth]` answers for. A page on a host name an attacker
/// controls can make the name resolve to 127.0.0.1 (DNS rebinding): the browser then counts
/// runyard as that page's own origin, sends its requests as same-origin and lets it read the
/// answers, so the cross-origin check cannot tell. The `Host` it sends still names the
/// attacker's host: only IP addresses (which cannot be rebound), `localhost` and `*.localhost`
/// (which browsers resolve to loopback themselves), and the names configured pass.
#[derive(Debug, Clone, Default)]
pub struct HostRule {
    /// Lowercase host names allowed besides those (`api.allowed_hosts`, `public_url`'s host).
    names: Vec<String>,
    /// `api.allowed_hosts` holds `*`: no check.
    any: bool,
}

impl HostRule {
    /// The rule for `allowed_hosts` plus the host of `public_url`, when set.
    pub fn new(allowed_hosts: &[String], public_url: Option<&str>) -> Self {
        let mut names: Vec<String> = allowed_hosts
            .iter()
            .filter(|h| *h != "*")
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if let Some(h) = public_url
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            })
        {
            names.push(h);
        }
        Self {
            names,
            any: allowed_hosts.iter().any(|h| h == "*"),
        }
    }

    /// Whether a request naming `host` (a `Host` header: `name[:port]` or `[v6][:port]`) passes.
    pub fn allows(&self, host: &str) -> bool {
        if self.any || host.starts_with('[') {
            return true;
        }
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

/// The host a request names: its `Host` header, else its URI's authority (HTTP/2); none for a
/// program that sent neither (HTTP/1.0), which a browser never does.
fn request_host(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Refuses a request whose host `rule` does not allow. `/health` and its probes are exempt: they
/// tell a page nothing of the jobs, and load balancers and probes name hosts of their own.
fn check_host(rule: &HostRule, req: &Request) -> Result<(), ApiError> {
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/health/") {
        return Ok(());
    }
    match request_host(req) {
        Some(h) if !rule.allows(h) => {
            warn_refused_host(h);
            Err(ApiError::refused(
                "host_not_allowed",
                format!(
                "a request for host `{}` refused: without [auth] this server answers only for IP \
                 addresses, localhost, the host of `public_url` and `api.allowed_hosts` (a guard \
                 against DNS rebinding); add the name to `api.allowed_hosts`",
                h.chars().take(100).collect::<String>()
            ),
            ))
        }
        _ => Ok(()),
    }
}

/// Logs a refused host at most once a minute (a page may send many): an operator whose own
/// name is refused sees why.
fn warn_refused_host(host: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(60)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            host = %host.chars().take(100).collect::<String>(),
            "a request for a host this server does not answer for without [auth] was refused \
             (403 host_not_allowed; add it to `api.allowed_hosts`); logged once a minute"
        );
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`GateLayer`].
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let host = match &self.layer.hosts {
            Some(rule) => check_host(rule, &req),
            None => Ok(()),
        };
        if let Err(refused) = host
            .and_then(|()| check_origin(&self.layer.allowed, &req))
            .and_then(|()| check_query_text(&req))
        {
            // Refused before the count, as before the layers were one.
            return GateFuture::Refused {
                answer: Some(refused.into_response()),
            };
        }
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = crate::metrics::http::method_label(req.method());
        GateFuture::Counted {
            inner: self.inner.call(req),
            count: Some((self.layer.metrics.clone(), method, route)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`Gate`].
    #[project = GateProj]
    pub enum GateFuture<F> {
        /// Refused by the host or the cross-origin check.
        Refused { answer: Option<Response> },
        /// Passed on; counted when it answers.
        Counted {
            #[pin]
            inner: F,
            count: Option<(Arc<Metrics>, &'static str, Option<MatchedPath>)>,
        },
    }
}

impl<F> Future for GateFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateProj::Refused { answer } => {
                Poll::Ready(Ok(answer.take().unwrap_or_else(already_answered)))
            }
            GateProj::Counted { inner, count } => {
                let Ok(res) = std::task::ready!(inner.poll(cx));
                if let Some((m, method, route)) = count.take() {
                    let route = route.as_ref().map(MatchedPath::as_str);
                    crate::metrics::http::record(&m, method, route, &res);
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}

/// A future polled again after it answered: a bug of its caller, answered 500 rather than a panic.
fn already_answered() -> Response {
    ApiError::internal("internal", "the request was answered already").into_response()
}

/// A query string whose percent-escapes decode to bytes that are not UTF-8 (`?type=%ff`) is
/// `400 bad_query`: parsed, they would silently become U+FFFD and filter on another text.
fn check_query_text(req: &Request) -> Result<(), ApiError> {
    match req.uri().query() {
        Some(q)
            if q.contains('%')
                && percent_encoding::percent_decode_str(q)
                    .decode_utf8()
                    .is_err() =>
        {
            Err(ApiError::bad_query(
                "the query string's %-escapes do not decode to UTF-8 text",
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses unsafe requests a browser sends from another origin, by the rule of
/// [`crate::auth::same_origin_or_listed`] with `api.cors_origins` listed. A request with neither
/// `Sec-Fetch-Site` nor `Origin` comes from a program, not a page: allowed.
fn check_origin(allowed: &[String], req: &Request) -> Result<(), ApiError> {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return Ok(());
    }
    let h = req.headers();
    // Scheme and host are case-insensitive, as the stream check compares them.
    if crate::auth::same_origin_or_listed(h, |o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    {
        return Ok(());
    }
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    Err(ApiError::cross_origin(format!(
        "cross-origin {} refused: origin `{}` is not in `api.cors_origins`",
        req.method(),
        origin.unwrap_or("(unknown)")
    )))
}

/// `api.request_timeout` for ordinary requests (long-lived ones, see [`is_long_lived`], are
/// exempt). Not tower-http's `TimeoutLayer`: that one
/// times every request alike and answers with an empty body, where this answers the API's 503
/// `request_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimitLayer(pub Duration);

impl<S> Layer<S> for TimeLimitLayer {
    type Service = TimeLimit<S>;

    fn layer(&self, inner: S) -> TimeLimit<S> {
        TimeLimit {
            inner,
            limit: self.0,
        }
    }
}

/// See [`TimeLimitLayer`].
#[derive(Debug, Clone)]
pub struct TimeLimit<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Request> for TimeLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TimeLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if is_long_lived(&req) {
            return TimeLimitFuture::Free {
                inner: self.inner.call(req),
            };
        }
        // The router's span (`http{method, route, request_id}`) is not open out here: the
        // timeout's log line gets its own (`Named::span`), made only then.
        let named = Named {
            method: req.method().clone(),
            uri: req.uri().clone(),
            id: req.headers().get(super::request_trace::REQUEST_ID).cloned(),
        };
        TimeLimitFuture::Timed {
            inner: tokio::time::timeout(self.limit, self.inner.call(req)),
            limit: self.limit,
            named,
        }
    }
}

/// What names a request in the log of its timeout (cheap copies: no span is made per request).
pub struct Named {
    method: Method,
    uri: axum::http::Uri,
    id: Option<axum::http::HeaderValue>,
}

impl Named {
    /// `http{method, path, request_id}`, with the request id the outer layer set (the path,
    /// never the query, which may carry a signature).
    fn span(&self) -> tracing::Span {
        let id = self.id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        tracing::info_span!("http", method = %self.method, path = self.uri.path(), request_id = id)
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`TimeLimit`].
    #[project = TimeLimitProj]
    pub enum TimeLimitFuture<F> {
        /// A long-lived request: no limit.
        Free { #[pin] inner: F },
        /// An ordinary request.
        Timed { #[pin] inner: tokio::time::Timeout<F>, limit: Duration, named: Named },
    }
}

impl<F> Future for TimeLimitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimeLimitProj::Free { inner } => inner.poll(cx),
            TimeLimitProj::Timed {
                inner,
                limit,
                named,
            } => match std::task::ready!(inner.poll(cx)) {
                Ok(r) => Poll::Ready(r),
                Err(_) => Poll::Ready(Ok(named
                    .span()
                    .in_scope(|| timed_out(*limit).into_response()))),
            },
        }
    }
}

/// A request cut at `api.request_timeout` (`limit`): 503 `request_timeout`.
pub fn timed_out(limit: Duration) -> ApiError {
    ApiError::unavailable(
        "request_timeout",
        format!(
            "the request took longer than `api.request_timeout` ({})",
            humantime::format_duration(limit)
        ),
    )
}

/// Requests that may legitimately take long: event streams and the WebSocket (`/async/events/`),
/// long polls, and file transfers (a multipart submit, `POST /async/jobs`, carries files too).
/// The upload's first step (`PUT /async/upload/...`) is one too: when the content is stored
/// already it hashes the stored file again (the challenge), up to `hooks.max_file_bytes`; its
/// body is read under `api.request_timeout` all the same (`hook_body::read`).
/// Decided by the route alone: a header (`Upgrade`, a multipart content type) on any other route
/// does not lift the limit.
pub fn is_long_lived(req: &Request) -> bool {
    let p = req.uri().path();
    p.starts_with("/async/events/")
        || p.starts_with("/api/v1/async_event")
        || p.starts_with("/async/download/")
        || p.starts_with("/async/upload/")
        || p.starts_with("/async/blobs/")
        || (p.starts_with("/async/jobs/") && p.contains("/files/"))
        || (p == "/async/jobs"
            && req.method() == axum::http::Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"multipart/")))
}

#[cfg(test)]
mod tests {
    use super::HostRule;

    /// A listed origin written with capitals passes a write from it, as it passes the event
    /// streams' check: scheme and host are case-insensitive.
    #[test]
    fn listed_origins_are_compared_without_case() {
        let allowed = vec!["https://App.Example".to_string()];
        let req = |origin: &str| {
            axum::http::Request::builder()
                .method(axum::http::Method::POST)
                .uri("/async/jobs")
                .header("host", "runyard.internal")
                .header("origin", origin)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        assert!(super::check_origin(&allowed, &req("https://app.example")).is_ok());
        assert!(super::check_origin(&allowed, &req("https://other.example")).is_err());
    }

    #[test]
    fn only_ip_addresses_loopback_names_and_listed_names_pass() {
        let rule = HostRule::new(
            &["runyard.internal".into()],
            Some("https://hooks.example:8443/x"),
        );
        for ok in [
            "127.0.0.1:7071",
            "10.1.2.3",
            "[::1]:7071",
            "localhost",
            "localhost.:80",
            "app.localhost:3000",
            "RUNYARD.internal:7071",
            "hooks.example",
        ] {
            assert!(rule.allows(ok), "{ok}");
        }
        for refused in [
            "rebind.evil.example:7071",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "runyard.internal.evil.example",
            "evil.example:80:80",
            "0x7f.1",
            "",
        ] {
            assert!(!rule.allows(refused), "{refused}");
        }
        assert!(HostRule::new(&["*".into()], None).allows("anything.example"));
    }

    #[tokio::test]
    async fn the_request_timeout_log_line_names_the_request() {
        use tower::{Layer, ServiceExt};
        let slow = tower::service_fn(|_req: axum::extract::Request| async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(axum::response::Response::new(
                axum::body::Body::empty(),
            ))
        });
        let svc = super::TimeLimitLayer(std::time::Duration::from_millis(50)).layer(slow);
        let req = axum::http::Request::get("/async/jobs/abc?sig=s3cret")
            .header("x-request-id", "probe-7")
            .body(axum::body::Body::empty())
            .expect("request");
        let logs = crate::logging::Capture::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || sink.clone())
            .finish();
        let res = {
            let _logging = tracing::subscriber::set_default(subscriber);
            svc.oneshot(req).await.expect("answer")
        };
        assert_eq!(res.status(), 503);
        let text = logs.text();
        let line: serde_json::Value = text
            .lines()
            .find(|l| l.contains("request failed"))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no log line of the timeout: {text}"));
        assert_eq!(line["span"]["request_id"], "probe-7", "{line}");
        assert_eq!(line["span"]["path"], "/async/jobs/abc", "{line}");
        assert_eq!(line["fields"]["code"], "request_timeout", "{line}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
