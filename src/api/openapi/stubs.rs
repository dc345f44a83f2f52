//! Operations served by a handler documented under another path, or by a closure: documented
//! here, never called (the router serves them).

#![allow(dead_code)]

use super::schemas::{EventPage, Health};

/// The same as `GET /api/v1/async_event/`.
#[utoipa::path(get, path = "/api/v1/async_event", tag = "events",
    params(crate::api::events::EventParams),
    responses(
        (status = 200, description = "Events after `last_id`", body = EventPage),
        (status = 400, description = "`bad_query`, `bad_last_id`", body = super::schemas::ErrorBody),
    ))]
fn poll_no_slash() {}

/// Readiness: the store answers too (the same as `/health`).
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store does not answer, or the process is stopping (`draining`)", body = Health),
    ))]
fn health_ready() {}

/// The dashboard's page (docs/dashboard.md).
#[utoipa::path(get, path = "/", tag = "docs",
    responses((status = 200, description = "The page", content_type = "text/html")))]
fn dashboard_page() {}

/// The dashboard's script.
#[utoipa::path(get, path = "/ui/app.js", tag = "docs",
    responses((status = 200, description = "The script", content_type = "text/javascript")))]
fn dashboard_js() {}

/// The dashboard's styles.
#[utoipa::path(get, path = "/ui/app.css", tag = "docs",
    responses((status = 200, description = "The styles", content_type = "text/css")))]
fn dashboard_css() {}
