//! The client commands: talk to a server over its HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

/// Where the server is.
#[derive(Debug, Args, Clone)]
pub struct ServerArg {
    /// Base URL of the runyard server.
    #[arg(long, env = "RUNYARD_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
}

/// `submit` flags.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job type.
    pub job_type: String,
    /// Arguments as a JSON object.
    #[arg(long)]
    pub args: Option<String>,
    /// Follow the job until it ends; print the final job; exit 0 only on SUCCESS.
    #[arg(long)]
    pub wait: bool,
    /// Per-attempt time limit, e.g. 30s.
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
    #[command(flatten)]
    pub server: ServerArg,
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

/// `jobs` flags.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this type (glob).
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// How many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A small HTTP client for the API.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    async fn handle(&self, r: reqwest::Response) -> anyhow::Result<Value> {
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        let code = body["error"]["code"].as_str().unwrap_or("");
        Err(anyhow!("{msg} ({code}, HTTP {})", status.as_u16()))
    }

    /// GET a path (with query).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.handle(r).await
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        self.handle(r).await
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `runyard submit`.
pub async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    let mut body = json!({ "type": a.job_type });
    if let Some(s) = &a.args {
        body["args"] = serde_json::from_str(s).context("--args must be a JSON object")?;
    }
    for (k, v) in [
        ("timeout", a.timeout.map(Value::from)),
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
    let r = api.post("/async/jobs", &body).await?;
    let id = r["job_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no job_id in the answer"))?
        .to_string();
    if !a.wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{id}");
    let channel = r["channel_id"].as_str().unwrap_or(&id).to_string();
    let job = wait_for(&api, &id, &channel).await?;
    print(&job);
    Ok(if job["status"] == "SUCCESS" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Follows the job's channel (long polling) until the job is terminal; returns the job.
pub async fn wait_for(api: &Api, id: &str, channel: &str) -> anyhow::Result<Value> {
    let mut last = String::new();
    loop {
        let q = format!("/api/v1/async_event/?channel={channel}&last_id={last}&wait_ms=20000");
        let page = api.get(&q).await?;
        let events = page["result"].as_array().cloned().unwrap_or_default();
        let mut done = false;
        for ev in &events {
            if let Some(i) = ev["id"].as_str() {
                last = i.to_string();
            }
            if ev["job_id"] != id && ev["type"] != "resync" {
                continue;
            }
            match ev["type"].as_str() {
                Some("progress") => eprintln!(
                    "progress {:.0}%",
                    ev["progress"].as_f64().unwrap_or(0.0) * 100.0
                ),
                Some("resync") => done = true, // events were trimmed: look at the job itself
                _ => {
                    let st = ev["runyard_status"].as_str().unwrap_or("");
                    eprintln!("{st}");
                    done |= matches!(st, "SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED");
                }
            }
        }
        if done {
            let job = api.get(&format!("/async/jobs/{id}")).await?;
            if matches!(
                job["status"].as_str(),
                Some("SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
            ) {
                return Ok(job);
            }
        }
    }
}

/// `runyard status`.
pub async fn status(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    print(&api.get(&format!("/async/jobs/{}", a.id)).await?);
    Ok(ExitCode::SUCCESS)
}

/// `runyard cancel`.
pub async fn cancel(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    let j = api
        .post(&format!("/async/jobs/{}/cancel", a.id), &json!({}))
        .await?;
    println!("{}", j["status"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

/// `runyard retry`.
pub async fn retry(a: IdArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    let j = api
        .post(&format!("/async/jobs/{}/retry", a.id), &json!({}))
        .await?;
    println!("{}", j["status"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

/// `runyard logs`.
pub async fn logs(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    let mut after = 0u64;
    loop {
        let page = api
            .get(&format!("/async/jobs/{}/logs?after={after}", a.id))
            .await?;
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            println!("{}", l["line"].as_str().unwrap_or(""));
        }
        after = page["next"].as_u64().unwrap_or(after);
        let terminal = matches!(
            page["status"].as_str(),
            Some("SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
        );
        if !a.follow || (terminal && lines.is_empty()) {
            return Ok(ExitCode::SUCCESS);
        }
        if lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// `runyard jobs`.
pub async fn jobs(a: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&a.server.server)?;
    let mut q = format!("/async/jobs?limit={}", a.limit);
    if let Some(s) = &a.status {
        q.push_str(&format!("&status={s}"));
    }
    if let Some(t) = &a.job_type {
        q.push_str(&format!("&type={t}"));
    }
    let page = api.get(&q).await?;
    for j in page["jobs"].as_array().cloned().unwrap_or_default() {
        println!(
            "{}  {:<9}  {:<24}  {}",
            j["id"].as_str().unwrap_or(""),
            j["status"].as_str().unwrap_or(""),
            j["type"].as_str().unwrap_or(""),
            j["created_at"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
