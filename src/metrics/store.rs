//! [`MeteredStore`]: the store as this process uses it, with every operation timed and every
//! committed change counted. Each change is committed by exactly one process, so the counters of
//! all nodes add up to what happened.
//!
//! The forwarding is declared, not written: `metered!` turns one line per method into a method
//! that calls the wrapped store inside `MeteredStore::timed`, under the method's own name (the
//! `op` label of `runyard_store_operation_seconds` and `runyard_store_errors_total`).
//!
//! ## Adding a store trait (a new capability of [`Store`])
//!
//! Add one block to the `metered!` call below, a line per method: its arguments (without
//! `&self`) and its `Ok` type, as in the trait:
//!
//! ```text
//! metered! {
//!     ...
//!     ReplayStore {
//!         replay_remember(key: &str, until: Micros) -> bool;
//!     }
//! }
//! ```
//!
//! and import the trait here. A method whose result the metrics count takes
//! `=> |m, ok| ...` (called with the [`Metrics`] and the `Ok` value); one that needs something
//! from its arguments before they move into the store takes `[name = expr]` first (see `apply`).
//! A method missing from its block does not compile, as long as the trait gives it no default
//! body (keep it so: a default body would run instead of the wrapped store's). A method that is
//! not forwarded as above goes, written out, in the block's `@by_hand { ... }` (as `park`, which
//! has a default body: forward such a method there, or the default runs).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{CommandKind, Metrics};
use crate::job::{Command, Event, Job, Micros};
use crate::schedule::Schedule;
use crate::store::activity::{Activity, ActivityStore};
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::deliveries::{
    Attempt, ClaimLimits, Claimed, Delivery, DeliveryPage, DeliveryState, Outcome,
};
use crate::store::handoff::{NextJob, Observer, Refill};
use crate::store::signals::{Signal, SignalKey, SignalPage};
use crate::store::waits::WaitStore;
use crate::store::{
    DeliveryStore, EventLog, FinishSlot, JobPage, JobQueue, JobStore, ListQuery, LogLine, LogStore,
    LogStream, Maintenance, Notice, Parked, Result, RetentionReport, ScheduleStore, SignalStore,
    Store, StoreError, Submitted,
};

/// A store that reports to [`Metrics`]; otherwise the store it wraps.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// `inner`, metered into `metrics`.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }

    /// Runs `f`, recording how long it took under `op`, and an error when the backend failed
    /// (not when it refused: a conflict or a missing job is an answer, not an outage).
    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let t = Instant::now();
        let r = f.await;
        let failed = matches!(
            r,
            Err(StoreError::Unavailable(_)) | Err(StoreError::Backend(_))
        );
        self.metrics.store_op(op, t.elapsed(), failed);
        r
    }

    /// Counts each job a hand-off or a refill delivers as claimed.
    fn count_claimed(&self) -> Observer {
        let metrics = self.metrics.clone();
        Arc::new(move |j: &Job| metrics.jobs_claimed(std::slice::from_ref(j)))
    }

    /// Calls `count` with the metrics and the value of a committed operation.
    fn count<T>(&self, r: &Result<T>, count: impl FnOnce(&Metrics, &T)) {
        if let Ok(v) = r {
            count(&self.metrics, v);
        }
    }
}

/// Implements store traits for [`MeteredStore`] from a line per method (see the module's docs):
/// `name(arg: Type, ...) -> OkType [before = expr] => |metrics, ok| count;`, the last two parts
/// optional.
macro_rules! metered {
    ($(
        $trait:ident {
            $(
                $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ok:ty
                    $([$pre:ident = $pre_e:expr])?
                    $(=> $count:expr)?;
            )*
            $(@by_hand { $($hand:tt)* })?
        }
    )*) => {$(
        #[async_trait]
        impl $trait for MeteredStore {
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$ok> {
                    $(let $pre = $pre_e;)?
                    let r = self.timed(stringify!($name), self.inner.$name($($arg),*)).await;
                    $(self.count(&r, $count);)?
                    r
                }
            )*
            $($($hand)*)?
        }
    )*};
}

