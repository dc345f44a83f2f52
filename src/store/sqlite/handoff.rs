//! The embedded store's side of the direct hand-off (`store/handoff.rs`): a submit claims its
//! job for a parked worker ([`hand_over`]); after the commit the writer passes it over
//! ([`deliver`]) or, when the worker is gone, gives it back to the queue ([`give_back`]).

use rusqlite::Connection;

use super::jobs::insert;
use super::{append_event, apply_in, db_err, load, notices_for, row_opt, sql, WriteCtx, WriteOp};
use crate::job::{apply, now_us, ApplyCtx, Command, EventKind, Job};
use crate::store::handoff::Taken;
use crate::store::{Notice, Result, StoreError};

/// Passes each committed hand-off to its worker; one whose worker is gone is given back to the
/// queue by a write queued first in the writer's next batch (`batch`).
pub(super) fn deliver(handed: Vec<(Taken, Job)>, batch: &mut Vec<WriteOp>) {
    for (taken, job) in handed {
        if let Some(job) = taken.deliver(job) {
            batch.push(give_back(job));
        }
    }
}

/// True when a job of `runner` is QUEUED (`jobs_queue`).
pub(super) fn queued_for(conn: &Connection, runner: &str) -> Result<bool> {
    Ok(row_opt(
        conn,
        "SELECT 1 FROM jobs WHERE runner = ?1 AND status = 'QUEUED' LIMIT 1",
        [runner],
        |r| r.get::<_, i64>(0),
    )?
    .is_some())
}

/// Stores the new QUEUED job already claimed for the parked worker `taken`, as a claim would
/// leave it: a fencing token, the lease, the QUEUED and then the STARTING event. The row is
/// written once, STARTING (never in `jobs_queue`); passed over after the commit. No
/// `Notice::Queued`: nobody else is to claim it.
pub(super) fn hand_over(ctx: &mut WriteCtx<'_>, job: &Job, taken: Taken) -> Result<()> {
    append_event(ctx, job, EventKind::Status)?;
    ctx.notices.push(Notice::Changed {
        job_id: job.id,
        status: job.status,
    });
    let token = super::queue::take_tokens(ctx.conn, 1)?;
    let now = now_us();
    let cmd = Command::Claim {
        worker: taken.worker.clone(),
        token,
        lease_until: now + taken.lease_ttl.as_micros() as i64,
    };
    // What `apply_in` does for a claim of a QUEUED job (no waits, no signals), the row written
    // once.
    let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
    let mut claimed = job.clone();
    let ev = apply(&mut claimed, cmd, &actx)?;
    insert(ctx, &claimed)?;
    if let Some(kind) = ev {
        append_event(ctx, &claimed, kind)?;
        notices_for(ctx, &claimed);
    }
    ctx.handed.push((taken, claimed));
    Ok(())
}

/// The write that gives a job back to the queue when the worker it was handed to is gone.
pub(super) fn give_back(job: Job) -> WriteOp {
    let token = job.lease.as_ref().map(|l| l.token).unwrap_or_default();
    Box::new(move |ctx| {
        let r = (|| {
            super::whole::savepoint(ctx)?;
            let mark = ctx.mark();
            let r = load(ctx.conn, &job.id.to_string())?
                .ok_or(StoreError::NotFound)
                .and_then(|mut j| apply_in(ctx, &mut j, Command::Release { token }, now_us()));
            if r.is_err() {
                ctx.undo(mark);
                sql::control(ctx.conn, "ROLLBACK TO op").map_err(db_err)?;
            }
            sql::control(ctx.conn, "RELEASE op").map_err(db_err)?;
            r
        })();
        let id = job.id;
        Box::new(move |commit_err| match (r, commit_err) {
            (Ok(()), None) => {
                tracing::info!(job_id = %id, "hand-off undelivered (its worker stopped): job requeued")
            }
            (Err(e), _) => {
                tracing::warn!(job_id = %id, error = %e, "hand-off undelivered and not requeued: the lease expiry will")
            }
            (_, Some(e)) => {
                tracing::warn!(job_id = %id, error = %e, "hand-off undelivered and not requeued: the lease expiry will")
            }
        })
    })
}

#[cfg(test)]
#[path = "handoff_tests.rs"]
mod tests;
