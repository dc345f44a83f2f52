//! [`JobStore::apply_start`] for Redis: an attempt's start and, when the attempt ended before
//! the start was sent (a quick service job), its finish, as ONE write of the job in one
//! `commit.lua` call: one compare-and-set against the version the start was computed from, the
//! job written once as the finish leaves it, its indexes moved from the stored status to the
//! last, and both events (RUNNING, then the finish's) appended in order with their deliveries
//! (one round trip, one script call and one job write instead of two, with every event and
//! notice of the two changes).
//!
//! The finish is taken from the attempt's [`FinishSlot`] by the committer as it builds the batch
//! that carries the start ([`super::commit::Late`]): the latest moment before the call is sent,
//! as the embedded store takes it when its writer gets to the start. An offer made after that is
//! refused and the worker records the finish on its own.
//!
//! Also the change of one job every other command makes ([`RedisStore::apply_cmd`],
//! [`RedisStore::update`]): read (from this process's cache when it wrote the job last), apply,
//! commit against the version read, again after a conflict.

use super::commit::{Late, LateFinish, LateOutcome, Reply};
use super::write::Write;
use super::*;
use crate::store::FinishSlot;

impl RedisStore {
    /// The job as this process last wrote it (cached, without its stored text), or as stored.
    pub(super) async fn current(&self, id: Uuid) -> Result<(Job, String)> {
        let cached = self.cache.lock().get(&id).cloned();
        match cached {
            Some(j) => Ok((j, String::new())),
            // Boxed (a cache miss is rare): the callers' futures stay small.
            None => Box::pin(self.load(id)).await?.ok_or(StoreError::NotFound),
        }
    }

