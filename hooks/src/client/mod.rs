//! The Rust job client: what a job uses to talk to its hook.
//!
//! ```no_run
//! # async fn run() -> Result<(), runyard_hooks::ClientError> {
//! use runyard_hooks::JobClient;
//! let client = JobClient::from_env()?; // JOB_ID, JOB_SECRET_KEY, JOB_HOOK
//! client.running().await?;
//! let me = client.job().await?;
//! client.progress(0.5, None).await?;
//! client.success(Some(me.args)).await?;
//! # Ok(()) }
//! ```
//!
//! Requests to the hook are signed (v2 by default, v1 with [`JobClient::with_v1`]) and never follow
//! redirects, so signatures are only ever sent to the hook. The download `Location` and the upload
//! `url` are short-lived signed URLs: they get the bytes without any job header, like the webda
//! Python client does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

mod chunks;
mod error;
mod files;
mod retry;

pub use chunks::{log_chunks, lost_note, MAX_CHUNK_JSON_BYTES, MAX_REPORT_ENTRIES};
pub use error::ClientError;
use error::{http_error, parse_json};
pub use retry::{DEFAULT_REPORT_WINDOW, ENV_REPORT_WINDOW, RESEND_WINDOW};

use crate::secret::Secret;
use crate::sign::{now_ms, random_nonce, signed_headers_with_nonce, SigVersion, X_JOB_NONCE};
use crate::wire::{JobSelf, StatusReport, UploadDigest};

/// Environment variable holding the job id.
pub const ENV_JOB_ID: &str = "JOB_ID";
/// Environment variable holding the job's secret key.
pub const ENV_JOB_SECRET_KEY: &str = "JOB_SECRET_KEY";
/// Environment variable holding the hook base URL (`{public_url}/async`).
pub const ENV_JOB_HOOK: &str = "JOB_HOOK";
/// Environment variable holding the job type (informational).
pub const ENV_JOB_TYPE: &str = "JOB_TYPE";
/// Environment variable holding the job arguments as JSON (informational).
pub const ENV_JOB_ARGS: &str = "JOB_ARGS";

/// Store name under which a job's own files live.
pub const JOBS_STORE: &str = "jobs";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
const TRANSFER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest excerpt of a non-JSON error body kept in an error message.
const MAX_ERROR_EXCERPT: usize = 200;

/// What [`JobClient::upload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The server already had this content (proven by the challenge): the last try sent no
    /// bytes (an earlier try, whose answer was lost, may have).
    AlreadyStored(UploadDigest),
    /// The bytes were sent to the server's upload URL and accepted.
    Uploaded(UploadDigest),
}

impl UploadOutcome {
    /// The digests of the uploaded file.
    pub fn digest(&self) -> &UploadDigest {
        match self {
            UploadOutcome::AlreadyStored(d) | UploadOutcome::Uploaded(d) => d,
        }
    }
}

/// A running job's connection to its hook (`JOB_HOOK`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobClient {
    id: String,
    secret: Secret,
    hook: Url,
    version: SigVersion,
    /// For signed hook requests: never follows redirects.
    hook_http: reqwest::Client,
    /// For the bytes (download Location, upload url): no job headers, redirects allowed.
    transfer_http: reqwest::Client,
    /// How long a report with a status is tried again (retry.rs).
    report_window: Duration,
    /// The last `X-Job-Time` signed (milliseconds), shared by clones ([`JobClient::timestamp`]).
    last_ms: Arc<AtomicI64>,
}

