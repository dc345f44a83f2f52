//! `runyard bench`: the project's own load generator.
//!
//! By default it starts its own `runyard serve` as a child process (this very binary) on a fresh
//! temporary data dir and a free port, with two runners made for measuring: a service runner for
//! `bench.noop` (`runyard.noop`) and a local runner for `bench.true` (`/bin/true`). With
//! `--server URL` it targets an existing server instead, which must have runners for those types.
//!
//! Two scenarios per runner:
//! - **burst**: submit N jobs as fast as `--connections` keep-alive clients can, then wait until
//!   every job is terminal. Reports the submit rate, end-to-end jobs/s (N / time from the first
//!   submit to the last `finished_at`) and submit-to-start latency (client clock just before the
//!   request is sent, to the job's `started_at`; same machine, same clock).
//! - **trickle**: submit one job every 1/R seconds (open loop: a slow answer never delays the next
//!   submit) and report submit-to-start latency and the HTTP round trip of a submit.
//!
//! Jobs are read back in pages of `GET /async/jobs?type=...` (cursor paging), never one GET per
//! job. Every loop is bounded by count and by the `--timeout` deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// Which runners to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// The in-process service runner (`bench.noop`).
    Service,
    /// The child-process local runner (`bench.true`).
    Local,
}

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Target this running server instead of starting one (it needs runners for `bench.noop`
    /// and `bench.true`).
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: the server's pid, to report its peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Jobs of the service burst.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Jobs of the local burst.
    #[arg(long, default_value_t = 1_000)]
    pub local_jobs: usize,
    /// Concurrent keep-alive HTTP clients of a burst.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Submits per second of the trickle.
    #[arg(long, default_value_t = 200.0)]
    pub trickle_rate: f64,
    /// Jobs of the trickle (the local trickle uses at most --local-jobs).
    #[arg(long, default_value_t = 2_000)]
    pub trickle_jobs: usize,
    /// Jobs run first and not measured (per runner).
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Concurrency of the `bench.noop` service runner of the started server.
    #[arg(long, default_value_t = 256)]
    pub service_concurrency: usize,
    /// Concurrency of the `bench.true` local runner of the started server.
    #[arg(long, default_value_t = 8)]
    pub local_concurrency: usize,
    /// `store.synchronous` of the started server (`normal` or `full`).
    #[arg(long, default_value = "normal")]
    pub synchronous: String,
    /// Only this runner.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Give up after this long, e.g. `300s` or `10m`.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the results as JSON (the same as `--output json`).
    #[arg(long)]
    pub json: bool,
    /// `json` prints the results as JSON, as `--json` does (the client commands' flag).
    #[arg(long, value_enum, default_value_t = super::output::Format::Text)]
    pub output: super::output::Format,
    /// Keep the started server's temporary data dir (its path is printed).
    #[arg(long)]
    pub keep: bool,
}

/// Submit-to-start or round-trip figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// `burst` or `trickle`.
    pub scenario: String,
    /// `service` or `local`.
    pub runner: String,
    /// The job type.
    pub job_type: String,
    /// Jobs accepted.
    pub jobs: usize,
    /// Submits refused or failed.
    pub submit_errors: usize,
    /// Accepted jobs per second while submitting.
    pub submit_rate: f64,
    /// Jobs per second from the first submit to the last `finished_at`.
    pub e2e_rate: f64,
    /// Seconds from the first submit to the last `finished_at`.
    pub e2e_secs: f64,
    /// Client clock before sending to the job's `started_at`.
    pub submit_to_start: Option<Latency>,
    /// HTTP round trip of a submit.
    pub submit_rtt: Option<Latency>,
    /// Jobs whose final status is not SUCCESS (or that were not found).
    pub not_success: usize,
    /// How many of each status that is not SUCCESS.
    pub not_success_by_status: HashMap<String, usize>,
}

/// Everything `--json` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The server's URL.
    pub server: String,
    /// Whether bench started the server.
    pub child_server: bool,
    /// Backend name from /health.
    pub store: String,
    /// Whether this binary was built with optimisations.
    pub release_build: bool,
    /// The scenarios.
    pub results: Vec<ScenarioResult>,
    /// The server's peak resident set (VmHWM), in KiB.
    pub server_peak_rss_kib: Option<u64>,
}

