//! The fire loop every `serve` and `worker` process runs: wakes at the earliest schedule wake
//! time (at most a second later, so schedules created on another node are seen), decides with
//! [`super::plan`] under a compare-and-set, and submits the decided fires.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{fire_key, plan_busy, PendingFire, Previous, RunEntry, Schedule, PENDING_GRACE_US};
use crate::job::{Command, Job, JobStatus, Micros};
use crate::runner_set::RunnerSet;
use crate::store::log_quiet::warn_unless_refused;
use crate::store::{Result, Store, StoreError, Submitted};

/// Compare-and-set attempts before a wake-up gives up (it is retried at the next one).
const CAS_TRIES: usize = 20;
/// Longest sleep of the loop: how late a schedule created on another node may be seen.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Schedules handled per wake-up.
const BATCH: usize = 200;
/// Fires submitted with one `submit_many` and confirmed with one write of the schedule's
/// record: a catch-up or backfill of 1,000 fires confirms them with 10 writes of its (up to
/// ~90 KB) record, not 1,000, and so ends well within [`PENDING_GRACE_US`] (past it, every node
/// would join in).
const FIRES_PER_WRITE: usize = 100;

/// What became of one decided fire.
struct Fired {
    fire_time: Micros,
    /// When the pending fire it was made for was decided (`PendingFire::decided_at`).
    decided_at: Micros,
    /// Its job, if it made one.
    sub: Option<Submitted>,
    /// Why it made none.
    error: Option<String>,
    /// The store did not take it: it stays pending (not confirmed).
    untaken: bool,
}

impl Fired {
    /// Its job, or why it made none.
    fn outcome(self) -> std::result::Result<Submitted, String> {
        self.sub
            .ok_or_else(|| self.error.unwrap_or_else(|| "the fire made no job".into()))
    }
}

/// What firing needs: the store and the runners (a fire's runner is chosen again at each fire,
/// as a submit's is).
#[derive(Clone)]
pub struct Firing {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The runners.
    pub runners: Arc<RunnerSet>,
    /// Readiness signals older than this are deleted (the loop trims them once a minute).
    pub signal_retention: Duration,
}

/// How often the fire loop trims old signals.
const SIGNAL_TRIM_EVERY: Duration = Duration::from_secs(60);

