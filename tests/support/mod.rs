//! Shared builders for the integration tests: a real runyard server on `127.0.0.1:0` with its
//! data in a temporary directory, and a small HTTP client speaking the contract's JSON.
//!
//! ```ignore
//! let ts = TestServer::builder(r#"
//!     [[runners]]
//!     kind = "service"
//!     types = ["runyard.*"]
//! "#).start().await;
//! let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
//! let job = ts.wait_terminal(&id, WAIT).await;
//! ```
//!
//! Every wait here is bounded; a timeout panics with what was last seen.

#![allow(dead_code)]

pub mod child;
pub mod tmpfs;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use runyard::{ServiceContext, ServiceResult};
use serde_json::Value;
use tempfile::TempDir;

/// The default bound of a wait: generous, because the machine may be slow and busy.
pub const WAIT: Duration = Duration::from_secs(20);

/// Configuration every test server starts from; a test's own TOML is merged over it.
const DEFAULTS: &str = r#"
[worker]
lease_ttl = "1s"
kill_grace = "500ms"
poll_interval = "200ms"
shutdown_grace = "5s"

[events]
progress_interval = "0s"
"#;

/// `@DIR@` in a test's TOML is replaced by the test's temporary directory.
pub const DIR_PLACEHOLDER: &str = "@DIR@";

type Registration = Arc<dyn Fn(ServerBuilder) -> ServerBuilder + Send + Sync>;

/// Builds a [`TestServer`].
pub struct TestServerBuilder {
    runners: String,
    extra: String,
    services: Vec<Registration>,
}

impl TestServerBuilder {
    /// Extra configuration (TOML) merged over the test defaults, e.g. `[worker]\nshutdown_grace = "200ms"`.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push('\n');
        self.extra.push_str(toml);
        self
    }

    /// Registers a service operation (again at every restart).
    pub fn service<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ServiceResult> + Send + 'static,
    {
        let name = name.to_string();
        let f = Arc::new(f);
        self.services.push(Arc::new(move |b: ServerBuilder| {
            let f = f.clone();
            b.service(name.clone(), move |ctx| f(ctx))
        }));
        self
    }

    /// Starts the server in a fresh temporary directory.
    pub async fn start(self) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut ts = TestServer {
            server: None,
            url: String::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            dir,
            runners: self.runners,
            extra: self.extra,
            services: self.services,
        };
        ts.launch(true).await.expect("server starts");
        ts
    }
}

/// A running (or stopped) runyard server with its data in a temporary directory.
pub struct TestServer {
    server: Option<RunningServer>,
    /// Base URL of the running server, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    dir: Arc<TempDir>,
    runners: String,
    extra: String,
    services: Vec<Registration>,
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl TestServer {
    /// A builder for a server with these `[[runners]]` (TOML; `@DIR@` is the temp dir).
    pub fn builder(runners: &str) -> TestServerBuilder {
        TestServerBuilder {
            runners: runners.to_string(),
            extra: String::new(),
            services: Vec::new(),
        }
    }

    /// A server with these runners and the test defaults.
    pub async fn start(runners: &str) -> TestServer {
        Self::builder(runners).start().await
    }

    /// The test's temporary directory (the data dir is `dir()/data`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The embedded store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The configuration text this server was started with.
    pub fn config_text(&self) -> String {
        let d = self.dir().display().to_string();
        let mut table: toml::Table = DEFAULTS.parse().expect("defaults");
        let extra: toml::Table = self
            .extra
            .replace(DIR_PLACEHOLDER, &d)
            .parse()
            .expect("test config is valid TOML");
        merge(&mut table, extra);
        table.insert(
            "data_dir".into(),
            toml::Value::String(self.data_dir().display().to_string()),
        );
        let head = toml::to_string(&table).expect("serialise config");
        format!("{head}\n{}\n", self.runners.replace(DIR_PLACEHOLDER, &d))
    }

    /// Starts a server on this test's data dir.
    async fn launch(&mut self, worker: bool) -> Result<(), String> {
        let text = self.config_text();
        std::fs::write(self.dir().join("runyard.toml"), &text).expect("write config");
        let config = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test config refused: {e}\n---\n{text}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let mut b = ServerBuilder::new(config).worker(worker);
        for reg in &self.services {
            b = reg(b);
        }
        let server = b.start(listener).await.map_err(|e| format!("{e:#}"))?;
        self.url = server.url();
        self.server = Some(server);
        Ok(())
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    /// Graceful stop (bounded); the data dir is kept.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(WAIT, s.stop())
                .await
                .expect("server stops within the bound")
                .expect("server stops cleanly");
        }
    }

