//! [`JobQueue`] for the embedded backend: claims with fencing tokens, leases and heartbeats,
//! promotion of due SCHEDULED jobs, expired leases, and the orphaned leases found at open.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::stored::job_columns;
use super::{
    append_event, apply_in, load, load_readable, row, save, save_row, SqliteStore, WriteCtx,
};
use crate::job::{apply, now_us, ApplyCtx, Beat, Command, Job, Micros};
use crate::store::handoff::{NextJob, Refill};
use crate::store::{JobQueue, Notice, Parked, Result, StoreError};

/// The jobs that hold a lease: the active ones, and the cancelled ones whose worker was still
/// stopping the work.
pub(super) const LEASED_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status IN ('STARTING','RUNNING')
     UNION ALL SELECT ",
    job_columns!(),
    " FROM jobs INDEXED BY jobs_stopping
     WHERE status = 'CANCELLED' AND lease_expires IS NOT NULL"
);

pub(super) fn orphan_leases(conn: &Connection) -> Result<()> {
    // The active jobs, and the cancelled ones whose worker was still stopping the work. A
    // record this build cannot read is left out (logged), not the store's opening.
    let active = readable_jobs(conn, LEASED_SQL, [], usize::MAX, "open")?;
    let actx = ApplyCtx::at(now_us(), 0);
    for mut job in active {
        // No event: the reaper's `LeaseExpired` (or `Adopt`) that follows makes the change seen.
        // The lease only: the status, and so the counts (`counts.rs`), stay.
        let stored = job.status;
        if apply(&mut job, Command::OrphanLease, &actx).is_ok() {
            save_row(conn, &job, stored)?;
        }
    }
    Ok(())
}

/// Takes `n` fencing tokens (one counter for the whole store); returns the first of them.
pub(super) fn take_tokens(conn: &Connection, n: usize) -> Result<u64> {
    let last: i64 = row(
        conn,
        "UPDATE meta SET value = value + ?1 WHERE key = 'token' RETURNING value",
        [n as i64],
        |r| r.get(0),
    )?;
    Ok(last as u64 - n as u64 + 1)
}

/// The scheduled jobs due now, oldest first. `INDEXED BY`: without statistics SQLite's planner
/// takes `jobs_status` for `status = 'SCHEDULED'` and reads every scheduled job's row (and sorts
/// them) on each call; `jobs_due` holds exactly these rows in `run_at` order.
pub(super) const DUE_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs INDEXED BY jobs_due
     WHERE status = 'SCHEDULED' AND run_at <= ?1 ORDER BY run_at LIMIT ?2"
);

/// When the next scheduled job is due: the first entry of `jobs_due` (the scheduler asks after
/// every commit that may have changed it; with `jobs_status` this read every scheduled row).
pub(super) const NEXT_DUE_SQL: &str =
    "SELECT MIN(run_at) FROM jobs INDEXED BY jobs_due WHERE status = 'SCHEDULED'";

/// Active jobs whose lease ran out, oldest lease first, from `jobs_lease` (not every active job
/// read and sorted, as the planner's own choice of `jobs_status` did).
pub(super) const EXPIRED_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs INDEXED BY jobs_lease WHERE status IN ('STARTING','RUNNING') AND lease_expires < ?1
     ORDER BY lease_expires LIMIT ?2"
);

/// Cancelled jobs whose lease ran out before their worker said the work stopped, oldest first,
/// from `jobs_stopping`: the reaper makes sure their work is gone (`Command::StopLost`).
pub(super) const EXPIRED_STOPPING_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs INDEXED BY jobs_stopping
     WHERE status = 'CANCELLED' AND lease_expires IS NOT NULL AND lease_expires < ?1
     ORDER BY lease_expires LIMIT ?2"
);

/// How many unreadable records one read of a queue, of the due jobs or of the expired leases
/// passes over at most (each is logged, [`crate::store::job_record::log_unreadable`]): past
/// them, the read returns what it found.
pub(super) const UNREADABLE_PASSED: usize = 1000;

/// The oldest (up to `max`) readable QUEUED jobs of `runner` ([`readable_jobs`]).
fn oldest_queued(conn: &Connection, runner: &str, max: usize) -> Result<Vec<Job>> {
    readable_jobs(
        conn,
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE runner = ?1 AND status = 'QUEUED'
             ORDER BY queued_at, id LIMIT ?2"
        ),
        params![runner, with_passed(max)],
        max,
        "claim",
    )
}

/// `LIMIT` for a read of up to `max` readable rows: `max` and [`UNREADABLE_PASSED`] more.
pub(super) fn with_passed(max: usize) -> i64 {
    i64::try_from(max.saturating_add(UNREADABLE_PASSED)).unwrap_or(i64::MAX)
}