/// `path` + (`?` + query when there is one), as it appears on the request line.
pub fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Resolves a URL given by the server (download `Location`, upload `url`): an absolute http(s)
/// URL is used as is, one starting with `/` is taken on the hook's origin (scheme, host, port).
pub fn resolve_url(hook: &Url, location: &str, what: &'static str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl { what, reason };
    let location = location.trim();
    if location.is_empty() {
        return Err(invalid("empty".to_owned()));
    }
    let url = if location.starts_with('/') {
        hook.join(location)
    } else {
        Url::parse(location)
    }
    .map_err(|e| invalid(format!("neither absolute nor starting with '/': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("unsupported scheme {}", url.scheme())));
    }
    Ok(url)
}

/// Whether the answer (`status`, `bytes`) to a request signed with `headers` says the hook does
/// not know `X-Job-Nonce`: `401 bad_signature` to a request that carried one, as an API node of a
/// build before the nonce answers (it verifies the signature without it, before its replay
/// memory). To a request's first send, nothing was taken: it is signed again without a nonce,
/// once (to a node that knows nonces, a wrong secret is `bad_signature` again). To a re-send (its
/// first send's answer lost), the first send may have been taken by a newer node: that is not
/// signed again (retry.rs).
pub(super) fn nonce_refused(headers: &HeaderMap, status: StatusCode, bytes: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers.contains_key(X_JOB_NONCE)
        && serde_json::from_slice::<crate::wire::ErrorBody>(bytes)
            .is_ok_and(|b| b.error.code == "bad_signature")
}

/// Whether `s` looks like an md5 hex digest (also what makes it a safe file name).
pub(super) fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl JobClient {
    /// A client from the environment: `JOB_ID`, `JOB_SECRET_KEY` and `JOB_HOOK` (all required),
    /// and the report window from `RUNYARD_JOB_REPORT_WINDOW` when set.
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`JobClient::from_env`], reading variables through `lookup` (for tests or other
    /// sources of configuration). Empty values count as missing.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ClientError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(ClientError::MissingEnv(name))
        };
        let id = get(ENV_JOB_ID)?;
        let secret = Secret::from_string(get(ENV_JOB_SECRET_KEY)?);
        let hook = get(ENV_JOB_HOOK)?;
        let window = retry::window_from(lookup(ENV_REPORT_WINDOW))?;
        Ok(Self::new(id, secret, &hook)?.with_report_window(window))
    }

    /// A client for job `id` with its secret and hook base URL (e.g.
    /// `http://127.0.0.1:7070/async`; a trailing `/` is ignored). Signs with v2.
    pub fn new(id: impl Into<String>, secret: Secret, hook: &str) -> Result<Self, ClientError> {
        let id = id.into();
        if id.is_empty() || reqwest::header::HeaderValue::from_str(&id).is_err() {
            return Err(ClientError::InvalidArgument(
                "the job id must be a non-empty printable ASCII string".to_owned(),
            ));
        }
        let hook = Url::parse(hook.trim())
            .map_err(|e| ClientError::InvalidHook(format!("not a URL ({e})")))?;
        if !matches!(hook.scheme(), "http" | "https") {
            return Err(ClientError::InvalidHook(format!(
                "scheme must be http or https, not {}",
                hook.scheme()
            )));
        }
        if hook.cannot_be_a_base() || hook.host_str().is_none() {
            return Err(ClientError::InvalidHook("no host".to_owned()));
        }
        if hook.query().is_some() || hook.fragment().is_some() {
            return Err(ClientError::InvalidHook(
                "must not have a query or a fragment".to_owned(),
            ));
        }
        let hook_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(HOOK_TIMEOUT)
            .build()
            .map_err(ClientError::Setup)?;
        let transfer_http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(TRANSFER_READ_TIMEOUT)
            .build()
            .map_err(ClientError::Setup)?;
        Ok(JobClient {
            id,
            secret,
            hook,
            version: SigVersion::V2,
            hook_http,
            transfer_http,
            report_window: DEFAULT_REPORT_WINDOW,
            last_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// How long a report with a status (`RUNNING`, `SUCCESS`, `ERROR`) is tried again after its
    /// first try when no answer came or the answer was 408, 429 or 5xx (30 s by default; zero:
    /// one try). Any other refusal is final at once; other calls go once.
    pub fn with_report_window(mut self, window: Duration) -> Self {
        self.report_window = window;
        self
    }

    /// The report window ([`JobClient::with_report_window`]).
    pub fn report_window(&self) -> Duration {
        self.report_window
    }

    /// Signs with v1 (webda-compatible) instead of v2.
    pub fn with_v1(mut self) -> Self {
        self.version = SigVersion::V1;
        self
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hook base URL.
    pub fn hook(&self) -> &Url {
        &self.hook
    }

    /// The signature version used.
    pub fn version(&self) -> SigVersion {
        self.version
    }

    /// `{hook}/{segments...}`, each segment percent-encoded.
    pub fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.hook.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `new` refuses cannot-be-a-base URLs, so this branch is always taken.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The signed headers for `method url` with `body`, at the current time; with v2, a fresh
    /// random `X-Job-Nonce`, so that the same request signed in the same millisecond by another
    /// client of the job (another process, another `JobClient`) is not taken for a replay of
    /// this one. A re-send of these very headers is still one (retry.rs).
    pub fn sign(&self, method: &Method, url: &Url, body: &[u8]) -> Result<HeaderMap, ClientError> {
        self.sign_with(method, url, body, true)
    }

    /// [`JobClient::sign`], with a nonce (v2) only when `nonce` (see [`nonce_refused`]).
    pub(super) fn sign_with(
        &self,
        method: &Method,
        url: &Url,
        body: &[u8],
        nonce: bool,
    ) -> Result<HeaderMap, ClientError> {
        let nonce = (nonce && self.version == SigVersion::V2).then(random_nonce);
        Ok(signed_headers_with_nonce(
            &self.id,
            &self.secret,
            self.version,
            (method.as_str(), &path_and_query(url), body),
            self.timestamp(),
            nonce.as_deref(),
        )?)
    }

    /// The time to sign with: the clock's milliseconds, or one more than the last time this
    /// client (or a clone) signed with, so that its times strictly increase. Two of its requests
    /// signed in one millisecond are then never alike, even without a nonce (v1, or a node that
    /// does not know `X-Job-Nonce`): the server would refuse the second as a replay.
    fn timestamp(&self) -> i64 {
        let now = now_ms();
        let next = |last: i64| now.max(last.saturating_add(1));
        let (Ok(last) | Err(last)) =
            self.last_ms
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(next(l)));
        next(last)
    }

    /// Sends one signed request to the hook and returns the body of its 2xx answer.
    async fn hook_call(
        &self,
        method: Method,
        url: Url,
        json_body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, ClientError> {
        let context = format!("{method} {}", url.path());
        let body = json_body.unwrap_or_default();
        let headers = self.sign(&method, &url, &body)?;
        let (mut status, mut bytes) = self
            .send_once(&method, &url, &headers, &body, &context)
            .await?;
        if nonce_refused(&headers, status, &bytes) {
            let headers = self.sign_with(&method, &url, &body, false)?;
            (status, bytes) = self
                .send_once(&method, &url, &headers, &body, &context)
                .await?;
        }
        if !status.is_success() {
            return Err(http_error(context, status, &bytes));
        }
        Ok(bytes)
    }

    /// `POST {hook}/status` with `report`; returns the server's JSON answer (`null` if empty).
    pub async fn status(&self, report: &StatusReport) -> Result<Value, ClientError> {
        self.send_status(report).await?.answer()
    }

    /// `POST {hook}/status` with `report`: `Ok` once the hook took it (a 2xx answer), whatever
    /// its body ([`StatusTaken::answer`] reads it).
    pub(crate) async fn send_status(
        &self,
        report: &StatusReport,
    ) -> Result<StatusTaken, ClientError> {
        if report.progress.is_some_and(|p| !p.is_finite()) {
            return Err(ClientError::InvalidArgument(
                "progress must be a finite number".to_owned(),
            ));
        }
        // A long error as the server would store it (every report, not only `error()`'s).
        let long = report
            .error_message
            .as_ref()
            .is_some_and(|e| e.len() > crate::error_text::MAX_ERROR_BYTES);
        let cut;
        let report = if long {
            cut = StatusReport {
                error_message: report
                    .error_message
                    .clone()
                    .map(crate::error_text::capped_error),
                ..report.clone()
            };
            &cut
        } else {
            report
        };
        let body = serde_json::to_vec(report).map_err(|source| ClientError::Json {
            context: "status report".to_owned(),
            source,
        })?;
        let url = self.endpoint(&["status"]);
        let context = format!("POST {}", url.path());
        // A status change (the job's result above all) outlasts a restart of the hook's node.
        let bytes = if report.status.is_some() && !self.report_window.is_zero() {
            self.post_within_window(url, body).await?
        } else {
            self.hook_call(Method::POST, url, Some(body)).await?
        };
        Ok(StatusTaken { context, bytes })
    }

    /// Reports `status: RUNNING`.
    pub async fn running(&self) -> Result<Value, ClientError> {
        self.status(&StatusReport {
            status: Some("RUNNING".to_owned()),
            ..StatusReport::default()
        })
        .await
    }

    /// Reports progress (a fraction from 0.0 to 1.0) and optional `statusDetails`.
    pub async fn progress(
        &self,
        progress: f64,
        details: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.status(&StatusReport {
            progress: Some(progress),
            status_details: details,
            ..StatusReport::default()
        })
        .await
    }

    /// Appends log lines, any number of any length: in as many reports as the hook's limits
    /// need (see [`JobClient::report_with_logs`]).
    pub async fn log(&self, lines: Vec<String>) -> Result<Value, ClientError> {
        self.report_with_logs(StatusReport::default(), lines).await
    }

    /// Reports `status: SUCCESS` with an optional result.
    pub async fn success(&self, result: Option<Value>) -> Result<Value, ClientError> {
        self.status(&StatusReport {
            status: Some("SUCCESS".to_owned()),
            results: result,
            ..StatusReport::default()
        })
        .await
    }

    /// Reports `status: ERROR` with an error message. Once the process has ended, the job is
    /// retried with backoff while it has attempts left (use [`JobClient::error_no_retry`] for a
    /// failure that another attempt cannot fix). A message over 16 KiB is sent cut, as the
    /// server would store it.
    pub async fn error(&self, message: impl Into<String>) -> Result<Value, ClientError> {
        self.status(&StatusReport {
            status: Some("ERROR".to_owned()),
            error_message: Some(message.into()),
            ..StatusReport::default()
        })
        .await
    }

    /// Reports `status: ERROR` with `retry: false`: the job ends ERROR without another attempt
    /// (bad arguments, missing input...), whatever its `max_attempts`. The Rust counterpart of
    /// the Python client's `NonRetryable`.
    pub async fn error_no_retry(&self, message: impl Into<String>) -> Result<Value, ClientError> {
        self.status(&StatusReport {
            status: Some("ERROR".to_owned()),
            error_message: Some(message.into()),
            retry: Some(false),
            ..StatusReport::default()
        })
        .await
    }

    /// `POST {hook}/signal/{key}` with `{payload?, id?}`: writes a readiness signal (an `id`
    /// makes it idempotent); returns the server's answer `{key, seq, at, id}`. An `id` starting
    /// `job:` (the ids of the records a job's `emits` writes) is refused by the server (422).
    /// The keys `.` and `..` (which a URL resolves as a path; the server refuses them) are
    /// [`ClientError::InvalidArgument`], nothing sent.
    pub async fn signal(
        &self,
        key: &str,
        payload: Option<Value>,
        id: Option<&str>,
    ) -> Result<Value, ClientError> {
        if key == "." || key == ".." {
            return Err(ClientError::InvalidArgument(format!(
                "a signal key may not be `.` or `..` (got `{key}`): a URL would resolve it as a \
                 path; the server refuses it"
            )));
        }
        let mut body = serde_json::Map::new();
        if let Some(p) = payload {
            body.insert("payload".to_owned(), p);
        }
        if let Some(i) = id {
            body.insert("id".to_owned(), Value::String(i.to_owned()));
        }
        let body = serde_json::to_vec(&body).map_err(|source| ClientError::Json {
            context: "signal".to_owned(),
            source,
        })?;
        let url = self.endpoint(&["signal", key]);
        let context = format!("POST {}", url.path());
        let bytes = self.hook_call(Method::POST, url, Some(body)).await?;
        parse_json(&context, &bytes)
    }

    /// `GET {hook}/job`: the job's own id, type, args and attempt.
    pub async fn job(&self) -> Result<JobSelf, ClientError> {
        let url = self.endpoint(&["job"]);
        let context = format!("GET {}", url.path());
        let bytes = self.hook_call(Method::GET, url, None).await?;
        parse_json(&context, &bytes)
    }
}

/// A status report the hook took (a 2xx answer), with the body of its answer.
pub(crate) struct StatusTaken {
    context: String,
    bytes: bytes::Bytes,
}

impl StatusTaken {
    /// The answer's JSON (`null` if empty); an error when the body is not JSON, although the
    /// report was stored.
    pub(crate) fn answer(&self) -> Result<Value, ClientError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        parse_json(&self.context, &self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{JOB_HASH_HEADER, JOB_SIGNATURE_HEADER, JOB_TIME_HEADER};
    use crate::verify::{HookHeaders, Verifier};
    use reqwest::StatusCode;
    use std::collections::HashMap;

    const JOB: &str = "0190a5e0-7c3a-7000-8000-00000000abcd";
    const SECRET: &str = "f61b0c92cd4100fe87c7d02bb64aedf228570ebb5bafd1ff015e63e3447b1cbd";

    fn client(hook: &str) -> JobClient {
        JobClient::new(JOB, Secret::from_string(SECRET.to_owned()), hook).expect("client")
    }

    /// The signal keys `.` and `..`: the URL `{hook}/signal/..` lost its `..` segment (`{hook}/signal`), so the
    /// request went to another route (a 404/405); the server refuses these keys. Refused here,
    /// nothing sent (no server listens on port 1: a request would be a transport error).
    #[tokio::test]
    async fn the_signal_keys_dot_and_dot_dot_are_refused_before_sending() {
        let c = client("http://127.0.0.1:1/async");
        for key in [".", ".."] {
            match c.signal(key, None, None).await {
                Err(ClientError::InvalidArgument(m)) => assert!(m.contains("`.` or `..`"), "{m}"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    /// A file property, store or uuid the server refuses (`.` and `..` above all: the URL
    /// `{hook}/upload/jobs/{id}/..` loses a segment and reaches another route) is refused here,
    /// nothing sent; a good one is sent (a transport error: nothing listens on port 1).
    #[tokio::test]
    async fn file_paths_the_server_refuses_are_refused_before_sending() {
        let c = client("http://127.0.0.1:1/async");
        let dir = std::env::temp_dir().join(format!("runyard-file-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.txt");
        std::fs::write(&file, b"x").unwrap();
        let refused = |r: Result<(), ClientError>, what: &str| match r {
            Err(ClientError::InvalidArgument(m)) => assert!(m.contains("nothing sent"), "{m}"),
            other => panic!("{what}: {other:?}"),
        };
        for bad in [".", "..", "", "a/b", "a.b", "é", &"p".repeat(65)] {
            let up = c.upload(bad, &file, Value::Null).await.map(|_| ());
            refused(up, bad);
            let down = c.download("jobs", JOB, bad, 0, &dir).await.map(|_| ());
            refused(down, bad);
            let store = c.download(bad, JOB, "out", 0, &dir).await.map(|_| ());
            refused(store, bad);
        }
        for uuid in [".", "..", "", "a/b", "a\\b"] {
            let down = c.download("jobs", uuid, "out", 0, &dir).await.map(|_| ());
            refused(down, uuid);
        }
        let sent = c.download("jobs", JOB, "out-1_x", 0, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(sent, Err(ClientError::Transport { .. })),
            "{sent:?}"
        );
    }

    /// A client's signed times strictly increase, its clones' too, however fast it signs (the
    /// Python client's `_timestamp` does the same).
    #[test]
    fn signed_times_strictly_increase() {
        let c = client("http://127.0.0.1:1/async");
        let twin = c.clone();
        let url = c.endpoint(&["status"]);
        let times: Vec<i64> = (0..200)
            .map(|i| {
                let signer = if i % 2 == 0 { &c } else { &twin };
                let h = signer
                    .sign_with(&Method::POST, &url, b"{}", i % 3 == 0)
                    .expect("signed");
                h[JOB_TIME_HEADER].to_str().unwrap().parse().unwrap()
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn from_env_names_the_missing_variable() {
        let all = [
            (ENV_JOB_ID, JOB),
            (ENV_JOB_SECRET_KEY, SECRET),
            (ENV_JOB_HOOK, "http://127.0.0.1:7070/async"),
        ];
        let c = JobClient::from_lookup(env(&all)).expect("complete env");
        assert_eq!(c.id(), JOB);
        assert_eq!(c.version(), SigVersion::V2);
        for missing in [ENV_JOB_ID, ENV_JOB_SECRET_KEY, ENV_JOB_HOOK] {
            let partial: Vec<_> = all.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = JobClient::from_lookup(env(&partial)).expect_err("missing");
            assert!(matches!(err, ClientError::MissingEnv(name) if name == missing));
            assert!(err.to_string().contains(missing), "{err}");
            // Empty counts as missing.
            let mut empty = partial.clone();
            empty.push((missing, ""));
            assert!(matches!(
                JobClient::from_lookup(env(&empty)),
                Err(ClientError::MissingEnv(name)) if name == missing
            ));
        }
    }

    #[test]
    fn rejects_bad_hooks_and_ids() {
        for hook in [
            "not a url",
            "ftp://h/async",
            "http://h/async?x=1",
            "http://h/async#f",
            "mailto:a@b",
        ] {
            let err =
                JobClient::new(JOB, Secret::from_string(SECRET.into()), hook).expect_err(hook);
            assert!(matches!(err, ClientError::InvalidHook(_)), "{hook}: {err}");
            assert!(!err.to_string().contains(SECRET));
        }
        for id in ["", "a\nb"] {
            let err = JobClient::new(id, Secret::from_string(SECRET.into()), "http://h/async")
                .expect_err("bad id");
            assert!(matches!(err, ClientError::InvalidArgument(_)));
        }
    }

    #[test]
    fn endpoints() {
        for hook in ["http://h:7070/async", "http://h:7070/async/"] {
            let c = client(hook);
            assert_eq!(
                c.endpoint(&["status"]).as_str(),
                "http://h:7070/async/status"
            );
        }
        let c = client("https://example.com/runyard/async");
        assert_eq!(
            c.endpoint(&["download", "jobs", JOB, "inputs", "0"])
                .as_str(),
            format!("https://example.com/runyard/async/download/jobs/{JOB}/inputs/0")
        );
        // Segments are percent-encoded, so they cannot change the path's shape.
        assert_eq!(
            path_and_query(&c.endpoint(&["upload", "jobs", JOB, "a b/../c?d"])),
            format!("/runyard/async/upload/jobs/{JOB}/a%20b%2F..%2Fc%3Fd")
        );
    }

    #[test]
    fn path_and_query_as_sent() {
        let url = Url::parse("http://h:1/a/b%20c?x=1&y=%2F").expect("url");
        assert_eq!(path_and_query(&url), "/a/b%20c?x=1&y=%2F");
        let url = Url::parse("http://h:1").expect("url");
        assert_eq!(path_and_query(&url), "/");
        let url = Url::parse("http://h/async/status").expect("url");
        assert_eq!(path_and_query(&url), "/async/status");
    }

    #[test]
    fn resolves_server_urls() {
        let hook = Url::parse("http://h:7070/prefix/async").expect("url");
        let ok = [
            ("/async/blob/abc?t=1", "http://h:7070/async/blob/abc?t=1"),
            (
                "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=1",
                "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=1",
            ),
            ("http://other:9/x", "http://other:9/x"),
        ];
        for (location, expected) in ok {
            assert_eq!(
                resolve_url(&hook, location, "download Location")
                    .expect(location)
                    .as_str(),
                expected
            );
        }
        for bad in [
            "",
            "relative/path",
            "ftp://h/x",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            let err = resolve_url(&hook, bad, "upload").expect_err(bad);
            assert!(
                matches!(err, ClientError::InvalidUrl { what: "upload", .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn signed_headers_verify_on_the_server_side() {
        let secret = Secret::from_string(SECRET.to_owned());
        let verifier = Verifier::new();
        for c in [
            client("http://h:7070/async"),
            client("http://h:7070/async").with_v1(),
        ] {
            let url = c.endpoint(&["status"]);
            let body = br#"{"status":"RUNNING"}"#;
            let headers = c.sign(&Method::POST, &url, body).expect("headers");
            assert_eq!(headers[crate::sign::JOB_ID_HEADER], JOB);
            assert_eq!(headers[JOB_HASH_HEADER].len(), 64);
            assert_eq!(
                headers.contains_key(JOB_SIGNATURE_HEADER),
                c.version() == SigVersion::V2
            );
            let parsed = HookHeaders::from_headers(&headers).expect("parse");
            let time: i64 = parsed.time.parse().expect("time");
            verifier
                .verify(&parsed, &secret, "POST", "/async/status", body, time)
                .expect("verifies");
        }
        // v2 binds the query too.
        let c = client("http://h:7070/async");
        let url = Url::parse("http://h:7070/async/job?x=1").expect("url");
        let headers = c.sign(&Method::GET, &url, b"").expect("headers");
        let parsed = HookHeaders::from_headers(&headers).expect("parse");
        let time: i64 = headers[JOB_TIME_HEADER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("time");
        assert!(verifier
            .verify(&parsed, &secret, "GET", "/async/job", b"", time)
            .is_err());
        verifier
            .verify(&parsed, &secret, "GET", "/async/job?x=1", b"", time)
            .expect("with query");
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let err = http_error(
            "POST /async/status".into(),
            StatusCode::CONFLICT,
            br#"{"error": {"code": "terminal", "message": "job is already SUCCESS"}}"#,
        );
        assert_eq!(err.status(), Some(409));
        assert_eq!(
            err.to_string(),
            "POST /async/status: HTTP 409 (terminal): job is already SUCCESS"
        );
        let err = http_error(
            "GET /x".into(),
            StatusCode::BAD_GATEWAY,
            b"<html>oops</html>",
        );
        assert_eq!(err.to_string(), "GET /x: HTTP 502: <html>oops</html>");
        let err = http_error("GET /x".into(), StatusCode::NOT_FOUND, b"");
        assert_eq!(err.to_string(), "GET /x: HTTP 404: Not Found");
        let long = vec![b'a'; 10_000];
        let err = http_error("GET /x".into(), StatusCode::BAD_REQUEST, &long);
        assert!(err.to_string().len() < 300);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let c = client("http://h:7070/async");
        let text = format!("{c:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("Secret(***)"));
    }

    #[test]
    fn md5_names_only() {
        assert!(is_md5_hex("5d41402abc4b2a76b9719d911017c592"));
        assert!(!is_md5_hex("../../etc/passwd"));
        assert!(!is_md5_hex("5d41402abc4b2a76b9719d911017c59"));
        assert!(!is_md5_hex("5d41402abc4b2a76b9719d911017c59/"));
    }

    #[tokio::test]
    async fn non_finite_progress_is_refused_before_sending() {
        // Port 9 on localhost: nothing is sent anyway since validation fails first.
        let c = client("http://127.0.0.1:9/async");
        let err = c.progress(f64::NAN, None).await.expect_err("nan");
        assert!(matches!(err, ClientError::InvalidArgument(_)));
    }
}