    /// Stops (if running) and starts a new server on the same data dir at once, with or without
    /// a worker: `RunningServer::stop` returns only once the store (and the data dir's lock) is
    /// released.
    pub async fn restart(&mut self, worker: bool) {
        self.stop().await;
        self.launch(worker).await.expect("server restarts");
    }

    /// Replaces the `[[runners]]` (TOML) the next [`TestServer::restart`] starts with.
    pub fn set_runners(&mut self, runners: &str) {
        self.runners = runners.to_string();
    }

    /// Stops (if running) and starts again at once, without waiting for the data dir's lock.
    pub async fn try_restart(&mut self, worker: bool) -> Result<(), String> {
        self.stop().await;
        self.launch(worker).await
    }

    // ---- HTTP ----

    /// A URL on this server.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    async fn parse(res: reqwest::Response) -> (StatusCode, Value) {
        let status = res.status();
        let text = res.text().await.expect("response body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// `GET path` -> status and JSON (a JSON string when the body is not JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::parse(res).await
    }

    /// Every stored line of job `id` as (stream, line), following `next` in pages of 10,000.
    #[allow(dead_code)]
    pub async fn all_logs(&self, id: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let (st, v) = self
                .get(&format!("/async/jobs/{id}/logs?after={after}&limit=10000"))
                .await;
            assert!(st.is_success(), "{v}");
            let lines = v["lines"].as_array().cloned().unwrap_or_default();
            out.extend(lines.iter().map(|l| {
                let text = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (text("stream"), text("line"))
            }));
            match v["next"].as_u64() {
                Some(n) if !lines.is_empty() => after = n,
                _ => return out,
            }
        }
    }

    /// Every stored line of job `id` ([`Self::all_logs`]), after asserting that its `stream`
    /// lines are `1`..=`n`, each once and in order, and that no `[runyard]` note marks lines
    /// dropped or lost: what a job that printed `n` numbered lines at once must leave.
    #[allow(dead_code)]
    pub async fn numbered_lines_stored(
        &self,
        id: &str,
        stream: &str,
        n: usize,
    ) -> Vec<(String, String)> {
        let lines = self.all_logs(id).await;
        let notes: Vec<&String> = lines
            .iter()
            .map(|(_, l)| l)
            .filter(|l| l.starts_with("[runyard]"))
            .collect();
        assert!(notes.is_empty(), "lines were dropped: {notes:?}");
        let got: Vec<&str> = lines
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, l)| l.as_str())
            .collect();
        let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        assert_eq!(got.len(), want.len(), "{stream} lines stored");
        assert!(got.iter().eq(want.iter()), "every line, in order");
        lines
    }

    /// The text of `GET /metrics` (Prometheus exposition format).
    #[allow(dead_code)]
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.at("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series of `GET /metrics`, named with its labels as the text shows it
    /// (`runyard_store_listed_jobs_total`, `runyard_store_operation_seconds_count{op="list"}`);
    /// `None` when the series is not there.
    #[allow(dead_code)]
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        let head = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&head))
            .map(|v| v.trim().parse::<f64>().expect("a number"))
    }

    /// How many times this server's store ran `op` (`schedule_cas`, `signals_page`...), from
    /// `/metrics`: 0 before the first.
    #[allow(dead_code)]
    pub async fn store_calls(&self, op: &str) -> u64 {
        let series = format!("runyard_store_operation_seconds_count{{op=\"{op}\"}}");
        self.metric(&series).await.map_or(0, |v| v as u64)
    }

    /// `POST path` with a JSON body (or none).
    pub async fn post(&self, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut req = self.client.post(self.at(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Self::parse(res).await
    }

    /// `POST path` with raw bytes as `application/json`.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let res = self
            .client
            .post(self.at(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Self::parse(res).await
    }

    /// `POST /async/jobs`.
    pub async fn submit(&self, body: Value) -> (StatusCode, Value) {
        self.post("/async/jobs", Some(&body)).await
    }

    /// `POST /async/jobs`, which must be accepted; returns the job id.
    pub async fn submit_ok(&self, body: Value) -> String {
        let (st, v) = self.submit(body.clone()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "submit {body}: {v}");
        v["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no job_id in {v}"))
            .to_string()
    }

    /// `GET /async/jobs/{id}`, which must exist.
    pub async fn get_job(&self, id: &str) -> Value {
        let (st, v) = self.get(&format!("/async/jobs/{id}")).await;
        assert_eq!(st, StatusCode::OK, "GET job {id}: {v}");
        v
    }

    /// Polls the job until `pred` holds (bounded); returns the job.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.get_job(id).await;
            if pred(&job) {
                return job;
            }
            if Instant::now() >= deadline {
                panic!("job {id}: condition not met within {timeout:?}; last seen: {job:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until its status is `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |j| j["status"] == status).await
    }

    /// Polls the job until it is terminal (SUCCESS, ERROR, TIMEOUT, CANCELLED).
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |j| is_terminal(&j["status"]))
            .await
    }

    /// One page of the global event stream after `last_id` (exclusive).
    pub async fn events(&self, last_id: &str) -> Vec<Value> {
        self.events_page(&format!("last_id={last_id}")).await
    }

    /// One page of events for a raw query string.
    pub async fn events_page(&self, query: &str) -> Vec<Value> {
        let (st, v) = self.get(&format!("/api/v1/async_event/?{query}")).await;
        assert_eq!(st, StatusCode::OK, "events ?{query}: {v}");
        v["result"]
            .as_array()
            .unwrap_or_else(|| panic!("no `result` array in {v}"))
            .clone()
    }

    /// Every event after `last_id`, following pages until an empty one.
    pub async fn all_events(&self, last_id: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut last = last_id.to_string();
        for _ in 0..10_000 {
            let page = self.events(&last).await;
            let Some(l) = page.last() else {
                return out;
            };
            last = l["id"].as_str().expect("event id is a string").to_string();
            out.extend(page);
        }
        panic!("event stream did not end");
    }

    /// The id of the newest event ("0" when there is none).
    pub async fn last_event_id(&self) -> String {
        self.all_events("0")
            .await
            .last()
            .map(|e| e["id"].as_str().expect("event id").to_string())
            .unwrap_or_else(|| "0".into())
    }

    /// Every job (following `next_cursor`), newest first; `query` is extra filters, e.g. `type=a.*`.
    pub async fn list_all(&self, query: &[(&str, &str)], page: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut q: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            q.push(("limit".into(), page.to_string()));
            if let Some(c) = &cursor {
                q.push(("cursor".into(), c.clone()));
            }
            let res = self
                .client
                .get(self.at("/async/jobs"))
                .query(&q)
                .send()
                .await
                .expect("GET /async/jobs");
            let (st, v) = Self::parse(res).await;
            assert_eq!(st, StatusCode::OK, "list {q:?}: {v}");
            let jobs = v["jobs"].as_array().expect("jobs array").clone();
            assert!(jobs.len() <= page, "page larger than limit: {v}");
            out.extend(jobs);
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("job listing did not end");
    }

    /// How many jobs the store holds (optionally of types matching `type_glob`).
    pub async fn count_jobs(&self, type_glob: Option<&str>) -> usize {
        let q: Vec<(&str, &str)> = type_glob.map(|t| ("type", t)).into_iter().collect();
        self.list_all(&q, 100).await.len()
    }
}

