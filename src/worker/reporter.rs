//! The reporter a runner writes logs and progress to: buffered in memory and written in batches
//! (at most every 100 ms), so a chatty job costs a few store writes per second, not one per line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runyard_runners::{LogStream, Reporter};
use serde_json::Value;
use uuid::Uuid;

use crate::job::{now_us, Command, Micros};
use crate::store::Store;

/// Buffered reporter for one attempt.
pub struct JobReporter {
    /// Weak: runner-side tasks (pipe readers, service contexts) hold the reporter and may
    /// outlive the attempt for a moment; they must never keep the store (and its lock) alive.
    store: std::sync::Weak<dyn Store>,
    job_id: Uuid,
    token: u64,
    pending: Mutex<Pending>,
    scheduled: AtomicBool,
    /// Serialises flushes so lines reach the store in order.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Pending {
    lines: Vec<(LogStream, Micros, String)>,
    progress: Option<(f64, Option<Value>)>,
}

const FLUSH_DELAY: Duration = Duration::from_millis(100);
const MAX_BUFFERED_LINES: usize = 10_000;

impl JobReporter {
    /// A reporter writing for the claim `token` of `job_id`.
    pub fn new(store: Arc<dyn Store>, job_id: Uuid, token: u64) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::downgrade(&store),
            job_id,
            token,
            pending: Mutex::new(Pending::default()),
            scheduled: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    fn schedule(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.scheduled.store(false, Ordering::Release);
            return;
        };
        // Weak: once the attempt is over (its final flush done), a pending delayed flush has
        // nothing to do and must not keep the store alive.
        let me = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep(FLUSH_DELAY).await;
            if let Some(me) = me.upgrade() {
                me.scheduled.store(false, Ordering::Release);
                me.flush().await;
            }
        });
    }

    /// Writes whatever is buffered.
    pub async fn flush(&self) {
        let _order = self.flushing.lock().await;
        let p = std::mem::take(&mut *self.pending.lock());
        let Some(store) = self.store.upgrade() else {
            return; // The server has stopped.
        };
        if !p.lines.is_empty() {
            if let Err(e) = store.append_logs(self.job_id, p.lines).await {
                tracing::warn!(job_id = %self.job_id, error = %e, "cannot write job logs");
            }
        }
        if let Some((progress, details)) = p.progress {
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

/// The reporter handed to runners.
pub struct SharedJobReporter(pub Arc<JobReporter>);

impl Reporter for SharedJobReporter {
    fn log(&self, stream: LogStream, line: String) {
        {
            let mut p = self.0.pending.lock();
            if p.lines.len() >= MAX_BUFFERED_LINES {
                // The store is slower than the job: drop rather than grow without bound.
                return;
            }
            p.lines.push((stream, now_us(), line));
        }
        self.0.schedule();
    }

    fn progress(&self, progress: f64, details: Option<Value>) {
        self.0.pending.lock().progress = Some((progress, details));
        self.0.schedule();
    }
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
