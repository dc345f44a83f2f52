//! Redis: ONE job key of the wrong type (`SET P:job:{id} garbage`: an operator's mistake, another
//! program sharing the Redis) costs that job only. The reads that meet it with other jobs (a
//! claim, the heartbeats, the reaper, the promotion, the listings, the dashboard's counts,
//! retention) leave it out, logged, and go on; a claim that fails changes nothing, and no job
//! leaves every set (each one either runs or is reported). Before, a claim that failed on such a
//! key had popped the jobs it picked (they were in no set any more, and never ran), and the
//! reaper, the promotion and the listings failed whole, every time.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Command, Job, JobStatus};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{ListQuery, Names, Store, Visibility};
use uuid::Uuid;

use redis_support::{open_store, raw_conn, TestRedis};

const LEASE: Duration = Duration::from_secs(30);

fn job_key(r: &TestRedis, id: Uuid) -> String {
    format!("{}:job:{id}", r.prefix)
}

/// Replaces job `id`'s hash by a string (`DEL`, `SET ... garbage`), returning the hash as
/// `DUMP` gave it (for [`restore`]).
async fn damage(r: &TestRedis, id: Uuid) -> Vec<u8> {
    let mut c = raw_conn(r).await;
    let key = job_key(r, id);
    let dump: Vec<u8> = ::redis::cmd("DUMP")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("dump");
    let _: () = ::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("del");
    let _: () = ::redis::cmd("SET")
        .arg(&key)
        .arg("garbage")
        .query_async(&mut c)
        .await
        .expect("set");
    dump
}

/// Puts back the hash [`damage`] replaced.
async fn restore(r: &TestRedis, id: Uuid, dump: Vec<u8>) {
    let mut c = raw_conn(r).await;
    let _: () = ::redis::cmd("RESTORE")
        .arg(job_key(r, id))
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query_async(&mut c)
        .await
        .expect("restore");
}

/// The members of the sorted set `P:{name}`, lowest score first.
async fn members(r: &TestRedis, name: &str) -> Vec<Uuid> {
    let mut c = raw_conn(r).await;
    let m: Vec<String> = ::redis::cmd("ZRANGE")
        .arg(format!("{}:{name}", r.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("zrange");
    m.iter()
        .map(|s| Uuid::parse_str(s).expect("an id"))
        .collect()
}

async fn submit_n(s: &Arc<dyn Store>, runner: &str, n: usize) -> Vec<Job> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            s.submit(Job::new("t", runner, now_us()))
                .await
                .expect("submit")
                .job,
        );
    }
    out
}

fn ids(jobs: &[Job]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

async fn status(s: &Arc<dyn Store>, id: Uuid) -> JobStatus {
    s.get(id).await.expect("get").expect("stored").status
}

/// The probe's case: five queued jobs, the second's key a string. Claims of one job at a time
/// (a worker with one free slot) take the four others, in order; the damaged one is never lost:
/// it waits in the lease set, and once its hash is back the reaper puts it back in its queue,
/// and it is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_the_jobs_past_a_job_key_of_another_type_and_lose_none() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let jobs = submit_n(&s, "r", 5).await;
    let bad = jobs[1].id;
    let dump = damage(&r, bad).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let c = s
            .claim("r", "w", 1, Duration::from_millis(1))
            .await
            .expect("claim");
        got.extend(ids(&c));
        if got.len() == 4 {
            break;
        }
    }
    let others: Vec<Uuid> = ids(&jobs).into_iter().filter(|id| *id != bad).collect();
    assert_eq!(got, others);
    for id in &others {
        assert_eq!(status(&s, *id).await, JobStatus::Starting);
    }
    // Nothing left in the queue, and the damaged job not lost: in the lease set.
    assert!(members(&r, "q:r").await.is_empty());
    assert!(members(&r, "lease").await.contains(&bad));
    // The reaper meets it (its reservation expired) and passes it, while the hash is damaged.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = s.expired(100).await.expect("expired");
    assert_eq!(ids(&expired), others);
    assert!(members(&r, "lease").await.contains(&bad));
    // Its hash back (QUEUED): back in its queue, and claimed.
    restore(&r, bad, dump).await;
    s.expired(100).await.expect("expired");
    assert_eq!(members(&r, "q:r").await, vec![bad]);
    let c = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(ids(&c), vec![bad]);
}

