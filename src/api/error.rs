//! The one place where errors become HTTP responses: `{"error": {"code", "message"}}`.
//!
//! Handlers, extractors and middleware return [`ApiError`] (or a type with a `From` impl here);
//! none builds an error status or body itself. `tests/architecture_errors.rs` checks that, with
//! its short allow-list of answers that are not API errors (the readiness probe).

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runyard_hooks::VerifyError;
use serde_json::json;

use crate::auth::Refusal;
use crate::job::TransitionError;
use crate::store::StoreError;

/// An API error: a status, a stable machine code and a human message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `unknown_type`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Headers the answer carries besides its body (`WWW-Authenticate`, `Retry-After`).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// A submit the store did not confirm: the id its job has if it was stored all the same.
    job_id: Option<uuid::Uuid>,
    /// A hook report refused (409): what the job reported (`error.reported`).
    reported: Option<crate::job::JobStatus>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            job_id: None,
            reported: None,
        }
    }

    /// A submit of job `id` that the store did not confirm (`Unavailable`: no answer in time, a
    /// connection lost): the store may still carry the write out, so the answer says the job may
    /// exist and gives its id (`error.job_id`) to look it up. Other errors are as they are.
    pub fn submit_unconfirmed(e: StoreError, id: uuid::Uuid, keyed: bool) -> Self {
        // A node that refuses the store's work, or a command the store refused before running
        // it (Redis `BUSY`), wrote nothing: said as it is.
        if e.is_node_refusal() || e.is_not_run() {
            return e.into();
        }
        let StoreError::Unavailable(m) = e else {
            return e.into();
        };
        let said = format!(
            "{m}: the job may have been stored all the same (the store may carry out a write it \
             did not confirm in time)"
        );
        if keyed {
            // A key already used names an earlier job, not `id`: the retry tells.
            return Self::unavailable(
                "unavailable",
                format!("{said}; a retry with the same idempotency_key returns it if it was"),
            );
        }
        let mut err = Self::unavailable(
            "unavailable",
            format!(
                "{said}: GET /async/jobs/{id} tells; a retry without an idempotency_key may make \
                 a second job"
            ),
        );
        err.job_id = Some(id);
        err
    }

    /// The same error, answered with the header `name: value` too.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The same error with `WWW-Authenticate: Bearer` when it is a 401 (RFC 6750): the answer of
    /// the access guard, which asks for a bearer token.
    #[must_use]
    pub fn bearer_challenge(self) -> Self {
        if self.status == StatusCode::UNAUTHORIZED {
            self.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        } else {
            self
        }
    }

    /// The same error saying what the job reported (`error.reported`: `SUCCESS`, `ERROR`,
    /// `TIMEOUT`), when it did: a hook report refused because the job reported already.
    #[must_use]
    pub fn with_reported(mut self, reported: Option<crate::job::JobStatus>) -> Self {
        self.reported = reported;
        self
    }

    /// 503 `replay_unapplied`: a job's report re-sent as it was, whose first send was accepted
    /// but not applied (`api/hook_replay.rs`): the job signs it again.
    pub fn replay_unapplied(message: impl Into<String>) -> Self {
        Self::unavailable("replay_unapplied", message)
    }

    /// 413 `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 500 with this code: a fault of the server, logged when answered.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }

    /// 503 with this code: try again later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `bad_query`: a query string that does not parse or names a bad value.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::bad_request("bad_query", message)
    }

    /// 400 `bad_json`: a JSON body that is missing.
    pub fn json_required() -> Self {
        Self::bad_request("bad_json", "a JSON body is required")
    }

    /// 400 `bad_json`: a JSON body that does not parse.
    pub fn malformed_json(e: impl std::fmt::Display) -> Self {
        Self::bad_request("bad_json", format!("malformed JSON: {e}"))
    }

    /// 422 `invalid_request`: a request that parses but does not fit (the message names the field).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::unprocessable("invalid_request", message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 401 `unauthorized`: a missing or bad credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: a valid credential that does not grant this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 401 with this code: a job hook's header that does not check out (`invalid_header`).
    pub fn unauthorized_as(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 with this code: refused for what the request is rather than for its credential
    /// (`host_not_allowed`, `url_used`).
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 403 `cross_origin`: a browser page of an origin the server does not serve.
    pub fn cross_origin(message: impl Into<String>) -> Self {
        Self::refused("cross_origin", message)
    }

    /// 415 `unsupported_media_type`: a JSON body sent as another content type.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// An extractor's rejection (its own status, 4xx) with this code and the API's error shape
    /// (`not_websocket`, `bad_multipart`).
    pub fn rejected(code: &'static str, r: impl IntoResponse + std::fmt::Display) -> Self {
        let message = r.to_string();
        Self::new(r.into_response().status(), code, message)
    }

    /// 403 `bad_signature`: a signed URL (`what`: upload, download) that does not check out or
    /// has expired.
    pub fn bad_signed_url(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            format!("invalid or expired {what} URL"),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 404 for a job id that names no job.
    pub fn job_not_found() -> Self {
        Self::not_found("job not found")
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 409 `md5_collision`: an uploaded file whose md5 is that of different content already
    /// stored (files are stored by md5): refused, the stored content stays as it was.
    pub fn md5_collision(message: impl Into<String>) -> Self {
        Self::conflict("md5_collision", message)
    }

    /// The error as one item of an answer holding many results (`POST /async/jobs/batch`):
    /// `{"status_code", "error": {"code", "message"}}`, the status it would have on its own.
    pub fn as_item(&self) -> serde_json::Value {
        self.log("batch item failed");
        json!({
            "status_code": self.status.as_u16(),
            "error": {"code": self.code, "message": self.message},
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log("request failed");
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(id) = self.job_id {
            error["job_id"] = json!(id);
        }
        if let Some(reported) = self.reported {
            error["reported"] = json!(reported);
        }
        let mut res = (self.status, Json(json!({ "error": error }))).into_response();
        for (name, value) in self.headers {
            res.headers_mut().append(name, value);
        }
        res
    }
}

/// The 503 codes of expected operation: the server sheds or defers work on purpose (a stream cap,
/// a schedule that keeps changing, a request past `api.request_timeout`, a job's report to sign
/// again). Logged at WARN: an
/// operator should see load, but nothing failed.
const SHED: &[&str] = &[
    "too_many_streams",
    "busy",
    "request_timeout",
    "replay_unapplied",
];

impl ApiError {
    /// Logs a server-side error answer (`what`: "request failed"), at the level of what it
    /// means: a fault (a 500, a store that does not answer) at ERROR, a deliberate 503
    /// ([`SHED`]) at WARN, a batch stopped because its client left (`request_ended`) at INFO. A
    /// client's error (4xx) is not logged. The trace layer logs no second line for a 5xx
    /// ([`super::request_trace`]).
    fn log(&self, what: &str) {
        if !self.status.is_server_error() {
            return;
        }
        let (code, error) = (self.code, &self.message);
        // A store that refuses the work (a write refused, a node refusing the store's work) says
        // so at ERROR once a minute itself: each request that meets it need not.
        if crate::store::says_refusal(error) {
            tracing::debug!(code, error = %error, "{what}");
        } else if self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code, error = %error, "{what}");
        } else if SHED.contains(&code) {
            tracing::warn!(code, error = %error, "{what}");
        } else if code == "request_ended" {
            tracing::info!(code, error = %error, "{what}");
        } else {
            tracing::error!(code, error = %error, "{what}");
        }
    }
}

/// A body that could not be read: 413 over the limit (the rejection says so by its status: its
/// causes do not reach `LengthLimitError`), else [`body_error`].
/// A multipart body that could not be read: a stall or the limit as [`body_error`] says, else
/// 400 `bad_multipart` (also for what axum calls a 500: a stream cut short by the client).
pub fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let read = body_error(&e);
    if matches!(
        read.status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        return read;
    }
    let status = if e.status().is_client_error() {
        e.status()
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, "bad_multipart", e.body_text())
}

/// What a request body that could not be read answers, by the cause in `e`'s chain: 413
/// `too_large` over the limit; 408 `body_timeout` when it stopped arriving for `api.body_timeout`
/// (a body shorter than its `Content-Length` ends so); else 400 `bad_body`.
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return ApiError::too_large("request body is larger than the configured limit");
        }
        if c.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body stopped arriving before its end (`api.body_timeout`): \
                 is it shorter than its `Content-Length`?",
            );
        }
        cause = c.source();
    }
    ApiError::bad_request(
        "bad_body",
        format!("the request body could not be read: {e}"),
    )
}

