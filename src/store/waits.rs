//! Waiting jobs in the store (see [`crate::waiting`]): the index of jobs by the signal keys they
//! wait for, the deadline index, and the checks that release them.

use async_trait::async_trait;
use uuid::Uuid;

use super::Result;
use crate::job::{Job, Micros};

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
