//! Redis: a job record this build cannot read (written by hand, by a bug, or in a form a build
//! before it never knew) is left out of the rounds that meet it with others (a claim, the
//! heartbeats, the expired leases, the promotion of due jobs), logged, instead of failing the
//! whole round and so holding up every other job it meets, round after round.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Job, JobStatus};
use runyard::store::Store;
use uuid::Uuid;

use redis_support::{open_store, raw_conn, TestRedis};

const LEASE: Duration = Duration::from_secs(30);

/// Overwrites the record of job `id` with text no build reads.
async fn spoil(r: &TestRedis, id: Uuid) {
    let mut c = raw_conn(r).await;
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{}:job:{id}", r.prefix))
        .arg("b")
        .arg(r#"{"broken"#)
        .query_async(&mut c)
        .await
        .expect("hset");
}

/// Overwrites the record of job `id` with bytes that are not UTF-8 (`{` then 0xFF).
async fn spoil_bytes(r: &TestRedis, id: Uuid) {
    let mut c = raw_conn(r).await;
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{}:job:{id}", r.prefix))
        .arg("b")
        .arg(&b"{\xff"[..])
        .query_async(&mut c)
        .await
        .expect("hset");
}

async fn submit(s: &Arc<dyn Store>, j: Job) -> Job {
    s.submit(j).await.expect("submit").job
}

fn ids(jobs: &[Job]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_the_readable_jobs_past_an_unreadable_one() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let bad = submit(&s, Job::new("t", "r", now_us())).await;
    let a = submit(&s, Job::new("t", "r", now_us())).await;
    let b = submit(&s, Job::new("t", "r", now_us())).await;
    spoil(&r, bad.id).await;
    let got = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(ids(&got), vec![a.id, b.id]);
    assert!(got.iter().all(|j| j.status == JobStatus::Starting));
}

/// A job record that is not UTF-8 is an unreadable record like the others (a corrupt record,
/// left out of a claim): before, the read of it failed as a type error ("Cannot convert from
/// UTF-8"), the claim with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_is_an_unreadable_record() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let bad = submit(&s, Job::new("t", "r", now_us())).await;
    let a = submit(&s, Job::new("t", "r", now_us())).await;
    spoil_bytes(&r, bad.id).await;
    let e = s.get(bad.id).await.expect_err("does not read");
    assert!(e.to_string().contains("corrupt record"), "{e}");
    let got = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(ids(&got), vec![a.id]);
}

/// The stored record (`b`) of job `id`, as bytes.
async fn record(r: &TestRedis, id: Uuid) -> Vec<u8> {
    let mut c = raw_conn(r).await;
    ::redis::cmd("HGET")
        .arg(format!("{}:job:{id}", r.prefix))
        .arg("b")
        .query_async(&mut c)
        .await
        .expect("hget")
}

/// A job record that is JSON but for one byte that is not UTF-8 inside a string (its args
/// `"caf\xE9"`, written by hand or by another program) is a corrupt record: left out of a
/// claim, its bytes left as they are. Before, it read lossily (U+FFFD) and the claim took it
/// and saved the changed text for good: the worker and `GET` saw other args.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_not_utf8_inside_a_string_is_not_claimed_nor_rewritten() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let mut j = Job::new("t", "r", now_us());
    j.args = serde_json::json!("cafe");
    let bad = submit(&s, j).await;
    let a = submit(&s, Job::new("t", "r", now_us())).await;
    let mut c = raw_conn(&r).await;
    let n: i64 = ::redis::cmd("EVAL")
        .arg(
            "local b = redis.call('HGET', KEYS[1], 'b') \
             local n, k = string.gsub(b, 'cafe', 'caf' .. string.char(233)) \
             redis.call('HSET', KEYS[1], 'b', n) return k",
        )
        .arg(1)
        .arg(format!("{}:job:{}", r.prefix, bad.id))
        .query_async(&mut c)
        .await
        .expect("eval");
    assert_eq!(n, 1, "the args rewritten by hand");
    let before = record(&r, bad.id).await;
    assert!(before.windows(5).any(|w| w == b"caf\xE9\""));

    let got = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(ids(&got), vec![a.id], "the record not UTF-8 is left out");
    let e = s.get(bad.id).await.expect_err("does not read");
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    assert_eq!(record(&r, bad.id).await, before, "its bytes are unchanged");
}

