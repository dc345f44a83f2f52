//! `JobStore::apply_start` on both backends (the same bodies against the embedded store and a
//! real Redis): an attempt's start, and the finish a worker offered before the start was applied
//! (`store/finish_slot.rs`). Whatever the backend does inside, the job reads the same as after a
//! start and a finish of their own: both events in order, both status notices, the start and end
//! times; a finish offered too late is refused (the worker records it on its own), a refused
//! start applies no finish, a refused finish leaves the start stored.

mod redis_support;
#[macro_use]
mod store_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Command, FinishOutcome, Job, JobStatus, TransitionError};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{FinishSlot, ListQuery, Notice, Store, StoreError, StoreSettings};
use serde_json::json;

use redis_support::{calls, TestRedis};

/// The stores' settings for these tests.
fn settings() -> StoreSettings {
    StoreSettings::default()
}

both!(
    a_finish_offered_first_is_applied_after_the_start,
    without_an_offer_only_the_start_is_applied_and_the_slot_closes,
    a_refused_start_applies_no_finish,
    a_refused_finish_leaves_the_start_stored,
    a_cancel_racing_a_start_with_its_finish_never_ends_both,
);

/// A submitted and claimed job: (the job, its fencing token).
async fn claimed(s: &Arc<dyn Store>) -> (Job, u64) {
    let j = Job {
        max_attempts: 1,
        ..Job::new("t.start", "r", now_us())
    };
    s.submit(j).await.expect("submit");
    let mut v = s
        .claim("r", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    let j = v.pop().expect("one job claimed");
    let token = j.lease.as_ref().expect("a lease").token;
    (j, token)
}

fn started(token: u64) -> Command {
    Command::Started {
        token,
        handle: None,
    }
}

/// A finish slot with `outcome` offered under `token`: an attempt that ended before its start
/// was sent.
fn offered(token: u64, outcome: FinishOutcome) -> Arc<FinishSlot> {
    let slot = FinishSlot::new();
    assert!(slot.offer(token, outcome).is_ok(), "offered");
    slot
}

/// The statuses of the job's own channel events, oldest first.
async fn statuses(s: &Arc<dyn Store>, j: &Job) -> Vec<String> {
    let evs = s
        .events(Some(&j.channel_id), None, 100)
        .await
        .expect("events");
    evs.iter()
        .filter(|e| e.kind == "status")
        .map(|e| {
            e.runyard_status
                .expect("a status event's status")
                .as_str()
                .to_string()
        })
        .collect()
}

/// The status notices received so far for `id`, in order.
fn notices(rx: &mut tokio::sync::broadcast::Receiver<Notice>, id: uuid::Uuid) -> Vec<JobStatus> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        if let Notice::Changed { job_id, status } = n {
            if job_id == id {
                out.push(status);
            }
        }
    }
    out
}

async fn a_finish_offered_first_is_applied_after_the_start(s: Arc<dyn Store>) {
    let mut rx = s.subscribe();
    let (j, token) = claimed(&s).await;
    let slot = offered(token, FinishOutcome::Success(Some(json!({"ok": 1}))));
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot.clone())
        .await
        .expect("start");
    assert_eq!(at_start.status, JobStatus::Running);
    assert!(at_start.started_at.is_some());
    let done = end
        .expect("the offered finish was taken")
        .expect("finished");
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.result, Some(json!({"ok": 1})));
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.started_at, at_start.started_at, "the start's time");
    assert!(stored.finished_at >= stored.started_at);
    let run = stored.runs.last().expect("a run record");
    assert!(run.started_at.is_some() && run.ended_at.is_some());
    assert_eq!(
        statuses(&s, &j).await,
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"],
        "both events, in order"
    );
    // Notices are sent once the change is committed; give them a moment.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.extend(notices(&mut rx, j.id));
        if seen.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use JobStatus::*;
    assert_eq!(seen, [Queued, Starting, Running, Success]);
    assert!(
        slot.offer(token, FinishOutcome::Success(None)).is_err(),
        "the slot is closed"
    );
}

