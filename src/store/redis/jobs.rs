//! [`JobStore`] for Redis: submit, get, list (by the `P:all` / `P:st:{STATUS}` indexes, a
//! channel's `P:jch:{channel}` (`chanidx.rs`), and the lease set for active jobs), apply.

use super::commit::Reply;
use super::write::Write;
use super::*;

/// Ids examined per page at most when a filter is checked record by record (every filter but
/// status, the creation time's id range and one literal channel: Redis keeps no index of types,
/// and of channels one read at a time, `chanidx.rs`). For a caller confined by its grant, the
/// jobs it sees examined (the others are read past unbounded, but a grant of one literal
/// channel reads that channel's jobs only).
const LIST_SCAN: usize = crate::store::paging::SCAN_BOUND;

/// A listed job record, or `None` (reported) when it no longer reads as a job: one bad record
/// never fails a listing.
fn listable(body: &str) -> Option<Job> {
    match serde_json::from_str::<Job>(body) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(error = %e, "unreadable job record left out of a listing");
            None
        }
    }
}

impl RedisStore {
    pub(super) async fn load(&self, id: Uuid) -> Result<Option<(Job, String)>> {
        let key = self.keyed("job:", id);
        let body = self.body(&key).await?;
        match body {
            None => Ok(None),
            Some(b) => Ok(Some((serde_json::from_str(&b).map_err(json_err)?, b))),
        }
    }

