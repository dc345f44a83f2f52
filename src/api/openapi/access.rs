//! What the access table (`crate::auth::access::ROUTES`) says about each operation, written into
//! the document: its security requirement, its 401/403 answers, and the answers every route of a
//! kind shares (a hook's signature check, the store's 500/503). The table stays the one place that
//! says who may call what; the handlers' `#[utoipa::path]` list only their own answers.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, PathItem, Ref, RefOr, Response};
use utoipa::Modify;

use crate::auth::access::{Need, QUERY_ROUTES, ROUTES};

/// The security scheme names of the document.
pub const BEARER: &str = "bearer";
/// The event transports' JWT cookie.
pub const COOKIE: &str = "eventCookie";
/// The three headers of a job's signature (all three are needed).
pub const JOB_HEADERS: [(&str, &str); 3] = [
    ("jobId", "X-Job-Id"),
    ("jobTime", "X-Job-Time"),
    ("jobHash", "X-Job-Hash"),
];

/// The [`Modify`] that applies the access table.
pub struct FromAccessTable;

impl Modify for FromAccessTable {
    fn modify(&self, doc: &mut OpenApi) {
        add_schemes(doc);
        for r in ROUTES {
            let Some(item) = doc.paths.paths.get_mut(r.path) else {
                continue;
            };
            if let Some(op) = operation_mut(item, r.method) {
                let reads_query = QUERY_ROUTES
                    .iter()
                    .any(|&(m, p)| m == r.method && p == r.path);
                apply(op, r.need, reads_query);
                // A write that reads no body refuses one (`extract::NoBody`).
                if r.method != "GET" && op.request_body.is_none() {
                    add_to(
                        op,
                        "422",
                        "`invalid_request`: a body (the route reads none: none, `{}` or `null` \
                         pass)",
                    );
                }
            }
        }
    }
}

fn add_schemes(doc: &mut OpenApi) {
    let c = doc.components.get_or_insert_with(Default::default);
    c.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("API token or JWT")
                .description(Some(
                    "`Authorization: Bearer <token>`: an API token of `[[auth.tokens]]` or an HS256 \
                     JWT signed with `auth.jwt_secret` carrying a `scope` claim (docs/auth.md). \
                     Each operation names the scope it needs in `x-runyard-scope`. Needed only \
                     when `[auth]` is configured.",
                ))
                .build(),
        ),
    );
    c.add_security_scheme(
        COOKIE,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "async-token",
            "The event transports also take a channel JWT from this cookie (`auth.jwt_cookie`, \
             `async-token` by default).",
        ))),
    );
    for (name, header) in JOB_HEADERS {
        c.add_security_scheme(
            name,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                header,
                "A job hook call carries `X-Job-Id`, `X-Job-Time` and `X-Job-Hash` (HMAC-SHA256 \
                 keyed with the job's secret; docs/hooks.md): all three together. A v2 call \
                 may add `X-Job-Nonce` (1-64 letters, digits, `-` or `_`), covered by its \
                 signature, so that two alike signed in the same millisecond are both taken.",
            ))),
        );
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &str) -> Option<&'a mut Operation> {
    match method {
        "GET" => item.get.as_mut(),
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        "DELETE" => item.delete.as_mut(),
        "PATCH" => item.patch.as_mut(),
        _ => None,
    }
}

/// An answer in the API's error shape.
pub fn error_response(description: &str) -> Response {
    let mut r = Response::new(description);
    r.content.insert(
        "application/json".into(),
        RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
    );
    r
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.into())
        .or_insert_with(|| RefOr::T(error_response(description)));
}

/// Adds `description` to the operation's own `status` answer (after its own words), or adds the
/// answer.
fn add_to(op: &mut Operation, status: &str, description: &str) {
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(r)) => r.description = format!("{}; {description}", r.description),
        Some(RefOr::Ref(_)) => {}
        None => add(op, status, description),
    }
}

fn bearer_only() -> Vec<SecurityRequirement> {
    vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]
}

