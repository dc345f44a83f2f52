//! The store conformance suite: the very same test bodies run against the embedded store
//! (`embedded::*`) and the Redis store (`redis::*`). A backend is correct when it passes all of
//! them: jobs, the queue and its leases, fencing, idempotency, transitions, events and retention.
//!
//! Each body gets a [`Backend`], opens its store with the settings it needs, and may open a
//! second handle on the same data (`Backend::peer`): another connection with Redis (as another
//! process would), the same store when embedded (one process per data dir).

mod redis_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use runyard::job::{
    now_us, Backoff, Command, FileRef, FinishOutcome, HookReport, Job, JobStatus, RunHandle,
    TransitionError,
};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::sqlite::SqliteStore;
use runyard::store::{
    ListQuery, LogStream, Names, Notice, Store, StoreError, StoreSettings, Visibility,
};
use serde_json::json;
use uuid::Uuid;

use redis_support::TestRedis;

enum Kind {
    Embedded(tempfile::TempDir),
    /// `true`: the first store writes compact job records ([`Backend::redis_compact`]).
    Redis(TestRedis, bool),
}

/// A backend under test.
struct Backend {
    kind: Kind,
    settings: StoreSettings,
    first: Option<Arc<dyn Store>>,
}

/// [`test_settings`] with these event limits (global, per channel).
fn event_limits(global_limit: usize, channel_limit: usize) -> StoreSettings {
    StoreSettings {
        global_limit,
        channel_limit,
        ..test_settings()
    }
}

fn test_settings() -> StoreSettings {
    StoreSettings {
        progress_interval: Duration::ZERO,
        ..StoreSettings::default()
    }
}

/// `ZADD key score member` (the tests' own writes, as an older version left them).
async fn zadd(
    c: &mut ::redis::aio::MultiplexedConnection,
    key: String,
    score: i64,
    member: String,
) {
    ::redis::cmd("ZADD")
        .arg(key)
        .arg(score)
        .arg(member)
        .query_async::<()>(c)
        .await
        .expect("zadd");
}

impl Backend {
    fn embedded() -> Self {
        Self {
            kind: Kind::Embedded(tempfile::tempdir().expect("temp dir")),
            settings: test_settings(),
            first: None,
        }
    }

    fn redis() -> Self {
        Self {
            kind: Kind::Redis(TestRedis::start(), false),
            settings: test_settings(),
            first: None,
        }
    }

    /// Redis, the store writing compact job records (`store.records = "compact"`) and its
    /// peers the job's JSON: every test on the compact form, and those with a peer on the two
    /// forms side by side, as during a rolling update.
    fn redis_compact() -> Self {
        Self {
            kind: Kind::Redis(TestRedis::start(), true),
            settings: test_settings(),
            first: None,
        }
    }

    async fn open_new(&self) -> Arc<dyn Store> {
        match &self.kind {
            Kind::Embedded(dir) => {
                Arc::new(SqliteStore::open(dir.path(), self.settings.clone(), false).expect("open"))
            }
            Kind::Redis(r, compact) => RedisStore::connect(RedisSettings {
                prefix: r.prefix.clone(),
                store: self.settings.clone(),
                retry: Duration::from_secs(5),
                channel_lists: redis_support::channel_lists(),
                compact_records: *compact && self.first.is_none(),
                ..RedisSettings::new(r.url.clone())
            })
            .await
            .expect("connect"),
        }
    }

    /// The store, with these settings.
    async fn store_with(&mut self, settings: StoreSettings) -> Arc<dyn Store> {
        assert!(
            self.first.is_none(),
            "store_with before the store (or a peer) is opened, or its settings are not used"
        );
        self.settings = settings;
        self.store().await
    }

    /// The store.
    async fn store(&mut self) -> Arc<dyn Store> {
        if self.first.is_none() {
            self.first = Some(self.open_new().await);
        }
        self.first.clone().expect("opened")
    }

    /// The store closed and opened again, as after a restart of the process that held it.
    async fn reopen(&mut self) -> Arc<dyn Store> {
        if let Some(first) = self.first.take() {
            let weak = Arc::downgrade(&first);
            drop(first);
            assert!(weak.upgrade().is_none(), "the test holds no other handle");
        }
        self.store().await
    }

    /// Writes `payloads.len()` records of `key` all at `at`, as a runyard from before records
    /// were stamped in order could (jobs finished together, each emitting the key), numbered on
    /// from the key's last: straight into the database, as that version left them.
    async fn legacy_tied_signals(&self, key: &str, at: i64, payloads: &[serde_json::Value]) {
        match &self.kind {
            Kind::Embedded(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("open");
                c.busy_timeout(Duration::from_secs(10)).expect("timeout");
                for p in payloads {
                    let seq: i64 = c
                        .query_row(
                            "INSERT INTO signal_seqs(key, seq) VALUES (?1, 1)
                             ON CONFLICT(key) DO UPDATE SET seq = seq + 1 RETURNING seq",
                            [key],
                            |r| r.get(0),
                        )
                        .expect("seq");
                    c.execute(
                        "INSERT INTO signals(key, seq, at, sid, payload) VALUES (?1, ?2, ?3, NULL, ?4)",
                        rusqlite::params![key, seq, at, p.to_string()],
                    )
                    .expect("insert");
                }
            }
            Kind::Redis(r, _) => {
                let client = ::redis::Client::open(r.url.as_str()).expect("client");
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                for p in payloads {
                    let seq: i64 = ::redis::cmd("HINCRBY")
                        .arg(format!("{}:sigseq", r.prefix))
                        .arg(key)
                        .arg(1)
                        .query_async(&mut c)
                        .await
                        .expect("seq");
                    // The stored form: these fields, in this order.
                    let rec = format!(
                        r#"{{"key":{},"seq":{seq},"at":{at},"id":null,"payload":{p}}}"#,
                        serde_json::to_string(key).expect("json")
                    );
                    zadd(&mut c, format!("{}:sig:{key}", r.prefix), at, rec).await;
                }
                zadd(&mut c, format!("{}:sigkeys", r.prefix), at, key.into()).await;
            }
        }
    }

    /// Redis: a connection of the test's own and the store's key prefix.
    async fn raw(&self) -> Option<(::redis::aio::MultiplexedConnection, &str)> {
        let Kind::Redis(r, _) = &self.kind else {
            return None;
        };
        let client = ::redis::Client::open(r.url.as_str()).expect("client");
        let c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        Some((c, r.prefix.as_str()))
    }

    /// Redis: the record of job `id` begins with `prefix`; embedded: nothing to check.
    async fn assert_record(&self, id: Uuid, prefix: &str) {
        if let Some((mut c, p)) = self.raw().await {
            let rec: String = ::redis::cmd("HGET")
                .arg(format!("{p}:job:{id}"))
                .arg("b")
                .query_async(&mut c)
                .await
                .expect("record");
            assert!(rec.starts_with(prefix), "{rec}");
        }
    }

    /// Redis: the newest entry of the global stream (its field `e`) begins with `prefix`.
    async fn assert_last_event(&self, prefix: &str) {
        if let Some((mut c, p)) = self.raw().await {
            let last: Vec<(String, Vec<(String, String)>)> = ::redis::cmd("XREVRANGE")
                .arg(format!("{p}:ev"))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut c)
                .await
                .expect("xrevrange");
            let e = &last[0].1[0].1;
            assert!(e.starts_with(prefix), "{e}");
        }
    }

    /// A second handle on the same data, as another process would have (embedded: the same).
    /// On Redis the first store is opened first, so that a peer is never the one writing
    /// compact records ([`Backend::redis_compact`]) whichever a test asks for first.
    async fn peer(&mut self) -> Arc<dyn Store> {
        match self.kind {
            Kind::Embedded(_) => self.store().await,
            Kind::Redis(..) => {
                self.store().await;
                self.open_new().await
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::redis()).await;
                }
            )*
        }
        mod redis_compact {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::redis_compact()).await;
                }
            )*
        }
    };
}

conformance!(
    submit_get_and_list,
    idempotency_key_returns_the_first_job,
    claims_take_the_oldest_with_unique_tokens,
    a_runners_queue_reads_oldest_first_without_claiming,
    concurrent_claims_never_share_a_job,
    transitions_are_enforced,
    stale_tokens_are_fenced_off,
    expired_leases_are_reaped_then_fail,
    heartbeats_extend_and_report_lost_jobs,
    heartbeats_leave_a_finished_attempt_alone,
    a_restart_orphans_leases_only_of_the_sole_holder,
    adoption_gives_a_fresh_token,
    an_adoption_under_the_fence_takes_only_the_fenced_lease,
    a_fence_changes_only_the_token_and_the_requeue_takes_only_its_token,
    scheduled_jobs_are_promoted_when_due,
    events_are_ordered_and_exclusive,
    trimmed_events_yield_a_resync,
    a_channel_trim_leaves_the_global_stream_whole,
    logs_are_sequenced_and_bounded,
    retention_deletes_finished_jobs,
    file_references_follow_jobs,
    a_new_attempt_drops_the_last_ones_uploads,
    notices_reach_every_handle,
    host_failures_reschedule_and_give_the_attempt_back,
    webhook_deliveries_follow_events_and_claims_are_fenced,
    webhook_claims_pass_over_endpoints_at_their_cap,
    webhook_claims_look_past_several_endpoints_at_their_cap,
    webhook_deliveries_are_paged_both_ways,
    webhook_attempts_never_recorded_show_as_unknown,
    webhook_records_after_the_hold_ran_out_are_refused,
    replay_memory_accepts_each_request_once,
    replay_memory_forgets_a_request_after_its_expiry,
    event_tail_reads_every_handles_commits,
    type_globs_mean_the_same_on_both_backends,
    list_filters_find_jobs_past_the_first_page,
    list_filters_by_creation_time,
    list_filters_dead_letters,
    a_confined_listing_is_made_of_the_jobs_it_sees_only,
    signal_keys_are_listed_with_count_and_latest,
    signal_pages_stop_at_their_bytes_and_go_on_exactly_once,
    signal_numbers_are_read_lowest_first_and_at_most_the_count,
    signals_are_stamped_in_the_order_they_are_written,
    a_signal_id_is_kept_as_long_as_its_record,
    batch_submits_store_each_job_on_its_own,
    a_job_record_is_in_the_form_of_its_last_writer,
    a_job_given_back_goes_ahead_of_the_jobs_queued_since,
    a_rerouted_job_is_in_its_new_runners_queue_only,
    a_job_cancelled_while_it_ran_is_retried_only_once_its_work_stopped,
    a_cancelled_jobs_expired_lease_is_reaped_before_a_retry,
    cancelled_leases_never_hide_active_ones_from_the_reaper,
    a_held_progress_report_is_sent_once_by_its_flush,
    a_held_progress_event_past_its_time_goes_with_a_heartbeat,
);

// ---------------------------------------------------------------------------------------------
// Builders and helpers.

fn job(job_type: &str, runner: &str) -> Job {
    Job {
        args: json!({"n": 1}),
        max_attempts: 2,
        backoff: Backoff {
            initial_ms: 1,
            max_ms: 1,
            multiplier: 1.0,
            jitter: false,
        },
        ..Job::new(job_type, runner, now_us())
    }
}

fn token(j: &Job) -> u64 {
    j.lease.as_ref().expect("a lease").token
}

const LEASE: Duration = Duration::from_secs(30);

async fn submit(s: &Arc<dyn Store>, j: Job) -> Job {
    let r = s.submit(j).await.expect("submit");
    assert!(r.created);
    r.job
}

async fn claim_one(s: &Arc<dyn Store>, runner: &str, worker: &str) -> Job {
    claim_for(s, runner, worker, LEASE).await
}

/// Claims one job of `runner` for `worker` with a lease of `lease` (a short one runs out in the
/// test).
async fn claim_for(s: &Arc<dyn Store>, runner: &str, worker: &str, lease: Duration) -> Job {
    let mut v = s.claim(runner, worker, 1, lease).await.expect("claim");
    assert_eq!(v.len(), 1, "one job claimed");
    v.pop().expect("one")
}

async fn run_to_success(s: &Arc<dyn Store>, j: &Job) -> Job {
    let t = token(j);
    s.apply(
        j.id,
        Command::Started {
            token: t,
            handle: None,
        },
    )
    .await
    .expect("started");
    s.apply(
        j.id,
        Command::Finish {
            token: t,
            outcome: FinishOutcome::Success(Some(json!({"ok": true}))),
        },
    )
    .await
    .expect("finished")
}

/// Every event of a stream (bounded), following `last_id` page by page.
async fn all_events(s: &Arc<dyn Store>, channel: Option<&str>) -> Vec<runyard::job::Event> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..1000 {
        let page = s.events(channel, last.as_deref(), 7).await.expect("events");
        if page.is_empty() {
            return out;
        }
        last = Some(page.last().expect("non-empty").id.clone());
        out.extend(page);
    }
    panic!("event paging did not end");
}

fn is_illegal(e: &StoreError) -> bool {
    matches!(e, StoreError::Transition(TransitionError::Illegal { .. }))
}

fn is_stale(e: &StoreError) -> bool {
    matches!(e, StoreError::Transition(TransitionError::StaleLease))
}

// ---------------------------------------------------------------------------------------------
// The bodies.

/// The progress values of `id`'s progress events, in order.
async fn progress_events(s: &Arc<dyn Store>, id: Uuid) -> Vec<f64> {
    all_events(s, None)
        .await
        .into_iter()
        .filter(|e| e.job_id == id.to_string() && e.kind == "progress")
        .map(|e| e.progress)
        .collect()
}

/// A held progress event whose time passed without its flush (the process that took the report
/// stopped) is sent by the job's worker with its next lease renewal, once; a renewal before its
/// time, or after it was sent, sends nothing.
async fn a_held_progress_event_past_its_time_goes_with_a_heartbeat(mut b: Backend) {
    let interval = Duration::from_secs(2);
    let s = b
        .store_with(StoreSettings {
            progress_interval: interval,
            ..test_settings()
        })
        .await;
    let peer = b.peer().await;
    let j = submit(&s, job("t", "r")).await;
    let c = claim_one(&s, "r", "w").await;
    let held = [(j.id, token(&c))];
    let progress = |p| Command::Progress {
        token: Some(token(&c)),
        progress: Some(p),
        details: None,
    };
    s.apply(j.id, progress(0.1)).await.expect("first report");
    let second = s.apply(j.id, progress(0.6)).await.expect("second report");
    assert!(second.progress_due.is_some(), "held back");
    // The same value again holds nothing more back, and sends nothing.
    let again = s.apply(j.id, progress(0.6)).await.expect("same value");
    assert_eq!(again.progress_due, second.progress_due);
    assert!(s
        .heartbeat("w", &held, LEASE)
        .await
        .expect("beat")
        .is_empty());
    assert_eq!(progress_events(&s, j.id).await, [0.1], "not yet due");
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(peer
        .heartbeat("w", &held, LEASE)
        .await
        .expect("beat")
        .is_empty());
    assert_eq!(progress_events(&s, j.id).await, [0.1, 0.6]);
    let after = s.get(j.id).await.expect("get").expect("the job");
    assert_eq!(after.progress_due, None);
    assert!(s
        .heartbeat("w", &held, LEASE)
        .await
        .expect("beat")
        .is_empty());
    assert_eq!(progress_events(&s, j.id).await, [0.1, 0.6], "sent once");
    let e = s.apply(j.id, Command::ProgressFlush).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Transition(TransitionError::Invalid(_))),
        "{e}"
    );
}