/// A claim that fails (here `P:token` is not a number) changes nothing: its jobs stay queued,
/// and are claimed once the key is mended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_fails_leaves_its_jobs_queued() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut c = raw_conn(&r).await;
    let token = format!("{}:token", r.prefix);
    let _: () = ::redis::cmd("SET")
        .arg(&token)
        .arg("abc")
        .query_async(&mut c)
        .await
        .expect("set");
    let jobs = submit_n(&s, "r", 5).await;
    let err = s.claim("r", "w", 10, LEASE).await.expect_err("claim fails");
    assert!(err.to_string().contains("not an integer"), "{err}");
    assert_eq!(members(&r, "q:r").await, ids(&jobs));
    assert!(members(&r, "lease").await.is_empty());
    for j in &jobs {
        assert_eq!(status(&s, j.id).await, JobStatus::Queued);
    }
    let _: () = ::redis::cmd("DEL")
        .arg(&token)
        .query_async(&mut c)
        .await
        .expect("del");
    let got = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(ids(&got), ids(&jobs));
}

/// Expired leases: the damaged job is passed (it stays in the lease set), the others are
/// returned, to be reaped; a heartbeat reports it lost and renews the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_and_the_heartbeat_pass_a_job_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let jobs = submit_n(&s, "short", 3).await;
    let claimed = s
        .claim("short", "w", 10, Duration::from_millis(1))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), ids(&jobs));
    damage(&r, jobs[0].id).await;
    let token = |j: &Job| j.lease.as_ref().expect("lease").token;
    let held: Vec<(Uuid, u64)> = claimed.iter().map(|j| (j.id, token(j))).collect();
    let lost = s.heartbeat("w", &held, LEASE).await.expect("heartbeat");
    assert_eq!(lost, vec![jobs[0].id]);
    // Held by a worker that died: the renewed ones expire again.
    let lost = s
        .heartbeat("w", &held[1..], Duration::from_millis(1))
        .await
        .expect("heartbeat");
    assert!(lost.is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = s.expired(100).await.expect("expired");
    assert_eq!(ids(&expired), ids(&jobs[1..]));
    for j in &expired {
        s.apply(j.id, Command::LeaseExpired { token: None })
            .await
            .expect("reap");
    }
    assert_eq!(members(&r, "lease").await, vec![jobs[0].id]);
}

/// Due SCHEDULED jobs: the damaged one first, the one behind it promoted all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promotion_passes_a_job_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut due = Vec::new();
    for i in 0..2 {
        let mut j = Job::new("t", "sched", now_us());
        j.status = JobStatus::Scheduled;
        j.run_at = Some(now_us() + 30_000 + i);
        due.push(s.submit(j).await.expect("submit").job);
    }
    damage(&r, due[0].id).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(s.promote_due(100).await.expect("promote"), 1);
    assert_eq!(status(&s, due[1].id).await, JobStatus::Queued);
    // The damaged one stays due (not lost), for when its hash reads again.
    assert_eq!(members(&r, "sched").await, vec![due[0].id]);
}

fn confined(channel: &str) -> ListQuery {
    ListQuery {
        visible: Some(Visibility {
            types: None,
            channels: Some(Names {
                list: vec![channel.into()],
                exact: true,
            }),
        }),
        ..ListQuery::default()
    }
}

