//! The client commands: talk to a server over its HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use super::exit::{self, Failure};
use super::follow::{self, LogTail};
use super::output::{self, Format};

/// Where the server is, how to authenticate, and how to print: flattened into every client
/// command.
#[derive(Debug, Args, Clone)]
pub struct ServerArg {
    /// Base URL of the runyard server.
    #[arg(long, env = "RUNYARD_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// API token or JWT, sent as `Authorization: Bearer` on every request.
    #[arg(long, env = "RUNYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `text` for people, `json` for programs (one JSON document; JSON lines for `logs`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `submit` flags.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job type (not with --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub job_type: Option<String>,
    /// Submit the jobs of FILE instead (JSON lines, one submit body per line; `-` = stdin), up
    /// to 1,000 per request; prints one result per line, exits 4 when any line failed. Each
    /// line says all of its job: no other flag of a job goes with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "wait", "inputs", "wait_for", "args", "timeout", "max_attempts", "idempotency_key",
        "channel", "run_at",
    ])]
    pub batch: Option<String>,
    /// Arguments as a JSON object.
    #[arg(long)]
    pub args: Option<String>,
    /// Follow the job until it ends; print the final job; exit 0 only on SUCCESS.
    #[arg(long)]
    pub wait: bool,
    /// Per-attempt time limit, e.g. 30s, 10m, or plain seconds (500, 1.5).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Attempts.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Idempotency key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Event channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Run at this RFC 3339 time.
    #[arg(long)]
    pub run_at: Option<String>,
    /// Wait (status WAITING, no worker slot) for COUNT records (default 1) of signal KEY before
    /// running; repeatable, every one must be met.
    #[arg(long = "wait-for", value_name = "KEY[:COUNT]")]
    pub wait_for: Vec<String>,
    /// Records before this time do not count, for every --wait-for: RFC 3339, "-4h" (before the
    /// submit) or "HH:MM" (the last such UTC time).
    #[arg(long, requires = "wait_for", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Stop waiting at this time: RFC 3339, "+4h" or "HH:MM" (the next such UTC time).
    #[arg(long, requires = "wait_for")]
    pub deadline: Option<String>,
    /// What the deadline does.
    #[arg(long, requires = "deadline", value_parser = ["run", "fail", "skip"])]
    pub on_deadline: Option<String>,
    /// Attach an input file before the job can start: `PROP=FILE` (repeatable; the submit is then
    /// multipart, the file part named PROP).
    #[arg(long = "input", value_name = "PROP=FILE")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `--timeout` as the API takes it: a plain number of seconds (`500`, `1.5`) as a JSON number,
/// anything else (`30s`, `10m`) as the string, for the server to read or refuse.
fn timeout_value(t: &str) -> Value {
    let plain = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
    match (
        t.parse::<u64>(),
        plain.then(|| t.parse::<f64>().ok()).flatten(),
    ) {
        (Ok(n), _) => Value::from(n),
        (_, Some(f)) if f.is_finite() => Value::from(f),
        _ => Value::from(t),
    }
}

/// `--wait-for KEY[:COUNT]` as a `wait_for` item (a key may itself contain ':'; only a
/// numeric last part is a count).
fn wait_item(spec: &str, since: Option<&str>) -> Value {
    let (key, count) = match spec.rsplit_once(':') {
        Some((k, c)) if !k.is_empty() && c.parse::<u64>().is_ok() => {
            (k, c.parse::<u64>().unwrap_or(1))
        }
        _ => (spec, 1),
    };
    let mut item = json!({ "key": key, "count": count });
    if let Some(s) = since {
        item["since"] = json!(s);
    }
    item
}

/// Flags of commands that take a job id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job id.
    pub id: String,
    /// Keep printing new lines until the job ends.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A small HTTP client for the API: sends the token, maps answers to exit codes (`Failure`).
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// For the event stream: no overall time limit, but a bound on silence (the server sends a
    /// keep-alive comment every 15 s).
    stream_http: reqwest::Client,
    token: Option<String>,
    /// The base URL as messages show it: a password in it as `***`.
    shown: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.shown).finish() // never the token
    }
}