async fn without_an_offer_only_the_start_is_applied_and_the_slot_closes(s: Arc<dyn Store>) {
    let (j, token) = claimed(&s).await;
    let slot = FinishSlot::new();
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot.clone())
        .await
        .expect("start");
    assert_eq!(at_start.status, JobStatus::Running);
    assert!(end.is_none(), "nothing offered, nothing finished");
    assert!(
        slot.offer(token, FinishOutcome::Success(None)).is_err(),
        "an offer after the start is refused: the worker records the finish on its own"
    );
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Running);
    assert_eq!(statuses(&s, &j).await, ["QUEUED", "STARTING", "RUNNING"]);
    let done = s
        .apply(
            j.id,
            Command::Finish {
                token,
                outcome: FinishOutcome::Success(None),
            },
        )
        .await
        .expect("finish on its own");
    assert_eq!(done.status, JobStatus::Success);
}

async fn a_refused_start_applies_no_finish(s: Arc<dyn Store>) {
    let (j, token) = claimed(&s).await;
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let slot = offered(token, FinishOutcome::Success(None));
    let e = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect_err("a cancelled job does not start");
    assert!(
        matches!(e, StoreError::Transition(TransitionError::Illegal { .. })),
        "{e:?}"
    );
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.started_at, None);
    assert_eq!(statuses(&s, &j).await, ["QUEUED", "STARTING", "CANCELLED"]);
}

async fn a_refused_finish_leaves_the_start_stored(s: Arc<dyn Store>) {
    let (j, token) = claimed(&s).await;
    let slot = FinishSlot::new();
    // A finish under another lease's token is fenced off; the start stands.
    assert!(slot
        .offer(token + 1000, FinishOutcome::Success(None))
        .is_ok());
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    assert_eq!(at_start.status, JobStatus::Running);
    let e = end.expect("the finish was tried").expect_err("stale token");
    assert!(
        matches!(e, StoreError::Transition(TransitionError::StaleLease)),
        "{e:?}"
    );
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Running, "the start was stored");
    assert_eq!(stored.started_at, at_start.started_at);
    assert_eq!(statuses(&s, &j).await, ["QUEUED", "STARTING", "RUNNING"]);
}

/// A cancel through the API racing a worker's start that carries its finish (the job claimed,
/// its attempt already ended): whichever the store applies first, the other is refused whole.
/// Either CANCELLED with no RUNNING or SUCCESS event or notice and the start refused, or SUCCESS
/// after RUNNING with the cancel refused; never a finish applied over the cancel. Run many times
/// so that the two land in one writer transaction (embedded) or one `commit.lua` call (Redis:
/// the cancel and the start computed from the same cached version) in either order.
async fn a_cancel_racing_a_start_with_its_finish_never_ends_both(s: Arc<dyn Store>) {
    use JobStatus::*;
    let (mut cancelled, mut finished) = (0, 0);
    for _ in 0..40 {
        let mut rx = s.subscribe();
        let (j, token) = claimed(&s).await;
        let slot = offered(token, FinishOutcome::Success(None));
        let (a, b) = (s.clone(), s.clone());
        let id = j.id;
        let cancel = tokio::spawn(async move { a.apply(id, Command::Cancel).await });
        let start = tokio::spawn(async move { b.apply_start(id, started(token), slot).await });
        let (cancel, start) = (cancel.await.expect("join"), start.await.expect("join"));
        let stored = s.get(j.id).await.expect("get").expect("stored");
        let evs = statuses(&s, &j).await;
        // Notices go out after the commit's replies; give them a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let seen = notices(&mut rx, j.id);
        match (&cancel, &start) {
            (Ok(c), Err(StoreError::Transition(_))) => {
                cancelled += 1;
                assert_eq!(c.status, Cancelled);
                assert_eq!(stored.status, Cancelled, "{evs:?}");
                assert!(stored.started_at.is_none(), "never started");
                assert_eq!(evs, ["QUEUED", "STARTING", "CANCELLED"]);
                assert!(
                    !seen.contains(&Running) && !seen.contains(&Success),
                    "{seen:?}"
                );
            }
            (Err(StoreError::Transition(_)), Ok((at_start, Some(Ok(done))))) => {
                finished += 1;
                assert_eq!(at_start.status, Running);
                assert_eq!(done.status, Success);
                assert_eq!(stored.status, Success);
                assert_eq!(evs, ["QUEUED", "STARTING", "RUNNING", "SUCCESS"]);
                assert!(!seen.contains(&Cancelled), "{seen:?}");
            }
            other => panic!(
                "both or neither applied: {other:?}; stored {:?}, events {evs:?}",
                stored.status
            ),
        }
    }
    eprintln!("cancel first: {cancelled}, start first: {finished}");
}

