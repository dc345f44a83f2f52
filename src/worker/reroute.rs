//! Jobs whose runner this process's config no longer has, or no longer gives their type. A job
//! stores the name of the runner chosen at its submit, and a claim picks jobs by that name; a
//! runner's default name is its place (`{kind}-{index}`), so reordering, inserting or removing
//! a `[[runners]]` block (or changing a runner's `types` or kind) leaves stored jobs under a
//! name that now means another runner, or none (docs/configuration.md, "Runner names").
//!
//! - The claim guard ([`Worker::misrouted`]): a worker never launches a job whose type its
//!   runner does not claim. The claim is given back in one write (`Command::Reroute`): QUEUED
//!   for the runner this config picks for the type ([`RunnerSet::route`]), its attempt given
//!   back; when no runner here claims the type, SCHEDULED under its runner in
//!   [`UNROUTED_DELAY`] (not run, not spun on), logged at most once a minute per job. A job
//!   re-routed at its claim before too (Redis processes whose runner names mean different
//!   things pass it between them) waits [`UNROUTED_DELAY`] under its new runner, not QUEUED.
//! - The start's pass ([`stranded`], embedded store only: one process holds it, so its config
//!   is the only one): every job neither active nor finished whose runner is gone or does not
//!   claim its type is moved to the runner that does; one with none is left as it is, and the
//!   types without a runner are logged. On Redis, processes may run different runners on
//!   purpose (a job under a runner this process lacks is another's), so there is no such pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use super::Worker;
use crate::job::transition::REROUTED;
use crate::job::{now_us, Command, Job, JobStatus};
use crate::runner_set::{RunnerSet, RunnerSlot};
use crate::store::{ListQuery, Store};

/// How long a claimed job that no runner of this process claims waits before it is claimed
/// again (its runner's name may be claimed by another process, or a new config may come).
pub const UNROUTED_DELAY: Duration = Duration::from_secs(30);

/// How often the same job's "no runner" warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Jobs read per page by the start's pass.
const PAGE: usize = 200;

/// Per-job lines the start's pass logs at most (the rest are counted in its summary).
const LINES: usize = 100;

/// When each job without a runner was last warned about (entries older than [`WARN_EVERY`]
/// are dropped at each warning: bounded by the jobs met in a minute).
static WARNED: Mutex<Option<HashMap<Uuid, Instant>>> = Mutex::new(None);

/// Whether the "no runner" warning of `id` is due now (and notes it).
fn warn_due(id: Uuid) -> bool {
    let now = Instant::now();
    let mut g = WARNED.lock();
    let m = g.get_or_insert_with(HashMap::new);
    m.retain(|_, at| now.duration_since(*at) < WARN_EVERY);
    if m.contains_key(&id) {
        return false;
    }
    m.insert(id, now);
    true
}

impl Worker {
    /// The claim guard: true when `job`, claimed under `token` for `slot`, is of a type `slot`
    /// does not claim; then it was not launched and has been given back (see the module docs).
    pub(super) async fn misrouted(&self, job: &Job, slot: &RunnerSlot, token: u64) -> bool {
        if slot.claims(&job.job_type) {
            return false;
        }
        let (id, from) = (job.id, job.runner.as_str());
        let later = now_us().saturating_add(UNROUTED_DELAY.as_micros() as i64);
        // The run before this claim was re-routed too: processes whose runner names mean
        // different things pass the job between them; it waits, rather than go round at once.
        let again = job.runs.len() >= 2
            && job.runs[job.runs.len() - 2].outcome.as_deref() == Some(REROUTED);
        let (runner, retry_at) = match self.runners.route(&job.job_type, from) {
            Some(to) => {
                tracing::warn!(job_id = %id, r#type = %job.job_type, from, to = %to.name,
                    again, "runner does not claim the job's type (its config changed): job \
                    re-routed");
                (to.name.clone(), again.then_some(later))
            }
            None => {
                if warn_due(id) {
                    tracing::warn!(job_id = %id, r#type = %job.job_type, runner = from,
                        "no runner of this process claims the job's type: not run, claimed \
                         again in {}s", UNROUTED_DELAY.as_secs());
                }
                (from.to_string(), Some(later))
            }
        };
        self.work_ended(id, token);
        let cmd = Command::Reroute {
            token: Some(token),
            runner,
            retry_at,
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
                let here = runners.get(&job.runner);
                if here.is_some_and(|s| s.claims(&job.job_type)) {
                    continue;
                }
                let Some(to) = runners.route(&job.job_type, &job.runner) else {
                    *unrouted.entry(job.job_type.clone()).or_default() += 1;
                    continue;
                };
                let cmd = Command::Reroute {
                    token: None,
                    runner: to.name.clone(),
                    retry_at: None,
                };
                match store.apply(job.id, cmd).await {
                    Ok(_) => {
                        moved += 1;
                        if lines < LINES {
                            lines += 1;
                            tracing::warn!(job_id = %job.id, r#type = %job.job_type,
                                from = %job.runner, to = %to.name, status = %job.status,
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
            "stored jobs of types no runner claims: left as they are until a runner claims them");
    }
}
