//! How long a report that changes the job's status is tried again ([`JobClient::report_window`]).
//!
//! A report with a `status` (`RUNNING`, and above all the final `SUCCESS` or `ERROR` with the
//! job's result) that gets no answer, or an answer that says "not now" (408, 429, 5xx), is tried
//! again with backoff (0.5 s, 1 s, 2 s, then every 4 s) for up to the report window (30 s by
//! default, `RUNYARD_JOB_REPORT_WINDOW`) after its first try: long enough for the API node
//! `JOB_HOOK` names to restart (a rolling update). Any other refusal (400, 401, 403, 404, 409,
//! 413, 422...) is final at once. An upload is tried again the same way within the window, whole
//! and signed afresh ([`JobClient::upload`]: the server attaches the same file from the same
//! attempt once). Other calls (log lines, progress, signals, downloads, reads) go once.
//! The Python client (examples/python/runyard_job/client_retry.py) does the same.
//!
//! A retry never acts twice: one whose earlier try got no answer, or a proxy's answer (not
//! runyard's JSON), sends the very same signed request again, which the hook takes if the first
//! never reached it or refuses as a replay (`401 replay`: it did, and took it; the report counts
//! as taken). One after runyard's own refusal (its `503`: nothing taken, the signature spent) or
//! more than [`RESEND_WINDOW`] after signing is signed afresh; but a re-send refused `503
//! replay_unavailable` (the replay memory could not tell whether it saw the first) is sent again
//! as it was, within [`RESEND_WINDOW`]: signed afresh it could be taken twice. A final report (`SUCCESS`,
//! `ERROR`) refused `409` on a later try, the refusal's `error.reported` its own status, counts
//! as taken too: an earlier try was applied although the hook answered its own 5xx. A re-sent
//! final report the hook remembered but never applied is answered `503 replay_unapplied`, so it
//! is signed again.
//!
//! A first send refused `401 bad_signature` by a node that does not know `X-Job-Nonce` (an API
//! node of an earlier build) is signed again without a nonce, at once ([`super::nonce_refused`]).
//! A re-send refused so is not: that node checks the signature before its replay memory, so the
//! first send may have been taken by a newer node, and the older one would take a fresh signature
//! a second time. The very same request is sent again within the window and [`RESEND_WINDOW`]
//! (a newer node's `401 replay` says it was taken); when they run out the call fails with that
//! `401`, unless a newer node said `503 replay_unapplied` meanwhile (not applied: signed again).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

use super::error::http_error;
use super::{nonce_refused, ClientError, JobClient};

/// Seconds a status report is tried again after its first try, by default.
pub const DEFAULT_REPORT_WINDOW: Duration = Duration::from_secs(30);
/// Environment variable that sets the report window (seconds, 0 or more; fractions allowed).
pub const ENV_REPORT_WINDOW: &str = "RUNYARD_JOB_REPORT_WINDOW";
/// How long after signing a retry may send the very same signed request again: the server takes
/// a time up to 5 minutes from its clock, one minute of that left for clock skew.
pub const RESEND_WINDOW: Duration = Duration::from_secs(240);
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// The report window `raw` (the value of [`ENV_REPORT_WINDOW`]) sets, the default when unset or
/// empty; anything but a finite number of seconds, 0 or more, is an error naming the variable.
pub(super) fn window_from(raw: Option<String>) -> Result<Duration, ClientError> {
    let Some(raw) = raw.filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_REPORT_WINDOW);
    };
    raw.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "{ENV_REPORT_WINDOW} must be a number of seconds, 0 or more, not {raw:?}"
            ))
        })
}

/// Whether a `409` (its body `bytes`) to a later try of the report `body` says an earlier try
/// was taken: its `error.reported` is the final status (`SUCCESS`, `ERROR`) the report carries
/// (the hook applied it, then answered its own 5xx: a store op that failed after the apply).
fn taken_before(body: &[u8], bytes: &[u8]) -> bool {
    let field = |json: &[u8], path: &[&str]| {
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        let v = path.iter().try_fold(&v, |v, k| v.get(k))?;
        v.as_str().map(str::to_owned)
    };
    let sent = field(body, &["status"]);
    matches!(sent.as_deref(), Some("SUCCESS" | "ERROR"))
        && field(bytes, &["error", "reported"]) == sent
}

