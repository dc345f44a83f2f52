//! The one place the API decides who may call what (docs/auth.md): [`ROUTES`] maps every route
//! of the router to what it needs, and [`AccessLayer`] (a route layer over the whole router) enforces
//! it before any handler runs:
//!
//! - client routes need `Authorization: Bearer` (an API token or a JWT) when auth is in force:
//!   401 without one or with a bad one, 403 without the route's scope, and 403 for a job or
//!   schedule (named in the path) outside the caller's `types` / `channels`, and 403 on a route
//!   whose answer covers every channel ([`Need::EveryChannel`]) for a caller confined to channels,
//!   and on one whose answer covers every job and cannot be narrowed ([`Need::Unconfined`]) for
//!   a caller confined to types or channels;
//! - event routes accept the JWT from the cookie too, and serve only the caller's channels;
//! - hook routes pass (their handlers check the job's signature), `/health` passes, `/metrics`
//!   needs what [`Need::Unconfined`] with `jobs:read` needs unless `auth.metrics_require_token`
//!   is turned off (it is on by default);
//! - a credential in the query string (`?token=`, `?access_token=`) is refused (400
//!   `token_in_query`): URLs end up in logs;
//! - a query string on a route that reads none ([`QUERY_ROUTES`]) is refused (400 `bad_query`);
//! - a route missing from [`ROUTES`] answers 500 `route_not_in_access_table`, auth or not, so a
//!   route added without its line here fails its first test.
//!
//! The guard hands its decision to the handlers as a [`Caller`] (a request extension; the open
//! grant without `[auth]`). New jobs (a submit's body, each item of a batch, a schedule's `job`)
//! are checked against the caller's types and channels where every job is validated,
//! [`crate::api::jobs::build_job`], which takes that grant as an argument: there is no ambient
//! "current request" to lose on another task or thread, so no path can build a job unchecked.
//! Listings show only what the grant covers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

pub use super::query::QUERY_ROUTES;
use super::query::{refuse_stray_query, refuse_token_in_query};
use super::tokens::{Authenticator, Grant, Scope};
use super::{AuthConfig, Refusal};
use crate::store::Store;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A client route: a token or JWT with this scope; `On` names the resource in its path.
    Client(Scope, On),
    /// A client route whose answer covers every channel (`/async/stats`: counts): this scope,
    /// and a grant not confined to channels (403: the answer would tell it about other channels'
    /// jobs). A grant confined to types passes; the handler shows only its types.
    EveryChannel(Scope),
    /// A client route whose answer covers every job and cannot be narrowed to a grant's types
    /// or channels (`/metrics` when protected, an endpoint's signing key): this scope, and a
    /// grant confined to neither (403).
    Unconfined(Scope),
    /// An event transport: `jobs:read` or a channel JWT (cookie accepted), its channels only.
    Events,
    /// A job's result (the `result_url` of its events): `jobs:read` as `Client(JobsRead, Job)`,
    /// or a channel JWT (cookie accepted) for a job of its channel (404 for another's).
    JobResult,
    /// A job hook: authenticated by the job's signature in the handler.
    Hook,
    /// Open to anyone (`/health`, signed blob URLs).
    Open,
    /// `/metrics`: with `auth.metrics_require_token` (the default) `jobs:read` from a grant
    /// confined to neither types nor channels (as [`Need::Unconfined`]); open without it.
    Metrics,
}

/// The resource a client route's path names, checked against the caller's types and channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// Nothing (a listing, a submit: bodies are checked in `build_job`).
    Any,
    /// The job `{id}`.
    Job,
    /// The schedule `{name}` (its job template's type and channel).
    Schedule,
}

/// One route: method, the router's path pattern, and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `PUT`, `DELETE`, ... (`HEAD` is looked up as `GET`).
    pub method: &'static str,
    /// The path exactly as given to the router (`/async/jobs/{id}`).
    pub path: &'static str,
    /// What it needs.
    pub need: Need,
}

