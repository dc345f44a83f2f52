//! Reading the jobs of a scenario back (cursor paging) and turning their times into latencies.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Deserialize;

use super::load::*;
use super::*;

/// A job as read back from the list endpoint.
#[derive(Debug, Deserialize)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) started_at: Option<String>,
    pub(super) finished_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    pub(super) jobs: Vec<Row>,
    pub(super) next_cursor: Option<String>,
}

pub(super) const TERMINAL: &[&str] = &["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"];
pub(super) const ACTIVE: &[&str] = &["SCHEDULED", "WAITING", "QUEUED", "STARTING", "RUNNING"];

/// Waits until every sent job is terminal, reads them back and computes the figures.
pub(super) async fn finish_scenario(
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
pub(super) async fn wait_quiet(ctx: &Ctx, job_type: &str, min_id: &str) -> anyhow::Result<()> {
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
pub(super) async fn collect(
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

pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let bytes = super::body_of(r, &format!("GET {url}")).await?;
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
pub(super) fn latency(samples: impl Iterator<Item = i64>) -> Option<Latency> {
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
