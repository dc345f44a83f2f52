//! The reporter a runner writes logs and progress to: the one buffered reporter
//! ([`runyard_runners::buffered`]) writing its batches to the store (at most every 100 ms), so a
//! chatty job costs a few store writes per second, not one per line.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use runyard_runners::buffered::{dropped_note, Batch, BatchSink, BufferedReporter};
use runyard_runners::{LogStream, Reporter};
use serde_json::Value;
use uuid::Uuid;

use crate::job::{Command, Micros};
use crate::store::Store;

/// Buffered reporter for one attempt.
pub type JobReporter = BufferedReporter<StoreSink>;

const FLUSH_DELAY: Duration = Duration::from_millis(100);
/// Lines kept waiting for the store: past it the job's pipe readers wait for room (the job
/// waits in its write), and only a store that takes nothing for `buffered::MAX_WAIT` has the
/// oldest go (a note says how many). docs/api.md and docs/architecture.md say 5,000. Half the
/// default `retention.log_lines_per_job`: a batch with the note stays within what a job keeps,
/// so the note is not the first line retention trims.
const MAX_BUFFERED_LINES: usize = 5_000;

/// How long a batch of log lines the store refused (a full disk) is tried again before it is
/// given up, a note taking its place. The reporter meanwhile keeps what the job writes (bounded:
/// `MAX_BUFFERED_LINES`).
const LOG_RETRY_FOR: Duration = Duration::from_secs(10);

/// Where an attempt's batches go: its logs and its progress (under its claim token) in the store.
pub struct StoreSink {
    /// Weak: runner-side tasks (pipe readers, service contexts) hold the reporter and may
    /// outlive the attempt for a moment; they must never keep the store (and its lock) alive.
    store: std::sync::Weak<dyn Store>,
    job_id: Uuid,
    token: u64,
    /// Lines given up since the last batch stored: the next batch stored says how many, where
    /// they were.
    lost: std::sync::atomic::AtomicU64,
}

/// The line standing for `n` lines the store could not write.
fn lost_note(n: u64) -> String {
    format!("[runyard] {n} line(s) lost here: the store could not write them")
}

impl StoreSink {
    /// A reporter writing for the claim `token` of `job_id`.
    pub fn reporter(store: Arc<dyn Store>, job_id: Uuid, token: u64) -> Arc<JobReporter> {
        let sink = Self {
            store: Arc::downgrade(&store),
            job_id,
            token,
            lost: Default::default(),
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
            use std::sync::atomic::Ordering::SeqCst;
            let count = batch.lines.len() as u64;
            let mut lines: Vec<_> = batch
                .lines
                .into_iter()
                .map(|(stream, at, line)| (stream, micros(at), line))
                .collect();
            let lost = self.lost.load(SeqCst);
            if lost > 0 {
                lines.insert(0, (LogStream::Stderr, lines[0].1, lost_note(lost)));
            }
            match self.append(&*store, lines).await {
                Ok(()) => {
                    self.lost.fetch_sub(lost, SeqCst);
                }
                Err(e) => {
                    self.lost.fetch_add(count, SeqCst);
                    tracing::warn!(job_id = %self.job_id, error = %e, "cannot write job logs");
                }
            }
        }
        if let Some((progress, details)) = batch.progress {
            let cmd = Command::Progress {
                token: Some(self.token),
                progress: Some(progress),
                details,
            };
            match store.apply(self.job_id, cmd).await {
                Ok(job) => super::held_progress::follow(&store, &job),
                Err(e) => {
                    tracing::debug!(job_id = %self.job_id, error = %e, "progress not recorded")
                }
            }
        }
    }
}

impl StoreSink {
    /// Appends `lines`; a write the store refused for a reason of its own (a full disk:
    /// `StoreError::Backend`, nothing written) is tried again, with backoff, for
    /// [`LOG_RETRY_FOR`]. Any other error is not: the write may have been carried out.
    async fn append(
        &self,
        store: &dyn Store,
        lines: Vec<(LogStream, Micros, String)>,
    ) -> crate::store::Result<()> {
        let until = tokio::time::Instant::now() + LOG_RETRY_FOR;
        let append = || store.append_logs(self.job_id, lines.clone());
        crate::store::retry_refused(until, || true, append).await
    }
}

