//! Jobs whose runner this process's config no longer has, or no longer gives their type. A job
//! stores the name of the runner chosen at its submit, and a claim picks jobs by that name; a
//! runner's default name is its place (`{kind}-{index}`), so reordering, inserting or removing
//! a `[[runners]]` block (or changing a runner's `types` or kind) leaves stored jobs under a
//! name that now means another runner, or none (docs/configuration.md, "Runner names").
//!
//! - The claim guard ([`Worker::misrouted`]): a worker never launches a job whose type its
//!   runner does not claim. The claim is given back in one write (`Command::Reroute`): QUEUED
//!   for the runner this config picks for the type ([`RunnerSet::route`]), its attempt given
//!   back. A job no runner here claims, or one re-routed at its two claims before too (Redis
//!   processes whose runner names mean different things would pass it between them), is
//!   parked: QUEUED under [`PARKED_RUNNER`], a name no runner has (refused in a config), so no
//!   claim meets it again; logged at WARN, once (it is parked once).
//! - The start's pass ([`stranded`]). Embedded store (one process holds it, so its config is
//!   the only one): every job neither active nor finished whose runner is gone or does not
//!   claim its type (parked ones too) is moved to the runner that does, or parked when none
//!   does; and a job the reaper requeues after a crash goes the same way
//!   ([`route_requeued`]). Redis: processes may run different runners on purpose (a job under
//!   a runner this process lacks is another's), so only parked jobs are moved, those whose
//!   type a runner of this process claims: at start and [`UNPARK_EVERY`] after each pass
//!   ([`unpark_loop`]), each parked job moved at most once per process.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::Worker;
use crate::job::transition::REROUTED;
use crate::job::{Command, Job, JobStatus};
use crate::runner_set::{RunnerSet, RunnerSlot};
use crate::store::{ListQuery, Store};

pub use crate::config::PARKED_RUNNER;

/// Jobs read per page by the start's pass.
const PAGE: usize = 200;

/// Per-job lines the start's pass logs at most (the rest are counted in its summary).
const LINES: usize = 100;

impl Worker {
    /// The claim guard: true when `job`, claimed under `token` for `slot`, is of a type `slot`
    /// does not claim; then it was not launched and has been given back (see the module docs).
    pub(super) async fn misrouted(&self, job: &Job, slot: &RunnerSlot, token: u64) -> bool {
        if slot.claims(&job.job_type) {
            return false;
        }
        let (id, from) = (job.id, job.runner.as_str());
        // The two runs before this claim were re-routed too: processes whose runner names mean
        // different things would pass the job between them for ever; it is parked instead (one
        // re-route before is a config change, or two in a row, not yet a ping-pong).
        let rerouted = |back: usize| {
            job.runs.len() > back
                && job.runs[job.runs.len() - 1 - back].outcome.as_deref() == Some(REROUTED)
        };
        let again = rerouted(1) && rerouted(2);
        let runner = match self.runners.route(&job.job_type, from) {
            Some(to) if !again => {
                tracing::warn!(job_id = %id, r#type = %job.job_type, from, to = %to.name,
                    "runner does not claim the job's type (its config changed): job re-routed");
                to.name.clone()
            }
            to => {
                let why = if to.is_some() {
                    "re-routed at its two claims before too (processes disagree on what runs this \
                     type: check every process's [[runners]])"
                } else {
                    "no runner of this process claims the job's type"
                };
                tracing::warn!(job_id = %id, r#type = %job.job_type, runner = from,
                    parked = PARKED_RUNNER, "{why}: job parked, not run (a process with a \
                    runner for its type moves it: at its start, or on Redis within about 30 s)");
                PARKED_RUNNER.to_string()
            }
        };
        self.work_ended(id, token);
        let cmd = Command::Reroute {
            token: Some(token),
            from: None,
            runner,
        };
        let r = self.store.apply(id, cmd).await;
        self.settle(id, token, &r).await;
        if let Err(e) = r {
            // Not given back: its lease runs out and the reaper requeues it (to this guard).
            tracing::info!(job_id = %id, error = %e, "cannot give the job back for re-routing");
        }
        true
    }
}

