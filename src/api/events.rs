//! Events: Superset's polling endpoint `GET /api/v1/async_event/?last_id=`, with optional
//! `channel`, `limit` and `wait_ms` (long poll: answer as soon as an event arrives).
//! With `[auth]`, every transport serves the channel of the caller's JWT only ([`ChannelAuth`]),
//! and the streams check the browser `Origin` ([`StreamOrigin`]), both before any upgrade.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::{ChannelAuth, StreamOrigin};
use crate::events::follow::Follower;
use crate::events::types::TypeFilter;
use crate::events::{ws, EventId};
use crate::store::{Notice, StoreError};

/// The page size of the event endpoints.
pub const EVENT_PAGE: usize = 100;

/// Pages of [`EVENT_PAGE`] one poll of a caller confined to types reads at most (fewer once its
/// wait is over): past them it answers what it found, and `last_id` where it stopped.
pub const TYPED_POLL_PAGES: usize = 4;

/// What a poll that asked to wait but found no room under the node's stream cap tells its
/// client in `Retry-After` (seconds): it answered at once, come back then rather than at once.
pub const POLL_RETRY_AFTER_SECS: u64 = 1;

/// Query of the polling endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    last_id: Option<String>,
    channel: Option<String>,
    /// Events in a page, 100 (`EVENT_PAGE`) when left out; 0 is read as 1 and more than 100 as
    /// 100.
    #[serde(default, deserialize_with = "super::extract::query_count")]
    limit: Option<usize>,
    /// How long to wait for an event when none is there, in ms; more than 30,000 is read as
    /// 30,000 (and never past the credential's expiry).
    #[serde(default, deserialize_with = "super::extract::query_count")]
    wait_ms: Option<u64>,
}

