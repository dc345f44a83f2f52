//! A job's `wait`: the readiness signals a WAITING job waits for, its deadline, and how it was
//! released. Data of the job model, so that the job, its transitions and the stores name it
//! without depending on the wait loop ([`crate::waiting`], which re-exports these names).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{rfc3339, Micros};

/// The error code of a job failed by its deadline (`on_deadline: "fail"`).
pub const DEADLINE_MISSED: &str = "deadline_missed";
/// The reason of a job cancelled by its deadline (`on_deadline: "skip"`).
pub const SKIPPED: &str = "skipped";

/// The most record numbers (`signal_ids`) one item keeps and shows: the first ones counted.
/// `seen` still counts them all.
pub const MAX_SIGNAL_IDS: usize = 32;

/// What happens at the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadline {
    /// The job runs anyway (QUEUED).
    #[default]
    Run,
    /// The job fails (ERROR, `deadline_missed`).
    Fail,
    /// The job is cancelled (CANCELLED, `skipped`).
    Skip,
}

/// How a waiting job was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleasedBy {
    /// Every item had its count of records.
    Signals,
    /// The deadline passed first.
    Deadline,
}

/// One thing a job waits for: `needed` records of `key` written at or after `since`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitItem {
    /// The signal key.
    pub key: String,
    /// How many records.
    pub needed: u32,
    /// Records before this time (µs) do not count; `None`: every record kept counts.
    #[serde(default)]
    pub since: Option<Micros>,
    /// Records seen when the job was released (the API shows the live count while it waits).
    #[serde(default)]
    pub seen: u32,
    /// The sequence numbers of the first records that counted: at most `needed`, and at most
    /// [`MAX_SIGNAL_IDS`] (a job's size stays bounded by what its client sent: 100 items of
    /// 10,000 records would keep a million numbers).
    #[serde(default)]
    pub signal_ids: Vec<u64>,
}

/// Why a job waits, and how it was released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    /// The conditions (all must hold).
    pub items: Vec<WaitItem>,
    /// When the job stops waiting whatever the signals (µs).
    #[serde(default)]
    pub deadline: Option<Micros>,
    /// What the deadline does.
    #[serde(default)]
    pub on_deadline: OnDeadline,
    /// How it was released, once it was.
    #[serde(default)]
    pub released_by: Option<ReleasedBy>,
    /// When it was released.
    #[serde(default)]
    pub released_at: Option<Micros>,
}

impl Wait {
    /// The last time a record counts for the job (inclusive): its deadline, if it has one. A
    /// record written after the deadline releases nothing, also when the job only starts
    /// waiting after it (a backfill's or a catch-up's fire).
    pub fn until(&self) -> Micros {
        self.deadline.unwrap_or(Micros::MAX)
    }

    /// The `wait` object of the API.
    pub fn to_public(&self) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "key": i.key,
                    "needed": i.needed,
                    "since": i.since.map(rfc3339),
                    "seen": i.seen,
                    "signal_ids": i.signal_ids,
                    "signal_ids_truncated": i.seen as usize > i.signal_ids.len(),
                })
            })
            .collect();
        serde_json::json!({
            "items": items,
            "deadline": self.deadline.map(rfc3339),
            "on_deadline": self.on_deadline,
            "released_by": self.released_by,
            "released_at": self.released_at.map(rfc3339),
        })
    }
}

/// The records found for each item: (how many counted, the numbers of the first of them, at
/// most [`MAX_SIGNAL_IDS`]).
pub type Seen = Vec<(u32, Vec<u64>)>;

/// True when every item has its count.
pub fn all_met(items: &[WaitItem], seen: &Seen) -> bool {
    items.len() == seen.len() && items.iter().zip(seen).all(|(i, s)| s.0 >= i.needed)
}
