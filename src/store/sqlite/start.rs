//! An attempt's start, with its finish when the attempt ended first ([`FinishSlot`]): one write
//! request, one row write. The start's transition, event and notices are applied in memory; the
//! finish then goes through [`apply_in`] as any command does, which writes the row once with both.

use uuid::Uuid;

use super::{append_event, apply_in, apply_stored, load, notices_for, save, WriteCtx};
use crate::job::{apply, now_us, ApplyCtx, Command, EventKind, Job, JobStatus};
use crate::store::{FinishSlot, Notice, Result, StoreError};

/// [`JobStore::apply_start`](crate::store::JobStore::apply_start) in the writer's transaction.
pub(super) fn start_in(
    ctx: &mut WriteCtx<'_>,
    id: Uuid,
    start: Command,
    finish: &FinishSlot,
) -> Result<(Job, Option<Result<Job>>)> {
    let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
    let now = now_us();
    // Taken (and closed) now whatever follows: an offer made after this is recorded on its own.
    // A job whose success emits signals finishes on its own: releasing the jobs waiting on them
    // may be refused after the finish's row and event are written, and only a request of its
    // own rolls that back whole.
    let Some(end) = finish.take().filter(|_| job.emits.is_empty()) else {
        apply_in(ctx, &mut job, start, now)?;
        return Ok((job, None));
    };
    let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
    let was = job.status;
    let ev = apply(&mut job, start, &actx)?;
    if was == JobStatus::Waiting || job.status == JobStatus::Success {
        // Not a start: what `apply_in` does besides the row (waits, signals) would be skipped.
        return Err(StoreError::Backend(format!(
            "apply_start: a start cannot take a job from {was:?} to {:?}",
            job.status
        )));
    }
    if let Some(kind) = ev {
        append_event(ctx, &job, kind)?;
        if kind == EventKind::Status {
            notices_for(ctx, &job);
        } else {
            ctx.notices.push(Notice::Events);
        }
    }
    let started = job.clone();
    // The row is still in `was`: the start is written with the end, or alone below.
    match apply_stored(ctx, &mut job, end, now_us(), was) {
        Ok(()) => {
            if let Some(r) = finish.refill() {
                super::queue::refill_in(ctx, r)?;
            }
            Ok((started, Some(Ok(job))))
        }
        // Refused by the transition (no signals to emit: nothing else refuses), before anything
        // of it was written: the start alone is.
        Err(e @ StoreError::Transition(_)) => {
            save(ctx, &started, was)?;
            Ok((started, Some(Err(e))))
        }
        // The write failed: the whole request (the start included) is rolled back.
        Err(e) => Err(e),
    }
}
