//! The Redis channel index (`src/store/redis/chanidx.rs`, docs/redis.md "Channel index"): a
//! listing of one literal channel (`channel=`, or a grant confined to one channel) reads that
//! channel's jobs only, and misses none, on a real redis-server (a private one, or
//! `RUNYARD_TEST_REDIS`):
//!
//! - `a_channel_listing_reads_its_channel_only`: paging with `limit=1` (by `channel=` and by a
//!   one-channel grant) behind thousands of other jobs gives exactly the channel's jobs, and the
//!   job reads (`HGET`/`HMGET` calls, `INFO commandstats`) do not grow with the others; a job
//!   submitted right before a listing is in it.
//! - `events_trimmed_before_indexing_are_rebuilt`: events lost to a tiny `events.global_limit`
//!   before they were indexed: the listing stays complete (read by id), the index is rebuilt and
//!   read again.
//! - `jobs_of_an_old_build_are_found_after_the_rebuild`: jobs written by a process that keeps
//!   no index (`channel_index: false`, as an older build) before the index existed, two nodes
//!   of the new build starting at once (one rebuild).
//! - `retention_takes_a_job_out_of_its_channel`: a job deleted by retention leaves the set; one
//!   deleted by an older build's retention (which leaves it there) is left out of a listing and
//!   taken out of the set by it.
//! - `a_job_whose_channel_is_its_own_id_is_listed_by_it`: the default channel (no set entry).
//! - `channels_with_escapes_in_their_events_are_indexed`: quotes, backslashes, non-ASCII.
//! - `an_overtaken_rebuild_does_not_mark_the_index_built` and
//!   `a_rebuild_indexes_the_events_that_arrive_during_its_walk` (more than `global_limit` of
//!   them): the rebuild's steps of `lua/chanidx.lua`, called one by one.

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runyard::job::{now_us, Command, Job};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{JobStore, ListQuery, Maintenance, Names, StoreSettings, Visibility};
use uuid::Uuid;

use redis_support::TestRedis;

async fn store(r: &TestRedis, index: bool, global_limit: Option<usize>) -> Arc<RedisStore> {
    let mut store = StoreSettings::default();
    if let Some(g) = global_limit {
        store.global_limit = g;
    }
    RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        store,
        retry: Duration::from_secs(5),
        channel_index: index,
        compact_records: redis_support::compact_records(),
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect")
}

async fn conn(r: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(r.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// `P:jchidx` `state`, `n`, `gen`.
async fn index_state(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
) -> (Option<String>, Option<u64>, Option<u64>) {
    redis::cmd("HMGET")
        .arg(format!("{}:jchidx", r.prefix))
        .arg("state")
        .arg("n")
        .arg("gen")
        .query_async(c)
        .await
        .expect("HMGET")
}

/// Waits (bounded) until the index is built, with a generation above `gen_above`, and holds
/// every event of the stream.
async fn wait_indexed(c: &mut redis::aio::MultiplexedConnection, r: &TestRedis, gen_above: u64) {
    let start = Instant::now();
    loop {
        let (state, n, gen) = index_state(c, r).await;
        let added: u64 = match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(format!("{}:ev", r.prefix))
            .query_async::<redis::Value>(c)
            .await
        {
            Ok(v) => entries_added(&v),
            Err(_) => 0,
        };
        if state.as_deref() == Some("ok") && n == Some(added) && gen.unwrap_or(0) > gen_above {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "index not caught up: {state:?} n={n:?} added={added} gen={gen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn entries_added(v: &redis::Value) -> u64 {
    let pairs: Vec<(String, redis::Value)> = match v {
        redis::Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => redis::from_redis_value::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        redis::Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone()))
            })
            .collect(),
        _ => vec![],
    };
    pairs
        .into_iter()
        .find(|(k, _)| k == "entries-added")
        .and_then(|(_, v)| redis::from_redis_value::<u64>(&v).ok())
        .unwrap_or(0)
}