/// `commit.lua` calls Redis has run so far (`INFO commandstats`, `EVALSHA` and `EVAL`).
async fn script_calls(url: &str) -> u64 {
    calls(url, &["evalsha", "eval"]).await
}

/// Redis: a start and the finish offered before it reach Redis in ONE script call (one job
/// write carrying both events: `src/store/redis/start.rs`), where the start and the finish one
/// after the other took two calls and two round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_start_and_the_finish_offered_first_are_one_script_call() {
    // A private server: a shared one counts other tests' calls too.
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    let (j, token) = claimed(&s).await;
    let slot = offered(token, FinishOutcome::Success(None));
    let before = script_calls(&r.url).await;
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    let after = script_calls(&r.url).await;
    assert_eq!(at_start.status, JobStatus::Running);
    let done = end.expect("the finish was taken").expect("finished");
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(
        after - before,
        1,
        "one script call for the start and its finish"
    );
    assert_eq!(
        statuses(&s, &j).await,
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"],
        "both events, in order"
    );
}

/// Redis: a start and the finish offered before it are ONE write of the job
/// (`src/store/redis/start.rs`, `event0` in `lua/commit.lua`): the job hash read and written
/// once where the two changes each read it and wrote it whole (two `HMGET`, two `HSET` of its
/// ~1.4 KB), yet both events are there, in order, each with its own id in the global and the
/// channel stream, and the job reads as finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_start_and_the_finish_offered_first_are_one_job_write() {
    // A private server: a shared one counts other tests' calls too.
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    let (j, token) = claimed(&s).await;
    let slot = offered(token, FinishOutcome::Success(Some(json!({"n": 1}))));
    let before = calls(&r.url, &["hset", "hmget"]).await;
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    let written = calls(&r.url, &["hset", "hmget"]).await - before;
    let done = end.expect("the finish was taken").expect("finished");
    assert_eq!(
        written, 2,
        "the job hash read (HMGET) and written (HSET) once for the start and its finish"
    );
    assert_eq!(at_start.status, JobStatus::Running);
    assert_eq!(done.status, JobStatus::Success);
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.result, Some(json!({"n": 1})));
    assert_eq!(stored.started_at, at_start.started_at);
    assert_eq!(stored.version, done.version);
    // Both events, in order, with increasing ids, the same in both streams.
    let mine = s
        .events(Some(&j.channel_id), None, 100)
        .await
        .expect("events");
    let all = s.events(None, None, 1000).await.expect("events");
    let ids = |evs: &[runyard::job::Event]| -> Vec<(String, Option<JobStatus>)> {
        evs.iter()
            .filter(|e| e.job_id == j.id.to_string())
            .map(|e| (e.id.clone(), e.runyard_status))
            .collect()
    };
    let (mine, all) = (ids(&mine), ids(&all));
    use JobStatus::*;
    assert_eq!(
        mine.iter().map(|e| e.1).collect::<Vec<_>>(),
        [Some(Queued), Some(Starting), Some(Running), Some(Success)]
    );
    assert_eq!(mine, all, "one id per event in both streams");
    let (run, end) = (&mine[2].0, &mine[3].0);
    assert_ne!(run, end, "each event its own id");
    // Redis stream ids `ms-seq`, increasing.
    let key = |id: &str| -> (u64, u64) {
        let (a, b) = id.split_once('-').expect("a stream id");
        (a.parse().expect("ms"), b.parse().expect("seq"))
    };
    assert!(key(run) < key(end), "{run} then {end}");
}

