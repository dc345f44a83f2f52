//! Prometheus metrics on the `prometheus-client` crate.
//!
//! Two kinds of figures (see `docs/observability.md` for every metric):
//!
//! - **Counters and histograms of this process** (submits, outcomes, retries, lease expirations,
//!   HTTP requests, hook calls, store latency...), counted where this process does the work: the
//!   store wrapper [`MeteredStore`] sees every command this process commits, the HTTP layer
//!   ([`http`]) every request it answers. On several nodes, sum them over the nodes.
//! - **Gauges read from the store at scrape time** (jobs by type and status, queue depth, oldest
//!   waiting job, through [`crate::store::JobCountStore`]; webhook deliveries pending, through
//!   [`crate::store::DeliveryStore::deliveries_pending`]): every node shows the same figures.
//!
//! Other modules add their own families without touching this file's structs: keep the counter
//! as a plain atomic in the module and register a reader of it with
//! [`Metrics::register_counter_fn`] / [`Metrics::register_gauge_fn`] (or any
//! [`prometheus_client::collector::Collector`] with [`Metrics::register_collector`]), once,
//! where the server is assembled.

mod command_kind;
mod family;
pub mod features;
pub mod http;
pub mod process;
mod series;
pub mod store;

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::job::{now_us, Job, JobStatus, Micros};
use crate::store::counts::JobCounts;
use crate::store::Store;

use crate::store::log_quiet::warn_unless_refused;
pub use command_kind::CommandKind;
use family::{FnFamily, FnKind};
use series::{cached, TypeSeries};
pub use store::MeteredStore;

/// Labels of a family: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// A histogram family, with its buckets.
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// How many distinct job types the metrics keep apart; the others are counted under the type
/// `_other` (types are configured, but a runner's `types` may be a glob).
pub const MAX_TYPES: usize = 200;

/// The label value of job types past [`MAX_TYPES`].
pub const OTHER_TYPE: &str = "_other";

/// Buckets (seconds) for how long a job waits and runs: 10 ms to 4 h.
const JOB_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Buckets (seconds) for one store operation: 0.1 ms to 5 s.
const STORE_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

/// The process's metrics and the registry they are exposed from.
pub struct Metrics {
    registry: RwLock<Registry>,
    /// Serialises scrapes: the store gauges are refilled and encoded under it.
    scrape: tokio::sync::Mutex<()>,
    /// The job types kept apart (at most [`MAX_TYPES`]), each with the handles of its series
    /// this process counts per job; `other` the same for the types counted as [`OTHER_TYPE`].
    types: Mutex<std::collections::HashMap<String, TypeSeries>>,
    other: Mutex<TypeSeries>,
    /// `transitions`' series by status ([`JobStatus::ALL`]'s order), once counted.
    by_status: [std::sync::OnceLock<Counter>; JobStatus::ALL.len()],
    /// `store_seconds`' series by operation, once observed.
    store_ops: Mutex<std::collections::HashMap<&'static str, Histogram>>,
    /// `http_requests`' series by method, route and status, once counted (bounded: routes are
    /// templates).
    http_series: Mutex<std::collections::HashMap<String, Vec<series::HttpSeries>>>,
    names: Mutex<Vec<String>>,
    http_panics: Counter,
    listed: Counter,
    transitions: Family<Labels, Counter>,
    submitted: Family<Labels, Counter>,
    outcomes: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    lease_expirations: Family<Labels, Counter>,
    queue_wait: Histograms,
    run_time: Histograms,
    http_requests: Family<Labels, Counter>,
    hook_calls: Family<Labels, Counter>,
    store_seconds: Histograms,
    store_errors: Family<Labels, Counter>,
    jobs: Family<Labels, Gauge>,
    queue_depth: Family<Labels, Gauge>,
    queue_oldest: Family<Labels, Gauge<f64, AtomicU64>>,
    store_up: Gauge,
    /// One series without labels while the last read succeeded, none after a failed one.
    deliveries_pending: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every runyard metric, registered.
    pub fn new() -> Self {
        let m = Self {
            registry: RwLock::new(Registry::default()),
            scrape: tokio::sync::Mutex::new(()),
            types: Mutex::new(Default::default()),
            other: Mutex::new(Default::default()),
            by_status: Default::default(),
            store_ops: Mutex::new(Default::default()),
            http_series: Mutex::new(Default::default()),
            names: Mutex::new(Vec::new()),
            http_panics: Counter::default(),
            listed: Counter::default(),
            transitions: Family::default(),
            submitted: Family::default(),
            outcomes: Family::default(),
            retries: Family::default(),
            lease_expirations: Family::default(),
            queue_wait: Family::new_with_constructor(job_histogram),
            run_time: Family::new_with_constructor(job_histogram),
            http_requests: Family::default(),
            hook_calls: Family::default(),
            store_seconds: Family::new_with_constructor(store_histogram),
            store_errors: Family::default(),
            jobs: Family::default(),
            queue_depth: Family::default(),
            queue_oldest: Family::default(),
            store_up: Gauge::default(),
            deliveries_pending: Family::default(),
        };
        m.register_store_gauges();
        m.register_own();
        m.register_listed();
        m.register_schedule_counters();
        m
    }

