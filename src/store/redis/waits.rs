//! [`WaitStore`] for Redis. `lua/commit.lua` keeps the indexes with the job (`P:waitk:{key}` the
//! jobs waiting on a signal key, `P:waitdl` WAITING jobs by deadline) and, like
//! `lua/signal_append.lua`, marks the jobs to check in `P:waitdue` in the same script as the
//! write that may complete them. Checks and deadlines change the job through the usual
//! compare-and-set on its version, so any number of nodes may run them: one wins, the others are
//! refused by the status machine.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;
use uuid::Uuid;

use super::RedisStore;
use crate::job::wait::{all_met, ReleasedBy, Seen, WaitItem};
use crate::job::{Command, Job, JobStatus, Micros};
use crate::store::waits::{counters, seen_now, WaitStore};
use crate::store::{Result, StoreError};

/// Clears a check mark only if no signal marked the job again meanwhile.
static UNMARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then \
           return redis.call('ZREM', KEYS[1], ARGV[1]) end return 0",
    )
});

impl RedisStore {
    /// The records each of a job's wait items has up to its deadline (`None`: the job is
    /// gone): the numbers of each item, read at once ([`seen_now`]).
    async fn deadline_seen(&self, id: Uuid) -> Result<Option<Seen>> {
        let Some((job, _)) = self.load(id).await? else {
            return Ok(None);
        };
        let Some(w) = job.wait else {
            return Ok(Some(Seen::default()));
        };
        Ok(Some(seen_now(self, &w.items, w.until()).await?))
    }

    /// Whether each item's key holds at least its `needed` records since its `since`, up to
    /// `until` (`ZCOUNT`, pipelined).
    async fn counts_reach(&self, items: &[WaitItem], until: Micros) -> Result<bool> {
        if items.is_empty() {
            return Ok(true);
        }
        let keys: Vec<(String, Micros, u32)> = items
            .iter()
            .map(|i| (self.keyed("sig:", &i.key), i.since.unwrap_or(0), i.needed))
            .collect();
        let counts: Vec<u64> = self
            .exec(true, |mut c| {
                let mut pipe = ::redis::pipe();
                for (k, since, _) in &keys {
                    pipe.cmd("ZCOUNT").arg(k).arg(*since).arg(until);
                }
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(keys
            .iter()
            .zip(counts)
            .all(|((_, _, needed), n)| n >= u64::from(*needed)))
    }
}

#[async_trait]
impl WaitStore for RedisStore {
    async fn wait_check(&self, id: Uuid) -> Result<bool> {
        let Some((job, _)) = self.load(id).await? else {
            return Err(StoreError::NotFound);
        };
        let Some(w) = job
            .wait
            .as_ref()
            .filter(|_| job.status == JobStatus::Waiting)
        else {
            return Ok(false);
        };
        // Counted first (one round trip, no record read): a signal marks every job waiting on
        // its key, and most such checks find an item short.
        if !self.counts_reach(&w.items, w.until()).await? {
            return Ok(false);
        }
        let seen = seen_now(self, &w.items, w.until()).await?;
        if !all_met(&w.items, &seen) {
            return Ok(false);
        }
        match self.apply_cmd(id, Command::WaitRelease { seen }).await {
            Ok(j) => {
                counters().count_release(&j);
                Ok(true)
            }
            // Released, cancelled or timed out by someone else meanwhile.
            Err(StoreError::Transition(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn wait_check_marked(&self, max: usize) -> Result<usize> {
        let key = self.key("waitdue");
        let marks: Vec<(String, String)> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(max.saturating_sub(1))
                    .arg("WITHSCORES")
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        // Marks passed over do not count: a round full of jobs that cannot be checked is not
        // "busy" (the caller would go round again at once, on the same marks).
        let mut done = 0;
        for (id, generation) in &marks {
            if let Ok(uuid) = Uuid::parse_str(id) {
                match self.wait_check(uuid).await {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e @ StoreError::Unavailable(_)) => return Err(e),
                    // A job this build cannot check (its hash unreadable): its mark stays for
                    // later, and the marks behind it are checked now, not held up by it.
                    Err(e) => {
                        tracing::warn!(job = %uuid, error = %e, "cannot check a waiting job");
                        continue;
                    }
                }
            }
            done += 1;
            let _: i64 = self
                .exec(true, |mut c| {
                    let mut inv = UNMARK.prepare_invoke();
                    inv.key(&key).arg(id).arg(generation);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
        }
        Ok(done)
    }

    async fn wait_next_deadline(&self) -> Result<Option<Micros>> {
        self.first_score(&self.key("waitdl")).await
    }

    async fn wait_fire_deadlines(&self, max: usize) -> Result<Vec<Job>> {
        let key = self.key("waitdl");
        let now = self.now().await;
        let ids: Vec<String> = self.zrange_by_score(&key, "-inf", now, (0, max)).await?;
        let mut out = Vec::new();
        for id in ids {
            let Ok(uuid) = Uuid::parse_str(&id) else {
                self.zrem(key.clone(), id).await?;
                continue;
            };
            // A job this build cannot read (its hash unreadable) is passed over, its entry kept:
            // the deadlines after it still fire.
            let seen = match self.deadline_seen(uuid).await {
                Ok(Some(x)) => x,
                Ok(None) => {
                    self.zrem(key.clone(), id).await?;
                    continue;
                }
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(job = %uuid, error = %e, "cannot apply a waiting job's deadline");
                    continue;
                }
            };
            // Signals are checked after their write here, not in it (`P:waitdue`): a job whose
            // records all came (before its deadline) while its mark waited is released by them,
            // as the embedded store would have done at the last record; the transition decides
            // (`job::transition::manage::wait_deadline`).
            match self.apply_cmd(uuid, Command::WaitDeadline { seen }).await {
                Ok(j) => {
                    counters().count_release(&j);
                    if j.wait.as_ref().and_then(|w| w.released_by) == Some(ReleasedBy::Deadline) {
                        out.push(j);
                    }
                }
                Err(StoreError::Transition(_)) => {
                    // Still there after the winner's commit removed it: an entry left behind.
                    if self
                        .load(uuid)
                        .await?
                        .is_some_and(|(j, _)| j.status != JobStatus::Waiting)
                    {
                        self.zrem(key.clone(), id).await?;
                    }
                }
                Err(StoreError::NotFound) => self.zrem(key.clone(), id).await?,
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(job = %uuid, error = %e, "cannot apply a waiting job's deadline")
                }
            }
        }
        Ok(out)
    }
}