/// Runs the fire loop until `stop`.
pub async fn fire_loop(f: Firing, stop: CancellationToken) {
    let mut trimmed = std::time::Instant::now();
    // Since when the loop has been working without a pause (schedules still due after each
    // pass): a fire time is late by how long before that it was, not by how long the backlog
    // took (`super::plan_busy`). Reset once nothing is due, or a pass failed.
    let mut busy_since: Option<Micros> = None;
    loop {
        if trimmed.elapsed() >= SIGNAL_TRIM_EVERY {
            trimmed = std::time::Instant::now();
            // Records are stamped with the store's time: so is the cut (a node whose clock
            // runs ahead must not delete every node's signals early).
            let before = f.store.time().await - f.signal_retention.as_micros() as i64;
            match f.store.signals_trim(before).await {
                Ok(n) if n > 0 => tracing::debug!(signals = n, "old signals deleted"),
                Ok(_) => {}
                Err(e) => warn_unless_refused!(e, "signal retention failed"),
            }
        }
        // Every schedule time is the store's (not this node's wall clock): a node whose clock
        // is off fires, misfires and plans as the others do.
        let now = f.store.time().await;
        let busy = *busy_since.get_or_insert(now);
        // A wake-up that failed: tried again in a second.
        let mut trouble = false;
        match f.store.schedules_due(now, BATCH).await {
            Ok(names) => {
                for name in names {
                    if let Err(e) = f.tick(&name, busy).await {
                        if super::unreadable::set_aside(&*f.store, &name, &e).await {
                            continue;
                        }
                        trouble = true;
                        warn_unless_refused!(e, schedule = %name, "schedule not handled; retrying");
                    }
                }
            }
            Err(e) => {
                trouble = true;
                warn_unless_refused!(e, "cannot read due schedules");
            }
        }
        // A pass that failed anywhere was not the loop working through a backlog: the next
        // counts lateness from its own start (a store refusing writes for hours must not make
        // its fires "late, not missed" afterwards).
        if trouble {
            busy_since = None;
        }
        let wait = if trouble {
            MAX_SLEEP
        } else {
            match f.store.schedules_next_wake().await {
                Ok(Some(w)) => {
                    let left = w - f.store.time().await;
                    if left > 0 {
                        busy_since = None;
                    }
                    Duration::from_micros(left.clamp(2_000, MAX_SLEEP.as_micros() as i64) as u64)
                }
                _ => {
                    busy_since = None;
                    MAX_SLEEP
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl Firing {
    /// Which of the schedule's recent jobs ([`Schedule::recent_jobs`]: its last
    /// [`super::LAST_RUNS`] recorded runs, triggers and backfills included) are still active:
    /// at most that many reads, made at once.
    async fn previous(&self, s: &Schedule) -> Result<Previous> {
        let ids = s.recent_jobs();
        let jobs = futures::future::join_all(ids.iter().map(|id| self.store.get(*id))).await;
        let mut active = Vec::new();
        let now = self.store.time().await;
        for (id, j) in ids.into_iter().zip(jobs) {
            match j {
                // A cancelled job whose worker is still stopping its work counts as active.
                Ok(Some(j)) if j.status.is_terminal() && !j.still_stopping(now) => {}
                Ok(Some(_)) => active.push(id),
                Ok(None) => {}
                // Redis unreachable: the tick waits (as before).
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                // A job this build cannot read: taken as still active (the overlap policy
                // errs on the side of not running two), and the schedule goes on.
                Err(e) => {
                    tracing::warn!(schedule = %s.spec.name, job = %id, error = %e, "cannot read a schedule's job");
                    active.push(id);
                }
            }
        }
        Ok(if active.is_empty() {
            Previous::Idle
        } else {
            Previous::Active(active)
        })
    }

    /// One wake-up of schedule `name`: decide (compare-and-set), then submit what was decided
    /// and any pending fire whose deciding process has not confirmed it in time. `busy_since`:
    /// since when the loop has been working without a pause ([`plan_busy`]).
    pub async fn tick(&self, name: &str, busy_since: Micros) -> Result<()> {
        for _ in 0..CAS_TRIES {
            let Some(s) = self.store.schedule(name).await? else {
                // Due, yet without a record (on Redis a hand `DEL` of its key): taken out of the
                // indexes, or the loop would meet it again at once, for ever.
                if self.store.schedule_orphan(name).await? {
                    tracing::warn!(schedule = %name, "schedule without a record taken out of the index");
                }
                return Ok(());
            };
            let now = self.store.time().await;
            let due = !s.paused && s.next_fire.is_some_and(|f| f <= now);
            let prev = if (due && s.spec.overlap != super::Overlap::Allow) || s.buffered.is_some() {
                self.previous(&s).await?
            } else {
                Previous::Idle
            };
            let mut next = s.clone();
            let changed = match s.cron() {
                // Off the async runtime: after a long outage a frequent schedule's catch-up reads
                // up to about a million fire times (seconds of CPU), which would hold a runtime
                // thread and every request and tick queued behind it.
                Ok(c) => {
                    let (planned, changed) = tokio::task::spawn_blocking(move || {
                        let changed = plan_busy(&mut next, &c, (now, busy_since), &prev);
                        (next, changed)
                    })
                    .await
                    .map_err(|e| StoreError::Backend(format!("schedule `{name}`: plan: {e}")))?;
                    next = planned;
                    changed
                }
                Err(e) => {
                    // A record this version cannot parse: stop firing it rather than spin.
                    tracing::error!(schedule = %name, error = ?e, "schedule pattern no longer parses; not firing it");
                    next.next_fire = None;
                    true
                }
            };
            if changed {
                next.version = s.version + 1;
                next.updated_at = now;
                if !self.store.schedule_cas(&next, Some(s.version)).await? {
                    continue;
                }
                use super::counters::{add, MISFIRES, SKIPPED_OVERLAPS};
                add(
                    &MISFIRES,
                    next.counters.misfires.saturating_sub(s.counters.misfires),
                );
                add(
                    &SKIPPED_OVERLAPS,
                    next.counters
                        .skipped_overlaps
                        .saturating_sub(s.counters.skipped_overlaps),
                );
            }
            let todo: Vec<PendingFire> = next
                .pending
                .iter()
                .filter(|p| {
                    (changed && p.decided_at == now) || p.decided_at + PENDING_GRACE_US <= now
                })
                .cloned()
                .collect();
            for batch in todo.chunks(FIRES_PER_WRITE) {
                match self.submit_pending(&next, batch).await {
                    // Deleted meanwhile: its fires are no more.
                    Err(StoreError::NotFound) => return Ok(()),
                    r => {
                        r?;
                    }
                }
            }
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "schedule `{name}`: too many concurrent changes"
        )))
    }

    /// Submits decided fires (idempotent: each key is its fire's) with one `submit_many`, and
    /// confirms them on the record with one compare-and-set. Returns each fire's job, in order
    /// (or why the fire could not make one, recorded as an error); `NotFound` when the
    /// schedule was deleted (or made again) since the fires were decided. A fire the store
    /// could not take stays pending (any node submits it again after [`PENDING_GRACE_US`]) and
    /// its error is returned, after the others are confirmed.
    pub async fn submit_pending(
        &self,
        s: &Schedule,
        fires: &[PendingFire],
    ) -> Result<Vec<std::result::Result<Submitted, String>>> {
        // Deleted since the fires were decided (and maybe made again under its name, by
        // another caller): its fires are no more, and a job made now would be stamped as made
        // after the new one was created (see `made_by`). Checked before each batch.
        match self.store.schedule(&s.spec.name).await? {
            Some(cur) if cur.created_at == s.created_at => {}
            _ => return Err(StoreError::NotFound),
        }
        let mut cancel: Vec<uuid::Uuid> = Vec::new();
        for p in fires {
            cancel.extend(p.cancel.iter().chain(&p.cancel_also));
        }
        cancel.sort_unstable();
        cancel.dedup();
        for c in cancel {
            // cancel_other: the job may have ended meanwhile; any refusal is fine.
            if let Ok(j) = self.store.apply(c, Command::Cancel).await {
                crate::outcomes::log_change(&j);
            }
        }
        let runner_name = s.spec.job.get("runner").and_then(|v| v.as_str());
        let mut out: Vec<Fired> = fires
            .iter()
            .map(|p| Fired {
                fire_time: p.fire_time,
                decided_at: p.decided_at,
                sub: None,
                error: None,
                untaken: false,
            })
            .collect();
        let mut jobs = Vec::new();
        let mut made = Vec::new();
        let now = self.store.time().await;
        for (i, p) in fires.iter().enumerate() {
            match self
                .runners
                .select(&s.proto.job_type, &s.proto.args, runner_name)
            {
                Ok(slot) => {
                    jobs.push(job_for_fire(s, p, Some(slot.name.clone()), now));
                    made.push(i);
                }
                Err(e) => out[i].error = Some(e.to_string()),
            }
        }
        let stored = if jobs.is_empty() {
            Vec::new()
        } else {
            self.store.submit_many(jobs).await?
        };
        let mut left = None;
        for (i, r) in made.into_iter().zip(stored) {
            match r {
                Ok(sub) if sub.created || made_by(s, &sub.job) => out[i].sub = Some(sub),
                // Neither recorded, returned nor ever cancelled: another tenant's, maybe.
                Ok(_) => {
                    out[i].error = Some(format!(
                        "the fire's key is held by a job this schedule did not make (one of an \
                         earlier schedule named `{}`, deleted, then created again); this fire \
                         makes no job",
                        s.spec.name
                    ))
                }
                Err(e) => {
                    out[i].untaken = true;
                    left.get_or_insert(e);
                }
            }
        }
        let done: Vec<&Fired> = out.iter().filter(|f| !f.untaken).collect();
        self.confirm(&s.spec.name, &done).await?;
        if let Some(e) = left {
            return Err(e);
        }
        Ok(out.into_iter().map(Fired::outcome).collect())
    }

    /// Records `fires` on the schedule and takes them off its pending list: one
    /// compare-and-set for all of them.
    async fn confirm(&self, name: &str, fires: &[&Fired]) -> Result<()> {
        if fires.is_empty() {
            return Ok(());
        }
        for _ in 0..CAS_TRIES {
            let Some(cur) = self.store.schedule(name).await? else {
                return Ok(());
            };
            let now = self.store.time().await;
            let mut next = cur.clone();
            let mut counted = 0;
            let mut errors = Vec::new();
            for f in fires {
                // Not pending: another process confirmed it (its submit returned the same job).
                let Some(decided) = cur
                    .pending
                    .iter()
                    .find(|x| x.fire_time == f.fire_time)
                    .map(|x| x.decided_at)
                else {
                    continue;
                };
                next.pending.retain(|x| x.fire_time != f.fire_time);
                if f.sub
                    .as_ref()
                    .is_some_and(|s| seen(&next.last_runs, (f.decided_at, decided), s))
                {
                    continue;
                }
                if f.sub.is_some() {
                    counted += 1;
                }
                if let Some(e) = &f.error {
                    errors.push(e.clone());
                }
                next.record(RunEntry {
                    fire_time: f.fire_time,
                    outcome: if f.sub.is_some() {
                        "submitted"
                    } else {
                        "error"
                    }
                    .into(),
                    job_id: f.sub.as_ref().map(|s| s.job.id),
                    count: 1,
                    error: f.error.clone(),
                    at: now,
                    job_of: (f.sub.as_ref())
                        .map(|s| (s.job.job_type.clone(), s.job.channel_id.clone())),
                });
            }
            if next.pending.len() == cur.pending.len() {
                return Ok(());
            }
            next.counters.fires += counted;
            next.version = cur.version + 1;
            next.updated_at = now;
            if self.store.schedule_cas(&next, Some(cur.version)).await? {
                super::counters::add(&super::counters::FIRES, counted);
                for e in errors {
                    tracing::warn!(schedule = %name, error = %e, "a fire could not make a job");
                }
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "schedule `{name}`: too many concurrent changes"
        )))
    }

    /// Adds fires at `times` to the schedule's pending list (one compare-and-set), then submits
    /// them. `trigger` and `backfill` use it; the keys make a time already fired return its job.
    /// Each time with its job, or why it made none. `admit` is asked about the schedule as it
    /// is loaded for the change (each try): its error is answered, nothing changed (the API's
    /// check of the caller's grant, on the schedule it fires, not an earlier look at it).
    pub async fn fire_now<E: From<StoreError>>(
        &self,
        name: &str,
        times: &[Micros],
        admit: impl Fn(&Schedule) -> std::result::Result<(), E>,
    ) -> std::result::Result<Vec<(Micros, std::result::Result<Submitted, String>)>, E> {
        let mut decided = None;
        for _ in 0..CAS_TRIES {
            let Some(cur) = self.store.schedule(name).await? else {
                return Err(StoreError::NotFound.into());
            };
            admit(&cur)?;
            let now = self.store.time().await;
            let mut next = cur.clone();
            for t in times {
                if !next.pending.iter().any(|p| p.fire_time == *t) {
                    next.pending.push(PendingFire {
                        fire_time: *t,
                        decided_at: now,
                        cancel: None,
                        cancel_also: vec![],
                        manual: true,
                    });
                }
            }
            next.version = cur.version + 1;
            next.updated_at = now;
            if self.store.schedule_cas(&next, Some(cur.version)).await? {
                decided = Some(next);
                break;
            }
        }
        let Some(s) = decided else {
            return Err(StoreError::Backend(format!(
                "schedule `{name}`: too many concurrent changes"
            ))
            .into());
        };
        let fires: Vec<PendingFire> = times
            .iter()
            .filter_map(|t| s.pending.iter().find(|p| p.fire_time == *t).cloned())
            .collect();
        let mut out = Vec::new();
        for batch in fires.chunks(FIRES_PER_WRITE) {
            let times = batch.iter().map(|p| p.fire_time);
            out.extend(times.zip(self.submit_pending(&s, batch).await?));
        }
        Ok(out)
    }
}

/// Whether a fire's job was recorded (and counted) already, by the confirm of an earlier
/// decision of its time: a time fired again (a trigger or backfill of a time that has its job,
/// or a repeated backfill) returns the job it made, recorded and counted once. `decided`: (the
/// decision this caller's fire was made for, the one pending now). Such a job is in `last_runs`;
/// or, pushed out of it:
/// - made by this caller (`created`): the pending decision is another than the one it was made
///   for (a time is decided again only once its earlier decision was confirmed: two backfills
///   of one time share its decision, one confirms it, a third decides the time again; the
///   maker's confirm must not count its job a second time). Compared as decisions, not clocks:
///   the nodes' clocks may differ;
/// - returned to it (`!created`): made before the pending decision (a fire whose first submit
///   was never confirmed, its node dead, is recorded now: its job was made after its decision).
fn seen(last_runs: &[RunEntry], (made_for, pending): (Micros, Micros), sub: &Submitted) -> bool {
    last_runs.iter().any(|r| r.job_id == Some(sub.job.id))
        || if sub.created {
            made_for != pending
        } else {
            sub.job.created_at < pending
        }
}

/// How much earlier than its schedule a job of one of its fires may say it was made: the
/// nodes' clocks may differ by this much.
const CLOCK_MARGIN_US: Micros = 60_000_000;

/// Whether `job`, the job a submit of one of `s`'s fire keys returned without making it, was
/// made by this schedule (another node's submit of the same fire, or this one's before a crash,
/// maybe before a `PUT` changed the template) and not by an earlier schedule of the same name,
/// deleted and created again, whose fire keys are the same. A schedule's creator may be confined
/// to other types and channels than the earlier one's: its fires must not adopt (record, return,
/// later cancel) that one's jobs. An earlier schedule's jobs were all made before this one was
/// created (it was deleted first), give or take the nodes' clocks ([`CLOCK_MARGIN_US`]): a job
/// made later is this one's, and so is one its runs recorded; one made around its creation is
/// taken only if it has the template's type, and its channel when the template names one.
/// That guess is for jobs made by a build before [`Job::schedule_gen`] (or rewritten by one): a
/// job that carries its schedule's creation time is this schedule's exactly when it is this one's.
pub(super) fn made_by(s: &Schedule, job: &crate::job::Job) -> bool {
    if let Some(made_for) = job.schedule_gen {
        return made_for == s.created_at;
    }
    if job.created_at > s.created_at.saturating_add(CLOCK_MARGIN_US)
        || s.last_runs.iter().any(|r| r.job_id == Some(job.id))
    {
        return true;
    }
    let channel = s
        .spec
        .job
        .get("channel")
        .and_then(serde_json::Value::as_str);
    job.job_type == s.proto.job_type
        && channel.is_none_or(|c| job.channel_id == c)
        && job.created_at.saturating_add(CLOCK_MARGIN_US) >= s.created_at
}

/// A deterministic delay in `[0, jitter_ms)` ms for a fire: every process computes the same.
pub fn jitter_us(name: &str, fire_time: Micros, jitter_ms: u64) -> Micros {
    if jitter_ms == 0 {
        return 0;
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{name}\n{fire_time}").as_bytes());
    let v = u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8]));
    ((v % (jitter_ms * 1000)) as i64).max(0)
}

