//! The signed job hook API over real HTTP ("Signed job hooks"): bad calls are refused with the
//! contract's status and change nothing, good calls work, each attempt has its own secret, the
//! secret never shows up in an answer or a log, and the Rust `JobClient` / `runyard launch` work end
//! to end.
//!
//! Self-contained: the helpers live in this file. Hook calls are sent over a raw TCP connection so
//! that the request target is exactly what was signed (a URL library would normalise `..` and
//! `%2e%2e` away before sending).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use runyard_hooks::{
    derive_job_secret, now_ms, sign_v1, sign_v2, signed_headers, upload_challenge, ClientError,
    JobClient, Secret, SigVersion, UploadOutcome,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// The `runyard` binary of this build.
const BIN: &str = env!("CARGO_BIN_EXE_runyard");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The runners every test server has.
fn runners_toml() -> String {
    let bin = format!("{BIN:?}");
    format!(
        r#"
[[runners]]
name = "hold"
kind = "local"
types = ["hold.*"]
command = ["/bin/sh", "-c", "sleep 30"]
concurrency = 16

[[runners]]
name = "flaky"
kind = "local"
types = ["flaky"]
command = ["/bin/sh", "-c", "if [ \"$JOB_ATTEMPT\" = 1 ]; then exit 1; fi; sleep 30"]
concurrency = 4

[[runners]]
name = "exit-on-mark"
kind = "local"
types = ["exit.on_mark"]
# Exits 0 once the test makes /tmp/runyard-exit-$JOB_ID (bounded: 20 s).
command = ["/bin/sh", "-c", "i=0; while [ ! -e \"/tmp/runyard-exit-$JOB_ID\" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; exit 0"]

[[runners]]
name = "envdump"
kind = "local"
types = ["envdump"]
command = ["/bin/sh", "-c", "env | grep -v JOB_SECRET_KEY"]

[[runners]]
name = "launch-ok"
kind = "local"
types = ["launch.ok"]
command = [{bin}, "launch", "--", "/bin/sh", "-c", "echo hello; exit 0"]

[[runners]]
name = "launch-fail"
kind = "local"
types = ["launch.fail"]
command = [{bin}, "launch", "--", "/bin/sh", "-c", "echo going down; exit 4"]
# A reported ERROR is retried like a crash (docs/hooks.md): one attempt keeps this test short.
max_attempts = 1

[[runners]]
name = "launch-long-lines"
kind = "local"
types = ["launch.long_lines"]
command = [{bin}, "launch", "--forward-logs", "--", "/usr/bin/awk", "BEGIN {{ s = \"x\"; while (length(s) < 16000) s = s s; s = substr(s, 1, 16000); for (i = 0; i < 1200; i++) print i \" \" s }}"]

[[runners]]
name = "launch-echo"
kind = "local"
types = ["launch.echo"]
command = [{bin}, "launch", "runyard.echo"]

[[runners]]
name = "launch-op-fail"
kind = "local"
types = ["launch.op_fail"]
command = [{bin}, "launch", "runyard.fail"]
"#
    )
}

/// Full configuration text: `data_dir`, fast worker settings, `[hooks]` lines, the runners.
fn config_text(data_dir: &Path, top: &str, hooks: &str) -> String {
    format!(
        r#"
data_dir = {data:?}
{top}

[worker]
poll_interval = "100ms"
shutdown_grace = "300ms"
kill_grace = "200ms"
exit_grace = "200ms"

[events]
progress_interval = "0s"

[hooks]
{hooks}

{runners}
"#,
        data = data_dir.display().to_string(),
        runners = runners_toml(),
    )
}

/// Milliseconds for `X-Job-Time`, strictly increasing across the whole test binary, so that two
/// different requests never share a (job, time, hash) triple by accident.
fn fresh_ms() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    loop {
        let last = LAST.load(Ordering::SeqCst);
        let t = now.max(last + 1);
        if LAST
            .compare_exchange(last, t, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return t;
        }
    }
}

type Headers = Vec<(String, String)>;

/// The signed hook headers for `method target body` at `time_ms`.
fn sign_at(
    id: &str,
    secret: &Secret,
    version: SigVersion,
    method: &str,
    target: &str,
    body: &[u8],
    time_ms: i64,
) -> Headers {
    let map = signed_headers(id, secret, version, method, target, body, time_ms).expect("sign");
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().expect("ascii").to_string(),
            )
        })
        .collect()
}

/// Signed now (a fresh time).
fn sign(
    id: &str,
    secret: &Secret,
    version: SigVersion,
    method: &str,
    target: &str,
    body: &[u8],
) -> Headers {
    sign_at(id, secret, version, method, target, body, fresh_ms())
}

fn without(headers: &Headers, name: &str) -> Headers {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn with(headers: &Headers, name: &str, value: &str) -> Headers {
    let mut h = without(headers, name);
    h.push((name.to_string(), value.to_string()));
    h
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

fn challenge(b: &[u8]) -> String {
    upload_challenge([b])
}

/// An upload request body for `content`.
fn upload_body(content: &[u8], metadata: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "hash": md5_hex(content),
        "challenge": challenge(content),
        "metadata": metadata,
    }))
    .expect("json")
}

/// A raw HTTP answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: Value,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn code(&self) -> String {
        self.json["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn describe(&self) -> String {
        format!("HTTP {} {}", self.status, self.text())
    }
}

fn decode_chunked(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&b[..pos]);
        let size =
            usize::from_str_radix(line.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        b = &b[pos + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

/// Sends one HTTP/1.1 request with exactly this request target.
async fn raw_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &Headers,
    body: &[u8],
) -> Resp {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no answer within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {target}: not an HTTP answer: {buf:?}"));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let rest = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: bad status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        decode_chunked(rest)
    } else {
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(rest.len());
        rest[..len.min(rest.len())].to_vec()
    };
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        json,
    }
}

/// What must not change when a call is refused.
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    job: Value,
    logs: Vec<String>,
    blobs: usize,
}

/// Regular files under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// All files under `dir`, recursively.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => all_files(&e.path(), out),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
}

/// An in-process server on 127.0.0.1:0 with its data in a temporary directory. Every answer it
/// gives through these helpers is recorded, and every secret derived is remembered, so that
/// [`Srv::finish`] can check that no answer ever contained a secret.
struct Srv {
    server: Option<RunningServer>,
    dir: TempDir,
    url: String,
    addr: SocketAddr,
    http: reqwest::Client,
    seen: Mutex<String>,
    secrets: Mutex<Vec<String>>,
    jobs: Mutex<Vec<String>>,
}

impl Srv {
    async fn start(hooks: &str) -> Srv {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = config_text(&dir.path().join("data"), "", hooks);
        let config = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test config refused: {e}\n---\n{text}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = ServerBuilder::new(config)
            .start(listener)
            .await
            .expect("server starts");
        let url = server.url();
        let addr = server.addr;
        Srv {
            server: Some(server),
            dir,
            url,
            addr,
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("http client"),
            seen: Mutex::new(String::new()),
            secrets: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn hook_base(&self) -> String {
        format!("{}/async", self.url)
    }

    fn record(&self, what: &str, status: u16, headers: &[(String, String)], body: &[u8]) {
        let mut s = self.seen.lock().expect("lock");
        s.push_str(&format!("\n== {what} -> {status}\n"));
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&String::from_utf8_lossy(body));
    }

    /// Remembers (and returns) the secret of `attempt` of job `id`.
    fn secret(&self, id: &str, attempt: u32) -> Secret {
        let master = &self.server.as_ref().expect("running").app.master_key;
        let s = derive_job_secret(master, id, attempt);
        self.secrets
            .lock()
            .expect("lock")
            .push(s.expose().to_string());
        s
    }

    /// Any request through reqwest; the answer is recorded.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let res = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = res.status().as_u16();
        let headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .to_vec();
        self.record(what, status, &headers, &body);
        (status, body)
    }

    async fn send_json(&self, what: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, body) = self.send(what, req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        self.send_json(&format!("GET {path}"), self.http.get(url))
            .await
    }

    /// `POST /async/jobs` (JSON); the job id.
    async fn submit(&self, body: Value) -> String {
        let (status, v) = self
            .send_json(
                "POST /async/jobs",
                self.http
                    .post(format!("{}/async/jobs", self.url))
                    .json(&body),
            )
            .await;
        assert_eq!(status, 202, "submit {body}: {v}");
        let id = v["job_id"].as_str().expect("job_id").to_string();
        self.jobs.lock().expect("lock").push(id.clone());
        id
    }

    /// `POST /async/jobs` as multipart with a `job` part and one `inputs` file.
    async fn submit_with_input(&self, job: Value, name: &str, mime: &str, bytes: &[u8]) -> String {
        let form = reqwest::multipart::Form::new()
            .part(
                "job",
                reqwest::multipart::Part::text(job.to_string())
                    .mime_str("application/json")
                    .expect("mime"),
            )
            .part(
                "inputs",
                reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(name.to_string())
                    .mime_str(mime)
                    .expect("mime"),
            );
        let (status, v) = self
            .send_json(
                "POST /async/jobs (multipart)",
                self.http
                    .post(format!("{}/async/jobs", self.url))
                    .multipart(form),
            )
            .await;
        assert_eq!(status, 202, "multipart submit {job}: {v}");
        let id = v["job_id"].as_str().expect("job_id").to_string();
        self.jobs.lock().expect("lock").push(id.clone());
        id
    }