const fn client(method: &'static str, path: &'static str, scope: Scope, on: On) -> Route {
    Route {
        method,
        path,
        need: Need::Client(scope, on),
    }
}

const fn other(method: &'static str, path: &'static str, need: Need) -> Route {
    Route { method, path, need }
}

use On::{Any, Job, Schedule};
use Scope::{Admin, JobsCancel, JobsRead, JobsSubmit, SchedulesWrite, SignalsWrite};

/// Every route of the API and what it needs. Adding a route to the router: add its line here
/// (docs/auth.md, "Adding a route").
pub const ROUTES: &[Route] = &[
    // Jobs.
    client("POST", "/async/jobs", JobsSubmit, Any),
    client("POST", "/async/jobs/batch", JobsSubmit, Any),
    client("GET", "/async/jobs", JobsRead, Any),
    client("GET", "/async/jobs/{id}", JobsRead, Job),
    client("POST", "/async/jobs/{id}/cancel", JobsCancel, Job),
    client("POST", "/async/jobs/{id}/retry", JobsSubmit, Job),
    client("GET", "/async/jobs/{id}/logs", JobsRead, Job),
    other("GET", "/async/jobs/{id}/result", Need::JobResult),
    client("PUT", "/async/jobs/{id}/files/{property}", JobsSubmit, Job),
    client(
        "GET",
        "/async/jobs/{id}/files/{property}/{index}",
        JobsRead,
        Job,
    ),
    // Signed webhooks out (docs/notifications.md): a job's deliveries; an endpoint's signing key.
    client("GET", "/async/jobs/{id}/deliveries", JobsRead, Job),
    other("POST", "/async/notify/keys", Need::Unconfined(Admin)),
    // Schedules.
    client("POST", "/async/schedules", SchedulesWrite, Any),
    client("GET", "/async/schedules", JobsRead, Any),
    client("GET", "/async/schedules/{name}", JobsRead, Schedule),
    client("PUT", "/async/schedules/{name}", SchedulesWrite, Schedule),
    client(
        "DELETE",
        "/async/schedules/{name}",
        SchedulesWrite,
        Schedule,
    ),
    client(
        "POST",
        "/async/schedules/{name}/pause",
        SchedulesWrite,
        Schedule,
    ),
    client(
        "POST",
        "/async/schedules/{name}/resume",
        SchedulesWrite,
        Schedule,
    ),
    client(
        "POST",
        "/async/schedules/{name}/trigger",
        SchedulesWrite,
        Schedule,
    ),
    client(
        "POST",
        "/async/schedules/{name}/backfill",
        SchedulesWrite,
        Schedule,
    ),
    // Signals.
    client("POST", "/async/signals/{key}", SignalsWrite, Any),
    client("GET", "/async/signals/{key}", JobsRead, Any),
    client("GET", "/async/signals", JobsRead, Any),
    // Events.
    other("GET", "/async/events/ws", Need::Events),
    other("GET", "/async/events/sse", Need::Events),
    other("GET", "/api/v1/async_event/", Need::Events),
    other("GET", "/api/v1/async_event", Need::Events),
    // Job hooks (signed by the job) and signed blob URLs.
    other("POST", "/async/status", Need::Hook),
    other("GET", "/async/job", Need::Hook),
    other(
        "GET",
        "/async/download/{store}/{uuid}/{property}/{index}",
        Need::Hook,
    ),
    other("PUT", "/async/upload/{store}/{uuid}/{property}", Need::Hook),
    other("POST", "/async/signal/{key}", Need::Hook),
    other("PUT", "/async/blobs/upload", Need::Open),
    other("GET", "/async/blobs/{hash}", Need::Open),
    // Operations.
    other("GET", "/health", Need::Open),
    other("GET", "/health/ready", Need::Open),
    other("GET", "/health/live", Need::Open),
    other("GET", "/metrics", Need::Metrics),
    // The dashboard: its page and assets are open (they hold no data; every call it makes is an
    // API call with the user's token); the runners it shows are read with `jobs:read`.
    other("GET", "/", Need::Open),
    other("GET", "/ui/app.js", Need::Open),
    other("GET", "/ui/app.css", Need::Open),
    client("GET", "/async/runners", JobsRead, Any),
    client("GET", "/async/whoami", JobsRead, Any),
    other("GET", "/async/stats", Need::EveryChannel(JobsRead)),
    // The dashboard's aggregates (src/api/activity.rs): counts over every channel, like stats.
    other("GET", "/async/activity", Need::EveryChannel(JobsRead)),
    other("GET", "/async/dead_letters", Need::EveryChannel(JobsRead)),
    // The API's OpenAPI document and its browsable page (src/api/openapi/): open, like /health:
    // they describe the API, they hold no data.
    other("GET", "/openapi.json", Need::Open),
    other("GET", "/docs", Need::Open),
    other("GET", "/docs/", Need::Open),
    other("GET", "/docs/{*file}", Need::Open),
];

