//! Storage of cron schedules (see [`crate::schedule`]): one record per schedule, changed only by
//! compare-and-set on its `version`, and an index of when each schedule next needs attention.
//!
//! Firing is exactly once across processes because the decision to fire a (schedule, fire time)
//! is a compare-and-set of the record that moves `next_fire` past it: of two processes that read
//! the same record, one write succeeds and the other is refused and reads again. No lock, no TTL.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Result, StoreError};
use crate::job::{Job, Micros};

/// A pending fire that its deciding process has not confirmed after this long is submitted by
/// any process (the idempotency key makes that safe).
pub const PENDING_GRACE_US: Micros = 3_000_000;

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
    /// Does `what` to the schedule `name` if its record is one this build cannot read (it is
    /// read again, and changed only if it is still the one read): true when done; false when
    /// the record reads (it was fixed, or the caller's error was another), or is gone.
    async fn schedule_unreadable(&self, name: &str, what: Unreadable) -> Result<bool>;
    /// Takes `name` out of the indexes when its record is gone (on Redis a hand `DEL` of the
    /// schedule's key, or `HDEL` of its `b`, left it due for ever: the fire loop met it every few
    /// milliseconds; a hash without `b` is deleted with it): true
    /// when it did; false when the record exists, or the name was in no index (the embedded
    /// store keeps a schedule in one row: always false).
    async fn schedule_orphan(&self, name: &str) -> Result<bool>;
}

/// What [`ScheduleStore::schedule_unreadable`] does to a schedule whose record does not read
/// (written by hand, by a bug): it cannot be read to be deleted or planned like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Delete it (the record and its places in the indexes).
    Delete,
    /// Move its wake time to `at` (µs), so that the fire loop meets it again only then; only if
    /// its wake time is still at or before `due_by` (still due: during a rolling upgrade a newer
    /// build that reads the record may have planned it meanwhile, and its plan stands).
    WakeAt {
        /// The new wake time (µs).
        at: Micros,
        /// The latest wake time (µs) at which it is still due (the caller's now).
        due_by: Micros,
    },
}

/// The error for the unreadable record of schedule `name` (a "corrupt record", as a job's).
pub(crate) fn corrupt(name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt record: schedule {name:?}: {e}"))
}

/// Logs that this build cannot read schedule `name`'s record, met by `what` (a listing, the
/// fire loop): at ERROR the first time and again once a minute has passed, at DEBUG in between,
/// so that a listing read often or many processes do not flood the log.
pub(crate) fn log_unreadable(name: &str, what: &str, error: &dyn std::fmt::Display) {
    let loud = super::log_quiet::loud("schedule", name);
    if loud {
        tracing::error!(schedule = %name, error = %error, met_by = what,
            "unreadable schedule record left out (logged again in a minute if still there; \
             DELETE /async/schedules/{{name}} removes it)");
    } else {
        tracing::debug!(schedule = %name, error = %error, met_by = what,
            "unreadable schedule record left out");
    }
}

// ---------------------------------------------------------------------------------------------
// The stored record (its planning is `crate::schedule`'s)

/// What a fire does while a job of the schedule is still active (any job its recorded runs
/// name, a trigger's or a backfill's too: `crate::schedule::Previous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Submit anyway.
    #[default]
    Allow,
    /// Skip this fire.
    Forbid,
    /// Keep one fire, submitted when no job is active any more; further fires meanwhile are
    /// skipped.
    BufferOne,
    /// Cancel every active job, then submit.
    CancelOther,
}

impl Overlap {
    /// Parses the API word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Self::Allow,
            "forbid" => Self::Forbid,
            "buffer_one" => Self::BufferOne,
            "cancel_other" => Self::CancelOther,
            _ => return None,
        })
    }
}

/// What happens to fire times missed while no process could fire them (downtime, a paused
/// store), within `catchup_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Missed times are dropped; only a fire at most 2 s late runs.
    Skip,
    /// One job for the newest missed time within the window.
    #[default]
    RunOnce,
    /// One job per missed time within the window (at most 1,000).
    All,
}

