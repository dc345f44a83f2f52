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
//!   With `--batch-size N` (N > 1) each request of a burst is one `POST /async/jobs/batch` of
//!   N jobs; every job of a request has the request's send time and round trip.
//! - **trickle**: submit one job every 1/R seconds (open loop: a slow answer never delays the next
//!   submit) and report submit-to-start latency and the HTTP round trip of a submit.
//!
//! With `--http-ceiling` it measures the machine's bare HTTP round trip instead (`ceiling.rs`).
//!
//! Jobs are read back in pages of `GET /async/jobs?type=...` (cursor paging), never one GET per
//! job. Every loop is bounded by count and by the `--timeout` deadline.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

mod batch;
mod ceiling;
mod child;
mod collect;
mod load;
mod report;

pub use ceiling::serve_bare;
use child::{peak_rss_kib, wait_healthy, ChildServer};
use load::{burst, trickle};
use report::{one_line, print_header, print_table};

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
    /// Jobs per submit request of a burst: above 1, each request is one
    /// `POST /async/jobs/batch` of this many jobs (at most 1000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
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
    /// Measure the machine's HTTP ceiling instead: a bare server (hyper alone: no store, no
    /// layers, no worker) answering each submit `202`, driven by the burst's own client with
    /// `--connections` and `--jobs` requests.
    #[arg(long, conflicts_with_all = [
        "server", "server_pid", "only", "batch_size", "local_jobs", "trickle_rate",
        "trickle_jobs", "service_concurrency", "local_concurrency", "synchronous", "keep",
    ])]
    pub http_ceiling: bool,
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
    check_args(&a)?;
    if a.http_ceiling {
        return ceiling::run(&a).await;
    }
    let deadline = Instant::now() + a.timeout;
    // Before the server starts: a stop signal from then on removes its data dir.
    let mut signals = super::stop::StopSignals::new();
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
        batch_size: usize::from(a.batch_size),
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
            measure(&a, &ctx, &mut signals)
                .await
                .map(|r| r.map(|res| (store, res)))
        }
        Err(e) => Ok(Err(e)),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(interrupted) => return Ok(interrupt(interrupted, child, a.keep, &mut signals).await),
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

/// The scenarios' results, or the stop signal (its name and number) that came first.
async fn measure(
    a: &BenchArgs,
    ctx: &Ctx,
    signals: &mut super::stop::StopSignals,
) -> Result<anyhow::Result<Vec<ScenarioResult>>, (&'static str, i32)> {
    // The deadline is checked inside every loop; this outer bound is a safety net.
    let left = ctx.deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
    tokio::select! {
        r = tokio::time::timeout(left, scenarios(a, ctx)) => Ok(match r {
            Ok(r) => r,
            Err(_) => Err(anyhow!("timed out after {:?}", a.timeout)),
        }),
        s = signals.recv() => Err(s),
    }
}

/// A run stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP: not a failure to debug, so the server's
/// data dir is removed (unless `--keep`) and the exit code is 128 + the signal's number, as
/// `backup`'s. It kept the dir and exited 1, as a failed run (probe s54b F10). A second signal
/// stops at once (the server killed as the child is dropped, its dir removed).
async fn interrupt(
    (name, number): (&str, i32),
    child: Option<ChildServer>,
    keep: bool,
    signals: &mut super::stop::StopSignals,
) -> ExitCode {
    let code = ExitCode::from(u8::try_from(128 + number).unwrap_or(1));
    let Some(c) = child else {
        eprintln!("{name}: bench stopped");
        return code;
    };
    eprintln!("{name}: bench stops its server (a second signal: at once)");
    let dir = c.dir.clone();
    tokio::select! {
        () = c.stop(keep, false) => code,
        (_, n) = signals.recv() => {
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            ExitCode::from(u8::try_from(128 + n).unwrap_or(1))
        }
    }
}

fn check_args(a: &BenchArgs) -> anyhow::Result<()> {
    // Usage errors (exit 2), as every bad flag (they exited 1: probe s54b F5).
    use super::exit::Failure;
    if a.connections == 0 || a.connections > 4096 {
        return Err(Failure::usage("--connections must be between 1 and 4096"));
    }
    if !(a.trickle_rate.is_finite() && a.trickle_rate > 0.0 && a.trickle_rate <= 100_000.0) {
        return Err(Failure::usage(
            "--trickle-rate must be above 0 and at most 100000 jobs/s",
        ));
    }
    if !matches!(a.synchronous.as_str(), "normal" | "full") {
        return Err(Failure::usage("--synchronous must be `normal` or `full`"));
    }
    // clap checks `--http-ceiling`'s conflicts before it hands bench a `--server` given before the
    // command (`runyard --server URL bench --http-ceiling`: client_flags.rs), which the ceiling
    // would ignore.
    if a.http_ceiling && a.server.is_some() {
        return Err(Failure::usage(
            "the argument '--http-ceiling' cannot be used with '--server <SERVER>' (the ceiling \
             measures a bare server of its own)",
        ));
    }
    if let Some(s) = &a.server {
        // As every client command's --server: an http(s) URL without query or fragment (exit 2,
        // shown with its password masked).
        super::client::Api::new(s)?;
        // bench sends no credentials of its own, and prints its --server: one with a user or
        // password in it is refused rather than shown (or sent to wherever it redirects).
        let userinfo = reqwest::Url::parse(s)
            .map(|u| !u.username().is_empty() || u.password().is_some())
            .unwrap_or(true);
        if userinfo {
            return Err(super::exit::Failure::usage(format!(
                "--server {}: bench sends no credentials; give the server's URL without a user \
                 or password",
                super::answer::shown_text(s)
            )));
        }
    }
    Ok(())
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
    /// Jobs per submit request of a burst (`batch.rs`).
    batch_size: usize,
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
        // As every command of the CLI: a redirect is not followed (a submit would become a GET).
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// `r`'s body, bounded as the client commands bound theirs ([`crate::cli::answer`]: 64 MiB of a
/// success, 64 KiB of anything else); an answer past that is not runyard's and ends the run,
/// the rest unread (an endless body no longer grows the bench's memory until it is killed).
async fn body_of(r: reqwest::Response, what: &str) -> anyhow::Result<bytes::Bytes> {
    use crate::cli::answer::{read_capped, MAX_JSON, MAX_OTHER};
    let cap = if r.status().is_success() {
        MAX_JSON
    } else {
        MAX_OTHER
    };
    let status = r.status().as_u16();
    read_capped(r, cap).await?.ok_or_else(|| {
        anyhow!(
            "{what}: an answer (HTTP {status}) over {} KiB: not runyard's",
            cap >> 10
        )
    })
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
