//! [`JobStore`] for Redis: submit, get, list (by the `P:all` / `P:st:{STATUS}` indexes, a
//! channel's `P:jch:{channel}` (`chanidx.rs`), and the lease set for active jobs), apply.

use super::commit::Reply;
use super::*;

/// Ids examined per page at most when a filter is checked record by record (every filter but
/// status, the creation time's id range and one literal channel: Redis keeps no index of types,
/// and of channels one read at a time, `chanidx.rs`). For a caller confined by its grant, the
/// jobs it sees examined (the others are read past unbounded, but a grant of one literal
/// channel reads that channel's jobs only).
const LIST_SCAN: usize = crate::store::paging::SCAN_BOUND;

/// Bytes of job records a listing loads per round trip at most, by their sizes read first
/// (`HSTRLEN`); a record larger than this is loaded alone.
const LOAD_BYTES: usize = 1 << 20;

/// Job `id`'s listed record, or `None` (reported) when it no longer reads as a job: one bad
/// record never fails a listing.
fn listable(id: Uuid, body: &str) -> Option<Job> {
    match read_job_record(body) {
        Ok(j) => Some(j),
        Err(e) => {
            crate::store::job_record::log_unreadable(&id.to_string(), "a listing", &e);
            None
        }
    }
}

/// The end of the group of records from `at` loaded in one round trip: as many as fit
/// [`LOAD_BYTES`] by `sizes`, at least one.
fn group_end(sizes: &[usize], at: usize) -> usize {
    let mut end = at;
    let mut bytes = 0usize;
    while end < sizes.len() && (end == at || bytes + sizes[end] <= LOAD_BYTES) {
        bytes += sizes[end];
        end += 1;
    }
    end
}

/// What a listing does after one record.
enum Step {
    /// Read on.
    On,
    /// The read is done ([`paging::Kept::done`]).
    Done,
    /// A scan bound: a short page with this cursor.
    Short(Option<Uuid>),
}

/// One read of a listing, record by record: the jobs kept, and for a caller confined by its
/// grant the jobs it sees examined (its scan bound counts those, and its short page's cursor is
/// the last of them: `paging`).
struct Scan<'q> {
    q: &'q ListQuery,
    kept: paging::Kept,
    seen: usize,
    last_seen: Option<Uuid>,
}

impl<'q> Scan<'q> {
    fn new(q: &'q ListQuery) -> Self {
        Self {
            q,
            kept: paging::Kept::new(q.limit),
            seen: 0,
            last_seen: None,
        }
    }

    /// The record `body` of the job `id`.
    fn step(&mut self, id: Uuid, body: &str) -> Step {
        let job = listable(id, body);
        if self.q.visible.is_some() {
            // The jobs a confined caller does not see are skipped before anything counts them.
            let Some(j) = job.as_ref().filter(|j| self.q.visible_to(j)) else {
                return Step::On;
            };
            self.seen += 1;
            self.last_seen = Some(j.id);
        }
        let spent = self.kept.examined(body.len());
        if let Some(j) = job.filter(|j| self.q.matches(j)) {
            if self.kept.keep(j, body.len()) {
                return Step::Done;
            }
        }
        match self.q.visible {
            Some(_) if spent || self.seen >= LIST_SCAN => Step::Short(self.last_seen),
            None if spent => Step::Short(Some(id)),
            _ => Step::On,
        }
    }
}

impl RedisStore {
    pub(super) async fn load(&self, id: Uuid) -> Result<Option<(Job, String)>> {
        let key = self.keyed("job:", id);
        let body = self.body(&key).await?;
        match body {
            None => Ok(None),
            Some(b) => Ok(Some((read_job_record(&b)?, b))),
        }
    }