    /// Loads, changes with `f` and commits one job, again after each conflict.
    pub(super) async fn update<F>(&self, id: Uuid, mut f: F) -> Result<Job>
    where
        F: FnMut(&mut Job, Micros) -> Result<Option<EventKind>>,
    {
        let mut mine: Option<(String, Job)> = None;
        for _ in 0..CAS_TRIES {
            let (job, raw) = self.current(id).await?;
            // A commit whose reply was lost (connection dropped) and that was sent again: the
            // stored job is exactly what we wrote.
            if let Some((body, j)) = mine.take() {
                if body == raw {
                    return Ok(j);
                }
            }
            let from_cache = raw.is_empty();
            let mut next = job.clone();
            let ev = match f(&mut next, self.now().await) {
                Ok(ev) => ev,
                // A refusal must come from the stored job, not from a stale copy.
                Err(_) if from_cache => {
                    self.cache.lock().remove(&id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let w = self.write(Some(job.version), Some(&job), next, ev)?;
            match self.commit(std::slice::from_ref(&w)).await?.pop() {
                Some(Reply::Ok) => return Ok(w.job),
                Some(Reply::Gone) => return Err(StoreError::NotFound),
                Some(Reply::Failed(e)) => return Err(StoreError::Backend(e)),
                _ => {
                    mine = Some((w.body, w.job));
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(StoreError::Backend(format!(
            "job {id}: gave up after {CAS_TRIES} conflicting writes"
        )))
    }

    pub(super) async fn apply_cmd(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.update(id, |job, now| {
            let ctx = self.actx(now);
            Ok(apply(job, cmd.clone(), &ctx)?)
        })
        .await
    }

    /// See the module docs; the result as [`JobStore::apply_start`] gives it.
    pub(super) async fn start_and_finish(
        &self,
        id: Uuid,
        start: Command,
        finish: Arc<FinishSlot>,
    ) -> Result<(Job, Option<Result<Job>>)> {
        let r = self.start_inner(id, start, &finish).await;
        if r.is_err() {
            // Closed whatever happened: an offer after a refused start is recorded on its own.
            finish.take();
        }
        r
    }

    async fn start_inner(
        &self,
        id: Uuid,
        start: Command,
        finish: &Arc<FinishSlot>,
    ) -> Result<(Job, Option<Result<Job>>)> {
        let mut source = Some(LateFinish::Slot(finish.clone()));
        let mut mine: Option<Tried> = None;
        for _ in 0..CAS_TRIES {
            let (job, raw) = self.current(id).await?;
            if let Some(tried) = mine.take() {
                // Boxed: a conflict is rare, and inline its future was 15 KB of every start's.
                let again = Box::pin(self.stored_already(id, tried, &raw, &mut source)).await;
                if let Some(done) = again {
                    return Ok(done);
                }
            }
            let from_cache = raw.is_empty();
            let mut next = job.clone();
            let ev = match apply(&mut next, start.clone(), &self.actx(self.now().await)) {
                Ok(ev) => ev,
                // A refusal must come from the stored job, not from a stale copy.
                Err(_) if from_cache => {
                    self.cache.lock().remove(&id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let w = self.write(Some(job.version), Some(&job), next, ev)?;
            let late = source.take().map(|finish| {
                Box::new(Late {
                    before: job,
                    after: w.job.clone(),
                    event: w.event.clone(),
                    delivery: w.delivery.clone(),
                    finish,
                })
            });
            let (mut replies, outcome) = self.commit_late(std::slice::from_ref(&w), late).await?;
            match replies.pop() {
                Some(Reply::Ok) => {}
                Some(Reply::Gone) => return Err(StoreError::NotFound),
                Some(Reply::Failed(e)) => return Err(StoreError::Backend(e)),
                _ => {
                    // Lost the compare-and-set (or the reply): load and apply again, with the
                    // finish taken, if one was.
                    let end = match outcome {
                        LateOutcome::Sent(cmd, w2, _) => Some((cmd, w2)),
                        LateOutcome::Refused(cmd, _) => {
                            source = Some(LateFinish::Taken(cmd));
                            None
                        }
                        LateOutcome::None => None,
                    };
                    mine = Some(Tried { start: w, end });
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let started = w.job;
            // The reply was OK: when the finish was sent, it was in the same write.
            return Ok(match outcome {
                LateOutcome::None => (started, None),
                LateOutcome::Refused(_, e) => (started, Some(Err(e))),
                LateOutcome::Sent(_, w2, _) => (started, Some(Ok(w2.job))),
            });
        }
        Err(StoreError::Backend(format!(
            "job {id}: gave up after {CAS_TRIES} conflicting writes"
        )))
    }

    /// A try answered CONFLICT may have been stored after all (its reply was lost and the call
    /// sent again): `raw` is the stored body. Returns the result when it was; else leaves the
    /// finish the try took in `source` for the next try.
    async fn stored_already(
        &self,
        id: Uuid,
        tried: Tried,
        raw: &str,
        source: &mut Option<LateFinish>,
    ) -> Option<(Job, Option<Result<Job>>)> {
        if let Some((cmd, w2)) = tried.end {
            if w2.body == raw {
                self.remember(&w2.job);
                return Some((tried.start.job, Some(Ok(w2.job))));
            }
            *source = Some(LateFinish::Taken(cmd));
        }
        if tried.start.body != raw {
            return None;
        }
        // The start alone was stored: its finish, if any, is a change of its own. Only a try
        // that sent the start alone gets here (a finish in its write makes that write's body
        // differ from the start's): no finish was offered in time, or it was refused by the
        // status rules before anything was sent.
        let cmd = match source.take() {
            Some(LateFinish::Taken(cmd)) => Some(cmd),
            Some(LateFinish::Slot(s)) => s.take(),
            None => None,
        };
        Some(match cmd {
            Some(cmd) => {
                let end = self.apply_cmd(id, cmd).await;
                (tried.start.job, Some(end))
            }
            None => (tried.start.job, None),
        })
    }
}

/// A try's writes answered CONFLICT: the start and, when it went with it, the finish (its
/// command and write).
struct Tried {
    start: Write,
    end: Option<(Command, Box<Write>)>,
}
