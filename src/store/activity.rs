//! The dashboard's aggregates (issue 13): jobs that finished per minute over the last hour, and
//! the dead letters. Both are read-side aggregates over indexes the writers already keep, so the
//! writers pay nothing for them:
//!
//! - the finished jobs of a window come from the index of finished jobs by `finished_at` (SQLite
//!   `jobs_finished`, Redis `P:fin`), a range read: the cost follows the jobs that finished in the
//!   window, not the jobs stored;
//! - the dead letters come from the index of ERROR jobs (SQLite `jobs_status`, Redis
//!   `P:st:ERROR`), each checked for its attempts: the cost follows the ERROR jobs stored.
//!
//! Redis reads both in bounded chunks (one short script per chunk), so a large window or many
//! ERROR jobs never hold Redis for long.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::Result;
use crate::job::{JobStatus, Micros};

/// One minute in µs.
pub const MINUTE_US: Micros = 60_000_000;

/// The longest window [`ActivityStore::finished_per_minute`] reads, in minutes.
pub const MAX_MINUTES: u32 = 60;

/// Jobs of one type that finished in one minute with one final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedCount {
    /// The minute's start (µs since the epoch, a multiple of [`MINUTE_US`]).
    pub minute: Micros,
    /// The jobs' type.
    pub job_type: String,
    /// Their final status (SUCCESS, ERROR, TIMEOUT or CANCELLED).
    pub status: JobStatus,
    /// How many.
    pub count: u64,
}

/// What [`ActivityStore::finished_per_minute`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// The store's time of the read: jobs that finished up to it are counted.
    pub as_of: Micros,
    /// The start of the window's first minute.
    pub since: Micros,
    /// The counts; (minute, type, status) with no job are absent.
    pub finished: Vec<FinishedCount>,
}

/// The start of the first minute of a window of `minutes` minutes ending with the minute of
/// `now` (at least one minute).
pub fn window_start(now: Micros, minutes: u32) -> Micros {
    let back = Micros::from(minutes.clamp(1, MAX_MINUTES)) - 1;
    (now.div_euclid(MINUTE_US) - back) * MINUTE_US
}

/// The minute (its start, µs) of a time.
pub fn minute_of(t: Micros) -> Micros {
    t.div_euclid(MINUTE_US) * MINUTE_US
}

/// The dashboard's aggregates.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// The jobs that finished in the last `minutes` minutes (the current minute and the ones
    /// before it, at most [`MAX_MINUTES`]), per minute of their `finished_at`, type and final
    /// status. A job counts once, with the status it has now: one retried after it finished
    /// counts where and how it finished last.
    async fn finished_per_minute(&self, minutes: u32) -> Result<Activity>;

    /// The dead letters (jobs in ERROR with every attempt used), counted by type.
    async fn dead_letters(&self) -> Result<BTreeMap<String, u64>>;
}
