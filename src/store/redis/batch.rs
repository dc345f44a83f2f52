//! Batch submit for the Redis backend: the writes of every job of a batch go to Redis in ONE
//! `commit.lua` call (one round trip, through the committer like any write), each write applied
//! and answered on its own by the script, so a job that fails leaves the others stored (all or
//! nothing per job, docs/api.md `POST /async/jobs/batch`).

use super::commit::Reply;
use super::write::Write;
use super::RedisStore;
use crate::job::{EventKind, Job, JobStatus};
use crate::store::{JobStore, Result, StoreError, Submitted};

impl RedisStore {
    /// Stores `jobs` in one script call, one result per job in order (see the module's docs).
    pub(super) async fn submit_batch(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        let mut out: Vec<Option<Result<Submitted>>> = Vec::with_capacity(jobs.len());
        let mut writes = Vec::with_capacity(jobs.len());
        // Slot of `out` each write answers.
        let mut slots = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.write(None, None, job, Some(EventKind::Status)) {
                Ok(w) => {
                    slots.push(out.len());
                    writes.push(w);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let replies = self.commit(&writes).await?;
        for ((w, reply), slot) in writes.into_iter().zip(replies).zip(slots) {
            out[slot] = Some(self.settle(w, reply).await);
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("batch: no reply".into()))))
            .collect())
    }

    /// The result of one batched submit from its script reply.
    async fn settle(&self, w: Write, reply: Reply) -> Result<Submitted> {
        match reply {
            Reply::Ok => {
                if w.job.status == JobStatus::Waiting {
                    crate::store::waits::counters()
                        .entered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Submitted {
                    job: w.job,
                    created: true,
                })
            }
            Reply::Idem(other) => {
                let other = uuid::Uuid::parse_str(&other)
                    .map_err(|_| StoreError::Backend("corrupt idempotency key".into()))?;
                match self.load(other).await? {
                    Some((job, _)) => Ok(Submitted {
                        job,
                        created: false,
                    }),
                    // Deleted by retention in between: the single submit tries again.
                    None => self.submit(w.job).await,
                }
            }
            // A job id taken (ours after a lost reply): the single submit sorts it out.
            Reply::Exists => self.submit(w.job).await,
            // Nothing of it stored (a key of the wrong type), the others are.
            Reply::Failed(e) => Err(StoreError::Backend(e)),
            other => Err(StoreError::Backend(format!("submit: unexpected {other:?}"))),
        }
    }
}
