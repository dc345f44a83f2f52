//! The HTTP layer of the metrics: every request this process answers, by method, route template
//! (`/async/jobs/{id}`, never the path itself) and status; the job hook routes also by result.

use axum::http::Method;
use axum::response::Response;

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

/// The method label of a request: one of the standard methods, else `other` (methods outside
/// the standard set would each make a series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts an answer `res` to a request with this method label and matched route (`None`: no
/// route matched) into `m`. The request layer that calls this is `api::gate::Gate`: a route
/// layer, so the matched route is known.
pub fn record(m: &Metrics, method: &'static str, route: Option<&str>, res: &Response) {
    if res.extensions().get::<Panicked>().is_some() {
        return;
    }
    let status = res.status();
    let route = route.unwrap_or(UNMATCHED);
    m.http_request(method, route, status.as_u16());
    if HOOK_ROUTES.contains(&route) {
        let result = match status.as_u16() {
            401 | 403 => "unauthorized",
            400..=499 => "rejected",
            500..=599 => "error",
            _ => "ok",
        };
        m.hook_call(route, result);
    }
}
