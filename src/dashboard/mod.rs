//! The dashboard: a small single-page front end served by runyard itself at `/`, built on the
//! public API only (it is a client like any other: the same routes, the same tokens, the same
//! event stream). Its three files are compiled into the binary (`include_str!`): no Node
//! toolchain to build or run runyard, nothing fetched from elsewhere at run time.
//!
//! Pages (hash routes, so the server serves one document): the overview (`#/`), the jobs table
//! (`#/jobs`), a job (`#/job/{id}`), the schedules (`#/schedules`), the signals (`#/signals`) and
//! the dead letters (`#/dead`). Live updates come from the
//! global event stream (`/async/events/sse`), read with `fetch` so that the bearer token travels
//! in a header, never in a URL.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("assets/index.html");
/// One script, served as `/ui/app.js`: the JSON reader first (integers exact), then the core (API,
/// events, router), then the pages kept in their own files. They share one module scope; nothing
/// runs before `start()` awaits.
const APP_JS: &str = concat!(
    include_str!("assets/json.js"),
    include_str!("assets/app.js"),
    include_str!("assets/chart.js"),
    include_str!("assets/signals.js"),
    include_str!("assets/dead.js"),
);
const APP_CSS: &str = include_str!("assets/app.css");

/// The page may load its own scripts, styles and API only: no inline script, no third party,
/// no framing (clickjacking of the cancel buttons).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Small, and new with every binary: revalidate rather than serve a stale app.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/ui/app.js`, `/ui/app.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}
