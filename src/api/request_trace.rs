//! Request tracing and response compression (tower-http):
//!
//! - every log line written while a request is handled is in the span
//!   `http{method, route, request_id}` (the route template, never the query string, which may
//!   carry a signature); the id is the request's `x-request-id`, set (the client's, else a new
//!   UUID) and copied onto the answer by the outermost layers ([`super::edge::with_edge_layers`],
//!   which lays this one just outside its panic catcher);
//! - a 5xx answer is logged once, by what made it, at the level of what it means (a fault at
//!   ERROR, a deliberate 503 lower: `ApiError`'s log in [`super::error`], the readiness probe's
//!   `draining` not above DEBUG); this layer's own "response failed" line is DEBUG for those, and
//!   ERROR only for a failure no answer told of (a response body that broke off);
//! - JSON responses and `/metrics` of 1 KiB or more are gzip-compressed for clients that accept
//!   it (`Accept-Encoding: gzip`, as Prometheus sends). Event streams, files and blobs are sent
//!   as they are.

use axum::extract::MatchedPath;
use axum::http::{header, HeaderMap, Request, StatusCode, Version};
use std::time::Duration;
use tower_http::compression::predicate::{And, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;

use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, HttpMakeClassifier,
    MakeSpan, OnFailure, TraceLayer,
};

/// Smallest JSON response that is compressed, in bytes.
pub const COMPRESS_MIN_BYTES: u16 = 1024;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The predicate "the answer is JSON (or Prometheus text)".
type JsonOnly = fn(StatusCode, Version, &HeaderMap, &axum::http::Extensions) -> bool;

fn is_json(_: StatusCode, _: Version, headers: &HeaderMap, _: &axum::http::Extensions) -> bool {
    // A file (an attachment: a job's file of type `application/json`) is sent as it is: its
    // `ETag` is the md5 of those bytes.
    !headers.contains_key(header::CONTENT_DISPOSITION)
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v == crate::metrics::CONTENT_TYPE)
}

/// The compression of JSON answers of [`COMPRESS_MIN_BYTES`] or more, for clients that accept
/// gzip. Laid by [`super::edge::with_edge_layers`].
pub fn compression_layer() -> CompressionLayer<And<SizeAbove, JsonOnly>> {
    CompressionLayer::new()
        .gzip(true)
        .compress_when(SizeAbove::new(COMPRESS_MIN_BYTES).and(is_json as JsonOnly))
}

/// The trace layer as [`trace_layer`] makes it.
pub type RequestTrace = TraceLayer<
    HttpMakeClassifier,
    RequestSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    Failure,
>;

/// The trace span of every request: `http{method, route, request_id}` (a route layer: the span
/// knows the matched route; the request id comes from [`super::edge::with_edge_layers`]).
pub fn trace_layer() -> RequestTrace {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_failure(Failure)
}

/// Logs a failed request (tower-http's default logs every 5xx at ERROR, so a draining server's
/// readiness 503, answered on purpose to every load balancer probe, filled the log with errors):
/// a 5xx status at DEBUG, as its maker logged it already at its own level; a failure without an
/// answer (an error of the response body) at ERROR.
#[derive(Debug, Clone, Copy)]
pub struct Failure;

impl OnFailure<ServerErrorsFailureClass> for Failure {
    fn on_failure(
        &mut self,
        class: ServerErrorsFailureClass,
        latency: Duration,
        _: &tracing::Span,
    ) {
        let latency = format!("{} ms", latency.as_millis());
        match class {
            ServerErrorsFailureClass::StatusCode(status) => {
                tracing::debug!(%status, %latency, "response failed");
            }
            ServerErrorsFailureClass::Error(error) => {
                tracing::error!(%error, %latency, "response failed");
            }
        }
    }
}

/// Makes the span of [`trace_layer`].
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> tracing::Span {
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
    }
}
