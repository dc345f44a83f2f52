//! Hand-over at submit on Redis (src/store/redis/handover.rs), between two real store handles
//! (two processes' worth: each its own notice origin, hand-over list and reader) on a real
//! `redis-server`:
//!
//! - a worker parked in one process gets the jobs another process submits, claimed for it (its
//!   lease, a fencing token, STARTING) and never in the runner's queue, up to its places; the
//!   next job is queued and announced as before;
//! - a job handed over to a worker that withdrew (its park still in Redis) is given back: QUEUED
//!   in its queue again, claimable;
//! - a job handed over to a process that died (nobody reads its list) is not lost: the reaper
//!   puts it back in its queue once its reservation expires;
//! - with the switch off (the default; `RUNYARD_REDIS_HANDOVER=on` turns it on for a node),
//!   nothing parks and submits queue as before, a live park notwithstanding; and a job is handed
//!   over only when no older job of its runner is QUEUED.

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runyard::job::{Job, JobStatus};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{JobQueue, JobStore, Store};

use redis_support::TestRedis;

const LEASE: Duration = Duration::from_secs(30);

async fn store(r: &TestRedis, handover: bool) -> Arc<RedisStore> {
    RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        handover,
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connects")
}

fn job(runner: &str) -> Job {
    redis_support::queued_job(runner)
}

async fn conn(r: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(r.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The members of the sorted set `P:{kind}{runner}`, lowest score first.
async fn members(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    kind: &str,
    runner: &str,
) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("{}:{kind}{runner}", r.prefix))
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .unwrap()
}

/// The members of `P:park:{runner}` (the parks in Redis).
async fn parks(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    runner: &str,
) -> Vec<String> {
    members(c, r, "park:", runner).await
}