/// Where a job neither active nor finished goes under `runners` (the start's pass, a requeue).
enum Destination {
    /// Its runner is here and claims its type.
    Stays,
    /// To this runner (its own if that claims the type, else the first that does).
    Runner(String),
    /// No runner claims its type.
    Parked,
}

fn destination(runners: &RunnerSet, job: &Job) -> Destination {
    if runners
        .get(&job.runner)
        .is_some_and(|s| s.claims(&job.job_type))
    {
        return Destination::Stays;
    }
    runners
        .route(&job.job_type, &job.runner)
        .map_or(Destination::Parked, |s| Destination::Runner(s.name.clone()))
}

/// The start's pass over the jobs of the embedded store (see the module docs): every QUEUED,
/// SCHEDULED or WAITING job (no lease) whose runner is gone from `runners` or does not claim its
/// type goes to the runner that does. Read in pages of [`PAGE`]; one write per job moved.
pub async fn stranded(store: &Arc<dyn Store>, runners: &RunnerSet) {
    if store.backend_name() != "embedded" {
        return;
    }
    let (mut moved, mut lines) = (0usize, 0usize);
    let mut unrouted: BTreeMap<String, usize> = BTreeMap::new();
    for status in [JobStatus::Queued, JobStatus::Scheduled, JobStatus::Waiting] {
        let mut cursor = None;
        loop {
            let q = ListQuery {
                status: Some(status),
                limit: PAGE,
                cursor,
                ..ListQuery::default()
            };
            let page = match store.list(q).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the stored jobs to re-route them");
                    return;
                }
            };
            for job in page.jobs.iter().filter(|j| j.lease.is_none()) {
                let to = match destination(runners, job) {
                    Destination::Stays => continue,
                    Destination::Parked => {
                        *unrouted.entry(job.job_type.clone()).or_default() += 1;
                        if job.runner == PARKED_RUNNER {
                            continue;
                        }
                        PARKED_RUNNER.to_string()
                    }
                    Destination::Runner(to) => to,
                };
                let cmd = Command::Reroute {
                    token: None,
                    from: Some(job.runner.clone()),
                    runner: to.clone(),
                };
                match store.apply(job.id, cmd).await {
                    Ok(_) => {
                        moved += 1;
                        if lines < LINES {
                            lines += 1;
                            tracing::warn!(job_id = %job.id, r#type = %job.job_type,
                                from = %job.runner, to = %to, status = %job.status,
                                "job's runner is gone or no longer claims its type: re-routed");
                        }
                    }
                    // Changed meanwhile (cancelled): nothing to move.
                    Err(e) => tracing::info!(job_id = %job.id, error = %e, "job not re-routed"),
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    if moved > 0 {
        tracing::warn!(
            jobs = moved,
            "jobs re-routed at start: their runner is gone from the config or no longer claims \
             their type (name runners whose jobs may wait across a config change)"
        );
    }
    if !unrouted.is_empty() {
        let types = counted(&unrouted);
        tracing::warn!(jobs = unrouted.values().sum::<usize>(), types = %types,
            "stored jobs of types no runner claims: parked (runner `(no runner)`) until a start with a runner for them");
    }
}

/// Parked job ids read per page by the pass over parked jobs (ids only; a record is read once
/// per process).
const ID_PAGE: usize = 500;

/// How long the pass over parked jobs on Redis waits after one pass before the next (the first
/// runs at start).
pub const UNPARK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Most pages one pass reads; the next pass goes on from there (a long queue of parked jobs is
/// read over several passes, not at once).
const MAX_PAGES: usize = 200;

/// Most parked job ids a process remembers; past it, it forgets them and reads their records
/// again once.
const SEEN_MAX: usize = 1_000_000;

/// Most failed moves one pass tries before it ends (a job whose write keeps failing, a key of
/// the wrong type say, does not stop the jobs behind it, nor every write be tried at once).
const FAILS_MAX: usize = 20;

/// What the pass over parked jobs keeps between passes, in one process.
#[derive(Default)]
struct Unparking {
    /// The parked jobs it moved, or that stay parked here (a type no runner here claims, a
    /// record it cannot read): looked at once per process, so a job moved here and parked again
    /// by a process that disagrees is not moved again (no ping-pong), and a job that stays is
    /// read once, not every pass.
    seen: HashSet<uuid::Uuid>,
    /// Where the next pass starts in the parked queue: 0, or where a pass that met
    /// [`MAX_PAGES`] stopped.
    resume: usize,
}

/// On Redis: the pass over parked jobs ([`unpark`]) at start, then [`UNPARK_EVERY`] after each
/// pass, until `stop` (also checked between the pass's jobs). Nothing on the embedded store (its
/// start's pass, [`stranded`], does more).
pub async fn unpark_loop(
    store: Arc<dyn Store>,
    runners: Arc<RunnerSet>,
    stop: tokio_util::sync::CancellationToken,
) {
    if store.backend_name() == "embedded" {
        return;
    }
    let mut state = Unparking::default();
    loop {
        unpark(&store, &runners, &mut state, &stop).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(UNPARK_EVERY) => {}
        }
    }
}

/// One pass over the parked jobs on Redis (QUEUED under [`PARKED_RUNNER`], which no process
/// claims): each one whose type a runner of this config claims is moved to it, only if it is
/// still parked (`Command::Reroute`'s `from`: a pass of another process may have moved it);
/// the others stay parked. A job under a runner this process lacks is left alone (another
/// process's, maybe). Each parked job is moved at most once per process ([`Unparking::seen`]).
/// Its ids are read in pages by their place in the queue (ranks), which moves by the jobs that
/// left it.
async fn unpark(
    store: &Arc<dyn Store>,
    runners: &RunnerSet,
    state: &mut Unparking,
    stop: &tokio_util::sync::CancellationToken,
) {
    if state.seen.len() > SEEN_MAX {
        state.seen = HashSet::new();
    }
    let (mut skip, mut moved, mut failed) = (std::mem::take(&mut state.resume), 0usize, 0usize);
    let mut unrouted: BTreeMap<String, usize> = BTreeMap::new();
    'pages: for page in 0..=MAX_PAGES {
        if page == MAX_PAGES {
            // The next pass goes on from here.
            state.resume = skip;
            break;
        }
        let ids = match store.queued_ids(PARKED_RUNNER, skip, ID_PAGE).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the parked jobs to re-route them");
                break;
            }
        };
        let mut left = 0usize;
        for &id in &ids {
            if stop.is_cancelled() {
                break 'pages;
            }
            if id.is_nil() || !state.seen.insert(id) {
                continue;
            }
            match unpark_one(store, runners, id, moved < LINES).await {
                Unparked::Moved => {
                    moved += 1;
                    left += 1;
                }
                Unparked::Left => {
                    // Not moved here: if a process parks it again, it is looked at again.
                    state.seen.remove(&id);
                    left += 1;
                }
                Unparked::Stays(None) => {}
                Unparked::Stays(Some(t)) => *unrouted.entry(t).or_default() += 1,
                Unparked::Failed { store_down } => {
                    // Looked at again next pass; it keeps its place.
                    state.seen.remove(&id);
                    failed += 1;
                    if store_down || failed >= FAILS_MAX {
                        break 'pages;
                    }
                }
            }
        }
        if ids.len() < ID_PAGE {
            break;
        }
        // The jobs that left the queue free their places: the next page starts that much sooner.
        skip += ids.len().saturating_sub(left);
    }
    if moved > 0 {
        tracing::warn!(
            jobs = moved,
            "parked jobs moved to the runners of this config that claim their types"
        );
    }
    if !unrouted.is_empty() {
        let types = counted(&unrouted);
        tracing::warn!(jobs = unrouted.values().sum::<usize>(), types = %types,
            "parked jobs (runner `(no runner)`) of types no runner of this process claims, met for the first time: they stay parked until a process with a runner for them runs");
    }
}