/// The job of one fire: a copy of the schedule's prototype with its own id, key and times (the id
/// of `now`, its `created_at`: [`crate::job::id_at`]).
pub fn job_for_fire(s: &Schedule, fire: &PendingFire, runner: Option<String>, now: Micros) -> Job {
    let fire_time = fire.fire_time;
    let mut j = s.proto.clone();
    j.id = crate::job::id_at(now);
    if s.spec
        .job
        .get("channel")
        .and_then(serde_json::Value::as_str)
        .is_none()
    {
        j.channel_id = j.id.to_string();
    }
    if let Some(r) = runner {
        j.runner = r;
    }
    j.idempotency_key = Some(fire_key(&s.spec.name, fire_time));
    j.schedule = Some(s.spec.name.clone());
    j.fire_time = Some(fire_time);
    j.schedule_gen = Some(s.created_at);
    // A trigger or a backfill runs now: `jitter` spreads the clock's fires, not a run asked for.
    let jitter = if fire.manual {
        0
    } else {
        jitter_us(&s.spec.name, fire_time, s.spec.jitter_ms)
    };
    let run_at = fire_time + jitter;
    // A waiting template: its times resolved against this fire, in the schedule's time zone.
    j.wait = crate::waiting::for_fire(&s.spec.job, fire_time, &s.spec.timezone, now);
    if j.wait.is_some() {
        j.status = JobStatus::Waiting;
        j.run_at = None;
    } else if run_at > now {
        j.status = JobStatus::Scheduled;
        j.run_at = Some(run_at);
    } else {
        j.status = JobStatus::Queued;
        j.run_at = None;
    }
    j.created_at = now;
    j.updated_at = now;
    j.queued_at = now;
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(created: bool, created_at: Micros) -> Submitted {
        let mut job = crate::store::job_record::fixtures::job();
        job.created_at = created_at;
        Submitted { job, created }
    }

    #[test]
    fn a_job_made_before_its_fire_was_decided_again_is_counted_once() {
        let s: &[RunEntry] = &[];
        // Made by this caller (created) for the decision of 40, its time decided again at 150
        // after another caller's confirm recorded it (pushed out of `last_runs` since): seen.
        assert!(seen(s, (40, 150), &sub(true, 100)));
        assert!(seen(s, (40, 150), &sub(false, 100)));
        // Made for the decision being confirmed: its first record, whatever the clocks say (a
        // maker whose clock is behind the decider's stamps its job before the decision).
        assert!(!seen(s, (150, 150), &sub(true, 100)));
        assert!(!seen(s, (150, 150), &sub(true, 200)));
        // Returned to it, made after the pending decision: a dead node's submit, recorded now.
        assert!(!seen(s, (50, 50), &sub(false, 100)));
    }
}
