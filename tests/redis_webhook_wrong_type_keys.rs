//! Redis: ONE webhook delivery key of the wrong type (`SET P:dlv:{n} garbage`, its attempt log
//! `P:dlvlog:{n}`, or an endpoint's pending set `P:dlv:ep:{id}`: an operator's mistake, another
//! program sharing the Redis) costs its own delivery or endpoint only. The claim passes it, takes
//! it out of the pending sets (met once, logged naming the key) and claims every other due
//! delivery. Before, every claim of every process failed on it (`WRONGTYPE`, the key unnamed), so
//! no webhook was delivered at all while it was there.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::Command;
use runyard::job::{now_us, Job};
use runyard::notify::{NotifyEvent, NotifySpec};
use runyard::store::deliveries::{
    Attempt, AttemptOutcome, ClaimLimits, DeliveryPage, DeliveryState, Outcome,
};
use runyard::store::Store;
use uuid::Uuid;

use redis_support::{open_store, raw_conn, TestRedis};

const HOLD: Duration = Duration::from_secs(30);
const OK_URL: &str = "https://ok.example.com/hook";

/// A job whose webhook wants its status events, submitted: its QUEUED event's delivery is due.
async fn notified(s: &Arc<dyn Store>, url: &str) -> Job {
    let mut j = Job::new("wh.t", "r", now_us());
    j.notify = Some(NotifySpec {
        url: url.into(),
        events: vec![NotifyEvent::Status],
    });
    s.submit(j).await.expect("submit").job
}

/// The id of `job`'s only delivery.
async fn delivery_of(s: &Arc<dyn Store>, job: Uuid) -> u64 {
    let d = s.deliveries(job, 10).await.expect("deliveries");
    assert_eq!(d.len(), 1, "{d:?}");
    d[0].id
}

/// Replaces `P:{name}` by a string.
async fn garble(r: &TestRedis, name: &str) {
    let mut c = raw_conn(r).await;
    let key = format!("{}:{name}", r.prefix);
    let _: () = ::redis::pipe()
        .cmd("DEL")
        .arg(&key)
        .cmd("SET")
        .arg(&key)
        .arg("garbage")
        .query_async(&mut c)
        .await
        .expect("garble");
}

async fn claim(s: &Arc<dyn Store>) -> Vec<runyard::store::deliveries::Claimed> {
    s.deliveries_claim(100, HOLD, ClaimLimits::unlimited())
        .await
        .expect("the claim passes keys of the wrong type")
}

/// An endpoint's id, as the store names its keys (`redis.sha1hex` of the URL up to its query).
async fn endpoint_id(r: &TestRedis, endpoint: &str) -> String {
    let mut c = raw_conn(r).await;
    ::redis::cmd("EVAL")
        .arg("return redis.sha1hex(ARGV[1])")
        .arg(0)
        .arg(endpoint)
        .query_async(&mut c)
        .await
        .expect("sha1hex")
}