/// Whether an answer with `status` may go better later: 408, 429 or 5xx.
fn worth_waiting_for(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The pause before try `attempt + 1` (`attempt` from 1): 0.5 s, doubling, at most 4 s and at
/// most `left` (what is left of the window).
fn pause(attempt: u32, left: Duration) -> Duration {
    let backoff = FIRST_PAUSE.saturating_mul(1 << attempt.saturating_sub(1).min(4));
    backoff.min(MAX_PAUSE).min(left)
}

/// What one try got: an answer (its status and body) or none (the error says why).
enum Tried {
    Answer(StatusCode, Bytes),
    NoAnswer(ClientError),
}

impl JobClient {
    /// Runs `call` (a whole call that signs afresh and that the server takes once however often
    /// it is sent, e.g. an upload) and again within the report window after its first try, with
    /// the status reports' backoff, while it fails for a passing reason: no answer, or 408, 429
    /// or 5xx. Any other error, or the window's end, returns the last result.
    pub(super) async fn within_window<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.report_window;
        let mut attempt = 0;
        loop {
            let r = call().await;
            let passing = match &r {
                Err(ClientError::Transport { .. }) => true,
                Err(ClientError::Http { status, .. }) => worth_waiting_for(*status),
                _ => false,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !passing || left.is_zero() {
                return r;
            }
            attempt += 1;
            tokio::time::sleep(pause(attempt, left)).await;
        }
    }

    /// Sends one signed request with `headers` (already signed) and `body`.
    pub(super) async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &[u8],
        context: &str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut request = self
            .hook_http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = request
            .send()
            .await
            .map_err(|e| super::error::transport(context, e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| super::error::transport(context, e))?;
        Ok((status, bytes))
    }

    /// `POST url` with `body`, tried again within the report window (module docs); the body of
    /// its 2xx answer (empty when a re-send was refused as a replay: an earlier try was taken).
    pub(super) async fn post_within_window(
        &self,
        url: Url,
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let context = format!("POST {}", url.path());
        let method = Method::POST;
        let mut headers = self.sign(&method, &url, &body)?;
        let (mut signed_at, mut resent, mut attempt) = (Instant::now(), false, 0);
        let mut nonce = true; // until a node that does not know X-Job-Nonce refuses one
        let mut doubt: Option<ClientError> = None; // such a node's refusal of a re-send
        let deadline = signed_at + self.report_window;
        loop {
            let tried = match self
                .send_once(&method, &url, &headers, &body, &context)
                .await
            {
                Ok(answer) => Tried::Answer(answer.0, answer.1),
                Err(e) => Tried::NoAnswer(e),
            };
            // Whether the try may have been taken (no answer, or a proxy's): re-send it as it was.
            let unknown = match tried {
                Tried::Answer(status, bytes) if status.is_success() => return Ok(bytes),
                Tried::Answer(status, bytes)
                    if !resent && nonce_refused(&headers, status, &bytes) =>
                {
                    nonce = false; // nothing taken: the same report without a nonce, at once
                    headers = self.sign_with(&method, &url, &body, false)?;
                    (signed_at, resent) = (Instant::now(), false);
                    continue;
                }
                Tried::Answer(status, bytes) if nonce_refused(&headers, status, &bytes) => {
                    // A re-send: the node checks the signature before its replay memory, so the
                    // first send may have been taken by a newer node. Signed again without a
                    // nonce, this one could take it twice: the same request again, or fail.
                    let error = http_error(context.clone(), status, &bytes);
                    if Instant::now() >= deadline {
                        return Err(error);
                    }
                    doubt = Some(error);
                    true
                }
                Tried::Answer(status, bytes) => {
                    let error = http_error(context.clone(), status, &bytes);
                    let status = status.as_u16();
                    let code = match &error {
                        ClientError::Http { code, .. } => code.clone(),
                        _ => None,
                    };
                    if resent && status == 401 && code.as_deref() == Some("replay") {
                        return Ok(Bytes::new()); // an earlier send was taken, its answer lost
                    }
                    if attempt > 0 && status == 409 && taken_before(&body, &bytes) {
                        return Ok(Bytes::new()); // an earlier try was applied, then a 5xx
                    }
                    let expired = resent && status == 401 && code.as_deref() == Some("expired");
                    if !(expired || worth_waiting_for(status)) || Instant::now() >= deadline {
                        return Err(error);
                    }
                    if code.as_deref() == Some("replay_unapplied") {
                        doubt = None; // the first send was not applied: a fresh request is safe
                    }
                    // runyard's own refusal took nothing; a proxy's says nothing. A re-send the
                    // replay memory could not check leaves the first send's fate unknown: as it was.
                    code.is_none() || (resent && code.as_deref() == Some("replay_unavailable"))
                }
                Tried::NoAnswer(error) if Instant::now() >= deadline => return Err(error),
                Tried::NoAnswer(_) => true,
            };
            attempt += 1;
            tokio::time::sleep(pause(
                attempt,
                deadline.saturating_duration_since(Instant::now()),
            ))
            .await;
            if (unknown || doubt.is_some()) && signed_at.elapsed() < RESEND_WINDOW {
                resent = true;
            } else if let Some(error) = doubt {
                return Err(error); // whether the first send was taken stays unknown
            } else {
                headers = self.sign_with(&method, &url, &body, nonce)?;
                (signed_at, resent) = (Instant::now(), false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