/// A progress report coming sooner than `progress_interval` after the last progress event is
/// stored with the time its own event is due (`progress_due`, read back by every handle), and
/// `ProgressFlush` sends that event once; a flush with nothing held, or for a job no longer
/// active, is refused and writes nothing.
async fn a_held_progress_report_is_sent_once_by_its_flush(mut b: Backend) {
    let hour = Duration::from_secs(3600);
    let s = b
        .store_with(StoreSettings {
            progress_interval: hour,
            ..test_settings()
        })
        .await;
    let peer = b.peer().await;
    let j = submit(&s, job("t", "r")).await;
    let c = claim_one(&s, "r", "w").await;
    let t = token(&c);
    let progress = |p| Command::Progress {
        token: Some(t),
        progress: Some(p),
        details: None,
    };
    let first = s.apply(j.id, progress(0.1)).await.expect("first report");
    assert_eq!(first.progress_due, None, "the first report's event is sent");
    let held = s.apply(j.id, progress(0.4)).await.expect("second report");
    assert_eq!(held.progress, 0.4);
    let due = first.progress_event_at + hour.as_micros() as i64;
    assert_eq!(held.progress_due, Some(due));
    let read = peer.get(j.id).await.expect("get").expect("the job");
    assert_eq!(read.progress_due, Some(due), "every handle reads it");
    assert_eq!(progress_events(&s, j.id).await, [0.1]);

    let sent = peer
        .apply(j.id, Command::ProgressFlush)
        .await
        .expect("flush");
    assert_eq!(sent.progress_due, None);
    assert_eq!(progress_events(&s, j.id).await, [0.1, 0.4]);
    let e = s.apply(j.id, Command::ProgressFlush).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Transition(TransitionError::Invalid(_))),
        "nothing held: {e}"
    );
    let after = s.get(j.id).await.expect("get").expect("the job");
    assert_eq!(
        after.version, sent.version,
        "a refused flush writes nothing"
    );

    // Held again, then the job ends: nothing is sent for a job no longer active.
    let again = s.apply(j.id, progress(0.9)).await.expect("third report");
    assert!(again.progress_due.is_some());
    run_to_success(&s, &c).await;
    let e = peer.apply(j.id, Command::ProgressFlush).await.unwrap_err();
    assert!(is_illegal(&e), "ended: {e}");
    assert_eq!(progress_events(&s, j.id).await, [0.1, 0.4]);
}

/// Redis: a job's record (`b`) is in the form of the node that wrote it last
/// (`store.records`), and each node reads the other's; embedded: two handles see the same job.
async fn a_job_record_is_in_the_form_of_its_last_writer(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let (first, other) = match &b.kind {
        Kind::Redis(_, true) => (r#"{"i":"#, r#"{"id":"#),
        _ => (r#"{"id":"#, r#"{"id":"#),
    };
    let j = submit(&s, job("t.form", "r")).await;
    b.assert_record(j.id, first).await;
    let claimed = claim_one(&peer, "r", "w").await;
    b.assert_record(j.id, other).await;
    assert_eq!(s.get(j.id).await.unwrap().expect("stored"), claimed);
    let done = run_to_success(&s, &claimed).await;
    b.assert_record(j.id, first).await;
    // The newest event (the finish's) is in the form of its writer too.
    b.assert_last_event(if first == other {
        "{\"id\":"
    } else {
        "{\"c\":"
    })
    .await;
    assert_eq!(peer.get(j.id).await.unwrap().expect("stored"), done);
    assert_eq!(done.status, JobStatus::Success);
}

async fn submit_get_and_list(mut b: Backend) {
    let s = b.store().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let ty = if i % 2 == 0 { "report.daily" } else { "thumb" };
        ids.push(submit(&s, job(ty, "r")).await.id);
    }
    let got = s.get(ids[3]).await.unwrap().expect("found");
    assert_eq!(got.id, ids[3]);
    assert_eq!(got.job_type, "thumb");
    assert_eq!(got.status, JobStatus::Queued);
    assert!(s.get(Uuid::now_v7()).await.unwrap().is_none());

    // Newest first, in pages.
    let p1 = s
        .list(ListQuery {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let p1_ids: Vec<Uuid> = p1.jobs.iter().map(|j| j.id).collect();
    assert_eq!(p1_ids, vec![ids[6], ids[5], ids[4]]);
    let p2 = s
        .list(ListQuery {
            limit: 10,
            cursor: p1.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p2.jobs.len(), 4);
    assert!(p2.next_cursor.is_none());
    assert_eq!(p2.jobs[3].id, ids[0]);

    // Filters.
    let reports = s
        .list(ListQuery {
            limit: 100,
            job_type: Some("report.*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reports.jobs.len(), 4);
    assert!(reports.jobs.iter().all(|j| j.job_type == "report.daily"));
    let c = claim_one(&s, "r", "w").await;
    let starting = s
        .list(ListQuery {
            limit: 100,
            status: Some(JobStatus::Starting),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(starting.jobs.len(), 1);
    assert_eq!(starting.jobs[0].id, c.id);
    let queued = s
        .list(ListQuery {
            limit: 100,
            status: Some(JobStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.jobs.len(), 6);
}

async fn idempotency_key_returns_the_first_job(mut b: Backend) {
    let s = b.store().await;
    let mut a = job("t", "r");
    a.idempotency_key = Some("order-42".into());
    let first = s.submit(a).await.unwrap();
    assert!(first.created);
    let mut again = job("t", "r");
    again.idempotency_key = Some("order-42".into());
    let second = s.submit(again).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);
    // From another process too.
    let peer = b.peer().await;
    let mut third = job("t", "r");
    third.idempotency_key = Some("order-42".into());
    assert_eq!(peer.submit(third).await.unwrap().job.id, first.job.id);
    // One job, one queue entry.
    assert_eq!(s.claim("r", "w", 10, LEASE).await.unwrap().len(), 1);
    let mut other = job("t", "r");
    other.idempotency_key = Some("order-43".into());
    assert!(s.submit(other).await.unwrap().created);
}

/// `queued_ids` (the pass over parked jobs): the ids of a runner's QUEUED jobs, oldest first, in
/// pages by place, nothing claimed; a job re-routed leaves its old runner's queue for its new
/// one's, and only from the runner it is under (`from`).
async fn a_runners_queue_reads_oldest_first_without_claiming(mut b: Backend) {
    let s = b.store().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&s, job("t", "a")).await.id);
    }
    let other = submit(&s, job("t", "b")).await.id;
    let claimed = claim_one(&s, "a", "w1").await;
    assert_eq!(claimed.id, ids[0]);
    let read = |runner: &'static str, skip, max| {
        let s = s.clone();
        async move { s.queued_ids(runner, skip, max).await.expect("queued_ids") }
    };
    assert_eq!(read("a", 0, 2).await, ids[1..3].to_vec());
    assert_eq!(read("a", 2, 10).await, ids[3..].to_vec());
    assert!(read("a", 4, 10).await.is_empty());
    assert_eq!(read("b", 0, 10).await, vec![other]);
    assert!(read("nobody", 0, 10).await.is_empty());
    // Nothing was claimed by the reads.
    for id in &ids[1..] {
        assert_eq!(s.get(*id).await.unwrap().unwrap().status, JobStatus::Queued);
    }
    let moved = |from: &str| Command::Reroute {
        token: None,
        from: Some(from.into()),
        runner: "p".into(),
    };
    let refused = s.apply(ids[4], moved("b")).await;
    assert!(
        matches!(refused, Err(StoreError::Transition(_))),
        "{refused:?}"
    );
    s.apply(ids[4], moved("a")).await.expect("reroute");
    assert_eq!(read("a", 0, 10).await, ids[1..4].to_vec());
    assert_eq!(read("p", 0, 10).await, vec![ids[4]]);
    assert_eq!(s.claim("p", "w2", 10, LEASE).await.unwrap().len(), 1);
    assert!(read("p", 0, 10).await.is_empty());
}

async fn claims_take_the_oldest_with_unique_tokens(mut b: Backend) {
    let s = b.store().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&s, job("t", "a")).await.id);
    }
    submit(&s, job("t", "b")).await;
    let c1 = s.claim("a", "w1", 3, LEASE).await.unwrap();
    assert_eq!(
        c1.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    for j in &c1 {
        assert_eq!(j.status, JobStatus::Starting);
        assert_eq!(j.attempt, 1);
        let l = j.lease.as_ref().unwrap();
        assert_eq!(l.worker, "w1");
        assert!(l.expires_at > now_us());
        assert_eq!(j.runs.len(), 1);
        assert_eq!(j.runs[0].worker, "w1");
        // Stored as returned.
        assert_eq!(
            s.get(j.id).await.unwrap().unwrap().status,
            JobStatus::Starting
        );
    }
    let c2 = s.claim("a", "w2", 10, LEASE).await.unwrap();
    assert_eq!(
        c2.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    assert!(s.claim("a", "w2", 10, LEASE).await.unwrap().is_empty());
    let tokens: HashSet<u64> = c1.iter().chain(&c2).map(token).collect();
    assert_eq!(tokens.len(), 5, "fencing tokens are unique");
    assert_eq!(s.claim("b", "w3", 10, LEASE).await.unwrap().len(), 1);
    assert!(s.claim("a", "w1", 0, LEASE).await.unwrap().is_empty());
}

/// A job a worker gives back (shutdown, a hand-off whose worker was gone) is QUEUED again in its
/// place: the next claim takes it before the jobs submitted while it was out.
async fn a_job_given_back_goes_ahead_of_the_jobs_queued_since(mut b: Backend) {
    let s = b.store().await;
    let first = submit(&s, job("t", "a")).await;
    let out = claim_one(&s, "a", "w1").await;
    assert_eq!(out.id, first.id);
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(submit(&s, job("t", "a")).await.id);
    }
    let back = s
        .apply(out.id, Command::Release { token: token(&out) })
        .await
        .expect("given back");
    assert_eq!(back.status, JobStatus::Queued);
    assert_eq!(back.queued_at, first.queued_at, "its place kept");
    assert_eq!(
        (back.attempt, back.max_attempts),
        (1, out.max_attempts + 1),
        "the attempt given back"
    );
    assert_eq!(
        back.runs.last().and_then(|r| r.outcome.as_deref()),
        Some("RELEASED")
    );
    // The type's oldest QUEUED job (`/async/stats`, the metrics) is it, from its place.
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.oldest_queued.get("t"), Some(&first.queued_at));
    let next = s.claim("a", "w2", 10, LEASE).await.unwrap();
    let order: Vec<Uuid> = next.iter().map(|j| j.id).collect();
    let mut want = vec![first.id];
    want.extend(later);
    assert_eq!(
        order, want,
        "the job given back first, then the others in order"
    );
}

/// `Command::Reroute` moves a job to another runner's queue and out of its old one: a claimed
/// job given back (one write: QUEUED in its place for the new runner, the attempt given back),
/// a QUEUED job (the embedded store's start: only its runner changes; on Redis its entry in the
/// old runner's queue goes), and a claimed one no runner claims (SCHEDULED, its runner kept).
async fn a_rerouted_job_is_in_its_new_runners_queue_only(mut b: Backend) {
    let s = b.store().await;
    let first = submit(&s, job("t", "a")).await;
    let out = claim_one(&s, "a", "w1").await;
    let cmd = Command::Reroute {
        token: Some(token(&out)),
        from: None,
        runner: "b".into(),
    };
    let back = s.apply(out.id, cmd).await.expect("re-routed");
    assert_eq!(
        (back.status, back.runner.as_str()),
        (JobStatus::Queued, "b")
    );
    assert_eq!(back.queued_at, first.queued_at, "its place kept");
    assert_eq!(
        back.max_attempts,
        out.max_attempts + 1,
        "the attempt given back"
    );
    assert_eq!(
        back.runs.last().and_then(|r| r.outcome.as_deref()),
        Some("REROUTED")
    );
    assert!(s.claim("a", "w2", 10, LEASE).await.unwrap().is_empty());
    let again = claim_one(&s, "b", "w2").await;
    assert_eq!((again.id, again.attempt), (first.id, 2));

    // Not claimed: only the runner changes, no event; out of `a`'s queue, into `c`'s.
    let q = submit(&s, job("t", "a")).await;
    let before = all_events(&s, None).await.len();
    let cmd = Command::Reroute {
        token: None,
        from: None,
        runner: "c".into(),
    };
    let moved = s.apply(q.id, cmd).await.expect("moved");
    assert_eq!(
        (moved.status, moved.runner.as_str()),
        (JobStatus::Queued, "c")
    );
    assert_eq!(all_events(&s, None).await.len(), before, "no event");
    assert!(s.claim("a", "w3", 10, LEASE).await.unwrap().is_empty());
    let got = claim_one(&s, "c", "w3").await;
    assert_eq!(got.id, q.id);

    // No runner claims it: parked, QUEUED under a name no claim meets, out of `c`'s queue.
    let cmd = Command::Reroute {
        token: Some(token(&got)),
        from: None,
        runner: runyard::config::PARKED_RUNNER.into(),
    };
    let later = s.apply(got.id, cmd).await.expect("put back");
    assert_eq!(later.status, JobStatus::Queued);
    assert!(s.claim("c", "w4", 10, LEASE).await.unwrap().is_empty());
    // A job running, or already re-routed, cannot be moved without its claim.
    let cmd = Command::Reroute {
        token: Some(token(&got)),
        from: None,
        runner: "d".into(),
    };
    assert!(s.apply(got.id, cmd).await.is_err());
}

async fn concurrent_claims_never_share_a_job(mut b: Backend) {
    let s = b.store().await;
    let n = 300;
    let mut ids = HashSet::new();
    for _ in 0..n {
        ids.insert(submit(&s, job("t", "r")).await.id);
    }
    let mut handles = Vec::new();
    for w in 0..6 {
        let st = if w % 2 == 0 {
            s.clone()
        } else {
            b.peer().await
        };
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let got = st.claim("r", &format!("w{w}"), 7, LEASE).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|j| (j.id, token(&j))));
            }
            mine
        }));
    }
    let mut seen = HashMap::new();
    let mut tokens = HashSet::new();
    for h in handles {
        for (id, t) in h.await.unwrap() {
            assert!(seen.insert(id, t).is_none(), "job {id} claimed twice");
            assert!(tokens.insert(t), "token {t} given twice");
        }
    }
    assert_eq!(seen.len(), n, "every job claimed once");
    assert_eq!(seen.keys().copied().collect::<HashSet<_>>(), ids);
}