/// Whether a status JSON value is terminal.
pub fn is_terminal(status: &Value) -> bool {
    matches!(
        status.as_str(),
        Some("SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
    )
}

/// The status of a job JSON.
pub fn status_of(job: &Value) -> &str {
    job["status"].as_str().unwrap_or("?")
}

/// Parses an RFC 3339 timestamp of the API.
pub fn time_of(v: &Value) -> SystemTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}"));
    humantime::parse_rfc3339_weak(s).unwrap_or_else(|e| panic!("`{s}` is not RFC 3339: {e}"))
}

/// `b - a`, which must not be negative.
pub fn gap(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a)
        .unwrap_or_else(|e| panic!("time went backwards by {:?}", e.duration()))
}

/// The error body's code and message.
pub fn error_of(v: &Value) -> (&str, &str) {
    (
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {v}")),
        v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.message in {v}")),
    )
}

/// True when the process is gone or a zombie (it no longer runs).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
    }
}

/// Waits (bounded) until every pid is gone or a zombie; panics naming the survivors.
pub async fn wait_pids_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !pid_gone(*p)).collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("processes still running after {timeout:?}: {alive:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `f` returns `Some`.
pub async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not reached within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one HTTP response (head and a `Content-Length` body) from `s`.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no full response: {text:?}");
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response within 10s")
            .expect("read");
        assert!(n > 0, "closed mid-response: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}
