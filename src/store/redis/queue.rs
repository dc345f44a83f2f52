//! [`JobQueue`] for Redis: claims (`lua/claim.lua` picks, `lua/commit.lua` saves), heartbeats,
//! adoption, promotion of due SCHEDULED jobs and the reaper's view of expired leases
//! (`lua/expired.lua`).

use std::collections::HashSet;

use super::claim_back::own_claim;
use super::commit::Reply;
use super::write::Write;
use super::*;
use crate::store::log_quiet::warn_unless_refused;

impl RedisStore {
    /// The write claiming `job`, taken from its runner's queue (picked by `lua/claim.lua`, or
    /// handed over: handover.rs), for `worker` with fencing token `token`; `None` (logged) when
    /// it is not claimable (not QUEUED any more).
    pub(super) fn claim_write(
        &self,
        job: Job,
        worker: &str,
        token: u64,
        lease_until: Micros,
        now: Micros,
    ) -> Result<Option<Write>> {
        let mut next = job.clone();
        let cmd = Command::Claim {
            worker: worker.to_string(),
            token,
            lease_until,
        };
        match apply(&mut next, cmd, &self.actx(now)) {
            Ok(ev) => {
                let mut w = self.write(Some(job.version), Some(&job), next, ev)?;
                w.popped = true;
                Ok(Some(w))
            }
            Err(e) => {
                tracing::debug!(job_id = %job.id, error = %e, "picked job not claimable");
                Ok(None)
            }
        }
    }

    /// The job a [`Self::claim_write`] claimed, given commit.lua's reply `r`: our own claim as
    /// stored when the conflict is with it (its reply lost: the call sent again conflicted with
    /// it; taken or given back, see [`Self::take_own_claim`]); claimed again when the job was
    /// written in between (e.g. a file attached) and is still QUEUED, under a fresh lease of
    /// `lease_ttl` (the claim's may have run out in a long retry); `None` when not.
    pub(super) async fn claimed(
        &self,
        w: Write,
        r: Reply,
        worker: &str,
        lease_ttl: Duration,
    ) -> Option<Job> {
        match r {
            Reply::Ok => Some(w.job),
            Reply::Failed(e) => {
                tracing::warn!(job_id = %w.job.id, error = %e, "claim of a job not written: a key of the wrong type");
                None
            }
            // Boxed (rare): every claim's future would hold its 7.7 KB otherwise.
            Reply::Conflict => Box::pin(self.claim_conflict(w, worker, lease_ttl)).await,
            _ => None,
        }
    }