async fn eps(r: &TestRedis) -> Vec<String> {
    let mut c = raw_conn(r).await;
    ::redis::cmd("ZRANGE")
        .arg(format!("{}:dlv:eps", r.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("zrange")
}

fn accepted() -> Attempt {
    Attempt {
        at: now_us(),
        by: None,
        outcome: Some(AttemptOutcome::Accepted),
        status: Some(200),
        error: None,
        duration_ms: Some(1),
    }
}

/// The probe's case: a pending delivery's hash replaced by a string (and another's attempt log),
/// then ten deliveries to a healthy receiver: all ten are claimed and recorded; the damaged ones
/// are taken out of the pending deliveries (met no more), their keys left as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_key_of_another_type_costs_that_delivery_only() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let bad = notified(&s, "https://dead.example.com/hook").await;
    let bad_log = notified(&s, "https://dead.example.com/other").await;
    let (n, n_log) = (
        delivery_of(&s, bad.id).await,
        delivery_of(&s, bad_log.id).await,
    );
    garble(&r, &format!("dlv:{n}")).await;
    garble(&r, &format!("dlvlog:{n_log}")).await;
    let mut healthy = Vec::new();
    for _ in 0..10 {
        healthy.push(notified(&s, OK_URL).await.id);
    }
    assert_eq!(s.deliveries_pending().await.unwrap(), 12);
    let c = claim(&s).await;
    let mut got: Vec<Uuid> = c.iter().map(|c| c.delivery.job_id).collect();
    got.sort();
    healthy.sort();
    assert_eq!(got, healthy, "every healthy delivery is claimed");
    // The damaged ones are no longer pending: no claim meets them again.
    assert_eq!(s.deliveries_pending().await.unwrap(), 10);
    assert!(claim(&s).await.is_empty());
    for c in &c {
        assert_eq!(
            s.delivery_record(c, accepted(), Outcome::Delivered)
                .await
                .unwrap(),
            Some(DeliveryState::Delivered)
        );
    }
    assert_eq!(s.deliveries_pending().await.unwrap(), 0);
    assert_eq!(s.deliveries_next_due().await.unwrap(), None);
    // The keys are left as they were.
    let mut raw = raw_conn(&r).await;
    let v: String = ::redis::cmd("GET")
        .arg(format!("{}:dlv:{n}", r.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(v, "garbage");
}

/// An endpoint's pending set replaced by a string (a real endpoint's, with a delivery pending,
/// and a made-up one in `P:dlv:eps`): every other endpoint's deliveries are claimed; the damaged
/// endpoints leave the walk (met no more) and are never due for the delivery loop again, which
/// would otherwise claim again and again finding nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_key_of_another_type_costs_that_endpoint_only() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let stuck = notified(&s, "https://bad.example.com/hook?x=1").await;
    let ep = endpoint_id(&r, "https://bad.example.com/hook").await;
    garble(&r, &format!("dlv:ep:{ep}")).await;
    let made_up = "f".repeat(40);
    garble(&r, &format!("dlv:ep:{made_up}")).await;
    let mut raw = raw_conn(&r).await;
    let _: () = ::redis::cmd("ZADD")
        .arg(format!("{}:dlv:eps", r.prefix))
        .arg(1)
        .arg(&made_up)
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut healthy = Vec::new();
    for _ in 0..3 {
        healthy.push(notified(&s, OK_URL).await.id);
    }
    let c = claim(&s).await;
    let mut got: Vec<Uuid> = c.iter().map(|c| c.delivery.job_id).collect();
    got.sort();
    healthy.sort();
    assert_eq!(
        got, healthy,
        "every other endpoint's deliveries are claimed"
    );
    assert_eq!(eps(&r).await, vec![endpoint_id(&r, OK_URL).await]);
    assert!(claim(&s).await.is_empty());
    // Its delivery stays pending (counted), not due for the loop: the next due is the end of
    // the healthy claims' hold.
    assert_eq!(s.deliveries_pending().await.unwrap(), 4);
    let next = s.deliveries_next_due().await.unwrap().expect("the holds");
    assert!(next > now_us() + 10_000_000, "{next}");
    let d = s.deliveries(stuck.id, 10).await.unwrap();
    assert_eq!(d[0].state, DeliveryState::Pending);
    // The recovery docs/redis.md gives: the damaged key deleted, the script puts the
    // endpoint's pending deliveries back, and the next claim takes them.
    let ek = format!("{}:dlv:ep:{ep}", r.prefix);
    let _: () = ::redis::cmd("DEL")
        .arg(&ek)
        .query_async(&mut raw)
        .await
        .unwrap();
    // Page by page (one pending delivery a call here: the four pending ones, the three held
    // ones of one due time among them, walked by the cursor's score and offset).
    let script = ::redis::Script::new(include_str!("../scripts/redis-dlv-endpoint-restore.lua"));
    let (mut cursor, mut restored, mut calls) = ("-inf".to_string(), 0_i64, 0);
    while cursor != "done" {
        calls += 1;
        assert!(calls <= 10, "the pages never end: {cursor}");
        (cursor, restored) = script
            .key(format!("{}:dlv:pend", r.prefix))
            .key(&ek)
            .key(format!("{}:dlv:eps", r.prefix))
            .arg(&ep)
            .arg(format!("{}:dlv:", r.prefix))
            .arg(&cursor)
            .arg(1)
            .invoke_async(&mut raw)
            .await
            .expect("the restore script");
    }
    assert_eq!(restored, 1);
    assert_eq!(calls, 5, "four pages of one, then the end");
    let c = claim(&s).await;
    assert_eq!(
        c.iter().map(|c| c.delivery.job_id).collect::<Vec<_>>(),
        vec![stuck.id]
    );
}

/// A key every delivery shares (`P:dlv:pend`, `P:dlv:eps`, the earlier layout's `P:dlv:due`) of
/// the wrong type fails the claim naming it, having written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_delivery_key_of_another_type_fails_the_claim_naming_it() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    garble(&r, "dlv:due").await;
    let e = s
        .deliveries_claim(10, HOLD, ClaimLimits::unlimited())
        .await
        .expect_err("the claim fails");
    assert!(
        e.to_string().contains(&format!("{}:dlv:due", r.prefix)),
        "{e}"
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert!(d[0].log.is_empty(), "nothing claimed: {d:?}");
    assert_eq!(d[0].attempts, 0);
}

/// A record that meets a key of the wrong type (here the delivery's attempt log, damaged while
/// its attempt was in flight) fails naming it, having written nothing: the claim still holds,
/// and the next claim passes the delivery (taken out of the pending deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_meets_a_key_of_another_type_writes_nothing() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    let n = delivery_of(&s, j.id).await;
    let c = s
        .deliveries_claim(10, Duration::from_millis(300), ClaimLimits::unlimited())
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    garble(&r, &format!("dlvlog:{n}")).await;
    let e = s
        .delivery_record(&c[0], accepted(), Outcome::Delivered)
        .await
        .expect_err("the record fails");
    assert!(
        e.to_string().contains(&format!("{}:dlvlog:{n}", r.prefix)),
        "{e}"
    );
    let mut raw = raw_conn(&r).await;
    let (st, n_att, held): (String, Option<String>, Option<String>) = ::redis::cmd("HMGET")
        .arg(format!("{}:dlv:{n}", r.prefix))
        .arg(&["st", "n", "c"])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        (st.as_str(), n_att, held.is_some()),
        ("pending", Some("0".to_string()), true),
        "nothing written"
    );
    assert_eq!(s.deliveries_pending().await.unwrap(), 1);
    // Once its hold ran out, the next claim passes it for good.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while s.deliveries_pending().await.unwrap() == 1 {
        assert!(claim(&s).await.is_empty());
        assert!(std::time::Instant::now() < until, "never passed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.deliveries_pending().await.unwrap(), 0);
}

/// A job's deliveries listed while one of them has a key of the wrong type: the others are
/// listed, that one left out (logged). Before, the job's listing failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_leaves_out_a_delivery_key_of_another_type() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    let first = delivery_of(&s, j.id).await;
    // Its next status event (claimed: STARTING) has a delivery of its own.
    let c = s
        .claim("r", "w", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    garble(&r, &format!("dlv:{first}")).await;
    let d = s.deliveries(j.id, 10).await.expect("the listing passes it");
    assert_eq!(d.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d[0].id]);
    assert_ne!(d[0].id, first);
    garble(&r, &format!("dlvlog:{}", d[0].id)).await;
    assert!(s.deliveries(j.id, 10).await.unwrap().is_empty());
}

