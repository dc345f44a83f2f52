//! Storage: jobs, the queue, logs and events, behind object-safe traits so that the backend
//! (embedded SQLite or Redis) is chosen from config at run time.
//!
//! Every backend changes a job only through [`crate::job::apply`], atomically with the event the
//! change produces, so the status machine is enforced in one place whatever the backend.

pub mod activity;
pub mod counts;
pub mod deliveries;
pub(crate) mod event_record;
pub mod finish_slot;
pub mod handoff;
pub(crate) mod job_record;
pub(crate) mod log_quiet;
pub mod paging;
pub mod redis;
pub mod replay;
pub mod schedules;
pub mod signals;
pub mod sqlite;
pub mod tail;
pub mod waits;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::job::{Command, Event, Job, JobStatus, Micros, TransitionError};
pub use activity::ActivityStore;
pub use counts::JobCountStore;
pub use deliveries::DeliveryStore;
pub use finish_slot::FinishSlot;
pub use handoff::Parked;
pub use replay::ReplayMemory;
pub use runyard_hooks::LogStream;
pub use schedules::ScheduleStore;
pub use signals::SignalStore;
pub use tail::EventTail;
pub use waits::WaitStore;

/// Store errors. Transition refusals carry the reason; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such job.
    #[error("job not found")]
    NotFound,
    /// The change is not allowed.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A malformed id, cursor or event id.
    #[error("{0}")]
    BadInput(String),
    /// The backend cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How the `Unavailable` of a node that refuses the store's work begins (`redis/keycheck.rs`:
/// its master key is not the one the store keeps): transient as an outage is, but nothing was
/// written, and the check says it at ERROR once a minute.
const NODE_REFUSES: &str = "this node refuses the store's work: ";

impl StoreError {
    /// The `Unavailable` of a node that refuses the store's work, for `why`.
    pub fn node_refuses(why: &str) -> Self {
        Self::Unavailable(format!("{NODE_REFUSES}{why}"))
    }

    /// Whether this is a node's refusal of the store's work ([`Self::node_refuses`]): nothing
    /// was written, and the loops that meet it need not say it again.
    pub fn is_node_refusal(&self) -> bool {
        matches!(self, Self::Unavailable(m) if m.starts_with(NODE_REFUSES))
    }

    /// The `Backend` error of a write the store refused before doing any of it, for a reason of
    /// its own that lasts until its operator acts (Redis out of memory, unable to persist to
    /// disk, without the replicas `min-replicas-to-write` asks for, or a read-only replica):
    /// `why` says which, and that nothing was stored.
    pub fn writes_refused(why: &str) -> Self {
        Self::Backend(format!("{WRITES_REFUSED}{why}"))
    }

    /// A write the store refused ([`Self::writes_refused`]) at a process's start, which stops
    /// it: `Unavailable`, as the start's other failures, in the same words.
    pub fn writes_refused_at_start(why: &str) -> Self {
        Self::Unavailable(format!("{WRITES_REFUSED}{why}"))
    }

    /// Whether this is a write the store refused ([`Self::writes_refused`]): nothing was
    /// written, the API answers 503, and the store says it at ERROR once a minute, so the loops
    /// that meet it need not say it again.
    pub fn is_write_refusal(&self) -> bool {
        matches!(self, Self::Backend(m) if is_write_refusal_said(m))
    }
}

/// Whether a `Backend` error's message `m` is that of a refused write
/// ([`StoreError::is_write_refusal`]).
pub fn is_write_refusal_said(m: &str) -> bool {
    m.starts_with(WRITES_REFUSED)
}

/// How the `Backend` error of a write the store refused begins ([`StoreError::writes_refused`]).
const WRITES_REFUSED: &str = "the store refuses writes: ";

/// How the `Unavailable` of a command the store refused before running any of it begins (Redis
/// busy running a script, `BUSY`, for the whole of `store.retry`): transient as an outage is,
/// but nothing of it was done, so a submit's answer does not say the job may exist (probe s54a:
/// "may have been stored ... a retry may make a second job" for a submit Redis never ran).
const NOT_RUN: &str = "the store did not run it: ";