/// The listings (every job, by status, the active ones from the lease set, a caller confined to
/// a channel) list the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_pass_a_job_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let mut j = Job::new("t", "r", now_us());
        j.channel_id = "shared".into();
        jobs.push(s.submit(j).await.expect("submit").job);
    }
    let (bad, mut others) = (jobs[1].id, vec![jobs[2].id, jobs[0].id]);
    damage(&r, bad).await;
    let list = |q: ListQuery| {
        let s = s.clone();
        async move {
            let q = ListQuery { limit: 10, ..q };
            ids(&s.list(q).await.expect("list").jobs)
        }
    };
    assert_eq!(list(ListQuery::default()).await, others);
    let queued = ListQuery {
        status: Some(JobStatus::Queued),
        ..ListQuery::default()
    };
    assert_eq!(list(queued).await, others);
    assert_eq!(list(confined("shared")).await, others);
    let channel = ListQuery {
        channel: Some("shared".into()),
        ..ListQuery::default()
    };
    assert_eq!(list(channel).await, others);
    // Active jobs come from the lease set, where the damaged one waits once claimed.
    let claimed = s.claim("r", "w", 10, LEASE).await.expect("claim");
    others.reverse();
    assert_eq!(ids(&claimed), others);
    others.reverse();
    let starting = ListQuery {
        status: Some(JobStatus::Starting),
        ..ListQuery::default()
    };
    assert_eq!(list(starting).await, others);
}

/// The dashboard's counts and retention pass it too (retention leaves it as it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_and_retention_pass_a_job_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let jobs = submit_n(&s, "r", 2).await;
    let bad = jobs[0].id;
    damage(&r, bad).await;
    // Counted finished, dead, by the rebuild of the counts.
    let mut c = raw_conn(&r).await;
    for (key, score) in [("fin", now_us() - 1_000), ("st:ERROR", 0)] {
        let _: () = ::redis::cmd("ZADD")
            .arg(format!("{}:{key}", r.prefix))
            .arg(score)
            .arg(bad.to_string())
            .query_async(&mut c)
            .await
            .expect("zadd");
    }
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{}:jc:ready", r.prefix))
        .query_async(&mut c)
        .await
        .expect("del");
    s.finished_per_minute(5).await.expect("finished per minute");
    s.dead_letters().await.expect("dead letters");
    let counts = s.job_counts().await.expect("counts");
    let queued = counts
        .by_type_status
        .get(&("t".to_string(), JobStatus::Queued));
    assert_eq!(queued, Some(&1));
    s.retention(now_us()).await.expect("retention");
    assert!(members(&r, "fin").await.is_empty());
    let kind: String = ::redis::cmd("TYPE")
        .arg(job_key(&r, bad))
        .query_async(&mut c)
        .await
        .expect("type");
    assert_eq!(kind, "string");
}