/// What [`Guard`] works with.
pub struct Access {
    /// `[auth]`.
    config: AuthConfig,
    /// Where the jobs and schedules a path names are looked up.
    store: Arc<dyn Store>,
    auth: Authenticator,
}

impl Access {
    /// The access state of `[auth]` over `store`. `[auth]` is validated when the config is
    /// loaded; one that does not compile here (a config built in code) refuses every credential.
    pub fn new(config: &AuthConfig, store: Arc<dyn Store>) -> Arc<Self> {
        let auth = Authenticator::new(config).unwrap_or_else(|(k, m)| {
            tracing::error!(key = %k, "{m}: every credential is refused");
            Authenticator::deny_all()
        });
        Arc::new(Self {
            config: config.clone(),
            store,
            auth,
        })
    }
}

/// The route of a request: its line in [`ROUTES`], or `None` when the path is not there at all.
/// A method the table does not list on a listed path needs `admin` (the router answers 405).
pub fn lookup(method: &Method, path: &str) -> Option<Need> {
    let m = table_method(method);
    let mut path_known = false;
    for r in ROUTES {
        if r.path == path {
            if r.method == m {
                return Some(r.need);
            }
            path_known = true;
        }
    }
    path_known.then_some(Need::Client(Scope::Admin, On::Any))
}

/// `method` as the table names it (`HEAD` is looked up as `GET`).
fn table_method(method: &Method) -> &str {
    if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    }
}

/// The route layer over the whole router (see the module's docs): a plain tower layer, so a
/// request that needs no credential (or meets a server without auth) costs no allocation;
/// only a credential check runs as a boxed future.
#[derive(Clone)]
pub struct AccessLayer(Arc<Access>);

impl AccessLayer {
    /// The layer enforcing `access`.
    pub fn new(access: Arc<Access>) -> Self {
        Self(access)
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            access: self.0.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    access: Arc<Access>,
}

/// The answer of a [`Guard`]: the route's own, or a refusal (or the route's own after a
/// credential check).
type GuardFuture<F> = Either<F, BoxFuture<'static, Result<Response, Infallible>>>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let need = match need_of(&self.access, &req) {
            Ok(None) => return Either::Left(self.inner.call(req)),
            Ok(Some(need)) => need,
            Err(refused) => return refused_now(refused),
        };
        if !self.access.auth.enabled() {
            // Nothing to wait for: the open grant, without a boxed future.
            if let Err(refused) = refuse_token_in_query(req.uri()) {
                return refused_now(refused);
            }
            req.extensions_mut().insert(Caller(Grant::open()));
            return Either::Left(self.inner.call(req));
        }
        // The service that was made ready answers; a clone stays for the next request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let access = self.access.clone();
        Either::Right(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok();
            let grant = match decide(
                &access,
                need,
                (&parts.method, &parts.uri, &parts.headers),
                params,
            )
            .await
            {
                Ok(g) => g,
                Err(Refusal::Unauthorized(m)) if parts.uri.path() == "/metrics" => {
                    // A scrape set up before the token became the default (a Prometheus job
                    // with no credential) is told what changed and what turns it off.
                    let m = format!(
                        "{m}: `/metrics` needs a token that grants `jobs:read` while \
                         `auth.metrics_require_token` is true (the default; false serves it \
                         without one)"
                    );
                    return Ok(Refusal::Unauthorized(m).into_response());
                }
                Err(refused) => return Ok(refused.into_response()),
            };
            parts.extensions.insert(Caller(grant));
            let req = Request::from_parts(parts, body);
            inner.call(req).await
        }))
    }
}