/// Runs the benchmark.
pub async fn run(mut a: BenchArgs) -> anyhow::Result<ExitCode> {
    a.json |= a.output.json();
    if a.connections == 0 || a.connections > 4096 {
        bail!("--connections must be between 1 and 4096");
    }
    if !(a.trickle_rate.is_finite() && a.trickle_rate > 0.0 && a.trickle_rate <= 100_000.0) {
        bail!("--trickle-rate must be between 0 and 100000 jobs/s");
    }
    if !matches!(a.synchronous.as_str(), "normal" | "full") {
        bail!("--synchronous must be `normal` or `full`");
    }
    let deadline = Instant::now() + a.timeout;
    let mut child = match &a.server {
        Some(_) => None,
        None => Some(ChildServer::start(&a).await?),
    };
    let base = match (&a.server, &child) {
        (Some(s), _) => s.trim_end_matches('/').to_string(),
        (None, Some(c)) => c.url.clone(),
        (None, None) => unreachable!("a child server was started"),
    };
    let ctx = Ctx {
        base: base.clone(),
        deadline,
        connections: a.connections,
        http: client(64)?,
        quiet: a.json,
    };
    let store = match &mut child {
        Some(c) => wait_healthy(&ctx, Some(c)).await,
        None => wait_healthy(&ctx, None).await,
    };
    let outcome = match store {
        Ok(store) => {
            if !a.json {
                print_header(&a, &base, &store, child.as_ref());
            }
            // The deadline is checked inside every loop; this outer bound is a safety net.
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
            tokio::select! {
                r = tokio::time::timeout(left, scenarios(&a, &ctx)) => match r {
                    Ok(r) => r.map(|res| (store, res)),
                    Err(_) => Err(anyhow!("timed out after {:?}", a.timeout)),
                },
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        }
        Err(e) => Err(e),
    };
    let pid = child.as_ref().map(|c| c.pid).or(a.server_pid);
    let rss = pid.and_then(peak_rss_kib);
    if let Some(c) = child {
        c.stop(a.keep, outcome.is_err()).await;
    }
    let (store, results) = outcome?;
    let failed: usize = results
        .iter()
        .map(|r| r.not_success + r.submit_errors)
        .sum();
    let report = BenchReport {
        server: base,
        child_server: a.server.is_none(),
        store,
        release_build: !cfg!(debug_assertions),
        results,
        server_peak_rss_kib: rss,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if failed > 0 {
        eprintln!("error: {failed} jobs did not succeed or were not accepted");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

const SERVICE_TYPE: &str = "bench.noop";
const LOCAL_TYPE: &str = "bench.true";

async fn scenarios(a: &BenchArgs, ctx: &Ctx) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut out = Vec::new();
    let plan: &[(Only, &str, usize, usize)] = &[
        (Only::Service, SERVICE_TYPE, a.jobs, a.trickle_jobs),
        (
            Only::Local,
            LOCAL_TYPE,
            a.local_jobs,
            a.trickle_jobs.min(a.local_jobs),
        ),
    ];
    for &(runner, job_type, burst_n, trickle_n) in plan {
        if a.only.is_some_and(|o| o != runner) {
            continue;
        }
        let name = match runner {
            Only::Service => "service",
            Only::Local => "local",
        };
        if a.warmup > 0 {
            ctx.say(&format!("{name}: warm-up ({} jobs)", a.warmup));
            let _ = burst(ctx, name, job_type, a.warmup).await?;
        }
        if burst_n > 0 {
            ctx.say(&format!(
                "{name}: burst of {burst_n} jobs over {} connections",
                ctx.connections
            ));
            let r = burst(ctx, name, job_type, burst_n).await?;
            ctx.say(&format!("  {}", one_line(&r)));
            out.push(r);
        }
        if trickle_n > 0 {
            ctx.say(&format!(
                "{name}: trickle of {trickle_n} jobs at {} jobs/s",
                a.trickle_rate
            ));
            let r = trickle(ctx, name, job_type, trickle_n, a.trickle_rate).await?;
            ctx.say(&format!("  {}", one_line(&r)));
            out.push(r);
        }
    }
    Ok(out)
}

/// What the scenarios share.
struct Ctx {
    base: String,
    deadline: Instant,
    connections: usize,
    /// For health checks, polling and listing.
    http: reqwest::Client,
    quiet: bool,
}

impl Ctx {
    fn say(&self, s: &str) {
        if !self.quiet {
            eprintln!("{s}");
        }
    }

    fn check_deadline(&self) -> anyhow::Result<()> {
        if Instant::now() >= self.deadline {
            bail!("the benchmark ran out of time (--timeout)");
        }
        Ok(())
    }
}

fn client(pool: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()?)
}

/// Microseconds since the epoch on this machine's clock.
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn parse_us(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_micros() as i64)
}

/// One accepted submit.
struct Sent {
    id: String,
    /// Client clock just before the request was sent.
    at_us: i64,
    rtt: Duration,
}

#[derive(Deserialize)]
struct Accepted {
    job_id: String,
}

async fn submit_one(http: &reqwest::Client, url: &str, body: &'static str) -> anyhow::Result<Sent> {
    let at_us = wall_us();
    let t0 = Instant::now();
    let r = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let bytes = r.bytes().await?;
    let rtt = t0.elapsed();
    if status != reqwest::StatusCode::ACCEPTED {
        bail!(
            "submit answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes)
        );
    }
    let a: Accepted = serde_json::from_slice(&bytes).context("submit answer")?;
    Ok(Sent {
        id: a.job_id,
        at_us,
        rtt,
    })
}

fn body_for(job_type: &str) -> &'static str {
    match job_type {
        SERVICE_TYPE => r#"{"type":"bench.noop"}"#,
        _ => r#"{"type":"bench.true"}"#,
    }
}

