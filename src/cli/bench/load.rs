//! Load generation: the burst and trickle scenarios submit jobs and time each submit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::task::JoinSet;

use super::collect::*;
use super::*;

/// One accepted submit.
pub(super) struct Sent {
    pub(super) id: String,
    /// Client clock just before the request was sent.
    pub(super) at_us: i64,
    pub(super) rtt: Duration,
}

#[derive(Deserialize)]
pub(super) struct Accepted {
    pub(super) job_id: String,
}

pub(super) async fn submit_one(
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> anyhow::Result<Sent> {
    let at_us = wall_us();
    let t0 = Instant::now();
    let r = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let bytes = super::body_of(r, "submit").await?;
    let rtt = t0.elapsed();
    no_credentials(status, &bytes)?;
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

/// A 401 or 403: the server wants a token, which bench never sends; nothing after it can
/// succeed. A refusal (exit 4) that ends the run at once: it went on through every scenario
/// (about 13,000 refused submits by default) and blamed the jobs (probe s54b F4).
pub(super) fn no_credentials(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Result<()> {
    if !matches!(status.as_u16(), 401 | 403) {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    Err(crate::cli::exit::Failure::Refused {
        status: status.as_u16(),
        code: v["error"]["code"].as_str().unwrap_or("no code").to_string(),
        message: format!(
            "bench sends no credentials (--token and RUNYARD_TOKEN are not used) and this \
             server requires them: run bench against a server without `[auth]`, or without \
             --server (its own); the server said: {}",
            crate::cli::answer::clipped(v["error"]["message"].as_str().unwrap_or("nothing"), 200)
        ),
    }
    .into())
}

/// Whether `e` is [`no_credentials`]'s refusal: the run stops.
pub(super) fn is_refusal(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<crate::cli::exit::Failure>(),
        Some(crate::cli::exit::Failure::Refused { .. })
    )
}

pub(super) fn body_for(job_type: &str) -> &'static str {
    match job_type {
        SERVICE_TYPE => r#"{"type":"bench.noop"}"#,
        _ => r#"{"type":"bench.true"}"#,
    }
}

/// Submits `n` jobs with `ctx.connections` clients, waits for all of them, and measures.
pub(super) async fn burst(
    ctx: &Ctx,
    runner: &str,
    job_type: &str,
    n: usize,
) -> anyhow::Result<ScenarioResult> {
    let batch = ctx.batch_size.max(1);
    let url = if batch > 1 {
        format!("{}/async/jobs/batch", ctx.base)
    } else {
        format!("{}/async/jobs", ctx.base)
    };
    let body = body_for(job_type);
    let (sent, errors, submit_secs) = send_all(ctx, &url, body, n, batch).await?;
    measured(ctx, "burst", (runner, job_type), sent, errors, submit_secs).await
}

/// A scenario's figures once its submits are done: the jobs read back ([`finish_scenario`]),
/// the submit rate and the submits' round trips.
async fn measured(
    ctx: &Ctx,
    scenario: &str,
    (runner, job_type): (&str, &str),
    sent: Vec<Sent>,
    errors: usize,
    submit_secs: f64,
) -> anyhow::Result<ScenarioResult> {
    ctx.check_deadline()?;
    let rtt = latency(sent.iter().map(|s| s.rtt.as_micros() as i64));
    let mut r = finish_scenario(ctx, scenario, runner, job_type, sent, errors).await?;
    r.submit_rate = r.jobs as f64 / submit_secs.max(1e-9);
    r.submit_rtt = rtt;
    Ok(r)
}

/// The burst's submits: `n` jobs (`batch` per request) over `ctx.connections` keep-alive clients,
/// each its own connection. Returns the accepted submits, the failed count and the seconds taken.
pub(super) async fn send_all(
    ctx: &Ctx,
    url: &str,
    body: &'static str,
    n: usize,
    batch: usize,
) -> anyhow::Result<(Vec<Sent>, usize, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    // Set by the first refusal: the other clients stop too.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..ctx.connections.min(n.max(1)) {
        // One client per task: each keeps its own keep-alive connection.
        let http = client(1)?;
        let (next, stop) = (next.clone(), stop.clone());
        let url = url.to_string();
        let deadline = ctx.deadline;
        set.spawn(async move {
            let mut sent = Vec::with_capacity(n / 8 + 1);
            let mut errors = 0usize;
            let mut last_error = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(batch, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline || errors >= 100 {
                    break;
                }
                let k = batch.min(n - i);
                let r = if batch > 1 {
                    super::batch::submit_batch(&http, &url, body, k).await
                } else {
                    submit_one(&http, &url, body).await.map(|s| vec![s])
                };
                match r {
                    Ok(s) => sent.extend(s),
                    Err(e) if is_refusal(&e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(e) => {
                        errors += k;
                        last_error = Some(format!("{e:#}"));
                    }
                }
            }
            Ok((sent, errors, last_error))
        });
    }
    let mut sent = Vec::with_capacity(n);
    let mut errors = 0;
    let mut last_error = None;
    while let Some(r) = set.join_next().await {
        let (s, e, le) = r.context("submit task")??;
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
    Ok((sent, errors, submit_secs))
}

/// Submits `n` jobs at `rate` per second (open loop), waits for all of them, and measures.
pub(super) async fn trickle(
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
    let mut refused = None;
    // True once a submit was refused for want of credentials: the trickle stops.
    let mut take = |r: Result<anyhow::Result<Sent>, tokio::task::JoinError>| {
        match r {
            Ok(Ok(s)) => sent.push(s),
            Ok(Err(e)) if is_refusal(&e) => refused = Some(e),
            Ok(Err(e)) => {
                errors += 1;
                last_error = Some(format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                last_error = Some(e.to_string());
            }
        }
        refused.is_some()
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
        let mut stop = false;
        while let Some(r) = set.try_join_next() {
            stop |= take(r);
        }
        if stop {
            break;
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    while let Some(r) = set.join_next().await {
        take(r);
    }
    if let Some(e) = refused {
        return Err(e);
    }
    if let Some(e) = &last_error {
        ctx.say(&format!("  {errors} submits failed; last error: {e}"));
    }
    measured(
        ctx,
        "trickle",
        (runner, job_type),
        sent,
        errors,
        submit_secs,
    )
    .await
}
