//! Writing a job's row after a change: [`apply_in`] (a command through the status machine, its
//! row, event, notices, waits and signals) and [`save`] (the row itself, with the change of the
//! counts the writer keeps, `counts.rs`).

use rusqlite::{params, Connection};

use super::{append_event, exec, jobs, notices_for, signals, stored, waits, WriteCtx};
use crate::job::{apply, ApplyCtx, Command, EventKind, Job, JobStatus, Micros};
use crate::store::{Notice, Result, StoreError};

/// Writes `job` over its row, whose status is `stored` (the status the job was read or last
/// written in: an attempt's start writes its end only), and notes the change of the counts.
pub(super) fn save(ctx: &mut WriteCtx<'_>, job: &Job, stored: JobStatus) -> Result<()> {
    save_row(ctx.conn, job, stored)?;
    if stored != job.status {
        ctx.counts.add(&job.job_type, stored.as_str(), -1);
        ctx.counts.add(&job.job_type, job.status.as_str(), 1);
    }
    Ok(())
}

/// [`save`] without noting the counts: for a write that keeps the status (`orphan_leases`, at
/// open). The `UPDATE` finds the row only in status `stored`, so the counts kept by the writer
/// (`counts.rs`) cannot be given a wrong old status: that is an error here.
pub(super) fn save_row(conn: &Connection, job: &Job, stored: JobStatus) -> Result<()> {
    let body = stored::job_body(job)?;
    let n = exec(
        conn,
        "UPDATE jobs SET status = ?2, run_at = ?3, lease_expires = ?4, queued_at = ?5,
                finished_at = ?6, body = ?7, runner = ?9 WHERE id = ?1 AND status = ?8",
        params![
            job.id.to_string(),
            job.status.as_str(),
            job.run_at,
            job.lease.as_ref().map(|l| l.expires_at),
            job.queued_at,
            job.finished_at,
            body,
            stored.as_str(),
            job.runner
        ],
    )?;
    if n != 1 {
        return Err(StoreError::Backend(format!(
            "job {} is not stored as {}: not written",
            job.id,
            stored.as_str()
        )));
    }
    jobs::save_file_refs(conn, job)
}

pub(super) fn apply_in(
    ctx: &mut WriteCtx<'_>,
    job: &mut Job,
    cmd: Command,
    now: Micros,
) -> Result<()> {
    let stored = job.status;
    apply_stored(ctx, job, cmd, now, stored)
}

/// [`apply_in`] to a job whose row is stored in status `stored` (not the job's own status when
/// an earlier change of it was not written: an attempt's start, `start.rs`).
pub(super) fn apply_stored(
    ctx: &mut WriteCtx<'_>,
    job: &mut Job,
    cmd: Command,
    now: Micros,
    stored: JobStatus,
) -> Result<()> {
    let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
    let was = job.status;
    let uploads = jobs::upload_hashes(job);
    let ev = apply(job, cmd, &actx)?;
    save(ctx, job, stored)?;
    jobs::drop_file_refs(ctx.conn, job, uploads)?;
    if was == JobStatus::Waiting && job.status != JobStatus::Waiting {
        waits::leave_in(ctx.conn, &job.id.to_string())?;
        crate::store::waits::counters().count_release(job);
    }
    let emitted = job.status == JobStatus::Success && was != JobStatus::Success;
    if emitted && !job.emits.is_empty() {
        signals::emit_in(ctx.conn, job, now)?;
    }
    if let Some(kind) = ev {
        append_event(ctx, job, kind)?;
        if kind == EventKind::Status {
            notices_for(ctx, job);
        } else {
            ctx.notices.push(Notice::Events);
        }
    }
    if emitted {
        // The jobs these signals complete are released in this same transaction.
        for key in job.emits.clone() {
            waits::on_signal(ctx, &key)?;
        }
    }
    Ok(())
}
