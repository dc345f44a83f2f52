//! The reporter a runner writes logs and progress to: the one buffered reporter
//! ([`runyard_runners::buffered`]) writing its batches to the store (at most every 100 ms), so a
//! chatty job costs a few store writes per second, not one per line.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use runyard_runners::buffered::{Batch, BatchSink, BufferedReporter};
use runyard_runners::{LogStream, Reporter};
use serde_json::Value;
use uuid::Uuid;

use crate::job::{Command, Micros};
use crate::store::Store;

/// Buffered reporter for one attempt.
pub type JobReporter = BufferedReporter<StoreSink>;

const FLUSH_DELAY: Duration = Duration::from_millis(100);
const MAX_BUFFERED_LINES: usize = 10_000;

/// Where an attempt's batches go: its logs and its progress (under its claim token) in the store.
pub struct StoreSink {
    /// Weak: runner-side tasks (pipe readers, service contexts) hold the reporter and may
    /// outlive the attempt for a moment; they must never keep the store (and its lock) alive.
    store: std::sync::Weak<dyn Store>,
    job_id: Uuid,
    token: u64,
}

impl StoreSink {
    /// A reporter writing for the claim `token` of `job_id`.
    pub fn reporter(store: Arc<dyn Store>, job_id: Uuid, token: u64) -> Arc<JobReporter> {
        let sink = Self {
            store: Arc::downgrade(&store),
            job_id,
            token,
        };
        BufferedReporter::new(sink, FLUSH_DELAY, MAX_BUFFERED_LINES)
    }
}

#[async_trait]
impl BatchSink for StoreSink {
    async fn send(&self, batch: Batch) {
        let Some(store) = self.store.upgrade() else {
            return; // The server has stopped.
        };
        if !batch.lines.is_empty() {
            let lines = batch
                .lines
                .into_iter()
                .map(|(stream, at, line)| (stream, micros(at), line))
                .collect();
            if let Err(e) = store.append_logs(self.job_id, lines).await {
                tracing::warn!(job_id = %self.job_id, error = %e, "cannot write job logs");
            }
        }
        if let Some((progress, details)) = batch.progress {
            let cmd = Command::Progress {
                token: Some(self.token),
                progress: Some(progress),
                details,
            };
            if let Err(e) = store.apply(self.job_id, cmd).await {
                tracing::debug!(job_id = %self.job_id, error = %e, "progress not recorded");
            }
        }
    }
}

fn micros(at: std::time::SystemTime) -> Micros {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

/// The reporter the reaper hands to [`Runner::recover`](runyard_runners::Runner::recover): the
/// recovered work may speak before it is adopted, so what it says is kept (bounded) until the
/// adopting attempt's reporter is attached, then everything goes there. Dropped unadopted, it
/// drops what it kept.
#[derive(Default)]
pub struct DeferredReporter {
    inner: Mutex<Deferred>,
    /// When the job's last stored log line was received (kube: its logs resume from there).
    last_log: Option<std::time::SystemTime>,
}

#[derive(Default)]
struct Deferred {
    target: Option<runyard_runners::SharedReporter>,
    lines: Vec<(LogStream, String)>,
    progress: Option<(f64, Option<Value>)>,
}

impl DeferredReporter {
    /// A reporter for recovered work whose last stored log line was received at `last_log`.
    pub fn with_last_log(last_log: Option<std::time::SystemTime>) -> Self {
        Self {
            inner: Mutex::default(),
            last_log,
        }
    }

    /// From now on, forwards to `target` (first what was kept, in order).
    pub fn attach(&self, target: runyard_runners::SharedReporter) {
        let mut d = self.inner.lock();
        for (stream, line) in d.lines.drain(..) {
            target.log(stream, line);
        }
        if let Some((p, details)) = d.progress.take() {
            target.progress(p, details);
        }
        d.target = Some(target);
    }
}

impl Reporter for DeferredReporter {
    fn last_log_time(&self) -> Option<std::time::SystemTime> {
        self.last_log
    }

    fn log(&self, stream: LogStream, line: String) {
        let mut d = self.inner.lock();
        match &d.target {
            Some(t) => t.log(stream, line),
            None if d.lines.len() < MAX_BUFFERED_LINES => d.lines.push((stream, line)),
            None => {}
        }
    }

    fn progress(&self, progress: f64, details: Option<Value>) {
        let mut d = self.inner.lock();
        match &d.target {
            Some(t) => t.progress(progress, details),
            None => d.progress = Some((progress, details)),
        }
    }
}