/// Submits `n` jobs with `ctx.connections` clients, waits for all of them, and measures.
async fn burst(
    ctx: &Ctx,
    runner: &str,
    job_type: &str,
    n: usize,
) -> anyhow::Result<ScenarioResult> {
    let url = format!("{}/async/jobs", ctx.base);
    let body = body_for(job_type);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..ctx.connections.min(n.max(1)) {
        // One client per task: each keeps its own keep-alive connection.
        let http = client(1)?;
        let next = next.clone();
        let url = url.clone();
        let deadline = ctx.deadline;
        set.spawn(async move {
            let mut sent = Vec::with_capacity(n / 8 + 1);
            let mut errors = 0usize;
            let mut last_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline || errors >= 100 {
                    break;
                }
                match submit_one(&http, &url, body).await {
                    Ok(s) => sent.push(s),
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{e:#}"));
                    }
                }
            }
            (sent, errors, last_error)
        });
    }
    let mut sent = Vec::with_capacity(n);
    let mut errors = 0;
    let mut last_error = None;
    while let Some(r) = set.join_next().await {
        let (s, e, le) = r.context("submit task")?;
        sent.extend(s);
        errors += e;
        if le.is_some() {
            last_error = le;
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    if let Some(e) = &last_error {
        ctx.say(&format!("  {errors} submits failed; last error: {e}"));
    }
    ctx.check_deadline()?;
    let rtt = latency(sent.iter().map(|s| s.rtt.as_micros() as i64));
    let mut r = finish_scenario(ctx, "burst", runner, job_type, sent, errors).await?;
    r.submit_rate = r.jobs as f64 / submit_secs.max(1e-9);
    r.submit_rtt = rtt;
    Ok(r)
}

/// Submits `n` jobs at `rate` per second (open loop), waits for all of them, and measures.
async fn trickle(
    ctx: &Ctx,
    runner: &str,
    job_type: &str,
    n: usize,
    rate: f64,
) -> anyhow::Result<ScenarioResult> {
    let url = Arc::new(format!("{}/async/jobs", ctx.base));
    let body = body_for(job_type);
    let http = client(64)?;
    // Open the connection first, so the first sample is not a TCP handshake.
    let _ = http.get(format!("{}/health", ctx.base)).send().await;
    let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut set = JoinSet::new();
    let mut sent = Vec::with_capacity(n);
    let mut errors = 0usize;
    let mut last_error = None;
    let mut take = |r: Result<anyhow::Result<Sent>, tokio::task::JoinError>| match r {
        Ok(Ok(s)) => sent.push(s),
        Ok(Err(e)) => {
            errors += 1;
            last_error = Some(format!("{e:#}"));
        }
        Err(e) => {
            errors += 1;
            last_error = Some(e.to_string());
        }
    };
    let started = Instant::now();
    for _ in 0..n {
        iv.tick().await;
        if Instant::now() >= ctx.deadline {
            break;
        }
        let http = http.clone();
        let url = url.clone();
        set.spawn(async move { submit_one(&http, &url, body).await });
        while let Some(r) = set.try_join_next() {
            take(r);
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    while let Some(r) = set.join_next().await {
        take(r);
    }
    if let Some(e) = &last_error {
        ctx.say(&format!("  {errors} submits failed; last error: {e}"));
    }
    ctx.check_deadline()?;
    let rtt = latency(sent.iter().map(|s| s.rtt.as_micros() as i64));
    let mut r = finish_scenario(ctx, "trickle", runner, job_type, sent, errors).await?;
    r.submit_rate = r.jobs as f64 / submit_secs.max(1e-9);
    r.submit_rtt = rtt;
    Ok(r)
}

/// A job as read back from the list endpoint.
#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    status: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Page {
    jobs: Vec<Row>,
    next_cursor: Option<String>,
}

const TERMINAL: &[&str] = &["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"];
const ACTIVE: &[&str] = &["SCHEDULED", "WAITING", "QUEUED", "STARTING", "RUNNING"];

/// Waits until every sent job is terminal, reads them back and computes the figures.
async fn finish_scenario(
    ctx: &Ctx,
    scenario: &str,
    runner: &str,
    job_type: &str,
    sent: Vec<Sent>,
    submit_errors: usize,
) -> anyhow::Result<ScenarioResult> {
    let mut result = ScenarioResult {
        scenario: scenario.into(),
        runner: runner.into(),
        job_type: job_type.into(),
        jobs: sent.len(),
        submit_errors,
        submit_rate: 0.0,
        e2e_rate: 0.0,
        e2e_secs: 0.0,
        submit_to_start: None,
        submit_rtt: None,
        not_success: 0,
        not_success_by_status: HashMap::new(),
    };
    if sent.is_empty() {
        return Ok(result);
    }
    let min_id = sent
        .iter()
        .map(|s| s.id.as_str())
        .min()
        .unwrap_or("")
        .to_string();
    let rows = loop {
        wait_quiet(ctx, job_type, &min_id).await?;
        let rows = collect(ctx, job_type, &sent, &min_id).await?;
        let done = rows.len() == sent.len()
            && rows.values().all(|r| TERMINAL.contains(&r.status.as_str()));
        if done {
            break rows;
        }
        // A job changed status between our probes (e.g. a retry went back to SCHEDULED).
        ctx.check_deadline()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first_submit = sent.iter().map(|s| s.at_us).min().unwrap_or(0);
    let mut last_finish = first_submit;
    let mut s2s = Vec::with_capacity(sent.len());
    for s in &sent {
        let Some(row) = rows.get(&s.id) else {
            result.not_success += 1;
            *result
                .not_success_by_status
                .entry("MISSING".into())
                .or_default() += 1;
            continue;
        };
        if row.status != "SUCCESS" {
            result.not_success += 1;
            *result
                .not_success_by_status
                .entry(row.status.clone())
                .or_default() += 1;
        }
        if let Some(f) = row.finished_at.as_deref().and_then(parse_us) {
            last_finish = last_finish.max(f);
        }
        if let Some(st) = row.started_at.as_deref().and_then(parse_us) {
            s2s.push(st - s.at_us);
        }
    }
    let secs = (last_finish - first_submit) as f64 / 1e6;
    result.e2e_secs = secs;
    result.e2e_rate = sent.len() as f64 / secs.max(1e-9);
    result.submit_to_start = latency(s2s.into_iter());
    Ok(result)
}

/// Waits until no job of `job_type` newer than `min_id` is in an active status, probing the
/// newest job of each active status (cheap: one indexed row per probe).
async fn wait_quiet(ctx: &Ctx, job_type: &str, min_id: &str) -> anyhow::Result<()> {
    loop {
        ctx.check_deadline()?;
        let mut busy = false;
        for st in ACTIVE {
            let q = format!(
                "{}/async/jobs?type={job_type}&status={st}&limit=1",
                ctx.base
            );
            let page: Page = get_json(&ctx.http, &q).await?;
            if page.jobs.first().is_some_and(|j| j.id.as_str() >= min_id) {
                busy = true;
                break;
            }
        }
        if !busy {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads back the sent jobs, newest first, in pages of 1000; stops once all are found or the
/// pages reach jobs older than the oldest sent.
async fn collect(
    ctx: &Ctx,
    job_type: &str,
    sent: &[Sent],
    min_id: &str,
) -> anyhow::Result<HashMap<String, Row>> {
    let wanted: std::collections::HashSet<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    let mut found = HashMap::with_capacity(sent.len());
    let mut cursor: Option<String> = None;
    // Bounded: our jobs fill at most len/1000 pages; others of the same type may be interleaved.
    for _ in 0..(sent.len() / 1000 + 1000) {
        ctx.check_deadline()?;
        let mut q = format!("{}/async/jobs?type={job_type}&limit=1000", ctx.base);
        if let Some(c) = &cursor {
            q.push_str("&cursor=");
            q.push_str(c);
        }
        let page: Page = get_json(&ctx.http, &q).await?;
        let mut older = false;
        for row in page.jobs {
            if row.id.as_str() < min_id {
                older = true;
            }
            if wanted.contains(row.id.as_str()) {
                found.insert(row.id.clone(), row);
            }
        }
        if found.len() == wanted.len() || older {
            break;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(found)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes)
        );
    }
    serde_json::from_slice(&bytes).with_context(|| format!("GET {url}: unexpected answer"))
}

/// Percentiles of samples in microseconds (negative values, from clock jitter, count as 0).
fn latency(samples: impl Iterator<Item = i64>) -> Option<Latency> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for v in samples {
        h.saturating_record(v.max(1) as u64);
    }
    if h.is_empty() {
        return None;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Some(Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    })
}

/// Peak resident set of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits for `GET /health`; returns the backend name.
async fn wait_healthy(ctx: &Ctx, mut child: Option<&mut ChildServer>) -> anyhow::Result<String> {
    let url = format!("{}/health", ctx.base);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = child.as_deref_mut() {
            if let Some(st) = c.child.try_wait()? {
                bail!(
                    "the server exited ({st}) before it was healthy; its log:\n{}",
                    c.log_tail()
                );
            }
        }
        if let Ok(r) = ctx.http.get(&url).send().await {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                return Ok(v["store"].as_str().unwrap_or("unknown").to_string());
            }
        }
        if Instant::now() >= until || Instant::now() >= ctx.deadline {
            bail!("{url} did not answer in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `runyard serve` started by bench.
struct ChildServer {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    dir: PathBuf,
}

impl ChildServer {
    async fn start(a: &BenchArgs) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "runyard-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = free_port()?;
        let config = dir.join("runyard.toml");
        std::fs::write(&config, child_config(a, &dir.join("data")))?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let exe = std::env::current_exe().context("cannot find the runyard binary")?;
        let mut cmd = tokio::process::Command::new(exe);
        #[cfg(target_os = "linux")]
        // Safety: only an async-signal-safe syscall between fork and exec. If bench itself is
        // killed, its server goes too.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "RUNYARD_LOG",
                std::env::var("RUNYARD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Any early return (error, panic) must not leave a server behind.
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `runyard serve`")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        Ok(Self {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then waits (bounded); SIGKILL when it does not stop.
    async fn stop(mut self, keep: bool, failed: bool) {
        // Safety: a plain syscall on our own child's pid (not yet reaped, so not reused).
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(st)) if !st.success() => {
                eprintln!("warning: the server exited with {st}");
            }
            Ok(_) => {}
            Err(_) => {
                eprintln!("warning: the server did not stop within 15s of SIGTERM: killing it");
                let _ = self.child.kill().await;
            }
        }
        if keep || failed {
            eprintln!(
                "server data and log kept in {}{}",
                self.dir.display(),
                if failed { "" } else { " (--keep)" }
            );
            if failed {
                eprintln!("last lines of the server log:\n{}", self.log_tail());
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn child_config(a: &BenchArgs, data: &Path) -> String {
    format!(
        r#"# Written by `runyard bench`.
data_dir = {data}

[worker]
shutdown_grace = "5s"

[store]
synchronous = {sync}

[[runners]]
name = "bench-service"
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = {sc}
max_attempts = 1

[[runners]]
name = "bench-local"
kind = "local"
types = ["bench.true"]
command = ["/bin/true"]
concurrency = {lc}
max_attempts = 1
"#,
        data = toml_str(&data.to_string_lossy()),
        sync = toml_str(&a.synchronous),
        sc = a.service_concurrency.max(1),
        lc = a.local_concurrency.max(1),
    )
}

fn print_header(a: &BenchArgs, base: &str, store: &str, child: Option<&ChildServer>) {
    let who = match child {
        Some(c) => format!(
            "child server pid {} (service concurrency {}, local concurrency {}, synchronous {})",
            c.pid, a.service_concurrency, a.local_concurrency, a.synchronous
        ),
        None => "existing server".to_string(),
    };
    eprintln!("runyard bench: {base}, {store} store, {who}");
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; measure with `cargo build --release`");
    }
}

fn fmt_lat(l: &Option<Latency>) -> [String; 4] {
    match l {
        Some(l) => [l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms].map(|v| format!("{v:.2}")),
        None => std::array::from_fn(|_| "-".to_string()),
    }
}

fn one_line(r: &ScenarioResult) -> String {
    let s = fmt_lat(&r.submit_to_start);
    format!(
        "{} jobs, submit {:.0}/s, end-to-end {:.0} jobs/s, submit->start p50 {} p99 {} ms, not SUCCESS {}",
        r.jobs, r.submit_rate, r.e2e_rate, s[0], s[2], r.not_success
    )
}

fn print_table(r: &BenchReport) {
    println!();
    println!(
        "{:<16} {:>6} {:>10} {:>10} | {:^37} | {:^15} | {:>7}",
        "", "", "", "", "submit -> start (ms)", "submit RTT (ms)", "not"
    );
    println!(
        "{:<16} {:>6} {:>10} {:>10} | {:>8} {:>8} {:>9} {:>9} | {:>7} {:>7} | {:>7}",
        "scenario",
        "jobs",
        "submit/s",
        "e2e jobs/s",
        "p50",
        "p90",
        "p99",
        "max",
        "p50",
        "p99",
        "SUCCESS"
    );
    println!("{}", "-".repeat(114));
    for s in &r.results {
        let l = fmt_lat(&s.submit_to_start);
        let t = fmt_lat(&s.submit_rtt);
        println!(
            "{:<16} {:>6} {:>10.0} {:>10.0} | {:>8} {:>8} {:>9} {:>9} | {:>7} {:>7} | {:>7}",
            format!("{} {}", s.runner, s.scenario),
            s.jobs,
            s.submit_rate,
            s.e2e_rate,
            l[0],
            l[1],
            l[2],
            l[3],
            t[0],
            t[2],
            s.not_success + s.submit_errors,
        );
        if !s.not_success_by_status.is_empty() {
            let mut v: Vec<_> = s.not_success_by_status.iter().collect();
            v.sort();
            println!("{:<16} not SUCCESS: {v:?}", "");
        }
    }
    println!();
    println!(
        "e2e jobs/s = jobs / (first submit -> last finished_at); submit/s = accepted jobs / submit phase."
    );
    match r.server_peak_rss_kib {
        Some(k) => println!("server peak RSS (VmHWM): {:.1} MiB", k as f64 / 1024.0),
        None => println!("server peak RSS: unknown (pass --server-pid with --server)"),
    }
    println!(
        "store: {}; build: {}",
        r.store,
        if r.release_build { "release" } else { "debug" }
    );
}