/// `P:dlv:done` (ended deliveries) of the wrong type: every record of an ended attempt writes it,
/// so the claim checks it first and fails naming it, having written nothing: nothing is sent.
/// Before, the claim took the delivery and its request went out, the record failed, and the
/// delivery was sent again at the end of every hold, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_set_of_another_type_fails_the_claim_before_anything_is_sent() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    garble(&r, "dlv:done").await;
    let e = s
        .deliveries_claim(10, HOLD, ClaimLimits::unlimited())
        .await
        .expect_err("the claim fails");
    assert!(
        e.to_string().contains(&format!("{}:dlv:done", r.prefix)),
        "{e}"
    );
    let d = s.deliveries(j.id, 10).await.unwrap();
    assert!(d[0].log.is_empty(), "nothing claimed: {d:?}");
    assert_eq!(d[0].attempts, 0);
    assert_eq!(d[0].state, DeliveryState::Pending);
}

/// The ids of a page of `job`'s deliveries.
async fn page(s: &Arc<dyn Store>, job: Uuid, from: DeliveryPage, limit: usize) -> Vec<u64> {
    let d = s.deliveries_page(job, from, limit).await.expect("page");
    d.iter().map(|d| d.id).collect()
}

/// A delivery left out of a listing (its hash of the wrong type) does not shorten the page: a
/// page shorter than `limit` is the end (docs/api.md), so the page is topped up from the job's
/// index. Before, with [bad, 2, 3] and limit 2 the first page was [2] alone, and a client
/// stopped there; with limit 1 the first page was empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_left_out_of_a_listing_does_not_end_its_pages_early() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    // Its next status events (STARTING, CANCELLED) have deliveries of their own.
    let c = s
        .claim("r", "w", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let all = page(&s, j.id, DeliveryPage::After(0), 10).await;
    assert_eq!(all.len(), 3, "{all:?}");
    garble(&r, &format!("dlv:{}", all[0])).await;
    let (two, three) = (all[1], all[2]);
    assert_eq!(
        page(&s, j.id, DeliveryPage::After(0), 2).await,
        vec![two, three]
    );
    assert_eq!(page(&s, j.id, DeliveryPage::After(0), 1).await, vec![two]);
    assert_eq!(
        page(&s, j.id, DeliveryPage::After(two), 1).await,
        vec![three]
    );
    assert!(page(&s, j.id, DeliveryPage::After(three), 1)
        .await
        .is_empty());
    // Newest first, the damaged one last: the page ends at the index's end.
    assert_eq!(
        page(&s, j.id, DeliveryPage::Before(None), 2).await,
        vec![three, two]
    );
    assert!(page(&s, j.id, DeliveryPage::Before(Some(two)), 1)
        .await
        .is_empty());
    // Two damaged in a row, limit 1: the page is the first readable one.
    garble(&r, &format!("dlv:{two}")).await;
    assert_eq!(page(&s, j.id, DeliveryPage::After(0), 1).await, vec![three]);
}

