//! A job's `notify`: the webhook its events go to and which of them, and the one decision the
//! stores take with it (does this event make a delivery?). Data of the job model, so that the job
//! and the stores name it without depending on the delivery loop ([`crate::notify`], which
//! re-exports these names and checks the URL at submit).

use serde::{Deserialize, Serialize};

use super::{EventKind, Job};

/// Which events of a job are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    /// Status events whose status is terminal (SUCCESS, ERROR, TIMEOUT, CANCELLED).
    Terminal,
    /// Every status event (terminal ones included).
    Status,
    /// Progress events (throttled by `events.progress_interval`).
    Progress,
}

impl NotifyEvent {
    /// Parses one event word; the error names the accepted words.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "terminal" => Ok(Self::Terminal),
            "status" => Ok(Self::Status),
            "progress" => Ok(Self::Progress),
            other => Err(format!(
                "unknown event `{other}`: expected \"terminal\", \"status\" or \"progress\""
            )),
        }
    }
}

/// A job's webhook: where its events go and which ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The receiver (http or https), normalised.
    pub url: String,
    /// The events delivered (sorted, no duplicates, at least one).
    pub events: Vec<NotifyEvent>,
}

impl NotifySpec {
    /// True when an event of `kind` for `job` (as changed) is to be delivered.
    pub fn wants(&self, job: &Job, kind: EventKind) -> bool {
        self.events.iter().any(|e| match (e, kind) {
            (NotifyEvent::Status, EventKind::Status) => true,
            (NotifyEvent::Terminal, EventKind::Status) => job.status.is_terminal(),
            (NotifyEvent::Progress, EventKind::Progress) => true,
            _ => false,
        })
    }
}

/// True when `job` has a webhook that wants its event of `kind`: the store then writes a delivery
/// with the event.
pub fn wants(job: &Job, kind: EventKind) -> bool {
    job.notify.as_ref().is_some_and(|n| n.wants(job, kind))
}