/// Up to `max` jobs of `sql` (its `LIMIT` [`with_passed`]), in its order. A record this build
/// cannot read (a newer build's, a hand edit, bytes that are not text, a column of the wrong
/// type) is left out and logged (met by `what`), as Redis's rounds leave it out: the jobs after
/// it are read (up to [`UNREADABLE_PASSED`] such records in one read: past them, logged at
/// ERROR, the jobs behind wait), so one record cannot stop a queue, the promotion of due jobs,
/// or the reaper.
pub(super) fn readable_jobs(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    max: usize,
    what: &str,
) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare_cached(sql).map_err(super::db_err)?;
    let mut rows = stmt.query(p).map_err(super::db_err)?;
    let mut out = Vec::with_capacity(max.min(64));
    let mut passed = 0usize;
    while out.len() < max {
        let Some(r) = rows.next().map_err(super::db_err)? else {
            break;
        };
        let read = super::stored::JobRow::read(r).map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Backend(format!("corrupt record: a column of the job's row: {e}"))
            }
            e => super::db_err(e),
        });
        match read.and_then(super::stored::JobRow::into_job) {
            Ok(job) => out.push(job),
            Err(e) if crate::store::job_record::is_corrupt(&e) => {
                let id = r.get::<_, String>(1).unwrap_or_default();
                crate::store::job_record::log_unreadable(&id, what, &e);
                passed += 1;
                if passed == UNREADABLE_PASSED {
                    log_passed_bound(what);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Logs (at ERROR, once a minute) that a read met [`UNREADABLE_PASSED`] unreadable records in a
/// row and returned what it had: the jobs behind them wait until some are deleted or set right.
fn log_passed_bound(what: &str) {
    static LAST: parking_lot::Mutex<Option<std::time::Instant>> = parking_lot::Mutex::new(None);
    let mut last = LAST.lock();
    if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        tracing::error!(
            met_by = what,
            passed = UNREADABLE_PASSED,
            "a read passed over this many unreadable job records and stopped: the jobs behind them wait until those records are deleted or set right"
        );
    }
}

/// Claims `queued` (QUEUED jobs just read) for `worker`, in the writer's transaction:
/// [`JobQueue::claim`], and a finish's refill ([`refill_in`]).
fn claim_these(
    ctx: &mut WriteCtx<'_>,
    queued: Vec<Job>,
    worker: &str,
    lease_ttl: Duration,
) -> Result<Vec<Job>> {
    if queued.is_empty() {
        return Ok(vec![]);
    }
    let first = take_tokens(ctx.conn, queued.len())?;
    let now = now_us();
    let lease_until = now + lease_ttl.as_micros() as i64;
    let mut out = Vec::with_capacity(queued.len());
    for (i, mut job) in queued.into_iter().enumerate() {
        let cmd = Command::Claim {
            worker: worker.to_string(),
            token: first + i as u64,
            lease_until,
        };
        apply_in(ctx, &mut job, cmd, now)?;
        out.push(job);
    }
    Ok(out)
}

/// After a worker's finish in the same transaction: claims the oldest readable QUEUED job of
/// the refill's runner for its worker, passed over after the commit (`handoff::Refill`).
/// Nothing queued (or nothing readable, [`oldest_queued`]), and nothing was written: the place
/// is dropped (the worker hears "nothing" at once) and the finish stands. A claim of a QUEUED
/// job is never refused, so only the database failing fails this, and with it the finish's
/// request.
pub(super) fn refill_in(ctx: &mut WriteCtx<'_>, refill: &Refill) -> Result<()> {
    let Some(taken) = refill.take() else {
        return Ok(());
    };
    let queued = oldest_queued(ctx.conn, &refill.runner, 1)?;
    if let Some(job) = claim_these(ctx, queued, &taken.worker, taken.lease_ttl)?.pop() {
        ctx.handed.push((taken, job));
    }
    Ok(())
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn claim(
        &self,
        runner: &str,
        worker: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(vec![]);
        }
        let runner = runner.to_string();
        let worker = worker.to_string();
        // Only QUEUED jobs are read, and a claim of a QUEUED job is never refused: nothing is
        // refused after the first write.
        self.write_whole(move |ctx| {
            let queued = oldest_queued(ctx.conn, &runner, max)?;
            claim_these(ctx, queued, &worker, lease_ttl)
        })
        .await
    }

    async fn adopt(
        &self,
        id: Uuid,
        expected: Option<u64>,
        worker: &str,
        lease_ttl: Duration,
    ) -> Result<Job> {
        let worker = worker.to_string();
        self.write(move |ctx| {
            let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
            let token = take_tokens(ctx.conn, 1)?;
            let now = now_us();
            let cmd = Command::Adopt {
                expected,
                worker,
                token,
                lease_until: now + lease_ttl.as_micros() as i64,
            };
            apply_in(ctx, &mut job, cmd, now)?;
            Ok(job)
        })
        .await
    }

    async fn fence(&self, id: Uuid, expected: u64) -> Result<Job> {
        self.write(move |ctx| {
            let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
            let token = take_tokens(ctx.conn, 1)?;
            apply_in(ctx, &mut job, Command::Fence { expected, token }, now_us())?;
            Ok(job)
        })
        .await
    }

    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>> {
        let held = held.to_vec();
        let worker = worker.to_string();
        self.write(move |ctx| {
            let now = now_us();
            let until = now + lease_ttl.as_micros() as i64;
            let mut lost = Vec::new();
            let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
            for (id, token) in held {
                // Gone, or a record this build cannot read: reported lost (as on Redis), its
                // worker stops the job, and the others' leases are renewed.
                let Some(Some(mut job)) = load_readable(ctx.conn, &id.to_string(), "heartbeat")?
                else {
                    lost.push(id);
                    continue;
                };
                let stored = job.status;
                match crate::job::heartbeat(&mut job, &worker, token, until, &actx) {
                    Beat::Renewed(ev) => {
                        save(ctx, &job, stored)?;
                        if let Some(kind) = ev {
                            append_event(ctx, &job, kind)?;
                            ctx.notices.push(Notice::Events);
                        }
                    }
                    Beat::Finishing => {}
                    Beat::Lost => lost.push(id),
                    Beat::Stopping => {
                        save(ctx, &job, stored)?;
                        lost.push(id);
                    }
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn promote_due(&self, max: usize) -> Result<usize> {
        self.write(move |ctx| {
            let now = now_us();
            // A record this build cannot read is left out (logged), and up to
            // `UNREADABLE_PASSED` of them are passed over: the due jobs behind it are promoted.
            let p = params![now, with_passed(max)];
            let due = readable_jobs(ctx.conn, DUE_SQL, p, max, "promotion")?;
            let n = due.len();
            for mut job in due {
                apply_in(ctx, &mut job, Command::Promote, now)?;
            }
            Ok(n)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Micros>> {
        self.read_min(NEXT_DUE_SQL).await
    }

    async fn queued_ids(&self, runner: &str, skip: usize, max: usize) -> Result<Vec<Uuid>> {
        let runner = runner.to_string();
        let (skip, max) = (
            i64::try_from(skip).unwrap_or(i64::MAX),
            i64::try_from(max).unwrap_or(i64::MAX),
        );
        self.read(move |conn| {
            super::sql::rows(
                conn,
                "SELECT id FROM jobs WHERE runner = ?1 AND status = 'QUEUED'
                 ORDER BY queued_at, id LIMIT ?2 OFFSET ?3",
                params![runner, max, skip],
                // An id that is not one (a hand edit): its place counts, it is passed.
                |r| Ok(Uuid::parse_str(&r.get::<_, String>(0)?).unwrap_or(Uuid::nil())),
            )
        })
        .await
    }

    fn park(&self, runner: &str, worker: &str, lease_ttl: Duration, max: usize) -> Option<Parked> {
        Some(self.handoffs.park(runner, worker, lease_ttl, max))
    }

    async fn claim_parked(&self, parked: &[u64]) -> Result<bool> {
        let parked = parked.to_vec();
        // In the writer, as the submits' hand-offs are: nothing between its read of the queue
        // and the places it takes.
        self.write_whole(move |ctx| {
            let mut drained = true;
            // Every read first: a whole request refuses only before its first write
            // (`whole.rs`). An unreadable record is left out by the read (`oldest_queued`).
            let mut reads = Vec::with_capacity(parked.len());
            for id in parked {
                let Some((runner, left)) = ctx.handoffs.places(id) else {
                    drained = false;
                    continue;
                };
                let queued = oldest_queued(ctx.conn, &runner, left)?;
                // As many as its places: more may wait.
                drained &= queued.len() < left;
                reads.push((id, queued));
            }
            for (id, queued) in reads {
                let taken = ctx.handoffs.take_places(id, queued.len());
                let Some(first) = taken.first() else {
                    continue;
                };
                let (worker, lease_ttl) = (first.worker.clone(), first.lease_ttl);
                let queued = queued.into_iter().take(taken.len()).collect();
                let claimed = claim_these(ctx, queued, &worker, lease_ttl)?;
                ctx.handed.extend(taken.into_iter().zip(claimed));
            }
            Ok(drained)
        })
        .await
    }

    fn refill(
        &self,
        runner: &str,
        worker: &str,
        lease_ttl: Duration,
    ) -> Option<(std::sync::Arc<Refill>, NextJob)> {
        Some(crate::store::handoff::refill(runner, worker, lease_ttl))
    }

    async fn expired(&self, max: usize) -> Result<Vec<Job>> {
        self.read(move |c| {
            let now = now_us();
            let mut jobs = readable_jobs(
                c,
                EXPIRED_SQL,
                params![now, with_passed(max)],
                max,
                "reaper",
            )?;
            let left = max.saturating_sub(jobs.len());
            if left > 0 {
                let (sql, p) = (EXPIRED_STOPPING_SQL, params![now, with_passed(left)]);
                jobs.extend(readable_jobs(c, sql, p, left, "reaper")?);
            }
            Ok(jobs)
        })
        .await
    }
}

#[cfg(test)]
#[path = "refill_tests.rs"]
mod refill_tests;