    /// The gauges read from the store's counts at every scrape.
    fn register_store_gauges(&self) {
        let mut r = self.registry.write();
        r.register(
            "runyard_jobs",
            "Jobs in the store by type and status (read from the store at scrape time: the same on every node)",
            self.jobs.clone(),
        );
        r.register(
            "runyard_queue_depth",
            "QUEUED jobs by type: ready and waiting for a worker (from the store)",
            self.queue_depth.clone(),
        );
        r.register(
            "runyard_queue_oldest_age_seconds",
            "Age of the oldest QUEUED job by type, since it became QUEUED (a job a worker gave back: since it was queued before that run, its place in the queue; from the store)",
            self.queue_oldest.clone(),
        );
        r.register(
            "runyard_store_up",
            "1 when the last scrape could read the job counts from the store and the store was ready (takes writes), else 0",
            self.store_up.clone(),
        );
        r.register(
            "runyard_webhook_deliveries_pending",
            "Webhook deliveries pending: due, being attempted or waiting for a retry (from the store)",
            self.deliveries_pending.clone(),
        );
        self.names.lock().extend(
            [
                "runyard_jobs",
                "runyard_queue_depth",
                "runyard_queue_oldest_age_seconds",
                "runyard_store_up",
                "runyard_webhook_deliveries_pending",
            ]
            .map(String::from),
        );
    }

    /// The families this process writes itself: job changes, HTTP requests, store calls.
    fn register_own(&self) {
        let mut r = self.registry.write();
        r.register(
            "runyard_jobs_submitted",
            "Jobs created by submits this process accepted, by type",
            self.submitted.clone(),
        );
        r.register(
            "runyard_job_transitions",
            "Job status changes this process committed, by new status",
            self.transitions.clone(),
        );
        r.register(
            "runyard_job_outcomes",
            "Jobs that reached a final status through this process, by type and outcome",
            self.outcomes.clone(),
        );
        r.register(
            "runyard_job_retries",
            "Failed attempts this process scheduled for another attempt, by type",
            self.retries.clone(),
        );
        r.register(
            "runyard_lease_expirations",
            "Expired worker leases this process's reaper recovered, by type",
            self.lease_expirations.clone(),
        );
        r.register(
            "runyard_job_queue_wait_seconds",
            "Time from a job becoming QUEUED (its submit, when a delay or backoff ended, or when the run a worker gave it back from ended) to the claim that starts an attempt, by type",
            self.queue_wait.clone(),
        );
        r.register(
            "runyard_job_run_seconds",
            "Run time of attempts that ended through this process (start to end), by type",
            self.run_time.clone(),
        );
        r.register(
            "runyard_http_requests",
            "HTTP requests this process answered, by method, route template and status code",
            self.http_requests.clone(),
        );
        r.register(
            "runyard_hook_calls",
            "Calls to the job hook routes this process answered, by route and result",
            self.hook_calls.clone(),
        );
        r.register(
            "runyard_http_panics",
            "Request handlers that panicked (answered 500)",
            self.http_panics.clone(),
        );
        r.register(
            "runyard_store_operation_seconds",
            "Latency of store operations called by this process, by operation",
            self.store_seconds.clone(),
        );
        r.register(
            "runyard_store_errors",
            "Store operations that failed (store unavailable or backend error), by operation",
            self.store_errors.clone(),
        );
        self.names.lock().extend(
            [
                "runyard_jobs_submitted_total",
                "runyard_job_transitions_total",
                "runyard_job_outcomes_total",
                "runyard_job_retries_total",
                "runyard_lease_expirations_total",
                "runyard_job_queue_wait_seconds",
                "runyard_job_run_seconds",
                "runyard_http_requests_total",
                "runyard_hook_calls_total",
                "runyard_http_panics_total",
                "runyard_store_operation_seconds",
                "runyard_store_errors_total",
            ]
            .map(String::from),
        );
    }

