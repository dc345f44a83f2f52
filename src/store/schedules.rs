//! Storage of cron schedules (see [`crate::schedule`]): one record per schedule, changed only by
//! compare-and-set on its `version`, and an index of when each schedule next needs attention.
//!
//! Firing is exactly once across processes because the decision to fire a (schedule, fire time)
//! is a compare-and-set of the record that moves `next_fire` past it: of two processes that read
//! the same record, one write succeeds and the other is refused and reads again. No lock, no TTL.

use async_trait::async_trait;

use super::Result;
use crate::job::Micros;
use crate::schedule::Schedule;

/// Schedules: read, list, find the due ones, compare-and-set, delete.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// One schedule.
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>>;
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>>;
    /// Names of the schedules whose wake time ([`Schedule::wake_at`]) is at or before `now`,
    /// soonest first, at most `max`.
    async fn schedules_due(&self, now: Micros, max: usize) -> Result<Vec<String>>;
    /// The earliest wake time of any schedule.
    async fn schedules_next_wake(&self) -> Result<Option<Micros>>;
    /// Writes `s` if the stored version is `expected` (`None`: only if no schedule of that name
    /// exists). `s.version` must already be the new version. False (nothing written) when the
    /// stored version is another.
    async fn schedule_cas(&self, s: &Schedule, expected: Option<u64>) -> Result<bool>;
    /// Deletes `name` if its stored version is `expected`; false otherwise.
    async fn schedule_delete(&self, name: &str, expected: u64) -> Result<bool>;
}