impl StoreError {
    /// The `Unavailable` of a command the store refused before running any of it, for `why`.
    pub fn not_run(why: &str) -> Self {
        Self::Unavailable(format!("{NOT_RUN}{why}"))
    }

    /// Whether this is a command the store refused before running it ([`Self::not_run`]).
    pub fn is_not_run(&self) -> bool {
        matches!(self, Self::Unavailable(m) if m.starts_with(NOT_RUN))
    }
}

/// Whether an error's text `said` is that of a refusal ([`StoreError::is_node_refusal`],
/// [`StoreError::is_write_refusal`]), wherever it is in it (an answer that carries a store
/// error in its own words: the replay memory's).
pub fn says_refusal(said: &str) -> bool {
    said.contains(WRITES_REFUSED) || said.contains(NODE_REFUSES)
}

tokio::task_local! {
    static ANSWER_BY: std::time::Instant;
}

/// Runs `call` telling the store to answer by `by` (a submit answered before
/// `api.request_timeout`): a store that waits for Redis gives up by then with what it knows, so
/// that the caller's own cut ([`within`]) does not come first and say less (Redis `BUSY` all
/// along ran nothing, but the cut said "may have been stored": review of session 54).
pub async fn answering_by<F: std::future::Future>(by: std::time::Instant, call: F) -> F::Output {
    ANSWER_BY.scope(by, call).await
}

/// The time the caller wants the store's answer by ([`answering_by`]), if it said one.
pub fn answer_by() -> Option<std::time::Instant> {
    ANSWER_BY.try_with(|by| *by).ok()
}

/// `call`'s answer, or `Unavailable` when it has not come within `bound` (the call is dropped:
/// a write may still be carried out).
pub async fn within<T>(
    bound: std::time::Duration,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(bound, call).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {} ms",
            bound.as_millis()
        ))),
    }
}

/// `call`, called again while the store refuses it for a reason of its own
/// (`StoreError::Backend`: nothing written, as on a full disk), with a pause of 100 ms doubling
/// to 2 s, as long as the next try comes before `until` and `go_on()` holds; its last answer.
/// Any other error is not tried again: such a write may have been carried out.
pub async fn retry_refused<T, F, Fut>(
    until: tokio::time::Instant,
    go_on: impl Fn() -> bool,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        let r = call().await;
        match &r {
            Err(e @ StoreError::Backend(_))
                if go_on() && tokio::time::Instant::now() + pause < until =>
            {
                tracing::debug!(error = %e, "the store refused a write: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            _ => return r,
        }
    }
}

/// Knobs a backend needs.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Minimum time between two progress events of a job.
    pub progress_interval: Duration,
    /// Events kept per channel.
    pub channel_limit: usize,
    /// Events kept in the global stream.
    pub global_limit: usize,
    /// Log lines kept per job (the oldest are dropped).
    pub log_lines_per_job: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_millis(200),
            channel_limit: 1000,
            global_limit: 100_000,
            log_lines_per_job: 10_000,
        }
    }
}

/// The outcome of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The job (the earlier one when the idempotency key was seen before).
    pub job: Job,
    /// False when an existing job was returned for the same idempotency key.
    pub created: bool,
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only types matching this glob (`report.*`).
    pub job_type: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Continue after this job id (exclusive).
    pub cursor: Option<Uuid>,
    // The dashboard's filters (their one meaning: `paging::ListQuery::matches`).
    /// Only jobs of this event channel.
    pub channel: Option<String>,
    /// Only jobs a fire of this schedule submitted.
    pub schedule: Option<String>,
    /// Only jobs stored under this runner name (`(no runner)`: the parked ones).
    pub runner: Option<String>,
    /// Only jobs created at or after this time (µs).
    pub created_after: Option<Micros>,
    /// Only jobs created before this time (µs).
    pub created_before: Option<Micros>,
    /// Only jobs whose args, as compact JSON, contain this text (ignoring case).
    pub text: Option<String>,
    /// Only dead letters: ERROR with every attempt used.
    pub dead: bool,
    /// Only the jobs a caller confined by its grant may see (`None`: every job). Unlike the
    /// filters above it bounds what the page, its cursor and its scan bound are made of: a
    /// confined caller's answer is a function of the jobs it sees only (`paging`).
    pub visible: Option<Visibility>,
}