/// Redis: a start with its finish in one write, refused because the job changed after the
/// worker last read it (here a heartbeat written through another node between the claim and the
/// start): `start.rs` loads the job again and sends the start with the finish it took once more,
/// in a second call. The job ends SUCCESS once, with each of its events once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_start_with_its_finish_refused_by_a_conflict_is_applied_again() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    let other = redis_store(&r).await;
    let (j, token) = claimed(&s).await;
    let beat = Command::Heartbeat {
        worker: "w1".into(),
        token,
        lease_until: now_us() + 60_000_000,
    };
    other.apply(j.id, beat).await.expect("heartbeat");
    let slot = offered(token, FinishOutcome::Success(Some(json!({"n": 2}))));
    let before = calls(&r.url, &["evalsha"]).await;
    let (at_start, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    assert_eq!(
        calls(&r.url, &["evalsha"]).await - before,
        2,
        "the first write refused (CONFLICT), the second stored"
    );
    assert_eq!(at_start.status, JobStatus::Running);
    let done = end
        .expect("the finish went with the start again")
        .expect("finished");
    assert_eq!(done.status, JobStatus::Success);
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.result, Some(json!({"n": 2})));
    assert_eq!(
        statuses(&s, &j).await,
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"]
    );
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.start", JobStatus::Success), 1);
    assert_eq!(counts.count("t.start", JobStatus::Starting), 0);
    assert_eq!(counts.count("t.start", JobStatus::Running), 0);
}

/// Redis: a start with a finish that is a retry (a failure with attempts left), in one write:
/// the job goes from STARTING to SCHEDULED, in the schedule (due at its backoff) and out of the
/// lease set, counted once as SCHEDULED, and is promoted to QUEUED when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_start_with_a_failure_to_retry_schedules_the_job_in_one_write() {
    use runyard::job::Backoff;
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    let j = Job {
        max_attempts: 2,
        backoff: Backoff {
            initial_ms: 1,
            max_ms: 1,
            multiplier: 1.0,
            jitter: false,
        },
        ..Job::new("t.retry", "rr", now_us())
    };
    s.submit(j).await.expect("submit");
    let j = s
        .claim("rr", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let token = j.lease.as_ref().expect("a lease").token;
    let slot = FinishSlot::new();
    let failed = FinishOutcome::Failed {
        message: "boom".into(),
        exit_code: None,
    };
    assert!(slot.offer(token, failed).is_ok());
    let before = calls(&r.url, &["evalsha"]).await;
    let (_, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    assert_eq!(calls(&r.url, &["evalsha"]).await - before, 1, "one call");
    let done = end.expect("taken").expect("a retry");
    assert_eq!(done.status, JobStatus::Scheduled);
    let stored = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Scheduled);
    assert!(stored.lease.is_none());
    let id = j.id.to_string();
    let sched = format!("{}:sched", r.prefix);
    let lease = format!("{}:lease", r.prefix);
    assert!(
        !r.cli(&["ZSCORE", &sched, &id]).trim().is_empty(),
        "in the schedule"
    );
    assert!(
        r.cli(&["ZSCORE", &lease, &id]).trim().is_empty(),
        "out of the lease set"
    );
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.retry", JobStatus::Scheduled), 1);
    for st in [JobStatus::Starting, JobStatus::Running, JobStatus::Queued] {
        assert_eq!(counts.count("t.retry", st), 0, "{st:?}");
    }
    assert_eq!(listed(&s, JobStatus::Scheduled).await.len(), 1);
    assert_eq!(
        statuses(&s, &j).await,
        ["QUEUED", "STARTING", "RUNNING", "SCHEDULED"]
    );
    // Due after its 1 ms backoff: promoted (the wait is for the store's clock to pass it).
    let due = s.next_due().await.expect("next due").expect("a due time");
    while now_us() <= due + 20_000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(s.promote_due(10).await.expect("promote"), 1);
    assert_eq!(
        s.get(j.id).await.expect("get").expect("stored").status,
        JobStatus::Queued
    );
}

