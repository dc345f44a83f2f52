//! [`JobStore`] for the embedded backend: submit (with its idempotency key), get, list, apply.

use async_trait::async_trait;
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::stored::{JobRow, JOB_COLUMNS};
use super::{
    append_event, apply_in, db_err, exec, load, notices_for, row_opt, waits, SqliteStore, WriteCtx,
};
use crate::job::{now_us, Command, EventKind, Job, JobStatus};
use crate::store::{paging, JobPage, JobStore, ListQuery, Names, Result, StoreError, Submitted};

/// The listing's channel index, created at open: only jobs in a channel other than their own
/// (by default a job's channel is its id), so a default submit writes no entry here (about 100
/// bytes of database per job). A job in its own channel is found by its id ([`list_sql`]).
/// Databases opened by the build that indexed every job (`jobs_channel`) drop that index.
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS jobs_shared_channel ON jobs(channel, id) WHERE channel <> id;
DROP INDEX IF EXISTS jobs_channel;
";

#[async_trait]
impl JobStore for SqliteStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        // Entering WAITING may be refused after the row is written: that one keeps a savepoint.
        if job.status == JobStatus::Waiting {
            return self.write(move |ctx| submit_in(ctx, job)).await;
        }
        self.write_whole(move |ctx| submit_in(ctx, job)).await
    }

    async fn submit_many(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        self.submit_batch(jobs).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        self.read(move |c| load(c, &id.to_string())).await
    }

    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        self.read(move |c| list_in(c, &q)).await
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.write(move |ctx| apply_to(ctx, id, cmd)).await
    }

    async fn finish(
        &self,
        id: Uuid,
        cmd: Command,
        refill: Option<std::sync::Arc<crate::store::handoff::Refill>>,
    ) -> Result<Job> {
        self.write(move |ctx| {
            let job = apply_to(ctx, id, cmd)?;
            if let Some(r) = &refill {
                super::queue::refill_in(ctx, r)?;
            }
            Ok(job)
        })
        .await
    }

    async fn apply_start(
        &self,
        id: Uuid,
        start: Command,
        finish: std::sync::Arc<crate::store::FinishSlot>,
    ) -> Result<(Job, Option<Result<Job>>)> {
        // Its refusals (no such job, a refused transition) all come before its first write.
        self.write_whole(move |ctx| super::start::start_in(ctx, id, start, &finish))
            .await
    }
}

/// Applies `cmd` to the stored job `id` in the writer's transaction ([`apply_in`]).
fn apply_to(ctx: &mut super::WriteCtx<'_>, id: Uuid, cmd: Command) -> Result<Job> {
    let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
    apply_in(ctx, &mut job, cmd, now_us())?;
    Ok(job)
}

type Args = Vec<Box<dyn rusqlite::ToSql>>;

/// The filters of a listing the indexes answer but the channel, as `AND` terms: status
/// (`jobs_status`), the id range (the primary key) below `upper`; the type glob is checked on the
/// `type` column, before any body is read; so is a confined caller's visibility, on the `type`
/// and `channel` columns, so that every row read is one it sees (`paging`).
fn list_filter(q: &ListQuery, upper: Option<&str>) -> (String, Args) {
    let mut filter = String::new();
    let mut args: Args = Vec::new();
    if let Some(v) = &q.visible {
        visible_terms(&mut filter, &mut args, "type", v.types.as_ref());
        // Channels read by name from the index are the caller's own already.
        if q.channel.is_some() || indexed_channels(q).is_none() {
            visible_terms(&mut filter, &mut args, "channel", v.channels.as_ref());
        }
    }
    if let Some(s) = q.status_read() {
        filter.push_str(" AND status = ?");
        args.push(Box::new(s.as_str()));
    }
    if let Some(t) = &q.job_type {
        // The Rust matcher the runners and the Redis store use, not SQLite's `GLOB`.
        filter.push_str(" AND runyard_glob(?, type)");
        args.push(Box::new(t.clone()));
    }
    let (lower, _) = q.id_range();
    if let Some(lo) = lower {
        filter.push_str(" AND id >= ?");
        args.push(Box::new(lo.to_string()));
    }
    if let Some(u) = upper {
        filter.push_str(" AND id < ?");
        args.push(Box::new(u.to_string()));
    }
    (filter, args)
}