/// What [`unpark_one`] did with a parked job.
enum Unparked {
    /// Moved to a runner of this process.
    Moved,
    /// Out of the parked queue meanwhile (gone, cancelled, moved by another process).
    Left,
    /// Stays parked: of a type no runner here claims (`Some`), or a record this build cannot
    /// read (`None`, logged).
    Stays(Option<String>),
    /// Not read or not written: to look at again (`store_down`: the store is out of reach, so
    /// the pass ends).
    Failed { store_down: bool },
}

/// The parked job `id`, moved to the runner of this process that claims its type, if any and
/// if it is still parked; `say`: log the move.
async fn unpark_one(
    store: &Arc<dyn Store>,
    runners: &RunnerSet,
    id: uuid::Uuid,
    say: bool,
) -> Unparked {
    let job = match store.get(id).await {
        Ok(Some(j)) if j.status == JobStatus::Queued && j.runner == PARKED_RUNNER => j,
        Ok(_) => return Unparked::Left,
        Err(e) if crate::store::job_record::is_corrupt(&e) => {
            crate::store::job_record::log_unreadable(
                &id.to_string(),
                "the pass over parked jobs",
                &e,
            );
            return Unparked::Stays(None);
        }
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "cannot read a parked job");
            return Unparked::Failed {
                store_down: matches!(e, crate::store::StoreError::Unavailable(_)),
            };
        }
    };
    let Destination::Runner(to) = destination(runners, &job) else {
        return Unparked::Stays(Some(job.job_type));
    };
    let cmd = Command::Reroute {
        token: None,
        from: Some(PARKED_RUNNER.to_string()),
        runner: to.clone(),
    };
    match store.apply(id, cmd).await {
        Ok(_) => {
            if say {
                tracing::warn!(job_id = %id, r#type = %job.job_type, to = %to,
                    "parked job's type has a runner here: moved to it");
            }
            Unparked::Moved
        }
        // Cancelled, deleted or moved by another process meanwhile.
        Err(e @ crate::store::StoreError::Transition(_))
        | Err(e @ crate::store::StoreError::NotFound) => {
            tracing::info!(job_id = %id, error = %e, "parked job not moved");
            Unparked::Left
        }
        Err(e) => {
            // Maybe written, its answer lost: looked at again next pass (moved only if still
            // parked).
            tracing::warn!(job_id = %id, error = %e, "parked job not moved: tried again later");
            Unparked::Failed {
                store_down: matches!(e, crate::store::StoreError::Unavailable(_)),
            }
        }
    }
}

