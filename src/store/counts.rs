//! Job counts for the metrics page: how many jobs each (type, status) has, and per type when the
//! oldest QUEUED job was queued. Read from the store at scrape time, so every node of a Redis
//! deployment shows the same figures.
//!
//! Neither backend reads every job record: SQLite keeps a table of counts (`job_counts`, written
//! by its writer once per transaction) and a partial index of the queue by type
//! (`jobs_queued_type`); Redis keeps a hash of counters
//! and a sorted set of QUEUED jobs per type, both changed by `commit.lua` and `retention.lua` in
//! the same script as the job itself (see `store/redis/counts.rs`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::Result;
use crate::job::{JobStatus, Micros};

/// What [`JobCountStore::job_counts`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCounts {
    /// Jobs stored, by (type, status); pairs with no job are absent.
    pub by_type_status: HashMap<(String, JobStatus), u64>,
    /// Per type with QUEUED jobs: when the oldest of them became QUEUED (µs).
    pub oldest_queued: BTreeMap<String, Micros>,
}

impl JobCounts {
    /// Jobs of `job_type` in `status` (0 when none).
    pub fn count(&self, job_type: &str, status: JobStatus) -> u64 {
        self.by_type_status
            .get(&(job_type.to_string(), status))
            .copied()
            .unwrap_or(0)
    }
}

/// Counts of jobs, for the metrics page.
#[async_trait]
pub trait JobCountStore: Send + Sync {
    /// The counts as of now.
    async fn job_counts(&self) -> Result<JobCounts>;
}
