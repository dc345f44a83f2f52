//! What a request's query string may hold: the routes that read one ([`QUERY_ROUTES`]: any
//! other client or event route refuses one, 400 `bad_query`), and no credential in it (400
//! `token_in_query`). The access guard (`access.rs`) applies both before anything runs.

use axum::http::Uri;

use super::Refusal;

/// The routes that read a query string; their handlers parse it and refuse a key they do not
/// know (400 `bad_query`). Every other client and event route refuses a non-empty query string
/// with 400 `bad_query` before anything runs (the open pages, `/health`, the dashboard, the docs,
/// and `/metrics` pass any: a probe's or a scraper's; a job's hooks are bound by their signature,
/// which covers the query): `?idempotency_key=` on a submit or `?paused=true` on the schedule listing
/// would otherwise be ignored without a word. `tests/openapi.rs` holds this list to the
/// document's query parameters.
pub const QUERY_ROUTES: &[(&str, &str)] = &[
    ("GET", "/async/jobs"),
    ("GET", "/async/jobs/{id}/logs"),
    ("PUT", "/async/jobs/{id}/files/{property}"),
    ("GET", "/async/jobs/{id}/deliveries"),
    ("GET", "/async/signals"),
    ("GET", "/async/signals/{key}"),
    ("GET", "/async/events/ws"),
    ("GET", "/async/events/sse"),
    ("GET", "/api/v1/async_event/"),
    ("GET", "/api/v1/async_event"),
    ("PUT", "/async/blobs/upload"),
    ("GET", "/async/blobs/{hash}"),
    ("GET", "/async/activity"),
    ("GET", "/async/dead_letters"),
];

/// 400 `bad_query` for a query string on route `m path` (a client or event route it serves)
/// unless it reads one ([`QUERY_ROUTES`]).
pub(crate) fn refuse_stray_query(m: &str, path: &str, uri: &Uri) -> Result<(), Refusal> {
    let Some(q) = uri.query().filter(|q| !q.is_empty()) else {
        return Ok(());
    };
    if QUERY_ROUTES.iter().any(|&(qm, qp)| qm == m && qp == path) {
        return Ok(());
    }
    // A credential is named as such (the guard would refuse it next anyway).
    refuse_token_in_query(uri)?;
    let names: Vec<String> = q
        .split('&')
        .map(|p| p.split('=').next().unwrap_or(""))
        .filter(|n| !n.is_empty())
        .take(3)
        .map(|n| n.chars().take(40).collect())
        .collect();
    let got = if names.is_empty() {
        format!("`?{}`", q.chars().take(40).collect::<String>())
    } else {
        format!("`{}`", names.join("`, `"))
    };
    Err(Refusal::StrayQuery(format!(
        "`{m} {path}` reads no query parameters (got {got}): they would be ignored"
    )))
}

/// A credential in the query string (`?token=`, `?access_token=`) is refused (400): URLs are
/// logged.
pub(crate) fn refuse_token_in_query(uri: &Uri) -> Result<(), Refusal> {
    if let Some(q) = uri.query() {
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        {
            if let Some((k, _)) = pairs
                .iter()
                .find(|(k, _)| k == "token" || k == "access_token")
            {
                return Err(Refusal::TokenInQuery(format!(
                    "`{k}` in the query string is refused: URLs are logged; send \
                     `Authorization: Bearer <token>`"
                )));
            }
        } else if q.contains("token=") {
            return Err(Refusal::TokenInQuery(
                "a token in the query string is refused: send `Authorization: Bearer <token>`"
                    .into(),
            ));
        }
    }
    Ok(())
}