/// Waits (bounded) until `P:park:{runner}` has `n` members; returns them.
async fn parks_become(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    runner: &str,
    n: usize,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let p = parks(c, r, runner).await;
        if p.len() == n {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "parks {p:?}, want {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ids in `P:q:{runner}` (the runner's queue), oldest first.
async fn queued_ids(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    runner: &str,
) -> Vec<String> {
    members(c, r, "q:", runner).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_worker_gets_the_jobs_another_process_submits_claimed_for_it() {
    let r = TestRedis::start();
    let (worker, api) = (store(&r, true).await, store(&r, true).await);
    let mut c = conn(&r).await;
    assert!(worker
        .claim("run", "w1", 2, LEASE)
        .await
        .unwrap()
        .is_empty());
    let mut parked = worker.park("run", "w1", LEASE, 2).expect("redis parks");
    parks_become(&mut c, &r, "run", 1).await;

    let mut tokens = Vec::new();
    for _ in 0..2 {
        let j = job("run");
        api.submit(j.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), parked.recv())
            .await
            .expect("handed over in time")
            .expect("a job, not a rollback");
        assert_eq!(got.id, j.id);
        assert_eq!(got.status, JobStatus::Starting);
        assert_eq!(got.attempt, 1);
        let lease = got.lease.clone().expect("claimed with a lease");
        assert_eq!(lease.worker, "w1");
        tokens.push(lease.token);
        // As every process reads it: claimed, never in the runner's queue.
        let seen = api.get(j.id).await.unwrap().expect("stored");
        assert_eq!(seen.status, JobStatus::Starting);
        assert_eq!(seen.lease.map(|l| l.token), Some(lease.token));
        assert!(queued_ids(&mut c, &r, "run").await.is_empty());
    }
    assert!(tokens[1] > tokens[0], "fencing tokens increase: {tokens:?}");
    // Both places taken: the park is gone from Redis and the worker hears no more will come.
    assert!(parks(&mut c, &r, "run").await.is_empty());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), parked.answer())
            .await
            .expect("answered"),
        None
    );
    // The next job is queued as before, and claimed by the worker's own claim.
    let mut rx = worker.subscribe();
    let j = job("run");
    api.submit(j.clone()).await.unwrap();
    assert_eq!(queued_ids(&mut c, &r, "run").await, [j.id.to_string()]);
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(runyard::store::Notice::Queued { runner }) = rx.recv().await {
                return runner;
            }
        }
    })
    .await
    .expect("announced");
    assert_eq!(heard, "run");
    let got = worker.claim("run", "w1", 2, LEASE).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [j.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_to_a_worker_that_withdrew_is_given_back() {
    let r = TestRedis::start();
    let (worker, api) = (store(&r, true).await, store(&r, true).await);
    let mut c = conn(&r).await;
    let parked = worker.park("run", "w1", LEASE, 1).expect("redis parks");
    let member = parks_become(&mut c, &r, "run", 1).await.remove(0);
    assert!(parked.withdraw().await.is_empty());
    parks_become(&mut c, &r, "run", 0).await;
    // The race: a submit takes the park before its withdrawal reaches Redis. The same member is
    // written back by hand, as it was before the withdrawal.
    let _: () = redis::pipe()
        .zadd(format!("{}:park:run", r.prefix), &member, i64::MAX / 2)
        .hset(format!("{}:parkn:run", r.prefix), &member, 1)
        .query_async(&mut c)
        .await
        .unwrap();
    let j = job("run");
    api.submit(j.clone()).await.unwrap();
    let start = Instant::now();
    while queued_ids(&mut c, &r, "run").await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never given back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queued_ids(&mut c, &r, "run").await, [j.id.to_string()]);
    assert!(
        parks(&mut c, &r, "run").await.is_empty(),
        "its one place was taken"
    );
    let seen = api.get(j.id).await.unwrap().expect("stored");
    assert_eq!((seen.status, seen.lease), (JobStatus::Queued, None));
    let got = api.claim("run", "w2", 1, LEASE).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [j.id]);
    assert_eq!(got[0].lease.as_ref().map(|l| l.worker.as_str()), Some("w2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_to_a_dead_process_is_requeued_when_its_reservation_expires() {
    let r = TestRedis::start();
    let api = store(&r, true).await;
    let s: Arc<dyn Store> = api.clone();
    let mut c = conn(&r).await;
    // A park of a process that is gone: nobody reads its list. Its lease is 50 ms.
    let member = "0123456789abcdef0123456789abcdef|7|50000";
    let _: () = redis::pipe()
        .zadd(format!("{}:park:run", r.prefix), member, i64::MAX / 2)
        .hset(format!("{}:parkn:run", r.prefix), member, 1)
        .query_async(&mut c)
        .await
        .unwrap();
    let j = job("run");
    s.submit(j.clone()).await.unwrap();
    assert!(
        queued_ids(&mut c, &r, "run").await.is_empty(),
        "handed over"
    );
    let seen = s.get(j.id).await.unwrap().expect("stored");
    assert_eq!(seen.status, JobStatus::Queued, "not claimed by anyone yet");
    assert!(s.claim("run", "w2", 1, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The reaper's pass puts it back in its queue; a claim then gets it.
    assert!(s.expired(100).await.unwrap().is_empty());
    assert_eq!(queued_ids(&mut c, &r, "run").await, [j.id.to_string()]);
    let got = s.claim("run", "w2", 1, LEASE).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [j.id]);
    // The next submit is queued: the dead park's one place is spent.
    let k = job("run");
    s.submit(k.clone()).await.unwrap();
    assert_eq!(queued_ids(&mut c, &r, "run").await, [k.id.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_nothing_parks_and_submits_queue_and_older_queued_jobs_go_first() {
    let r = TestRedis::start();
    let (off, on) = (store(&r, false).await, store(&r, true).await);
    let mut c = conn(&r).await;
    assert!(off.park("run", "w1", LEASE, 4).is_none());
    // A live park with places: a node with the hand-over off still queues its submits.
    let parked = on.park("run", "w2", LEASE, 4).expect("redis parks");
    parks_become(&mut c, &r, "run", 1).await;
    let first = job("run");
    off.submit(first.clone()).await.unwrap();
    assert_eq!(queued_ids(&mut c, &r, "run").await, [first.id.to_string()]);
    // An older job is QUEUED: a submit with the hand-over on queues behind it, first in first out.
    let second = job("run");
    on.submit(second.clone()).await.unwrap();
    assert_eq!(queued_ids(&mut c, &r, "run").await.len(), 2);
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:hand:*", r.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(lists.is_empty(), "nothing handed over: {lists:?}");
    assert!(parked.withdraw().await.is_empty());
    let got = on.claim("run", "w2", 4, LEASE).await.unwrap();
    assert_eq!(
        got.iter().map(|j| j.id).collect::<Vec<_>>(),
        [first.id, second.id]
    );
}