fn refused_now<F>(refused: Refusal) -> GuardFuture<F> {
    let answer = refused.into_response();
    Either::Right(Box::pin(std::future::ready(Ok(answer))))
}

/// What `req` needs: `None` when it passes as it is (no route matched: the fallback's 404; a
/// hook, open or open metrics route), or its refusal when its route has no line in [`ROUTES`].
fn need_of(access: &Access, req: &Request) -> Result<Option<Need>, Refusal> {
    let Some(matched) = req.extensions().get::<MatchedPath>() else {
        return Ok(None);
    };
    let Some(need) = lookup(req.method(), matched.as_str()) else {
        tracing::error!(
            method = %req.method(),
            path = matched.as_str(),
            "a route is missing from the access table (src/auth/access.rs ROUTES)"
        );
        return Err(Refusal::NotInTable(format!(
            "the route `{} {}` has no line in the access table (src/auth/access.rs)",
            req.method(),
            matched.as_str()
        )));
    };
    // A method the path does not serve is the router's 405, whatever the query; the open
    // pages, `/metrics` and the job hooks (bound by their signature) pass any query. Looked at
    // only when there is a query: no table scan on the request path otherwise.
    let queried = req.uri().query().is_some_and(|q| !q.is_empty());
    if queried && !matches!(need, Need::Open | Need::Metrics | Need::Hook) {
        let m = table_method(req.method());
        let path = matched.as_str();
        if ROUTES.iter().any(|r| r.method == m && r.path == path) {
            refuse_stray_query(m, path, req.uri())?;
        }
    }
    Ok(match need {
        Need::Hook | Need::Open => None,
        Need::Metrics if !access.config.metrics_require_token => None,
        Need::Metrics => Some(Need::Unconfined(Scope::JobsRead)),
        n => Some(n),
    })
}

/// The grant of a request to a client or event route, or its refusal.
async fn decide(
    access: &Access,
    need: Need,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    params: Option<RawPathParams>,
) -> Result<Grant, Refusal> {
    refuse_token_in_query(uri)?;
    if !access.auth.enabled() {
        return Ok(Grant::open());
    }
    let credential = match need {
        Need::Events | Need::JobResult => super::token(headers, &access.config.jwt_cookie)?,
        _ => bearer(headers)?,
    };
    let grant = access
        .auth
        .authenticate(&credential)
        .map_err(Refusal::Unauthorized)?;
    match need {
        Need::Client(scope, _) | Need::EveryChannel(scope) | Need::Unconfined(scope)
            if !grant.allows(scope) =>
        {
            return Err(Refusal::Forbidden(format!(
                "{} does not grant `{scope}`, which `{} {}` needs",
                grant.who,
                method,
                uri.path()
            )));
        }
        Need::Client(_, on) => {
            if grant.is_confined() && on != On::Any {
                check_target(access, &grant, on, params).await?;
            }
        }
        Need::JobResult => job_result(access, &grant, (method, uri), params).await?,
        Need::EveryChannel(_) if grant.confined_to_channels() => {
            return Err(Refusal::Forbidden(format!(
                "`{method} {}` covers every channel: {} is confined to channels",
                uri.path(),
                grant.who
            )));
        }
        Need::EveryChannel(_) => {}
        Need::Unconfined(_) if grant.is_confined() => {
            return Err(Refusal::Forbidden(format!(
                "`{method} {}` covers every job type and channel: {} is confined to some",
                uri.path(),
                grant.who
            )));
        }
        Need::Unconfined(_) => {}
        _ => {
            if !grant.reads_events() {
                return Err(Refusal::Forbidden(format!(
                    "{} does not grant `jobs:read`, which event streams need",
                    grant.who
                )));
            }
            // The channel asked for (`?channel=`) is within the grant: refused here, before
            // any upgrade; the handler serves what `ChannelAuth::channel` says (the same rule).
            // Every `channel` named is checked, so a repeated one (400 `bad_query` from the
            // handler) is refused the same way in either order.
            let asked: Vec<String> =
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map(|q| {
                        q.0.into_iter()
                            .filter(|(k, _)| k == "channel")
                            .map(|(_, v)| v)
                            .collect()
                    })
                    .unwrap_or_default();
            if asked.is_empty() {
                grant.event_channel(None)?;
            }
            for channel in asked {
                grant.event_channel(Some(channel))?;
            }
        }
    }
    Ok(grant)
}