impl Api {
    /// A client for `base`, without a token.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_token(base, None)
    }

    /// A client for the server, token and of these flags.
    pub fn from_arg(a: &ServerArg) -> anyhow::Result<Self> {
        Self::with_token(&a.server, a.token.as_deref())
    }

    /// A client for `base` that sends `token` as `Authorization: Bearer` when given.
    pub fn with_token(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| Failure::usage(format!("--server `{base}` is not a URL: {e}")))?;
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let shown = shown.to_string().trim_end_matches('/').to_string();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::usage(format!(
                "--server `{shown}`: only http:// and https:// URLs"
            )));
        }
        // The API's paths are appended to it: a query or fragment would swallow them.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Failure::usage(format!(
                "--server `{shown}`: a base URL without `?query` or `#fragment` (the API's paths \
                 are appended to it)"
            )));
        }
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(Failure::usage(
                    "--token / RUNYARD_TOKEN holds characters a header cannot carry",
                ));
            }
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            shown,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build()?,
            stream_http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(45))
                .build()?,
            token: token.map(str::to_string),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.with_auth(self.http.request(method, format!("{}{path}", self.base)))
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends; no answer -> `Failure::Unreachable`, 4xx -> `Refused`, 5xx -> `Unavailable`.
    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let r = rb.send().await.map_err(|e| self.unreachable(&e))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let (kind, _) = content_type(&r, "application/json");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let message = match body["error"]["message"].as_str() {
            Some(m) => m.to_string(),
            None => format!("request failed, and the answer is not runyard's error ({kind})"),
        };
        let status = status.as_u16();
        let code = match body["error"]["code"].as_str() {
            Some(c) => c.to_string(),
            // A proxy's own 413 says the same as runyard's.
            None if status == 413 => "too_large".to_string(),
            None => "no code".to_string(),
        };
        Err(if status < 500 {
            Failure::Refused {
                status,
                code,
                message,
            }
        } else {
            Failure::Unavailable {
                status,
                code,
                message,
            }
        }
        .into())
    }

    /// The failure for a request that got no answer.
    pub fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        Failure::Unreachable {
            url: self.shown.clone(),
            detail,
        }
        .into()
    }

    /// The failure for a success whose body is not what runyard's API answers (a login page of
    /// a proxy, another server's page): an error, never taken for an empty answer.
    fn not_runyard(&self, status: u16, kind: &str) -> anyhow::Error {
        Failure::Unavailable {
            status,
            code: "not_runyard".into(),
            message: format!(
                "the answer is not runyard's JSON ({kind}): is {} the address of runyard's API?",
                self.shown
            ),
        }
        .into()
    }

    async fn json(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let r = self.send(rb).await?;
        let (status, (kind, json)) = (r.status().as_u16(), content_type(&r, "application/json"));
        let bytes = r.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null); // 204, or an answer with no body
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) if json => Ok(v),
            _ => Err(self.not_runyard(status, &kind)),
        }
    }

    /// GET a path (with query).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// POST a JSON text as it is (a batch's lines, sent as written: a key given twice stays so,
    /// for the server to refuse).
    pub async fn post_json_text(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let rb = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.json(rb).await
    }

    /// POST a multipart form to a path.
    pub async fn post_multipart(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).multipart(form))
            .await
    }

    /// PUT a body to a path.
    pub async fn put_body(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        self.json(
            self.request(reqwest::Method::PUT, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    /// GET a file's bytes: the answer, its body left to read, and the md5 (lowercase hex) its
    /// `ETag` says the bytes have. A proxy may weaken the tag (`W/"…"`) or suffix it (`"…-gzip"`)
    /// when it decodes what it fetched: the md5 is still the bytes'. A file answer without it
    /// (an attachment: a runyard older than the tag) is `None`; anything else without it (a
    /// proxy's page, another server) is `not_runyard`.
    pub async fn get_file(
        &self,
        path: &str,
    ) -> anyhow::Result<(reqwest::Response, Option<String>)> {
        // No overall time limit for a download of any size, only for silence.
        let r = self
            .send(self.with_auth(self.stream_http.get(format!("{}{path}", self.base))))
            .await?;
        let headers = r.headers();
        let md5 = headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(md5_of_etag);
        let attachment = headers
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("attachment"));
        if md5.is_none() && !attachment {
            let (kind, _) = content_type(&r, "application/octet-stream");
            return Err(Failure::Unavailable {
                status: r.status().as_u16(),
                code: "not_runyard".into(),
                message: format!(
                    "the answer is not a file of runyard's ({kind}, no attachment, no md5 \
                     ETag): is {} the address of runyard's API?",
                    self.shown
                ),
            }
            .into());
        }
        Ok((r, md5))
    }

    /// Opens the Server-Sent Events stream of `channel`, after `last_id` when given.
    pub async fn event_stream(
        &self,
        channel: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut rb = self
            .stream_http
            .get(format!("{}/async/events/sse", self.base))
            .query(&[("channel", channel)])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            rb = rb.header("last-event-id", id);
        }
        let r = self.send(self.with_auth(rb)).await?;
        let (kind, stream) = content_type(&r, "text/event-stream");
        if !stream {
            return Err(self.not_runyard(r.status().as_u16(), &kind));
        }
        Ok(r)
    }
}

