//! Waiting jobs in the store (see [`crate::waiting`]): the index of jobs by the signal keys they
//! wait for, the deadline index, and the checks that release them.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::{Result, SignalStore};
use crate::job::wait::{ReleasedBy, Seen, WaitItem, MAX_SIGNAL_IDS};
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

/// The distinct reads `items` need: each (key, since) once, with the largest count any of its
/// items needs (a `wait_for` of 100 identical items reads its key once); and for each item, the
/// index of its read.
pub fn distinct_reads(items: &[WaitItem]) -> (Vec<(&str, Micros, u32)>, Vec<usize>) {
    let mut reads: Vec<(&str, Micros, u32)> = Vec::new();
    let mut of_item = Vec::with_capacity(items.len());
    for i in items {
        let since = i.since.unwrap_or(0);
        match reads
            .iter()
            .position(|(k, s, _)| *k == i.key.as_str() && *s == since)
        {
            Some(n) => {
                reads[n].2 = reads[n].2.max(i.needed);
                of_item.push(n);
            }
            None => {
                of_item.push(reads.len());
                reads.push((i.key.as_str(), since, i.needed));
            }
        }
    }
    (reads, of_item)
}

/// Each item's [`Seen`] from the answers of its read (the count, up to the read's largest
/// `needed`, and the first numbers): its own count up to its `needed`, and its first numbers.
///
/// The numbers are asked for after the count, `min(count, MAX_SIGNAL_IDS)` of them: fewer means
/// records went between the two reads (retention, a per-key trim), and exactly those read are
/// left, so they are the count. Otherwise `seen` would count records `signal_ids` cannot show
/// and `signal_ids_truncated` would claim more than there are.
pub fn seen_of(items: &[WaitItem], of_item: &[usize], answers: &[(u64, Vec<u64>)]) -> Seen {
    items
        .iter()
        .zip(of_item)
        .map(|(i, r)| {
            let (count, ids) = &answers[*r];
            let asked = (*count).min(MAX_SIGNAL_IDS as u64);
            let count = if (ids.len() as u64) < asked {
                ids.len() as u64
            } else {
                *count
            };
            let n = count.min(u64::from(i.needed)) as u32;
            let shown = (n as usize).min(MAX_SIGNAL_IDS).min(ids.len());
            (n, ids[..shown].to_vec())
        })
        .collect()
}

/// One read of [`seen_now`]: the count up to `needed`, then the first numbers.
async fn read_one(
    store: &dyn SignalStore,
    key: &str,
    since: Micros,
    until: Micros,
    needed: u32,
) -> Result<(u64, Vec<u64>)> {
    let n = store
        .signal_count(key, since, until, u64::from(needed))
        .await?;
    let shown = (n as usize).min(MAX_SIGNAL_IDS);
    let ids = if shown == 0 {
        vec![]
    } else {
        store.signal_seqs(key, since, until, shown).await?
    };
    Ok((n, ids))
}

/// The records each item of `items` has now (counted up to its `needed`, with the numbers of
/// the first [`MAX_SIGNAL_IDS`]), read from the store: a count and a few numbers per distinct
/// (key, since), never the payloads, never more numbers than a job keeps. Up to
/// [`SEEN_READS_AT_ONCE`] keys are read at once (on Redis they go out together on the
/// multiplexed connection; the embedded store's pool keeps that many readers open), in order:
/// the first failing read's error is returned.
pub async fn seen_now(store: &dyn SignalStore, items: &[WaitItem], until: Micros) -> Result<Seen> {
    use futures::{StreamExt, TryStreamExt};
    let (reads, of_item) = distinct_reads(items);
    let mut futs = Vec::with_capacity(reads.len());
    for (key, since, needed) in reads {
        futs.push(read_one(store, key, since, until, needed));
    }
    let answers: Vec<(u64, Vec<u64>)> = futures::stream::iter(futs)
        .buffered(SEEN_READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(seen_of(items, &of_item, &answers))
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
    /// Signal records counted one by one for waiting jobs (the embedded store's index entries
    /// stepped over; Redis counts with `ZCOUNT`, in O(log N), and adds nothing).
    pub records_counted: AtomicU64,
    /// Record numbers (`seq`) read for waiting jobs (their `signal_ids`).
    pub numbers_read: AtomicU64,
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
    /// Signal records counted by checks of waiting jobs.
    pub records_counted: u64,
    /// Record numbers read for waiting jobs.
    pub numbers_read: u64,
}

static COUNTERS: WaitCounters = WaitCounters {
    entered: AtomicU64::new(0),
    released_by_signals: AtomicU64::new(0),
    deadline_runs: AtomicU64::new(0),
    deadline_fails: AtomicU64::new(0),
    deadline_skips: AtomicU64::new(0),
    records_counted: AtomicU64::new(0),
    numbers_read: AtomicU64::new(0),
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
            records_counted: r(&self.records_counted),
            numbers_read: r(&self.numbers_read),
        }
    }

    /// Counts a read made for waiting jobs: `counted` records counted, `numbers` read.
    pub fn count_reads(&self, counted: u64, numbers: usize) {
        self.records_counted.fetch_add(counted, Ordering::Relaxed);
        self.numbers_read
            .fetch_add(numbers as u64, Ordering::Relaxed);
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

/// A wait item of `needed` records of `key` (since `since`), none seen yet: for the stores'
/// unit tests.
#[cfg(test)]
pub(crate) fn test_item(key: &str, needed: u32, since: Option<Micros>) -> WaitItem {
    WaitItem {
        key: key.into(),
        needed,
        since,
        seen: 0,
        signal_ids: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::test_item as item;
    use super::*;

    #[test]
    fn identical_items_share_one_read_and_keep_at_most_32_numbers() {
        let mut items = vec![item("a", 5, None); 99];
        items.push(item("a", 100, None));
        items.push(item("a", 2, Some(7)));
        items.push(item("b", 1, None));
        let (reads, of_item) = distinct_reads(&items);
        assert_eq!(reads, vec![("a", 0, 100), ("a", 7, 2), ("b", 0, 1)]);
        assert_eq!(of_item[..100], [0; 100]);
        assert_eq!(of_item[100..], [1, 2]);
        let first: Vec<u64> = (1..=32).collect();
        let answers = vec![(100, first.clone()), (1, vec![50]), (0, vec![])];
        let seen = seen_of(&items, &of_item, &answers);
        assert_eq!(seen[0], (5, (1..=5).collect::<Vec<u64>>()));
        assert_eq!(seen[99], (100, first));
        assert_eq!(seen[100], (1, vec![50]));
        assert_eq!(seen[101], (0, vec![]));
    }

    #[test]
    fn numbers_short_of_the_count_are_the_count() {
        let items = vec![item("a", 5, None), item("a", 40, None)];
        let (_, of_item) = distinct_reads(&items);
        // Counted 40, then 38 went before the numbers were read: 2 left.
        let seen = seen_of(&items, &of_item, &[(40, vec![39, 40])]);
        assert_eq!(seen, vec![(2, vec![39, 40]), (2, vec![39, 40])]);
        // 32 numbers of more counted: still truncated, the count kept.
        let first: Vec<u64> = (1..=32).collect();
        let seen = seen_of(&items, &of_item, &[(40, first.clone())]);
        assert_eq!(seen[1], (40, first));
    }
}