async fn transitions_are_enforced(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await;
    // Nothing but a claim starts a job.
    let e = s
        .apply(
            j.id,
            Command::Started {
                token: 1,
                handle: None,
            },
        )
        .await
        .unwrap_err();
    assert!(is_stale(&e) || is_illegal(&e), "{e}");
    assert!(matches!(
        s.apply(Uuid::now_v7(), Command::Cancel).await,
        Err(StoreError::NotFound)
    ));
    let c = claim_one(&s, "r", "w").await;
    let done = run_to_success(&s, &c).await;
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert!(done.finished_at.is_some());
    // Terminal stays terminal: late or duplicate reports change nothing.
    let before = s.get(j.id).await.unwrap().unwrap();
    for cmd in [
        Command::Cancel,
        Command::Finish {
            token: token(&c),
            outcome: FinishOutcome::Failed {
                message: "late".into(),
                exit_code: Some(1),
            },
        },
        Command::Hook(HookReport {
            status: Some(JobStatus::Running),
            ..Default::default()
        }),
        Command::Promote,
        Command::LeaseExpired { token: None },
        Command::Retry { runner: None },
    ] {
        let e = s.apply(j.id, cmd).await.unwrap_err();
        assert!(is_illegal(&e) || is_stale(&e), "{e}");
    }
    assert_eq!(s.get(j.id).await.unwrap().unwrap(), before);
    // A failed job can be retried: a new attempt.
    let k = submit(&s, job("t", "r")).await;
    s.apply(k.id, Command::Cancel).await.unwrap();
    let r = s
        .apply(k.id, Command::Retry { runner: None })
        .await
        .unwrap();
    assert_eq!(r.status, JobStatus::Queued);
    let again = claim_one(&s, "r", "w").await;
    assert_eq!(again.id, k.id);
    // Its events, in order, in its channel.
    let evs = all_events(&s, Some(&k.channel_id)).await;
    let statuses: Vec<_> = evs.iter().map(|e| e.runyard_status.unwrap()).collect();
    assert_eq!(
        statuses,
        vec![
            JobStatus::Queued,
            JobStatus::Cancelled,
            JobStatus::Queued,
            JobStatus::Starting
        ]
    );
    // Versions only grow.
    assert!(again.version > r.version);
}

async fn stale_tokens_are_fenced_off(mut b: Backend) {
    let s = b.store().await;
    let mut j = job("t", "r");
    j.max_attempts = 3;
    let j = submit(&s, j).await;
    let c1 = claim_for(&s, "r", "w1", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let expired = s.expired(100).await.unwrap();
    assert!(expired.iter().any(|e| e.id == j.id));
    let q = s
        .apply(j.id, Command::LeaseExpired { token: None })
        .await
        .unwrap();
    assert_eq!(q.status, JobStatus::Queued);
    let peer = b.peer().await;
    let c2 = claim_one(&peer, "r", "w2").await;
    assert_eq!(c2.attempt, 2);
    assert_ne!(token(&c1), token(&c2));
    // The first worker wakes up: every write of its is refused.
    let e = s
        .apply(
            j.id,
            Command::Finish {
                token: token(&c1),
                outcome: FinishOutcome::Success(None),
            },
        )
        .await
        .unwrap_err();
    assert!(is_stale(&e), "{e}");
    let e = s
        .apply(
            j.id,
            Command::Progress {
                token: Some(token(&c1)),
                progress: Some(0.5),
                details: None,
            },
        )
        .await
        .unwrap_err();
    assert!(is_stale(&e), "{e}");
    let done = run_to_success(&peer, &c2).await;
    assert_eq!(done.status, JobStatus::Success);
    let runs = &done.runs;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome.as_deref(), Some("LOST"));
    assert_eq!(runs[1].worker, "w2");
}