    pub(super) async fn load_many(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keyed("job:", id)).collect();
        self.bodies(&keys).await
    }

    /// The jobs of `ids` that still exist with their bodies, in order; the ids of the others go
    /// to `gone`.
    async fn load_present(
        &self,
        ids: &[Uuid],
        gone: &mut Vec<Uuid>,
    ) -> Result<Vec<(Uuid, String)>> {
        let bodies = self.load_many(ids).await?;
        Ok(ids
            .iter()
            .zip(bodies)
            .filter_map(|(id, b)| {
                if b.is_none() {
                    gone.push(*id);
                }
                b.map(|b| (*id, b))
            })
            .collect())
    }

    /// The sizes of the records of `ids` (0: gone, or a key not a hash, which
    /// [`Self::bodies`] reads as unreadable), one pipelined `HSTRLEN` each.
    async fn body_sizes(&self, ids: &[Uuid]) -> Result<Vec<usize>> {
        let keys: Vec<String> = ids.iter().map(|id| self.keyed("job:", id)).collect();
        let sizes = self
            .per_key(&keys, |k| ::redis::cmd("HSTRLEN").arg(k).arg("b").clone())
            .await?;
        Ok(sizes.into_iter().map(|s| s.unwrap_or(0)).collect())
    }

    /// Reads the records of `ids` into `scan`, [`LOAD_BYTES`] a round trip, until a step says
    /// stop; the ids of the jobs gone go to `gone`.
    async fn scan_ids(
        &self,
        scan: &mut Scan<'_>,
        ids: &[Uuid],
        gone: &mut Vec<Uuid>,
    ) -> Result<Step> {
        let sizes = self.body_sizes(ids).await?;
        let mut at = 0;
        while at < ids.len() {
            let end = group_end(&sizes, at);
            for (id, b) in self.load_present(&ids[at..end], gone).await? {
                match scan.step(id, &b) {
                    Step::On => {}
                    stop => return Ok(stop),
                }
            }
            at = end;
        }
        Ok(Step::On)
    }

    /// The jobs of `ids` that `v` may see, by the type and channel fields of their hashes (`t`,
    /// `c`): one pipelined `HMGET` each, without loading the bodies of the others' jobs.
    async fn visible_ids(&self, v: &crate::store::Visibility, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keyed("job:", id)).collect();
        let fields = self
            .per_key::<(Option<String>, Option<String>)>(&keys, |k| {
                ::redis::cmd("HMGET").arg(k).arg("t").arg("c").clone()
            })
            .await?;
        Ok(ids
            .into_iter()
            .zip(fields)
            // A hash without them (none is written so; a job gone meanwhile), or a key not a
            // hash, is decided by its body, as before (which reads as unreadable, logged).
            .filter(|(_, f)| match f {
                Ok((Some(t), Some(c))) => v.sees_fields(t, c),
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
    /// and the jobs loaded and filtered by status, within the bounds of a read ([`Scan`]).
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
        let mut scan = Scan::new(&q);
        let mut gone = Vec::new();
        for chunk in ids.chunks(want.clamp(16, 1000)) {
            match self.scan_ids(&mut scan, chunk, &mut gone).await? {
                Step::On => {}
                Step::Done => break,
                Step::Short(c) => return Ok(scan.kept.short(c)),
            }
        }
        Ok(scan.kept.page())
    }
}

impl RedisStore {
    /// A submit on a node that refuses the store's work (`keycheck.rs`) is refused at once,
    /// nothing sent: its other writes wait `store.retry` as while Redis is away, which for a
    /// submit would run past `api.request_timeout`, whose 503 says the job may have been stored.
    fn refuse_submit(&self) -> Result<()> {
        match self.key_watch.refused() {
            Some(why) => Err(StoreError::node_refuses(&why)),
            None => Ok(()),
        }
    }

    /// [`JobStore::submit`]'s body, a method of its own so that its future can be sized
    /// (`handover.rs`'s tests: an `async_trait` body cannot be).
    pub(super) async fn submit_job(&self, job: Job) -> Result<Submitted> {
        self.refuse_submit()?;
        for _ in 0..3 {
            let w = self.write(None, None, job.clone(), Some(EventKind::Status))?;
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
                    if let Some((j, _)) = Box::pin(self.load(job.id)).await? {
                        return Ok(Submitted {
                            job: j,
                            created: true,
                        });
                    }
                }
                Some(Reply::Idem(other)) => {
                    let other = Uuid::parse_str(&other)
                        .map_err(|_| StoreError::Backend("corrupt idempotency key".into()))?;
                    if let Some((j, _)) = Box::pin(self.load(other)).await? {
                        return Ok(Submitted {
                            job: j,
                            created: false,
                        });
                    }
                    // Deleted by retention in between: try again.
                }
                // Nothing of it stored (a key of the wrong type, commit.lua).
                Some(Reply::Failed(e)) => return Err(StoreError::Backend(e)),
                other => return Err(StoreError::Backend(format!("submit: unexpected {other:?}"))),
            }
        }
        Err(StoreError::Backend(
            "submit: the idempotency key keeps changing".into(),
        ))
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        self.submit_job(job).await
    }

    async fn submit_many(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        self.refuse_submit()?;
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
        // the ones it sees, and a short page's cursor is the last of them (`paging`, `Scan`).
        let confined = q.visible.is_some();
        let mut scan = Scan::new(&q);
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
            // Bodies a page's worth of ids at a time, LOAD_BYTES a round trip (a confined
            // caller's batch is large): none loaded past the read's bounds.
            let mut step = Step::On;
            for chunk in uuids.chunks(page) {
                step = self.scan_ids(&mut scan, chunk, &mut gone).await?;
                if !matches!(step, Step::On) {
                    break;
                }
            }
            self.forget_gone(&src, &gone).await;
            scanned += read;
            match step {
                Step::Done => break,
                Step::Short(c) => return Ok(scan.kept.short(c)),
                Step::On => {}
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
                return Ok(scan.kept.short(next));
            }
        }
        Ok(scan.kept.page())
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.apply_cmd(id, cmd).await
    }

    /// The finish alone: Redis has no refills (`JobQueue::refill` is `None`).
    async fn finish(
        &self,
        id: Uuid,
        cmd: Command,
        _refill: Option<Arc<crate::store::handoff::Refill>>,
    ) -> Result<Job> {
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

#[cfg(test)]
mod tests {
    use super::{group_end, LOAD_BYTES};

    #[test]
    fn a_round_trip_loads_records_up_to_a_mebibyte_and_a_larger_one_alone() {
        let kib = 1024;
        // Small records: all in one round trip.
        assert_eq!(group_end(&[kib; 100], 0), 100);
        // 300 KiB each: three fit 1 MiB, the fourth goes to the next round trip.
        let sizes = [300 * kib; 7];
        assert_eq!(group_end(&sizes, 0), 3);
        assert_eq!(group_end(&sizes, 3), 6);
        assert_eq!(group_end(&sizes, 6), 7);
        // A record over 1 MiB is loaded alone, never skipped.
        let sizes = [kib, 2 * LOAD_BYTES, kib];
        assert_eq!(group_end(&sizes, 0), 1);
        assert_eq!(group_end(&sizes, 1), 2);
        assert_eq!(group_end(&sizes, 2), 3);
        assert_eq!(group_end(&sizes, 3), 3);
    }
}
