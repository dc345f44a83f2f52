//! Batch submit for the embedded backend: every job of a batch in ONE write of the writer
//! thread (one transaction), each job in its own savepoint so that a job that fails leaves the
//! others stored (all or nothing per job, docs/api.md `POST /async/jobs/batch`).

use super::{db_err, jobs::submit_in, SqliteStore};
use crate::job::Job;
use crate::store::{Result, Submitted};

impl SqliteStore {
    /// Stores `jobs` in one transaction, one result per job in order (see the module's docs).
    pub(super) async fn submit_batch(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |ctx| {
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                ctx.conn
                    .execute_batch("SAVEPOINT batch_job")
                    .map_err(db_err)?;
                let mark = ctx.mark();
                let r = submit_in(ctx, job);
                let end = if r.is_ok() {
                    "RELEASE batch_job"
                } else {
                    // Only this job's rows go; its notices were never sent.
                    ctx.undo(mark);
                    "ROLLBACK TO batch_job; RELEASE batch_job"
                };
                ctx.conn.execute_batch(end).map_err(db_err)?;
                out.push(r);
            }
            Ok(out)
        })
        .await
    }
}