/// [`Need::JobResult`]: `jobs:read` as any job route, or a channel JWT for a job of its channel
/// (404 for another's: [`super::target::channel_result`]), else 403.
async fn job_result(
    access: &Access,
    grant: &Grant,
    (method, uri): (&Method, &Uri),
    params: Option<RawPathParams>,
) -> Result<(), Refusal> {
    if grant.allows(Scope::JobsRead) {
        if grant.is_confined() {
            check_target(access, grant, On::Job, params).await?;
        }
        return Ok(());
    }
    if grant.reads_events() {
        let id = path_param(params.as_ref(), "id");
        return super::target::channel_result(access.store.as_ref(), grant, id).await;
    }
    Err(Refusal::Forbidden(format!(
        "{} does not grant `jobs:read`, which `{method} {}` needs",
        grant.who,
        uri.path()
    )))
}

/// `Authorization: Bearer <credential>`, or 401.
fn bearer(headers: &HeaderMap) -> Result<String, Refusal> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(Refusal::Unauthorized(
            "a token is required: `Authorization: Bearer <token>`".into(),
        ));
    }
    // The same size bound, parsing and one-header rule as the event transports (no cookie:
    // only event routes take one).
    let mut only = HeaderMap::new();
    for v in headers.get_all(header::AUTHORIZATION) {
        only.append(header::AUTHORIZATION, v.clone());
    }
    super::token(&only, "")
}

/// The job or schedule a path names is within the grant's types and channels (403 otherwise). A
/// malformed or unknown one passes: the handler answers 400 or 404, or 403 when it finds one
/// after all (created since): handlers check the record they act on by the same rule
/// ([`super::target`]).
async fn check_target(
    access: &Access,
    grant: &Grant,
    on: On,
    params: Option<RawPathParams>,
) -> Result<(), Refusal> {
    let param = |name: &str| path_param(params.as_ref(), name);
    let store = &access.store;
    match on {
        On::Any => Ok(()),
        On::Job => {
            let Some(id) = param("id").and_then(|s| uuid::Uuid::parse_str(&s).ok()) else {
                return Ok(());
            };
            // `None`: the handler answers 404, or checks the job it finds after all
            // (`super::target`).
            match store.get(id).await? {
                Some(job) => super::target::job(grant, &job),
                None => Ok(()),
            }
        }
        On::Schedule => {
            let Some(name) = param("name") else {
                return Ok(());
            };
            match store.schedule(&name).await {
                Ok(Some(s)) => super::target::schedule(grant, &s),
                Ok(None) => Ok(()),
                // Its record does not read: the handler answers (and deletes it).
                Err(e) if crate::store::job_record::is_corrupt(&e) => {
                    super::target::unreadable_schedule(grant)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The path parameter `name` of a request.
fn path_param(params: Option<&RawPathParams>, name: &str) -> Option<String> {
    params.and_then(|p| {
        p.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// The caller of a request, as [`Guard`] decided: handlers use it to show only what it covers,
/// and hand it to [`crate::api::jobs::build_job`] for the jobs it submits. Extracting it on a
/// route the guard did not run on is a 500 (never an open door).
#[derive(Debug, Clone)]
pub struct Caller(pub Grant);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Refusal::NoDecision("this route is not behind the access guard".into()))
    }
}