/// An answer's `Content-Type` as messages say it (`no Content-Type` without one), and whether
/// it is `essence` (`application/json`, `text/event-stream`; parameters and case aside).
/// The md5 (lowercase hex) an `ETag` gives: `"<32 hex>"`, weakened (`W/`) or suffixed (`-gzip`)
/// by a proxy that decoded the bytes.
fn md5_of_etag(tag: &str) -> Option<String> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let (hex, rest) = inner.split_at_checked(32)?;
    (hex.bytes().all(|b| b.is_ascii_hexdigit()) && (rest.is_empty() || rest.starts_with('-')))
        .then(|| hex.to_ascii_lowercase())
}

fn content_type(r: &reqwest::Response, essence: &str) -> (String, bool) {
    match r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(t) => {
            let is = t
                .split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(essence));
            (format!("Content-Type: {t}"), is)
        }
        None => ("no Content-Type".into(), false),
    }
}

/// `path` with each of `segments` appended, percent-encoded as one path segment each.
pub fn path_of(prefix: &str, segments: &[&str]) -> anyhow::Result<String> {
    let mut u = reqwest::Url::parse("http://x/")?;
    {
        let mut p = u
            .path_segments_mut()
            .map_err(|_| anyhow!("cannot build a URL"))?;
        p.pop_if_empty();
        for s in prefix.split('/').filter(|s| !s.is_empty()) {
            p.push(s);
        }
        for s in segments {
            p.push(s);
        }
    }
    Ok(u.path().to_string())
}

/// `/async/jobs/{id}` (`id` checked to be one path segment).
pub fn job_path(id: &str) -> anyhow::Result<String> {
    path_of("/async/jobs", &[id])
}

/// Parses `--args`-style JSON, or says which flag is wrong (exit 2).
pub fn json_arg(flag: &str, s: &str) -> anyhow::Result<Value> {
    let v =
        serde_json::from_str(s).map_err(|e| Failure::usage(format!("{flag} must be JSON: {e}")))?;
    no_integer_past_64_bits(s).map_err(|e| Failure::usage(format!("{flag}: {e}")))?;
    Ok(v)
}

/// The API refuses an integer past 64 bits (it would be stored rounded); read into a `Value`
/// here, it would be rounded before it was sent: refused the same way, before anything is sent.
pub fn no_integer_past_64_bits(json: &str) -> Result<(), String> {
    match crate::api::extract::integer_past_64_bits(json.as_bytes()) {
        None => Ok(()),
        Some(n) => Err(format!(
            "the integer {} does not fit in 64 bits: it would be stored rounded (send it as a \
             string)",
            n.chars().take(40).collect::<String>()
        )),
    }
}