    /// [`Self::claimed`] for a claim answered CONFLICT: ours after all (a lost reply, sent again),
    /// or claimed again on the stored job.
    async fn claim_conflict(&self, w: Write, worker: &str, lease_ttl: Duration) -> Option<Job> {
        match self.load(w.job.id).await {
            Ok(Some((stored, _))) if own_claim(&stored, &w) => {
                let now = self.now().await;
                let taken = self.take_own_claim(&w, stored, lease_ttl, now);
                if taken.is_none() {
                    self.release_claims(std::iter::once(&w), lease_ttl).await;
                }
                return taken;
            }
            Ok(_) => {}
            Err(e) => {
                // Given back if it was ours after all (refused on the token if not).
                tracing::warn!(job_id = %w.job.id, error = %e, "claim not confirmed: the job could not be read back; giving it back");
                self.release_claims(std::iter::once(&w), lease_ttl).await;
                return None;
            }
        }
        let token = w.job.lease.as_ref().map(|l| l.token).unwrap_or_default();
        let id = w.job.id;
        let r = self
            .update(id, |job, now| {
                let cmd = Command::Claim {
                    worker: worker.to_string(),
                    token,
                    lease_until: now + lease_ttl.as_micros() as i64,
                };
                Ok(apply(job, cmd, &self.actx(now))?)
            })
            .await;
        match r {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::debug!(job_id = %id, error = %e, "claim lost a race");
                None
            }
        }
    }

    /// Runs `lua/claim.lua` for up to `max` jobs of `runner`'s queue (its reply), and records
    /// the queue as empty when the pick emptied it (see hints.rs).
    async fn pick(
        &self,
        runner: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<::redis::Value>> {
        let seq = self.hints.before_pick();
        let reserve_until = self.now().await + lease_ttl.as_micros() as i64;
        // One try, never retried: the worker backs off instead of piling up claims while Redis
        // is away, and a claim answered is a claim just made. The worker dates the lease from
        // when it asked (its fence, `worker/leases.rs`): a claim retried across an outage was
        // granted seconds after that, and its jobs were stopped as unrenewed about a second
        // into their run.
        let retry = false;
        let (queue, tokens) = (self.keyed("q:", runner), self.key("token"));
        let (leases, job_prefix) = (self.key("lease"), self.key("job:"));
        let picked: Vec<::redis::Value> = self
            .exec(retry, |mut c| {
                let mut inv = self.scripts.claim.prepare_invoke();
                inv.key(&queue)
                    .key(&tokens)
                    .key(&leases)
                    .arg("max")
                    .arg(max)
                    .arg("until")
                    .arg(reserve_until)
                    .arg("jobp")
                    .arg(&job_prefix);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let popped: usize = match picked.get(1) {
            Some(v) => ::redis::from_redis_value(v)
                .map_err(|e| StoreError::Backend(format!("claim: {e}")))?,
            None => 0,
        };
        if popped < max {
            self.hints.emptied(runner, seq);
        }
        Ok(picked)
    }
}

#[async_trait]
impl JobQueue for RedisStore {
    async fn claim(
        &self,
        runner: &str,
        worker: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<Job>> {
        if max == 0 || self.hints.known_empty(runner) {
            return Ok(vec![]);
        }
        let picked = self.pick(runner, max, lease_ttl).await?;
        if picked.is_empty() {
            return Ok(vec![]);
        }
        // The claim's time is taken once the jobs are picked: a job requeued (its previous run
        // ended) while the pick waited for Redis is never recorded as claimed before that end.
        let now = self.now().await;
        let lease_until = now + lease_ttl.as_micros() as i64;
        let first: u64 = ::redis::from_redis_value(&picked[0])
            .map_err(|e| StoreError::Backend(format!("claim: {e}")))?;
        let mut writes = Vec::new();
        for (i, chunk) in picked
            .get(2..)
            .unwrap_or_default()
            .chunks_exact(3)
            .enumerate()
        {
            // As bytes: a record that is not UTF-8 reads as a corrupt one (`records::text`).
            let body = ::redis::from_redis_value::<Vec<u8>>(&chunk[2])
                .map(super::records::text)
                .map_err(|e| StoreError::Backend(format!("claim: {e}")))?;
            // A record this build cannot read is left out, not the whole claim (logged): the
            // reaper puts its reservation back in its queue (its hash says QUEUED), so it is
            // picked again, and left out again, each reservation cycle. A job key that is not
            // a hash (records.rs) is left out the same way, and its reservation stays in the
            // lease set (claim.lua) until the hash reads again.
            let id = || ::redis::from_redis_value::<String>(&chunk[0]).unwrap_or_default();
            let Some(job) = readable(&body, id, "claim") else {
                continue;
            };
            // Not QUEUED any more: the reaper drops the reservation.
            let token = first + i as u64;
            writes.extend(self.claim_write(job, worker, token, lease_until, now)?);
        }
        let replies = match self.commit(&writes).await {
            Ok(r) => r,
            Err(e) => {
                let ttls = vec![lease_ttl; writes.len()];
                let back = Box::pin(self.read_back_claims(&writes, &ttls)).await;
                let out: Vec<Job> = back.into_iter().flatten().collect();
                warn_unless_refused!(
                    e,
                    taken = out.len(),
                    of = writes.len(),
                    "a claim's commit failed: read back, the jobs it wrote are taken"
                );
                // Nothing taken: the claim failed (the worker's warning and back-off, the
                // store's error metrics).
                if out.is_empty() {
                    return Err(e);
                }
                return Ok(out);
            }
        };
        let mut out = Vec::with_capacity(writes.len());
        for (w, r) in writes.into_iter().zip(replies) {
            out.extend(self.claimed(w, r, worker, lease_ttl).await);
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>> {
        let mut lost = Vec::new();
        let mut todo: Vec<(Uuid, u64)> = held.to_vec();
        for _ in 0..10 {
            if todo.is_empty() {
                break;
            }
            let ids: Vec<Uuid> = todo.iter().map(|(id, _)| *id).collect();
            let bodies = self.load_many(&ids).await?;
            let now = self.now().await;
            let until = now + lease_ttl.as_micros() as i64;
            let mut writes = Vec::new();
            for ((id, token), body) in todo.iter().zip(bodies) {
                let Some(body) = body else {
                    lost.push(*id);
                    continue;
                };
                // Unreadable: reported lost, so that its worker stops it (it could not be
                // renewed, and a run on an expired lease is what the fence forbids); the others
                // are renewed.
                let Some(job) = readable(&body, || id.to_string(), "heartbeat") else {
                    lost.push(*id);
                    continue;
                };
                let mut next = job.clone();
                match crate::job::heartbeat(&mut next, worker, *token, until, &self.actx(now)) {
                    Beat::Renewed(ev) => {
                        writes.push(self.write(Some(job.version), Some(&job), next, ev)?)
                    }
                    Beat::Finishing => {}
                    Beat::Lost => lost.push(*id),
                    Beat::Stopping => {
                        // Told now; the lease's write is tried like a renewal's.
                        lost.push(*id);
                        writes.push(self.write(Some(job.version), Some(&job), next, None)?);
                    }
                }
            }
            let replies = self.commit(&writes).await?;
            let mut again = Vec::new();
            for (w, r) in writes.iter().zip(replies) {
                match r {
                    Reply::Ok => {}
                    // Gone, or not renewable (a key of the wrong type): its worker stops it.
                    Reply::Gone | Reply::Failed(_) => lost.push(w.job.id),
                    _ => again.push((
                        w.job.id,
                        w.job.lease.as_ref().map(|l| l.token).unwrap_or_default(),
                    )),
                }
            }
            todo = again;
        }
        lost.sort_unstable();
        lost.dedup();
        Ok(lost)
    }

    async fn adopt(
        &self,
        id: Uuid,
        expected: Option<u64>,
        worker: &str,
        lease_ttl: Duration,
    ) -> Result<Job> {
        let token = self.next_token().await?;
        self.update(id, |job, now| {
            let cmd = Command::Adopt {
                expected,
                worker: worker.to_string(),
                token,
                lease_until: now + lease_ttl.as_micros() as i64,
            };
            Ok(apply(job, cmd, &self.actx(now))?)
        })
        .await
    }

    async fn fence(&self, id: Uuid, expected: u64) -> Result<Job> {
        let token = self.next_token().await?;
        self.update(id, |job, now| {
            let cmd = Command::Fence { expected, token };
            Ok(apply(job, cmd, &self.actx(now))?)
        })
        .await
    }

    async fn promote_due(&self, max: usize) -> Result<usize> {
        let key = self.key("sched");
        let now = self.now().await;
        let (mut n, mut skip) = (0, 0);
        // Records this build cannot read stay due, oldest first: a page they filled is passed
        // (up to PAGES_PAST_UNREADABLE), so that they do not keep the readable ones behind them.
        for _ in 0..PAGES_PAST_UNREADABLE {
            let ids: Vec<String> = self.zrange_by_score(&key, "-inf", now, (skip, max)).await?;
            let mut unreadable = 0;
            for id in ids.iter().filter_map(|s| Uuid::parse_str(s).ok()) {
                if n >= max {
                    // The rest stay due for the next round: never more than `max`.
                    break;
                }
                // Several nodes promote at once: the losers are refused, which is fine.
                match self.apply_cmd(id, Command::Promote).await {
                    Ok(_) => n += 1,
                    Err(StoreError::Transition(_)) => {}
                    Err(StoreError::NotFound) => {
                        // An entry without its job (deleted by hand): drop it, or it comes back.
                        self.zrem(key.clone(), id.to_string()).await?;
                    }
                    // A record this build cannot read (or a job key not a hash, records.rs):
                    // the others due are promoted all the same.
                    Err(e) if crate::store::job_record::is_corrupt(&e) => {
                        crate::store::job_record::log_unreadable(&id.to_string(), "promotion", &e);
                        unreadable += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            if ids.len() < max || unreadable == 0 || n >= max {
                break;
            }
            skip += unreadable;
        }
        Ok(n)
    }

    fn park(&self, runner: &str, worker: &str, lease_ttl: Duration, max: usize) -> Option<Parked> {
        self.park_here(runner, worker, lease_ttl, max)
    }

    async fn queued_ids(&self, runner: &str, skip: usize, max: usize) -> Result<Vec<Uuid>> {
        if max == 0 {
            return Ok(vec![]);
        }
        let key = self.keyed("q:", runner);
        // By rank (O(log N + max)), not `ZRANGEBYSCORE ... LIMIT skip`, which walks `skip`
        // entries first: the pass over parked jobs reads deep into a long queue.
        let (from, to) = (skip, skip.saturating_add(max - 1));
        let ids: Vec<Vec<u8>> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("ZRANGE").arg(&key).arg(from).arg(to).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        // An entry that is not an id (a hand edit): its place counts, it is passed.
        Ok(ids
            .iter()
            .map(|s| {
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .unwrap_or(Uuid::nil())
            })
            .collect())
    }

    async fn next_due(&self) -> Result<Option<Micros>> {
        self.first_score(&self.key("sched")).await
    }

    async fn expired(&self, max: usize) -> Result<Vec<Job>> {
        let now = self.now().await;
        let (leases, job_prefix, queue_prefix) =
            (self.key("lease"), self.key("job:"), self.key("q:"));
        let (mut out, mut skip) = (Vec::new(), 0);
        for _ in 0..PAGES_PAST_UNREADABLE {
            // Read as bytes: one record that is not UTF-8 is a corrupt record passed below,
            // not a reply that fails every reap (`records::text`).
            let raw: Vec<Vec<u8>> = self
                .exec(true, |mut c| {
                    let mut inv = self.scripts.expired.prepare_invoke();
                    inv.key(&leases)
                        .arg("now")
                        .arg(now)
                        .arg("max")
                        .arg(max)
                        .arg("skip")
                        .arg(skip)
                        .arg("jobp")
                        .arg(&job_prefix)
                        .arg("qp")
                        .arg(&queue_prefix)
                        .arg("notices")
                        .arg(&self.shared.notices);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
            let raw: Vec<String> = raw.into_iter().map(super::records::text).collect();
            // Reservations may have gone back to their queues: announced to every process by
            // the script, known here at once (a claim right after this finds them).
            self.hints.queued("*");
            let looked: usize = raw.first().and_then(|n| n.parse().ok()).unwrap_or(0);
            let active = raw.get(1..).unwrap_or_default();
            let page: Vec<Job> = active
                .chunks_exact(2)
                .filter_map(|c| readable(&c[1], || c[0].clone(), "expired lease"))
                .collect();
            // Records this build cannot read (and job keys not hashes, or whose runner's queue
            // is not a sorted set: expired.lua) stay in the lease set, oldest first: a page they
            // filled is passed (the active entries stay where they are, the script removed the
            // others), so that they do not keep the readable ones behind them from the reaper.
            // Cancelled jobs whose stop a reaper could not confirm yet stay too: a page they
            // filled is passed the same way, so that active jobs are never kept from the
            // reaper behind them (the embedded store reads the active ones first).
            let unreadable = active.len() / 2 - page.len();
            let stopping = page.iter().filter(|j| !j.status.is_active()).count();
            out.extend(page);
            let live = out.iter().filter(|j| j.status.is_active()).count();
            if looked < max || unreadable + stopping == 0 || live >= max {
                break;
            }
            skip += active.len() / 2;
        }
        if skip > 0 {
            // A later page may meet an entry again (another node wrote between pages).
            let mut seen = HashSet::new();
            out.retain(|j| seen.insert(j.id));
        }
        // The active jobs first, then the cancelled ones, oldest first in each.
        out.sort_by_key(|j| !j.status.is_active());
        out.truncate(max);
        Ok(out)
    }
}

/// Most pages of `max` entries one call of [`JobQueue::expired`] or [`JobQueue::promote_due`]
/// reads, when records this build cannot read fill them.
const PAGES_PAST_UNREADABLE: usize = 10;

/// The job of a record met by a round over many jobs (a claim, heartbeats, expired leases), or
/// `None`, logged, when this build cannot read it: one such record must not fail the round and
/// hold up every other job it meets, round after round. `id` names the job in the log (made
/// only then: the rounds are hot paths).
pub(super) fn readable(body: &str, id: impl FnOnce() -> String, what: &str) -> Option<Job> {
    match read_job_record(body) {
        Ok(j) => Some(j),
        Err(e) => {
            crate::store::job_record::log_unreadable(&id(), what, &e);
            None
        }
    }
}