    async fn job(&self, id: &str) -> Value {
        let (status, v) = self.get_json(&format!("/async/jobs/{id}")).await;
        assert_eq!(status, 200, "GET job {id}: {v}");
        v
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        let (status, v) = self
            .get_json(&format!("/async/jobs/{id}/logs?limit=10000"))
            .await;
        assert_eq!(status, 200, "GET logs {id}: {v}");
        v["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| l["line"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// The job's log once it holds `line`, bounded. A job that reports its outcome through the
    /// hook is terminal as soon as that report lands, while the runner's copy of the process's
    /// last output lines is written when the process has ended, a moment later.
    async fn logs_with(&self, id: &str, line: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let logs = self.logs(id).await;
            if logs.iter().any(|l| l == line) || start.elapsed() > Duration::from_secs(10) {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until `done` holds (bounded).
    async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(id).await;
            if done(&j) {
                return j;
            }
            if start.elapsed() > WAIT {
                panic!("job {id} not {what} within {WAIT:?}; last seen: {j:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_until(id, status, |j| j["status"] == status).await
    }

    async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_until(id, "terminal", |j| {
            matches!(
                j["status"].as_str(),
                Some("SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
            )
        })
        .await
    }

    /// Waits until the job is RUNNING; returns it with its current attempt's secret.
    async fn running(&self, id: &str) -> (Value, Secret) {
        let j = self.wait_status(id, "RUNNING").await;
        let attempt = j["attempt"].as_u64().expect("attempt") as u32;
        let s = self.secret(id, attempt);
        (j, s)
    }

    /// A raw hook call; the answer is recorded.
    async fn hook(&self, method: &str, target: &str, headers: &Headers, body: &[u8]) -> Resp {
        let r = raw_http(self.addr, method, target, headers, body).await;
        self.record(&format!("{method} {target}"), r.status, &r.headers, &r.body);
        r
    }

    /// A hook call signed now with `secret`.
    #[allow(clippy::too_many_arguments)]
    async fn signed(
        &self,
        id: &str,
        secret: &Secret,
        version: SigVersion,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Resp {
        let h = sign(id, secret, version, method, target, body);
        self.hook(method, target, &h, body).await
    }

    /// A v2 status report.
    async fn report(&self, id: &str, secret: &Secret, body: Value) -> Resp {
        let b = serde_json::to_vec(&body).expect("json");
        self.signed(id, secret, SigVersion::V2, "POST", "/async/status", &b)
            .await
    }

    /// What a refused call must leave as it was.
    async fn snap(&self, id: &str) -> Snap {
        let j = self.job(id).await;
        let mut job = serde_json::Map::new();
        for k in [
            "status",
            "progress",
            "result",
            "error",
            "files",
            "status_details",
            "attempt",
        ] {
            job.insert(k.to_string(), j[k].clone());
        }
        Snap {
            job: Value::Object(job),
            logs: self.logs(id).await,
            blobs: count_files(&self.data_dir().join("files")),
        }
    }

    async fn assert_unchanged(&self, id: &str, before: &Snap, label: &str) {
        let after = self.snap(id).await;
        assert_eq!(
            &after, before,
            "{label}: a refused call changed job {id} or the file store"
        );
    }

    /// Sends a call that must be refused with `want` (and `code`, when given) and change nothing.
    #[allow(clippy::too_many_arguments)]
    async fn refused(
        &self,
        id: &str,
        before: &Snap,
        label: &str,
        method: &str,
        target: &str,
        headers: &Headers,
        body: &[u8],
        want: u16,
        code: Option<&str>,
    ) -> Resp {
        let r = self.hook(method, target, headers, body).await;
        assert_eq!(
            r.status,
            want,
            "{label}: {method} {target}: {}",
            r.describe()
        );
        if let Some(c) = code {
            assert_eq!(r.code(), c, "{label}: {}", r.describe());
        }
        self.assert_unchanged(id, before, label).await;
        r
    }

    /// `GET url` (no job headers), recorded.
    async fn fetch(&self, url: &str) -> (u16, Vec<u8>) {
        self.send(&format!("GET {url}"), self.http.get(url)).await
    }

    /// `PUT url` with raw bytes (no job headers), recorded.
    async fn put_bytes(&self, url: &str, bytes: &[u8]) -> (u16, Value) {
        self.send_json(
            &format!("PUT {url}"),
            self.http.put(url).body(bytes.to_vec()),
        )
        .await
    }

    /// Checks that no recorded answer, no job view, log, list or event, and no file of the data
    /// dir contains any secret derived in the test; then stops the server.
    async fn finish(mut self) {
        let jobs = self.jobs.lock().expect("lock").clone();
        for id in &jobs {
            self.get_json(&format!("/async/jobs/{id}")).await;
            self.get_json(&format!("/async/jobs/{id}/logs?limit=10000"))
                .await;
            self.get_json(&format!("/async/jobs/{id}/result")).await;
        }
        self.get_json("/async/jobs?limit=1000").await;
        let mut last = String::new();
        for _ in 0..200 {
            let (status, v) = self
                .get_json(&format!("/api/v1/async_event/?limit=100&last_id={last}"))
                .await;
            assert_eq!(status, 200, "events: {v}");
            let events = v["result"].as_array().cloned().unwrap_or_default();
            match events.last().and_then(|e| e["id"].as_str()) {
                Some(id) => last = id.to_string(),
                None => break,
            }
        }
        let secrets = self.secrets.lock().expect("lock").clone();
        {
            let seen = self.seen.lock().expect("lock");
            assert!(!seen.is_empty());
            for s in &secrets {
                assert_eq!(s.len(), 64, "a derived secret is 64 hex characters");
                if let Some(pos) = seen.find(s.as_str()) {
                    let from = seen[..pos].rfind("\n== ").unwrap_or(0);
                    panic!(
                        "a job secret appears in an answer of the server: {}",
                        &seen[from..(pos + 64).min(seen.len())]
                    );
                }
            }
        }
        // Nor is it stored anywhere (the server derives it, it never keeps it).
        let mut files = Vec::new();
        all_files(&self.data_dir(), &mut files);
        for f in files {
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            for s in &secrets {
                assert!(
                    !bytes.windows(64).any(|w| w == s.as_bytes()),
                    "a job secret is stored in {}",
                    f.display()
                );
            }
        }
        if let Some(s) = self.server.take() {
            tokio::time::timeout(WAIT, s.stop())
                .await
                .expect("server stops within the bound")
                .expect("server stops cleanly");
        }
    }
}

fn download_target(store: &str, uuid: &str, property: &str, index: &str) -> String {
    format!("/async/download/{store}/{uuid}/{property}/{index}")
}

fn upload_target(store: &str, uuid: &str, property: &str) -> String {
    format!("/async/upload/{store}/{uuid}/{property}")
}

// ---------------------------------------------------------------------------------------------
// 1. Bad calls are refused and change nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_get_401_and_change_nothing() {
    let srv = Srv::start("").await;
    let a = srv
        .submit_with_input(
            json!({"type": "hold.a"}),
            "in.txt",
            "text/plain",
            b"input of a",
        )
        .await;
    let b = srv.submit(json!({"type": "hold.b"})).await;
    let (ja, sa) = srv.running(&a).await;
    let (_, sb) = srv.running(&b).await;
    let attempt = ja["attempt"].as_u64().unwrap() as u32;
    let before = srv.snap(&a).await;

    // A report that would change everything if it were accepted.
    let evil = serde_json::to_vec(&json!({
        "status": "SUCCESS", "progress": 1.0, "results": {"forged": true},
        "logs": ["forged line"], "statusDetails": {"forged": true}
    }))
    .unwrap();
    let st = "/async/status";

    // Wrong keys: another master key, another job's secret, a future attempt's secret.
    let wrong_master = derive_job_secret(b"not-the-master-key-of-this-server", &a, attempt);
    let next_attempt = srv.secret(&a, attempt + 1);
    for (label, key) in [
        ("other master key", &wrong_master),
        ("other job's secret", &sb),
        ("next attempt's secret", &next_attempt),
    ] {
        for v in [SigVersion::V1, SigVersion::V2] {
            let label = format!("{label} ({})", v.as_str());
            let h = sign(&a, key, v, "POST", st, &evil);
            srv.refused(
                &a,
                &before,
                &label,
                "POST",
                st,
                &h,
                &evil,
                401,
                Some("bad_signature"),
            )
            .await;
            let h = sign(&a, key, v, "GET", "/async/job", b"");
            srv.refused(&a, &before, &label, "GET", "/async/job", &h, b"", 401, None)
                .await;
            let t = download_target("jobs", &a, "inputs", "0");
            let h = sign(&a, key, v, "GET", &t, b"");
            srv.refused(&a, &before, &label, "GET", &t, &h, b"", 401, None)
                .await;
            let t = upload_target("jobs", &a, "outputs");
            let body = upload_body(b"forged output", json!({}));
            let h = sign(&a, key, v, "PUT", &t, &body);
            srv.refused(&a, &before, &label, "PUT", &t, &h, &body, 401, None)
                .await;
        }
    }
    // Job b's id with job a's secret.
    let h = sign(&b, &sa, SigVersion::V2, "POST", st, &evil);
    let before_b = srv.snap(&b).await;
    srv.refused(
        &b,
        &before_b,
        "a's secret for b",
        "POST",
        st,
        &h,
        &evil,
        401,
        Some("bad_signature"),
    )
    .await;

    // Missing headers, one at a time, and all of them.
    let good = sign(&a, &sa, SigVersion::V2, "POST", st, &evil);
    for name in ["X-Job-Id", "X-Job-Time", "X-Job-Hash"] {
        let label = format!("missing {name}");
        srv.refused(
            &a,
            &before,
            &label,
            "POST",
            st,
            &without(&good, name),
            &evil,
            401,
            Some("missing_header"),
        )
        .await;
        let label = format!("empty {name}");
        srv.refused(
            &a,
            &before,
            &label,
            "POST",
            st,
            &with(&good, name, ""),
            &evil,
            401,
            Some("missing_header"),
        )
        .await;
    }
    srv.refused(
        &a,
        &before,
        "no headers",
        "POST",
        st,
        &Vec::new(),
        &evil,
        401,
        Some("missing_header"),
    )
    .await;
    // Malformed headers.
    for (name, value) in [
        ("X-Job-Time", "soon"),
        ("X-Job-Time", "-1"),
        ("X-Job-Hash", "abc"),
        ("X-Job-Signature", "v3"),
    ] {
        let label = format!("{name}: {value}");
        srv.refused(
            &a,
            &before,
            &label,
            "POST",
            st,
            &with(&good, name, value),
            &evil,
            401,
            Some("invalid_header"),
        )
        .await;
    }
    srv.refused(
        &a,
        &before,
        "X-Job-Id not a uuid",
        "POST",
        st,
        &with(&good, "X-Job-Id", "not-a-job"),
        &evil,
        401,
        None,
    )
    .await;

    // X-Job-Time 6 minutes off, either way (correctly signed for that time).
    for (label, offset) in [("6 min in the past", -360_000), ("6 min ahead", 360_000)] {
        for v in [SigVersion::V1, SigVersion::V2] {
            let h = sign_at(&a, &sa, v, "POST", st, &evil, now_ms() + offset);
            srv.refused(
                &a,
                &before,
                label,
                "POST",
                st,
                &h,
                &evil,
                401,
                Some("expired"),
            )
            .await;
        }
    }

    // v2 binds body, path, query and method.
    let signed_body = serde_json::to_vec(&json!({"progress": 0.1})).unwrap();
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &signed_body);
    srv.refused(
        &a,
        &before,
        "v2 tampered body",
        "POST",
        st,
        &h,
        &evil,
        401,
        Some("bad_signature"),
    )
    .await;
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &evil);
    srv.refused(
        &a,
        &before,
        "v2 tampered query",
        "POST",
        "/async/status?x=1",
        &h,
        &evil,
        401,
        Some("bad_signature"),
    )
    .await;
    let up_body = upload_body(b"tampered path", json!({}));
    let h = sign(
        &a,
        &sa,
        SigVersion::V2,
        "PUT",
        &upload_target("jobs", &a, "outputs"),
        &up_body,
    );
    srv.refused(
        &a,
        &before,
        "v2 tampered upload path",
        "PUT",
        &upload_target("jobs", &a, "other"),
        &h,
        &up_body,
        401,
        Some("bad_signature"),
    )
    .await;
    let h = sign(
        &a,
        &sa,
        SigVersion::V2,
        "GET",
        &download_target("jobs", &a, "inputs", "1"),
        b"",
    );
    srv.refused(
        &a,
        &before,
        "v2 tampered download path",
        "GET",
        &download_target("jobs", &a, "inputs", "0"),
        &h,
        b"",
        401,
        Some("bad_signature"),
    )
    .await;
    let h = sign(&a, &sa, SigVersion::V2, "GET", "/async/status", b"");
    srv.refused(
        &a,
        &before,
        "v2 signed for another path",
        "GET",
        "/async/job",
        &h,
        b"",
        401,
        Some("bad_signature"),
    )
    .await;

    // Replays: the first call is accepted, the identical second one is refused.
    for v in [SigVersion::V1, SigVersion::V2] {
        let line = format!("replayed once {}", v.as_str());
        let body = serde_json::to_vec(&json!({"progress": 0.25, "logs": [line]})).unwrap();
        let h = sign(&a, &sa, v, "POST", st, &body);
        let first = srv.hook("POST", st, &h, &body).await;
        assert_eq!(first.status, 200, "first call: {}", first.describe());
        let after_first = srv.snap(&a).await;
        assert_eq!(after_first.job["progress"], json!(0.25));
        srv.refused(
            &a,
            &after_first,
            "identical replay",
            "POST",
            st,
            &h,
            &body,
            401,
            Some("replay"),
        )
        .await;
        // Also when the hash is re-cased.
        let upper = h
            .iter()
            .map(|(k, val)| {
                if k.eq_ignore_ascii_case("x-job-hash") {
                    (k.clone(), val.to_ascii_uppercase())
                } else {
                    (k.clone(), val.clone())
                }
            })
            .collect();
        srv.refused(
            &a,
            &after_first,
            "replay with upper-case hash",
            "POST",
            st,
            &upper,
            &body,
            401,
            Some("replay"),
        )
        .await;
        assert_eq!(srv.logs(&a).await.iter().filter(|l| **l == line).count(), 1);
    }
    // v1 headers do not cover the request: reusing them on another route is still a replay.
    let h = sign(&a, &sa, SigVersion::V1, "GET", "/async/job", b"");
    let first = srv.hook("GET", "/async/job", &h, b"").await;
    assert_eq!(first.status, 200, "{}", first.describe());
    let now = srv.snap(&a).await;
    srv.refused(
        &a,
        &now,
        "v1 headers reused on /status",
        "POST",
        st,
        &h,
        &evil,
        401,
        Some("replay"),
    )
    .await;

    // After all that, the job still works with its real secret.
    let r = srv
        .report(&a, &sa, json!({"status": "SUCCESS", "results": {"ok": 1}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS");
    assert_eq!(j["result"], json!({"ok": 1}));
    assert!(!srv.logs(&a).await.iter().any(|l| l.contains("forged")));
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_the_job_id_spelled_differently_is_refused() {
    // X-Job-Id is not covered by the signature, and the server accepts any spelling of a UUID
    // (upper case, no hyphens, braces, urn:uuid:): re-spelling it must not make a replay new.
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.respell"})).await;
    let (_, sa) = srv.running(&a).await;
    let st = "/async/status";
    let body = serde_json::to_vec(&json!({"logs": ["once only"]})).unwrap();
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &body);
    let first = srv.hook("POST", st, &h, &body).await;
    assert_eq!(first.status, 200, "{}", first.describe());
    let before = srv.snap(&a).await;
    let simple = a.replace('-', "");
    let mut accepted = Vec::new();
    for spelling in [
        a.to_ascii_uppercase(),
        simple.clone(),
        format!("{{{a}}}"),
        format!("urn:uuid:{a}"),
    ] {
        let r = srv
            .hook("POST", st, &with(&h, "X-Job-Id", &spelling), &body)
            .await;
        if r.status != 401 {
            accepted.push(format!("X-Job-Id: {spelling} -> {}", r.describe()));
        }
    }
    let after = srv.snap(&a).await;
    let copies = after.logs.iter().filter(|l| *l == "once only").count();
    assert!(
        accepted.is_empty() && after == before,
        "replays accepted by re-spelling X-Job-Id ({copies} copies of the log line):\n{}",
        accepted.join("\n")
    );
    srv.finish().await;
}

/// The embedded store remembers accepted requests in its database, so a request signed before
/// the server started (inside the window) is judged like any other: taken once, then a replay
/// (401) that changes nothing. (The memory outliving a restart is
/// `store::sqlite::tests::accepted_requests_are_remembered_across_a_restart_until_they_expire`;
/// before it, such a request was refused with 503 and the job had to sign it again, and one signed
/// with the job's clock ahead of the server's could be replayed after a restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_before_the_server_started_is_taken_once() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.restart"})).await;
    let (_, sa) = srv.running(&a).await;
    let st = "/async/status";
    let body = serde_json::to_vec(&json!({"logs": ["signed earlier"]})).unwrap();
    // Inside the 5-minute window, before this server began.
    let h = sign_at(
        &a,
        &sa,
        SigVersion::V2,
        "POST",
        st,
        &body,
        now_ms() - 120_000,
    );
    let first = srv.hook("POST", st, &h, &body).await;
    assert_eq!(first.status, 200, "{}", first.describe());
    let before = srv.snap(&a).await;
    srv.refused(
        &a,
        &before,
        "the same request again",
        "POST",
        st,
        &h,
        &body,
        401,
        Some("replay"),
    )
    .await;
    let logs = srv.logs_with(&a, "signed earlier").await;
    assert_eq!(logs.iter().filter(|l| *l == "signed earlier").count(), 1);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_is_refused_when_v2_is_required() {
    let srv = Srv::start("require_v2 = true").await;
    let a = srv
        .submit_with_input(
            json!({"type": "hold.v2"}),
            "in.txt",
            "text/plain",
            b"v2 only",
        )
        .await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let evil = serde_json::to_vec(&json!({"status": "SUCCESS", "logs": ["v1 line"]})).unwrap();
    let up = upload_body(b"v1 upload", json!({}));
    let calls: [(&str, String, &[u8]); 4] = [
        ("POST", "/async/status".to_string(), &evil),
        ("GET", "/async/job".to_string(), b""),
        ("GET", download_target("jobs", &a, "inputs", "0"), b""),
        ("PUT", upload_target("jobs", &a, "outputs"), &up),
    ];
    for (method, target, body) in &calls {
        let h = sign(&a, &sa, SigVersion::V1, method, target, body);
        srv.refused(
            &a,
            &before,
            "v1 with require_v2",
            method,
            target,
            &h,
            body,
            401,
            Some("v1_refused"),
        )
        .await;
    }
    // v2 works.
    for (method, target, body) in &calls[1..3] {
        let r = srv
            .signed(&a, &sa, SigVersion::V2, method, target, body)
            .await;
        assert_eq!(r.status, 200, "v2 {method} {target}: {}", r.describe());
    }
    let r = srv.report(&a, &sa, json!({"status": "SUCCESS"})).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_may_touch_only_its_own_files() {
    let srv = Srv::start("").await;
    let a = srv
        .submit_with_input(
            json!({"type": "hold.a"}),
            "a.txt",
            "text/plain",
            b"a's input",
        )
        .await;
    let b = srv
        .submit_with_input(
            json!({"type": "hold.b"}),
            "b.txt",
            "text/plain",
            b"b's secret input",
        )
        .await;
    let (_, sa) = srv.running(&a).await;
    let (_, _sb) = srv.running(&b).await;
    let before_a = srv.snap(&a).await;
    let before_b = srv.snap(&b).await;
    let up = upload_body(b"written into b by a", json!({"name": "x"}));
    for v in [SigVersion::V1, SigVersion::V2] {
        let cases: Vec<(&str, String, &[u8])> = vec![
            ("GET", download_target("jobs", &b, "inputs", "0"), b""),
            ("GET", download_target("users", &a, "inputs", "0"), b""),
            ("GET", download_target("Jobs", &a, "inputs", "0"), b""),
            ("PUT", upload_target("jobs", &b, "outputs"), &up),
            ("PUT", upload_target("jobs", &b, "inputs"), &up),
            ("PUT", upload_target("files", &a, "outputs"), &up),
        ];
        for (method, target, body) in cases {
            let h = sign(&a, &sa, v, method, &target, body);
            let label = format!("{} {method} {target}", v.as_str());
            let r = srv
                .refused(&a, &before_a, &label, method, &target, &h, body, 403, None)
                .await;
            assert!(
                !r.text().contains("Location") && !r.text().contains("\"url\""),
                "{label}: {}",
                r.describe()
            );
            srv.assert_unchanged(&b, &before_b, &label).await;
        }
    }
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_get_404_and_jobs_that_cannot_report_get_409() {
    let srv = Srv::start("").await;
    // Unknown job (a valid UUID v7, signed with the secret it would have).
    let ghost = uuid::Uuid::now_v7().to_string();
    let sg = srv.secret(&ghost, 1);
    let up = upload_body(b"ghost", json!({}));
    let ghost_calls: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "POST",
            "/async/status".into(),
            br#"{"status":"RUNNING"}"#.to_vec(),
        ),
        ("GET", "/async/job".into(), vec![]),
        (
            "GET",
            download_target("jobs", &ghost, "inputs", "0"),
            vec![],
        ),
        ("PUT", upload_target("jobs", &ghost, "outputs"), up.clone()),
    ];
    let blobs = count_files(&srv.data_dir().join("files"));
    for (method, target, body) in &ghost_calls {
        let r = srv
            .signed(&ghost, &sg, SigVersion::V2, method, target, body)
            .await;
        assert_eq!(
            r.status,
            404,
            "unknown job {method} {target}: {}",
            r.describe()
        );
    }
    assert_eq!(count_files(&srv.data_dir().join("files")), blobs);
    let (status, _) = srv.get_json(&format!("/async/jobs/{ghost}")).await;
    assert_eq!(status, 404, "the unknown job was not created");

    // A job that finished (reported SUCCESS through its hook).
    let done = srv
        .submit_with_input(json!({"type": "hold.done"}), "in.txt", "text/plain", b"in")
        .await;
    let (_, sd) = srv.running(&done).await;
    let r = srv
        .report(
            &done,
            &sd,
            json!({"status": "SUCCESS", "results": {"final": true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    // Committed once its process has ended (stopped after `worker.exit_grace`).
    assert_eq!(srv.wait_terminal(&done).await["status"], "SUCCESS");
    // A job cancelled by a client.
    let cancelled = srv
        .submit_with_input(
            json!({"type": "hold.cancel"}),
            "in.txt",
            "text/plain",
            b"in",
        )
        .await;
    let (_, sc) = srv.running(&cancelled).await;
    let (status, v) = srv
        .send_json(
            "cancel",
            srv.http
                .post(format!("{}/async/jobs/{cancelled}/cancel", srv.url)),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    srv.wait_status(&cancelled, "CANCELLED").await;
    // A job that has not started (scheduled far ahead).
    let later = srv
        .submit(json!({"type": "hold.later", "run_at": humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600)).to_string()}))
        .await;
    let sl = srv.secret(&later, 0);
    assert_eq!(srv.job(&later).await["status"], "SCHEDULED");

    for (id, secret, label) in [
        (&done, &sd, "SUCCESS job"),
        (&cancelled, &sc, "CANCELLED job"),
        (&later, &sl, "SCHEDULED job"),
    ] {
        let before = srv.snap(id).await;
        let up = upload_body(b"too late", json!({}));
        let calls: Vec<(&str, String, Vec<u8>)> = vec![
            (
                "POST",
                "/async/status".into(),
                br#"{"status":"RUNNING"}"#.to_vec(),
            ),
            (
                "POST",
                "/async/status".into(),
                br#"{"status":"SUCCESS","results":{"again":1}}"#.to_vec(),
            ),
            (
                "POST",
                "/async/status".into(),
                br#"{"status":"ERROR","errorMessage":"late"}"#.to_vec(),
            ),
            (
                "POST",
                "/async/status".into(),
                br#"{"progress":0.5,"logs":["late line"]}"#.to_vec(),
            ),
            (
                "POST",
                "/async/status".into(),
                br#"{"logs":["late line"]}"#.to_vec(),
            ),
            ("GET", "/async/job".into(), vec![]),
            ("GET", download_target("jobs", id, "inputs", "0"), vec![]),
            ("PUT", upload_target("jobs", id, "outputs"), up),
        ];
        for (method, target, body) in &calls {
            for v in [SigVersion::V1, SigVersion::V2] {
                let h = sign(id, secret, v, method, target, body);
                let l = format!("{label} {} {method} {target}", v.as_str());
                srv.refused(id, &before, &l, method, target, &h, body, 409, None)
                    .await;
            }
        }
    }
    assert_eq!(srv.job(&done).await["result"], json!({"final": true}));
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_and_encoded_slashes_are_refused_and_write_nothing() {
    let srv = Srv::start("").await;
    let a = srv
        .submit_with_input(json!({"type": "hold.paths"}), "in.txt", "text/plain", b"in")
        .await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let key_before = std::fs::read(srv.data_dir().join("master.key")).expect("master.key");
    let downloads = [
        format!("/async/download/../{a}/inputs/0"),
        format!("/async/download/%2e%2e/{a}/inputs/0"),
        format!("/async/download/%2E%2E/{a}/inputs/0"),
        format!("/async/download/jobs%2F..%2Fjobs/{a}/inputs/0"),
        format!("/async/download/jobs/..%2F{a}/inputs/0"),
        format!("/async/download/jobs/{a}%2F..%2F{a}/inputs/0"),
        format!("/async/download/jobs/{a}%2f%2e%2e/inputs/0"),
        "/async/download/jobs/%2e%2e%2f%2e%2e%2fmaster.key/inputs/0".to_string(),
        format!("/async/download/jobs/{a}/..%2F..%2Fmaster.key/0"),
        format!("/async/download/jobs/{a}/%2e%2e/0"),
        format!("/async/download/jobs/{a}/inputs%2F..%2Finputs/0"),
        format!("/async/download/jobs/{a}/inputs/..%2F0"),
        format!("/async/download/jobs/{a}/inputs/%2e%2e"),
        format!("/async/download/jobs/{a}/../{a}/inputs/0"),
        format!("/async/download/jobs/{a}/inputs/../inputs/0"),
    ];
    let up = upload_body(b"escaped!", json!({"name": "../../escaped"}));
    let uploads = [
        format!("/async/upload/../{a}/outputs"),
        format!("/async/upload/%2e%2e/{a}/outputs"),
        format!("/async/upload/jobs/..%2F{a}/outputs"),
        format!("/async/upload/jobs/{a}%2F../outputs"),
        format!("/async/upload/jobs/{a}%2F%2E%2E/outputs"),
        format!("/async/upload/jobs/{a}/..%2F..%2Fmaster.key"),
        format!("/async/upload/jobs/{a}/%2e%2e"),
        format!("/async/upload/jobs/{a}/%2e%2e%2f%2e%2e%2fescaped"),
        format!("/async/upload/jobs/{a}/outputs%2F..%2Fx"),
        format!("/async/upload/jobs/{a}/../outputs"),
        format!("/async/upload/jobs/{a}/outputs/.."),
    ];
    let allowed = [400, 403, 404];
    for v in [SigVersion::V1, SigVersion::V2] {
        for t in &downloads {
            let h = sign(&a, &sa, v, "GET", t, b"");
            let r = srv.hook("GET", t, &h, b"").await;
            assert!(
                allowed.contains(&r.status),
                "{} GET {t}: {}",
                v.as_str(),
                r.describe()
            );
            srv.assert_unchanged(&a, &before, t).await;
        }
        for t in &uploads {
            let h = sign(&a, &sa, v, "PUT", t, &up);
            let r = srv.hook("PUT", t, &h, &up).await;
            assert!(
                allowed.contains(&r.status),
                "{} PUT {t}: {}",
                v.as_str(),
                r.describe()
            );
            srv.assert_unchanged(&a, &before, t).await;
        }
    }
    // The client file routes and the blob routes.
    let client_gets = [
        format!("/async/jobs/{a}/files/%2e%2e/0"),
        format!("/async/jobs/{a}/files/..%2Finputs/0"),
        format!("/async/jobs/{a}/files/inputs/%2e%2e"),
        format!("/async/jobs/{a}/files/..%2F..%2Fmaster.key/0"),
        "/async/blobs/..%2F..%2Fmaster.key?exp=9999999999&sig=00".to_string(),
        "/async/blobs/%2e%2e?exp=9999999999&sig=00".to_string(),
        "/async/blobs/%2e%2e%2fmaster.key?exp=9999999999&sig=00".to_string(),
    ];
    for t in &client_gets {
        let r = srv.hook("GET", t, &Vec::new(), b"").await;
        assert!(allowed.contains(&r.status), "GET {t}: {}", r.describe());
        assert!(!r.text().contains(std::str::from_utf8(&key_before).unwrap()));
    }
    let client_puts = [
        format!("/async/jobs/{a}/files/..%2F..%2Fescaped"),
        format!("/async/jobs/{a}/files/%2e%2e"),
        format!("/async/jobs/{a}/files/inputs%2F..%2Fx"),
        format!(
            "/async/blobs/upload?job={a}&attempt=1&property=..%2F..%2Fx&hash={}&exp=9999999999&meta=&sig=00",
            md5_hex(b"escaped!")
        ),
    ];
    for t in &client_puts {
        let r = srv.hook("PUT", t, &Vec::new(), b"escaped!").await;
        assert!(allowed.contains(&r.status), "PUT {t}: {}", r.describe());
        srv.assert_unchanged(&a, &before, t).await;
    }
    // Nothing was written outside the store, and the master key is untouched.
    let mut files = Vec::new();
    all_files(srv.dir.path(), &mut files);
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().contains("escaped")),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read(srv.data_dir().join("master.key")).unwrap(),
        key_before
    );
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_with_a_wrong_md5_or_too_large_are_refused() {
    let srv = Srv::start("max_file_bytes = 1024").await;
    let a = srv
        .submit_with_input(json!({"type": "hold.up"}), "in.txt", "text/plain", b"in")
        .await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let t = upload_target("jobs", &a, "outputs");

    // The bytes sent do not match the announced md5.
    let announced = b"the announced content";
    let body = upload_body(announced, json!({}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["done"], false, "{}", r.describe());
    assert_eq!(r.json["method"], "PUT");
    let url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv.put_bytes(&url, b"some other content!!!").await;
    assert_eq!(status, 422, "md5 mismatch: {v}");
    assert_eq!(v["error"]["code"], "md5_mismatch", "{v}");
    srv.assert_unchanged(&a, &before, "md5 mismatch").await;
    let (status, _) = srv
        .fetch(&format!("{}/async/jobs/{a}/files/outputs/0", srv.url))
        .await;
    assert_eq!(status, 404, "no output was attached");

    // A signed URL whose hash was changed is refused.
    let forged = url.replace(&md5_hex(announced), &md5_hex(b"other"));
    let (status, v) = srv.put_bytes(&forged, b"other").await;
    assert_eq!(status, 403, "tampered upload url: {v}");
    srv.assert_unchanged(&a, &before, "tampered upload url")
        .await;

    // Larger than hooks.max_file_bytes.
    let big = vec![b'x'; 2000];
    let body = upload_body(&big, json!({}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv.put_bytes(&url, &big).await;
    assert_eq!(status, 413, "oversize upload: {v}");
    srv.assert_unchanged(&a, &before, "oversize upload").await;
    let just_over = vec![b'y'; 1025];
    let body = upload_body(&just_over, json!({}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    let url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv.put_bytes(&url, &just_over).await;
    assert_eq!(status, 413, "1025 bytes: {v}");
    srv.assert_unchanged(&a, &before, "1025 bytes").await;
    // The client attach route and the multipart submit have the same limit.
    let (status, v) = srv
        .send_json(
            "PUT files/inputs",
            srv.http
                .put(format!("{}/async/jobs/{a}/files/inputs", srv.url))
                .body(big.clone()),
        )
        .await;
    assert_eq!(status, 413, "oversize attach: {v}");
    srv.assert_unchanged(&a, &before, "oversize attach").await;
    let (_, list_before) = srv.get_json("/async/jobs?limit=1000").await;
    let form = reqwest::multipart::Form::new()
        .text("job", json!({"type": "hold.big"}).to_string())
        .part(
            "inputs",
            reqwest::multipart::Part::bytes(big.clone()).file_name("big.bin"),
        );
    let (status, v) = srv
        .send_json(
            "multipart oversize",
            srv.http
                .post(format!("{}/async/jobs", srv.url))
                .multipart(form),
        )
        .await;
    assert_eq!(status, 413, "oversize multipart input: {v}");
    let (_, list_after) = srv.get_json("/async/jobs?limit=1000").await;
    assert_eq!(
        list_before["jobs"].as_array().map(Vec::len),
        list_after["jobs"].as_array().map(Vec::len),
        "no job was created"
    );
    srv.assert_unchanged(&a, &before, "oversize multipart")
        .await;

    // A file's type over 255 bytes, wherever it comes in: the upload request's
    // `metadata.mimetype`, the client attach route's Content-Type, the signed URL's.
    let long_type = format!("text/{}", "x".repeat(251));
    let exact = vec![b'z'; 1024];
    let body = upload_body(&exact, json!({"mimetype": long_type}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 422, "{}", r.describe());
    assert!(
        r.describe().contains("`metadata.mimetype`"),
        "{}",
        r.describe()
    );
    srv.assert_unchanged(&a, &before, "long metadata.mimetype")
        .await;
    let (status, v) = srv
        .send_json(
            "PUT files/inputs, long Content-Type",
            srv.http
                .put(format!("{}/async/jobs/{a}/files/inputs", srv.url))
                .header("content-type", &long_type)
                .body("x"),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_body")),
        "{v}"
    );
    assert!(v.to_string().contains("255 bytes"), "{v}");
    srv.assert_unchanged(&a, &before, "long Content-Type attach")
        .await;

    // Exactly the limit is fine; the signed URL refused for its Content-Type stays usable.
    let body = upload_body(&exact, json!({}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    let url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv
        .send_json(
            "PUT signed url, long Content-Type",
            srv.http
                .put(&url)
                .header("content-type", &long_type)
                .body(exact.clone()),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_body")),
        "{v}"
    );
    srv.assert_unchanged(&a, &before, "long Content-Type upload")
        .await;
    let (status, v) = srv.put_bytes(&url, &exact).await;
    assert_eq!(status, 200, "1024 bytes: {v}");
    let (status, bytes) = srv
        .fetch(&format!("{}/async/jobs/{a}/files/outputs/0", srv.url))
        .await;
    assert_eq!((status, bytes), (200, exact));
    srv.finish().await;
}

/// The public MD5 collision pair (Wang and Yu, 2004; also the security probe's): two different
/// 128-byte strings with the same md5, `79054025255fb1a26e4bc422aef54eb4`.
fn colliding_pair() -> (Vec<u8>, Vec<u8>) {
    let a = hex::decode("d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70").expect("hex");
    let b = hex::decode("d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70").expect("hex");
    assert_ne!(a, b);
    assert_eq!(md5_hex(&a), md5_hex(&b), "a colliding pair");
    (a, b)
}

/// Files are stored by md5 (security probe, High): a later upload of different bytes with the
/// same md5 used to be renamed over the stored file, so every job referring to that md5 then
/// served the new bytes. Through the client routes (attach, multipart submit) it is now refused
/// with 409 `md5_collision` and changes nothing; the same bytes again still work (stored once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_md5_collision_attached_by_a_client_is_refused() {
    let srv = Srv::start("").await;
    let (a, b) = colliding_pair();
    let hash = md5_hex(&a);
    let put_input = |id: &str, bytes: &[u8]| {
        srv.http
            .put(format!(
                "{}/async/jobs/{id}/files/inputs?name=f.bin",
                srv.url
            ))
            .body(bytes.to_vec())
    };
    // The victim's job holds A (scheduled far ahead: it stays as it is).
    let v = srv
        .submit(json!({"type": "hold.victim", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    let (status, r) = srv.send_json("PUT A", put_input(&v, &a)).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["hash"], hash);
    let victim_file = format!("{}/async/jobs/{v}/files/inputs/0", srv.url);
    assert_eq!(srv.fetch(&victim_file).await, (200, a.clone()));

    // Another job attaches B: refused, and the victim's file is still A.
    let x = srv
        .submit(json!({"type": "hold.other", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    let before = srv.snap(&x).await;
    let (status, r) = srv.send_json("PUT B", put_input(&x, &b)).await;
    assert_eq!(status, 409, "a colliding upload: {r}");
    assert_eq!(r["error"]["code"], "md5_collision", "{r}");
    srv.assert_unchanged(&x, &before, "colliding attach").await;
    assert_eq!(
        srv.fetch(&victim_file).await,
        (200, a.clone()),
        "the victim's file kept its bytes"
    );

    // B as a multipart submit's file: refused, no job made.
    let (_, list_before) = srv.get_json("/async/jobs?limit=1000").await;
    let form = reqwest::multipart::Form::new()
        .text("job", json!({"type": "hold.mp"}).to_string())
        .part(
            "inputs",
            reqwest::multipart::Part::bytes(b.clone()).file_name("b.bin"),
        );
    let (status, r) = srv
        .send_json(
            "multipart B",
            srv.http
                .post(format!("{}/async/jobs", srv.url))
                .multipart(form),
        )
        .await;
    assert_eq!(status, 409, "a colliding multipart file: {r}");
    assert_eq!(r["error"]["code"], "md5_collision", "{r}");
    let (_, list_after) = srv.get_json("/async/jobs?limit=1000").await;
    assert_eq!(list_before["jobs"], list_after["jobs"], "no job was made");
    assert_eq!(srv.fetch(&victim_file).await, (200, a.clone()));

    // The same bytes again, on another job: a duplicate, attached, stored once.
    let (status, r) = srv.send_json("PUT A again", put_input(&x, &a)).await;
    assert_eq!(status, 201, "the same bytes again: {r}");
    let (status, got) = srv
        .fetch(&format!("{}/async/jobs/{x}/files/inputs/0", srv.url))
        .await;
    assert_eq!((status, got), (200, a.clone()));
    assert_eq!(count_files(&srv.data_dir().join("files")), before.blobs);
    assert_eq!(srv.fetch(&victim_file).await, (200, a));
    srv.finish().await;
}

/// A job asks for an upload URL for its md5 (stored by another job, so the challenge of its own
/// bytes fails and a URL is given) and sends different, colliding bytes there: 409
/// `md5_collision`, nothing attached, the stored file keeps its bytes. The same bytes through a
/// URL are a duplicate, attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_md5_collision_uploaded_by_a_job_is_refused() {
    let srv = Srv::start("").await;
    let (a, b) = colliding_pair();
    let hash = md5_hex(&a);
    let put_through_url = |id: String, secret: Secret, announced: Vec<u8>, sent: Vec<u8>| {
        let srv = &srv;
        async move {
            let t = upload_target("jobs", &id, "outputs");
            let body = upload_body(&announced, json!({"name": "o.bin"}));
            let r = srv
                .signed(&id, &secret, SigVersion::V2, "PUT", &t, &body)
                .await;
            assert_eq!(r.status, 200, "{}", r.describe());
            assert_eq!(r.json["done"], false, "a URL: {}", r.describe());
            let url = r.json["url"].as_str().expect("url").to_string();
            srv.put_bytes(&url, &sent).await
        }
    };
    // The victim job uploads A.
    let v = srv.submit(json!({"type": "hold.victim"})).await;
    let (_, sv) = srv.running(&v).await;
    let (status, r) = put_through_url(v.clone(), sv, a.clone(), a.clone()).await;
    assert_eq!(status, 200, "{r}");
    let victim_file = format!("{}/async/jobs/{v}/files/outputs/0", srv.url);
    assert_eq!(srv.fetch(&victim_file).await, (200, a.clone()));

    // Another job: B's challenge is not A's, so it gets a URL; B's bytes there are refused.
    let j = srv.submit(json!({"type": "hold.job"})).await;
    let (_, sj) = srv.running(&j).await;
    let before = srv.snap(&j).await;
    let (status, r) = put_through_url(j.clone(), sj.clone(), b.clone(), b.clone()).await;
    assert_eq!(status, 409, "a colliding signed upload: {r}");
    assert_eq!(r["error"]["code"], "md5_collision", "{r}");
    srv.assert_unchanged(&j, &before, "colliding signed upload")
        .await;
    assert_eq!(
        srv.fetch(&victim_file).await,
        (200, a.clone()),
        "the victim's file kept its bytes"
    );

    // A's bytes through a URL (asked for with B's challenge): a duplicate, attached.
    let (status, r) = put_through_url(j.clone(), sj, b, a.clone()).await;
    assert_eq!(status, 200, "the same bytes through a signed URL: {r}");
    assert_eq!(r["hash"], hash);
    let (status, got) = srv
        .fetch(&format!("{}/async/jobs/{j}/files/outputs/0", srv.url))
        .await;
    assert_eq!((status, got), (200, a.clone()));
    assert_eq!(count_files(&srv.data_dir().join("files")), before.blobs);
    assert_eq!(srv.fetch(&victim_file).await, (200, a));
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_invalid_ones_422() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.bodies"})).await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let st = "/async/status";
    let cases: Vec<(&str, &[u8], u16)> = vec![
        ("truncated JSON", br#"{"status":"#, 400),
        ("not JSON", b"status=SUCCESS", 400),
        ("trailing garbage", br#"{"progress":0.5} x"#, 400),
        (
            "progress above 1",
            br#"{"progress":1.5,"logs":["no"]}"#,
            422,
        ),
        (
            "progress below 0",
            br#"{"progress":-0.1,"logs":["no"]}"#,
            422,
        ),
        ("progress 150", br#"{"progress":150}"#, 422),
        ("progress a string", br#"{"progress":"half"}"#, 422),
        (
            "success with progress out of range",
            br#"{"status":"SUCCESS","progress":2,"results":{"x":1}}"#,
            422,
        ),
        ("unknown status", br#"{"status":"DONE"}"#, 422),
        (
            "status a job may not report",
            br#"{"status":"QUEUED"}"#,
            422,
        ),
        (
            "status CANCELLED",
            br#"{"status":"CANCELLED","logs":["no"]}"#,
            422,
        ),
        ("logs not a list", br#"{"logs":"one line"}"#, 422),
    ];
    for (label, body, want) in &cases {
        for v in [SigVersion::V1, SigVersion::V2] {
            let h = sign(&a, &sa, v, "POST", st, body);
            let l = format!("{label} ({})", v.as_str());
            srv.refused(&a, &before, &l, "POST", st, &h, body, *want, None)
                .await;
        }
    }
    let t = upload_target("jobs", &a, "outputs");
    let ups: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated upload JSON", br#"{"hash":"#.to_vec(), 400),
        (
            "hash not md5",
            br#"{"hash":"xyz","challenge":"abc"}"#.to_vec(),
            422,
        ),
        (
            "no challenge",
            format!(r#"{{"hash":"{}"}}"#, md5_hex(b"x")).into_bytes(),
            422,
        ),
        (
            "upper-case hash",
            json!({"hash": md5_hex(b"x").to_uppercase(), "challenge": challenge(b"x")})
                .to_string()
                .into_bytes(),
            422,
        ),
    ];
    for (label, body, want) in &ups {
        let h = sign(&a, &sa, SigVersion::V2, "PUT", &t, body);
        srv.refused(&a, &before, label, "PUT", &t, &h, body, *want, None)
            .await;
    }
    // Still running and usable.
    let r = srv.report(&a, &sa, json!({"progress": 1.0})).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    srv.finish().await;
}

/// A v2-signed report with a field the hook does not know is refused (422 naming it, and the
/// field meant when it is a near miss: `result` for `results`, `error` for `errorMessage`),
/// nothing applied: before, `{"status":"SUCCESS","result":{...}}` ended the job SUCCESS with no
/// result and `{"status":"ERROR","error":"..."}` lost its reason, both answered 200. (A v1 one
/// is applied: `a_v1_report_with_an_unknown_field_is_applied_with_a_note`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_with_an_unknown_field_is_refused_naming_it() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.unknown_fields"})).await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let st = "/async/status";
    let cases: Vec<(&str, &[u8], &[&str])> = vec![
        (
            "result for results",
            br#"{"status":"SUCCESS","result":{"rows":3}}"#,
            &["`result`", "`results`"],
        ),
        (
            "error for errorMessage",
            br#"{"status":"ERROR","error":"my reason"}"#,
            &["`error`", "`errorMessage`"],
        ),
        (
            "snake case",
            br#"{"status":"ERROR","error_message":"my reason","retry":false}"#,
            &["`error_message`", "`errorMessage`"],
        ),
        (
            "status_details",
            br#"{"status_details":{"step":2}}"#,
            &["`status_details`", "`statusDetails`"],
        ),
        (
            "a field of no kind",
            br#"{"status":"RUNNING","bogus":1}"#,
            &["`bogus`"],
        ),
        (
            "with log lines",
            br#"{"logs":["kept?"],"log":["x"]}"#,
            &["`log`", "`logs`"],
        ),
    ];
    for (label, body, names) in &cases {
        for v in [SigVersion::V2] {
            let h = sign(&a, &sa, v, "POST", st, body);
            let l = format!("{label} ({})", v.as_str());
            let r = srv
                .refused(
                    &a,
                    &before,
                    &l,
                    "POST",
                    st,
                    &h,
                    body,
                    422,
                    Some("invalid_request"),
                )
                .await;
            let message = r.json["error"]["message"].as_str().unwrap_or("");
            for n in *names {
                assert!(message.contains(n), "{l}: {n} not named: {}", r.describe());
            }
        }
    }
    assert_eq!(srv.job(&a).await["status"], "RUNNING");
    // Every field the hook documents is taken, and the report is applied.
    let r = srv
        .report(
            &a,
            &sa,
            json!({"status": "SUCCESS", "progress": 1.0, "statusDetails": {"step": 3},
                   "results": {"rows": 3}, "logs": ["done"], "errorMessage": null,
                   "retry": null}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    assert_eq!(j["result"], json!({"rows": 3}), "{j:#}");
    srv.finish().await;
}

/// Review of the hook API: a v1-signed report (the webda client's `send_status()`, which never
/// looks at the answer) with a field the hook does not know was refused with 422 as a v2 one is:
/// `send_status({"status": "ERROR", "error": "bad input"})` then exit 0 ended the job SUCCESS
/// (before the 422 it ended ERROR). A v1 report is applied as before, without the field, and a
/// line in the job's `job` stream says what was ignored and what was meant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_report_with_an_unknown_field_is_applied_with_a_note() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.unknown_fields_v1"})).await;
    let (_, sa) = srv.running(&a).await;
    let st = "/async/status";
    let body = br#"{"progress":0.5,"status_details":{"step":2},"bogus":1,"logs":["mine"]}"#;
    let r = srv.signed(&a, &sa, SigVersion::V1, "POST", st, body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.job(&a).await;
    assert_eq!(j["status"], "RUNNING", "{j:#}");
    assert_eq!(j["progress"], 0.5, "{j:#}");
    let body = br#"{"status":"ERROR","error":"bad input"}"#;
    let r = srv.signed(&a, &sa, SigVersion::V1, "POST", st, body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["reported"], "ERROR", "{}", r.describe());
    let lines = all_job_lines(&srv, &a).await;
    assert_eq!(
        lines,
        vec![
            "mine".to_string(),
            "[runyard] report field `bogus` ignored".into(),
            "[runyard] report field `status_details` ignored (did you mean `statusDetails`?)"
                .into(),
            "[runyard] report field `error` ignored (did you mean `errorMessage`?)".into(),
        ],
        "{}",
        r.describe()
    );
    srv.finish().await;
}

/// Review of the hook API: an upload request with a field it does not have was taken without
/// it: `{"hash":..,"challenge":..,"meta":{"k":1}}` answered 200 and stored the file with
/// metadata `{}`. Signed with v2 it is refused (422 naming it and the field meant), nothing
/// stored; signed with v1 (webda's `upload_to()`) it is taken as before, with a note in the job's
/// log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_request_with_an_unknown_field_is_refused_in_v2_noted_in_v1() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "hold.unknown_upload_fields"}))
        .await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let content = b"meta typo";
    let body = serde_json::to_vec(&json!({
        "hash": md5_hex(content),
        "challenge": challenge(content),
        "meta": {"k": 1},
    }))
    .expect("json");
    let t = upload_target("jobs", &a, "outputs");
    let h = sign(&a, &sa, SigVersion::V2, "PUT", &t, &body);
    let r = srv
        .refused(
            &a,
            &before,
            "v2 meta",
            "PUT",
            &t,
            &h,
            &body,
            422,
            Some("invalid_request"),
        )
        .await;
    let message = r.json["error"]["message"].as_str().unwrap_or("");
    for n in ["`meta`", "`metadata`"] {
        assert!(message.contains(n), "{n} not named: {}", r.describe());
    }
    // A v1 request refused for another fault leaves no note: nothing of it was taken.
    let bad = serde_json::to_vec(&json!({"hash": "xyz", "challenge": "xyz", "meta": {"k": 1}}))
        .expect("json");
    let r = srv.signed(&a, &sa, SigVersion::V1, "PUT", &t, &bad).await;
    assert_eq!(r.status, 422, "{}", r.describe());
    assert_eq!(all_job_lines(&srv, &a).await, Vec::<String>::new());
    let r = srv.signed(&a, &sa, SigVersion::V1, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let lines = all_job_lines(&srv, &a).await;
    assert_eq!(
        lines,
        vec!["[runyard] upload request field `meta` ignored (did you mean `metadata`?)"],
        "{}",
        r.describe()
    );
    srv.finish().await;
}

/// docs/hooks.md: a job that reports `results` without a status while `RUNNING`, then exits 0
/// without reporting an outcome, ends `SUCCESS` with those results (and its `statusDetails`),
/// the last ones sent; not "without results".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reported_without_a_status_are_kept_by_an_exit_0() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "exit.on_mark"})).await;
    let (_, sa) = srv.running(&a).await;
    for n in [1, 2] {
        let r = srv
            .report(
                &a,
                &sa,
                json!({"results": {"rows": n}, "statusDetails": {"step": n}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.json["reported"], Value::Null, "{}", r.describe());
    }
    let mark = PathBuf::from(format!("/tmp/runyard-exit-{a}"));
    std::fs::write(&mark, b"").expect("mark");
    let j = srv.wait_terminal(&a).await;
    let _ = std::fs::remove_file(&mark);
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    assert_eq!(j["exit_code"], 0, "{j:#}");
    assert_eq!(j["result"], json!({"rows": 2}), "{j:#}");
    assert_eq!(j["status_details"], json!({"step": 2}), "{j:#}");
    assert_eq!(j["runs"][0]["reported"], Value::Null, "{j:#}");
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_not_a_report_nor_an_upload_request() {
    // serde's derived `Deserialize` also takes a struct as a positional array: `["SUCCESS"]` would
    // be read as `{"status": "SUCCESS"}`. The hook's bodies are JSON objects.
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.array"})).await;
    let (_, sa) = srv.running(&a).await;
    let before = srv.snap(&a).await;
    let mut accepted = Vec::new();
    let st = "/async/status".to_string();
    let t = upload_target("jobs", &a, "outputs");
    let content = b"array upload";
    let up = json!([md5_hex(content), challenge(content), {}]).to_string();
    for (method, target, body) in [
        (
            "POST",
            &st,
            br#"[null, 0.5, null, null, ["array line"]]"#.to_vec(),
        ),
        ("PUT", &t, up.into_bytes()),
        ("POST", &st, br#"["SUCCESS"]"#.to_vec()),
    ] {
        let r = srv
            .signed(&a, &sa, SigVersion::V2, method, target, &body)
            .await;
        if !(400..500).contains(&r.status) {
            accepted.push(format!(
                "{method} {target} {} -> {}",
                String::from_utf8_lossy(&body),
                r.describe()
            ));
        }
    }
    let after = srv.snap(&a).await;
    assert!(
        accepted.is_empty() && after == before,
        "JSON arrays accepted as hook bodies:\n{}\njob before: {:#}\njob after: {:#}",
        accepted.join("\n"),
        before.job,
        after.job
    );
    srv.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Good calls work
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_hook_calls_report_download_upload_and_finish() {
    let srv = Srv::start("").await;
    let input = b"hello input\n";
    let args = json!({"n": 1, "s": "x", "nested": {"k": [1, 2]}});
    let a = srv
        .submit_with_input(
            json!({"type": "hold.good", "args": args}),
            "hello.txt",
            "text/plain",
            input,
        )
        .await;
    let (_, sa) = srv.running(&a).await;

    // GET /async/job, with both signature versions.
    for v in [SigVersion::V2, SigVersion::V1] {
        let r = srv.signed(&a, &sa, v, "GET", "/async/job", b"").await;
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(
            r.json,
            json!({"id": a, "type": "hold.good", "args": args, "attempt": 1})
        );
    }

    // Status, progress, details, logs.
    let r = srv.report(&a, &sa, json!({"status": "RUNNING"})).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["status"], "RUNNING");
    let r = srv
        .report(
            &a,
            &sa,
            json!({"progress": 0.5, "statusDetails": {"step": "half way"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.job(&a).await;
    assert_eq!(j["status"], "RUNNING");
    assert_eq!(j["progress"], json!(0.5));
    assert_eq!(j["status_details"], json!({"step": "half way"}));
    let r = srv
        .report(&a, &sa, json!({"logs": ["first line", "second line"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    // An empty body is an empty report (what the webda client sends), signed with v1.
    let h = sign(&a, &sa, SigVersion::V1, "POST", "/async/status", b"");
    let r = srv.hook("POST", "/async/status", &h, b"").await;
    assert_eq!(r.status, 200, "empty report: {}", r.describe());
    let logs = srv.logs(&a).await;
    let pos1 = logs.iter().position(|l| l == "first line");
    let pos2 = logs.iter().position(|l| l == "second line");
    assert!(
        pos1.is_some() && pos1 < pos2,
        "logs in order in GET logs: {logs:?}"
    );

    // Download of the input attached at submit.
    let r = srv
        .signed(
            &a,
            &sa,
            SigVersion::V2,
            "GET",
            &download_target("jobs", &a, "inputs", "0"),
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let map = &r.json["Map"];
    assert_eq!(map["hash"], md5_hex(input));
    assert_eq!(map["size"], json!(input.len()));
    assert_eq!(map["name"], "hello.txt");
    assert_eq!(map["mimetype"], "text/plain");
    let location = r.json["Location"].as_str().expect("Location").to_string();
    assert!(location.starts_with("http"), "absolute: {location}");
    let (status, bytes) = srv.fetch(&location).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, input);
    // A signed Location cannot be bent to another blob.
    let (status, _) = srv
        .fetch(&location.replace(&md5_hex(input), &md5_hex(b"other")))
        .await;
    assert_eq!(status, 403);
    // No such file.
    let r = srv
        .signed(
            &a,
            &sa,
            SigVersion::V2,
            "GET",
            &download_target("jobs", &a, "inputs", "1"),
            b"",
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.describe());

    // Upload of new content: done false, then the bytes.
    let t = upload_target("jobs", &a, "outputs");
    let out1 = b"fresh output bytes";
    let body = upload_body(out1, json!({"name": "out.txt", "mimetype": "text/plain"}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["done"], false);
    assert_eq!(r.json["method"], "PUT");
    let url = r.json["url"].as_str().expect("url").to_string();
    assert!(url.starts_with("http"), "absolute: {url}");
    let (status, v) = srv.put_bytes(&url, out1).await;
    assert_eq!(status, 200, "{v}");
    let (status, bytes) = srv
        .fetch(&format!("{}/async/jobs/{a}/files/outputs/0", srv.url))
        .await;
    assert_eq!((status, bytes.as_slice()), (200, &out1[..]));
    let j = srv.job(&a).await;
    assert_eq!(j["files"]["outputs"][0]["hash"], md5_hex(out1));
    assert_eq!(j["files"]["outputs"][0]["name"], "out.txt");
    let blobs = count_files(&srv.data_dir().join("files"));

    // Content already stored, right challenge: done, attached, no bytes sent.
    let body = upload_body(out1, json!({"name": "again.txt"}));
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json, json!({"done": true}));
    // The input's content, uploaded as an output with v1.
    let body = upload_body(input, json!({}));
    let r = srv.signed(&a, &sa, SigVersion::V1, "PUT", &t, &body).await;
    assert_eq!(r.json, json!({"done": true}), "{}", r.describe());
    let j = srv.job(&a).await;
    let outs = j["files"]["outputs"].as_array().expect("outputs");
    assert_eq!(outs.len(), 3, "{j:#}");
    assert_eq!(outs[1]["hash"], md5_hex(out1));
    assert_eq!(outs[2]["hash"], md5_hex(input));
    assert_eq!(count_files(&srv.data_dir().join("files")), blobs);
    let (status, bytes) = srv
        .fetch(&format!("{}/async/jobs/{a}/files/outputs/2", srv.url))
        .await;
    assert_eq!((status, bytes.as_slice()), (200, &input[..]));

    // Content already stored but a wrong challenge (only the hash is known): the bytes are needed.
    let body = serde_json::to_vec(&json!({
        "hash": md5_hex(out1),
        "challenge": md5_hex(b"I do not have the content"),
        "metadata": {}
    }))
    .unwrap();
    let r = srv.signed(&a, &sa, SigVersion::V2, "PUT", &t, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["done"], false, "{}", r.describe());
    assert_eq!(
        srv.job(&a).await["files"]["outputs"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "nothing attached without the bytes"
    );
    let url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv.put_bytes(&url, out1).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        srv.job(&a).await["files"]["outputs"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );

    // Results + SUCCESS end the job.
    let r = srv
        .report(
            &a,
            &sa,
            json!({"status": "SUCCESS", "results": {"answer": 42, "list": [1, 2]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    assert_eq!(j["result"], json!({"answer": 42, "list": [1, 2]}));
    assert_eq!(j["progress"], json!(1.0));
    let (status, v) = srv.get_json(&format!("/async/jobs/{a}/result")).await;
    assert_eq!(status, 200);
    assert_eq!(v["result"], json!({"answer": 42, "list": [1, 2]}));
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_attached_before_start_can_be_downloaded() {
    let srv = Srv::start("").await;
    let run_at = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3)).to_string();
    let a = srv
        .submit(json!({"type": "hold.later", "run_at": run_at}))
        .await;
    let content: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let (status, v) = srv
        .send_json(
            "PUT files/inputs",
            srv.http
                .put(format!(
                    "{}/async/jobs/{a}/files/inputs?name=data.bin",
                    srv.url
                ))
                .header("content-type", "application/x-data")
                .body(content.clone()),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["index"], 0);
    let (_, sa) = srv.running(&a).await;
    let r = srv
        .signed(
            &a,
            &sa,
            SigVersion::V2,
            "GET",
            &download_target("jobs", &a, "inputs", "0"),
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["Map"]["hash"], md5_hex(&content));
    assert_eq!(r.json["Map"]["size"], json!(content.len()));
    assert_eq!(r.json["Map"]["name"], "data.bin");
    assert_eq!(r.json["Map"]["mimetype"], "application/x-data");
    let (status, bytes) = srv
        .fetch(r.json["Location"].as_str().expect("Location"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bytes, content);
    let r = srv.report(&a, &sa, json!({"status": "SUCCESS"})).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    srv.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A new attempt gets a new secret
// ---------------------------------------------------------------------------------------------

/// Checks that `old` is refused everywhere and `new` works, on a RUNNING job.
async fn old_secret_refused_new_secret_works(srv: &Srv, id: &str, old: &Secret, new: &Secret) {
    assert_ne!(old.expose(), new.expose());
    let before = srv.snap(id).await;
    let evil = serde_json::to_vec(&json!({"status": "SUCCESS", "logs": ["old attempt"]})).unwrap();
    let up = upload_body(b"old attempt output", json!({}));
    let calls: Vec<(&str, String, &[u8])> = vec![
        ("POST", "/async/status".into(), &evil),
        ("GET", "/async/job".into(), b""),
        ("GET", download_target("jobs", id, "inputs", "0"), b""),
        ("PUT", upload_target("jobs", id, "outputs"), &up),
    ];
    for v in [SigVersion::V1, SigVersion::V2] {
        for (method, target, body) in &calls {
            let h = sign(id, old, v, method, target, body);
            let l = format!("previous attempt's secret ({})", v.as_str());
            srv.refused(
                id,
                &before,
                &l,
                method,
                target,
                &h,
                body,
                401,
                Some("bad_signature"),
            )
            .await;
        }
    }
    let r = srv
        .signed(id, new, SigVersion::V2, "GET", "/async/job", b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["attempt"], 2);
    let r = srv
        .signed(
            id,
            new,
            SigVersion::V1,
            "GET",
            &download_target("jobs", id, "inputs", "0"),
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = srv
        .report(id, new, json!({"progress": 0.5, "logs": ["attempt two"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = srv
        .report(
            id,
            new,
            json!({"status": "SUCCESS", "results": {"attempt": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = srv.wait_terminal(id).await;
    assert_eq!(j["status"], "SUCCESS");
    assert_eq!(j["result"], json!({"attempt": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_retry_gets_a_new_secret() {
    let srv = Srv::start("").await;
    let a = srv
        .submit_with_input(json!({"type": "hold.retry"}), "in.txt", "text/plain", b"in")
        .await;
    let (j, s1) = srv.running(&a).await;
    assert_eq!(j["attempt"], 1);
    let r = srv
        .signed(&a, &s1, SigVersion::V2, "GET", "/async/job", b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    // An upload URL obtained during attempt 1.
    let late = b"bytes of attempt one";
    let r = srv
        .signed(
            &a,
            &s1,
            SigVersion::V2,
            "PUT",
            &upload_target("jobs", &a, "outputs"),
            &upload_body(late, json!({})),
        )
        .await;
    let stale_url = r.json["url"].as_str().expect("url").to_string();
    let (status, v) = srv
        .send_json(
            "cancel",
            srv.http.post(format!("{}/async/jobs/{a}/cancel", srv.url)),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    srv.wait_status(&a, "CANCELLED").await;
    // Refused (409) until attempt 1's process has stopped: retried until accepted.
    let mut tries = 0;
    let (status, v) = loop {
        let (status, v) = srv
            .send_json(
                "retry",
                srv.http.post(format!("{}/async/jobs/{a}/retry", srv.url)),
            )
            .await;
        tries += 1;
        if status != 409 || tries == 200 {
            break (status, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 202, "{v}");
    let j = srv
        .wait_until(&a, "RUNNING at attempt 2", |j| {
            j["status"] == "RUNNING" && j["attempt"] == 2
        })
        .await;
    let s2 = srv.secret(&a, 2);
    assert_eq!(j["attempt"], 2);
    // The attempt-1 upload URL no longer attaches anything.
    let before = srv.snap(&a).await;
    let (status, v) = srv.put_bytes(&stale_url, late).await;
    assert!(
        (400..500).contains(&status),
        "attempt-1 upload url after a retry: {status} {v}"
    );
    srv.assert_unchanged(&a, &before, "stale upload url").await;
    old_secret_refused_new_secret_works(&srv, &a, &s1, &s2).await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_retry_gets_a_new_secret() {
    let srv = Srv::start("").await;
    let a = srv
        .submit_with_input(
            json!({"type": "flaky", "max_attempts": 2,
                   "backoff": {"initial_ms": 100, "max_ms": 100, "multiplier": 1.0, "jitter": false}}),
            "in.txt",
            "text/plain",
            b"in",
        )
        .await;
    let s1 = srv.secret(&a, 1);
    let j = srv
        .wait_until(&a, "RUNNING at attempt 2", |j| {
            j["status"] == "RUNNING" && j["attempt"] == 2
        })
        .await;
    assert_eq!(j["runs"][0]["outcome"], "ERROR", "{j:#}");
    let s2 = srv.secret(&a, 2);
    old_secret_refused_new_secret_works(&srv, &a, &s1, &s2).await;
    srv.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 4. The secret is in no answer and no log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_environment_holds_the_secret_only_in_job_secret_key() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "envdump", "args": {"x": 1}, "max_attempts": 1}))
        .await;
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    let attempt = j["attempt"].as_u64().unwrap() as u32;
    let secret = srv.secret(&a, attempt);
    let logs = srv.logs(&a).await;
    let hook = srv.hook_base();
    for want in [
        format!("JOB_ID={a}"),
        format!("JOB_HOOK={hook}"),
        "JOB_TYPE=envdump".to_string(),
        r#"JOB_ARGS={"x":1}"#.to_string(),
    ] {
        assert!(logs.contains(&want), "{want} not in {logs:#?}");
    }
    for l in &logs {
        assert!(!l.starts_with("JOB_SECRET_KEY"), "{l}");
        assert!(
            !l.contains(secret.expose()),
            "the secret is in another variable: {l}"
        );
    }
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_logging_serve_process_never_logs_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(
        &cfg,
        config_text(&data, &format!("listen = {listen:?}"), ""),
    )
    .unwrap();
    let out = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
    let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path())
        // Debug everywhere, and trace for runyard's own crates.
        .env(
            "RUNYARD_LOG",
            "debug,runyard=trace,runyard_hooks=trace,runyard_runners=trace",
        )
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runyard serve");
    let url = format!("http://{listen}");
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "runyard serve exited ({status}): {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(start.elapsed() < WAIT, "runyard serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr: SocketAddr = listen.parse().unwrap();
    let submit = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let v: Value = http
                .post(format!("{url}/async/jobs"))
                .json(&body)
                .send()
                .await
                .expect("submit")
                .json()
                .await
                .expect("json");
            v["job_id"].as_str().expect("job_id").to_string()
        }
    };
    let get = |id: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let v: Value = http
                .get(format!("{url}/async/jobs/{id}"))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            v
        }
    };
    let wait_for = |id: String, want: &'static [&'static str]| {
        let get = &get;
        async move {
            let start = Instant::now();
            loop {
                let j = get(id.clone()).await;
                if want.iter().any(|w| j["status"] == *w) {
                    return j;
                }
                assert!(start.elapsed() < WAIT, "job {id} stuck: {j:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // A job that runs `runyard launch` (hook calls from a child), and one we sign for ourselves.
    let launched = submit(json!({"type": "launch.ok", "max_attempts": 1})).await;
    let held = submit(json!({"type": "hold.child", "max_attempts": 1})).await;
    let lj = wait_for(
        launched.clone(),
        &["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"],
    )
    .await;
    assert_eq!(lj["status"], "SUCCESS", "{lj:#}");
    let hj = wait_for(held.clone(), &["RUNNING"]).await;
    let key = std::fs::read_to_string(data.join("master.key")).expect("master.key");
    let key = key.trim().as_bytes();
    let secrets = [
        derive_job_secret(key, &launched, lj["attempt"].as_u64().unwrap() as u32),
        derive_job_secret(key, &held, hj["attempt"].as_u64().unwrap() as u32),
    ];
    let sh = &secrets[1];
    // Good and bad signed calls, so that the hook's success and error paths both log.
    let r = raw_http(
        addr,
        "GET",
        "/async/job",
        &sign(&held, sh, SigVersion::V2, "GET", "/async/job", b""),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let wrong = derive_job_secret(b"some-other-master-key-0123456789", &held, 1);
    let r = raw_http(
        addr,
        "GET",
        "/async/job",
        &sign(&held, &wrong, SigVersion::V1, "GET", "/async/job", b""),
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.describe());
    let body = br#"{"status":"SUCCESS","logs":["bye"]}"#;
    let h = sign(&held, sh, SigVersion::V2, "POST", "/async/status", body);
    let r = raw_http(addr, "POST", "/async/status", &h, body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = raw_http(addr, "POST", "/async/status", &h, body).await;
    assert_eq!(r.status, 401, "replay: {}", r.describe());
    let logs_launched: Value = http
        .get(format!("{url}/async/jobs/{launched}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        logs_launched.to_string().contains("hello"),
        "{logs_launched}"
    );

    // Stop it (SIGTERM, bounded), then read what it wrote.
    if let Some(pid) = child.id() {
        // Safety: a plain kill(2) of our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        stderr.contains("DEBUG"),
        "debug logging is on: {}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(
        stderr.contains("runyard listening"),
        "the server's own log is captured: {stderr}"
    );
    for s in &secrets {
        assert!(
            !stderr.contains(s.expose()) && !stdout.contains(s.expose()),
            "a job secret is in the server's output"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The Rust client end to end
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_wraps_a_successful_command() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "launch.ok", "max_attempts": 1}))
        .await;
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    srv.secret(&a, j["attempt"].as_u64().unwrap() as u32);
    let logs = srv.logs_with(&a, "hello").await;
    assert!(logs.iter().any(|l| l == "hello"), "{logs:#?}");
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_reports_a_failing_command() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "launch.fail", "max_attempts": 1}))
        .await;
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "ERROR", "{j:#}");
    srv.secret(&a, j["attempt"].as_u64().unwrap() as u32);
    let error = j["error"].as_str().unwrap_or("");
    assert!(error.contains("code 4"), "{j:#}");
    let logs = srv.logs_with(&a, "going down").await;
    assert!(logs.iter().any(|l| l == "going down"), "{logs:#?}");
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_runs_a_registered_operation() {
    let srv = Srv::start("").await;
    let args = json!({"greeting": "hi", "n": [1, 2, 3], "deep": {"x": null}});
    let a = srv
        .submit(json!({"type": "launch.echo", "args": args, "max_attempts": 1}))
        .await;
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    srv.secret(&a, j["attempt"].as_u64().unwrap() as u32);
    assert_eq!(j["result"], args);
    srv.finish().await;
}

/// An operation run by `launch` that fails with an `AbortError` (`runyard.fail` with
/// `retry: false`) ends the job at once; a plain error is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_ends_the_job_at_once_when_an_operation_aborts() {
    let srv = Srv::start("").await;
    let backoff = json!({"initial_ms": 100, "max_ms": 100, "multiplier": 1.0, "jitter": false});
    let fail = |retry: bool| {
        json!({"type": "launch.op_fail", "max_attempts": 3, "backoff": backoff,
               "args": {"message": "bad input", "retry": retry}})
    };
    let aborted = srv.submit(fail(false)).await;
    let retried = srv.submit(fail(true)).await;
    let j = srv.wait_terminal(&aborted).await;
    assert_eq!(j["status"], "ERROR", "{j:#}");
    assert_eq!(j["error"], "bad input", "{j:#}");
    assert_eq!(j["attempt"], 1, "no second attempt: {j:#}");
    let r = srv.wait_terminal(&retried).await;
    assert_eq!(r["status"], "ERROR", "{r:#}");
    assert_eq!(r["attempt"], 3, "a plain error uses every attempt: {r:#}");
    // Still one attempt once the other job's retries are all done.
    assert_eq!(srv.wait_terminal(&aborted).await["attempt"], 1);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_uploads_and_downloads_a_file() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "hold.client", "args": {"k": "v"}}))
        .await;
    let (_, sa) = srv.running(&a).await;
    let client = JobClient::new(a.clone(), sa.clone(), &srv.hook_base()).expect("client");
    let me = client.job().await.expect("GET job");
    assert_eq!(me.id, a);
    assert_eq!(me.attempt, 1);
    assert_eq!(me.args, json!({"k": "v"}));
    let tmp = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, &content).unwrap();
    let outcome = client
        .upload(
            "outputs",
            &src,
            json!({"name": "src.bin", "mimetype": "application/x-test"}),
        )
        .await
        .expect("upload");
    assert!(matches!(outcome, UploadOutcome::Uploaded(_)), "{outcome:?}");
    assert_eq!(outcome.digest().hash, md5_hex(&content));
    let dl = tmp.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    let path = client
        .download("jobs", &a, "outputs", 0, &dl)
        .await
        .expect("download");
    assert_eq!(std::fs::read(&path).unwrap(), content);
    // Again: already stored.
    let again = client
        .upload("outputs", &src, Value::Null)
        .await
        .expect("upload again");
    assert!(
        matches!(again, UploadOutcome::AlreadyStored(_)),
        "{again:?}"
    );
    let (status, bytes) = srv
        .fetch(&format!("{}/async/jobs/{a}/files/outputs/1", srv.url))
        .await;
    assert_eq!((status, bytes), (200, content.clone()));
    // The very same upload again (name, content, metadata: a try whose answer was lost, sent
    // again within the report window): attached once, not a third file.
    let same = client
        .upload(
            "outputs",
            &src,
            json!({"name": "src.bin", "mimetype": "application/x-test"}),
        )
        .await
        .expect("the same upload again");
    assert!(matches!(same, UploadOutcome::AlreadyStored(_)), "{same:?}");
    let files = srv.job(&a).await["files"]["outputs"].clone();
    let names: Vec<&str> = files
        .as_array()
        .expect("outputs")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["src.bin", ""], "{files}");
    // v1 client, progress, logs, success.
    let v1 = client.clone().with_v1();
    v1.progress(0.5, Some(json!({"phase": "v1"})))
        .await
        .expect("v1 progress");
    client
        .log(vec!["from the client".into()])
        .await
        .expect("log");
    assert!(srv.logs(&a).await.iter().any(|l| l == "from the client"));
    // A client with a wrong secret gets 401, and its error does not show the secret.
    let wrong = srv.secret(&a, 7);
    let bad = JobClient::new(a.clone(), wrong.clone(), &srv.hook_base()).unwrap();
    let e = bad.job().await.expect_err("wrong secret");
    assert_eq!(e.status(), Some(401));
    let text = format!("{e} {e:?} {bad:?}");
    assert!(!text.contains(wrong.expose()) && !text.contains(sa.expose()));
    client
        .success(Some(json!({"uploaded": content.len()})))
        .await
        .expect("success");
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS");
    assert_eq!(j["result"], json!({"uploaded": content.len()}));
    let e = client.running().await.expect_err("terminal");
    assert_eq!(e.status(), Some(409));
    srv.finish().await;
}

// Keep the plain signing functions exercised against the server too (what other languages do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_signatures_are_accepted() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.hand"})).await;
    let (_, sa) = srv.running(&a).await;
    let t = fresh_ms().to_string();
    let h1: Headers = vec![
        ("X-Job-Id".into(), a.clone()),
        ("X-Job-Time".into(), t.clone()),
        ("X-Job-Hash".into(), sign_v1(sa.expose(), &t)),
    ];
    let r = srv.hook("GET", "/async/job", &h1, b"").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let body = br#"{"status":"SUCCESS","results":{"hand":true}}"#;
    let t = fresh_ms().to_string();
    let h2: Headers = vec![
        ("x-job-id".into(), a.clone()),
        ("x-job-time".into(), t.clone()),
        (
            "x-job-hash".into(),
            sign_v2(sa.expose(), &t, "POST", "/async/status", body).to_uppercase(),
        ),
        ("x-job-signature".into(), "v2".into()),
    ];
    let r = srv.hook("POST", "/async/status", &h2, body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(srv.job(&a).await["result"], json!({"hand": true}));
    srv.finish().await;
}

/// The hook's log lines are cut as the job's stdout is: split at `\n` (a trailing `\r` dropped, a
/// final `\n` no empty line), a line over 16 KiB stored in pieces, not cut short; and a report is
/// counted once so split (1,000 lines of two: `413`, nothing stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_log_lines_are_split_on_newlines_like_stdout() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.lines"})).await;
    let (_, sa) = srv.running(&a).await;
    let long = "é".repeat(runyard_hooks::MAX_LINE_BYTES); // twice the cap, in bytes
    let body = json!({"logs": ["a\nb\r\nc", "d\n", "", "e\r", long]});
    let r = srv.report(&a, &sa, body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let job_lines = || all_job_lines(&srv, &a);
    let got = job_lines().await;
    assert_eq!(got[..6], ["a", "b", "c", "d", "", "e"], "{:?}", &got[..6]);
    assert_eq!(got.len(), 8, "the long line in two pieces");
    assert!(got[6..]
        .iter()
        .all(|p| p.len() <= runyard_hooks::MAX_LINE_BYTES));
    assert_eq!(got[6..].concat(), long, "the whole long line");
    // The 413 counts the entries, not the lines they are split into (review: a 1,000-entry
    // report of tracebacks was refused once split, breaking earlier clients).
    let two = vec!["x\ny"; 1000];
    let r = srv.report(&a, &sa, json!({ "logs": two })).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(job_lines().await.len(), 2008, "all stored");
    let r = srv
        .report(&a, &sa, json!({ "logs": vec!["x"; 1001] }))
        .await;
    assert_eq!(r.status, 413, "{}", r.describe());
    assert_eq!(job_lines().await.len(), 2008, "nothing stored");
    // One entry of 6,000 lines: the newest 5,000 are stored, after the note.
    let many: String = (0..6_000).map(|i| format!("{i}\n")).collect();
    let r = srv.report(&a, &sa, json!({ "logs": [many] })).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let got = job_lines().await;
    assert_eq!(got.len(), 2008 + 5_001);
    assert!(
        got[2008].starts_with("[runyard] 1000 line(s) dropped"),
        "{}",
        got[2008]
    );
    assert_eq!(
        (got[2009].as_str(), got.last().unwrap().as_str()),
        ("1000", "5999")
    );
    srv.finish().await;
}

/// Every `job` line of `id`, page after page.
async fn all_job_lines(srv: &Srv, id: &str) -> Vec<String> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let (status, v) = srv
            .get_json(&format!("/async/jobs/{id}/logs?limit=10000&after={after}"))
            .await;
        assert_eq!(status, 200, "{v}");
        let page = v["lines"].as_array().expect("lines");
        out.extend(
            page.iter()
                .filter(|l| l["stream"] == "job")
                .map(|l| l["line"].as_str().unwrap_or("").to_string()),
        );
        match v["next"].as_u64() {
            Some(n) if !page.is_empty() => after = n,
            _ => return out,
        }
    }
}

/// Review of the log limits: the Rust `JobClient::log` sent any number of lines in one report
/// (over 1,000 lines or 1 MiB: 413, all lost). Now in as many reports as needed; and a report
/// that fails does not take the others with it: the next one starts with a note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_sends_any_number_of_long_lines_in_several_reports() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.lines"})).await;
    let (_, sa) = srv.running(&a).await;
    let client = JobClient::new(a.clone(), sa.clone(), &srv.hook_base()).expect("client");
    let mut lines: Vec<String> = (0..2500).map(|i| format!("l{i}")).collect();
    let long = "é".repeat(runyard_hooks::MAX_LINE_BYTES); // two pieces each
    lines.extend(std::iter::repeat_n(long.clone(), 100));
    client.log(lines).await.expect("all sent");
    let got = all_job_lines(&srv, &a).await;
    assert_eq!(got.len(), 2700, "every line and piece stored");
    assert_eq!((got[0].as_str(), got[2499].as_str()), ("l0", "l2499"));
    assert_eq!(got[2500..2502].concat(), long);
    // A progress that cannot be sent is refused before any line goes (not after all of them).
    let bad = runyard_hooks::wire::StatusReport {
        progress: Some(f64::NAN),
        ..Default::default()
    };
    let more: Vec<String> = (0..1500).map(|i| format!("m{i}")).collect();
    let r = client.report_with_logs(bad, more.clone()).await;
    assert!(matches!(r, Err(ClientError::InvalidArgument(_))), "{r:?}");
    assert_eq!(all_job_lines(&srv, &a).await.len(), 2700, "nothing sent");
    // A terminal status goes with the last report, after every line (with the first, the job
    // ended before the rest was sent: each later report got 409).
    let done = runyard_hooks::wire::StatusReport {
        status: Some("SUCCESS".into()),
        ..Default::default()
    };
    client.report_with_logs(done, more).await.expect("all sent");
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    let got = all_job_lines(&srv, &a).await;
    assert_eq!(got.len(), 4200, "every line before the end");
    assert_eq!(got.last().map(String::as_str), Some("m1499"));
    // The job is terminal: the first report is refused (409) and nothing more is tried; the
    // error says how many lines were not stored.
    let e = client.log(more_lines(2500)).await.expect_err("terminal");
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        matches!(e, ClientError::LinesLost { lost: 2500, .. }),
        "{e}"
    );
    srv.finish().await;
}

fn more_lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// A hook that answers the `i`-th request (from 0) with `answer(i)` and keeps every body.
async fn fake_hook(answer: fn(usize) -> u16) -> (String, Arc<Mutex<Vec<Value>>>) {
    fake_hook_with(move |i| (answer(i), "{}")).await
}

/// [`fake_hook`] answering the `i`-th request with the status and body `answer(i)`.
async fn fake_hook_with(
    answer: impl Fn(usize) -> (u16, &'static str) + Send + 'static,
) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            let body = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    break Some(buf[end + 4..end + 4 + len].to_vec());
                }
            };
            let Some(body) = body else { continue };
            let i = {
                let mut b = kept.lock().unwrap();
                b.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                b.len() - 1
            };
            let (status, body) = answer(i);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (format!("http://{addr}/async"), bodies)
}

/// Second review of the log chunks: after a report the hook refuses for good (409: the job is
/// terminal) every other one was still sent (`log` of 1M lines: ~1,000 doomed requests, each up
/// to 60 s when the hook hangs). Now only a passing failure (5xx, 429, no answer) lets the next
/// reports go, and 3 in a row stop the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_stops_sending_logs_after_a_refusal_or_three_failures_in_a_row() {
    let lines = more_lines(5000); // 6 reports
    let sent = |bodies: &Arc<Mutex<Vec<Value>>>| bodies.lock().unwrap().clone();
    let client = |hook: &str| JobClient::new("j1", Secret::from_string("k".into()), hook).unwrap();
    // Refused for good: one request, every line counted lost.
    let (hook, bodies) = fake_hook(|_| 409).await;
    let e = client(&hook).log(lines.clone()).await.expect_err("refused");
    assert_eq!(sent(&bodies).len(), 1, "no report after a 409");
    assert!(
        matches!(e, ClientError::LinesLost { lost: 5000, .. }),
        "{e}"
    );
    assert_eq!(e.status(), Some(409));
    // Unavailable: 3 tries in a row, then the rest is given up.
    let (hook, bodies) = fake_hook(|_| 503).await;
    let e = client(&hook).log(lines.clone()).await.expect_err("down");
    assert_eq!(sent(&bodies).len(), 3, "3 failures in a row stop it");
    assert!(
        matches!(e, ClientError::LinesLost { lost: 5000, .. }),
        "{e}"
    );
    // A passing failure: the others go, the next one starts with a note; the error counts it.
    let (hook, bodies) = fake_hook(|i| if i == 1 { 503 } else { 200 }).await;
    let e = client(&hook)
        .log(lines.clone())
        .await
        .expect_err("one lost");
    let got = sent(&bodies);
    assert_eq!(got.len(), 6, "every report tried");
    assert!(matches!(e, ClientError::LinesLost { lost: 999, .. }), "{e}");
    let third = got[2]["logs"][0].as_str().unwrap();
    assert!(
        third.starts_with("[runyard] 999 line(s) lost here"),
        "{third}"
    );
    assert_eq!(
        got[5]["logs"].as_array().unwrap().last(),
        Some(&json!("n4999"))
    );
}

/// A report the hook took (2xx) whose answer is not JSON (a proxy's page, a truncated body) was
/// counted as refused: its lines as lost and nothing more sent. Its lines are stored: the
/// others go, and only the answer's error is returned when it was the last report's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_counts_a_taken_report_with_an_odd_answer_as_stored() {
    let lines = more_lines(5000); // 6 reports
    let client = |hook: &str| JobClient::new("j1", Secret::from_string("k".into()), hook).unwrap();
    let (hook, bodies) =
        fake_hook_with(|i| (200, if i == 0 { "<html>ok</html>" } else { "{}" })).await;
    let answer = client(&hook).log(lines.clone()).await;
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "every report sent");
    assert!(answer.is_ok(), "{answer:?}");
    assert!(
        got.iter()
            .all(|b| !b["logs"][0].as_str().unwrap().starts_with("[runyard]")),
        "no line noted lost"
    );
    // The last answer is not JSON: its error, not a count of lost lines.
    let (hook, bodies) = fake_hook_with(|i| (200, if i == 5 { "{" } else { "{}" })).await;
    let e = client(&hook).log(lines).await.expect_err("odd last answer");
    assert_eq!(bodies.lock().unwrap().len(), 6);
    assert!(matches!(e, ClientError::Json { .. }), "{e}");
}

/// Review of the log limits: `runyard launch --forward-logs` sent a batch of up to 1,000 lines
/// in one report whatever their length (1,000 lines of 16 KiB: 16 MiB, 413, the batch lost
/// with only a message on stderr). Now the hook client's chunks: every line arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_forwards_many_long_lines_in_reports_the_hook_takes() {
    let srv = Srv::start("").await;
    let a = srv
        .submit(json!({"type": "launch.long_lines", "max_attempts": 1}))
        .await;
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    let got = all_job_lines(&srv, &a).await;
    let n = got.len();
    assert_eq!(n, 1200, "every forwarded line: {:?}", got.first());
    assert!(got[1199].starts_with("1199 "), "in order");
    srv.finish().await;
}

/// The header `name` of signed `headers`.
fn header<'a>(headers: &'a Headers, name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Writes the signature of `headers` into the embedded store's replay memory (table `replay`) as
/// the server does before it applies a report: the state a node that died between the two, or
/// whose apply failed with its answer lost, leaves.
fn remember_without_applying(srv: &Srv, headers: &Headers) {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{}\n{}\n{}",
        header(headers, "x-job-id").to_ascii_lowercase(),
        header(headers, "x-job-time"),
        header(headers, "x-job-hash").to_ascii_lowercase()
    );
    let db = rusqlite::Connection::open(srv.data_dir().join("runyard.db")).expect("open db");
    db.busy_timeout(WAIT).expect("busy timeout");
    db.execute(
        "INSERT INTO replay (key, expires) VALUES (?1, ?2)",
        rusqlite::params![Sha256::digest(key.as_bytes()).to_vec(), now_ms() + 300_000],
    )
    .expect("remember");
}

/// A final report whose signature the server remembered but whose report it never applied (its
/// node died between the two, or the apply failed and the job never got the 503), sent again
/// as it was by the job's client (it had no answer), is not a plain `401 replay`, which the
/// client counts as taken (the job's result lost without a word): it is `503 replay_unapplied`,
/// nothing applied, and the report signed again lands, once. A replay of a report that did land,
/// or of one without a final status, stays `401 replay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_report_remembered_but_not_applied_is_signed_again_not_lost() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.unapplied"})).await;
    let (_, sa) = srv.running(&a).await;
    let st = "/async/status";
    let lines = serde_json::to_vec(&json!({"logs": ["a line"]})).unwrap();
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &lines);
    remember_without_applying(&srv, &h);
    let before = srv.snap(&a).await;
    let label = "a log report remembered, not applied";
    srv.refused(
        &a,
        &before,
        label,
        "POST",
        st,
        &h,
        &lines,
        401,
        Some("replay"),
    )
    .await;

    let body = json!({"status": "SUCCESS", "results": {"n": 7}, "logs": ["done"]});
    let body = serde_json::to_vec(&body).unwrap();
    // v1 signs only the time: its replay says nothing of the body it carries.
    let h = sign(&a, &sa, SigVersion::V1, "POST", st, &body);
    remember_without_applying(&srv, &h);
    let label = "SUCCESS signed with v1 remembered, not applied";
    srv.refused(
        &a,
        &before,
        label,
        "POST",
        st,
        &h,
        &body,
        401,
        Some("replay"),
    )
    .await;
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &body);
    remember_without_applying(&srv, &h);
    let label = "SUCCESS remembered, not applied";
    let r = srv
        .refused(&a, &before, label, "POST", st, &h, &body, 503, None)
        .await;
    assert_eq!(r.code(), "replay_unapplied", "{}", r.describe());
    // Signed again: taken, once.
    let fresh = sign(&a, &sa, SigVersion::V2, "POST", st, &body);
    let r = srv.hook("POST", st, &fresh, &body).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json["reported"], "SUCCESS", "{}", r.describe());
    // Now that it landed, both sends of it are plain replays.
    let landed = srv.snap(&a).await;
    for (label, h) in [("the first send", &h), ("the fresh one", &fresh)] {
        srv.refused(
            &a,
            &landed,
            label,
            "POST",
            st,
            h,
            &body,
            401,
            Some("replay"),
        )
        .await;
    }
    // Another outcome remembered, not applied, while the job (still active: its process is
    // given `exit_grace` after a report) has recorded SUCCESS: this one provably did not land,
    // so it is signed again, and then refused naming what the job recorded.
    let err = serde_json::to_vec(&json!({"status": "ERROR", "errorMessage": "late"})).unwrap();
    let h = sign(&a, &sa, SigVersion::V2, "POST", st, &err);
    remember_without_applying(&srv, &h);
    let label = "ERROR remembered, not applied, after SUCCESS landed";
    let r = srv
        .refused(&a, &landed, label, "POST", st, &h, &err, 503, None)
        .await;
    assert_eq!(r.code(), "replay_unapplied", "{}", r.describe());
    let fresh = sign(&a, &sa, SigVersion::V2, "POST", st, &err);
    let r = srv
        .refused(&a, &landed, label, "POST", st, &fresh, &err, 409, None)
        .await;
    assert_eq!(r.json["error"]["reported"], "SUCCESS", "{}", r.describe());
    let j = srv.wait_terminal(&a).await;
    assert_eq!(j["status"], "SUCCESS", "{j:#}");
    assert_eq!(j["result"], json!({"n": 7}), "{j:#}");
    let logs = srv.logs_with(&a, "done").await;
    assert_eq!(logs.iter().filter(|l| *l == "done").count(), 1, "{logs:?}");
    srv.finish().await;
}

/// A report refused because the job reported already says what it reported
/// (`error.reported`), before and after the job's end is committed: a client whose earlier try
/// was applied although its answer was the server's 5xx can tell its report is the one there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refused_after_the_jobs_own_says_what_it_reported() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.reported"})).await;
    let (_, sa) = srv.running(&a).await;
    let fail = json!({"status": "ERROR", "errorMessage": "boom", "retry": false});
    let r = srv.report(&a, &sa, fail.clone()).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = srv.report(&a, &sa, fail.clone()).await;
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(r.code(), "illegal_transition", "{}", r.describe());
    assert_eq!(r.json["error"]["reported"], "ERROR", "{}", r.describe());
    assert_eq!(srv.wait_terminal(&a).await["status"], "ERROR");
    let r = srv.report(&a, &sa, fail).await;
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(r.json["error"]["reported"], "ERROR", "{}", r.describe());
    srv.finish().await;
}

/// Lines then a final status, sent while the hook is down for the first reports: the reports
/// with lines only stop after 3 failures in a row, and the one with the status still goes (its
/// report window), with the note of the lines lost as its only line; before, it was never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_sends_the_status_after_its_log_reports_failed() {
    let (hook, bodies) = fake_hook(|i| if i < 3 { 503 } else { 200 }).await;
    let client = JobClient::new("j1", Secret::from_string("k".into()), &hook).unwrap();
    let done = runyard_hooks::wire::StatusReport {
        status: Some("SUCCESS".into()),
        results: Some(json!({"n": 1})),
        ..Default::default()
    };
    let e = client
        .report_with_logs(done, more_lines(5000))
        .await
        .expect_err("lines lost");
    assert!(
        matches!(e, ClientError::LinesLost { lost: 5000, .. }),
        "{e}"
    );
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "3 reports with lines, then the status");
    assert_eq!(got[3]["status"], "SUCCESS");
    assert_eq!(got[3]["results"], json!({"n": 1}));
    let note = got[3]["logs"][0].as_str().unwrap();
    assert!(
        note.starts_with("[runyard] 5000 line(s) lost here"),
        "{note}"
    );
    assert_eq!(got[3]["logs"].as_array().unwrap().len(), 1);
}

/// The probe's finding: the replay key is (job, `X-Job-Time`, hash) and a v2 hash covered time,
/// method, path and body only, so two clients (or processes) of one job sending the same report
/// (`progress(0.5)`, `log("tick")`) in the same millisecond sent the same triple and the second
/// was refused `401 replay`. A v2 request may carry `X-Job-Nonce`, which its signature covers:
/// two requests alike but for their nonces are both applied, and the same one again (a re-send)
/// is still a replay. Signed by hand, as a client in another language following docs/hooks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_alike_but_for_their_nonces_are_both_applied() {
    use sha2::{Digest, Sha256};
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.nonce"})).await;
    let (_, sa) = srv.running(&a).await;
    let st = "/async/status";
    let body = br#"{"progress":0.5,"logs":["tick"]}"#;
    let t = fresh_ms().to_string();
    let signed = |nonce: &str| -> Headers {
        let body_hash = hex::encode(Sha256::digest(body));
        let message = format!("{t}\nPOST\n{st}\n{body_hash}\n{nonce}");
        let mac = runyard_hooks::hmac_sha256_parts(sa.expose().as_bytes(), &[message.as_bytes()]);
        vec![
            ("X-Job-Id".into(), a.clone()),
            ("X-Job-Time".into(), t.clone()),
            ("X-Job-Hash".into(), hex::encode(mac)),
            ("X-Job-Signature".into(), "v2".into()),
            ("X-Job-Nonce".into(), nonce.into()),
        ]
    };
    let (first, second) = (signed("client-a"), signed("client-b"));
    let r = srv.hook("POST", st, &first, body).await;
    assert_eq!(r.status, 200, "first client: {}", r.describe());
    let r = srv.hook("POST", st, &second, body).await;
    assert_eq!(
        r.status,
        200,
        "second client, same body and millisecond: {}",
        r.describe()
    );
    let logs = srv.logs_with(&a, "tick").await;
    let wait = Instant::now();
    let mut ticks = logs.iter().filter(|l| *l == "tick").count();
    while ticks < 2 && wait.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ticks = srv.logs(&a).await.iter().filter(|l| *l == "tick").count();
    }
    assert_eq!(ticks, 2, "both reports' lines stored");
    // The first request sent again as it was (a client's re-send after no answer): a replay.
    let before = srv.snap(&a).await;
    srv.refused(
        &a,
        &before,
        "client-a again",
        "POST",
        st,
        &first,
        body,
        401,
        Some("replay"),
    )
    .await;
    // A nonce is signed: the first signature with another nonce is not a new request.
    let swapped = with(&first, "X-Job-Nonce", "client-c");
    srv.refused(
        &a,
        &before,
        "nonce swapped",
        "POST",
        st,
        &swapped,
        body,
        401,
        Some("bad_signature"),
    )
    .await;
    srv.finish().await;
}

/// Two `JobClient`s of one job (two processes each with its own `from_env()`, in the probe)
/// signing the same report in the same millisecond: each sends a nonce of its own, so neither
/// is refused as a replay (before, the second one was `401 replay`). Then a burst of identical
/// progress reports from both at once, none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_job_clients_sending_the_same_report_at_once_are_both_taken() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.twins"})).await;
    let (_, sa) = srv.running(&a).await;
    let one = JobClient::new(a.clone(), sa.clone(), &srv.hook_base()).expect("client");
    let two = JobClient::new(a.clone(), sa.clone(), &srv.hook_base()).expect("client");
    let url = one.endpoint(&["status"]);
    let target = url.path().to_string();
    let body = br#"{"progress":0.5}"#;
    let as_headers = |map: reqwest::header::HeaderMap| -> Headers {
        map.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_string()))
            .collect()
    };
    // Signed by both in the same millisecond (a bounded search for one).
    let mut same = None;
    for _ in 0..10_000 {
        let h1 = as_headers(one.sign(&reqwest::Method::POST, &url, body).expect("sign"));
        let h2 = as_headers(two.sign(&reqwest::Method::POST, &url, body).expect("sign"));
        if header(&h1, "x-job-time") == header(&h2, "x-job-time") {
            same = Some((h1, h2));
            break;
        }
    }
    let (h1, h2) = same.expect("two signatures in one millisecond");
    for (who, h) in [("first client", &h1), ("second client", &h2)] {
        let r = srv.hook("POST", &target, h, body).await;
        assert_eq!(r.status, 200, "{who}: {}", r.describe());
    }
    let burst = |c: JobClient| async move {
        let mut refused = Vec::new();
        for _ in 0..100 {
            if let Err(e) = c.progress(0.5, None).await {
                refused.push(e.to_string());
            }
        }
        refused
    };
    let (r1, r2) = tokio::join!(burst(one), burst(two));
    assert!(r1.is_empty() && r2.is_empty(), "refused: {r1:?} {r2:?}");
    srv.finish().await;
}

/// A proxy to `srv` that drops `X-Job-Nonce` from every request: the server then verifies the
/// signature without the nonce, as an API node of a build before it does (`401 bad_signature`).
/// Its base URL (`/async`).
async fn nonce_dropping_proxy(srv: &Srv) -> String {
    let (hook, _) = rewriting_proxy(srv, |_| Step::StripNonce).await;
    hook
}

/// What [`rewriting_proxy`] does with a request.
#[derive(Clone, Copy)]
enum Step {
    /// Forwards it and its answer.
    Pass,
    /// Forwards it, then closes the connection without its answer (the answer lost).
    LoseAnswer,
    /// Forwards it without `X-Job-Nonce` (an API node of an earlier build: `401 bad_signature`).
    StripNonce,
}

/// A proxy to `srv` that does `plan(n)` with its `n`th request (from 0). Its base URL (`/async`)
/// and, for each request in turn, whether it came with an `X-Job-Nonce`.
async fn rewriting_proxy(srv: &Srv, plan: fn(usize) -> Step) -> (String, Arc<Mutex<Vec<bool>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = srv.addr;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_proxy = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut step = Step::Pass;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            let request = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .map_or(0, |v| v.parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let with_nonce = head.to_ascii_lowercase().contains("\r\nx-job-nonce:");
                    let n = {
                        let mut seen = seen_by_proxy.lock().unwrap();
                        seen.push(with_nonce);
                        seen.len() - 1
                    };
                    step = plan(n);
                    let kept: Vec<&str> = head
                        .split("\r\n")
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            let nonce = l.starts_with("x-job-nonce:");
                            let dropped = nonce && matches!(step, Step::StripNonce);
                            !dropped && !l.starts_with("connection:")
                        })
                        .collect();
                    let mut out =
                        format!("{}\r\nconnection: close\r\n\r\n", kept.join("\r\n")).into_bytes();
                    out.extend_from_slice(&buf[end + 4..end + 4 + len]);
                    break Some(out);
                }
            };
            let Some(request) = request else { continue };
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let mut answer = Vec::new();
            if up.write_all(&request).await.is_ok()
                && up.read_to_end(&mut answer).await.is_ok()
                && !matches!(step, Step::LoseAnswer)
            {
                let _ = conn.write_all(&answer).await;
            }
        }
    });
    (format!("http://{addr}/async"), seen)
}

/// A client that sends nonces, to a hook that does not know them (an API node of an earlier
/// build, during a rolling upgrade: it refuses the signature, `401 bad_signature`): each call is
/// signed again without a nonce and taken, the status reports of the report window included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_client_talks_to_a_hook_that_does_not_know_nonces() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.old_node"})).await;
    let (_, sa) = srv.running(&a).await;
    let hook = nonce_dropping_proxy(&srv).await;
    let client = JobClient::new(a.clone(), sa.clone(), &hook).expect("client");
    client.progress(0.5, None).await.expect("progress");
    client
        .log(vec!["through an old node".into()])
        .await
        .expect("log");
    assert_eq!(client.job().await.expect("job").id, a);
    client
        .running()
        .await
        .expect("a status report, in the report window");
    let logs = srv.logs_with(&a, "through an old node").await;
    assert!(logs.iter().any(|l| l == "through an old node"), "{logs:?}");
    // A wrong secret is still refused (signed again without a nonce, refused again), here by a
    // node that knows nonces: two requests, the first with a nonce, the second without.
    let (counted, seen) = rewriting_proxy(&srv, |_| Step::Pass).await;
    let wrong =
        JobClient::new(a.clone(), Secret::from_string("0".repeat(64)), &counted).expect("client");
    let err = wrong.progress(0.5, None).await.expect_err("wrong secret");
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(*seen.lock().unwrap(), [true, false], "nonce, then none");
    // A status report in its window too, however long the window: its first send is refused.
    let err = wrong.running().await.expect_err("wrong secret");
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(*seen.lock().unwrap(), [true, false, true, false]);
    srv.finish().await;
}

/// A status report taken by a node that knows nonces, its answer lost, and re-sent to a node of
/// an earlier build, which refuses the signature (`401 bad_signature`) before its replay memory
/// could say "taken": the same signed request is sent again, never signed again without a nonce
/// (that node would take it, the lines twice). Here the next re-send reaches a newer node:
/// `401 replay`, taken. When only older nodes answer until the window ends, the call fails,
/// its lines still stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_an_older_node_refuses_is_not_signed_again_without_a_nonce() {
    let srv = Srv::start("").await;
    let a = srv.submit(json!({"type": "hold.old_node_resend"})).await;
    let (_, sa) = srv.running(&a).await;
    let report = |line: &str| runyard_hooks::wire::StatusReport {
        status: Some("RUNNING".to_owned()),
        logs: Some(vec![line.to_owned()]),
        ..runyard_hooks::wire::StatusReport::default()
    };
    let (hook, seen) = rewriting_proxy(&srv, |n| match n {
        0 => Step::LoseAnswer,
        1 => Step::StripNonce,
        _ => Step::Pass,
    })
    .await;
    let client = JobClient::new(a.clone(), sa.clone(), &hook)
        .expect("client")
        .with_report_window(Duration::from_secs(20));
    client
        .status(&report("through two nodes"))
        .await
        .expect("taken (401 replay on the last re-send)");
    let logs = srv.logs_with(&a, "through two nodes").await;
    let stored = logs.iter().filter(|l| *l == "through two nodes").count();
    assert_eq!(stored, 1, "stored once: {logs:?}");
    assert_eq!(*seen.lock().unwrap(), [true; 3], "each send with its nonce");

    let (hook, seen) = rewriting_proxy(&srv, |n| match n {
        0 => Step::LoseAnswer,
        _ => Step::StripNonce,
    })
    .await;
    let client = JobClient::new(a.clone(), sa.clone(), &hook)
        .expect("client")
        .with_report_window(Duration::from_secs(5));
    let err = client
        .status(&report("older nodes only"))
        .await
        .expect_err("the outcome is unknown");
    assert_eq!(err.status(), Some(401), "{err}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2 && seen.iter().all(|n| *n), "{seen:?}");

    let logs = srv.logs_with(&a, "older nodes only").await;
    for line in ["through two nodes", "older nodes only"] {
        let stored = logs.iter().filter(|l| *l == line).count();
        assert_eq!(stored, 1, "{line:?} stored once: {logs:?}");
    }
    srv.finish().await;
}