/// `runyard submit`.
pub async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let format = a.server.output;
    if let Some(file) = &a.batch {
        return super::submit_batch::run(&api, file, format).await;
    }
    let mut body = json!({ "type": a.job_type });
    if let Some(s) = &a.args {
        let args = json_arg("--args", s)?;
        if !args.is_object() {
            return Err(Failure::usage("--args must be a JSON object"));
        }
        body["args"] = args;
    }
    for (k, v) in [
        // A plain number (`500`, `1.5`) is seconds, as the API's JSON number (its string form
        // needs a unit).
        ("timeout", a.timeout.map(|t| timeout_value(&t))),
        ("max_attempts", a.max_attempts.map(Value::from)),
        ("idempotency_key", a.idempotency_key.map(Value::from)),
        ("channel", a.channel.map(Value::from)),
        ("run_at", a.run_at.map(Value::from)),
        (
            "wait_for",
            (!a.wait_for.is_empty()).then(|| {
                Value::Array(
                    a.wait_for
                        .iter()
                        .map(|w| wait_item(w, a.since.as_deref()))
                        .collect(),
                )
            }),
        ),
        ("deadline", a.deadline.map(Value::from)),
        ("on_deadline", a.on_deadline.map(Value::from)),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let r = if a.inputs.is_empty() {
        api.post("/async/jobs", &body).await?
    } else {
        let form = super::files::submit_form(&body, &a.inputs).await?;
        api.post_multipart("/async/jobs", form).await?
    };
    let id = r["job_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no job_id in the answer"))?
        .to_string();
    if !a.wait {
        match format {
            Format::Json => output::json_line(&r),
            Format::Text => println!("{id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{id}");
    let channel = r["channel_id"].as_str().unwrap_or(&id).to_string();
    // The job was accepted: a failure from here on (the token expired, the server went away)
    // ends the wait, not the job, and the message says so with how to find it.
    let job = follow::wait_job(&api, &id, &channel)
        .await
        .with_context(|| {
            format!(
                "stopped waiting for job {id}, which was accepted and is not cancelled \
                 (`runyard status {id}` shows where it is)"
            )
        })?;
    output::document(format, &job);
    Ok(exit::of_status(job["status"].as_str().unwrap_or("")))
}

/// `runyard status`.
pub async fn status(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    output::document(a.server.output, &api.get(&job_path(&a.id)?).await?);
    Ok(ExitCode::SUCCESS)
}

/// `runyard cancel`.
pub async fn cancel(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let j = api
        .post(&format!("{}/cancel", job_path(&a.id)?), &json!({}))
        .await?;
    match a.server.output {
        Format::Json => output::json_line(&j),
        Format::Text => println!("{}", j["status"].as_str().unwrap_or("")),
    }
    Ok(ExitCode::SUCCESS)
}

/// `runyard retry`.
pub async fn retry(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let j = api
        .post(&format!("{}/retry", job_path(&a.id)?), &json!({}))
        .await?;
    match a.server.output {
        Format::Json => output::json_line(&j),
        Format::Text => println!("{}", j["status"].as_str().unwrap_or("")),
    }
    Ok(ExitCode::SUCCESS)
}

/// `runyard logs`: the job's lines (time, attempt, text); with `--follow`, new lines as they
/// come until the job ends, then its final status and exit code, exiting as `submit --wait` does.
pub async fn logs(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let format = a.server.output;
    let mut tail = LogTail::new(&a.id)?;
    if !a.follow {
        loop {
            let lines = tail.fetch(&api).await?;
            if lines.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for l in &lines {
                l.print(format);
            }
        }
    }
    let job = follow::follow_logs(&api, &mut tail, format).await?;
    let status = job["status"].as_str().unwrap_or("");
    let end = json!({
        "kind": "end",
        "job_id": job["id"],
        "status": status,
        "exit_code": job["exit_code"],
        "error": job["error"],
    });
    match format {
        Format::Json => output::json_line(&end),
        Format::Text => println!("{}", follow::end_line(&job)),
    }
    Ok(exit::of_status(status))
}

#[cfg(test)]
mod tests {
    use super::{md5_of_etag, timeout_value};
    use serde_json::json;

    #[test]
    fn a_plain_timeout_is_seconds_as_a_number_and_the_rest_goes_as_written() {
        assert_eq!(timeout_value("500"), json!(500));
        assert_eq!(timeout_value("1.5"), json!(1.5));
        for t in ["30s", "1e3", "inf", "1..5", ".", "-1", ""] {
            assert_eq!(timeout_value(t), json!(t), "{t}");
        }
    }

    #[test]
    fn an_etag_gives_the_md5_a_proxy_may_have_weakened_or_suffixed() {
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        for tag in [
            format!("\"{md5}\""),
            format!("W/\"{md5}\""),
            format!("\"{md5}-gzip\""),
            format!(" \"{}\" ", md5.to_uppercase()),
        ] {
            assert_eq!(md5_of_etag(&tag).as_deref(), Some(md5), "{tag}");
        }
        for tag in [
            md5.to_string(),
            format!("\"{}\"", &md5[..31]),
            format!("\"{md5}x\""),
            format!("\"{}g\"", &md5[..31]),
            "\"\"".into(),
            "\"é\"".into(),
            "W/".into(),
        ] {
            assert_eq!(md5_of_etag(&tag), None, "{tag}");
        }
    }
}
