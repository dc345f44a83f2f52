//! [`JobStore`] for the embedded backend: submit (with its idempotency key), get, list, apply.

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use super::{
    append_event, apply_in, exec, json_err, load, notices_for, row_opt, rows, save_file_refs,
    waits, SqliteStore,
};
use crate::job::{now_us, Command, EventKind, Job, JobStatus};
use crate::store::{paging, JobPage, JobStore, ListQuery, Result, StoreError, Submitted};

#[async_trait]
impl JobStore for SqliteStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        self.write(move |ctx| {
            if let Some(key) = &job.idempotency_key {
                let existing: Option<String> = row_opt(
                    ctx.conn,
                    "SELECT body FROM jobs WHERE idem_key = ?1",
                    [key],
                    |r| r.get(0),
                )?;
                if let Some(b) = existing {
                    return Ok(Submitted {
                        job: serde_json::from_str(&b).map_err(json_err)?,
                        created: false,
                    });
                }
            }
            let body = super::stored::job_body(&job)?;
            exec(
                ctx.conn,
                "INSERT INTO jobs(id, type, runner, status, channel, run_at, lease_expires, idem_key,
                                      queued_at, finished_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, NULL, ?9)",
                params![
                    job.id.to_string(),
                    job.job_type,
                    job.runner,
                    job.status.as_str(),
                    job.channel_id,
                    job.run_at,
                    job.idempotency_key,
                    job.queued_at,
                    body
                ],
            )?;
            save_file_refs(ctx.conn, &job)?;
            append_event(ctx, &job, EventKind::Status)?;
            notices_for(ctx, &job);
            let mut job = job;
            if job.status == JobStatus::Waiting {
                waits::enter_in(ctx, &mut job)?;
            }
            Ok(Submitted { job, created: true })
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        self.read(move |c| load(c, &id.to_string())).await
    }

    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        self.read(move |c| {
            let mut sql = String::from("SELECT id, body FROM jobs WHERE 1=1");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(s) = q.status {
                sql.push_str(" AND status = ?");
                args.push(Box::new(s.as_str()));
            }
            if let Some(t) = &q.job_type {
                // The Rust matcher the runners and the Redis store use, not SQLite's `GLOB`.
                sql.push_str(" AND runyard_glob(?, type)");
                args.push(Box::new(t.clone()));
            }
            if let Some(cur) = q.cursor {
                sql.push_str(" AND id < ?");
                args.push(Box::new(cur.to_string()));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            args.push(Box::new(paging::probe(q.limit) as i64));
            let mut rows: Vec<(String, String)> =
                rows(c, &sql, rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let next_cursor = paging::cut(&mut rows, q.limit, |(id, _)| Uuid::parse_str(id).ok());
            // A record that no longer reads as a job is reported, never a reason to fail the page.
            let jobs = rows
                .iter()
                .filter_map(|(id, b)| match serde_json::from_str::<Job>(b) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        tracing::error!(job_id = %id, error = %e, "unreadable job record left out of a listing");
                        None
                    }
                })
                .collect();
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.write(move |ctx| {
            let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
            apply_in(ctx, &mut job, cmd, now_us())?;
            Ok(job)
        })
        .await
    }
}