/// `AND (col matches one of names)`: `=` for exact names, else the runyard glob matcher.
fn visible_terms(filter: &mut String, args: &mut Args, col: &str, names: Option<&Names>) {
    let Some(n) = names else { return };
    if n.list.is_empty() {
        filter.push_str(" AND 0");
        return;
    }
    let one = if n.exact {
        format!("{col} = ?")
    } else {
        format!("runyard_glob(?, {col})")
    };
    filter.push_str(" AND (");
    for (i, name) in n.list.iter().enumerate() {
        if i > 0 {
            filter.push_str(" OR ");
        }
        filter.push_str(&one);
        args.push(Box::new(name.clone()));
    }
    filter.push(')');
}

/// The channels a listing reads from the channel index: the one asked for, else those a
/// confined caller sees when they are a few names without wildcards (a JWT's channel, a token's
/// `channels = ["tenant-a"]`); `None`: read by id.
fn indexed_channels(q: &ListQuery) -> Option<Vec<&str>> {
    if let Some(ch) = &q.channel {
        return Some(vec![ch.as_str()]);
    }
    let n = q.visible.as_ref()?.channels.as_ref()?;
    let literal = |s: &String| n.exact || !s.contains(['*', '?']);
    (!n.list.is_empty() && n.list.len() <= 8 && n.list.iter().all(literal)).then(|| {
        // Each channel once: the union of its reads would list a repeated one's jobs twice.
        let mut v: Vec<&str> = n.list.iter().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// One batch of a listing, newest first, below `upper`. A channel is read as the jobs in it that
/// are not their own channel (`jobs_shared_channel`) and the job whose id it is (the primary key);
/// several channels ([`indexed_channels`]) as the union of those reads.
pub(super) fn list_sql(q: &ListQuery, upper: Option<&str>, limit: usize) -> (String, Args) {
    let (filter, mut args) = list_filter(q, upper);
    let Some(channels) = indexed_channels(q) else {
        args.push(Box::new(limit as i64));
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1{filter} ORDER BY id DESC LIMIT ?");
        return (sql, args);
    };
    // `channel <> id` as in the partial index's `WHERE`, so that the planner can use it.
    let one = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE channel = ? AND channel <> id{filter} \
         UNION ALL \
         SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? AND channel = ?{filter}"
    );
    let mut all: Args = Vec::new();
    for ch in &channels {
        all.push(Box::new(ch.to_string()));
        all.append(&mut list_filter(q, upper).1);
        all.push(Box::new(ch.to_string()));
        all.push(Box::new(ch.to_string()));
        all.append(&mut list_filter(q, upper).1);
    }
    all.push(Box::new(limit as i64));
    let sql = format!(
        "{} ORDER BY id DESC LIMIT ?",
        vec![one; channels.len()].join(" UNION ALL ")
    );
    (sql, all)
}

/// A page of the listing: rows read newest first in batches below the cursor, one row at a time
/// (a row that does not match is dropped before the next is read), each checked by
/// [`ListQuery::matches`] and kept in a [`paging::Kept`], which ends the read at
/// [`paging::READ_BYTES`] of jobs kept. When a filter is checked record by record, at most
/// [`paging::SCAN_BOUND`] rows and [`paging::SCAN_BYTES`] of them are read, then a short page
/// ends at the last row read (for a confined caller, every row read is one it sees:
/// [`list_filter`]).
fn list_in(c: &rusqlite::Connection, q: &ListQuery) -> Result<JobPage> {
    let want = paging::probe(q.limit);
    let scans = q.scans(true, true);
    let batch = if scans { want.clamp(256, 1000) } else { want };
    let mut upper = q.id_range().1.map(|u| u.to_string());
    let mut kept = paging::Kept::new(q.limit);
    let mut scanned = 0usize;
    loop {
        let (sql, args) = list_sql(q, upper.as_deref(), batch);
        let mut st = c.prepare_cached(&sql).map_err(db_err)?;
        let mut got = st
            .query(rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())))
            .map_err(db_err)?;
        let mut n = 0usize;
        let mut spent = false;
        while let Some(row) = got.next().map_err(db_err)? {
            let r = JobRow::read(row).map_err(db_err)?;
            n += 1;
            upper = Some(r.id().to_string());
            let bytes = r.bytes();
            spent = kept.examined(bytes);
            // A record that no longer reads as a job is reported, never a reason to fail the page.
            match r.into_job() {
                Ok(j) if q.matches(&j) => {
                    if kept.keep(j, bytes) {
                        return Ok(kept.page());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let id = upper.as_deref().unwrap_or_default();
                    crate::store::job_record::log_unreadable(id, "a listing", &e);
                }
            }
            if spent {
                break;
            }
        }
        scanned += n;
        if !spent && n < batch {
            return Ok(kept.page());
        }
        if spent || scanned >= paging::SCAN_BOUND {
            // A sparse filter: a short page, and the client goes on from the last row read.
            let next_cursor = upper.as_deref().and_then(|u| Uuid::parse_str(u).ok());
            return Ok(kept.short(next_cursor));
        }
    }
}

/// Stores a new job and its first event in the writer's transaction; same idempotency key ->
/// the first job (also used by [`SqliteStore::submit_batch`], one savepoint per job).
pub(super) fn submit_in(ctx: &mut WriteCtx<'_>, job: Job) -> Result<Submitted> {
    if let Some(key) = &job.idempotency_key {
        let existing = row_opt(ctx.conn, super::stored::BY_IDEM_KEY, [key], JobRow::read)?;
        if let Some(r) = existing {
            return Ok(Submitted {
                job: r.into_job()?,
                created: false,
            });
        }
    }
    // A worker parked for this runner takes the job in this transaction, unless an older one
    // waits (first in, first out).
    let taken = if job.status == JobStatus::Queued
        && ctx.handoffs.any(&job.runner)
        && !super::handoff::queued_for(ctx.conn, &job.runner)?
    {
        ctx.handoffs.take(&job.runner)
    } else {
        None
    };
    if let Some(taken) = taken {
        super::handoff::hand_over(ctx, &job, taken)?;
        return Ok(Submitted { job, created: true });
    }
    insert(ctx, &job)?;
    append_event(ctx, &job, EventKind::Status)?;
    notices_for(ctx, &job);
    let mut job = job;
    if job.status == JobStatus::Waiting {
        waits::enter_in(ctx, &mut job)?;
    }
    Ok(Submitted { job, created: true })
}

/// Writes a new job's row (and its file references).
pub(super) fn insert(ctx: &mut WriteCtx<'_>, job: &Job) -> Result<()> {
    let body = super::stored::job_body(job)?;
    // Every column: the body holds only the rest (stored.rs).
    exec(
        ctx.conn,
        "INSERT INTO jobs(id, type, runner, status, channel, run_at, lease_expires, idem_key,
                              queued_at, finished_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            job.id.to_string(),
            job.job_type,
            job.runner,
            job.status.as_str(),
            job.channel_id,
            job.run_at,
            job.lease.as_ref().map(|l| l.expires_at),
            job.idempotency_key,
            job.queued_at,
            job.finished_at,
            body
        ],
    )?;
    ctx.counts.add(&job.job_type, job.status.as_str(), 1);
    save_file_refs(ctx.conn, job)
}

