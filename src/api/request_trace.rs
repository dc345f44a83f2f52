//! Request tracing and response compression (tower-http):
//!
//! - every log line written while a request is handled is in the span
//!   `http{method, route, request_id}` (the route template, never the query string, which may
//!   carry a signature); the id is the request's `x-request-id`, set (the client's, else a new
//!   UUID) and copied onto the answer by the outermost layers ([`super::edge::with_edge_layers`],
//!   which lays this one just outside its panic catcher);
//! - JSON responses of 1 KiB or more are gzip-compressed for clients that accept it
//!   (`Accept-Encoding: gzip`). Event streams, files and blobs are sent as they are.

use axum::extract::MatchedPath;
use axum::http::{header, HeaderMap, Request, StatusCode, Version};
use axum::Router;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

/// Smallest JSON response that is compressed, in bytes.
pub const COMPRESS_MIN_BYTES: u16 = 1024;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

fn is_json(_: StatusCode, _: Version, headers: &HeaderMap, _: &axum::http::Extensions) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Adds the trace span and the compression of JSON responses to `router`'s routes (a route
/// layer: the span knows the matched route). The request id comes from
/// [`super::edge::with_edge_layers`].
pub fn with_request_tracing<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let json_only = SizeAbove::new(COMPRESS_MIN_BYTES).and(is_json);
    router
        .layer(CompressionLayer::new().gzip(true).compress_when(json_only))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<axum::body::Body>| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), route, request_id = id)
            }),
        )
}