/// A held job whose record becomes unreadable is reported lost (its worker stops it: its lease
/// cannot be renewed); the others held are renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_reports_an_unreadable_job_lost_and_renews_the_others() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let bad = submit(&s, Job::new("t", "r", now_us())).await;
    let a = submit(&s, Job::new("t", "r", now_us())).await;
    let got = s
        .claim("r", "w", 10, Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(ids(&got), vec![bad.id, a.id]);
    let token = |j: &Job| j.lease.as_ref().expect("lease").token;
    let before = got[1].lease.as_ref().expect("lease").expires_at;
    spoil(&r, bad.id).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let held = [(bad.id, token(&got[0])), (a.id, token(&got[1]))];
    let lost = s.heartbeat("w", &held, LEASE).await.expect("heartbeat");
    assert_eq!(lost, vec![bad.id]);
    let renewed = s.get(a.id).await.expect("get").expect("stored");
    assert!(renewed.lease.expect("lease").expires_at > before);
}

/// The promote loop, meeting a due job it cannot promote, asks again after a wait that doubles
/// (10 ms up to a second: about 8 rounds in 0.7 s) instead of at once, round after round; the
/// readable due job is promoted. (Its own redis-server: the count is of the whole server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promote_loop_does_not_spin_on_an_unreadable_due_job() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = open_store(&r).await;
    let first = submit(&s, due_in(20_000)).await;
    let second = submit(&s, due_in(20_000)).await;
    spoil(&r, first.id).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let rounds = promote_rounds(&r, &s).await;
    assert!(
        (2..=12).contains(&rounds),
        "{rounds} promotion rounds in 0.7 s"
    );
    let now = s.get(second.id).await.expect("get").expect("stored");
    assert_eq!(now.status, JobStatus::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promote_loop_does_not_spin_while_jobs_come_due_behind_an_unreadable_one() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = open_store(&r).await;
    let first = submit(&s, due_in(20_000)).await;
    spoil(&r, first.id).await;
    // A readable job coming due every 50 ms behind it: each promoted one restarted the wait at
    // 10 ms, and the loop asked about four times per job.
    let mut later = Vec::new();
    for i in 1..=14 {
        later.push(submit(&s, due_in(40_000 + i * 50_000)).await);
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let rounds = promote_rounds(&r, &s).await;
    assert!(
        (2..=16).contains(&rounds),
        "{rounds} promotion rounds in 0.7 s"
    );
    let mut promoted = 0;
    for j in &later {
        let now = s.get(j.id).await.expect("get").expect("stored");
        promoted += usize::from(now.status == JobStatus::Queued);
    }
    assert!(promoted >= 1, "the jobs behind it are promoted");
}

/// `n` jobs submitted, then claimed in one claim with a lease of 1 ms (in the order submitted).
async fn claimed_for_1_ms(s: &Arc<dyn Store>, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for _ in 0..n {
        jobs.push(submit(s, Job::new("t", "short", now_us())).await);
    }
    let claimed = s
        .claim("short", "w", 10, Duration::from_millis(1))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), ids(&jobs));
    claimed
}

/// A job SCHEDULED `us` from now.
fn due_in(us: i64) -> Job {
    let mut j = Job::new("t", "sched", now_us());
    j.status = JobStatus::Scheduled;
    j.run_at = Some(now_us() + us);
    j
}