/// Redis: a job whose webhook wants every status event, started with its finish in one write:
/// a delivery for each of the two events (RUNNING and SUCCESS), once each, each naming its own
/// event (id and body), as when the start and the finish were written one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_start_with_its_finish_delivers_both_events_once() {
    use runyard::job::notify_spec::{NotifyEvent, NotifySpec};
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    let j = Job {
        max_attempts: 1,
        notify: Some(NotifySpec {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec![NotifyEvent::Status],
        }),
        ..Job::new("t.hook", "rh", now_us())
    };
    s.submit(j.clone()).await.expect("submit");
    let j = s
        .claim("rh", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let token = j.lease.as_ref().expect("a lease").token;
    let slot = offered(token, FinishOutcome::Success(None));
    let (_, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    assert_eq!(
        end.expect("taken").expect("finished").status,
        JobStatus::Success
    );
    let evs: Vec<_> = s
        .events(Some(&j.channel_id), None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.id, e.runyard_status.expect("a status")))
        .collect();
    let mut got: Vec<_> = s
        .deliveries_claim(
            100,
            Duration::from_secs(60),
            runyard::store::deliveries::ClaimLimits::unlimited(),
        )
        .await
        .expect("claim deliveries")
        .into_iter()
        .map(|c| c.delivery)
        .collect();
    got.sort_by_key(|d| d.id);
    let delivered: Vec<_> = got
        .iter()
        .map(|d| {
            let ev: serde_json::Value = serde_json::from_str(&d.body()).expect("json body");
            assert_eq!(d.job_id, j.id);
            (
                d.event_id.clone(),
                ev["runyard_status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    let want: Vec<_> = evs
        .iter()
        .map(|(id, st)| (id.clone(), st.as_str().to_string()))
        .collect();
    // Every status event of the job delivered once, in order, with its own id.
    assert_eq!(delivered, want);
    assert_eq!(
        want.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"]
    );
}

/// Redis: the index changes of one `commit.lua` call are netted and sent once per key
/// (`lua/commit.lua`, `flush_index`): a batch of submits moves the job counts with one
/// `HINCRBY` and each sorted set with one `ZADD`, the claims of all of them with one `HINCRBY`
/// per status and one `ZREM`/`ZADD` per key, where each write used to send its own (400 `ZADD`
/// and 100 `HINCRBY` for 100 submits). What a user reads stays exact: counts, listings, queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_calls_index_changes_go_once_per_key() {
    // A private server: a shared one counts other tests' calls too.
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = redis_store(&r).await;
    const N: usize = 100;
    let jobs: Vec<Job> = (0..N).map(|_| Job::new("t.net", "rn", now_us())).collect();
    let idx = ["hincrby", "zadd", "zrem"];
    let before = calls(&r.url, &idx).await;
    let out = s.submit_many(jobs).await.expect("batch");
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    let submitted = calls(&r.url, &idx).await - before;
    // One HINCRBY (t.net QUEUED) and one ZADD for each of `P:all`, `P:qt:`, `P:q:`, `P:st:`.
    assert!(submitted <= 5, "{submitted} index commands for {N} submits");
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.net", JobStatus::Queued), N as u64);

    let before = calls(&r.url, &idx).await;
    let claimed = s
        .claim("rn", "w1", N, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), N);
    let moved = calls(&r.url, &idx).await - before;
    // The pick's reservations (one ZADD, claim.lua), then the claims' one call: two HINCRBY,
    // ZREM from `P:qt:`, `P:q:`, `P:st:QUEUED`, ZADD to `P:st:STARTING`, `P:lease`.
    assert!(moved <= 8, "{moved} index commands for {N} claims");
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.net", JobStatus::Queued), 0);
    assert_eq!(counts.count("t.net", JobStatus::Starting), N as u64);
    assert_eq!(listed(&s, JobStatus::Starting).await.len(), N);
    assert!(listed(&s, JobStatus::Queued).await.is_empty());
    assert!(s
        .claim("rn", "w2", N, Duration::from_secs(30))
        .await
        .expect("claim")
        .is_empty());

    // A start and its finish in one write move STARTING to SUCCESS: RUNNING counted and listed
    // never.
    let j = &claimed[0];
    let token = j.lease.as_ref().expect("a lease").token;
    let slot = offered(token, FinishOutcome::Success(None));
    let (_, end) = s
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    assert_eq!(
        end.expect("finish taken").expect("finished").status,
        JobStatus::Success
    );
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.net", JobStatus::Running), 0);
    assert_eq!(counts.count("t.net", JobStatus::Success), 1);
    assert_eq!(counts.count("t.net", JobStatus::Starting), N as u64 - 1);
    for status in [JobStatus::Running, JobStatus::Success] {
        let want = usize::from(status == JobStatus::Success);
        assert_eq!(listed(&s, status).await.len(), want, "{status:?}");
    }
}

/// Redis: a quick job's claim, start and finish by another process than its submit's refresh no
/// channel TTL (`RedisStore::ttl_due`): the submit set it a moment before, so one `PEXPIRE` per
/// job where the worker's process sent one more; the stream still lives `retention.events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_young_jobs_changes_leave_the_channel_ttl_to_its_submit() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    // Two stores: an API node and a worker node.
    let api = redis_store(&r).await;
    let worker = redis_store(&r).await;
    let before = calls(&r.url, &["pexpire"]).await;
    let j = Job {
        max_attempts: 1,
        ..Job::new("t.ttl", "rt", now_us())
    };
    api.submit(j.clone()).await.expect("submit");
    let mut v = worker
        .claim("rt", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    let token = v.pop().expect("claimed").lease.expect("a lease").token;
    let slot = offered(token, FinishOutcome::Success(None));
    let (_, end) = worker
        .apply_start(j.id, started(token), slot)
        .await
        .expect("start");
    end.expect("finish taken").expect("finished");
    let sent = calls(&r.url, &["pexpire"]).await - before;
    assert_eq!(sent, 1, "the submit's refresh only");
    assert_eq!(
        statuses(&api, &j).await,
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"]
    );
    let client = ::redis::Client::open(r.url.as_str()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{}:evc:{}", r.prefix, j.channel_id))
        .query_async(&mut c)
        .await
        .expect("pttl");
    assert!(ttl > 23 * 3600 * 1000, "channel stream PTTL {ttl} ms");
}

/// The jobs `s` lists with this status (one page, up to 1,000).
async fn listed(s: &Arc<dyn Store>, status: JobStatus) -> Vec<Job> {
    s.list(ListQuery {
        status: Some(status),
        limit: 1000,
        ..Default::default()
    })
    .await
    .expect("list")
    .jobs
}

/// A store on `r` (its own prefix), as a node would open it.
async fn redis_store(r: &TestRedis) -> Arc<dyn Store> {
    redis_store_retrying(r, Duration::from_secs(5)).await
}

/// The same, retrying a failed Redis command for `retry` (`store.retry`).
async fn redis_store_retrying(r: &TestRedis, retry: Duration) -> Arc<dyn Store> {
    RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        retry,
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect")
}

/// Redis: a commit after Redis lost its scripts (a restart without persistence, `SCRIPT FLUSH`)
/// loads `commit.lua` again and is stored. The commit call is built by the store itself (not by
/// redis-rs's `ScriptInvocation`, which reloads on its own), so the reload is the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_commit_after_the_scripts_are_flushed_loads_them_again() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s: Arc<dyn Store> = redis_store_retrying(&r, Duration::from_millis(300)).await;
    let first = Job::new("t.flush", "rf", now_us());
    s.submit(first.clone()).await.expect("first submit");
    r.cli(&["SCRIPT", "FLUSH"]);
    let second = Job::new("t.flush", "rf", now_us());
    s.submit(second.clone())
        .await
        .expect("a submit after SCRIPT FLUSH is stored");
    for j in [&first, &second] {
        assert_eq!(
            s.get(j.id).await.expect("get").expect("stored").status,
            JobStatus::Queued
        );
    }
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.count("t.flush", JobStatus::Queued), 2);
}

/// Redis: a command that fails in the middle of a commit call (here the third job's channel
/// stream is a plain string, so its `XADD` fails) ends the script with the writes before it
/// made. Those jobs are stored, so they must also be counted, listed and queued: a worker claims
/// them and they run. (When the call's index changes were applied only at its very end, they
/// were stored and in no index: never run, a lost job.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_commit_that_fails_midway_leaves_what_it_stored_indexed() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s: Arc<dyn Store> = redis_store_retrying(&r, Duration::from_millis(300)).await;
    let jobs: Vec<Job> = (0..3)
        .map(|_| Job {
            max_attempts: 1,
            ..Job::new("t.mid", "rm", now_us())
        })
        .collect();
    // The third job's channel stream key holds a string: its event cannot be appended.
    r.cli(&[
        "SET",
        &format!("{}:evc:{}", r.prefix, jobs[2].channel_id),
        "not a stream",
    ]);
    let out = s.submit_many(jobs.clone()).await;
    assert!(
        out.as_ref().map_or(true, |v| v.iter().any(|x| x.is_err())),
        "the failing job cannot be reported stored: {out:?}"
    );
    let mut stored = Vec::new();
    for j in &jobs {
        if s.get(j.id).await.expect("get").is_some() {
            stored.push(j.id);
        }
    }
    assert!(
        stored.contains(&jobs[0].id) && stored.contains(&jobs[1].id),
        "the writes before the failure stay (Redis does not roll a script back): {stored:?}"
    );
    // Every stored job is counted, listed as QUEUED and claimable.
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(
        counts.count("t.mid", JobStatus::Queued),
        stored.len() as u64,
        "counted"
    );
    let mut queued: Vec<_> = listed(&s, JobStatus::Queued)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    queued.sort();
    stored.sort();
    assert_eq!(queued, stored, "listed");
    // Once the bad key is gone, a worker claims every stored job.
    r.cli(&["DEL", &format!("{}:evc:{}", r.prefix, jobs[2].channel_id)]);
    let mut claimed: Vec<_> = s
        .claim("rm", "w1", 10, Duration::from_secs(30))
        .await
        .expect("claim")
        .iter()
        .map(|j| j.id)
        .collect();
    claimed.sort();
    assert_eq!(claimed, stored, "claimed");
}