    pub(super) async fn load_many(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keyed("job:", id)).collect();
        self.bodies(&keys).await
    }

    /// The bodies of the jobs of `ids` that still exist, in order; the ids of the others go to
    /// `gone`.
    async fn load_present(&self, ids: &[Uuid], gone: &mut Vec<Uuid>) -> Result<Vec<String>> {
        let bodies = self.load_many(ids).await?;
        Ok(ids
            .iter()
            .zip(bodies)
            .filter_map(|(id, b)| {
                if b.is_none() {
                    gone.push(*id);
                }
                b
            })
            .collect())
    }

    /// The jobs of `ids` that `v` may see, by the type and channel fields of their hashes (`t`,
    /// `c`): one pipelined `HMGET` each, without loading the bodies of the others' jobs.
    async fn visible_ids(&self, v: &crate::store::Visibility, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let fields: Vec<(Option<String>, Option<String>)> = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                for id in &ids {
                    p.cmd("HMGET").arg(self.keyed("job:", id)).arg("t").arg("c");
                }
                async move { p.query_async(&mut c).await }
            })
            .await?;
        Ok(ids
            .into_iter()
            .zip(fields)
            // A hash without them (none is written so; a job gone meanwhile) is decided by its
            // body, as before.
            .filter(|(_, f)| match f {
                (Some(t), Some(c)) => v.sees_fields(t, c),
                _ => true,
            })
            .map(|(id, _)| id)
            .collect())
    }

    /// Up to `batch` members of the lex index `key` from `max` down to `min`.
    pub(super) async fn ids_newest_first(
        &self,
        key: &str,
        max: &str,
        min: &str,
        batch: usize,
    ) -> Result<Vec<String>> {
        self.exec(true, |mut c| {
            let (key, max, min) = (key.to_string(), max.to_string(), min.to_string());
            async move {
                ::redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(max)
                    .arg(min)
                    .arg("BYLEX")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch)
                    .query_async(&mut c)
                    .await
            }
        })
        .await
    }

    /// Lists STARTING or RUNNING jobs. They have no status index (it would cost four writes
    /// per job): every active job is in the lease set, which is small (at most the jobs the
    /// workers hold, plus claim reservations), so its ids are read whole, sorted newest first,
    /// and the jobs loaded a page at a time and filtered by status.
    async fn list_active(&self, q: ListQuery) -> Result<JobPage> {
        let ids = self.zset_members(&self.key("lease")).await?;
        let (lower, upper) = q.id_range();
        let mut ids: Vec<Uuid> = ids
            .iter()
            .filter_map(|s| Uuid::parse_str(s).ok())
            .filter(|id| upper.is_none_or(|c| *id < c) && lower.is_none_or(|l| *id >= l))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let want = crate::store::paging::probe(q.limit);
        let mut jobs: Vec<Job> = Vec::new();
        for chunk in ids.chunks(want.clamp(16, 1000)) {
            for b in self.load_many(chunk).await?.into_iter().flatten() {
                let Some(j) = listable(&b) else { continue };
                if q.matches(&j) {
                    jobs.push(j);
                    if jobs.len() >= want {
                        break;
                    }
                }
            }
            if jobs.len() >= want {
                break;
            }
        }
        Ok(JobPage::from_probe(jobs, q.limit))
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        for _ in 0..3 {
            let w = Write::new(None, None, job.clone(), Some(EventKind::Status))?;
            match self.commit(std::slice::from_ref(&w)).await?.pop() {
                Some(Reply::Ok) => {
                    if w.job.status == JobStatus::Waiting {
                        crate::store::waits::counters()
                            .entered
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Submitted {
                        job: w.job,
                        created: true,
                    });
                }
                // Our own submit, sent again after a lost reply.
                Some(Reply::Exists) => {
                    if let Some((j, _)) = self.load(job.id).await? {
                        return Ok(Submitted {
                            job: j,
                            created: true,
                        });
                    }
                }
                Some(Reply::Idem(other)) => {
                    let other = Uuid::parse_str(&other)
                        .map_err(|_| StoreError::Backend("corrupt idempotency key".into()))?;
                    if let Some((j, _)) = self.load(other).await? {
                        return Ok(Submitted {
                            job: j,
                            created: false,
                        });
                    }
                    // Deleted by retention in between: try again.
                }
                other => return Err(StoreError::Backend(format!("submit: unexpected {other:?}"))),
            }
        }
        Err(StoreError::Backend(
            "submit: the idempotency key keeps changing".into(),
        ))
    }

    async fn submit_many(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        self.submit_batch(jobs).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        Ok(self.load(id).await?.map(|(j, _)| j))
    }

    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        if q.status_read().is_some_and(|s| s.is_active()) {
            return self.list_active(q).await;
        }
        // Where the ids come from: `P:all`, a status's set, or one channel's (`chanidx.rs`).
        let Some(mut src) = self.id_source(&q).await? else {
            return Ok(JobPage::from_probe(Vec::new(), q.limit));
        };
        let mut jobs: Vec<Job> = Vec::new();
        let (lower, upper) = q.id_range();
        let min = lower.map_or_else(|| "-".to_string(), |l| format!("[{l}"));
        let mut cursor = upper.map(|c| c.to_string());
        let mut scanned = 0usize;
        let want = crate::store::paging::probe(q.limit);
        // A confined caller reads past the jobs it does not see by their type and channel alone
        // (`visible_ids`), in batches growing 4x up to 1,000 (most may be others').
        let page = want.clamp(16, 1000);
        let mut batch = page;
        // A confined caller: the jobs it does not see are skipped first; its scan bound counts
        // the ones it sees, and a short page's cursor is the last of them (`paging`).
        let confined = q.visible.is_some();
        let mut seen = 0usize;
        let mut last_seen: Option<Uuid> = None;
        let mut short = false;
        loop {
            let max = match &cursor {
                Some(c) => format!("({c}"),
                None => "+".to_string(),
            };
            let (ids, read) = self.next_ids(&mut src, &max, &min, batch).await?;
            let mut uuids: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
            if let Some(v) = &q.visible {
                uuids = self.visible_ids(v, uuids).await?;
            }
            // Jobs of the channel index deleted by a build whose retention leaves them there.
            let mut gone: Vec<Uuid> = Vec::new();
            // Bodies a page's worth at a time (a confined caller's batch is large): none loaded
            // past the page or the scan bound.
            'chunks: for chunk in uuids.chunks(page) {
                for b in self.load_present(chunk, &mut gone).await? {
                    let Some(j) = listable(&b) else { continue };
                    if confined {
                        if !q.visible_to(&j) {
                            continue;
                        }
                        seen += 1;
                        last_seen = Some(j.id);
                    }
                    if q.matches(&j) {
                        jobs.push(j);
                        if jobs.len() >= want {
                            break 'chunks;
                        }
                    }
                    if confined && seen >= LIST_SCAN {
                        short = true;
                        break 'chunks;
                    }
                }
            }
            self.forget_gone(&src, &gone).await;
            scanned += read;
            if jobs.len() >= want {
                break;
            }
            if short {
                return Ok(JobPage {
                    jobs,
                    next_cursor: last_seen,
                });
            }
            if read < batch {
                break;
            }
            if confined {
                batch = (batch * 4).min(1000);
            }
            cursor = ids.last().cloned();
            if !confined && scanned >= LIST_SCAN {
                // A sparse filter: return a short page and let the client continue from here.
                let next = cursor.as_deref().and_then(|c| Uuid::parse_str(c).ok());
                return Ok(JobPage {
                    jobs,
                    next_cursor: next,
                });
            }
        }
        Ok(JobPage::from_probe(jobs, q.limit))
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.apply_cmd(id, cmd).await
    }

    async fn apply_start(
        &self,
        id: Uuid,
        start: Command,
        finish: Arc<crate::store::FinishSlot>,
    ) -> Result<(Job, Option<Result<Job>>)> {
        // The start and the finish offered by then in one script call (start.rs).
        self.start_and_finish(id, start, finish).await
    }
}
