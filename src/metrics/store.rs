//! [`MeteredStore`]: the store as this process uses it, with every operation timed and every
//! committed change counted. Each change is committed by exactly one process, so the counters of
//! all nodes add up to what happened.

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
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::signals::Signal;
use crate::store::{
    EventLog, JobPage, JobQueue, JobStore, ListQuery, LogLine, LogStore, LogStream, Maintenance,
    Notice, Result, RetentionReport, ScheduleStore, SignalStore, Store, StoreError, Submitted,
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
}

#[async_trait]
impl JobStore for MeteredStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        let r = self.timed("submit", self.inner.submit(job)).await;
        if let Ok(s) = &r {
            if s.created {
                self.metrics.job_submitted(&s.job);
            }
        }
        r
    }
    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        self.timed("get", self.inner.get(id)).await
    }
    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        self.timed("list", self.inner.list(q)).await
    }
    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        let kind = CommandKind::of(&cmd);
        let r = self.timed("apply", self.inner.apply(id, cmd)).await;
        if let Ok(job) = &r {
            self.metrics.job_changed(&kind, job);
        }
        r
    }
}

#[async_trait]
impl JobQueue for MeteredStore {
    async fn claim(
        &self,
        runner: &str,
        worker: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<Job>> {
        let r = self
            .timed("claim", self.inner.claim(runner, worker, max, lease_ttl))
            .await;
        if let Ok(jobs) = &r {
            self.metrics.jobs_claimed(jobs);
        }
        r
    }
    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>> {
        self.timed("heartbeat", self.inner.heartbeat(worker, held, lease_ttl))
            .await
    }
    async fn adopt(&self, id: Uuid, worker: &str, lease_ttl: Duration) -> Result<Job> {
        self.timed("adopt", self.inner.adopt(id, worker, lease_ttl))
            .await
    }
    async fn promote_due(&self, max: usize) -> Result<usize> {
        let r = self.timed("promote_due", self.inner.promote_due(max)).await;
        if let Ok(n) = &r {
            self.metrics.jobs_promoted(*n);
        }
        r
    }
    async fn next_due(&self) -> Result<Option<Micros>> {
        self.timed("next_due", self.inner.next_due()).await
    }
    async fn expired(&self, max: usize) -> Result<Vec<Job>> {
        self.timed("expired", self.inner.expired(max)).await
    }
}

#[async_trait]
impl LogStore for MeteredStore {
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()> {
        self.timed("append_logs", self.inner.append_logs(id, lines))
            .await
    }
    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        self.timed("logs", self.inner.logs(id, after, limit)).await
    }
}

#[async_trait]
impl EventLog for MeteredStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.timed("events", self.inner.events(channel, last_id, limit))
            .await
    }
    async fn last_event_id(&self) -> Result<Option<String>> {
        self.timed("last_event_id", self.inner.last_event_id())
            .await
    }
}

#[async_trait]
impl Maintenance for MeteredStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        self.timed("retention", self.inner.retention(finished_before))
            .await
    }
    async fn file_hashes(&self) -> Result<HashSet<String>> {
        self.timed("file_hashes", self.inner.file_hashes()).await
    }
    async fn health(&self) -> Result<()> {
        self.timed("health", self.inner.health()).await
    }
}

#[async_trait]
impl ScheduleStore for MeteredStore {
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        self.timed("schedule", self.inner.schedule(name)).await
    }
    async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.timed("schedules", self.inner.schedules()).await
    }
    async fn schedules_due(&self, now: Micros, max: usize) -> Result<Vec<String>> {
        self.timed("schedules_due", self.inner.schedules_due(now, max))
            .await
    }
    async fn schedules_next_wake(&self) -> Result<Option<Micros>> {
        self.timed("schedules_next_wake", self.inner.schedules_next_wake())
            .await
    }
    async fn schedule_cas(&self, s: &Schedule, expected: Option<u64>) -> Result<bool> {
        self.timed("schedule_cas", self.inner.schedule_cas(s, expected))
            .await
    }
    async fn schedule_delete(&self, name: &str, expected: u64) -> Result<bool> {
        self.timed(
            "schedule_delete",
            self.inner.schedule_delete(name, expected),
        )
        .await
    }
}

#[async_trait]
impl SignalStore for MeteredStore {
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)> {
        self.timed(
            "signal_append",
            self.inner.signal_append(key, id, payload, at),
        )
        .await
    }
    async fn signals(&self, key: &str, since: Micros, limit: usize) -> Result<Vec<Signal>> {
        self.timed("signals", self.inner.signals(key, since, limit))
            .await
    }
    async fn signals_trim(&self, before: Micros) -> Result<u64> {
        self.timed("signals_trim", self.inner.signals_trim(before))
            .await
    }
}

#[async_trait]
impl JobCountStore for MeteredStore {
    async fn job_counts(&self) -> Result<JobCounts> {
        self.timed("job_counts", self.inner.job_counts()).await
    }
}

impl Store for MeteredStore {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.subscribe()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

#[async_trait]
impl crate::store::DeliveryStore for MeteredStore {
    async fn deliveries_claim(
        &self,
        max: usize,
        hold: Duration,
    ) -> Result<Vec<crate::store::deliveries::Claimed>> {
        self.timed("deliveries_claim", self.inner.deliveries_claim(max, hold))
            .await
    }
    async fn delivery_record(
        &self,
        claimed: &crate::store::deliveries::Claimed,
        attempt: crate::store::deliveries::Attempt,
        outcome: crate::store::deliveries::Outcome,
    ) -> Result<Option<crate::store::deliveries::DeliveryState>> {
        self.timed(
            "delivery_record",
            self.inner.delivery_record(claimed, attempt, outcome),
        )
        .await
    }
    async fn deliveries(
        &self,
        job: Uuid,
        limit: usize,
    ) -> Result<Vec<crate::store::deliveries::Delivery>> {
        self.timed("deliveries", self.inner.deliveries(job, limit))
            .await
    }
    async fn deliveries_next_due(&self) -> Result<Option<Micros>> {
        self.timed("deliveries_next_due", self.inner.deliveries_next_due())
            .await
    }
    async fn deliveries_trim(&self, before: Micros) -> Result<u64> {
        self.timed("deliveries_trim", self.inner.deliveries_trim(before))
            .await
    }
}

#[async_trait]
impl crate::store::waits::WaitStore for MeteredStore {
    async fn wait_check(&self, id: Uuid) -> Result<bool> {
        self.timed("wait_check", self.inner.wait_check(id)).await
    }
    async fn wait_check_marked(&self, max: usize) -> Result<usize> {
        self.timed("wait_check_marked", self.inner.wait_check_marked(max))
            .await
    }
    async fn wait_next_deadline(&self) -> Result<Option<Micros>> {
        self.timed("wait_next_deadline", self.inner.wait_next_deadline())
            .await
    }
    async fn wait_fire_deadlines(&self, max: usize) -> Result<Vec<Job>> {
        self.timed("wait_fire_deadlines", self.inner.wait_fire_deadlines(max))
            .await
    }
}

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