/// A refused job hook signature: 401 with the check's code, or 503 when the replay memory is
/// away (the hooks crate says which: [`VerifyError::http_status`]).
impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::job_not_found(),
            StoreError::Transition(TransitionError::Invalid(m)) => {
                ApiError::unprocessable("invalid", m)
            }
            StoreError::Transition(t @ TransitionError::Illegal { .. }) => {
                ApiError::conflict("illegal_transition", t.to_string())
            }
            StoreError::Transition(t @ TransitionError::StaleLease) => {
                ApiError::conflict("stale_lease", t.to_string())
            }
            StoreError::Transition(t @ TransitionError::StaleAttempt) => {
                ApiError::conflict("stale_attempt", t.to_string())
            }
            StoreError::BadInput(m) => ApiError::bad_request("bad_request", m),
            StoreError::Unavailable(m) => ApiError::unavailable("unavailable", m),
            // Refused before any of it was written (Redis out of memory, unable to persist, a
            // replica): not a fault of the server, and a retry later may be taken.
            StoreError::Backend(m) if crate::store::is_write_refusal_said(&m) => {
                ApiError::unavailable("unavailable", m)
            }
            StoreError::Backend(m) => ApiError::internal("store_error", m),
        }
    }
}

/// A request the access rules refused (`src/auth/`): each variant's status and code. A 401 asks
/// for a bearer token (`WWW-Authenticate: Bearer`, RFC 6750).
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthorized(m) => ApiError::unauthorized(m).bearer_challenge(),
            Refusal::Forbidden(m) => ApiError::forbidden(m),
            Refusal::CrossOrigin(m) => ApiError::cross_origin(m),
            Refusal::NotFound(m) => ApiError::not_found(m),
            Refusal::TokenInQuery(m) => ApiError::bad_request("token_in_query", m),
            Refusal::StrayQuery(m) => ApiError::bad_query(m),
            Refusal::HeaderTooLarge(m) => ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                m,
            ),
            Refusal::NotInTable(m) => ApiError::internal("route_not_in_access_table", m),
            Refusal::NoDecision(m) => ApiError::internal("no_access_decision", m),
            Refusal::Store(e) => e.into(),
        }
    }
}

