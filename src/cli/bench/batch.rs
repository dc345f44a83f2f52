//! The burst's batch shape (`--batch-size N`): one `POST /async/jobs/batch` of N jobs per request.

use std::time::Instant;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::load::{Accepted, Sent};
use super::wall_us;

#[derive(Deserialize)]
struct Answer {
    results: Vec<serde_json::Value>,
}

/// Submits `k` copies of `body` in one request; every job must be accepted (202).
pub(super) async fn submit_batch(
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
    k: usize,
) -> anyhow::Result<Vec<Sent>> {
    let mut text = String::with_capacity(12 + k * (body.len() + 1));
    text.push_str("{\"jobs\":[");
    for i in 0..k {
        if i > 0 {
            text.push(',');
        }
        text.push_str(body);
    }
    text.push_str("]}");
    let at_us = wall_us();
    let t0 = Instant::now();
    let r = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(text)
        .send()
        .await?;
    let status = r.status();
    let bytes = super::body_of(r, "batch submit").await?;
    let rtt = t0.elapsed();
    super::load::no_credentials(status, &bytes)?;
    if status != reqwest::StatusCode::OK {
        bail!(
            "batch submit answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes)
        );
    }
    let a: Answer = serde_json::from_slice(&bytes).context("batch submit answer")?;
    let mut out = Vec::with_capacity(k);
    for r in a.results {
        if r["status_code"] != 202 {
            bail!("a batch item was not accepted: {r}");
        }
        let acc: Accepted = serde_json::from_value(r).context("batch item")?;
        out.push(Sent {
            id: acc.job_id,
            at_us,
            rtt,
        });
    }
    Ok(out)
}
