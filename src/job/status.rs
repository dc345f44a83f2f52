//! Job statuses and the one table of legal transitions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its life. Terminal statuses are final except for an explicit retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waits for `run_at` (a delayed job, or a retry's backoff).
    Scheduled,
    /// Waits for readiness signals.
    Waiting,
    /// Ready to be claimed by a worker.
    Queued,
    /// Claimed by a worker, being launched.
    Starting,
    /// Running.
    Running,
    /// Finished successfully.
    Success,
    /// Failed, with no attempt left.
    Error,
    /// Ran past its timeout and was stopped.
    Timeout,
    /// Cancelled by a client.
    Cancelled,
}

use JobStatus::*;

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [JobStatus; 9] = [
        Scheduled, Waiting, Queued, Starting, Running, Success, Error, Timeout, Cancelled,
    ];

    /// True for SUCCESS, ERROR, TIMEOUT and CANCELLED.
    pub fn is_terminal(self) -> bool {
        matches!(self, Success | Error | Timeout | Cancelled)
    }

    /// True while a worker holds the job (STARTING, RUNNING).
    pub fn is_active(self) -> bool {
        matches!(self, Starting | Running)
    }

    /// The upper-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduled => "SCHEDULED",
            Waiting => "WAITING",
            Queued => "QUEUED",
            Starting => "STARTING",
            Running => "RUNNING",
            Success => "SUCCESS",
            Error => "ERROR",
            Timeout => "TIMEOUT",
            Cancelled => "CANCELLED",
        }
    }

    /// The Superset word for this status (`pending`, `running`, `done`, `error`).
    pub fn superset(self) -> &'static str {
        match self {
            Queued | Starting | Scheduled | Waiting => "pending",
            Running => "running",
            Success => "done",
            Error | Timeout | Cancelled => "error",
        }
    }

    /// Whether a job may move from `self` to `to` (a retry of a terminal job is the only way out
    /// of a terminal status, and is checked by [`JobStatus::can_retry`]).
    pub fn can_move_to(self, to: JobStatus) -> bool {
        match self {
            Scheduled | Waiting => matches!(to, Queued | Cancelled | Error),
            Queued => matches!(to, Starting | Cancelled),
            // A failed attempt with attempts left goes back to SCHEDULED (backoff) or QUEUED
            // (lost worker, released at shutdown).
            Starting => matches!(
                to,
                Running | Success | Error | Timeout | Cancelled | Scheduled | Queued
            ),
            Running => matches!(
                to,
                Success | Error | Timeout | Cancelled | Scheduled | Queued
            ),
            Success | Error | Timeout | Cancelled => false,
        }
    }

    /// Whether an explicit retry is allowed (a job that did not succeed).
    pub fn can_retry(self) -> bool {
        matches!(self, Error | Timeout | Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown status `{s}` (expected one of {})",
                    JobStatus::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_never_move() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobStatus::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn nothing_moves_backwards_to_starting_except_by_claim() {
        for from in JobStatus::ALL {
            let ok = from.can_move_to(Starting);
            assert_eq!(ok, from == Queued, "{from} -> STARTING");
        }
    }

    #[test]
    fn parse_and_superset_words() {
        assert_eq!("running".parse::<JobStatus>().unwrap(), Running);
        assert!("nope".parse::<JobStatus>().unwrap_err().contains("SUCCESS"));
        assert_eq!(Timeout.superset(), "error");
        assert_eq!(Success.superset(), "done");
        assert_eq!(Scheduled.superset(), "pending");
    }
}
