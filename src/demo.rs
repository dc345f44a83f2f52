//! `runyard serve --demo`: the first thing a newcomer runs. Adds demo runners to whatever is
//! configured (a shell job, a Python job that reports through the signed hook with nothing but
//! the standard library, an async Rust function and runyard's built-in `runyard.*` functions),
//! uses a fresh temporary data dir unless `--data-dir` is given, runs one job of each demo type
//! and prints how they ended, then keeps serving for the CLI.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{Config, RunnerConfig};
use crate::server::ServerBuilder;

/// The demo runners (TOML).
const RUNNERS: &str = r#"
[[runners]]
name = "demo-shell"
kind = "local"
types = ["demo.shell"]
command = ["/bin/sh", "-c", "echo \"hello from a child process: job $JOB_ID, attempt $JOB_ATTEMPT\"; echo \"args: $JOB_ARGS\"; echo bye"]
timeout = "1m"

[[runners]]
name = "demo-python"
kind = "local"
types = ["demo.python"]
command = ["python3", "-c", '''
# A job in Python with the standard library only: it reports through the signed hook.
import hashlib, hmac, json, os, time, urllib.request
def report(body):
    data = json.dumps(body).encode()
    path = "/" + os.environ["JOB_HOOK"].split("/", 3)[3] + "/status"
    ts = str(int(time.time() * 1000))
    msg = "\n".join([ts, "POST", path, hashlib.sha256(data).hexdigest()])
    sig = hmac.new(os.environ["JOB_SECRET_KEY"].encode(), msg.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(os.environ["JOB_HOOK"] + "/status", data=data, method="POST", headers={
        "Content-Type": "application/json", "X-Job-Id": os.environ["JOB_ID"], "X-Job-Time": ts,
        "X-Job-Hash": sig, "X-Job-Signature": "v2"})
    urllib.request.urlopen(req, timeout=10).read()
args = json.loads(os.environ.get("JOB_ARGS") or "{}") or {}
report({"status": "RUNNING", "progress": 0.5, "logs": ["python says hello"]})
words = len(str(args.get("text", "the quick brown fox")).split())
print(f"counted {words} words", flush=True)
report({"status": "SUCCESS", "results": {"words": words}})
''']
timeout = "1m"

[[runners]]
name = "demo-service"
kind = "service"
types = ["demo.greet", "runyard.*"]
concurrency = 16
"#;

/// The demo runners.
pub fn runners() -> Vec<RunnerConfig> {
    Config::from_toml(RUNNERS)
        .map(|c| c.runners)
        .unwrap_or_default()
}

/// The names of the demo's service functions.
pub const SERVICES: &[&str] = &["demo.greet"];

/// Adds the demo runners to `config`.
pub fn configure(config: &mut Config) {
    config.runners.extend(runners());
}

/// A fresh data dir for the demo under the system's temporary directory.
pub fn temp_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "runyard-demo-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    ))
}

/// Registers the demo's service functions.
pub fn register(b: ServerBuilder) -> ServerBuilder {
    b.service("demo.greet", |ctx| async move {
        let name = ctx.args["name"].as_str().unwrap_or("world").to_string();
        for i in 1..=4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ctx.progress(i as f64 / 4.0, Some(json!({"step": i})));
            ctx.log(format!("step {i} of 4"));
        }
        Ok(json!({ "greeting": format!("hello, {name}!") }))
    })
}

/// Submits one job of `job_type` with `args` to `base` and waits (at most a minute) until it
/// ended: its id, the job as `GET /async/jobs/{id}` shows it, and its log. `token`, when given,
/// goes as `Authorization: Bearer`. A refused request is an error naming the status and why.
pub async fn run_one(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    job_type: &str,
    args: Value,
) -> anyhow::Result<(String, Value, Value)> {
    let call = |rb: reqwest::RequestBuilder| async move {
        let rb = match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let r = rb.send().await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED && token.is_none() {
                " (auth is on: set RUNYARD_TOKEN to a token that may submit and read jobs)"
            } else {
                ""
            };
            anyhow::bail!("the server answered {status}: {why}{hint}");
        }
        anyhow::Ok(body)
    };
    let body = json!({"type": job_type, "args": args});
    let accepted = call(http.post(format!("{base}/async/jobs")).json(&body)).await?;
    let id = accepted["job_id"].as_str().unwrap_or_default().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = call(http.get(format!("{base}/async/jobs/{id}"))).await?;
        let done = matches!(
            job["status"].as_str(),
            Some("SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
        );
        if done || tokio::time::Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = call(http.get(format!("{base}/async/jobs/{id}/logs"))).await?;
    Ok((id, job, logs))
}

/// Submits one job of each demo type to `base` and prints how each ended, with its log. With
/// `[auth]` on, the jobs go with the token in `RUNYARD_TOKEN` (as the CLI's commands send it).
pub async fn run_jobs(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = std::env::var("RUNYARD_TOKEN").ok();
    let token = token.as_deref().map(str::trim).filter(|t| !t.is_empty());
    for (ty, args) in [
        ("demo.shell", json!({"report": "daily"})),
        ("demo.python", json!({"text": "one build to a first job"})),
        ("demo.greet", json!({"name": "newcomer"})),
    ] {
        let (id, job, logs) = run_one(&http, base, token, ty, args)
            .await
            .map_err(|e| anyhow::anyhow!("demo job {ty}: {e}"))?;
        println!(
            "demo job {ty} {id}: {}  result: {}",
            job["status"].as_str().unwrap_or("?"),
            job["result"]
        );
        for l in logs["lines"].as_array().into_iter().flatten() {
            let line = l["line"].as_str().unwrap_or_default();
            println!("    | {}", crate::logging::visible(line));
        }
        if job["status"] != "SUCCESS" {
            println!("    error: {}", job["error"]);
        }
    }
    // The client commands default to http://127.0.0.1:7070: name the server when it is not that.
    let server = if base.trim_end_matches('/') == "http://127.0.0.1:7070" {
        String::new()
    } else {
        format!(" --server {base}")
    };
    println!(
        "\nrunyard is serving on {base} with the demo runners (demo.shell, demo.python, demo.greet, runyard.*).\n\
         Try, from another terminal:\n  runyard submit demo.greet --args '{{\"name\":\"you\"}}' --wait{server}\n  \
         runyard jobs{server}\n(with `cargo run --release --` in place of `runyard` if it is not installed). ctrl-c stops it."
    );
    Ok(())
}