/// The jobs a caller confined to some job types or channels sees (`crate::auth::tokens::Grant`
/// in the store's terms): a job whose type and channel both match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// The job types (`None`: every type).
    pub types: Option<Names>,
    /// The channels (`None`: every channel).
    pub channels: Option<Names>,
}

/// Names as a grant holds them: runyard globs (`*`, `?`), or, with `exact`, literal names (a
/// JWT's channel claim).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The globs or names (none: nothing matches).
    pub list: Vec<String>,
    /// Compared as they are, not as globs.
    pub exact: bool,
}

/// A page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; none at the end.
    pub next_cursor: Option<Uuid>,
    /// The read stopped at [`paging::READ_BYTES`] of jobs kept, before `limit` (and before any
    /// scan bound): `next_cursor` is its last job, and reading on from it costs no more than
    /// this read did (`api/pages.rs` goes on; a scan bound's short page it returns as it is).
    pub bytes_cut: bool,
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// Position in the job's log, from 1.
    pub seq: u64,
    /// Where it came from.
    pub stream: LogStream,
    /// When it was received (µs).
    pub ts: Micros,
    /// The text.
    pub line: String,
}

/// What a store tells its local listeners after a commit (in-process; Redis relays it).
#[derive(Debug, Clone)]
pub enum Notice {
    /// A job became QUEUED for this runner.
    Queued {
        /// The runner name.
        runner: String,
    },
    /// A job changed status.
    Changed {
        /// The job.
        job_id: Uuid,
        /// Its new status.
        status: JobStatus,
    },
    /// Events were appended.
    Events,
}

/// Which notices a listener acts on ([`Store::subscribe_to`]); lagging is always reported.
pub type NoticeFilter = fn(&Notice) -> bool;

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionReport {
    /// Finished jobs deleted (with their logs).
    pub jobs: u64,
    /// Events trimmed.
    pub events: u64,
}

/// Jobs: submit, read, list, change.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job and its first event, atomically; same idempotency key -> the first job.
    async fn submit(&self, job: Job) -> Result<Submitted>;
    /// Stores many new jobs, each as [`JobStore::submit`] would and on its own (a job that fails
    /// leaves the others stored): one result per job, in order; `Err` when none could be tried.
    /// Backends batch the writes (`sqlite/batch.rs`, `redis/batch.rs`); this default submits
    /// one by one. A wrapping store must forward it (`metrics/store.rs`).
    async fn submit_many(&self, jobs: Vec<Job>) -> Result<Vec<Result<Submitted>>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.submit(job).await);
        }
        Ok(out)
    }
    /// One job.
    async fn get(&self, id: Uuid) -> Result<Option<Job>>;
    /// A page of jobs.
    async fn list(&self, q: ListQuery) -> Result<JobPage>;
    /// Applies a command through [`crate::job::apply`] and appends its event, atomically.
    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job>;
    /// Applies `start` (an attempt's [`Command::Started`]) as [`JobStore::apply`] does, then the
    /// finish offered to `finish` by the time the start is applied, if any (the attempt ended
    /// first): in the same transaction where the backend can ([`finish_slot`]). Returns the job
    /// after the start and, when a finish was taken, its own result; `Err` when the start was
    /// refused (then no finish was applied).
    async fn apply_start(
        &self,
        id: Uuid,
        start: Command,
        finish: std::sync::Arc<FinishSlot>,
    ) -> Result<(Job, Option<Result<Job>>)> {
        // A backend without one transaction for both applies them one after the other.
        finish_slot::one_by_one(self, id, start, &finish).await
    }
    /// Applies a worker's [`Command::Finish`] as [`JobStore::apply`] does and, when `refill` is
    /// given (made by [`JobQueue::refill`]) and the finish is recorded, claims the oldest QUEUED
    /// job of its runner for the worker in the same transaction ([`handoff::Refill`]). A backend
    /// without refills (Redis) applies the finish alone.
    async fn finish(
        &self,
        id: Uuid,
        cmd: Command,
        refill: Option<std::sync::Arc<handoff::Refill>>,
    ) -> Result<Job>;
}