/// The job reads (`HGET` and `HMGET` calls, scripts' included) since the last `reset`.
async fn reads(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("INFO");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_hget:") || l.starts_with("cmdstat_hmget:"))
        .filter_map(|l| {
            l.split(['=', ','])
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

async fn reset(c: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(c)
        .await
        .expect("RESETSTAT");
}

fn on(channel: &str) -> Job {
    let mut j = Job::new("t.job", "r", now_us());
    j.channel_id = channel.into();
    j
}

async fn others(s: &RedisStore, n: usize) {
    let jobs: Vec<Job> = (0..n).map(|_| on("tenant-b")).collect();
    for chunk in jobs.chunks(1000) {
        for r in s.submit_many(chunk.to_vec()).await.expect("batch") {
            r.expect("submit");
        }
    }
}

/// Every job of `q` paged with `limit=1` (bounded), newest first.
async fn page_all(s: &RedisStore, q: ListQuery) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let p = s
            .list(ListQuery {
                limit: 1,
                cursor,
                ..q.clone()
            })
            .await
            .expect("list");
        out.extend(p.jobs.iter().map(|j| j.id));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

fn channel(c: &str) -> ListQuery {
    ListQuery {
        channel: Some(c.into()),
        ..Default::default()
    }
}

fn confined(c: &str) -> ListQuery {
    ListQuery {
        visible: Some(Visibility {
            types: None,
            channels: Some(Names {
                list: vec![c.into()],
                exact: true,
            }),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_listing_reads_its_channel_only() {
    let r = TestRedis::start();
    let s = store(&r, true, None).await;
    let mut c = conn(&r).await;
    // Built (empty) first: the jobs below are indexed from their events.
    wait_indexed(&mut c, &r, 0).await;
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(s.submit(on("tenant-a")).await.expect("submit").job.id);
        others(&s, 600).await;
    }
    mine.reverse();
    wait_indexed(&mut c, &r, 0).await;
    reset(&mut c).await;
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    assert_eq!(page_all(&s, confined("tenant-a")).await, mine);
    let first = reads(&mut c).await;
    assert!(first < 100, "{first} job reads for 5 jobs behind 3,000");
    // Twice as many others: the same reads.
    others(&s, 3000).await;
    wait_indexed(&mut c, &r, 0).await;
    reset(&mut c).await;
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    assert_eq!(page_all(&s, confined("tenant-a")).await, mine);
    assert_eq!(reads(&mut c).await, first, "reads grew with the other jobs");
    // Submitted right before the listing, by a process that keeps no index (the listing's own
    // catch-up indexes it).
    let old = store(&r, false, None).await;
    for _ in 0..3 {
        let id = old.submit(on("tenant-a")).await.expect("submit").job.id;
        let p = s
            .list(ListQuery {
                limit: 1,
                ..channel("tenant-a")
            })
            .await
            .expect("list");
        assert_eq!(p.jobs.first().map(|j| j.id), Some(id));
        mine.insert(0, id);
    }
    assert_eq!(page_all(&s, confined("tenant-a")).await, mine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trimmed_before_indexing_are_rebuilt() {
    let r = TestRedis::start();
    let s = store(&r, true, Some(50)).await;
    let mut c = conn(&r).await;
    wait_indexed(&mut c, &r, 0).await;
    let (_, _, gen) = index_state(&mut c, &r).await;
    let gen = gen.expect("a generation");
    // One batch of 3,000 jobs from a process that keeps no index: one script call, whose events
    // past the 50 kept are trimmed before any catch-up reads them.
    let old = store(&r, false, Some(50)).await;
    let jobs: Vec<Job> = (0..3000)
        .map(|i| on(if i % 100 == 0 { "tenant-a" } else { "tenant-b" }))
        .collect();
    let mut mine: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.channel_id == "tenant-a")
        .map(|j| j.id)
        .collect();
    mine.sort_unstable_by(|a, b| b.cmp(a));
    for r in old.submit_many(jobs).await.expect("batch") {
        r.expect("submit");
    }
    assert_eq!(mine.len(), 30);
    // Complete at once (read by id while the index is rebuilt) ...
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    // ... and from the rebuilt index.
    wait_indexed(&mut c, &r, gen).await;
    reset(&mut c).await;
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    assert_eq!(page_all(&s, confined("tenant-a")).await, mine);
    // Read by id, each of the 2,970 others at least once per listing.
    let n = reads(&mut c).await;
    assert!(n < 2970, "{n} job reads: not from the index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_an_old_build_are_found_after_the_rebuild() {
    let r = TestRedis::start();
    let old = store(&r, false, None).await;
    let mut mine = Vec::new();
    for _ in 0..20 {
        mine.push(old.submit(on("tenant-a")).await.expect("submit").job.id);
        others(&old, 100).await;
    }
    mine.reverse();
    let mut c = conn(&r).await;
    assert_eq!(index_state(&mut c, &r).await.0, None, "no index yet");
    // Two nodes of the new build: one rebuilds (the lock), the other waits for it.
    let s = store(&r, true, None).await;
    let s2 = store(&r, true, None).await;
    // Read by id until the index is built.
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    wait_indexed(&mut c, &r, 0).await;
    assert_eq!(page_all(&s2, confined("tenant-a")).await, mine);
    assert_eq!(index_state(&mut c, &r).await.2, Some(1), "one rebuild");
    reset(&mut c).await;
    assert_eq!(page_all(&s, channel("tenant-a")).await, mine);
    assert_eq!(page_all(&s, confined("tenant-a")).await, mine);
    // Read by id, each of the 2,000 others at least once per listing.
    let n = reads(&mut c).await;
    assert!(n < 2000, "{n} job reads: not from the index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_takes_a_job_out_of_its_channel() {
    let r = TestRedis::start();
    let s = store(&r, true, None).await;
    let mut c = conn(&r).await;
    // Built (empty) first: the jobs below are indexed from their events.
    wait_indexed(&mut c, &r, 0).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(s.submit(on("tenant-a")).await.expect("submit").job.id);
    }
    let kept = s.submit(on("tenant-a")).await.expect("submit").job.id;
    for id in &ids {
        s.apply(*id, Command::Cancel).await.expect("cancel");
    }
    wait_indexed(&mut c, &r, 0).await;
    let set = format!("{}:jch:tenant-a", r.prefix);
    let n: u64 = redis::cmd("ZCARD")
        .arg(&set)
        .query_async(&mut c)
        .await
        .expect("ZCARD");
    assert_eq!(n, 11);
    let report = s.retention(now_us() + 60_000_000).await.expect("retention");
    assert_eq!(report.jobs, 10);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(&set)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("ZRANGE");
    assert_eq!(left, vec![kept.to_string()]);
    assert_eq!(page_all(&s, channel("tenant-a")).await, vec![kept]);
    // An older build's retention deletes a job and leaves it in the set: a listing leaves it
    // out, and takes it out of the set.
    let newer = s.submit(on("tenant-a")).await.expect("submit").job.id;
    wait_indexed(&mut c, &r, 0).await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(format!("{}:job:{newer}", r.prefix))
        .ignore()
        .cmd("ZREM")
        .arg(format!("{}:all", r.prefix))
        .arg(newer.to_string())
        .ignore()
        .query_async(&mut c)
        .await
        .expect("delete as an older build");
    assert_eq!(page_all(&s, channel("tenant-a")).await, vec![kept]);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(&set)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("ZRANGE");
    assert_eq!(left, vec![kept.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_channel_is_its_own_id_is_listed_by_it() {
    let r = TestRedis::start();
    let s = store(&r, true, None).await;
    let mut c = conn(&r).await;
    // Built (empty) first: the jobs below are indexed from their events.
    wait_indexed(&mut c, &r, 0).await;
    let x = s
        .submit(Job::new("t.job", "r", now_us()))
        .await
        .expect("submit")
        .job;
    assert_eq!(x.channel_id, x.id.to_string());
    others(&s, 100).await;
    // A job on the channel named after x, and one of its own channel.
    let y = s.submit(on(&x.channel_id)).await.expect("submit").job.id;
    let z = s
        .submit(Job::new("t.job", "r", now_us()))
        .await
        .expect("submit")
        .job
        .id;
    wait_indexed(&mut c, &r, 0).await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:jch:{}", r.prefix, x.id))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("ZRANGE");
    assert_eq!(members, vec![y.to_string()], "x itself costs no entry");
    reset(&mut c).await;
    assert_eq!(page_all(&s, channel(&x.channel_id)).await, vec![y, x.id]);
    assert_eq!(page_all(&s, confined(&x.channel_id)).await, vec![y, x.id]);
    assert_eq!(page_all(&s, channel(&z.to_string())).await, vec![z]);
    let n = reads(&mut c).await;
    assert!(n < 60, "{n} job reads: not from the index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_with_escapes_in_their_events_are_indexed() {
    let r = TestRedis::start();
    let s = store(&r, true, None).await;
    let mut c = conn(&r).await;
    // Built (empty) first: the jobs below are indexed from their events.
    wait_indexed(&mut c, &r, 0).await;
    let names = ["a\"b\\c", "ü-kanal", "tab\there", "{x}:y"];
    let mut ids = Vec::new();
    for n in names {
        ids.push(s.submit(on(n)).await.expect("submit").job.id);
    }
    others(&s, 100).await;
    wait_indexed(&mut c, &r, 0).await;
    for (n, id) in names.iter().zip(&ids) {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{}:jch:{n}", r.prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .expect("ZRANGE");
        assert_eq!(members, vec![id.to_string()], "{n:?}");
        assert_eq!(page_all(&s, channel(n)).await, vec![*id], "{n:?}");
    }
}

/// One operation of `lua/chanidx.lua` (read from the source: the steps of a rebuild, called by
/// the test one by one).
async fn op(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    args: &[&str],
) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/store/redis/lua/chanidx.lua"
    );
    let script = std::fs::read_to_string(path).expect("chanidx.lua");
    let p = &r.prefix;
    redis::cmd("EVAL")
        .arg(script)
        .arg(4)
        .arg(format!("{p}:ev"))
        .arg(format!("{p}:jchidx"))
        .arg(format!("{p}:all"))
        .arg(format!("{p}:jchidx:lock"))
        .arg(args[0])
        .arg(format!("{p}:job:"))
        .arg(format!("{p}:jch:"))
        .arg(&args[1..])
        .query_async(c)
        .await
        .expect("chanidx.lua")
}

/// `n` jobs submitted by a process that keeps no index, one in ten on tenant-a (added to `mine`).
async fn submit_some(s: &RedisStore, n: usize, mine: &mut Vec<Uuid>) {
    let jobs: Vec<Job> = (0..n)
        .map(|i| on(if i % 10 == 0 { "tenant-a" } else { "tenant-b" }))
        .collect();
    mine.extend(
        jobs.iter()
            .filter(|j| j.channel_id == "tenant-a")
            .map(|j| j.id),
    );
    for r in s.submit_many(jobs).await.expect("batch") {
        r.expect("submit");
    }
}

/// The walk of `gen` to its end, 50 jobs a call.
async fn walk_all(
    c: &mut redis::aio::MultiplexedConnection,
    r: &TestRedis,
    token: &str,
    gen: &str,
) {
    let mut after = String::new();
    for _ in 0..1000 {
        let w = op(c, r, &["walk", token, "30000", gen, &after, "50"]).await;
        assert_eq!(w[0], "ok", "{w:?}");
        if w[2] != "50" {
            return;
        }
        after = w[1].clone();
    }
    panic!("walk did not end");
}

async fn members(c: &mut redis::aio::MultiplexedConnection, r: &TestRedis, ch: &str) -> Vec<Uuid> {
    let m: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:jch:{ch}", r.prefix))
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .expect("ZRANGE");
    m.iter().map(|m| m.parse().expect("a job id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overtaken_rebuild_does_not_mark_the_index_built() {
    let r = TestRedis::start();
    let old = store(&r, false, None).await;
    let mut mine = Vec::new();
    submit_some(&old, 300, &mut mine).await;
    let mut c = conn(&r).await;
    let a = op(&mut c, &r, &["begin", "node-a", "30000"]).await;
    assert_eq!(a[0], "go");
    // Node a stalls and its lock expires: node b begins a newer generation.
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:jchidx:lock", r.prefix))
        .query_async(&mut c)
        .await
        .expect("DEL");
    let b = op(&mut c, &r, &["begin", "node-b", "30000"]).await;
    assert_eq!(b[0], "go");
    assert_ne!(a[1], b[1]);
    // Node a wakes up: its walk and its finish are refused, the index is not built.
    assert_eq!(
        op(&mut c, &r, &["walk", "node-a", "30000", &a[1], "", "50"]).await,
        ["stale"]
    );
    assert_eq!(
        op(&mut c, &r, &["finish", "node-a", &a[1], "60000"]).await,
        ["stale"]
    );
    assert_eq!(index_state(&mut c, &r).await.0.as_deref(), Some("rebuild"));
    let lock: Option<String> = redis::cmd("GET")
        .arg(format!("{}:jchidx:lock", r.prefix))
        .query_async(&mut c)
        .await
        .expect("GET");
    assert_eq!(lock.as_deref(), Some("node-b"), "node b keeps its lock");
    // Node b's rebuild ends it.
    walk_all(&mut c, &r, "node-b", &b[1]).await;
    assert_eq!(
        op(&mut c, &r, &["finish", "node-b", &b[1], "60000"]).await,
        ["ok"]
    );
    mine.sort_unstable();
    assert_eq!(members(&mut c, &r, "tenant-a").await, mine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_indexes_the_events_that_arrive_during_its_walk() {
    let r = TestRedis::start();
    // `global_limit` 50: the stream keeps about 50 events.
    let old = store(&r, false, Some(50)).await;
    let mut mine = Vec::new();
    // Jobs before the rebuild begins (their events trimmed: only the walk finds them).
    submit_some(&old, 300, &mut mine).await;
    let mut c = conn(&r).await;
    let go = op(&mut c, &r, &["begin", "node-a", "30000"]).await;
    assert_eq!(go[0], "go");
    let gen = go[1].clone();
    // During the walk, 400 jobs (8 times `global_limit` events), 20 at a time, each 20 caught up
    // before the stream is trimmed past them (as every node's catch-up does during a rebuild).
    let mut after = String::new();
    for step in 0..1000 {
        assert!(step < 999, "walk did not end");
        if step < 20 {
            submit_some(&old, 20, &mut mine).await;
            let caught = op(&mut c, &r, &["catchup", "1000"]).await;
            let caught = (caught[0].as_str(), caught[2].as_str());
            assert_eq!(caught, ("rebuild", "1"), "indexed during the rebuild");
        }
        let w = op(&mut c, &r, &["walk", "node-a", "30000", &gen, &after, "50"]).await;
        assert_eq!(w[0], "ok", "{w:?}");
        if w[2] != "50" && step >= 20 {
            break;
        }
        if w[2] == "50" {
            after = w[1].clone();
        }
    }
    assert_eq!(
        op(&mut c, &r, &["finish", "node-a", &gen, "60000"]).await,
        ["ok"]
    );
    // Built, and not lost at the next catch-up: every job of the channel is in its set.
    assert_eq!(op(&mut c, &r, &["catchup", "1000"]).await, ["ok", "0", "1"]);
    let mut sorted = mine.clone();
    sorted.sort_unstable();
    assert_eq!(members(&mut c, &r, "tenant-a").await, sorted);
    assert_eq!(mine.len(), 70);
    // A node of the new build lists them from the index.
    let s = store(&r, true, Some(50)).await;
    sorted.reverse();
    assert_eq!(page_all(&s, channel("tenant-a")).await, sorted);
    assert_eq!(index_state(&mut c, &r).await.0.as_deref(), Some("ok"));
}