    /// The jobs the store's listing reads returned.
    fn register_listed(&self) {
        self.registry.write().register(
            "runyard_store_listed_jobs",
            "Jobs the store's listing reads returned to this process (each read's jobs are held until its answer is written)",
            self.listed.clone(),
        );
        self.names
            .lock()
            .push("runyard_store_listed_jobs_total".into());
    }

    /// The counters of the schedule fire loop.
    fn register_schedule_counters(&self) {
        use crate::schedule::counters::{FIRES, MISFIRES, SKIPPED_OVERLAPS};
        use std::sync::atomic::Ordering::Relaxed;
        self.register_counter_fn(
            "runyard_schedule_fires",
            "Jobs submitted by cron schedule fires decided in this process",
            || FIRES.load(Relaxed),
        );
        self.register_counter_fn(
            "runyard_schedule_misfires",
            "Schedule fire times missed (misfire policy, catch-up window)",
            || MISFIRES.load(Relaxed),
        );
        self.register_counter_fn(
            "runyard_schedule_skipped_overlaps",
            "Schedule fires skipped while the previous job was active",
            || SKIPPED_OVERLAPS.load(Relaxed),
        );
    }

    /// Registers a counter read from `read` at every scrape (for example a module's
    /// `AtomicU64`). `name` without the `_total` suffix, which is added.
    pub fn register_counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.register_counter_family_fn(name, help, move || vec![(Vec::new(), read())]);
    }

    /// Registers a family of counters read from `read` at every scrape: one `(labels, value)`
    /// per series. Keep the label values a small fixed set (never a job id or a channel).
    pub fn register_counter_family_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<(Labels, u64)> + Send + Sync + 'static,
    ) {
        self.names.lock().push(format!("{name}_total"));
        self.register_collector(FnFamily {
            name,
            help,
            kind: FnKind::Counter(Box::new(read)),
        });
    }

    /// Registers a counter of seconds (or any fractional count) read from `read` at every scrape.
    pub fn register_counter_f64_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.names.lock().push(format!("{name}_total"));
        self.register_collector(FnFamily {
            name,
            help,
            kind: FnKind::CounterF64(Box::new(move || vec![(Vec::new(), read())])),
        });
    }

    /// Registers a gauge read from `read` at every scrape.
    pub fn register_gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.names.lock().push(name.to_string());
        self.register_collector(FnFamily {
            name,
            help,
            kind: FnKind::Gauge(Box::new(move || vec![(Vec::new(), read())])),
        });
    }

    /// Registers any collector (encoded at every scrape, after the built-in metrics).
    pub fn register_collector(&self, c: impl Collector) {
        self.registry.write().register_collector(Box::new(c));
    }

    /// The name of every metric registered (as exposed: counters with `_total`), except those of
    /// [`Metrics::register_collector`].
    pub fn metric_names(&self) -> Vec<String> {
        self.names.lock().clone()
    }

    /// The label value for `job_type`: itself, or [`OTHER_TYPE`] once [`MAX_TYPES`] types were
    /// seen.
    pub fn type_label(&self, job_type: &str) -> String {
        self.with_type(job_type, |label, _| label.to_string())
    }

    fn by_type(&self, job_type: &str) -> Labels {
        vec![("type", self.type_label(job_type))]
    }

    /// Counts a request handler that panicked (answered 500 `internal`).
    pub fn count_http_panic(&self) {
        self.http_panics.inc();
    }

    /// Counts a job this process created.
    pub fn job_submitted(&self, job: &Job) {
        self.with_type(&job.job_type, |label, s| {
            cached(&mut s.submitted, &self.submitted, label).inc()
        });
        self.transition(job.status);
    }

    /// `n` jobs a listing read of the store returned.
    pub fn jobs_listed(&self, n: usize) {
        self.listed.inc_by(n as u64);
    }

    /// `n` delayed jobs (or retries after their backoff) this process made QUEUED.
    pub fn jobs_promoted(&self, n: usize) {
        if n > 0 {
            self.transitions
                .get_or_create(&vec![("status", JobStatus::Queued.as_str().to_string())])
                .inc_by(n as u64);
        }
    }

    /// Jobs this process claimed: their wait in the queue (since [`queued_since`]).
    pub fn jobs_claimed(&self, jobs: &[Job]) {
        for j in jobs {
            self.transition(j.status);
            let claimed = j.runs.last().map_or_else(now_us, |r| r.claimed_at);
            let wait = claimed.saturating_sub(queued_since(j)).max(0) as f64 / 1e6;
            self.with_type(&j.job_type, |label, s| {
                cached(&mut s.queue_wait, &self.queue_wait, label).observe(wait)
            });
        }
    }

    /// A call to a hook route and its result (`ok`, `unauthorized`, `rejected`, `error`).
    pub fn hook_call(&self, route: &str, result: &'static str) {
        self.hook_calls
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// The store gauges from `c`; `now`: the store's time, which the queued jobs' times are.
    fn set_counts(&self, c: &JobCounts, now: Micros) {
        self.jobs.clear();
        self.queue_depth.clear();
        self.queue_oldest.clear();
        let mut jobs: std::collections::HashMap<Labels, i64> = Default::default();
        for ((t, s), n) in &c.by_type_status {
            let l = vec![
                ("type", self.type_label(t)),
                ("status", s.as_str().to_string()),
            ];
            *jobs.entry(l).or_default() += i64::try_from(*n).unwrap_or(i64::MAX);
            // Every type the store holds jobs of has a depth, 0 when none is QUEUED (an empty
            // queue reads 0, not as a gap).
            let depth = self.queue_depth.get_or_create(&self.by_type(t));
            if *s == JobStatus::Queued {
                depth.inc_by(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
        for (l, n) in jobs {
            self.jobs.get_or_create(&l).set(n);
        }
        for (t, at) in &c.oldest_queued {
            let age = now.saturating_sub(*at).max(0) as f64 / 1e6;
            let g = self.queue_oldest.get_or_create(&self.by_type(t));
            if age > g.get() {
                g.set(age);
            }
        }
    }

    /// Reads the store gauges (waiting at most [`SCRAPE_STORE_WAIT`]) and renders everything.
    pub async fn scrape(&self, store: &dyn Store) -> String {
        let _one = self.scrape.lock().await;
        // The counts, and up as `/health/ready` says (a Redis replica's counts are no store
        // that takes writes), side by side under one bound.
        let (counts, ready) = tokio::join!(
            crate::store::within(SCRAPE_STORE_WAIT, store.job_counts()),
            crate::store::within(SCRAPE_STORE_WAIT, store.health()),
        );
        match counts {
            Ok(c) => {
                self.set_counts(&c, store.time().await);
                if let Err(e) = &ready {
                    warn_unless_refused!(e, "metrics: the store is not ready");
                }
                self.store_up.set(i64::from(ready.is_ok()));
            }
            Err(e) => {
                // Cut by the scrape's bound on a node that refuses the store's work, or failed
                // for a write Redis refused: said by the key check or the store (ERROR, once a
                // minute), not on every scrape.
                if ready
                    .as_ref()
                    .is_err_and(|r| r.is_node_refusal() || r.is_write_refusal())
                {
                    tracing::debug!(error = %e, "metrics: cannot read the job counts");
                } else {
                    tracing::warn!(error = %e, "metrics: cannot read the job counts");
                }
                // Stale figures would look current: show none.
                self.jobs.clear();
                self.queue_depth.clear();
                self.queue_oldest.clear();
                self.store_up.set(0);
            }
        }
        // Not read when the counts could not be (the store is away: one wait per scrape).
        self.deliveries_pending.clear();
        if self.store_up.get() == 1 {
            match crate::store::within(SCRAPE_STORE_WAIT, store.deliveries_pending()).await {
                Ok(n) => {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    self.deliveries_pending.get_or_create(&Vec::new()).set(n);
                }
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read the pending deliveries"),
            }
        }
        self.render()
    }

    /// The Prometheus text exposition (version 0.0.4) of what is registered, with the store
    /// gauges as last read.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry.read())
        {
            let _ = writeln!(s, "# encoding failed: {e}");
        }
        s
    }
}

/// The longest a scrape waits for the store's counts: under Prometheus's default scrape timeout
/// (10 s), so an outage shows as `runyard_store_up 0` with every process counter, not as a failed
/// scrape (the store's own `store.retry`, 30 s by default, would outlast it).
pub const SCRAPE_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// When a claimed job's current wait began: when it became QUEUED, or, for a job a worker gave
/// back (its `queued_at` kept: its place in the queue), when that run ended; the run it was
/// given back from is not waiting.
fn queued_since(j: &Job) -> Micros {
    let given_back = j
        .runs
        .len()
        .checked_sub(2)
        .map(|i| &j.runs[i])
        .filter(|r| r.outcome.as_deref() == Some(crate::job::transition::RELEASED))
        .and_then(|r| r.ended_at);
    given_back.map_or(j.queued_at, |ended| ended.max(j.queued_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_registered_from_closures_render_as_prometheus_text() {
        let m = Metrics::new();
        let n = std::sync::Arc::new(AtomicU64::new(7));
        let r = n.clone();
        m.register_counter_fn("runyard_test_things", "Things", move || {
            r.load(std::sync::atomic::Ordering::Relaxed)
        });
        m.register_counter_family_fn("runyard_test_by_kind", "Things by kind", || {
            vec![
                (vec![("kind", "a".to_string())], 1),
                (vec![("kind", "b".to_string())], 2),
            ]
        });
        m.register_gauge_fn("runyard_test_open", "Open things", || -3);
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = m.render();
        for line in [
            "# TYPE runyard_test_things_total counter\n",
            "runyard_test_things_total 8\n",
            "runyard_test_by_kind_total{kind=\"a\"} 1\n",
            "runyard_test_by_kind_total{kind=\"b\"} 2\n",
            "# TYPE runyard_test_open gauge\n",
            "runyard_test_open -3\n",
            "runyard_http_panics_total 0\n",
            "runyard_schedule_fires_total ",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn a_job_given_back_waits_from_the_end_of_the_run_it_was_given_back_from() {
        use crate::job::{apply, ApplyCtx, Command};
        let claim = |j: &mut Job, token, at| {
            let cmd = Command::Claim {
                worker: "w".into(),
                token,
                lease_until: at + 60_000_000,
            };
            apply(j, cmd, &ApplyCtx::at(at, 0)).unwrap();
        };
        let mut j = Job::new("t", "r", 0);
        claim(&mut j, 1, 100);
        assert_eq!(queued_since(&j), 0, "a first claim: since it was queued");
        apply(
            &mut j,
            Command::Release { token: 1 },
            &ApplyCtx::at(7_000_000, 0),
        )
        .unwrap();
        assert_eq!(j.queued_at, 0, "its place kept");
        claim(&mut j, 2, 7_500_000);
        assert_eq!(
            queued_since(&j),
            7_000_000,
            "not the run it was given back from"
        );
    }

    #[test]
    fn job_types_past_the_cap_share_one_label() {
        let m = Metrics::new();
        for i in 0..MAX_TYPES {
            assert_eq!(m.type_label(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(m.type_label("one.too.many"), OTHER_TYPE);
        assert_eq!(m.type_label("t0"), "t0");
    }
}