/// The queue: claims with leases, heartbeats, delayed jobs, expired leases.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Claims up to `max` QUEUED jobs of `runner` for `worker` (oldest first), each with a fresh
    /// fencing token and a lease of `lease_ttl`.
    async fn claim(
        &self,
        runner: &str,
        worker: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<Job>>;
    /// Extends the leases `worker` holds; returns the jobs it no longer holds (cancelled, timed
    /// out elsewhere, lost), whose work must stop.
    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>>;
    /// Takes over an active job whose lease expired (its work is still alive): a fresh fencing
    /// token and lease for `worker`, same attempt (`Command::Adopt`). With `expected`, only the
    /// lease whose token it is (the reaper's fence).
    async fn adopt(
        &self,
        id: Uuid,
        expected: Option<u64>,
        worker: &str,
        lease_ttl: Duration,
    ) -> Result<Job>;
    /// Fences the expired lease of an active job whose token is `expected` (`Command::Fence`):
    /// a fresh token, same holder, run and expiry. Returns the job with the fence's token.
    async fn fence(&self, id: Uuid, expected: u64) -> Result<Job>;
    /// Moves due SCHEDULED jobs to QUEUED; returns how many.
    async fn promote_due(&self, max: usize) -> Result<usize>;
    /// When the next SCHEDULED job is due.
    async fn next_due(&self) -> Result<Option<Micros>>;
    /// Active jobs whose lease expired, then cancelled jobs whose lease (kept while their worker
    /// stopped the work) expired: oldest lease first in each, `max` in all.
    async fn expired(&self, max: usize) -> Result<Vec<Job>>;
    /// The ids of `runner`'s queue from position `skip` (0: its oldest QUEUED job), up to `max`
    /// of them, oldest first: entries, not records (none read, nothing claimed), so a page
    /// shorter than `max` is the queue's end on both stores. The pass over parked jobs on Redis
    /// reads them so (`worker/reroute.rs`).
    async fn queued_ids(&self, runner: &str, skip: usize, max: usize) -> Result<Vec<Uuid>>;
    /// Parks `worker`, which has `max` free slots and whose claim found nothing QUEUED for
    /// `runner`, for a direct hand-off ([`handoff`]): a backend that supports it claims each of
    /// the next (up to `max`) jobs submitted for `runner` in the submit's own transaction (when
    /// no older one is QUEUED) and passes it over after the commit, instead of a notice and a
    /// claim of the worker's own. Redis does the same across processes (`redis/handover.rs`:
    /// the submit's script hands the job over, the parked process claims it). `None` (this
    /// default) where the backend does not park. A wrapping store must forward it
    /// (`metrics/store.rs`).
    fn park(&self, runner: &str, worker: &str, lease_ttl: Duration, max: usize) -> Option<Parked> {
        let _ = (runner, worker, lease_ttl, max);
        None
    }
    /// Claims the oldest QUEUED jobs of each parked worker's runner into its places (those with
    /// these [`Parked::id`]s), passed over after the commit as hand-offs are: the worker stays
    /// parked through its own claim, so the submits after it in the store's order find nothing
    /// older QUEUED and are handed over, instead of being stored QUEUED for the next claim.
    /// Nothing for one that has withdrawn or had every place taken. True when each of them
    /// still has a place after it, so nothing readable of their runners is left QUEUED (a
    /// record the embedded store cannot read is passed over and stays); false (some may
    /// be: the worker claims as before) otherwise, and in this default (Redis, and a backend
    /// that does not park). A wrapping store must forward it (`metrics/store.rs`).
    async fn claim_parked(&self, parked: &[u64]) -> Result<bool> {
        let _ = parked;
        Ok(false)
    }
    /// A refill for the place of `worker` in `runner` that one of its jobs' finish frees
    /// ([`handoff::Refill`], given to [`JobStore::finish`] or a [`FinishSlot`]). `None` (this
    /// default) where the backend cannot claim in a finish's transaction (Redis). A wrapping
    /// store must forward it (`metrics/store.rs`).
    fn refill(
        &self,
        runner: &str,
        worker: &str,
        lease_ttl: Duration,
    ) -> Option<(std::sync::Arc<handoff::Refill>, handoff::NextJob)> {
        let _ = (runner, worker, lease_ttl);
        None
    }
}

