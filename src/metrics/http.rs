//! The HTTP layer of the metrics: every request this process answers, by method, route template
//! (`/async/jobs/{id}`, never the path itself) and status; the job hook routes also by result.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;

use super::Metrics;

/// The routes jobs call (signed with their job secret): counted in `runyard_hook_calls_total`.
pub const HOOK_ROUTES: &[&str] = &[
    "/async/status",
    "/async/job",
    "/async/download/{store}/{uuid}/{property}/{index}",
    "/async/upload/{store}/{uuid}/{property}",
    "/async/blobs/upload",
    "/async/blobs/{hash}",
    "/async/signal/{key}",
];

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Marks an answer made by the panic catcher (src/api/edge.rs): already counted in
/// `runyard_http_panics_total`, so not in the requests by status.
#[derive(Debug, Clone, Copy)]
pub struct Panicked;

/// Counts every request `router` answers into `metrics`. Add it with the other route layers
/// (it needs the matched route, which the router sets before its layers run).
pub fn count_requests<S>(router: Router<S>, metrics: Arc<Metrics>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(metrics, count))
}

async fn count(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let res = next.run(req).await;
    if res.extensions().get::<Panicked>().is_some() {
        return res;
    }
    let status = res.status();
    let route = route.unwrap_or_else(|| UNMATCHED.to_string());
    // Methods outside the standard set would each make a series.
    let method = match method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    };
    m.http_request(method, &route, status.as_u16());
    if HOOK_ROUTES.contains(&route.as_str()) {
        let result = match status.as_u16() {
            401 | 403 => "unauthorized",
            400..=499 => "rejected",
            500..=599 => "error",
            _ => "ok",
        };
        m.hook_call(&route, result);
    }
    res
}