impl Misfire {
    /// Parses the API word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "skip" => Self::Skip,
            "run_once" => Self::RunOnce,
            "all" => Self::All,
            _ => return None,
        })
    }
}

/// What the client asked for, with defaults filled in: equal specs are "the same body".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Unique name.
    pub name: String,
    /// The cron pattern.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// The submit body of each fire's job.
    pub job: Value,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Misfire policy.
    pub misfire: Misfire,
    /// How far back missed fires are caught up (ms).
    pub catchup_window_ms: u64,
    /// Each job runs at a random-but-fixed delay in `[0, jitter)` after its fire time (ms).
    pub jitter_ms: u64,
    /// The body's `paused` (false when left out): created paused. The state now is
    /// [`Schedule::paused`].
    pub paused: bool,
}

/// A fire decided but not yet confirmed submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingFire {
    /// The fire time (µs).
    pub fire_time: Micros,
    /// When it was decided.
    pub decided_at: Micros,
    /// A job to cancel first (`overlap = "cancel_other"`): the newest active one.
    #[serde(default)]
    pub cancel: Option<Uuid>,
    /// The schedule's other active jobs, cancelled first too (`cancel_other`). A field of its
    /// own, left out when empty, so that a process of an earlier version still reads the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_also: Vec<Uuid>,
    /// From `trigger` or `backfill` rather than the clock.
    #[serde(default)]
    pub manual: bool,
}

/// One line of a schedule's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The fire time (µs).
    pub fire_time: Micros,
    /// `submitted`, `skipped_overlap`, `missed` or `error`.
    pub outcome: String,
    /// The job, when one was submitted.
    #[serde(default)]
    pub job_id: Option<Uuid>,
    /// How many fire times this line stands for (`missed`).
    #[serde(default = "one")]
    pub count: u64,
    /// Details of an error.
    #[serde(default)]
    pub error: Option<String>,
    /// When it was recorded.
    pub at: Micros,
    /// The job's type and channel, when it has a job (entries of older versions have none): the
    /// schedule's template may have changed since, and a caller confined to the new one's type or
    /// channel is not shown the job ids of the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_of: Option<(String, String)>,
}

fn one() -> u64 {
    1
}

/// Per-schedule counters (exported by the metrics module as totals).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Jobs submitted by fires (clock, trigger and backfill).
    pub fires: u64,
    /// Fire times missed (dropped by the misfire policy or the catch-up window).
    pub misfires: u64,
    /// Fires skipped because a job of the schedule was still active.
    pub skipped_overlaps: u64,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// What the client asked for.
    pub spec: ScheduleSpec,
    /// The job every fire submits a copy of (validated and built at creation).
    pub proto: Job,
    /// Paused now (pause/resume).
    pub paused: bool,
    /// The first fire time not yet handled; none when the pattern never fires again.
    pub next_fire: Option<Micros>,
    /// Fires decided, not yet confirmed submitted.
    #[serde(default)]
    pub pending: Vec<PendingFire>,
    /// `buffer_one`: the fire waiting for the active job to end.
    #[serde(default)]
    pub buffered: Option<Micros>,
    /// When a buffered fire is checked again.
    #[serde(default)]
    pub recheck_at: Option<Micros>,
    /// The latest runs, oldest first.
    #[serde(default)]
    pub last_runs: Vec<RunEntry>,
    /// Counters.
    #[serde(default)]
    pub counters: Counters,
    /// Created.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
    /// Bumped on every write (compare-and-set).
    pub version: u64,
}

impl Schedule {
    /// When a process must look at this schedule next: its next fire and a buffered fire's
    /// recheck (unless paused), a pending fire's grace end.
    pub fn wake_at(&self) -> Option<Micros> {
        let mut w: Option<Micros> = None;
        let mut at = |t: Micros| w = Some(w.map_or(t, |x| x.min(t)));
        if !self.paused {
            if let Some(n) = self.next_fire {
                at(n);
            }
        }
        for p in &self.pending {
            at(p.decided_at + PENDING_GRACE_US);
        }
        if self.buffered.is_some() && !self.paused {
            at(self.recheck_at.unwrap_or(0));
        }
        w
    }
}