/// Job logs, bounded per job.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Appends lines to a job's log.
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()>;
    /// Lines after `after` (exclusive), at most `limit`.
    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>>;
}

/// The event streams: one global, one per channel.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events after `last_id` (exclusive; from the oldest kept when `None`), in the channel or the
    /// global stream. Starts with a `resync` event when events after `last_id` were trimmed.
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>>;
    /// The id of the newest event of the global stream (`None` when there never was one): where
    /// a live reader of everything committed from now on starts.
    async fn last_event_id(&self) -> Result<Option<String>>;
}

/// Housekeeping.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Deletes finished jobs older than `finished_before` and trims events to their limits.
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport>;
    /// The hashes of every file some job references (blob garbage collection).
    async fn file_hashes(&self) -> Result<std::collections::HashSet<String>>;
    /// Checks the backend answers.
    async fn health(&self) -> Result<()>;
    /// The store's time (µs since the epoch): the clock the store stamps and judges its times
    /// by (finished jobs, leases, run records, deadlines, due times). Every time a node compares
    /// with a stored one, or stores for other nodes to compare, is taken from here, not from
    /// its own wall clock: on Redis that is Redis's clock as this node carries it (one `TIME`
    /// every 10 s while it answers, the last reading carried while it does not), so a node whose wall clock is off judges as the others
    /// do; on the embedded store, this process's clock.
    async fn time(&self) -> Micros;
}

/// A complete backend.
pub trait Store:
    JobStore
    + JobQueue
    + LogStore
    + EventLog
    + Maintenance
    + ScheduleStore
    + SignalStore
    + JobCountStore
    + ActivityStore
    + DeliveryStore
    + WaitStore
    + ReplayMemory
    + EventTail
{
    /// Listens to what this store commits.
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
    /// Listens to what this store commits, for a listener that acts only on the notices `wants`
    /// accepts: a store may leave the others out, so the listener is not woken for them (the
    /// embedded store: [`NoticeFilter`]). Others may still arrive (the default: all of them),
    /// so the listener checks each notice as with [`Store::subscribe`].
    fn subscribe_to(&self, wants: NoticeFilter) -> broadcast::Receiver<Notice> {
        let _ = wants;
        self.subscribe()
    }
    /// `embedded` or `redis`.
    fn backend_name(&self) -> &'static str;
    /// A worker's finish this process sent that the store committed although its answer never
    /// came (Redis hung past `store.retry`: the write ran once it answered again), found by
    /// reading the job: counted as an answered finish is. Nothing in a backend; a wrapping
    /// store must forward it (`metrics/store.rs`).
    fn finish_committed_late(&self, job: &Job) {
        let _ = job;
    }
    /// A worker's start this process sent that the store committed although its answer never
    /// came, found by reading the job (`worker/start/write.rs`): counted as an answered start is
    /// (a transition to RUNNING). Nothing in a backend; a wrapping store must forward it.
    fn start_committed_late(&self) {}
}
