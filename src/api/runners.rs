//! `GET /async/runners`: the runners this process runs, with the slots in use here (a worker
//! node's slots are its own: with separate `runyard worker` processes, an API node shows 0).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/async/runners", get(list))
}

async fn list(State(st): State<AppState>) -> Json<Value> {
    let runners: Vec<Value> = st
        .app
        .runners
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "kind": r.kind,
                "types": r.types,
                "concurrency": r.concurrency,
                "in_use": r.active.load(Ordering::Relaxed),
                "timeout_ms": r.timeout.map(|t| t.as_millis() as u64),
                "max_attempts": r.max_attempts,
            })
        })
        .collect();
    Json(json!({ "runners": runners }))
}