async fn expired_leases_are_reaped_then_fail(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await; // max_attempts = 2
    let live = submit(&s, job("t", "other")).await;
    for attempt in 1..=2 {
        let c = claim_for(&s, "r", "w", Duration::from_millis(1)).await;
        assert_eq!(c.id, j.id);
        assert_eq!(c.attempt, attempt);
        // A lease that is not expired is not reaped.
        if attempt == 1 {
            let e = s
                .apply(live.id, Command::LeaseExpired { token: None })
                .await
                .unwrap_err();
            assert!(is_illegal(&e), "{e}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let exp: Vec<Uuid> = s.expired(100).await.unwrap().iter().map(|j| j.id).collect();
        assert_eq!(exp, vec![j.id]);
        // Every reaper may try; exactly one wins.
        let peer = b.peer().await;
        let (r1, r2) = tokio::join!(
            s.apply(j.id, Command::LeaseExpired { token: None }),
            peer.apply(j.id, Command::LeaseExpired { token: None })
        );
        assert!(r1.is_ok() ^ r2.is_ok(), "exactly one reap succeeds");
    }
    let end = s.get(j.id).await.unwrap().unwrap();
    assert_eq!(end.status, JobStatus::Error);
    assert!(end.error.unwrap().contains("lease expired"));
    assert!(s.expired(100).await.unwrap().is_empty());
}

async fn heartbeats_extend_and_report_lost_jobs(mut b: Backend) {
    let s = b.store().await;
    let a = submit(&s, job("t", "r")).await;
    let c = submit(&s, job("t", "r")).await;
    let claimed = s
        .claim("r", "w", 2, Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let held: Vec<(Uuid, u64)> = claimed.iter().map(|j| (j.id, token(j))).collect();
    let before = s
        .get(a.id)
        .await
        .unwrap()
        .unwrap()
        .lease
        .unwrap()
        .expires_at;
    s.apply(c.id, Command::Cancel).await.unwrap();
    let mut stranger = held.clone();
    stranger.push((Uuid::now_v7(), 999_999));
    let lost = s.heartbeat("w", &stranger, LEASE).await.unwrap();
    let lost: HashSet<Uuid> = lost.into_iter().collect();
    assert!(lost.contains(&c.id), "a cancelled job is lost");
    assert!(!lost.contains(&a.id));
    assert_eq!(lost.len(), 2, "the unknown job is lost too");
    let after = s
        .get(a.id)
        .await
        .unwrap()
        .unwrap()
        .lease
        .unwrap()
        .expires_at;
    assert!(after > before + 1_000_000, "lease extended");
    let claimed_a = claimed.iter().find(|j| j.id == a.id).expect("a claimed");
    assert_eq!(
        s.get(a.id).await.unwrap().unwrap().updated_at,
        claimed_a.updated_at,
        "a heartbeat is lease bookkeeping: the job's updated_at stays"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        s.expired(10).await.unwrap().is_empty(),
        "renewed lease not expired"
    );
    // Someone else's token: lost.
    let lost = s
        .heartbeat("other", &[(a.id, token(&claimed[0]))], LEASE)
        .await
        .unwrap();
    assert_eq!(lost, vec![a.id]);
}

async fn a_job_cancelled_while_it_ran_is_retried_only_once_its_work_stopped(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await;
    let claimed = claim_one(&s, "r", "w").await;
    s.apply(j.id, Command::Cancel).await.unwrap();
    // Its worker's heartbeat is told to stop the work, and renews the lease it kept meanwhile
    // (a stop may outlast a lease); another worker's is only told.
    let cancelled = s.get(j.id).await.unwrap().unwrap();
    let kept = cancelled.lease.clone().unwrap();
    let lost = s.heartbeat("w", &[(j.id, token(&claimed))], LEASE).await;
    assert_eq!(lost.unwrap(), vec![j.id]);
    let after_beat = s.get(j.id).await.unwrap().unwrap();
    let renewed = after_beat.lease.clone().unwrap();
    assert!(renewed.expires_at > kept.expires_at, "{renewed:?} {kept:?}");
    // A write as any other: one that read the job before it conflicts, not overwrites it.
    assert!(
        after_beat.version > cancelled.version,
        "the renewal kept the version"
    );
    let lost = s.heartbeat("w2", &[(j.id, token(&claimed))], LEASE).await;
    assert_eq!(lost.unwrap(), vec![j.id]);
    assert_eq!(s.get(j.id).await.unwrap().unwrap().lease.unwrap(), renewed);
    // Its worker has not said the work stopped: no retry, nothing changed.
    let before = s.get(j.id).await.unwrap().unwrap();
    assert!(s
        .apply(j.id, Command::Retry { runner: None })
        .await
        .is_err());
    // Not the claim's token: refused.
    let other = Command::Stopped {
        token: token(&claimed) + 1,
    };
    assert!(s.apply(j.id, other).await.is_err());
    assert_eq!(s.get(j.id).await.unwrap().unwrap(), before);
    let stopped = Command::Stopped {
        token: token(&claimed),
    };
    let after = s.apply(j.id, stopped).await.unwrap();
    assert_eq!(after.status, JobStatus::Cancelled);
    assert_eq!(after.lease, None);
    assert_eq!(s.get(j.id).await.unwrap().unwrap(), after);
    let retried = s
        .apply(j.id, Command::Retry { runner: None })
        .await
        .unwrap();
    assert_eq!(retried.status, JobStatus::Queued);
    assert_eq!(claim_one(&s, "r", "w2").await.attempt, 2);
}

/// A job cancelled while it ran whose worker let the lease run out (gone, hung) before it said
/// the work stopped: the reaper finds it among the expired leases, and a retry waits for the
/// reaper to give the lease up (`StopLost`, once it has made sure the work is gone). An
/// embedded store reopened finds such a lease expired at once, as an active job's.
async fn a_cancelled_jobs_expired_lease_is_reaped_before_a_retry(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await;
    let c = claim_for(&s, "r", "w", Duration::from_millis(1)).await;
    s.apply(j.id, Command::Cancel).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let exp = s.expired(100).await.unwrap();
    assert_eq!(exp.iter().map(|j| j.id).collect::<Vec<_>>(), vec![j.id]);
    assert_eq!(exp[0].status, JobStatus::Cancelled);
    let before = s.get(j.id).await.unwrap().unwrap();
    assert!(
        s.apply(j.id, Command::Retry { runner: None })
            .await
            .is_err(),
        "no reaper yet"
    );
    let other = Command::StopLost {
        token: token(&c) + 1,
    };
    assert!(s.apply(j.id, other).await.is_err());
    assert_eq!(s.get(j.id).await.unwrap().unwrap(), before);
    let gone = s
        .apply(j.id, Command::StopLost { token: token(&c) })
        .await
        .unwrap();
    assert_eq!((gone.status, gone.lease), (JobStatus::Cancelled, None));
    assert!(s.expired(100).await.unwrap().is_empty());
    let retried = s
        .apply(j.id, Command::Retry { runner: None })
        .await
        .unwrap();
    assert_eq!(retried.status, JobStatus::Queued);
    // A lease that holds is left alone, before and (embedded) after a reopen.
    let k = submit(&s, job("t", "r2")).await;
    claim_one(&s, "r2", "w").await;
    s.apply(k.id, Command::Cancel).await.unwrap();
    assert!(s.expired(100).await.unwrap().iter().all(|e| e.id != k.id));
    drop(s);
    let s = b.reopen().await;
    let exp: Vec<Uuid> = s.expired(100).await.unwrap().iter().map(|j| j.id).collect();
    match b.kind {
        Kind::Embedded(_) => assert_eq!(exp, vec![k.id]),
        Kind::Redis(..) => assert!(exp.is_empty(), "{exp:?}"),
    }
    // Either way, no retry before a reaper gave the lease up.
    assert!(s
        .apply(k.id, Command::Retry { runner: None })
        .await
        .is_err());
}

/// Cancelled jobs whose stop no reaper could confirm yet (their runner's backend out of reach)
/// stay among the expired leases, the oldest; a page of them never keeps an active job whose
/// lease ran out from the reaper: active ones come first.
async fn cancelled_leases_never_hide_active_ones_from_the_reaper(mut b: Backend) {
    let s = b.store().await;
    let short = Duration::from_millis(1);
    let mut cancelled = Vec::new();
    for _ in 0..4 {
        let j = submit(&s, job("t", "r")).await;
        claim_for(&s, "r", "w", short).await;
        s.apply(j.id, Command::Cancel).await.unwrap();
        cancelled.push(j.id);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let live = submit(&s, job("t", "r")).await;
    claim_for(&s, "r", "w", short).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let exp: Vec<Uuid> = s.expired(3).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(exp, [live.id, cancelled[0], cancelled[1]]);
    let all: Vec<Uuid> = s.expired(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(all[0], live.id);
    assert_eq!(all[1..], cancelled[..]);
}

async fn heartbeats_leave_a_finished_attempt_alone(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await;
    let c = claim_one(&s, "r", "w").await;
    let t = token(&c);
    s.apply(
        j.id,
        Command::Started {
            token: t,
            handle: None,
        },
    )
    .await
    .unwrap();
    s.apply(
        j.id,
        Command::Finish {
            token: t,
            outcome: FinishOutcome::Success(None),
        },
    )
    .await
    .unwrap();
    let done = s.get(j.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Success);
    // The worker still beats for it until its slot is freed: not lost (nothing to stop), and
    // the finished job is not written again.
    let lost = s.heartbeat("w", &[(j.id, t)], LEASE).await.unwrap();
    assert!(lost.is_empty(), "a finished attempt is not reported lost");
    let after = s.get(j.id).await.unwrap().unwrap();
    assert_eq!(after.version, done.version, "nothing written");
    // Another worker's beat for it, with another token, is lost.
    let lost = s.heartbeat("w2", &[(j.id, t + 1)], LEASE).await.unwrap();
    assert_eq!(lost, vec![j.id]);
}

async fn a_restart_orphans_leases_only_of_the_sole_holder(mut b: Backend) {
    let s = b.store().await;
    let j = submit(&s, job("t", "r")).await;
    let c = claim_one(&s, "r", "w").await;
    assert_eq!(c.id, j.id);
    assert!(s.expired(10).await.unwrap().is_empty(), "a fresh lease");
    drop(s);
    let s = b.reopen().await;
    let expired: Vec<Uuid> = s.expired(10).await.unwrap().iter().map(|j| j.id).collect();
    let job = s.get(j.id).await.unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Starting,
        "the restart changes no status"
    );
    assert_eq!(job.attempt, 1);
    match b.kind {
        // One process per data dir: whoever held the lease died with the process, so the job is
        // recoverable at once (the reaper requeues it or adopts live work).
        Kind::Embedded(_) => {
            assert_eq!(expired, vec![j.id]);
            let requeued = s
                .apply(j.id, Command::LeaseExpired { token: None })
                .await
                .unwrap();
            assert_eq!(requeued.status, JobStatus::Queued);
        }
        // Other nodes may hold leases and be alive: a node's restart leaves them as they are.
        Kind::Redis(..) => assert!(expired.is_empty(), "{expired:?}"),
    }
}

/// The reaper's fence (before it stops unrecorded work): a fresh token, the lease's holder, its
/// expiry (so it stays in the expired set, oldest first) and the run's worker kept; refused for a
/// live lease or another token. `LeaseExpired` with a token takes only that lease.
async fn a_fence_changes_only_the_token_and_the_requeue_takes_only_its_token(mut b: Backend) {
    let s = b.store().await;
    submit(&s, job("t", "r")).await;
    let live = claim_for(&s, "r", "w1", LEASE).await;
    assert!(
        s.fence(live.id, token(&live)).await.is_err(),
        "a live lease"
    );
    submit(&s, job("t", "r")).await;
    let c = claim_for(&s, "r", "w1", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let f = s.fence(c.id, token(&c)).await.unwrap();
    let (before, after) = (c.lease.clone().unwrap(), f.lease.clone().unwrap());
    assert_ne!(after.token, before.token);
    assert_eq!(
        (&after.worker, after.expires_at),
        (&before.worker, before.expires_at)
    );
    assert_eq!(f.runs.last().unwrap().worker, "w1");
    assert_eq!(
        s.get(c.id).await.unwrap().unwrap().lease,
        Some(after.clone())
    );
    let expired: Vec<Uuid> = s.expired(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(expired, vec![c.id], "still expired, at its old expiry");
    assert!(s.fence(c.id, token(&c)).await.is_err(), "fenced already");
    let hb = s
        .heartbeat("w1", &[(c.id, token(&c))], LEASE)
        .await
        .unwrap();
    assert_eq!(hb, vec![c.id], "the fenced worker cannot renew");
    let stale = Command::LeaseExpired {
        token: Some(token(&c)),
    };
    assert!(is_stale(&s.apply(c.id, stale).await.unwrap_err()));
    let fenced = Command::LeaseExpired {
        token: Some(after.token),
    };
    let q = s.apply(c.id, fenced).await.unwrap();
    assert_eq!(q.status, JobStatus::Queued);
    assert_eq!(q.runs.last().unwrap().worker, "w1");
}

async fn adoption_gives_a_fresh_token(mut b: Backend) {
    let s = b.store().await;
    submit(&s, job("t", "r")).await;
    let c = claim_for(&s, "r", "w1", Duration::from_millis(1)).await;
    s.apply(
        c.id,
        Command::Started {
            token: token(&c),
            handle: None,
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let a = s.adopt(c.id, None, "w2", LEASE).await.unwrap();
    assert_eq!(a.attempt, 1, "same attempt");
    assert_eq!(a.lease.as_ref().unwrap().worker, "w2");
    assert_ne!(token(&a), token(&c));
    assert!(
        s.adopt(c.id, None, "w3", LEASE).await.is_err(),
        "a live lease is not adopted"
    );
    assert!(s.expired(10).await.unwrap().is_empty());
    let e = s
        .apply(
            c.id,
            Command::Finish {
                token: token(&c),
                outcome: FinishOutcome::Success(None),
            },
        )
        .await
        .unwrap_err();
    assert!(is_stale(&e));
    s.apply(
        c.id,
        Command::Finish {
            token: token(&a),
            outcome: FinishOutcome::Success(None),
        },
    )
    .await
    .unwrap();
}

/// The reaper adopts the work of a job whose worker was lost in `STARTING` (its handle never
/// recorded) under the fence it put: an adoption expecting another token (the lost worker's) is
/// refused; under the fence's token it takes the lease, same attempt, the job still `STARTING`;
/// the adopter then records the handle it found, or finishes the attempt from `STARTING`; the
/// lost worker's and the fence's tokens can no longer write.
async fn an_adoption_under_the_fence_takes_only_the_fenced_lease(mut b: Backend) {
    let s = b.store().await;
    let handle = RunHandle {
        kind: runyard_runners::RunKind::Docker,
        id: "runyard-x-1".into(),
        data: serde_json::json!({"container_id": "abc"}),
    };
    for finish in [false, true] {
        submit(&s, job("t", "r")).await;
        let c = claim_for(&s, "r", "w1", Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let f = s.fence(c.id, token(&c)).await.unwrap();
        let e = s
            .adopt(c.id, Some(token(&c)), "w2", LEASE)
            .await
            .unwrap_err();
        assert!(is_stale(&e), "{e}");
        assert_eq!(s.get(c.id).await.unwrap().unwrap().lease, f.lease);
        let a = s.adopt(c.id, Some(token(&f)), "w2", LEASE).await.unwrap();
        assert_eq!((a.status, a.attempt), (JobStatus::Starting, 1));
        assert_eq!(a.lease.as_ref().unwrap().worker, "w2");
        assert_ne!(token(&a), token(&f));
        assert!(
            s.adopt(c.id, Some(token(&f)), "w3", LEASE).await.is_err(),
            "adopted already"
        );
        for old in [token(&c), token(&f)] {
            let late = Command::Finish {
                token: old,
                outcome: FinishOutcome::Success(None),
            };
            assert!(is_stale(&s.apply(c.id, late).await.unwrap_err()));
        }
        let done = if finish {
            let fin = Command::Finish {
                token: token(&a),
                outcome: FinishOutcome::Exited { exit_code: 0 },
            };
            s.apply(c.id, fin).await.unwrap()
        } else {
            let started = Command::Started {
                token: token(&a),
                handle: Some(handle.clone()),
            };
            let r = s.apply(c.id, started).await.unwrap();
            assert_eq!(r.status, JobStatus::Running);
            assert_eq!(r.handle.as_ref(), Some(&handle));
            let fin = Command::Finish {
                token: token(&a),
                outcome: FinishOutcome::Success(None),
            };
            s.apply(c.id, fin).await.unwrap()
        };
        assert_eq!((done.status, done.attempt), (JobStatus::Success, 1));
        assert_eq!(done.runs.len(), 1);
        assert_eq!(done.runs[0].outcome.as_deref(), Some("SUCCESS"));
    }
}

async fn scheduled_jobs_are_promoted_when_due(mut b: Backend) {
    let s = b.store().await;
    let now = now_us();
    let mut due = job("t", "r");
    due.status = JobStatus::Scheduled;
    due.run_at = Some(now + 50_000);
    let mut later = job("t", "r");
    later.status = JobStatus::Scheduled;
    later.run_at = Some(now + 3_600_000_000);
    let due = submit(&s, due).await;
    let later = submit(&s, later).await;
    assert_eq!(s.next_due().await.unwrap(), due.run_at);
    assert!(s.claim("r", "w", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(s.promote_due(100).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(s.promote_due(100).await.unwrap(), 1);
    assert_eq!(
        s.get(due.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(s.next_due().await.unwrap(), later.run_at);
    let c = claim_one(&s, "r", "w").await;
    assert_eq!(c.id, due.id);
    // A failed attempt with attempts left is rescheduled with backoff, then promoted again.
    let f = s
        .apply(
            c.id,
            Command::Finish {
                token: token(&c),
                outcome: FinishOutcome::Failed {
                    message: "boom".into(),
                    exit_code: Some(3),
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(f.status, JobStatus::Scheduled);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.promote_due(100).await.unwrap(), 1);
    let c2 = claim_one(&s, "r", "w").await;
    assert_eq!((c2.id, c2.attempt), (due.id, 2));
    // Cancelling a scheduled job takes it off the schedule.
    s.apply(later.id, Command::Cancel).await.unwrap();
    assert_eq!(s.next_due().await.unwrap(), None);
}

async fn events_are_ordered_and_exclusive(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let mut jobs = Vec::new();
    for i in 0..6 {
        let mut j = job("t", "r");
        j.channel_id = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        jobs.push(submit(if i % 2 == 0 { &s } else { &peer }, j).await);
    }
    for _ in 0..6 {
        let c = claim_one(&s, "r", "w").await;
        s.apply(
            c.id,
            Command::Progress {
                token: Some(token(&c)),
                progress: Some(0.5),
                details: None,
            },
        )
        .await
        .unwrap();
        run_to_success(&peer, &c).await;
    }
    // 6 jobs x (QUEUED, STARTING, progress, RUNNING, SUCCESS).
    let all = all_events(&s, None).await;
    assert_eq!(all.len(), 30);
    let ids: HashSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 30, "ids are unique (paging is exclusive)");
    for j in &jobs {
        let kinds: Vec<String> = all
            .iter()
            .filter(|e| e.job_id == j.id.to_string())
            .map(|e| match e.runyard_status {
                Some(st) if e.kind == "status" => st.to_string(),
                _ => e.kind.clone(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["QUEUED", "STARTING", "progress", "RUNNING", "SUCCESS"],
            "events of one job in order"
        );
    }
    // A channel holds its own events, with the ids of the global stream.
    let even = all_events(&peer, Some("even")).await;
    assert_eq!(even.len(), 15);
    assert!(even.iter().all(|e| e.channel_id == "even"));
    let global_ids: Vec<&str> = all
        .iter()
        .filter(|e| e.channel_id == "even")
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        even.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        global_ids
    );
    // From an id: strictly after it.
    let mid = &all[10].id;
    let rest = s.events(None, Some(mid), 100).await.unwrap();
    assert_eq!(rest.len(), 19);
    assert_eq!(rest[0].id, all[11].id);
    let last = &all[29].id;
    assert!(s.events(None, Some(last), 100).await.unwrap().is_empty());
    assert!(s
        .events(Some("nobody"), None, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.events(None, Some("not an id"), 10).await,
        Err(StoreError::BadInput(_))
    ));
    // Superset's shape.
    let e = &even[0];
    assert_eq!(e.status, "pending");
    assert_eq!(even.last().unwrap().status, "done");
}

async fn trimmed_events_yield_a_resync(mut b: Backend) {
    let s = b.store_with(event_limits(5, 3)).await;
    let mut first = None;
    for _ in 0..6 {
        let mut j = job("t", "r");
        j.channel_id = "c".into();
        let j = submit(&s, j).await;
        s.apply(j.id, Command::Cancel).await.unwrap();
        if first.is_none() {
            first = Some(s.events(None, None, 1).await.unwrap()[0].id.clone());
        }
    }
    s.retention(0).await.unwrap();
    let first = first.unwrap();
    let page = s.events(None, Some(&first), 100).await.unwrap();
    assert_eq!(page[0].kind, "resync", "never a silent gap");
    assert!(page.len() <= 6, "at most the kept events after the resync");
    // Reading on from the resync id: no second resync.
    let next = s.events(None, Some(&page[0].id), 100).await.unwrap();
    assert!(next.iter().all(|e| e.kind != "resync"));
    assert_eq!(next.len(), page.len() - 1);
    // From the start: the kept events, no resync.
    let kept = s.events(None, None, 100).await.unwrap();
    assert_eq!(kept.len(), 5, "the global limit");
    assert!(kept.iter().all(|e| e.kind != "resync"));
    // Up to date: no resync.
    let last = kept.last().unwrap().id.clone();
    assert!(s.events(None, Some(&last), 100).await.unwrap().is_empty());
    // The channel is bounded too, and says so.
    let ch = s.events(Some("c"), Some(&first), 100).await.unwrap();
    assert_eq!(ch[0].kind, "resync");
    assert_eq!(ch.len(), 4);
}

/// A channel trimmed to its limit leaves the global stream as it was (within the global limit):
/// an all-channels reader behind the channel's trim gets every event, no silent hole (the
/// embedded store used to delete the channel's rows from the one table both read). The
/// channel's readers see its newest `channel_limit` events, after a resync when behind.
async fn a_channel_trim_leaves_the_global_stream_whole(mut b: Backend) {
    let s = b.store_with(event_limits(1000, 3)).await;
    let first = {
        let j = submit(&s, job("t", "r")).await;
        s.events(Some(&j.channel_id), None, 1).await.unwrap()[0]
            .id
            .clone()
    };
    for i in 0..12 {
        let mut j = job("t", "r");
        j.channel_id = if i % 2 == 0 { "a" } else { "b" }.into();
        let j = submit(&s, j).await;
        s.apply(j.id, Command::Cancel).await.unwrap();
    }
    let before = s.events(None, Some(&first), 1000).await.unwrap();
    assert_eq!(before.len(), 24, "two events per job");
    s.retention(0).await.unwrap();
    let after = s.events(None, Some(&first), 1000).await.unwrap();
    assert_eq!(
        after, before,
        "the global stream is whole after the channels' trims"
    );
    for ch in ["a", "b"] {
        let page = s.events(Some(ch), Some(&first), 1000).await.unwrap();
        assert_eq!(page[0].kind, "resync", "{ch}: {page:?}");
        assert_eq!(page.len(), 4, "{ch}: a resync and the 3 kept");
        let all: Vec<_> = before.iter().filter(|e| e.channel_id == ch).collect();
        let kept: Vec<_> = page[1..].iter().collect();
        assert_eq!(kept, all[all.len() - 3..].to_vec(), "{ch}: its newest");
        // Without a cursor: the kept ones, no resync.
        let fresh = s.events(Some(ch), None, 1000).await.unwrap();
        assert_eq!(fresh.iter().collect::<Vec<_>>(), kept, "{ch}");
    }
}

async fn logs_are_sequenced_and_bounded(mut b: Backend) {
    let s = b
        .store_with(StoreSettings {
            log_lines_per_job: 4,
            ..test_settings()
        })
        .await;
    let j = submit(&s, job("t", "r")).await;
    let now = now_us();
    s.append_logs(
        j.id,
        vec![
            (LogStream::Stdout, now, "one".into()),
            (LogStream::Stderr, now, "two | with a bar".into()),
            (LogStream::Job, now, "".into()),
        ],
    )
    .await
    .unwrap();
    let l = s.logs(j.id, 0, 100).await.unwrap();
    assert_eq!(l.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(l[1].line, "two | with a bar");
    assert_eq!(l[1].stream, LogStream::Stderr);
    assert_eq!(l[2].line, "");
    assert_eq!(l[0].ts, now);
    s.append_logs(
        j.id,
        (0..3)
            .map(|i| (LogStream::Stdout, now, format!("more {i}")))
            .collect(),
    )
    .await
    .unwrap();
    // Only the newest 4 are kept.
    let l = s.logs(j.id, 0, 100).await.unwrap();
    assert_eq!(
        l.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    let l = s.logs(j.id, 4, 1).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].seq, l[0].line.as_str()), (5, "more 1"));
    assert!(s.logs(j.id, 6, 10).await.unwrap().is_empty());
    assert!(s.logs(Uuid::now_v7(), 0, 10).await.unwrap().is_empty());
}

async fn retention_deletes_finished_jobs(mut b: Backend) {
    let s = b.store().await;
    let mut old = job("t", "r");
    old.idempotency_key = Some("k1".into());
    let old = submit(&s, old).await;
    s.append_logs(old.id, vec![(LogStream::Stdout, now_us(), "x".into())])
        .await
        .unwrap();
    let c = claim_one(&s, "r", "w").await;
    run_to_success(&s, &c).await;
    let running = submit(&s, job("t", "r")).await;
    let cut = now_us() + 1;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let fresh = submit(&s, job("t", "r")).await;
    s.apply(fresh.id, Command::Cancel).await.unwrap();
    let r = s.retention(cut).await.unwrap();
    assert_eq!(r.jobs, 1);
    assert!(s.get(old.id).await.unwrap().is_none());
    assert!(s.logs(old.id, 0, 10).await.unwrap().is_empty());
    assert!(
        s.get(running.id).await.unwrap().is_some(),
        "unfinished jobs stay"
    );
    assert!(
        s.get(fresh.id).await.unwrap().is_some(),
        "recently finished jobs stay"
    );
    let listed = s
        .list(ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.jobs.len(), 2);
    let done = s
        .list(ListQuery {
            limit: 100,
            status: Some(JobStatus::Success),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(done.jobs.is_empty());
    // The idempotency key is free again.
    let mut again = job("t", "r");
    again.idempotency_key = Some("k1".into());
    assert!(s.submit(again).await.unwrap().created);
    assert_eq!(s.retention(cut).await.unwrap().jobs, 0);
}

fn file(hash: &str) -> FileRef {
    FileRef {
        hash: hash.into(),
        size: 3,
        mimetype: "text/plain".into(),
        name: "a.txt".into(),
        metadata: json!({}),
        attempt: None,
    }
}

async fn file_references_follow_jobs(mut b: Backend) {
    let s = b.store().await;
    let h1 = "0cc175b9c0f1b6a831c399e269772661";
    let h2 = "92eb5ffee6ae2fec3ad71c777531578f";
    let mut a = job("t", "r");
    a.files.insert("inputs".into(), vec![file(h1)]);
    let a = submit(&s, a).await;
    let b2 = submit(&s, job("t", "r")).await;
    s.apply(
        b2.id,
        Command::AttachFile {
            property: "inputs".into(),
            file: file(h2),
            by_attempt: None,
        },
    )
    .await
    .unwrap();
    let hashes = s.file_hashes().await.unwrap();
    assert_eq!(
        hashes,
        [h1.to_string(), h2.to_string()].into_iter().collect()
    );
    s.apply(a.id, Command::Cancel).await.unwrap();
    s.retention(now_us() + 1).await.unwrap();
    let hashes = s.file_hashes().await.unwrap();
    assert_eq!(hashes, [h2.to_string()].into_iter().collect());
    // A job may not attach files once it is over.
    s.apply(b2.id, Command::Cancel).await.unwrap();
    let e = s
        .apply(
            b2.id,
            Command::AttachFile {
                property: "inputs".into(),
                file: file(h1),
                by_attempt: None,
            },
        )
        .await
        .unwrap_err();
    assert!(is_illegal(&e));
}

/// A failed attempt's uploads are the job's outputs until the next attempt starts: then they go,
/// with the job's references to their blobs (blob GC may take one no other job holds), while the
/// client's inputs stay.
async fn a_new_attempt_drops_the_last_ones_uploads(mut b: Backend) {
    let s = b.store().await;
    let input = "0cc175b9c0f1b6a831c399e269772661";
    let out = "92eb5ffee6ae2fec3ad71c777531578f";
    let shared = "4a8a08f09d37b73795649038408b5f33";
    let mut j = job("t", "r-up");
    j.files.insert("inputs".into(), vec![file(input)]);
    let j = submit(&s, j).await;
    let mut other = job("t", "r-other");
    other.files.insert("inputs".into(), vec![file(shared)]);
    submit(&s, other).await;
    let t = token(&claim_one(&s, "r-up", "w").await);
    let started = Command::Started {
        token: t,
        handle: None,
    };
    s.apply(j.id, started).await.unwrap();
    for h in [out, shared, input] {
        let attach = Command::AttachFile {
            property: "outputs".into(),
            file: file(h),
            by_attempt: Some(1),
        };
        s.apply(j.id, attach).await.unwrap();
    }
    let failed = FinishOutcome::Failed {
        message: "boom".into(),
        exit_code: Some(1),
    };
    let cmd = Command::Finish {
        token: t,
        outcome: failed,
    };
    let after = s.apply(j.id, cmd).await.unwrap();
    assert_eq!(after.status, JobStatus::Scheduled);
    assert_eq!(
        after.files["outputs"].len(),
        3,
        "kept until the next attempt"
    );
    assert_eq!(after.files["outputs"][0].attempt, Some(1));
    let all = [input, out, shared].map(String::from).into_iter().collect();
    assert_eq!(s.file_hashes().await.unwrap(), all);
    s.apply(j.id, Command::Promote).await.unwrap();
    let second = claim_one(&s, "r-up", "w").await;
    assert_eq!(second.attempt, 2);
    // The failed attempt's error lasts on its run record (stored and read back).
    let stored = s.get(j.id).await.unwrap().expect("stored");
    assert_eq!(stored.error, None);
    assert_eq!(stored.runs[0].error.as_deref(), Some("boom"));
    assert_eq!(stored.runs[1].error, None);
    let inputs_only: std::collections::BTreeMap<_, _> =
        [("inputs".to_string(), vec![file(input)])].into();
    assert_eq!(second.files, inputs_only);
    assert_eq!(
        s.get(j.id).await.unwrap().expect("stored").files,
        inputs_only
    );
    // `out` went; `shared` is another job's input, `input` this job's own.
    let left = [input, shared].map(String::from).into_iter().collect();
    assert_eq!(s.file_hashes().await.unwrap(), left);
    // Attempt 1's upload arriving late (its bytes streamed while the job was claimed again) is
    // refused: it never becomes attempt 2's output.
    let late = Command::AttachFile {
        property: "outputs".into(),
        file: file(out),
        by_attempt: Some(1),
    };
    let e = s.apply(j.id, late).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Transition(TransitionError::StaleAttempt)),
        "{e:?}"
    );
    assert_eq!(
        s.get(j.id).await.unwrap().expect("stored").files,
        inputs_only
    );
}

async fn notices_reach_every_handle(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let mut mine = s.subscribe();
    let mut theirs = peer.subscribe();
    // The peer reads events, as a long poll does before it waits (Redis: `Events` crosses to
    // the processes only while some process reads events, see src/store/redis/events.rs).
    peer.events(None, None, 1).await.unwrap();
    // Until the peer hears this handle (Redis: its relay subscribes in the background; a notice
    // sent before is not heard): probe jobs, at most 100 x 100 ms.
    let mut heard = false;
    for _ in 0..100 {
        submit(&s, job("t", "probe")).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, theirs.recv()).await {
            if matches!(n, Notice::Queued { ref runner } if runner == "probe") {
                heard = true;
                break;
            }
        }
        if heard {
            break;
        }
    }
    assert!(heard, "the peer never heard a probe's notice");
    while mine.try_recv().is_ok() {}
    while theirs.try_recv().is_ok() {}
    let j = submit(&s, job("t", "runner-x")).await;
    s.apply(j.id, Command::Cancel).await.unwrap();
    for rx in [&mut mine, &mut theirs] {
        let mut queued = false;
        let mut cancelled = false;
        let mut events = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(queued && cancelled && events) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(Notice::Queued { runner })) => queued |= runner == "runner-x",
                Ok(Ok(Notice::Changed { job_id, status })) => {
                    cancelled |= job_id == j.id && status == JobStatus::Cancelled
                }
                Ok(Ok(Notice::Events)) => events = true,
                Ok(Err(e)) => panic!("notice channel: {e}"),
                Err(_) => {
                    panic!("notices missing: queued {queued} cancelled {cancelled} events {events}")
                }
            }
        }
    }
}

/// A launch that failed for lack of host resources: SCHEDULED after a short backoff, the attempt
/// given back (`max_attempts` + 1), then run as usual.
async fn host_failures_reschedule_and_give_the_attempt_back(mut b: Backend) {
    let s = b.store().await;
    let mut j = job("t", "r");
    j.max_attempts = 1;
    let j = submit(&s, j).await;
    let c = claim_one(&s, "r", "w").await;
    let host = |t| Command::HostFailure {
        token: t,
        message: "cannot start `sh`: Too many open files (os error 24)".into(),
    };
    let e = s.apply(c.id, host(token(&c) + 1)).await.unwrap_err();
    assert!(is_stale(&e), "{e}");
    let f = s.apply(c.id, host(token(&c))).await.unwrap();
    assert_eq!(f.status, JobStatus::Scheduled);
    assert_eq!((f.attempt, f.max_attempts), (1, 2));
    assert!(f.lease.is_none());
    let due = f.run_at.expect("run_at");
    let delay = due - f.updated_at;
    assert!((375_000..=625_000).contains(&delay), "backoff {delay} us");
    assert_eq!(s.next_due().await.unwrap(), Some(due));
    // Stored as it was applied, and not claimable before it is due.
    let got = s.get(j.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.max_attempts), (JobStatus::Scheduled, 2));
    assert_eq!(
        got.runs.last().unwrap().outcome.as_deref(),
        Some("HOST_FAILURE")
    );
    assert!(s.claim("r", "w", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_micros(
        (due - now_us()).max(0) as u64 + 20_000,
    ))
    .await;
    assert_eq!(s.promote_due(100).await.unwrap(), 1);
    let c2 = claim_one(&s, "r", "w").await;
    assert_eq!((c2.id, c2.attempt), (j.id, 2));
    let done = run_to_success(&s, &c2).await;
    assert_eq!(done.status, JobStatus::Success);
}

// ---- webhook deliveries (src/store/deliveries.rs, docs/notifications.md) ----

fn attempt(status: u16) -> runyard::store::deliveries::Attempt {
    use runyard::store::deliveries::AttemptOutcome::{Accepted, Failed};
    runyard::store::deliveries::Attempt {
        at: now_us(),
        by: Some(runyard::store::deliveries::this_node().into()),
        outcome: Some(if status == 200 { Accepted } else { Failed }),
        status: Some(status),
        error: (status != 200).then(|| format!("the receiver answered {status}")),
        duration_ms: Some(3),
    }
}

/// The only delivery of `job`, once a listing shows its last attempt as `want` (bounded).
async fn delivery_once(
    s: &Arc<dyn Store>,
    job: Uuid,
    want: runyard::store::deliveries::AttemptOutcome,
) -> runyard::store::deliveries::Delivery {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = s.deliveries(job, 10).await.unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        if d[0].log.last().map(|a| a.outcome()) == Some(want) {
            return d[0].clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "no {want:?} attempt: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A claim is its attempt's write-ahead record. While the hold lasts the listing shows the
/// attempt in flight (by this node); a claim that runs out without a record (the sender was lost
/// after the receiver may have got the request) shows as an unknown attempt, and stays in the log
/// (counted) when another process claims the delivery again and records its answer; the late
/// record of the lost claim is refused. A claim held at a restart ends the same way.
async fn webhook_attempts_never_recorded_show_as_unknown(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::AttemptOutcome::{Accepted, InFlight, Unknown};
    use runyard::store::deliveries::{
        this_node, ClaimLimits, DeliveryState, Outcome, UNKNOWN_ERROR,
    };
    let s = b.store().await;
    let peer = b.peer().await;
    let notified = || {
        let mut j = job("wh.lost", "r");
        j.notify = Some(NotifySpec {
            url: "https://hooks.example.com/lost".into(),
            events: vec![NotifyEvent::Status],
        });
        j
    };
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(30);
    // The QUEUED status event's delivery, claimed and never recorded.
    let j = submit(&s, notified()).await;
    let before = now_us();
    let first = s
        .deliveries_claim(10, short, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(d[0].attempts, 1, "the claimed attempt counts: {d:?}");
    let a = &d[0].log[..];
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].outcome(), a[0].by.as_deref(), a[0].status, &a[0].error),
        (InFlight, Some(this_node()), None, &None)
    );
    assert!(a[0].at >= before - 1_000_000 && a[0].at <= now_us() + 1_000_000);
    let started = a[0].at;
    // The hold runs out: the sender is lost as far as anyone can tell.
    let d = delivery_once(&s, j.id, Unknown).await;
    assert_eq!(d.attempts, 1);
    assert_eq!(d.log[0].error.as_deref(), Some(UNKNOWN_ERROR));
    // Another process claims it again: the lost attempt is in the log, counted.
    let again = peer
        .deliveries_claim(10, long, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1, "the lost attempt counts");
    assert_eq!(
        s.delivery_record(&first[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        None,
        "the lost claim's late record is refused"
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    let outcomes = |d: &runyard::store::deliveries::Delivery| {
        d.log.iter().map(|a| a.outcome()).collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&d[0]), vec![Unknown, InFlight], "{d:?}");
    assert_eq!(d[0].attempts, 2);
    assert_eq!(
        peer.delivery_record(&again[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        Some(DeliveryState::Delivered)
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(outcomes(&d[0]), vec![Unknown, Accepted], "{d:?}");
    assert_eq!(d[0].attempts, 2);
    assert_eq!(d[0].log[0].at, started, "the lost attempt keeps its start");
    assert_eq!(d[0].log[1].status, Some(200));
    let public = d[0].to_public();
    assert_eq!(public["attempt_count"], 2);
    assert_eq!(public["attempts"][0]["outcome"], "unknown", "{public:#}");
    assert_eq!(public["attempts"][0]["by"], this_node());
    assert_eq!(public["attempts"][0]["error"], UNKNOWN_ERROR);
    assert!(public["attempts"][0]["duration_ms"].is_null());
    assert_eq!(public["attempts"][1]["outcome"], "accepted");
    // A claim held when its process stops: after the restart its attempt is unknown, and the
    // delivery is claimed again (embedded: at once; Redis: when the hold runs out).
    let k = submit(&s, notified()).await;
    let held = s
        .deliveries_claim(10, short, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].delivery.job_id, k.id);
    drop((s, peer));
    let s = b.reopen().await;
    let d = delivery_once(&s, k.id, Unknown).await;
    assert_eq!(d.attempts, 1, "{d:?}");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let c = s
            .deliveries_claim(10, long, ClaimLimits::unlimited())
            .await
            .unwrap();
        if !c.is_empty() {
            break c;
        }
        assert!(std::time::Instant::now() < until, "not claimable again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again[0].delivery.attempts, 1);
    let d = s.deliveries(k.id, 10).await.unwrap();
    assert_eq!(outcomes(&d[0]), vec![Unknown, InFlight], "{d:?}");
}

/// A sender paused past its claim's hold (its process stopped, say) whose record arrives before
/// any other claim took the delivery: the record is refused all the same, as a late record
/// after another claim is (the docs: "a record from a process whose hold ran out is refused").
/// Its attempt shows as unknown, and the next claim attempts the delivery again. Before, the
/// record was taken, so a timed-out attempt the receiver had accepted was logged as failed and
/// retried, or an accepted one logged while another process may have been sending it.
async fn webhook_records_after_the_hold_ran_out_are_refused(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::AttemptOutcome::{Accepted, Unknown};
    use runyard::store::deliveries::{ClaimLimits, DeliveryState, Outcome};
    let s = b.store().await;
    let mut j = job("wh.paused", "r");
    j.notify = Some(NotifySpec {
        url: "https://hooks.example.com/paused".into(),
        events: vec![NotifyEvent::Status],
    });
    let j = submit(&s, j).await;
    let first = s
        .deliveries_claim(10, Duration::from_millis(300), ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The hold runs out with nobody else claiming the delivery meanwhile.
    delivery_once(&s, j.id, Unknown).await;
    assert_eq!(
        s.delivery_record(&first[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        None,
        "a record after the claim's hold ran out is refused"
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(d[0].state, DeliveryState::Pending, "{d:?}");
    let outcomes = |d: &runyard::store::deliveries::Delivery| {
        d.log.iter().map(|a| a.outcome()).collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&d[0]), vec![Unknown], "{d:?}");
    assert_eq!(d[0].attempts, 1);
    // Attempted again: the lost attempt stays in the log, counted.
    let again = s
        .deliveries_claim(10, Duration::from_secs(30), ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    assert_eq!(
        s.delivery_record(&again[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        Some(DeliveryState::Delivered)
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(outcomes(&d[0]), vec![Unknown, Accepted], "{d:?}");
    assert_eq!(d[0].attempts, 2);
}

async fn webhook_deliveries_follow_events_and_claims_are_fenced(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::{ClaimLimits, DeliveryState, Outcome};
    let s = b.store().await;
    let peer = b.peer().await;
    let hold = Duration::from_secs(30);
    let hour = Duration::from_secs(3600);
    let mut j = job("wh.a", "r");
    j.notify = Some(NotifySpec {
        url: "https://hooks.example.com/x".into(),
        events: vec![NotifyEvent::Terminal],
    });
    let j = submit(&s, j).await;
    let plain = submit(&s, job("wh.a", "r")).await;
    assert!(
        s.deliveries(j.id, 10).await.unwrap().is_empty(),
        "QUEUED is not terminal"
    );
    let c = claim_one(&s, "r", "w").await;
    assert_eq!(c.id, j.id);
    run_to_success(&s, &c).await;
    // Written with the terminal event, carrying it.
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].state, DeliveryState::Pending);
    assert_eq!(d[0].url, "https://hooks.example.com/x");
    let evs = all_events(&s, Some(&j.channel_id)).await;
    let done = evs.last().expect("events");
    assert_eq!(done.runyard_status, Some(JobStatus::Success));
    assert_eq!(d[0].event_id, done.id);
    let body: runyard::job::Event = serde_json::from_str(&d[0].body()).unwrap();
    assert_eq!(&body, done, "the body is the event, with its id");
    // Claimed by one handle at a time.
    let a = s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    // What a claim gives the sender to POST is the event's JSON too, whatever its stored form.
    let posted: runyard::job::Event = serde_json::from_str(&a[0].delivery.body()).unwrap();
    assert_eq!(&posted, done, "the claimed body is the event, with its id");
    assert!(peer
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap()
        .is_empty());
    // A record under another token is refused; the holder's is taken.
    let mut stale = a[0].clone();
    stale.token ^= 1;
    let failed = Outcome::Failed {
        retry_in: Duration::ZERO,
        horizon: hour,
    };
    assert_eq!(
        peer.delivery_record(&stale, attempt(500), failed)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.delivery_record(&a[0], attempt(500), failed)
            .await
            .unwrap(),
        Some(DeliveryState::Pending)
    );
    // Due again at once: the peer claims it; the first claim can no longer record.
    let again = peer
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    assert_eq!(
        s.delivery_record(&a[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        peer.delivery_record(&again[0], attempt(200), Outcome::Delivered)
            .await
            .unwrap(),
        Some(DeliveryState::Delivered)
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(d[0].state, DeliveryState::Delivered);
    assert_eq!(d[0].attempts, 2);
    assert_eq!(
        d[0].log.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(500), Some(200)]
    );
    assert!(s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.deliveries_next_due().await.unwrap(), None);
    assert!(
        s.deliveries(plain.id, 10).await.unwrap().is_empty(),
        "no webhook, no delivery"
    );
    // Past the horizon: given up.
    let mut k = job("wh.a", "r");
    k.notify = Some(NotifySpec {
        url: "https://hooks.example.com/y".into(),
        events: vec![NotifyEvent::Status],
    });
    let k = submit(&s, k).await;
    let c = s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(c.len(), 1, "the QUEUED status event");
    assert_eq!(c[0].delivery.job_id, k.id);
    let late = Outcome::Failed {
        retry_in: 2 * hour,
        horizon: hour,
    };
    assert_eq!(
        s.delivery_record(&c[0], attempt(503), late).await.unwrap(),
        Some(DeliveryState::GivenUp)
    );
    // Ended deliveries are trimmed.
    assert_eq!(s.deliveries_trim(now_us() + 1_000_000).await.unwrap(), 2);
    assert!(s.deliveries(j.id, 10).await.unwrap().is_empty());
    assert!(s.deliveries(k.id, 10).await.unwrap().is_empty());
}

/// A job's deliveries, paged oldest first from `after` and newest first before `before`: every
/// one is reached either way, one page at a time, and other jobs' deliveries never show.
async fn webhook_deliveries_are_paged_both_ways(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::DeliveryPage::{After, Before};
    let s = b.store().await;
    let notified = |t: &str| {
        let mut j = job(t, "r");
        j.notify = Some(NotifySpec {
            url: "https://hooks.example.com/x".into(),
            events: vec![NotifyEvent::Status],
        });
        j
    };
    // Two jobs' status events interleaved: QUEUED, then STARTING, RUNNING, SUCCESS.
    let j = submit(&s, notified("wh.p")).await;
    let other = submit(&s, notified("wh.p")).await;
    let c = claim_one(&s, "r", "w").await;
    assert_eq!(c.id, j.id);
    run_to_success(&s, &c).await;
    let c = claim_one(&s, "r", "w").await;
    run_to_success(&s, &c).await;
    let all: Vec<u64> = s
        .deliveries(j.id, 1000)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "oldest first: {all:?}");
    // Oldest first, two at a time from `after`.
    let (mut got, mut after) = (Vec::new(), 0);
    loop {
        let page = s.deliveries_page(j.id, After(after), 2).await.unwrap();
        got.extend(page.iter().map(|d| d.id));
        assert!(page.iter().all(|d| d.job_id == j.id));
        match page.last() {
            Some(d) if page.len() == 2 => after = d.id,
            _ => break,
        }
    }
    assert_eq!(got, all);
    // Newest first, two at a time before `before`; the first is the terminal event's.
    let first = s.deliveries_page(j.id, Before(None), 1).await.unwrap();
    let ev: runyard::job::Event = serde_json::from_str(&first[0].body()).unwrap();
    assert_eq!(ev.runyard_status, Some(JobStatus::Success));
    let (mut back, mut before) = (Vec::new(), None);
    loop {
        let page = s.deliveries_page(j.id, Before(before), 2).await.unwrap();
        back.extend(page.iter().map(|d| d.id));
        match page.last() {
            Some(d) if page.len() == 2 => before = Some(d.id),
            _ => break,
        }
    }
    back.reverse();
    assert_eq!(back, all);
    // Past either end: nothing. A cursor beyond any id is not an error.
    let last = *all.last().unwrap();
    assert!(s
        .deliveries_page(j.id, After(last), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .deliveries_page(j.id, Before(Some(all[0])), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.deliveries_page(j.id, Before(Some(u64::MAX)), 1)
            .await
            .unwrap()[0]
            .id,
        last
    );
    assert!(s
        .deliveries_page(j.id, After(u64::MAX), 1)
        .await
        .unwrap()
        .is_empty());
    assert!(!s.deliveries(other.id, 10).await.unwrap().is_empty());
}

/// A claim passes over the deliveries of an endpoint at its cap (`notify.per_endpoint`): a later
/// delivery of another endpoint is claimed instead, the passed-over ones stay due and are claimed
/// later (by this handle or another), each exactly once. Endpoints are the URL up to its query.
async fn webhook_claims_pass_over_endpoints_at_their_cap(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::ClaimLimits;
    use std::collections::{BTreeSet, HashMap};
    let s = b.store().await;
    let peer = b.peer().await;
    let hold = Duration::from_secs(30);
    let slow = "https://slow.example.com/hook";
    let with_url = |url: String| {
        let mut j = job("wh.cap", "r");
        j.notify = Some(NotifySpec {
            url,
            events: vec![NotifyEvent::Status],
        });
        j
    };
    // QUEUED events for one endpoint (its queries differ), then one for another.
    const SLOW: usize = 120;
    let mut ids = Vec::new();
    for i in 0..SLOW {
        ids.push(submit(&s, with_url(format!("{slow}?job={i}"))).await.id);
    }
    let fast = submit(&s, with_url("https://fast.example.com/hook".into())).await;
    assert_eq!(s.deliveries_pending().await.unwrap(), SLOW as u64 + 1);
    let capped = |busy: usize| ClaimLimits {
        per_endpoint: 2,
        busy: HashMap::from([(slow.to_string(), busy)]),
    };
    // One attempt at the slow endpoint in flight, two allowed: one more of it, and the fast one
    // though it is due last.
    let first = s.deliveries_claim(10, hold, capped(1)).await.unwrap();
    let jobs: BTreeSet<_> = first.iter().map(|c| c.delivery.job_id).collect();
    assert_eq!(jobs, BTreeSet::from([ids[0], fast.id]), "{first:?}");
    // At its cap: nothing of it, the rest stays due.
    assert!(s
        .deliveries_claim(10, hold, capped(2))
        .await
        .unwrap()
        .is_empty());
    let next_due = s.deliveries_next_due().await.unwrap().expect("still due");
    assert!(next_due <= now_us() + 1_000_000, "due now, not held");
    // Another handle, nothing in flight: two (the cap counts within one claim too).
    let second = peer
        .deliveries_claim(
            10,
            hold,
            ClaimLimits {
                per_endpoint: 2,
                busy: HashMap::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 2, "{second:?}");
    let rest = s
        .deliveries_claim(1000, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(rest.len(), SLOW - 3, "the rest, at once");
    // Oldest due first.
    let order = |c: &[runyard::store::deliveries::Claimed]| {
        c.iter().map(|c| c.delivery.job_id).collect::<Vec<_>>()
    };
    assert_eq!(order(&second), ids[1..3], "{second:?}");
    assert_eq!(order(&rest), ids[3..], "{rest:?}");
    // Each delivery claimed once: none lost, none doubled.
    let mut all: Vec<_> = first
        .iter()
        .chain(&second)
        .chain(&rest)
        .map(|c| c.delivery.id)
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), SLOW + 1);
    assert!(s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.deliveries_pending().await.unwrap(),
        SLOW as u64 + 1,
        "claimed is still pending"
    );
}

/// A claim looks past every endpoint at its cap, however many are due first (on Redis: as many
/// entries of `P:dlv:eps` as endpoints at their cap, and one more): three endpoints at their cap
/// (one attempt each) due before a free one, and one more at its cap not yet due (its delivery
/// held by a claim). The free endpoint's deliveries are claimed, one per claim (then it is at
/// its cap too); the capped ones stay due and are claimed, oldest due first, once they have
/// room; the held one is not claimed before its hold ends.
async fn webhook_claims_look_past_several_endpoints_at_their_cap(mut b: Backend) {
    use runyard::notify::{NotifyEvent, NotifySpec};
    use runyard::store::deliveries::{ClaimLimits, Claimed};
    use std::collections::HashMap;
    let s = b.store().await;
    let hold = Duration::from_secs(30);
    let url = |name: &str| format!("https://{name}.example.com/hook");
    let notifying = |name: &str| {
        let mut j = job("wh.look", "r");
        j.notify = Some(NotifySpec {
            url: url(name),
            events: vec![NotifyEvent::Status],
        });
        j
    };
    let jobs = |c: &[Claimed]| c.iter().map(|c| c.delivery.job_id).collect::<Vec<_>>();
    // At their cap: these endpoints have one attempt in flight each, one allowed.
    let capped = |names: &[&str]| ClaimLimits {
        per_endpoint: 1,
        busy: names.iter().map(|n| (url(n), 1)).collect(),
    };
    // The endpoint not yet due: its one delivery claimed, held for 30 s.
    let later = submit(&s, notifying("later")).await;
    let held = s
        .deliveries_claim(1, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(jobs(&held), [later.id]);
    // Two deliveries of each of the three capped endpoints, due first; two of the free one.
    let mut first = Vec::new();
    let mut second = Vec::new();
    for round in [&mut first, &mut second] {
        for name in ["a", "b", "c"] {
            round.push(submit(&s, notifying(name)).await.id);
        }
    }
    let free = [
        submit(&s, notifying("free")).await.id,
        submit(&s, notifying("free")).await.id,
    ];
    assert_eq!(s.deliveries_pending().await.unwrap(), 9);

    // All four at their cap: the free endpoint's first delivery, past the three due before it.
    let got = s
        .deliveries_claim(10, hold, capped(&["a", "b", "c", "later"]))
        .await
        .unwrap();
    assert_eq!(jobs(&got), [free[0]], "{got:?}");
    // The three due ones still at their cap (the free one's attempt ended): its second.
    let got = s
        .deliveries_claim(10, hold, capped(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(jobs(&got), [free[1]], "{got:?}");
    assert!(s
        .deliveries_claim(10, hold, capped(&["a", "b", "c"]))
        .await
        .unwrap()
        .is_empty());
    // Room at every endpoint: one of each capped endpoint, oldest due first; then the rest. The
    // held delivery is not due.
    let got = s
        .deliveries_claim(
            10,
            hold,
            ClaimLimits {
                per_endpoint: 1,
                busy: HashMap::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(jobs(&got), first, "{got:?}");
    let got = s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(jobs(&got), second, "{got:?}");
    assert!(s
        .deliveries_claim(10, hold, ClaimLimits::unlimited())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.deliveries_pending().await.unwrap(),
        9,
        "claimed is pending"
    );
}

// ---------------------------------------------------------------------------------------------
// Replay memory and the live event tail (src/store/replay.rs, src/store/tail.rs).

fn now_ms() -> i64 {
    now_us() / 1000
}

/// A signed request is accepted once: the same key again, on this handle or another one (another
/// API node on the same Redis), is a replay while it is remembered; even concurrent first uses
/// are accepted exactly once.
async fn replay_memory_accepts_each_request_once(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let exp = now_ms() + 60_000;
    let key = format!("{}\n{}\n{}", Uuid::now_v7(), now_ms(), "ab".repeat(32));
    assert!(
        s.remember_once(&key, exp, now_ms()).await.unwrap(),
        "first use"
    );
    assert!(
        !s.remember_once(&key, exp, now_ms()).await.unwrap(),
        "replay, same handle"
    );
    assert!(
        !peer.remember_once(&key, exp, now_ms()).await.unwrap(),
        "replay, other handle"
    );
    assert!(
        s.remember_once(&format!("{key}x"), exp, now_ms())
            .await
            .unwrap(),
        "another key"
    );

    let key = Arc::new(format!("concurrent-{}", Uuid::now_v7()));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let st = if i % 2 == 0 { s.clone() } else { peer.clone() };
            let key = key.clone();
            tokio::spawn(async move { st.remember_once(&key, exp, now_ms()).await.unwrap() })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.unwrap());
    }
    assert_eq!(accepted, 1, "concurrent first uses accepted");
}

/// A request is remembered until its expiry and forgotten after it (the time window refuses it by
/// then anyway).
async fn replay_memory_forgets_a_request_after_its_expiry(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let key = format!("expiring-{}", Uuid::now_v7());
    let t0 = now_ms();
    // A window of 2 s: the second call lands inside it even on a loaded machine.
    assert!(s.remember_once(&key, t0 + 2_000, t0).await.unwrap());
    assert!(
        !peer
            .remember_once(&key, t0 + 2_000, now_ms())
            .await
            .unwrap(),
        "inside the window"
    );
    // Past the window and the 2 s a Redis key outlives it (the node's clock may trail Redis's).
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let t1 = now_ms();
    assert!(
        peer.remember_once(&key, t1 + 60_000, t1).await.unwrap(),
        "forgotten after its expiry"
    );
    assert!(
        !s.remember_once(&key, t1 + 60_000, now_ms()).await.unwrap(),
        "remembered again"
    );
}

/// The live tail sees what any handle commits (on Redis: another node's commits), after the
/// newest event at its start, and a read waiting for news is woken by the other handle's commit.
async fn event_tail_reads_every_handles_commits(mut b: Backend) {
    let s = b.store().await;
    let peer = b.peer().await;
    let before = submit(&s, job("t", "r")).await;
    let mut tail = s.clone().event_tail().unwrap();
    let start = s.last_event_id().await.unwrap();
    assert!(start.is_some(), "an event was committed before");
    // Nothing new: an empty page (after the wait, or sooner on a stray notice).
    let page = tail
        .read(start.as_deref(), Duration::from_millis(300), 100)
        .await
        .unwrap();
    assert!(page.is_empty(), "nothing new: {page:?}");
    // A commit on the other handle while the tail waits wakes it.
    let p2 = peer.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        submit(&p2, job("t", "r")).await
    });
    // One read, willing to wait 30 s: only the commit's wake-up can end it within 10 s.
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        tail.read(start.as_deref(), Duration::from_secs(30), 100),
    )
    .await
    .expect("the waiting read was woken by the peer's commit")
    .unwrap();
    let theirs = writer.await.unwrap();
    assert!(
        got.iter().all(|e| e.job_id != before.id.to_string()),
        "only events after the start: {got:?}"
    );
    assert!(
        got.iter().any(|e| e.job_id == theirs.id.to_string()),
        "the peer's commit: {got:?}"
    );
}

/// A listing's type glob means what runner `types` globs mean (`runyard_runners::glob_match`),
/// on both backends: `*` any run, `?` one character, case counts, and `[` is an ordinary
/// character (SQLite's `GLOB` would read `a[1]` as a class matching `a1`).
async fn type_globs_mean_the_same_on_both_backends(mut b: Backend) {
    let s = b.store().await;
    let types = ["a[1]", "a1", "A1", "a.b.c", "ab"];
    for t in types {
        submit(&s, job(t, "r")).await;
    }
    let cases: [(&str, &[&str]); 7] = [
        ("a[1]", &["a[1]"]),
        ("a[1-9]", &[]),
        ("a?", &["a1", "ab"]),
        ("a*", &["a[1]", "a1", "a.b.c", "ab"]),
        ("a**", &["a[1]", "a1", "a.b.c", "ab"]),
        ("A*", &["A1"]),
        ("a.*", &["a.b.c"]),
    ];
    for (glob, want) in cases {
        let page = s
            .list(ListQuery {
                limit: 100,
                job_type: Some(glob.into()),
                ..Default::default()
            })
            .await
            .expect("list");
        let got: HashSet<&str> = page.jobs.iter().map(|j| j.job_type.as_str()).collect();
        let want: HashSet<&str> = want.iter().copied().collect();
        assert_eq!(got, want, "jobs listed for the type glob `{glob}`");
        let rust: HashSet<&str> = types
            .into_iter()
            .filter(|t| runyard::runner_set::glob_match(glob, t))
            .collect();
        assert_eq!(
            got, rust,
            "the listing agrees with the runners' matcher for `{glob}`"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The listing's filters (channel, schedule, time range, text in args, dead letters): the same
// answer on both backends, from the store, whatever page the matching jobs are on.

/// Every job the query lists, following the cursor (bounded).
async fn list_all(s: &Arc<dyn Store>, q: ListQuery) -> Vec<Job> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let page = s
            .list(ListQuery {
                cursor,
                ..q.clone()
            })
            .await
            .expect("list");
        assert!(page.jobs.len() <= q.limit, "a page holds at most its limit");
        out.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("list paging did not end");
}

fn ids(jobs: &[Job]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

async fn list_filters_find_jobs_past_the_first_page(mut b: Backend) {
    let s = b.store().await;
    let mut acme = job("report.daily", "r");
    acme.channel_id = "orders".into();
    acme.args = json!({"customer": "ACME Corp", "n": 7});
    acme.schedule = Some("nightly".into());
    let acme = submit(&s, acme).await;
    let mut other = job("thumb", "r");
    other.channel_id = "orders".into();
    other.args = json!({"customer": "Initech"});
    let other = submit(&s, other).await;
    // 300 newer jobs that match none of the filters: the matches are on page 7 of 50.
    for i in 0..300 {
        let mut j = job("noise", "r");
        j.args = json!({"i": i});
        submit(&s, j).await;
    }
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery {
            limit: 50,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let first = |q: ListQuery| {
        let s = s.clone();
        async move { s.list(q).await.expect("list").jobs }
    };
    let by_channel = first(q(|q| q.channel = Some("orders".into()))).await;
    assert_eq!(ids(&by_channel), vec![other.id, acme.id], "channel");
    let by_schedule = first(q(|q| q.schedule = Some("nightly".into()))).await;
    assert_eq!(ids(&by_schedule), vec![acme.id], "schedule");
    assert!(first(q(|q| q.schedule = Some("hourly".into())))
        .await
        .is_empty());
    // Text in args: a substring of the args as JSON, ignoring case.
    let by_text = first(q(|q| q.text = Some("acme corp".into()))).await;
    assert_eq!(ids(&by_text), vec![acme.id], "text");
    let by_key = first(q(|q| q.text = Some("\"customer\"".into()))).await;
    assert_eq!(ids(&by_key), vec![other.id, acme.id], "text matching a key");
    // Filters combine.
    let both = first(q(|q| {
        q.channel = Some("orders".into());
        q.job_type = Some("thumb".into());
    }))
    .await;
    assert_eq!(ids(&both), vec![other.id]);
    let with_status = first(q(|q| {
        q.channel = Some("orders".into());
        q.status = Some(JobStatus::Queued);
        q.text = Some("initech".into());
    }))
    .await;
    assert_eq!(ids(&with_status), vec![other.id]);
    // Paging through a filter: one match per page, then the end.
    let paged = list_all(
        &s,
        ListQuery {
            limit: 1,
            channel: Some("orders".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&paged), vec![other.id, acme.id], "paged by channel");
    let paged = list_all(
        &s,
        ListQuery {
            limit: 7,
            text: Some("\"i\":".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged.len(), 300, "paged by text: every noise job once");
    assert_eq!(
        paged.iter().map(|j| j.id).collect::<HashSet<_>>().len(),
        300
    );
}

async fn list_filters_by_creation_time(mut b: Backend) {
    let s = b.store().await;
    let mut early = Vec::new();
    for _ in 0..3 {
        early.push(submit(&s, job("t", "r")).await);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mid = now_us();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut late = Vec::new();
    for _ in 0..3 {
        late.push(submit(&s, job("t", "r")).await);
    }
    let newest_first = |v: &[Job]| v.iter().rev().map(|j| j.id).collect::<Vec<_>>();
    let after = list_all(
        &s,
        ListQuery {
            limit: 2,
            created_after: Some(mid),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&after), newest_first(&late), "created after");
    let before = list_all(
        &s,
        ListQuery {
            limit: 2,
            created_before: Some(mid),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&before), newest_first(&early), "created before");
    // A window: from the second early job to (not including) the second late one.
    let window = list_all(
        &s,
        ListQuery {
            limit: 100,
            created_after: Some(early[1].created_at),
            created_before: Some(late[1].created_at),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&window),
        vec![late[0].id, early[2].id, early[1].id],
        "a window, its start included and its end not"
    );
    // With a status that has no index on Redis (the lease set).
    let c = claim_one(&s, "r", "w").await;
    let starting = list_all(
        &s,
        ListQuery {
            limit: 10,
            status: Some(JobStatus::Starting),
            created_before: Some(mid),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&starting), vec![c.id], "the oldest job was claimed");
    let none = list_all(
        &s,
        ListQuery {
            limit: 10,
            status: Some(JobStatus::Starting),
            created_after: Some(mid),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
}

async fn list_filters_dead_letters(mut b: Backend) {
    let s = b.store().await;
    let fail = |j: Job| {
        let s = s.clone();
        async move {
            let t = token(&j);
            s.apply(
                j.id,
                Command::Started {
                    token: t,
                    handle: None,
                },
            )
            .await
            .expect("started");
            s.apply(
                j.id,
                Command::Finish {
                    token: t,
                    outcome: FinishOutcome::Failed {
                        message: "boom".into(),
                        exit_code: Some(3),
                    },
                },
            )
            .await
            .expect("failed")
        }
    };
    // One attempt: its failure is final, a dead letter.
    submit(
        &s,
        Job {
            max_attempts: 1,
            ..job("d", "r")
        },
    )
    .await;
    let dead = fail(claim_one(&s, "r", "w").await).await;
    assert_eq!(dead.status, JobStatus::Error);
    // Two attempts: the first failure retries it, not dead.
    submit(&s, job("d", "r2")).await;
    let retried_now = fail(claim_one(&s, "r2", "w").await).await;
    assert_ne!(retried_now.status, JobStatus::Error);
    submit(&s, job("d", "r3")).await;
    run_to_success(&s, &claim_one(&s, "r3", "w").await).await;
    let q = ListQuery {
        limit: 10,
        dead: true,
        ..Default::default()
    };
    assert_eq!(ids(&list_all(&s, q.clone()).await), vec![dead.id]);
    let typed = ListQuery {
        job_type: Some("x".into()),
        ..q.clone()
    };
    assert!(list_all(&s, typed).await.is_empty());
    // Retried, it is no longer dead.
    s.apply(dead.id, Command::Retry { runner: None })
        .await
        .expect("retry");
    assert!(list_all(&s, q).await.is_empty());
}

/// A caller confined by its grant (`ListQuery::visible`) is answered as if the jobs it does not
/// see were not stored: more of them than a scan examines (`paging::SCAN_BOUND`), all newer than
/// its one job, neither end its scan early with a cursor naming one of them, nor tell a text
/// that matches their args from one that does not.
async fn a_confined_listing_is_made_of_the_jobs_it_sees_only(mut b: Backend) {
    let s = b.store().await;
    let mut mine = job("a.job", "r");
    mine.channel_id = "tenant-a".into();
    let mine = submit(&s, mine).await;
    let foreign = runyard::store::paging::SCAN_BOUND + 50;
    let mut batch = Vec::new();
    for i in 0..foreign {
        let mut j = job("b.job", "r");
        j.channel_id = "tenant-b".into();
        j.args = json!({"api_key": "s3cret-XYZ", "i": i});
        batch.push(j);
        if batch.len() == 500 || i + 1 == foreign {
            for r in s
                .submit_many(std::mem::take(&mut batch))
                .await
                .expect("batch")
            {
                r.expect("submit");
            }
        }
    }
    let names = |l: &str| Names {
        list: vec![l.to_string()],
        exact: false,
    };
    let by_channel = Visibility {
        channels: Some(names("tenant-a")),
        ..Default::default()
    };
    let by_type = Visibility {
        types: Some(names("a.*")),
        ..Default::default()
    };
    let by_exact_channel = Visibility {
        channels: Some(Names {
            list: vec!["tenant-a".into()],
            exact: true,
        }),
        ..Default::default()
    };
    let by_channel_glob = Visibility {
        channels: Some(names("tenant-a*")),
        ..Default::default()
    };
    for v in [by_channel, by_type, by_exact_channel, by_channel_glob] {
        let q = |f: fn(&mut ListQuery)| {
            let mut q = ListQuery {
                limit: 1,
                visible: Some(v.clone()),
                ..Default::default()
            };
            f(&mut q);
            q
        };
        let page = s.list(q(|_| {})).await.expect("list");
        assert_eq!(ids(&page.jobs), vec![mine.id], "{v:?}");
        assert_eq!(page.next_cursor, None, "{v:?}: its only job");
        for f in [
            (|q: &mut ListQuery| q.text = Some("\"api_key\":\"s3c".into())) as fn(&mut ListQuery),
            |q| q.text = Some("\"api_key\":\"zzz".into()),
            |q| q.channel = Some("tenant-b".into()),
            |q| q.job_type = Some("b.*".into()),
            |q| q.status = Some(JobStatus::Queued),
        ] {
            let asked = q(f);
            let page = s.list(asked.clone()).await.expect("list");
            let expected: Vec<Uuid> = if asked.status.is_some() {
                vec![mine.id]
            } else {
                vec![]
            };
            assert_eq!(ids(&page.jobs), expected, "{asked:?}");
            assert_eq!(
                page.next_cursor, None,
                "{asked:?}: a cursor past {foreign} jobs it does not see"
            );
        }
    }
    // Unconfined: the same text finds the foreign jobs, a page of one with a cursor.
    let open = s
        .list(ListQuery {
            limit: 1,
            text: Some("\"api_key\":\"s3c".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(open.jobs.len(), 1);
    assert_eq!(open.next_cursor, Some(open.jobs[0].id));
}

async fn signal_keys_are_listed_with_count_and_latest(mut b: Backend) {
    let s = b.store().await;
    assert!(s.signal_keys(None, 10).await.expect("keys").is_empty());
    let t0 = now_us();
    for (key, n) in [("src.orders", 3), ("a.first", 1), ("z last", 2)] {
        for i in 0..n {
            s.signal_append(key, None, None, t0 + i * 1000)
                .await
                .expect("append");
        }
    }
    // An idempotent repeat writes nothing and counts nothing.
    s.signal_append("a.first", Some("x".into()), None, t0 + 5000)
        .await
        .expect("append");
    s.signal_append("a.first", Some("x".into()), None, t0 + 9000)
        .await
        .expect("append");
    let all = s.signal_keys(None, 10).await.expect("keys");
    let got: Vec<(&str, u64, i64)> = all
        .iter()
        .map(|k| (k.key.as_str(), k.count, k.latest))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a.first", 2, t0 + 5000),
            ("src.orders", 3, t0 + 2000),
            ("z last", 2, t0 + 1000),
        ]
    );
    // Paged by name.
    let p1 = s.signal_keys(None, 2).await.expect("keys");
    assert_eq!(p1.len(), 2);
    let p2 = s.signal_keys(Some(&p1[1].key), 2).await.expect("keys");
    assert_eq!(
        p2.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["z last"]
    );
    // Retention removes a key with its records.
    s.signals_trim(t0 + 1500).await.expect("trim");
    let left: Vec<(String, u64)> = s
        .signal_keys(None, 10)
        .await
        .expect("keys")
        .into_iter()
        .map(|k| (k.key, k.count))
        .collect();
    assert_eq!(
        left,
        vec![("a.first".to_string(), 1), ("src.orders".to_string(), 1)]
    );
}

/// Follows a key's pages from `since` (the next one from one microsecond after the last record),
/// checking each against its bounds; returns the records' numbers, in the order read, and the
/// pages' sizes.
async fn follow_signal_pages(
    s: &Arc<dyn Store>,
    key: &str,
    since: i64,
    limit: usize,
    bytes: usize,
) -> (Vec<u64>, Vec<usize>) {
    let (mut seqs, mut sizes, mut since) = (vec![], vec![], since);
    for _ in 0..1000 {
        let page = s
            .signals_page(key, since, limit, bytes)
            .await
            .expect("page");
        sizes.push(page.records.len());
        let times: Vec<i64> = page.records.iter().map(|r| r.at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "by time: {times:?}");
        seqs.extend(page.records.iter().map(|r| r.seq));
        match page.records.last() {
            Some(last) if page.more => since = last.at + 1,
            _ => return (seqs, sizes),
        }
    }
    panic!("1000 pages and no end");
}

async fn signal_pages_stop_at_their_bytes_and_go_on_exactly_once(mut b: Backend) {
    let s = b.store().await;
    let t0 = now_us();
    let big = "x".repeat(200_000);
    // 20 records of 200 KB, the 9th to the 13th in one microsecond (written by an older
    // version: records are stamped in order now).
    let mut at = t0;
    for i in 0..20 {
        if !(9..=12).contains(&i) {
            at += 10;
        }
        if (8..=12).contains(&i) {
            if i == 8 {
                let tied: Vec<_> = (8..=12).map(|i| json!({"i": i, "pad": big})).collect();
                b.legacy_tied_signals("big", at, &tied).await;
            }
            continue;
        }
        s.signal_append("big", None, Some(json!({"i": i, "pad": big})), at)
            .await
            .expect("append");
    }
    let all: Vec<u64> = (1..=20).collect();
    // 1 MB pages: a page ends once it holds five records (just over 1 MB), but the one reaching
    // into the 9th-13th takes all five of them.
    let (seqs, sizes) = follow_signal_pages(&s, "big", 0, 10_000, 1_000_000).await;
    assert_eq!(seqs, all, "every record once, in order");
    assert_eq!(
        sizes,
        vec![5, 8, 5, 2],
        "pages of about 1 MB, one microsecond never split"
    );
    // The count ends a page the same way; `since` inside the key starts there.
    let (seqs, sizes) = follow_signal_pages(&s, "big", 0, 4, usize::MAX).await;
    assert_eq!(seqs, all);
    assert_eq!(sizes, vec![4, 4, 5, 4, 3]);
    let (seqs, _) = follow_signal_pages(&s, "big", t0 + 80, 3, 300_000).await;
    assert_eq!(seqs, (8..=20).collect::<Vec<u64>>());
    // A page holding everything says so; an empty key has one empty page.
    let page = s
        .signals_page("big", 0, 20, usize::MAX)
        .await
        .expect("page");
    assert_eq!((page.records.len(), page.more), (20, false));
    let page = s
        .signals_page("big", 0, 19, usize::MAX)
        .await
        .expect("page");
    assert_eq!((page.records.len(), page.more), (19, true));
    let page = s.signals_page("none", 0, 10, 100).await.expect("page");
    assert_eq!(page, Default::default());
    // The records come back whole.
    let page = s.signals_page("big", t0 + 10, 1, 1).await.expect("page");
    assert_eq!(page.records.len(), 1);
    let r = &page.records[0];
    assert_eq!((r.key.as_str(), r.seq, r.at), ("big", 1, t0 + 10));
    assert_eq!(r.payload, Some(json!({"i": 0, "pad": big})));
}

async fn signal_numbers_are_read_lowest_first_and_at_most_the_count(mut b: Backend) {
    let s = b.store().await;
    let t0 = now_us();
    // A key whose own text looks like a record's number.
    let key = r#"k,"seq":99,"at":1"#;
    for i in 0..6 {
        s.signal_append(
            key,
            Some(format!("id{i}")),
            Some(json!({"i": i})),
            t0 + i * 100,
        )
        .await
        .expect("append");
    }
    assert_eq!(
        s.signal_seqs(key, 0, i64::MAX, 100).await.expect("seqs"),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        s.signal_seqs(key, t0 + 200, i64::MAX, 100)
            .await
            .expect("seqs"),
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        s.signal_seqs(key, t0 + 200, i64::MAX, 2)
            .await
            .expect("seqs"),
        vec![3, 4]
    );
    // Up to a time (a waiting job's deadline), inclusive: nothing written after it.
    assert_eq!(
        s.signal_seqs(key, t0 + 100, t0 + 300, 100)
            .await
            .expect("seqs"),
        vec![2, 3, 4]
    );
    assert!(s
        .signal_seqs(key, 0, t0 - 1, 100)
        .await
        .expect("seqs")
        .is_empty());
    assert!(s
        .signal_seqs("none", 0, i64::MAX, 5)
        .await
        .expect("seqs")
        .is_empty());
    // Ten records of one microsecond (jobs finished together, written by an older version): a
    // count of 3 reads 3, not the microsecond's ten; a payload holding the text of a record's
    // number changes nothing.
    let tied: Vec<_> = (0..10)
        .map(|i| json!({"note": format!(r#","seq":{},"at":5,"#, 900 + i)}))
        .collect();
    b.legacy_tied_signals("tied", t0, &tied).await;
    assert_eq!(
        s.signal_seqs("tied", 0, i64::MAX, 3).await.expect("seqs"),
        vec![1, 2, 3]
    );
    assert_eq!(
        s.signal_seqs("tied", 0, i64::MAX, 100).await.expect("seqs"),
        (1..=10).collect::<Vec<u64>>()
    );
    // Retention's cut shows.
    s.signals_trim(t0 + 450).await.expect("trim");
    assert_eq!(
        s.signal_seqs(key, 0, i64::MAX, 100).await.expect("seqs"),
        vec![6]
    );
}

async fn signals_are_stamped_in_the_order_they_are_written(mut b: Backend) {
    let s = b.store().await;
    let t0 = now_us();
    // A record from a node whose clock runs a minute ahead; a reader reads it.
    let (first, _) = s
        .signal_append("late", None, Some(json!(1)), t0 + 60_000_000)
        .await
        .expect("append");
    assert_eq!(
        first.at,
        t0 + 60_000_000,
        "a time ahead of the key's is kept"
    );
    let page = s
        .signals_page("late", 0, 100, usize::MAX)
        .await
        .expect("page");
    assert_eq!(page.records, vec![first.clone()]);
    let next = first.at + 1;
    // Then records whose writers took earlier times, or the same one: each comes after the
    // one before it.
    let (second, _) = s
        .signal_append("late", Some("two".into()), Some(json!(2)), t0)
        .await
        .expect("append");
    let (third, _) = s
        .signal_append("late", None, Some(json!(3)), second.at)
        .await
        .expect("append");
    assert_eq!((second.at, third.at), (first.at + 1, first.at + 2));
    // A retry of an id returns its record as stamped.
    let (again, created) = s
        .signal_append("late", Some("two".into()), Some(json!(2)), t0 + 5)
        .await
        .expect("append");
    assert_eq!((again, created), (second.clone(), false));
    // A job whose `emits` name the key, finishing now (before the key's newest time).
    let mut j = job("conf.emit", "r1");
    j.emits = vec!["late".into()];
    let j = submit(&s, j).await;
    let claimed = claim_one(&s, "r1", "w1").await;
    run_to_success(&s, &claimed).await;
    // The reader, going on from where it was, gets every record written since, once, in order.
    let page = s
        .signals_page("late", next, 100, usize::MAX)
        .await
        .expect("page");
    let got: Vec<(u64, i64)> = page.records.iter().map(|r| (r.seq, r.at)).collect();
    assert_eq!(
        got,
        vec![(2, first.at + 1), (3, first.at + 2), (4, first.at + 3)],
        "{page:?}"
    );
    assert_eq!(page.records[2].id, Some(format!("job:{}", j.id)));
    // The key's listing shows the newest time.
    let keys = s.signal_keys(None, 100).await.expect("keys");
    let late = keys.iter().find(|k| k.key == "late").expect("listed");
    assert_eq!((late.count, late.latest), (4, first.at + 3));
}

async fn a_signal_id_is_kept_as_long_as_its_record(mut b: Backend) {
    let s = b.store().await;
    let t0 = now_us();
    let put = |id: &'static str, at: i64| {
        let s = s.clone();
        async move {
            let (rec, created) = s
                .signal_append("k", Some(id.into()), Some(json!(id)), at)
                .await
                .expect("append");
            (rec.seq, created)
        }
    };
    assert_eq!(put("a", t0).await, (1, true));
    assert_eq!(put("b", t0 + 100).await, (2, true));
    // A retry with a kept record's id writes nothing.
    assert_eq!(put("a", t0 + 200).await, (1, false));
    // Retention takes a's record, and its id with it: the same id is a new record.
    s.signals_trim(t0 + 50).await.expect("trim");
    assert_eq!(put("b", t0 + 300).await, (2, false));
    assert_eq!(put("a", t0 + 400).await, (3, true));
    assert_eq!(put("a", t0 + 500).await, (3, false));
    // The cap (the newest 10,000 records of a key) takes ids the same way.
    assert!(fill_to_cap(&s, "capped", "first", t0).await);
    let again = s
        .signal_append("capped", Some("first".into()), None, t0 + 20_000)
        .await
        .expect("append");
    assert_eq!(
        (again.0.seq, again.1),
        (1, false),
        "still kept: 10,000 records"
    );
    s.signal_append("capped", None, None, t0 + 20_001)
        .await
        .expect("append");
    let after_cap = s
        .signal_append("capped", Some("first".into()), None, t0 + 20_002)
        .await
        .expect("append");
    assert_eq!(
        (after_cap.0.seq, after_cap.1),
        (10_002, true),
        "cut by the cap"
    );
    // A job's `emits` cut the oldest record the same way (its own script on Redis).
    let key = "capped-by-emits";
    fill_to_cap(&s, key, "oldest", t0).await;
    let mut j = job("conf.emit", "r1");
    j.emits = vec![key.into()];
    submit(&s, j).await;
    let claimed = claim_one(&s, "r1", "w1").await;
    run_to_success(&s, &claimed).await;
    let again = s
        .signal_append(key, Some("oldest".into()), None, t0 + 30_000)
        .await
        .expect("append");
    assert_eq!(
        (again.0.seq, again.1),
        (10_002, true),
        "the id went with its record, cut by the job's emit"
    );
}

/// Writes 10,000 records of `key` (the cap), the first with id `id` at `t0`, the others
/// without an id a microsecond apart; whether the first was new.
async fn fill_to_cap(s: &Arc<dyn Store>, key: &str, id: &str, t0: i64) -> bool {
    let first = s
        .signal_append(key, Some(id.into()), None, t0)
        .await
        .expect("append");
    for i in 1..10_000 {
        s.signal_append(key, None, None, t0 + i)
            .await
            .expect("append");
    }
    first.1
}

async fn batch_submits_store_each_job_on_its_own(mut b: Backend) {
    let s = b.store().await;
    assert!(s.submit_many(Vec::new()).await.unwrap().is_empty());
    let mut earlier = job("t", "r");
    earlier.idempotency_key = Some("before".into());
    let earlier = submit(&s, earlier).await;
    let keyed = |k: &str| {
        let mut j = job("t", "r");
        j.idempotency_key = Some(k.into());
        j.channel_id = "batch".into();
        j
    };
    let mut plain = job("t", "r");
    plain.channel_id = "batch".into();
    let mut later = job("t", "r");
    later.run_at = Some(now_us() + 3_600_000_000);
    later.status = JobStatus::Scheduled;
    let sent = vec![plain, keyed("k"), keyed("k"), keyed("before"), later];
    let ids: Vec<Uuid> = sent.iter().map(|j| j.id).collect();
    let got = s.submit_many(sent).await.expect("batch");
    let got: Vec<_> = got.into_iter().map(|r| r.expect("each stored")).collect();
    assert_eq!(
        got.iter().map(|r| r.created).collect::<Vec<_>>(),
        vec![true, true, false, false, true],
        "created, in order"
    );
    assert_eq!(got[0].job.id, ids[0]);
    assert_eq!(got[1].job.id, ids[1]);
    assert_eq!(
        got[2].job.id, ids[1],
        "the same key inside a batch: the first job"
    );
    assert_eq!(
        got[3].job.id, earlier.id,
        "a key from before the batch: that job"
    );
    assert_eq!(got[4].job.status, JobStatus::Scheduled);
    // Stored, seen by another process, queued in order, each with its event.
    let peer = b.peer().await;
    for id in [ids[0], ids[1], ids[4]] {
        assert!(peer.get(id).await.unwrap().is_some(), "{id} stored");
    }
    assert!(
        peer.get(ids[2]).await.unwrap().is_none(),
        "a replay stores nothing"
    );
    let events = all_events(&s, Some("batch")).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.job_id.clone(), e.runyard_status))
            .collect::<Vec<_>>(),
        vec![
            (ids[0].to_string(), Some(JobStatus::Queued)),
            (ids[1].to_string(), Some(JobStatus::Queued)),
        ],
        "one event per new job in its channel"
    );
    let global = all_events(&s, None).await;
    assert!(global.iter().any(|e| e.job_id == ids[4].to_string()));
    let claimed = s.claim("r", "w", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![earlier.id, ids[0], ids[1]],
        "the queue holds each new job once, oldest first"
    );
    // Again, from the peer: every key is taken now.
    let again = peer
        .submit_many(vec![keyed("k"), keyed("before")])
        .await
        .unwrap();
    assert_eq!(
        again
            .into_iter()
            .map(|r| r.map(|x| (x.job.id, x.created)).unwrap())
            .collect::<Vec<_>>(),
        vec![(ids[1], false), (earlier.id, false)]
    );
}