/// `a (2), b (1)`: the types met and how many jobs of each, for a summary line.
fn counted(types: &BTreeMap<String, usize>) -> String {
    types
        .iter()
        .map(|(t, n)| format!("{t} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// After the reaper requeued `job` (a lease that ran out, a crash before this start: its lease
/// was still held at the start's pass), on the embedded store: moved as the start's pass moves
/// a job whose runner is gone or does not claim its type, or parked.
pub async fn route_requeued(store: &Arc<dyn Store>, runners: &RunnerSet, job: &Job) {
    if store.backend_name() != "embedded" || job.status != JobStatus::Queued {
        return;
    }
    let to = match destination(runners, job) {
        Destination::Stays => return,
        Destination::Parked if job.runner == PARKED_RUNNER => return,
        Destination::Parked => PARKED_RUNNER.to_string(),
        Destination::Runner(to) => to,
    };
    let cmd = Command::Reroute {
        token: None,
        from: Some(job.runner.clone()),
        runner: to.clone(),
    };
    match store.apply(job.id, cmd).await {
        Ok(_) => tracing::warn!(job_id = %job.id, r#type = %job.job_type, from = %job.runner,
            to = %to, "requeued job's runner is gone or no longer claims its type: re-routed"),
        // A claim first (the guard then takes it): expected; anything else leaves the job under
        // a runner that is gone until the next start.
        Err(e @ crate::store::StoreError::Transition(_)) => {
            tracing::info!(job_id = %job.id, error = %e, "requeued job not re-routed")
        }
        Err(e) => tracing::warn!(job_id = %job.id, error = %e,
            "requeued job not re-routed: it waits under its runner until the next start"),
    }
}
