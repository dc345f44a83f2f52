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
//!   type a runner of the starting process claims ([`unpark`]).

use std::collections::BTreeMap;
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
                    parked = PARKED_RUNNER, "{why}: job parked, not run (the start of a \
                    process with a runner for its type moves it)");
                PARKED_RUNNER.to_string()
            }
        };
        self.work_ended(id, token);
        let cmd = Command::Reroute {
            token: Some(token),
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
        return unpark(store, runners).await;
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
        let types = unrouted
            .iter()
            .map(|(t, n)| format!("{t} ({n})"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(jobs = unrouted.values().sum::<usize>(), types = %types,
            "stored jobs of types no runner claims: parked (runner `(no runner)`) until a start with a runner for them");
    }
}

/// The start's pass on Redis: only the parked jobs (QUEUED under [`PARKED_RUNNER`], which no
/// process claims) whose type a runner of this config claims are moved to it; the others stay
/// parked. A job under a runner this process lacks is left alone (another process's, maybe).
/// Each job parked is read once; at most one move per job and start, so processes that disagree
/// on a type cannot pass it between them (the claim guard parks it again).
async fn unpark(store: &Arc<dyn Store>, runners: &RunnerSet) {
    let (mut skip, mut moved, mut failed) = (0usize, 0usize, 0usize);
    let mut unrouted: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let page = match store.queued_of(PARKED_RUNNER, skip, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the parked jobs to re-route them");
                return;
            }
        };
        for job in &page {
            let Destination::Runner(to) = destination(runners, job) else {
                *unrouted.entry(job.job_type.clone()).or_default() += 1;
                skip += 1;
                continue;
            };
            let cmd = Command::Reroute {
                token: None,
                runner: to.clone(),
            };
            match store.apply(job.id, cmd).await {
                Ok(_) => {
                    moved += 1;
                    if moved <= LINES {
                        tracing::warn!(job_id = %job.id, r#type = %job.job_type, to = %to,
                            "parked job's type has a runner here: moved to it");
                    }
                }
                // Cancelled or deleted meanwhile: out of the queue, nothing to move.
                Err(e @ crate::store::StoreError::Transition(_))
                | Err(e @ crate::store::StoreError::NotFound) => {
                    tracing::info!(job_id = %job.id, error = %e, "parked job not moved")
                }
                Err(e) => {
                    failed += 1;
                    skip += 1;
                    tracing::warn!(job_id = %job.id, error = %e,
                        "parked job not moved: it stays parked until the next start");
                    if failed >= LINES {
                        tracing::warn!(
                            "the start's pass over parked jobs gives up: too many failed writes"
                        );
                        break;
                    }
                }
            }
        }
        if page.len() < PAGE || failed >= LINES {
            break;
        }
    }
    if moved > 0 {
        tracing::warn!(
            jobs = moved,
            "parked jobs moved at start to the runners of this config that claim their types"
        );
    }
    if !unrouted.is_empty() {
        let types = unrouted
            .iter()
            .map(|(t, n)| format!("{t} ({n})"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(jobs = unrouted.values().sum::<usize>(), types = %types,
            "parked jobs (runner `(no runner)`) of types no runner of this process claims: they stay parked until a process with a runner for them starts");
    }
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
