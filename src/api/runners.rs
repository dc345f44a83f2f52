//! `GET /async/runners`: the runners this process runs, with the slots in use here (a worker
//! node's slots are its own: with separate `runyard worker` processes, an API node shows 0).
//! `GET /async/whoami`: what the caller's credential grants (the dashboard shows only the
//! actions it allows; the server decides in any case).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::auth::access::Caller;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async/runners", get(list))
        .route("/async/whoami", get(whoami))
}

async fn whoami(Caller(grant): Caller) -> Json<Value> {
    Json(json!({
        "who": grant.who,
        "scopes": grant.scope_names(),
        "confined": grant.is_confined(),
    }))
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