/// Redis: a commit that reaches a server demoted to a replica (a failover) is answered
/// `READONLY`, which the store retries for `store.retry` and then reports as a write refused,
/// nothing of it stored (a submit or a cancel answers 503, nothing changed), never as another
/// backend error; once the server is
/// a primary again, writes go through. A cancel's first write fails inside the commit script's
/// guarded part with nothing else to write after it, so the script must hand back the command's
/// own error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_commit_on_a_demoted_server_is_unavailable_not_an_error() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s: Arc<dyn Store> = redis_store_retrying(&r, Duration::from_millis(400)).await;
    let job = || Job::new("t.ro", "rr", now_us());
    let queued = job();
    s.submit(queued.clone())
        .await
        .expect("a submit to the primary");
    // Demoted: a replica of a primary that cannot be reached keeps its data, read-only.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    r.cli(&["REPLICAOF", "127.0.0.1", &gone.to_string()]);
    match s.apply(queued.id, Command::Cancel).await {
        Err(e) if e.is_write_refusal() => {}
        other => panic!("a cancel on a replica: {other:?}"),
    }
    match s.submit(job()).await {
        Err(e) if e.is_write_refusal() => {}
        other => panic!("a submit to a replica: {other:?}"),
    }
    let stored = s.get(queued.id).await.expect("get").expect("still there");
    assert_eq!(stored.status, JobStatus::Queued, "nothing changed");
    r.cli(&["REPLICAOF", "NO", "ONE"]);
    let cancelled = s
        .apply(queued.id, Command::Cancel)
        .await
        .expect("a cancel once it is a primary again");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    s.submit(job())
        .await
        .expect("a submit once it is a primary again");
}