/// How many promotion rounds the promote loop makes in 0.7 s (`ZRANGEBYSCORE` calls).
async fn promote_rounds(r: &TestRedis, s: &Arc<dyn Store>) -> u64 {
    let stop = tokio_util::sync::CancellationToken::new();
    let before = redis_support::calls(&r.url, &["zrangebyscore"]).await;
    let task = tokio::spawn(runyard::scheduler::promote_loop(s.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rounds = redis_support::calls(&r.url, &["zrangebyscore"]).await - before;
    stop.cancel();
    task.await.expect("loop ends");
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_and_the_promotion_pass_an_unreadable_record() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    // Expired leases: two claimed with a lease of 1 ms, one spoiled.
    let claimed = claimed_for_1_ms(&s, 2).await;
    let (x, y) = (&claimed[0], &claimed[1]);
    spoil(&r, x.id).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = s.expired(100).await.expect("expired");
    assert_eq!(ids(&expired), vec![y.id]);
    // Due scheduled jobs: the spoiled one first, the other promoted all the same.
    let first = submit(&s, due_in(30_000)).await;
    let second = submit(&s, due_in(30_000)).await;
    spoil(&r, first.id).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(s.promote_due(100).await.expect("promote"), 1);
    let now = s.get(second.id).await.expect("get").expect("stored");
    assert_eq!(now.status, JobStatus::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_expired_leases_do_not_hide_the_readable_ones_behind_them() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    // Five expired leases, the first, third and fourth unreadable: a reaper asking for two at a
    // time gets the readable ones all the same, oldest first (one claim: one expiry for all
    // five, so they are in the order of their ids, which `Uuid::now_v7` makes the order of
    // submission).
    let jobs = claimed_for_1_ms(&s, 5).await;
    spoil(&r, jobs[0].id).await;
    // The third's record is not UTF-8: a corrupt record passed as the others, not a reply
    // that fails every reap.
    spoil_bytes(&r, jobs[2].id).await;
    // The fourth has no record at all (a hand edit): read as an unreadable one, not an error
    // of the whole call.
    let mut c = raw_conn(&r).await;
    let _: () = ::redis::cmd("HDEL")
        .arg(format!("{}:job:{}", r.prefix, jobs[3].id))
        .arg("b")
        .query_async(&mut c)
        .await
        .expect("hdel");
    // And, oldest of all, an entry without its job, which the script drops on its way: it
    // must not count as one of the entries still in front of the next page.
    let lease = format!("{}:lease", r.prefix);
    let _: () = ::redis::cmd("ZADD")
        .arg(&lease)
        .arg(0)
        .arg(Uuid::now_v7().to_string())
        .query_async(&mut c)
        .await
        .expect("zadd");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = s.expired(2).await.expect("expired");
    assert_eq!(ids(&expired), vec![jobs[1].id, jobs[4].id]);
    // Never more than asked for.
    assert_eq!(ids(&s.expired(1).await.expect("expired")), vec![jobs[1].id]);
    // Nothing readable left once those are reaped: none returned, the spoiled ones stay.
    for j in [&jobs[1], &jobs[4]] {
        s.apply(j.id, runyard::job::Command::LeaseExpired { token: None })
            .await
            .expect("reap");
    }
    assert!(s.expired(2).await.expect("expired").is_empty());
    let left: usize = ::redis::cmd("ZCARD")
        .arg(&lease)
        .query_async(&mut c)
        .await
        .expect("zcard");
    assert_eq!(
        left, 3,
        "the three spoiled leases stay for a build that reads them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_due_jobs_do_not_hold_back_the_readable_ones_behind_them() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    // Five due jobs, the three oldest spoiled: promotions of one or two at a time promote the
    // two readable ones.
    let mut jobs = Vec::new();
    for i in 0..5 {
        let mut j = Job::new("t", "sched", now_us());
        j.status = JobStatus::Scheduled;
        j.run_at = Some(now_us() + 30_000 + i);
        jobs.push(submit(&s, j).await);
    }
    for j in &jobs[..3] {
        spoil(&r, j.id).await;
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Never more than asked for: one of the two, then the other.
    assert_eq!(s.promote_due(1).await.expect("promote"), 1);
    assert_eq!(s.promote_due(2).await.expect("promote"), 1);
    for j in &jobs[3..] {
        let now = s.get(j.id).await.expect("get").expect("stored");
        assert_eq!(now.status, JobStatus::Queued);
    }
    assert_eq!(s.promote_due(2).await.expect("promote"), 0);
    // Three more due behind the spoiled ones: a page that holds the last spoiled one and a
    // readable one, then one with two readable ones: still no more than asked for.
    for i in 0..3 {
        submit(&s, due_in(30_000 + i)).await;
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(s.promote_due(2).await.expect("promote"), 2);
    assert_eq!(s.promote_due(2).await.expect("promote"), 1);
}

/// A job whose version (`v`) is not a number (written by hand) is a corrupt record: a write to
/// it says so at once, and changes nothing. Before, every write reloaded and applied again, a
/// hundred times, and failed as `gave up after 100 conflicting writes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_job_whose_version_is_not_a_number_reports_a_corrupt_record() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = submit(&s, Job::new("t", "r", now_us())).await;
    let got = s.claim("r", "w", 1, LEASE).await.expect("claim");
    assert_eq!(ids(&got), vec![j.id]);
    let mut c = raw_conn(&r).await;
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{}:job:{}", r.prefix, j.id))
        .arg("v")
        .arg("notanumber")
        .query_async(&mut c)
        .await
        .expect("hset");
    let e = s
        .apply(j.id, runyard::job::Command::Cancel)
        .await
        .expect_err("a write to it fails");
    let e = e.to_string();
    assert!(
        e.contains("corrupt record") && e.contains(&j.id.to_string()) && e.contains("not a number"),
        "{e}"
    );
    let now = s.get(j.id).await.expect("get").expect("stored");
    assert_eq!(now.status, JobStatus::Starting, "nothing changed");
}