fn apply(op: &mut Operation, need: Need, reads_query: bool) {
    let scope = match need {
        Need::Client(s, _) | Need::EveryChannel(s) | Need::Unconfined(s) => Some(s.as_str()),
        Need::Events | Need::Metrics | Need::JobResult => Some("jobs:read"),
        Need::Hook | Need::Open => None,
    };
    if let Some(s) = scope {
        op.extensions
            .get_or_insert_with(Default::default)
            .insert("x-runyard-scope".into(), serde_json::json!(s));
    }
    match need {
        Need::Client(..) | Need::EveryChannel(_) => {
            op.security = Some(bearer_only());
            add(op, "401", "`unauthorized`: no credential or a bad one (`[auth]` only; `WWW-Authenticate: Bearer`)");
            add(op, "403", "`forbidden`: the credential lacks the scope, or the job or schedule is outside its `types` / `channels`, or (a credential confined to them) the schedule's stored record does not read (`[auth]` only)");
        }
        Need::Unconfined(_) => {
            op.security = Some(bearer_only());
            add(op, "401", "`unauthorized`: no credential or a bad one (`[auth]` only; `WWW-Authenticate: Bearer`)");
            add(op, "403", "`forbidden`: the credential lacks the scope, or is confined to `types` or `channels`: the answer covers every job (`[auth]` only)");
        }
        Need::Events => {
            op.security = Some(vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                SecurityRequirement::new(COOKIE, Vec::<String>::new()),
            ]);
            add(
                op,
                "401",
                "`unauthorized`: no credential or a bad one (`[auth]` only)",
            );
            add(
                op,
                "403",
                "`forbidden`: the credential does not cover the channel (`[auth]` only)",
            );
        }
        Need::JobResult => {
            op.security = Some(vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                SecurityRequirement::new(COOKIE, Vec::<String>::new()),
            ]);
            add(
                op,
                "401",
                "`unauthorized`: no credential or a bad one (`[auth]` only)",
            );
            add(op, "403", "`forbidden`: the credential lacks `jobs:read` and is no channel JWT, or the job is outside its `types` / `channels` (`[auth]` only)");
            add(
                op,
                "404",
                "`not_found`: no such job, or (a channel JWT) a job of another channel",
            );
        }
        Need::Metrics => {
            // Protected unless `auth.metrics_require_token = false`.
            op.security = Some(vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                SecurityRequirement::default(),
            ]);
            add(op, "401", "`unauthorized`: no good credential was sent (and `auth.metrics_require_token` is not turned off)");
            add(op, "403", "`forbidden`: the credential lacks `jobs:read`, or is confined to `types` or `channels`");
        }
        Need::Hook => {
            op.security = Some(vec![SecurityRequirement::new(
                JOB_HEADERS[0].0,
                Vec::<String>::new(),
            )
            .add(JOB_HEADERS[1].0, Vec::<String>::new())
            .add(JOB_HEADERS[2].0, Vec::<String>::new())]);
            add(op, "401", "The job's signature is missing, malformed, expired, replayed or wrong (`missing_header`, `invalid_header`, `expired`, `replay`, `bad_signature`)");
            add(op, "404", "`not_found`: no such job");
            add(
                op,
                "503",
                "`replay_unavailable`: the replay memory (the store) cannot be reached",
            );
        }
        Need::Open => op.security = Some(vec![SecurityRequirement::default()]),
    }
    add_shared(op, need, reads_query);
}

/// The answers every route may give: 400 for its query, 413 for its body, 500 and 503.
fn add_shared(op: &mut Operation, need: Need, reads_query: bool) {
    // A credential in the query string is refused on every route.
    add_to(
        op,
        "400",
        if reads_query || matches!(need, Need::Open | Need::Metrics | Need::Hook) {
            "`token_in_query`: a credential in the query string is refused (URLs end up in logs)"
        } else {
            "`token_in_query`: a credential in the query string is refused (URLs end up in \
             logs); `bad_query`: any query parameter (the route reads none)"
        },
    );
    // Every body is read under a limit (`api.max_body_bytes`, files `hooks.max_file_bytes`).
    if op.request_body.is_some() {
        add(
            op,
            "413",
            "`too_large`: a body over the limit (`api.max_body_bytes`; files: `hooks.max_file_bytes`)",
        );
    }
    add(op, "500", "A fault of the server (`store_error`, ...)");
    add(
        op,
        "503",
        "`unavailable`: the store cannot be reached; try again",
    );
}
