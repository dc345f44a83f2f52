//! Batch submit for the embedded backend: every job of a batch in ONE write of the writer
//! thread (one transaction), all or nothing per job (docs/api.md `POST /async/jobs/batch`): a job
//! refused leaves the others stored. A job's refusals come before its first write (`whole.rs`),
//! but for a WAITING job, whose entry may be refused after its row is written: that one gets a
//! savepoint of its own.

use super::whole::attempt;
use super::{db_err, jobs::submit_in, sql, SqliteStore};
use crate::job::{Job, JobStatus};
use crate::store::{Result, Submitted};

impl SqliteStore {
    /// Stores `jobs` in one transaction, one result per job in order (see the module's docs).
    pub(super) async fn submit_batch(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write_whole(move |ctx| {
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                if job.status != JobStatus::Waiting {
                    out.push(attempt(ctx, |ctx| submit_in(ctx, job)));
                    continue;
                }
                sql::control(ctx.conn, "SAVEPOINT batch_job").map_err(db_err)?;
                let mark = ctx.mark();
                let r = submit_in(ctx, job);
                if r.is_err() {
                    // Only this job's rows go; its notices were never sent.
                    ctx.undo(mark);
                    sql::control(ctx.conn, "ROLLBACK TO batch_job").map_err(db_err)?;
                }
                sql::control(ctx.conn, "RELEASE batch_job").map_err(db_err)?;
                out.push(r);
            }
            Ok(out)
        })
        .await
    }
}
