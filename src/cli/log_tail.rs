//! A job's log lines read page by page (`GET /async/jobs/{id}/logs`), each with the attempt it
//! belongs to: what `logs`, `logs --follow` and `submit --wait` print.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::client::{job_path, Api};
use super::follow::Patience;
use super::output::{self, Format};

/// One log line, with the attempt it belongs to.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Position in the job's log.
    pub seq: u64,
    /// stdout, stderr or job.
    pub stream: String,
    /// When it was received (µs since the epoch).
    pub ts_us: i64,
    /// The attempt whose run it came from, when known.
    pub attempt: Option<u64>,
    /// The text.
    pub line: String,
}

impl LogLine {
    fn time(&self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.ts_us)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_else(|| "-".to_string())
    }

    /// `2026-11-30T15:55:36.430Z #1 text` (`#-` when the attempt is not known), its control
    /// characters shown as escapes ([`crate::logging::visible`]): the job's output never drives
    /// the operator's terminal.
    pub fn text(&self) -> String {
        let attempt = self
            .attempt
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".to_string());
        format!(
            "{} #{attempt} {}",
            self.time(),
            crate::logging::visible(&self.line)
        )
    }

    /// `{"kind": "log", "seq", "stream", "ts", "attempt", "line"}`.
    pub fn json(&self) -> Value {
        json!({
            "kind": "log",
            "seq": self.seq,
            "stream": self.stream,
            "ts": self.time(),
            "attempt": self.attempt,
            "line": self.line,
        })
    }

    /// Prints the line for `format`.
    pub fn print(&self, format: Format) {
        match format {
            Format::Json => output::json_line(&self.json()),
            Format::Text => println!("{}", self.text()),
        }
    }
}

/// Reads a job's log from where it left off, giving each line its attempt: the server stores
/// lines with their time only, so the attempt is the last run (of the job's `runs`) claimed at
/// or before the line's time.
pub struct LogTail {
    pub(super) id: String,
    path: String,
    after: u64,
    /// Lines the server no longer kept, met by the reads since [`Self::take_gap`].
    gap: u64,
    /// (claimed_at µs, attempt), by time.
    runs: Vec<(i64, u64)>,
    patience: Patience,
}

impl LogTail {
    /// From the first line of job `id` (any spelling the server takes: kept in its usual form,
    /// the one events carry, so that a follow finds the job's events).
    pub fn new(id: &str) -> anyhow::Result<Self> {
        let path = format!("{}/logs", job_path(id)?);
        let id = uuid::Uuid::parse_str(id).map_or_else(|_| id.to_string(), |u| u.to_string());
        Ok(Self {
            id,
            path,
            after: 0,
            gap: 0,
            runs: Vec::new(),
            patience: Patience::new(),
        })
    }

    /// This tail giving up by `patience` (a follow's, shared with its other readers).
    pub(super) fn sharing(mut self, patience: &Patience) -> Self {
        self.share(patience);
        self
    }

    /// Gives up by `patience` (a follow's, shared with its other readers).
    pub(super) fn share(&mut self, patience: &Patience) {
        self.patience = patience.clone();
    }

    /// [`Self::fetch`] riding out a server restart by the one rule ([`Patience`]): while
    /// following a job.
    pub(super) async fn fetch_patiently(&mut self, api: &Api) -> anyhow::Result<Vec<LogLine>> {
        loop {
            let r = self.fetch(api).await;
            if let Some(lines) = self.patience.settle(r).await? {
                return Ok(lines);
            }
        }
    }

    /// The note on lines the server no longer kept that the reads since the last call met
    /// (`None`: none).
    pub fn take_gap(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.gap);
        (n > 0).then(|| {
            format!(
                "[runyard] {n} earlier line(s) of this job are no longer kept by the server \
                 (retention.log_lines_per_job): not shown"
            )
        })
    }

    /// The next page of lines (empty when there is nothing new).
    pub async fn fetch(&mut self, api: &Api) -> anyhow::Result<Vec<LogLine>> {
        let page = api
            .get(&format!("{}?after={}&limit=1000", self.path, self.after))
            .await?;
        let raw = page["lines"].as_array().cloned().unwrap_or_default();
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let next = page["next"]
            .as_u64()
            .ok_or_else(|| anyhow!("the log answer has no `next`"))?;
        let newest = raw.iter().filter_map(|l| l["ts"].as_i64()).max();
        if newest.is_some_and(|t| self.runs.last().is_none_or(|r| r.0 <= t)) {
            // A line newer than the last run we know of: runs may have been added since.
            self.load_runs(api).await?;
        }
        // Only now: a failed read of the runs (retried by a follow) reads this page again
        // rather than skip it. A job's lines are numbered from 1 without gaps, and the server
        // keeps its newest `retention.log_lines_per_job`: lines before the first kept are
        // counted (said by the caller, [`Self::take_gap`]), not skipped silently.
        let first = raw.first().and_then(|l| l["seq"].as_u64()).unwrap_or(0);
        if first > self.after.saturating_add(1) {
            self.gap += first - self.after - 1;
        }
        self.after = next;
        Ok(raw
            .iter()
            .map(|l| {
                let ts_us = l["ts"].as_i64().unwrap_or(0);
                LogLine {
                    seq: l["seq"].as_u64().unwrap_or(0),
                    stream: l["stream"].as_str().unwrap_or("").to_string(),
                    ts_us,
                    attempt: self
                        .runs
                        .iter()
                        .rev()
                        .find(|(at, _)| *at <= ts_us)
                        .map(|(_, a)| *a),
                    line: l["line"].as_str().unwrap_or("").to_string(),
                }
            })
            .collect())
    }

    /// The lines a job's process wrote last: its output is stored as it is read, which can be
    /// just after the job reported its end. Reads until 400 ms pass with nothing new (at most
    /// 3 s).
    pub async fn drain(&mut self, api: &Api) -> anyhow::Result<Vec<LogLine>> {
        let until = Instant::now() + Duration::from_secs(3);
        let mut quiet = 0;
        let mut out = Vec::new();
        while quiet < 2 && Instant::now() < until {
            let lines = self.fetch_patiently(api).await?;
            if lines.is_empty() {
                quiet += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                quiet = 0;
                out.extend(lines);
            }
        }
        Ok(out)
    }

    async fn load_runs(&mut self, api: &Api) -> anyhow::Result<()> {
        let job = api.get(&job_path(&self.id)?).await?;
        let mut runs: Vec<(i64, u64)> = job["runs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let at = r["claimed_at"].as_str().or(r["started_at"].as_str())?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.timestamp_micros();
                Some((at, r["attempt"].as_u64()?))
            })
            .collect();
        runs.sort();
        self.runs = runs;
        Ok(())
    }
}
