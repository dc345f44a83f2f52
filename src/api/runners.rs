//! `GET /async/runners`: the runners this process runs, with the slots in use here (a worker
//! node's slots are its own: with separate `runyard worker` processes, an API node shows 0;
//! `null` to a grant confined to types or channels).
//! `GET /async/stats`: jobs by status and type, queue depth and oldest QUEUED job per type, from
//! the store's counts (indexes, not a scan: [`crate::store::JobCountStore`]); the dashboard's
//! overview.
//! `GET /async/whoami`: what the caller's credential grants (the dashboard shows only the
//! actions it allows; the server decides in any case).

use std::collections::BTreeMap;
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
        .route("/async/stats", get(stats))
}

#[utoipa::path(get, path = "/async/stats", tag = "operations",
    responses((status = 200, description = "Job counts by status and type, queue depths", body = super::openapi::schemas::Stats)))]
async fn stats(
    State(st): State<AppState>,
    Caller(grant): Caller,
) -> crate::api::error::ApiResult<Json<Value>> {
    // It takes no parameter (`?type=` is refused by the access layer's `QUERY_ROUTES`).
    // A grant confined to channels never gets here (`Need::EveryChannel`); one confined to types
    // sees its types only.
    let counts = st.app.store.job_counts().await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_type: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((job_type, status), n) in &counts.by_type_status {
        if !grant.sees_type(job_type) {
            continue;
        }
        let status = status.to_string();
        *by_status.entry(status.clone()).or_default() += n;
        *by_type
            .entry(job_type.clone())
            .or_default()
            .entry(status)
            .or_default() += n;
    }
    let queues: Vec<Value> = by_type
        .iter()
        .filter_map(|(t, s)| {
            let depth = s.get("QUEUED").copied().unwrap_or(0);
            (depth > 0).then(|| {
                json!({
                    "type": t,
                    "depth": depth,
                    "oldest": counts.oldest_queued.get(t).map(|us| crate::job::rfc3339(*us)),
                })
            })
        })
        .collect();
    Ok(Json(
        json!({"by_status": by_status, "by_type": by_type, "queues": queues}),
    ))
}

#[utoipa::path(get, path = "/async/whoami", tag = "operations",
    responses((status = 200, description = "Who the credential is and what it may do", body = super::openapi::schemas::WhoAmI)))]
async fn whoami(Caller(grant): Caller) -> Json<Value> {
    Json(json!({
        "who": grant.who,
        "scopes": grant.scope_names(),
        "confined": grant.is_confined(),
    }))
}

#[utoipa::path(get, path = "/async/runners", tag = "operations", operation_id = "list_runners",
    responses((status = 200, description = "The runners and their slots in use", body = super::openapi::schemas::RunnerList)))]
async fn list(State(st): State<AppState>, Caller(grant): Caller) -> Json<Value> {
    // A runner's slots hold every tenant's jobs of its types: their count would tell a grant
    // confined to types or channels about jobs it does not see (as `/async/stats` would).
    let counts = !grant.is_confined();
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
                "in_use": counts.then(|| r.active.load(Ordering::Relaxed)),
                "timeout_ms": r.timeout.map(|t| t.as_millis() as u64),
                "max_attempts": r.max_attempts,
            })
        })
        .collect();
    Json(json!({ "runners": runners }))
}