/// Records which blobs the job references (for blob garbage collection).
pub(super) fn save_file_refs(conn: &Connection, job: &Job) -> Result<()> {
    if job.files.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO file_refs(hash, job_id) VALUES (?1, ?2)")
        .map_err(db_err)?;
    let id = job.id.to_string();
    for f in job.files.values().flatten() {
        stmt.execute(params![f.hash, id]).map_err(db_err)?;
    }
    Ok(())
}

/// The hashes of the files the job uploaded itself (`FileRef::attempt`): the ones a new attempt
/// drops (`transition::attempts::start_clean`). Mostly none, and then nothing is allocated.
pub(super) fn upload_hashes(job: &Job) -> Vec<String> {
    job.files
        .values()
        .flatten()
        .filter(|f| f.attempt.is_some())
        .map(|f| f.hash.clone())
        .collect()
}

/// Forgets the references of `job` to those of `uploads` (taken before a change) it no longer
/// holds, so that blob garbage collection may take a blob no job refers to any more.
pub(super) fn drop_file_refs(conn: &Connection, job: &Job, uploads: Vec<String>) -> Result<()> {
    if uploads.is_empty() {
        return Ok(());
    }
    let held: std::collections::HashSet<&str> = job
        .files
        .values()
        .flatten()
        .map(|f| f.hash.as_str())
        .collect();
    let mut stmt = conn
        .prepare_cached("DELETE FROM file_refs WHERE hash = ?1 AND job_id = ?2")
        .map_err(db_err)?;
    let id = job.id.to_string();
    for h in uploads.iter().filter(|h| !held.contains(h.as_str())) {
        stmt.execute(params![h, id]).map_err(db_err)?;
    }
    Ok(())
}
