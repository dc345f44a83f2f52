//! Waiting jobs in the store (see [`crate::waiting`]): the index of jobs by the signal keys they
//! wait for, the deadline index, and the checks that release them.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::{Result, SignalStore};
use crate::job::wait::{ReleasedBy, Seen, WaitItem};
use crate::job::{Job, JobStatus, Micros};

/// What a backend does for waiting jobs.
#[async_trait]
pub trait WaitStore: Send + Sync {
    /// Checks one WAITING job's conditions against the stored signals and releases it (QUEUED,
    /// `released_by: "signals"`) when every item has its count. True when released.
    async fn wait_check(&self, id: Uuid) -> Result<bool>;
    /// Checks the jobs a signal write marked for a check (Redis: `P:wait:due`); at most `max`.
    /// Returns how many were checked. The embedded store checks in the signal's transaction and
    /// has nothing marked.
    async fn wait_check_marked(&self, max: usize) -> Result<usize>;
    /// The earliest deadline of a WAITING job.
    async fn wait_next_deadline(&self) -> Result<Option<Micros>>;
    /// Applies the deadlines that are due (at most `max`), each exactly once; returns the jobs
    /// as they are after the change.
    async fn wait_fire_deadlines(&self, max: usize) -> Result<Vec<Job>>;
}

/// Reads of one [`seen_now`] in flight at once.
const SEEN_READS_AT_ONCE: usize = 8;

/// The records each item of `items` has now (at most `needed` each), read from the store: their
/// numbers only, never their payloads. Up to [`SEEN_READS_AT_ONCE`] items are read at once (on
/// Redis they go out together on the multiplexed connection; the embedded store's pool keeps
/// that many readers open), in order: the first failing item's error is returned.
pub async fn seen_now(store: &dyn SignalStore, items: &[WaitItem], until: Micros) -> Result<Seen> {
    use futures::{StreamExt, TryStreamExt};
    let mut reads = Vec::with_capacity(items.len());
    for i in items {
        reads.push(store.signal_seqs(&i.key, i.since.unwrap_or(0), until, i.needed as usize));
    }
    let seqs: Vec<Vec<u64>> = futures::stream::iter(reads)
        .buffered(SEEN_READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(seqs
        .into_iter()
        .map(|seqs| (seqs.len() as u32, seqs))
        .collect())
}

/// Counters of waiting jobs, kept by this process (the metrics module exports them): counted by
/// the backends as they move jobs in and out of WAITING.
#[derive(Debug, Default)]
pub struct WaitCounters {
    /// Jobs that started waiting.
    pub entered: AtomicU64,
    /// Jobs released by their signals.
    pub released_by_signals: AtomicU64,
    /// Deadlines that made the job run.
    pub deadline_runs: AtomicU64,
    /// Deadlines that failed the job.
    pub deadline_fails: AtomicU64,
    /// Deadlines that skipped (cancelled) the job.
    pub deadline_skips: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitCounts {
    /// Jobs that started waiting.
    pub entered: u64,
    /// Jobs released by their signals.
    pub released_by_signals: u64,
    /// Deadlines that made the job run.
    pub deadline_runs: u64,
    /// Deadlines that failed the job.
    pub deadline_fails: u64,
    /// Deadlines that skipped (cancelled) the job.
    pub deadline_skips: u64,
}

static COUNTERS: WaitCounters = WaitCounters {
    entered: AtomicU64::new(0),
    released_by_signals: AtomicU64::new(0),
    deadline_runs: AtomicU64::new(0),
    deadline_fails: AtomicU64::new(0),
    deadline_skips: AtomicU64::new(0),
};

/// This process's counters.
pub fn counters() -> &'static WaitCounters {
    &COUNTERS
}

impl WaitCounters {
    /// A consistent-enough copy (each counter read once).
    pub fn snapshot(&self) -> WaitCounts {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WaitCounts {
            entered: r(&self.entered),
            released_by_signals: r(&self.released_by_signals),
            deadline_runs: r(&self.deadline_runs),
            deadline_fails: r(&self.deadline_fails),
            deadline_skips: r(&self.deadline_skips),
        }
    }

    /// Counts a job the store moved out of WAITING (`job` as it is after the change).
    pub fn count_release(&self, job: &Job) {
        let c = match (job.wait.as_ref().and_then(|w| w.released_by), job.status) {
            (Some(ReleasedBy::Signals), _) => &self.released_by_signals,
            (Some(ReleasedBy::Deadline), JobStatus::Queued) => &self.deadline_runs,
            (Some(ReleasedBy::Deadline), JobStatus::Error) => &self.deadline_fails,
            (Some(ReleasedBy::Deadline), JobStatus::Cancelled) => &self.deadline_skips,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}