fn micros(at: std::time::SystemTime) -> Micros {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

/// The reporter the reaper hands to [`Runner::recover`](runyard_runners::Runner::recover): the
/// recovered work may speak before it is adopted, so what it says is kept (bounded) until the
/// adopting attempt's reporter is attached, then everything goes there. Past
/// `MAX_BUFFERED_LINES` kept lines the oldest go (and a note says how many), as in
/// [`BufferedReporter`]: the newest, the work's last word, are kept. Dropped unadopted, it drops
/// what it kept.
#[derive(Default)]
pub struct DeferredReporter {
    inner: Mutex<Deferred>,
    /// When the job's last stored log line was received (kube: its logs resume from there).
    last_log: Option<std::time::SystemTime>,
}

#[derive(Default)]
struct Deferred {
    target: Option<runyard_runners::SharedReporter>,
    lines: std::collections::VecDeque<(LogStream, String)>,
    /// Kept lines dropped (the oldest) to stay within `MAX_BUFFERED_LINES`.
    dropped: u64,
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
        if d.dropped > 0 {
            target.log(
                LogStream::Stderr,
                dropped_note(std::mem::take(&mut d.dropped)),
            );
        }
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
            None => {
                if d.lines.len() >= MAX_BUFFERED_LINES {
                    d.lines.pop_front();
                    d.dropped += 1;
                }
                d.lines.push_back((stream, line));
            }
        }
    }

    fn progress(&self, progress: f64, details: Option<Value>) {
        let mut d = self.inner.lock();
        match &d.target {
            Some(t) => t.progress(progress, details),
            None => d.progress = Some((progress, details)),
        }
    }

    fn room(&self) -> runyard_runners::Room<'_> {
        let target = self.inner.lock().target.clone();
        match target {
            Some(t) => Box::pin(async move { t.room().await }),
            None => Box::pin(std::future::ready(())), // kept, the oldest dropped past the bound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogStream, String)>>);

    impl Reporter for Collect {
        fn log(&self, stream: LogStream, line: String) {
            self.0.lock().push((stream, line));
        }
        fn progress(&self, _progress: f64, _details: Option<Value>) {}
    }

    /// docs/api.md and docs/architecture.md say how many lines wait in the worker.
    #[test]
    fn the_docs_say_how_many_lines_wait() {
        let n = MAX_BUFFERED_LINES;
        let said = format!("at most {},{:03} lines wait", n / 1000, n % 1000);
        for (doc, text) in [
            ("api.md", include_str!("../../docs/api.md")),
            (
                "architecture.md",
                include_str!("../../docs/architecture.md"),
            ),
        ] {
            assert!(text.contains(&said), "docs/{doc} does not say {said:?}");
        }
    }

    #[test]
    fn a_full_buffer_and_its_note_fit_in_the_default_retention() {
        let kept = crate::config::RetentionConfig::default().log_lines_per_job;
        // A full buffer and its note in one batch: all kept.
        assert!(MAX_BUFFERED_LINES < kept, "{MAX_BUFFERED_LINES} of {kept}");
    }

    /// Recovered work that says more than can be kept before it is adopted: the oldest lines go,
    /// a note says how many, and the newest (its last word) reach the adopting attempt in order.
    #[test]
    fn a_deferred_reporter_keeps_the_newest_lines_and_says_how_many_went() {
        let d = DeferredReporter::with_last_log(None);
        let n = MAX_BUFFERED_LINES + 5;
        for i in 1..=n {
            d.log(LogStream::Stdout, i.to_string());
        }
        d.log(LogStream::Stderr, "FATAL".into());
        let target = Arc::new(Collect::default());
        d.attach(target.clone());
        d.log(LogStream::Stdout, "after".into());
        let got = target.0.lock();
        assert_eq!(got.len(), MAX_BUFFERED_LINES + 2);
        assert_eq!(got[0].0, LogStream::Stderr);
        assert!(got[0].1.contains("6 line(s) dropped"), "{}", got[0].1);
        assert_eq!(got[1].1, "7");
        assert_eq!(got[got.len() - 3].1, n.to_string());
        assert_eq!(got[got.len() - 2], (LogStream::Stderr, "FATAL".to_string()));
        assert_eq!(got[got.len() - 1].1, "after");
    }
}