/// The access guard and the auth extractors answer with their refusal (see the `From` above).
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error answer that is not JSON, made by axum rather than by a handler (a route without the
/// request's method: 405, its `Allow` added by axum further out; a path segment that is not
/// UTF-8; a body an extractor could not read), gets the API's error body, its status and other
/// headers kept: every error of the API is JSON (`api::router` maps every answer through it).
pub async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error())
        || res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/json"))
    {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // Such bodies are a line of text, if anything.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") => "bad_path",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            "this route does not take this method: its `Allow` header lists those it takes"
                .to_string()
        }
        (true, _) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let json = ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (jparts, jbody) = json.into_parts();
    parts.headers.extend(jparts.headers);
    Response::from_parts(parts, jbody)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5xx is logged at the level of what it means: a fault at ERROR, shedding at WARN, a
    /// client that left at INFO; a 4xx not at all.
    #[test]
    fn server_errors_are_logged_at_the_level_of_what_they_mean() {
        let logs = crate::logging::Capture::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for e in [
                ApiError::internal("store_error", "disk full"),
                ApiError::unavailable("unavailable", "redis away"),
                ApiError::unavailable("too_many_streams", "cap"),
                ApiError::unavailable("busy", "schedule"),
                ApiError::unavailable("request_timeout", "slow"),
                ApiError::unavailable("request_ended", "client left"),
                ApiError::not_found("no job"),
            ] {
                let _ = e.into_response();
            }
        });
        let levels: Vec<(String, String)> = logs
            .text()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["fields"]["code"].as_str().unwrap_or("").to_string(),
                    v["level"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want = [
            ("store_error", "ERROR"),
            ("unavailable", "ERROR"),
            ("too_many_streams", "WARN"),
            ("busy", "WARN"),
            ("request_timeout", "WARN"),
            ("request_ended", "INFO"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, l)| ((*c).to_string(), (*l).to_string()))
            .collect();
        assert_eq!(levels, want);
    }
}