/// Redis: a job cancelled by another node after a worker's claim, before its start, stays
/// CANCELLED even when the worker's finish was offered with the start: the start is refused
/// (the cancel moved the version) and so is the finish written with it (one write, checked
/// against the version before the start). Versions only count up: a finish written on its own
/// after the start, computed from it, would expect exactly the version the cancel left, and was
/// once applied over the cancel (SUCCESS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_job_cancelled_between_its_claim_and_its_start_stays_cancelled() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let api = redis_store(&r).await;
    let w = redis_store(&r).await;
    api.submit(Job {
        max_attempts: 1,
        ..Job::new("t.cancel", "rc", now_us())
    })
    .await
    .expect("submit");
    let j = w
        .claim("rc", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let token = j.lease.as_ref().expect("a lease").token;
    let cancelled = api.apply(j.id, Command::Cancel).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let slot = offered(token, FinishOutcome::Success(None));
    match w.apply_start(j.id, started(token), slot.clone()).await {
        Err(StoreError::Transition(_)) => {}
        other => panic!("the start of a cancelled job: {other:?}"),
    }
    let stored = api.get(j.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, JobStatus::Cancelled, "still cancelled");
    assert!(stored.started_at.is_none(), "never started");
    assert_eq!(
        statuses(&api, &j).await,
        ["QUEUED", "STARTING", "CANCELLED"]
    );
}
