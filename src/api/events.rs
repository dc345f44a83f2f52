//! Events: Superset's polling endpoint `GET /api/v1/async_event/?last_id=`, with optional
//! `channel`, `limit` and `wait_ms` (long poll: answer as soon as an event arrives).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::AppState;
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
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(EVENT_PAGE).clamp(1, EVENT_PAGE);
    let last_id = q.last_id.filter(|s| !s.is_empty());
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    let store = &st.app.store;
    // Subscribe before reading, so an event committed in between still wakes us.
    let mut rx = store.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let events = store
            .events(q.channel.as_deref(), last_id.as_deref(), limit)
            .await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "result": events })));
        }
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(Ok(Notice::Events)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
    }
}