/// A channel's event stream (or list) of the wrong type fails the writes to that channel only,
/// and a write that failed stored nothing. Writes of several callers (or a batch submit) share
/// one script call: the innocent writes of the call were stored but answered with its error
/// (a client retrying ran them twice), and so were the claims in it (wedged until reaped).
async fn a_channel_key_of_another_type_fails_its_own_writes_only(lists: bool) {
    let r = TestRedis::start();
    let s: Arc<dyn Store> = RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        retry: Duration::from_secs(5),
        channel_lists: lists,
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect");
    let mut c = raw_conn(&r).await;
    let broken = format!("{}:{}:shared", r.prefix, if lists { "evl" } else { "evc" });
    let _: () = ::redis::cmd("SET")
        .arg(&broken)
        .arg("x")
        .query_async(&mut c)
        .await
        .expect("set");
    let on = |channel: &str| {
        let mut j = Job::new("t", "r", now_us());
        j.channel_id = channel.into();
        j
    };
    // One script call: a batch submit.
    let batch = vec![on("other"), on("shared"), on("other")];
    // The call's error, if it fails whole, is the answer to each of its submits.
    let results: Vec<Result<(), String>> = match s.submit_many(batch.clone()).await {
        Ok(r) => r
            .into_iter()
            .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
            .collect(),
        Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
    };
    for (j, res) in batch.iter().zip(&results) {
        let stored = s.get(j.id).await.expect("get").is_some();
        match res {
            Ok(_) => assert!(stored, "answered stored: {}", j.channel_id),
            Err(e) => {
                assert!(!stored, "answered with {e} yet stored");
                assert!(e.contains("WRONGTYPE"), "{e}");
            }
        }
        assert_eq!(res.is_ok(), j.channel_id == "other", "{res:?}");
    }
    // Callers at once (the group commit puts them in shared calls).
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (s, j) = (s.clone(), on(if i % 2 == 0 { "shared" } else { "other" }));
        tasks.push(tokio::spawn(async move { (j.clone(), s.submit(j).await) }));
    }
    let mut queued = vec![batch[0].id, batch[2].id];
    for t in tasks {
        let (j, res) = t.await.expect("task");
        let stored = s.get(j.id).await.expect("get").is_some();
        assert_eq!(res.is_ok(), stored, "{}: {res:?}", j.channel_id);
        assert_eq!(res.is_ok(), j.channel_id == "other", "{res:?}");
        if stored {
            queued.push(j.id);
        }
    }
    // The runner's claims go on: every job stored is claimed.
    let mut claimed = ids(&s.claim("r", "w", 100, LEASE).await.expect("claim"));
    claimed.sort();
    queued.sort();
    assert_eq!(claimed, queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_stream_of_another_type_fails_its_own_writes_only() {
    a_channel_key_of_another_type_fails_its_own_writes_only(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_list_of_another_type_fails_its_own_writes_only() {
    a_channel_key_of_another_type_fails_its_own_writes_only(true).await;
}

/// Keys a write meets after its job's hash is written (a file reference set, a queue) of the
/// wrong type fail that write before it writes: answered as an error, nothing stored. (They
/// once answered `PART:`, "stored", for a job left out of its queue: it never ran.) Other
/// writes go on and are claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_met_after_the_hash_are_checked_before_a_write_writes() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut c = raw_conn(&r).await;
    let set = |k: String| {
        let mut c = c.clone();
        async move {
            let _: () = ::redis::cmd("SET")
                .arg(k)
                .arg("x")
                .query_async(&mut c)
                .await
                .expect("set");
        }
    };
    set(format!("{}:fhashes", r.prefix)).await;
    let mut with_file = Job::new("t", "r", now_us());
    with_file.files.insert(
        "input".into(),
        vec![runyard::job::FileRef {
            hash: "0123456789abcdef0123456789abcdef".into(),
            size: 1,
            mimetype: "text/plain".into(),
            name: "a.txt".into(),
            metadata: serde_json::Value::Null,
            attempt: None,
        }],
    );
    let e = s.submit(with_file.clone()).await.expect_err("refused");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    assert!(
        s.get(with_file.id).await.expect("get").is_none(),
        "nothing stored"
    );
    // A queue of another runner of the wrong type: its submits fail, others' go on.
    set(format!("{}:q:broken", r.prefix)).await;
    let broken = Job::new("t", "broken", now_us());
    let e = s.submit(broken.clone()).await.expect_err("refused");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    assert!(
        s.get(broken.id).await.expect("get").is_none(),
        "nothing stored"
    );
    let fine = Job::new("t", "r", now_us());
    s.submit(fine.clone()).await.expect("submit");
    let claimed = ids(&s.claim("r", "w", 10, LEASE).await.expect("claim"));
    assert_eq!(claimed, vec![fine.id]);
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{}:q:broken", r.prefix))
        .query_async(&mut c)
        .await
        .expect("del");
}

/// Retention deletes a finished job whose own idempotency key is of the wrong type (passed,
/// logged by Redis): the job goes whole, and the jobs after it too. It once failed every pass
/// on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_passes_a_jobs_own_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut c = raw_conn(&r).await;
    let mut keyed = Job::new("t", "r", now_us());
    keyed.idempotency_key = Some("k-1".into());
    let plain = Job::new("t", "r", now_us());
    for j in [&keyed, &plain] {
        s.submit(j.clone()).await.expect("submit");
        s.apply(j.id, Command::Cancel).await.expect("cancel");
    }
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{}:idem:k-1", r.prefix))
        .query_async(&mut c)
        .await
        .expect("del");
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{}:idem:k-1", r.prefix))
        .arg("f")
        .arg("v")
        .query_async(&mut c)
        .await
        .expect("hset");
    let report = s.retention(now_us() + 1).await.expect("retention goes on");
    assert_eq!(report.jobs, 2, "both finished jobs deleted");
    for j in [&keyed, &plain] {
        assert!(s.get(j.id).await.expect("get").is_none());
    }
}

/// The shared job counts (`P:jc`, a hash) replaced by a string cost the counts only: submits,
/// claims and retention go on, and the next read of the counts rebuilds them from the jobs (the
/// key a hash again, every job counted). Before, every commit failed after writing its job's
/// hash: the submit answered an error and its job was stored but in no queue and no listing (it
/// never ran); retention failed on every pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counts_key_of_another_type_costs_the_counts_only_and_they_are_rebuilt() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let first = submit_n(&s, "r", 1).await;
    // Counted once (the counts are built and this handle knows it).
    s.job_counts().await.expect("counts");
    let done = Job::new("t", "r", now_us());
    s.submit(done.clone()).await.expect("submit");
    s.apply(done.id, Command::Cancel).await.expect("cancel");
    let mut c = raw_conn(&r).await;
    let jc = format!("{}:jc", r.prefix);
    let _: () = ::redis::cmd("DEL")
        .arg(&jc)
        .query_async(&mut c)
        .await
        .expect("del");
    let _: () = ::redis::cmd("SET")
        .arg(&jc)
        .arg("garbage")
        .query_async(&mut c)
        .await
        .expect("set");
    let later = submit_n(&s, "r", 2).await;
    let claimed = s.claim("r", "w", 10, LEASE).await.expect("claim");
    let mut want = ids(&first);
    want.extend(ids(&later));
    assert_eq!(
        ids(&claimed),
        want,
        "every job queued and claimed, in order"
    );
    let report = s.retention(now_us() + 1).await.expect("retention goes on");
    assert_eq!(report.jobs, 1, "the cancelled job deleted");
    let counts = s.job_counts().await.expect("the counts, rebuilt");
    let starting = counts
        .by_type_status
        .get(&("t".to_string(), JobStatus::Starting));
    assert_eq!(starting, Some(&3), "{:?}", counts.by_type_status);
    assert_eq!(
        counts.by_type_status.len(),
        1,
        "{:?}",
        counts.by_type_status
    );
    // Kept in step again from then on.
    submit_n(&s, "r", 1).await;
    let counts = s.job_counts().await.expect("counts");
    let queued = counts
        .by_type_status
        .get(&("t".to_string(), JobStatus::Queued));
    assert_eq!(queued, Some(&1), "{:?}", counts.by_type_status);
    let kind: String = ::redis::cmd("TYPE")
        .arg(&jc)
        .query_async(&mut c)
        .await
        .expect("type");
    assert_eq!(kind, "hash");
    // A count that is not a number (a hand edit): the other counts are kept, and the next read
    // counts the jobs again.
    let _: () = ::redis::cmd("HSET")
        .arg(&jc)
        .arg("t\nSTARTING")
        .arg("garbage")
        .query_async(&mut c)
        .await
        .expect("hset");
    submit_n(&s, "r", 1).await;
    let counts = s.job_counts().await.expect("the counts, rebuilt");
    let want = [(JobStatus::Starting, 3), (JobStatus::Queued, 2)]
        .map(|(st, n)| (("t".to_string(), st), n))
        .into_iter()
        .collect();
    assert_eq!(counts.by_type_status, want);
}
