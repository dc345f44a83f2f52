//! A worker's heartbeat for one job it holds: renewed, finishing, lost or stopping.

use super::{apply, ApplyCtx, Command, EventKind, TransitionError};
use crate::job::{Job, JobStatus, Micros};

/// What a worker's heartbeat found for one job it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The lease was renewed: write the job, with this event (a held progress event past its
    /// time goes with the renewal).
    Renewed(Option<EventKind>),
    /// The attempt reported its own SUCCESS/ERROR and the job is no longer active: nothing to
    /// write, and the work is left to exit by itself.
    Finishing,
    /// Cancelled, timed out or taken over: nothing to write; the worker must stop the work.
    Lost,
    /// Cancelled while this attempt ran: the worker must stop the work, and the lease it kept
    /// is renewed (write the job) until it says the work stopped (`Command::Stopped`), so that
    /// no retry runs beside a stop that takes longer than a lease.
    Stopping,
}

/// A heartbeat for one held job, through [`apply`] (`Command::Heartbeat`): the one rule both
/// backends follow for "renewed, finishing, lost or stopping". `job` is changed only when
/// `Renewed` or `Stopping`.
pub fn heartbeat(
    job: &mut Job,
    worker: &str,
    token: u64,
    lease_until: Micros,
    ctx: &ApplyCtx,
) -> Beat {
    if job.status == JobStatus::Cancelled {
        if let Some(l) = job
            .lease
            .as_mut()
            .filter(|l| l.token == token && l.worker == worker)
        {
            l.expires_at = l.expires_at.max(lease_until);
            // A write as any other: a writer that read the job before it conflicts.
            job.version += 1;
            return Beat::Stopping;
        }
    }
    let cmd = Command::Heartbeat {
        worker: worker.to_string(),
        token,
        lease_until,
    };
    match apply(job, cmd, ctx) {
        Ok(ev) => Beat::Renewed(ev),
        Err(TransitionError::Illegal { .. })
            if matches!(job.status, JobStatus::Success | JobStatus::Error) =>
        {
            Beat::Finishing
        }
        Err(_) => Beat::Lost,
    }
}
