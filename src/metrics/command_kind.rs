//! What a committed command did, as far as the metrics care.

use crate::job::JobStatus;

/// What a committed command did, as far as the metrics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// A worker's outcome of an attempt (success, failure, timeout).
    Finish,
    /// A job's own report through the hook that ended it (SUCCESS or ERROR).
    HookFinal,
    /// A client's cancel.
    Cancel,
    /// The reaper's recovery of an expired lease.
    LeaseExpired,
    /// The reaper's giving up of a cancelled job's expired lease (`Command::StopLost`): the job
    /// stays CANCELLED.
    StopLost,
    /// Anything else that changes the status (start, release, retry, host failure, promote...).
    OtherStatus,
    /// A change that keeps the status (progress, a file, adopt).
    Same,
}

impl CommandKind {
    /// The kind of `cmd`.
    pub fn of(cmd: &crate::job::Command) -> Self {
        use crate::job::Command as C;
        match cmd {
            C::Finish { .. } => Self::Finish,
            C::Hook(r) => match r.status {
                Some(JobStatus::Success) | Some(JobStatus::Error) => Self::HookFinal,
                Some(JobStatus::Running) => Self::OtherStatus,
                _ => Self::Same,
            },
            C::Cancel => Self::Cancel,
            C::LeaseExpired { .. } => Self::LeaseExpired,
            C::StopLost { .. } => Self::StopLost,
            // The time limit marks the attempt; its status changes with the finish after.
            // A cancelled job's lease given up: it stays CANCELLED.
            C::Progress { .. }
            | C::AttachFile { .. }
            | C::Adopt { .. }
            | C::Fence { .. }
            | C::TimeLimit { .. }
            | C::Stopped { .. }
            | C::OrphanLease => Self::Same,
            _ => Self::OtherStatus,
        }
    }

    pub(super) fn changes_status(self) -> bool {
        !matches!(self, Self::Same | Self::StopLost)
    }

    /// A lease that ran out, recovered by the reaper.
    pub(super) fn expired_lease(self) -> bool {
        matches!(self, Self::LeaseExpired | Self::StopLost)
    }
}
