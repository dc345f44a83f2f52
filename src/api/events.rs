//! Events: Superset's polling endpoint `GET /api/v1/async_event/?last_id=`, with optional
//! `channel`, `limit` and `wait_ms` (long poll: answer as soon as an event arrives).
//! With `[auth]`, every transport serves the channel of the caller's JWT only ([`ChannelAuth`]),
//! and the streams check the browser `Origin` ([`StreamOrigin`]), both before any upgrade.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::{ChannelAuth, StreamOrigin};
use crate::store::Notice;

/// The page size of the event endpoints.
pub const EVENT_PAGE: usize = 100;

/// Query of the polling endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    last_id: Option<String>,
    channel: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

/// `GET /api/v1/async_event/`.
pub async fn poll(
    State(st): State<AppState>,
    auth: ChannelAuth,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let channel = auth.channel(q.channel)?;
    let limit = q.limit.unwrap_or(EVENT_PAGE).clamp(1, EVENT_PAGE);
    let last_id = q.last_id.filter(|s| !s.is_empty());
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    let store = &st.app.store;
    // Subscribe before reading, so an event committed in between still wakes us.
    let mut rx = store.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let events = store
            .events(channel.as_deref(), last_id.as_deref(), limit)
            .await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "result": events })));
        }
        if st.app.closing.is_cancelled() {
            return Ok(Json(json!({ "result": [] })));
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

/// Query of the streaming endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    last_id: Option<String>,
    channel: Option<String>,
}

/// Follows a stream from `last_id`: yields pages of events as they are committed, forever.
/// A `resync` event comes first when events after `last_id` were trimmed.
fn follow(
    st: AppState,
    channel: Option<String>,
    mut last_id: Option<String>,
) -> impl futures::Stream<Item = Result<Vec<crate::job::Event>, ApiError>> {
    async_stream_lite(move |tx| async move {
        let store = st.app.store.clone();
        let closing = st.app.closing.clone();
        let mut rx = store.subscribe();
        loop {
            let page = match store
                .events(channel.as_deref(), last_id.as_deref(), EVENT_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let full = page.len() == EVENT_PAGE;
            if let Some(last) = page
                .iter()
                .rev()
                .find(|e| e.kind != "resync")
                .or(page.last())
            {
                last_id = Some(last.id.clone());
            }
            if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                return;
            }
            if full {
                continue;
            }
            // Wait for new events (a lagging receiver just re-reads); end when the server stops.
            loop {
                let n = tokio::select! {
                    n = rx.recv() => n,
                    _ = closing.cancelled() => return,
                };
                match n {
                    Ok(Notice::Events)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    })
}

/// A tiny generator: runs `f` with a sender and streams what it sends.
fn async_stream_lite<T, F, Fut>(f: F) -> impl futures::Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `GET /async/events/ws?last_id=&channel=`: a WebSocket; each event is one text message (JSON).
pub async fn websocket(
    State(st): State<AppState>,
    _origin: StreamOrigin,
    auth: ChannelAuth,
    q: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> ApiResult<axum::response::Response> {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let channel = auth.channel(q.channel)?;
    let last_id = q.last_id.filter(|s| !s.is_empty());
    // Refuse a malformed last_id before the upgrade.
    st.app
        .store
        .events(channel.as_deref(), last_id.as_deref(), 1)
        .await?;
    Ok(ws.on_upgrade(move |socket| async move {
        let (mut sink, mut incoming) = socket.split();
        let events = follow(st, channel, last_id);
        tokio::pin!(events);
        let mut ping = tokio::time::interval(Duration::from_secs(20));
        loop {
            tokio::select! {
                page = events.next() => {
                    let Some(Ok(page)) = page else { break };
                    for ev in page {
                        let text = serde_json::to_string(&ev).unwrap_or_default();
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                }
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    _ => {}
                },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    }))
}

/// `GET /async/events/sse?last_id=&channel=` (or the `Last-Event-ID` header): Server-Sent Events,
/// `id:` the event id, `data:` the event JSON.
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
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let channel = auth.channel(q.channel)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_id)
        .filter(|s| !s.is_empty());
    st.app
        .store
        .events(channel.as_deref(), last_id.as_deref(), 1)
        .await?;
    let stream = follow(st, channel, last_id)
        .take_while(|p| futures::future::ready(p.is_ok()))
        .flat_map(|page| {
            let evs: Vec<_> = page
                .unwrap_or_default()
                .into_iter()
                .map(|ev| {
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    Ok(axum::response::sse::Event::default().id(ev.id).data(data))
                })
                .collect();
            futures::stream::iter(evs)
        });
    Ok(axum::response::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default()))
}