/// An ended delivery whose hash is of the wrong type does not stop the trim of ended
/// deliveries: it leaves `P:dlv:done` (met once, logged), its key left as it is, and the later
/// ended deliveries are trimmed. Before, every trim failed on it (`WRONGTYPE`, the key
/// unnamed), every minute on every node, and no ended delivery was trimmed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_delivery_of_another_type_does_not_stop_the_trim() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let (a, b) = (notified(&s, OK_URL).await, notified(&s, OK_URL).await);
    let n = delivery_of(&s, a.id).await;
    let c = claim(&s).await;
    assert_eq!(c.len(), 2);
    // `a`'s ends first: the trim meets it first.
    let mut c = c;
    c.sort_by_key(|c| c.delivery.id != n);
    for c in &c {
        let st = s.delivery_record(c, accepted(), Outcome::Delivered).await;
        assert_eq!(st.unwrap(), Some(DeliveryState::Delivered));
    }
    garble(&r, &format!("dlv:{n}")).await;
    let trimmed = s
        .deliveries_trim(now_us() + 60_000_000)
        .await
        .expect("the trim passes it");
    assert_eq!(trimmed, 2);
    assert!(
        s.deliveries(b.id, 10).await.unwrap().is_empty(),
        "b's trimmed"
    );
    let mut raw = raw_conn(&r).await;
    let done: u64 = ::redis::cmd("ZCARD")
        .arg(format!("{}:dlv:done", r.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(done, 0, "met once");
    let v: String = ::redis::cmd("GET")
        .arg(format!("{}:dlv:{n}", r.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(v, "garbage", "left as it is");
    // The trim runs clean again.
    assert_eq!(s.deliveries_trim(now_us() + 60_000_000).await.unwrap(), 0);
}

/// What `tracing` writes, kept for the test.
#[derive(Clone)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A listing that leaves out a delivery (its key of the wrong type) logs it at WARN once a
/// minute per key and process, not at every request: a job's listing polled by a client does
/// not flood the log. Before, every request logged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_logs_a_key_of_another_type_once_a_minute() {
    let r = TestRedis::start();
    let s = open_store(&r).await;
    let j = notified(&s, OK_URL).await;
    let n = delivery_of(&s, j.id).await;
    garble(&r, &format!("dlv:{n}")).await;
    let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Capture(logs.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    {
        let _logging = tracing::subscriber::set_default(subscriber);
        for _ in 0..5 {
            assert!(s.deliveries(j.id, 10).await.unwrap().is_empty());
        }
    }
    let logs = String::from_utf8_lossy(&logs.lock().expect("log buffer")).to_string();
    let key = format!("{}:dlv:{n}", r.prefix);
    assert_eq!(
        logs.matches("a listing leaves out a delivery").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains(&key), "{logs}");
}