/// `GET /api/v1/async_event/`.
#[utoipa::path(get, path = "/api/v1/async_event/", tag = "events", params(EventParams),
    responses(
        (status = 200, description = "Events after `last_id` (waits up to `wait_ms` for one). With `Retry-After`: the poll asked to wait but the node's stream cap left no room and there was nothing to read, so it answered at once; poll again after that many seconds", body = super::openapi::schemas::EventPage,
            headers(("Retry-After" = u64, description = "Only when a waiting poll found no room under the stream cap and nothing to read: seconds to wait before polling again"))),
        (status = 400, description = "`bad_query`, `bad_last_id`", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn poll(
    State(st): State<AppState>,
    auth: ChannelAuth,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::response::Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let channel = auth.channel(asked_channel(q.channel)?)?;
    let limit = q.limit.unwrap_or(EVENT_PAGE).clamp(1, EVENT_PAGE);
    let last_id = q.last_id.filter(|s| !s.is_empty());
    check_cursor(&st, channel.as_deref(), last_id.as_deref(), "last_id").await?;
    let mut wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    // A long poll does not outlive its credential.
    if let Some(left) = auth.0.remaining() {
        wait = wait.min(left);
    }
    // A waiting poll holds a connection as a stream does: counted with them against the
    // node's cap, and answered at once when there is no room, saying when to come back.
    let mut no_room = false;
    let _slot = if wait.is_zero() {
        None
    } else {
        let slot = st.app.events.hold_poll();
        if slot.is_none() {
            wait = Duration::ZERO;
            no_room = true;
        }
        slot
    };
    let answer = |events: Vec<crate::job::Event>, last_id: Option<String>| {
        // Only an empty page says "come back later": one with events is a real answer.
        let empty = events.is_empty();
        let mut res = Json(json!({ "result": events, "last_id": last_id })).into_response();
        if no_room && empty {
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(POLL_RETRY_AFTER_SECS),
            );
        }
        res
    };
    let store = &st.app.store;
    let types = type_filter(&st, &auth);
    let mut after = last_id;
    // Subscribe before reading, so an event committed in between still wakes us.
    let mut rx = store.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (events, more) = match &types {
            None => {
                let page = store
                    .events(channel.as_deref(), after.as_deref(), limit)
                    .await?;
                if let Some(last) = page.last() {
                    after = Some(last.id.clone());
                }
                (page, false)
            }
            Some(t) => {
                let at = (channel.as_deref(), &mut after);
                shown_events(store.as_ref(), t, at, limit, deadline).await?
            }
        };
        if !events.is_empty() || more || tokio::time::Instant::now() >= deadline {
            return Ok(answer(events, after));
        }
        if st.app.closing.is_cancelled() {
            return Ok(answer(Vec::new(), after));
        }
        loop {
            let n = tokio::select! {
                n = tokio::time::timeout_at(deadline, rx.recv()) => n,
                _ = st.app.closing.cancelled() => break,
            };
            match n {
                Err(_) => break,
                Ok(Ok(Notice::Events)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// The caller's filter by job type, when it is confined to types (docs/auth.md).
fn type_filter(st: &AppState, auth: &ChannelAuth) -> Option<TypeFilter> {
    auth.0
        .type_rule()
        .map(|sees| TypeFilter::new(st.app.store.clone(), st.app.events.types.clone(), sees))
}

/// Up to `limit` events after `*after` that `types` shows, reading on past the hidden ones
/// until one is shown, the stream ends, [`TYPED_POLL_PAGES`] pages were read or (after one
/// page) `deadline` passed; `*after` moves to the last event read (hidden ones included), what
/// the client resumes from (`last_id` of the answer). True with them when there is more to read.
async fn shown_events(
    store: &dyn crate::store::Store,
    types: &TypeFilter,
    (channel, after): (Option<&str>, &mut Option<String>),
    limit: usize,
    deadline: tokio::time::Instant,
) -> ApiResult<(Vec<crate::job::Event>, bool)> {
    let mut out = Vec::new();
    for _ in 0..TYPED_POLL_PAGES {
        let page = store.events(channel, after.as_deref(), EVENT_PAGE).await?;
        let ids: Vec<&str> = page.iter().map(|e| e.job_id.as_str()).collect();
        let shown = types.shown(&ids).await?;
        let real = page.iter().filter(|e| e.kind != "resync").count();
        for (ev, shown) in page.into_iter().zip(shown) {
            *after = Some(ev.id.clone());
            if shown {
                out.push(ev);
                if out.len() == limit {
                    return Ok((out, false));
                }
            }
        }
        if !out.is_empty() || real < EVENT_PAGE {
            return Ok((out, false));
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    Ok((out, true))
}

/// Query of the streaming endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    last_id: Option<String>,
    channel: Option<String>,
}

/// A `?channel=` as asked: left out, or a channel a job can have (1-256 letters, digits, `.`,
/// `_`, `-`, `:`). An empty one is refused rather than read as "every channel".
fn asked_channel(asked: Option<String>) -> ApiResult<Option<String>> {
    match asked {
        Some(c) if !super::jobs::valid_name(&c, 256) => Err(ApiError::bad_query(format!(
            "{} (leave it out for every channel the caller may read)",
            super::jobs::CHANNEL_RULE
        ))),
        c => Ok(c),
    }
}

/// Refuses a cursor that is not an event id (400 naming `field`). A well-formed id this store
/// never handed out (another database's) is accepted: the store answers it with a `resync`.
async fn check_cursor(
    st: &AppState,
    channel: Option<&str>,
    last_id: Option<&str>,
    field: &str,
) -> ApiResult<()> {
    let Some(id) = last_id else { return Ok(()) };
    let bad = |m: String| ApiError::bad_request("bad_last_id", format!("`{field}`: {m}"));
    if EventId::parse(id).is_none() {
        return Err(bad(format!("`{}` is not an event id", id.escape_debug())));
    }
    match st.app.store.events(channel, Some(id), 1).await {
        Err(StoreError::BadInput(m)) => Err(bad(m)),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// `GET /async/events/ws?last_id=&channel=`: a WebSocket; each event is one text message (JSON).
/// The socket itself is driven by [`crate::events::ws`].
#[utoipa::path(get, path = "/async/events/ws", tag = "events", params(StreamParams),
    responses(
        (status = 101, description = "A WebSocket: each event is one text message (JSON)"),
        (status = 400, description = "`bad_query`, `bad_last_id`; `not_websocket`: not a WebSocket upgrade request", body = super::openapi::schemas::ErrorBody),
        (status = 403, description = "`cross_origin`: a browser's `Origin` not allowed (with `[auth]`: not in `auth.allowed_origins`; without: neither the server's own nor in `api.cors_origins`)", body = super::openapi::schemas::ErrorBody),
        (status = 426, description = "`not_websocket`: the connection cannot be upgraded", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn websocket(
    State(st): State<AppState>,
    _origin: StreamOrigin,
    auth: ChannelAuth,
    q: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> ApiResult<axum::response::Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    // Not an upgrade request (or one that cannot be upgraded): the API's error shape, not axum's
    // plain text.
    let ws = ws.map_err(|e| ApiError::rejected("not_websocket", e))?;
    let channel = auth.channel(asked_channel(q.channel)?)?;
    let last_id = q.last_id.filter(|s| !s.is_empty());
    // Refuse a malformed last_id before the upgrade.
    check_cursor(&st, channel.as_deref(), last_id.as_deref(), "last_id").await?;
    let app = st.app.clone();
    let expires = auth.0.remaining();
    let types = type_filter(&st, &auth);
    // Clients only answer pings and close: small buffers keep an idle socket cheap.
    let ws = ws
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(ws::MAX_MESSAGE_KIB * 1024)
        .max_frame_size(64 * 1024);
    Ok(ws.on_upgrade(move |socket| async move {
        let sub = app.events.subscribe(channel.as_deref());
        let (store, ping, closing) = (
            app.store.clone(),
            app.config.events.ping_interval,
            app.closing.clone(),
        );
        // A socket outlives nothing it does not need: a stop waits for the last `App`.
        drop(app);
        match sub {
            Err(why) => ws::refuse(socket, why).await,
            Ok(sub) => {
                let follower = Follower::new(store, channel, last_id, sub).with_types(types);
                ws::run(socket, follower, ping, closing, expires).await
            }
        }
    }))
}

/// `GET /async/events/sse?last_id=&channel=` (or the `Last-Event-ID` header): Server-Sent Events,
/// `id:` the event id, `data:` the event JSON. The stream ends when the server stops, when it
/// falls `events.send_buffer` events behind, or when the JWT it was opened with expires (the
/// browser reconnects with `Last-Event-ID`).
#[utoipa::path(get, path = "/async/events/sse", tag = "events", params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (wins over `last_id`)")),
    responses(
        (status = 200, description = "Server-Sent Events: `id:` the event id, `data:` the event JSON", content_type = "text/event-stream", body = String),
        (status = 400, description = "`bad_query`, `bad_last_id`", body = super::openapi::schemas::ErrorBody),
        (status = 403, description = "`cross_origin`: a browser's `Origin` not allowed (with `[auth]`: not in `auth.allowed_origins`; without: neither the server's own nor in `api.cors_origins`)", body = super::openapi::schemas::ErrorBody),
        (status = 503, description = "`too_many_streams`", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn sse(
    State(st): State<AppState>,
    _origin: StreamOrigin,
    auth: ChannelAuth,
    q: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
) -> ApiResult<
    axum::response::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use futures::StreamExt;
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let channel = auth.channel(asked_channel(q.channel)?)?;
    // Two cursors: which one the client meant is unknown (as two `Authorization` headers are).
    if headers.get_all("last-event-id").iter().nth(1).is_some() {
        return Err(ApiError::bad_request(
            "bad_last_id",
            "`Last-Event-ID` is sent more than once: send one",
        ));
    }
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .unwrap_or_else(|_| "\u{fffd}".into())
        })
        .filter(|s| !s.is_empty());
    let (last_id, field) = match header {
        Some(h) => (Some(h), "Last-Event-ID"),
        None => (q.last_id.filter(|s| !s.is_empty()), "last_id"),
    };
    check_cursor(&st, channel.as_deref(), last_id.as_deref(), field).await?;
    let sub = st
        .app
        .events
        .subscribe(channel.as_deref())
        .map_err(|why| ApiError::unavailable("too_many_streams", why.reason()))?;
    let follower = Follower::new(st.app.store.clone(), channel, last_id, sub)
        .with_types(type_filter(&st, &auth));
    let closing = st.app.closing.clone();
    // The stream ends when the credential it was opened with expires (the browser reconnects
    // with `Last-Event-ID` and a new one).
    let expiry = Box::pin(crate::events::follow::until(auth.0.remaining()));
    let state = (follower, closing, expiry);
    let stream = futures::stream::unfold(state, |(mut f, closing, mut expiry)| async move {
        let r = tokio::select! {
            // Nothing more once the server stops or the credential expired, however much is
            // ready to send.
            biased;
            _ = closing.cancelled() => {
                f.stats().shutdown_closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            _ = &mut expiry => {
                f.stats().expired_closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            r = f.next() => r,
        };
        match r {
            Ok(frames) => {
                f.delivered(frames.len());
                Some((frames, (f, closing, expiry)))
            }
            Err(_) => None,
        }
    })
    .flat_map(|frames| {
        futures::stream::iter(frames.into_iter().map(|fr| {
            Ok(axum::response::sse::Event::default()
                .id(&*fr.id_text)
                .data(fr.json.as_str()))
        }))
    });
    Ok(axum::response::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default()))
}