metered! {
    JobStore {
        submit(job: Job) -> Submitted => |m, s| if s.created { m.job_submitted(&s.job) };
        submit_many(jobs: Vec<Job>) -> Vec<Result<Submitted>> => |m, all| {
            for s in all.iter().flatten().filter(|s| s.created) {
                m.job_submitted(&s.job);
            }
        };
        get(id: Uuid) -> Option<Job>;
        list(q: ListQuery) -> JobPage => |m, page| m.jobs_listed(page.jobs.len());
        // The command's kind is read before the command moves into the store.
        apply(id: Uuid, cmd: Command) -> Job [kind = CommandKind::of(&cmd)]
            => |m, job| m.job_changed(&kind, job);
        finish(id: Uuid, cmd: Command, refill: Option<Arc<Refill>>) -> Job
            [kind = CommandKind::of(&cmd)]
            => |m, job| m.job_changed(&kind, job);
        // A start and the finish that came with it (`store/finish_slot.rs`): two changes.
        apply_start(id: Uuid, start: Command, finish: Arc<FinishSlot>) -> (Job, Option<Result<Job>>)
            [kind = CommandKind::of(&start)]
            => |m, (job, end)| {
                m.job_changed(&kind, job);
                if let Some(Ok(j)) = end {
                    m.job_changed(&CommandKind::Finish, j);
                }
            };
    }
    JobQueue {
        claim(runner: &str, worker: &str, max: usize, lease_ttl: Duration) -> Vec<Job>
            => |m, jobs| m.jobs_claimed(jobs);
        heartbeat(worker: &str, held: &[(Uuid, u64)], lease_ttl: Duration) -> Vec<Uuid>;
        adopt(id: Uuid, expected: Option<u64>, worker: &str, lease_ttl: Duration) -> Job;
        fence(id: Uuid, expected: u64) -> Job;
        promote_due(max: usize) -> usize => |m, n| m.jobs_promoted(*n);
        next_due() -> Option<Micros>;
        expired(max: usize) -> Vec<Job>;
        queued_ids(runner: &str, skip: usize, max: usize) -> Vec<Uuid>;
        // Its jobs count as claimed when they arrive (the parked worker's observer).
        claim_parked(parked: &[u64]) -> bool;
        @by_hand {
            // Not timed (it waits for a submit by design); a job handed over counts as claimed.
            fn park(&self, runner: &str, worker: &str, lease_ttl: Duration, max: usize) -> Option<Parked> {
                self.inner
                    .park(runner, worker, lease_ttl, max)
                    .map(|p| p.observe(self.count_claimed()))
            }
            // A job claimed with a finish counts as claimed when it arrives.
            fn refill(&self, runner: &str, worker: &str, lease_ttl: Duration) -> Option<(Arc<Refill>, NextJob)> {
                self.inner
                    .refill(runner, worker, lease_ttl)
                    .inspect(|(r, _)| r.observe(self.count_claimed()))
            }
        }
    }
    LogStore {
        append_logs(id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> ();
        logs(id: Uuid, after: u64, limit: usize) -> Vec<LogLine>;
    }
    EventLog {
        events(channel: Option<&str>, last_id: Option<&str>, limit: usize) -> Vec<Event>;
        last_event_id() -> Option<String>;
    }
    Maintenance {
        retention(finished_before: Micros) -> RetentionReport;
        file_hashes() -> HashSet<String>;
        health() -> ();
        @by_hand {
            // Not timed: a clock read (on Redis a `TIME` every 10 s at most).
            async fn time(&self) -> Micros {
                self.inner.time().await
            }
        }
    }
    ScheduleStore {
        schedule(name: &str) -> Option<Schedule>;
        schedules() -> Vec<Schedule>;
        schedules_due(now: Micros, max: usize) -> Vec<String>;
        schedules_next_wake() -> Option<Micros>;
        schedule_cas(s: &Schedule, expected: Option<u64>) -> bool;
        schedule_delete(name: &str, expected: u64) -> bool;
        schedule_unreadable(name: &str, what: crate::store::schedules::Unreadable) -> bool;
        schedule_orphan(name: &str) -> bool;
    }
    SignalStore {
        signal_append(key: &str, id: Option<String>, payload: Option<Value>, at: Micros)
            -> (Signal, bool);
        signals_page(key: &str, since: Micros, limit: usize, bytes: usize) -> SignalPage;
        signal_seqs(key: &str, since: Micros, until: Micros, limit: usize) -> Vec<u64>;
        signal_count(key: &str, since: Micros, until: Micros, limit: u64) -> u64;
        signals_trim(before: Micros) -> u64;
        signal_keys(after: Option<&str>, limit: usize) -> Vec<SignalKey>;
    }
    JobCountStore {
        job_counts() -> JobCounts;
    }
    ActivityStore {
        finished_per_minute(minutes: u32) -> Activity;
        dead_letters() -> std::collections::BTreeMap<String, u64>;
    }
    DeliveryStore {
        deliveries_claim(max: usize, hold: Duration, limits: ClaimLimits) -> Vec<Claimed>;
        delivery_record(claimed: &Claimed, attempt: Attempt, outcome: Outcome)
            -> Option<DeliveryState>;
        deliveries_page(job: Uuid, page: DeliveryPage, limit: usize) -> Vec<Delivery>;
        deliveries_next_due() -> Option<Micros>;
        deliveries_pending() -> u64;
        deliveries_trim(before: Micros) -> u64;
    }
    WaitStore {
        wait_check(id: Uuid) -> bool;
        wait_check_marked(max: usize) -> usize;
        wait_next_deadline() -> Option<Micros>;
        wait_fire_deadlines(max: usize) -> Vec<Job>;
    }
}

impl Store for MeteredStore {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.subscribe()
    }
    fn subscribe_to(&self, wants: crate::store::NoticeFilter) -> broadcast::Receiver<Notice> {
        self.inner.subscribe_to(wants)
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn finish_committed_late(&self, job: &Job) {
        self.metrics.job_changed(&CommandKind::Finish, job);
    }
    fn start_committed_late(&self) {
        self.metrics.transition(crate::job::JobStatus::Running);
    }
}

// Not through `metered!`: replay memory answers its own error type, and the tail is not timed.
#[async_trait]
impl crate::store::ReplayMemory for MeteredStore {
    async fn remember_once(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> std::result::Result<bool, crate::store::replay::ReplayError> {
        let t = Instant::now();
        let r = self.inner.remember_once(key, expires_at_ms, now_ms).await;
        self.metrics
            .store_op("remember_once", t.elapsed(), r.is_err());
        r
    }
}

impl crate::store::EventTail for MeteredStore {
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn crate::store::tail::TailReader>> {
        // Not timed: a tail read waits for commits by design.
        self.inner.clone().event_tail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::StoreSettings;

    /// Each forwarded method is timed once, under its own name, over a real embedded store.
    #[tokio::test]
    async fn every_call_is_timed_under_its_method_name() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(dir.path(), StoreSettings::default(), false).unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::wrap(Arc::new(inner), metrics.clone());
        let id = Uuid::now_v7();
        assert!(store.get(id).await.unwrap().is_none());
        store.list(ListQuery::default()).await.unwrap();
        assert_eq!(store.promote_due(10).await.unwrap(), 0);
        store.next_due().await.unwrap();
        store.logs(id, 0, 10).await.unwrap();
        store.events(None, None, 10).await.unwrap();
        store.health().await.unwrap();
        store.health().await.unwrap();
        store.schedule("nightly").await.unwrap();
        store.signals_page("k", 0, 10, 1 << 20).await.unwrap();
        store.job_counts().await.unwrap();
        store
            .deliveries_page(id, DeliveryPage::After(0), 10)
            .await
            .unwrap();
        store.wait_next_deadline().await.unwrap();
        // The one forwarder written by hand (its error type is not the store's).
        let now_ms = crate::job::now_us() / 1000;
        assert!(store
            .remember_once("k", now_ms + 60_000, now_ms)
            .await
            .unwrap());
        assert_eq!(store.backend_name(), "embedded");
        let text = metrics.render();
        let count = |op: &str| {
            let head = format!("runyard_store_operation_seconds_count{{op=\"{op}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&head))
                .unwrap_or_else(|| panic!("no {head:?} in\n{text}"))
                .to_string()
        };
        for op in [
            "get",
            "list",
            "promote_due",
            "next_due",
            "logs",
            "events",
            "schedule",
            "signals_page",
            "job_counts",
            "deliveries_page",
            "wait_next_deadline",
            "remember_once",
        ] {
            assert_eq!(count(op), "1", "{op}");
        }
        assert_eq!(count("health"), "2");
        assert!(!text.contains("op=\"claim\""), "{text}");
        assert!(!text.contains("runyard_store_errors_total{"), "{text}");
    }
}
