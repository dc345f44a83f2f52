//! The client commands: talk to a server over its HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use serde_json::{json, Value};

use super::answer::{self, read_capped, shown_text};
use super::exit::{self, Failure};
use super::follow::{self, LogTail};
use super::output::{self, Format};
use super::sse;

/// Where the server is, how to authenticate, and how to print: flattened into every client
/// command.
#[derive(Debug, Args, Clone)]
pub struct ServerArg {
    /// Base URL of the runyard server. Its value from the environment is not shown in `--help`
    /// (a URL may hold a password: `http://user:pw@host`).
    #[arg(
        long,
        env = "RUNYARD_SERVER",
        hide_env_values = true,
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token or JWT, sent as `Authorization: Bearer` on every request. Prefer the
    /// environment variable: a command line is readable by every user of the host (`ps`).
    #[arg(long, env = "RUNYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `text` for people, `json` for programs (one JSON document; JSON lines for `logs`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
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
    /// The base URL's path (no trailing `/`): what precedes the API's paths in a request.
    base_path: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.shown).finish() // never the token
    }
}

/// The base URL requests go to. A request carries one `Authorization`: with a token, that is
/// `Bearer` and the URL's `user:password@` is not sent (reqwest would send it as `Basic` beside
/// it, and a server or proxy reading either could take the wrong one); a warning says so. Without
/// a token, the URL's user and password go as `Basic` (for a proxy in front of runyard).
fn sent_base(base: &str, url: &reqwest::Url, token: bool) -> String {
    if !token || (url.username().is_empty() && url.password().is_none()) {
        return base.trim_end_matches('/').to_string();
    }
    eprintln!(
        "warning: the user and password in --server / RUNYARD_SERVER are not sent: the token \
         (--token / RUNYARD_TOKEN) is the one Authorization"
    );
    let mut bare = url.clone();
    let _ = bare.set_password(None);
    let _ = bare.set_username("");
    bare.as_str().trim_end_matches('/').to_string()
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
        let url = reqwest::Url::parse(base).map_err(|e| {
            Failure::usage(format!("--server `{}` is not a URL: {e}", shown_text(base)))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::usage(format!(
                "--server `{}`: only http:// and https:// URLs",
                shown_text(base)
            )));
        }
        let shown = shown_text(base);
        // The API's paths are appended to it: a query or fragment would swallow them.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Failure::usage(format!(
                "--server `{shown}`: a base URL without `?query` or `#fragment` (the API's paths \
                 are appended to it)"
            )));
        }
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if token.is_some() && token_on_command_line(std::env::args_os()) {
            eprintln!(
                "warning: --token on the command line can be read by every user of this host \
                 (`ps`, /proc): set RUNYARD_TOKEN instead"
            );
        }
        if let Some(t) = token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(Failure::usage(
                    "--token / RUNYARD_TOKEN holds characters a header cannot carry",
                ));
            }
        }
        // No redirect is followed: a 301/302 would send a POST again as a GET (reading where it
        // was to write), and runyard's API redirects nothing; a 3xx is an error naming its
        // Location (`send`).
        Ok(Self {
            base: sent_base(base, &url, token.is_some()),
            shown,
            base_path: url.path().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build()?,
            stream_http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
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

    /// Sends; no answer -> `Failure::Unreachable` (`NotConfirmed` for a request other than a GET
    /// that was sent), 4xx -> `Refused`, 5xx -> `Unavailable`, a redirect -> `Unavailable`
    /// (`not_runyard`) naming its `Location`.
    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let (client, request) = rb.build_split();
        let request = request.map_err(|e| self.unreachable(&e))?;
        let read_only = request.method() == reqwest::Method::GET;
        let r = client.execute(request).await.map_err(|e| {
            // Connected, then no answer: the server may have read the request and acted on it.
            if read_only || e.is_connect() {
                return self.unreachable(&e);
            }
            Failure::NotConfirmed {
                url: self.shown.clone(),
                detail: error_chain(&e),
            }
            .into()
        })?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        if status.is_redirection() {
            let requested = r.url();
            let api_path = requested
                .path()
                .strip_prefix(self.base_path.as_str())
                .unwrap_or(requested.path());
            return Err(Failure::Unavailable {
                status: status.as_u16(),
                code: "not_runyard".into(),
                message: answer::redirect_of(&r, api_path),
            }
            .into());
        }
        let (kind, _) = content_type(&r, "application/json");
        // An error's body is read up to a bound: runyard's is short, an endless page is not
        // read to its end.
        let body: Value = read_capped(r, answer::MAX_OTHER)
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let message = match body["error"]["message"].as_str() {
            // Shown as the CLI's own text is: a value the server echoed raw cannot reorder it.
            Some(m) => answer::clipped(m, 2000),
            None => format!("request failed, and the answer is not runyard's error ({kind})"),
        };
        let status = status.as_u16();
        let code = match body["error"]["code"].as_str() {
            Some(c) => c.to_string(),
            // A proxy's own 413 says the same as runyard's; so does hyper's empty 431.
            None if status == 413 => "too_large".to_string(),
            None if status == 431 => "header_too_large".to_string(),
            // Another server's page at that address: every 404 of runyard's says its code, so
            // runyard was not reached (exit 3, not a refusal). Other 4xx without one stay
            // refusals (4): hyper's own empty 400 and 414, an authenticating proxy's 401.
            None if status == 404 => return Err(self.not_runyard(status, &kind)),
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

    /// The failure for a request that got no answer; one that could not be built (a URL past
    /// 64 KiB: an id, a name too long) is a usage error, its URL not echoed.
    pub fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_builder() {
            return Failure::usage(format!(
                "cannot make the request: {} (is an argument far too long?)",
                clipped_error(e)
            ));
        }
        Failure::Unreachable {
            url: self.shown.clone(),
            detail: error_chain(e),
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

    /// The answer's JSON (`Null` for an answer with no body: a 204). Read up to
    /// [`answer::MAX_JSON`], and an answer that is not JSON only up to [`answer::MAX_OTHER`] (to
    /// tell an empty body from a page): an endless body is not read to its end.
    async fn json(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let r = self.send(rb).await?;
        let (status, (kind, json)) = (r.status().as_u16(), content_type(&r, "application/json"));
        let cap = if json {
            answer::MAX_JSON
        } else {
            answer::MAX_OTHER
        };
        let Some(bytes) = read_capped(r, cap)
            .await
            .map_err(|e| self.unreachable(&e))?
        else {
            return Err(match json {
                true => self.not_runyard(status, &format!("{kind}, over {} MiB", cap >> 20)),
                false => self.not_runyard(status, &kind),
            });
        };
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
            .and_then(answer::md5_of_etag);
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

    /// The server's URL as messages show it (a password masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Opens the Server-Sent Events stream of `channel`, after `last_id` when given.
    pub async fn event_stream(
        &self,
        channel: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<sse::Events> {
        let mut rb = self
            .stream_http
            .get(format!("{}/async/events/sse", self.base))
            .query(&[("channel", channel)])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            // As bytes: an id in UTF-8 goes back as it came (a `&str` header takes ASCII only).
            let id = reqwest::header::HeaderValue::from_bytes(id.as_bytes())?;
            rb = rb.header("last-event-id", id);
        }
        let r = self.send(self.with_auth(rb)).await?;
        let (kind, stream) = content_type(&r, "text/event-stream");
        if !stream {
            return Err(self.not_runyard(r.status().as_u16(), &kind));
        }
        Ok(sse::events(r, last_id))
    }
}

/// An answer's `Content-Type` as messages say it (`no Content-Type` without one), and whether
/// it is `essence` (`application/json`, `text/event-stream`; parameters and case aside).
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

/// `/async/jobs/{id}`: `id` checked to be a job id (a UUID, as the server reads it) before
/// anything is sent (exit 2; a long one is not echoed whole).
pub fn job_path(id: &str) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(Failure::usage(format!(
            "`{}` is not a job id (a UUID)",
            answer::clipped(id, 80)
        )));
    }
    path_of("/async/jobs", &[id])
}

/// An error's text with each of its sources.
fn error_chain(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

/// A builder error's text without its URL, at most a line.
fn clipped_error(e: &reqwest::Error) -> String {
    let mut detail = String::from("invalid request");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    answer::clipped(&detail, 200)
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
            if let Some(note) = tail.take_gap() {
                eprintln!("{note}");
            }
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

/// `--token` (or `--token=...`) is among the process's arguments (before a `--`).
fn token_on_command_line(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.map(|a| a.into_encoded_bytes())
        .take_while(|a| a != b"--")
        .any(|a| a == b"--token" || a.starts_with(b"--token="))
}
