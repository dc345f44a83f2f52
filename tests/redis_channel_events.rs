//! Redis: a channel's events live in its stream `P:evc:{channel}` (`store.channel_events`
//! "stream", the default, as builds before the list) or its list `P:evl:{channel}` ("list", see
//! `chan_push` in `src/store/redis/lua/commit.lua`), and `lua/events.lua` reads both, merged,
//! whatever the node writes. What a reader sees is what the stream gave: every event of the
//! channel with its global id, in order, at most `events.channel_limit` of them, and a `resync`
//! event first when events after its `last_id` are gone (trimmed, or the channel expired),
//! never a silent gap. Most tests here run in list mode (they test the list); the stream mode
//! and a cluster of both are tested at the end.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Command, Event, FinishOutcome, Job};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{Store, StoreSettings};

use redis_support::TestRedis;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A store on `r` writing channel lists, with this channel limit and channel TTL
/// (`retention.events`).
async fn open(r: &TestRedis, channel_limit: usize, ttl: Duration) -> Arc<dyn Store> {
    open_mode(r, channel_limit, ttl, true).await
}

/// [`open`] writing channel lists (`lists`) or streams (`store.channel_events`).
async fn open_mode(
    r: &TestRedis,
    channel_limit: usize,
    ttl: Duration,
    lists: bool,
) -> Arc<dyn Store> {
    RedisStore::connect(RedisSettings {
        channel_lists: lists,
        compact_records: redis_support::compact_records(),
        prefix: r.prefix.clone(),
        store: StoreSettings {
            channel_limit,
            ..StoreSettings::default()
        },
        channel_ttl: ttl,
        retry: Duration::from_secs(5),
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect")
}

async fn conn(r: &TestRedis) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(r.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn job_in(channel: &str) -> Job {
    Job {
        channel_id: channel.into(),
        ..Job::new("t.chan", "rc", now_us())
    }
}

/// `n` jobs submitted into `channel` in one batch (one event each).
async fn submit_into(s: &Arc<dyn Store>, channel: &str, n: usize) {
    let out = s
        .submit_many((0..n).map(|_| job_in(channel)).collect())
        .await
        .expect("submit");
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
}

/// The channel's events as the global stream has them (the global limit is far off here).
async fn in_global(s: &Arc<dyn Store>, channel: &str) -> Vec<Event> {
    s.events(None, None, 100_000)
        .await
        .expect("global events")
        .into_iter()
        .filter(|e| e.channel_id == channel)
        .collect()
}

fn ids(evs: &[Event]) -> Vec<&str> {
    evs.iter().map(|e| e.id.as_str()).collect()
}

/// A stream id as (ms, seq), for comparing.
fn pos(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// Every page of `limit` events of `channel`, read on from each page's last id.
async fn paged(s: &Arc<dyn Store>, channel: &str, limit: usize) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for _ in 0..1000 {
        let last = out.last().map(|e| e.id.clone());
        let page = s
            .events(Some(channel), last.as_deref(), limit)
            .await
            .expect("page");
        assert!(page.len() <= limit, "a page holds at most its limit");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
    panic!("paging did not end");
}

/// Turns `channel`'s list into what a build before the list left: its stream `P:evc:{channel}`
/// (same ids, field `e`, the list's TTL), the list deleted. Returns how many entries moved.
async fn to_old_stream(r: &TestRedis, channel: &str) -> usize {
    let (list, stream) = (
        format!("{}:evl:{channel}", r.prefix),
        format!("{}:evc:{channel}", r.prefix),
    );
    let mut c = conn(r).await;
    let raw: Vec<String> = ::redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("lrange");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&list)
        .query_async(&mut c)
        .await
        .expect("pttl");
    for e in &raw {
        let (id, body) = e.split_once(' ').expect("`<id> <event>`");
        let _: String = ::redis::cmd("XADD")
            .arg(&stream)
            .arg(id)
            .arg("e")
            .arg(body)
            .query_async(&mut c)
            .await
            .expect("xadd");
    }
    if ttl > 0 {
        let _: i64 = ::redis::cmd("PEXPIRE")
            .arg(&stream)
            .arg(ttl)
            .query_async(&mut c)
            .await
            .expect("pexpire");
    }
    let _: () = ::redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut c)
        .await
        .expect("del");
    raw.len()
}

/// A channel stream written by a build before the list (XADD into `P:evc:{channel}` with the
/// global id, field `e`) is read as it was, and once new events go to the list, both are read
/// as one channel, in order, page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_stream_written_by_an_older_build_is_still_read() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    submit_into(&s, "up", 3).await;
    let before = s.events(Some("up"), None, 100).await.expect("events");
    assert_eq!(before.len(), 3);
    // Turn the channel into what an older build left: its stream, same ids and bodies.
    let stream = format!("{}:evc:up", r.prefix);
    let mut c = conn(&r).await;
    assert_eq!(to_old_stream(&r, "up").await, 3, "one list entry per event");
    // The old stream alone: the same events, from the start and from each id.
    assert_eq!(s.events(Some("up"), None, 100).await.unwrap(), before);
    for (i, e) in before.iter().enumerate() {
        let rest = s.events(Some("up"), Some(&e.id), 100).await.unwrap();
        assert_eq!(rest, before[i + 1..], "after {}", e.id);
    }
    // After the upgrade: new events go to the list; the stream lives on beside it.
    submit_into(&s, "up", 2).await;
    let n: u64 = ::redis::cmd("EXISTS")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(n, 1, "the old stream is still there");
    let want = in_global(&s, "up").await;
    assert_eq!(want.len(), 5);
    let all = s.events(Some("up"), None, 100).await.unwrap();
    assert_eq!(ids(&all), ids(&want), "both, merged in id order");
    assert_eq!(&all[..3], &before[..], "the old events as they were");
    for limit in [1, 2, 4] {
        assert_eq!(
            ids(&paged(&s, "up", limit).await),
            ids(&want),
            "pages of {limit}"
        );
    }
    for (i, e) in want.iter().enumerate() {
        let rest = s.events(Some("up"), Some(&e.id), 100).await.unwrap();
        assert_eq!(ids(&rest), ids(&want[i + 1..]), "after {}", e.id);
        assert!(rest.iter().all(|e| e.kind != "resync"));
    }
}

/// A channel past `events.channel_limit` keeps exactly its newest events; a reader whose
/// `last_id` is before what was dropped gets a resync first, whose id reads on without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_past_its_limit_keeps_its_newest_events_and_says_resync() {
    let r = TestRedis::start();
    let s = open(&r, 3, DAY).await;
    for _ in 0..5 {
        submit_into(&s, "c", 1).await;
    }
    let all = in_global(&s, "c").await;
    assert_eq!(all.len(), 5);
    let kept = s.events(Some("c"), None, 100).await.unwrap();
    assert_eq!(ids(&kept), ids(&all[2..]), "exactly the newest 3");
    let page = s.events(Some("c"), Some(&all[0].id), 100).await.unwrap();
    assert_eq!(page[0].kind, "resync", "never a silent gap: {page:?}");
    assert_eq!(page[0].channel_id, "c");
    let at = pos(&page[0].id);
    assert!(
        pos(&all[1].id) <= at && at < pos(&all[2].id),
        "the resync id is just before the first kept event: {} in [{}, {})",
        page[0].id,
        all[1].id,
        all[2].id
    );
    assert_eq!(ids(&page[1..]), ids(&all[2..]));
    let next = s.events(Some("c"), Some(&page[0].id), 100).await.unwrap();
    assert_eq!(
        ids(&next),
        ids(&all[2..]),
        "from the resync id: the kept, no resync"
    );
    let tail = s.events(Some("c"), Some(&all[2].id), 100).await.unwrap();
    assert_eq!(ids(&tail), ids(&all[3..]), "from a kept id: no resync");
    // A limit lowered between two runs (10, then 3) trims at the next event.
    let wide = open(&r, 10, DAY).await;
    submit_into(&wide, "d", 6).await;
    assert_eq!(wide.events(Some("d"), None, 100).await.unwrap().len(), 6);
    submit_into(&s, "d", 1).await;
    let all = in_global(&s, "d").await;
    let kept = s.events(Some("d"), None, 100).await.unwrap();
    assert_eq!(ids(&kept), ids(&all[4..]), "the newest 3");
    let page = s.events(Some("d"), Some(&all[0].id), 100).await.unwrap();
    assert_eq!(page[0].kind, "resync");
    assert_eq!(ids(&page[1..]), ids(&all[4..]));
}

/// A long channel (read by index, not whole) gives the same pages as the global stream's
/// events of that channel, from every id, trimmed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_channel_reads_the_same_from_every_id() {
    let r = TestRedis::start();
    let s = open(&r, 100, DAY).await;
    submit_into(&s, "long", 90).await;
    let all = in_global(&s, "long").await;
    assert_eq!(all.len(), 90);
    assert_eq!(ids(&paged(&s, "long", 7).await), ids(&all));
    for (i, e) in all.iter().enumerate() {
        let page = s.events(Some("long"), Some(&e.id), 7).await.unwrap();
        let end = (i + 8).min(all.len());
        assert_eq!(ids(&page), ids(&all[i + 1..end]), "after #{i}");
    }
    // Trimmed to 70 (a store with that limit): the newest 70, a resync before them.
    let t = open(&r, 70, DAY).await;
    submit_into(&t, "trim", 90).await;
    let all = in_global(&t, "trim").await;
    assert_eq!(
        ids(&t.events(Some("trim"), None, 1000).await.unwrap()),
        ids(&all[20..])
    );
    for (i, e) in all.iter().enumerate() {
        let page = t.events(Some("trim"), Some(&e.id), 5).await.unwrap();
        let (resync, rest) = match page.first() {
            Some(f) if f.kind == "resync" => (true, &page[1..]),
            _ => (false, &page[..]),
        };
        let from = (i + 1).max(20);
        let end = (from + 5).min(all.len());
        assert_eq!(ids(rest), ids(&all[from..end]), "after #{i}");
        // Whether the entry just before the first kept (#19) is itself the resync point
        // depends on whether #20 is the next id; before it, always a resync.
        if i < 19 {
            assert!(resync, "after #{i}: events were dropped");
        } else if i >= 20 {
            assert!(!resync, "after #{i}: nothing dropped");
        }
    }
}

/// A channel that expired (`retention.events` without an event, here 3 s, long
/// enough that a busy machine does not expire it between the test's first steps): a reader behind it
/// gets a resync, whether the channel is gone or was created again by a newer event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_channel_says_resync_gone_or_created_again() {
    let r = TestRedis::start();
    let s = open(&r, 1000, Duration::from_secs(3)).await;
    let j = s.submit(job_in("x")).await.expect("submit").job;
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let first = s.events(Some("x"), None, 10).await.unwrap();
    assert_eq!(first.len(), 2, "QUEUED, CANCELLED");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // Gone: the events after the first were there and are no more.
    let page = s.events(Some("x"), Some(&first[0].id), 10).await.unwrap();
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(page[0].kind, "resync", "the channel expired: {page:?}");
    assert!(pos(&page[0].id) >= pos(&first[1].id));
    assert!(s.events(Some("x"), None, 10).await.unwrap().is_empty());
    // Created again by a new event: still a resync for the reader behind, then the new event.
    s.submit(job_in("x")).await.expect("submit");
    let new = in_global(&s, "x").await;
    let new = &new[new.len() - 1..];
    let page = s.events(Some("x"), Some(&first[0].id), 10).await.unwrap();
    assert_eq!(
        page[0].kind, "resync",
        "the channel expired before: {page:?}"
    );
    assert!(pos(&page[0].id) >= pos(&first[1].id) && pos(&page[0].id) < pos(&new[0].id));
    assert_eq!(ids(&page[1..]), ids(new));
    let on = s.events(Some("x"), Some(&page[0].id), 10).await.unwrap();
    assert_eq!(ids(&on), ids(new), "from the resync id: no second resync");
    // A reader up to date with the new channel: nothing, no resync.
    assert!(s
        .events(Some("x"), Some(&new[0].id), 10)
        .await
        .unwrap()
        .is_empty());
}

/// A job's own channel (its 4 events: QUEUED, STARTING, RUNNING, SUCCESS) costs Redis well under
/// what a stream did (4,784 bytes on Redis 7.0: a new stream node preallocates 4 KB), and lives
/// `retention.events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_own_channel_is_small_and_expires() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    let j = s
        .submit(Job {
            max_attempts: 1,
            ..Job::new("t.mem", "rmem", now_us())
        })
        .await
        .expect("submit")
        .job;
    let claimed = s
        .claim("rmem", "w1", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    let token = claimed[0].lease.as_ref().expect("a lease").token;
    s.apply(
        j.id,
        Command::Started {
            token,
            handle: None,
        },
    )
    .await
    .expect("started");
    s.apply(
        j.id,
        Command::Finish {
            token,
            outcome: FinishOutcome::Success(None),
        },
    )
    .await
    .expect("finished");
    let evs = s.events(Some(&j.channel_id), None, 10).await.unwrap();
    let st: Vec<_> = evs
        .iter()
        .map(|e| e.runyard_status.map(|s| s.as_str()))
        .collect();
    assert_eq!(
        st,
        ["QUEUED", "STARTING", "RUNNING", "SUCCESS"].map(Some),
        "{evs:?}"
    );
    let mut c = conn(&r).await;
    let mut bytes = 0;
    let mut ttl = 0;
    for kind in ["evc", "evl"] {
        let key = format!("{}:{kind}:{}", r.prefix, j.channel_id);
        let m: Option<u64> = ::redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("memory usage");
        bytes += m.unwrap_or(0);
        let t: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("pttl");
        ttl = ttl.max(t);
    }
    assert!(
        bytes > 0 && bytes < 2500,
        "a job's channel takes {bytes} bytes"
    );
    assert!(ttl > 23 * 3600 * 1000, "the channel expires: PTTL {ttl} ms");
}

/// Upgrade: a job submitted by a build before the list (its channel's stream got the TTL) and
/// changed by this build within the slack (which skips the TTL refresh: "its submit set it"):
/// the list that change creates still expires, as every channel key must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_created_by_a_change_that_skips_the_ttl_refresh_still_expires() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    let j = s.submit(job_in("mixed")).await.expect("submit").job;
    // The submit as an older build made it: its event in the stream, with the TTL.
    assert_eq!(to_old_stream(&r, "mixed").await, 1);
    // This build cancels it (a change of a job just created: no refresh asked).
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let evs = s.events(Some("mixed"), None, 10).await.unwrap();
    assert_eq!(evs.len(), 2, "QUEUED (stream), CANCELLED (list): {evs:?}");
    let mut c = conn(&r).await;
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{}:evl:mixed", r.prefix))
        .query_async(&mut c)
        .await
        .expect("pttl");
    assert!(
        ttl > 23 * 3600 * 1000,
        "the new list expires with the channel: PTTL {ttl} ms"
    );
}

async fn pexpire(c: &mut ::redis::aio::MultiplexedConnection, key: &str, ms: u64) {
    let set: i64 = ::redis::cmd("PEXPIRE")
        .arg(key)
        .arg(ms)
        .query_async(c)
        .await
        .expect("pexpire");
    assert_eq!(set, 1, "{key} exists");
}

/// Rolling upgrade (review of 2026-12-02, 1a): an older build's submit refreshed the channel's
/// stream, and its worker's changes of the young job refresh nothing. A new node's submit into
/// a channel whose stream an older build left refreshes that stream's TTL too, as an old submit
/// did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_refreshes_an_older_builds_stream_of_its_channel() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    let mut c = conn(&r).await;
    let stream = format!("{}:evc:shared", r.prefix);
    xadd(&mut c, &stream, "1000-0").await;
    pexpire(&mut c, &stream, 5000).await;
    submit_into(&s, "shared", 1).await;
    let ttl = pttl(&mut c, &stream).await;
    assert!(
        ttl > 23 * 3600 * 1000,
        "the stream lives on with the channel: PTTL {ttl} ms"
    );
    // A channel with no stream gets none.
    submit_into(&s, "fresh", 1).await;
    let none: i64 = ::redis::cmd("EXISTS")
        .arg(format!("{}:evc:fresh", r.prefix))
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(none, 0);
}

/// Rolling upgrade (review of 2026-12-02, 1b): a change of a young job skips the TTL refresh
/// (its submit refreshed the channel), but an older build's submit refreshed only the stream: the
/// change finds the list's TTL short (last refreshed long ago) and refreshes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_skips_the_refresh_restores_a_short_list_ttl() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    let j = s.submit(job_in("quick")).await.expect("submit").job;
    let list = format!("{}:evl:quick", r.prefix);
    let mut c = conn(&r).await;
    pexpire(&mut c, &list, 5000).await;
    // Another process (nothing cached) changes the job, created just now: no refresh asked.
    let s2 = open(&r, 1000, DAY).await;
    s2.apply(j.id, Command::Cancel).await.expect("cancel");
    assert_eq!(s2.events(Some("quick"), None, 10).await.unwrap().len(), 2);
    let ttl = pttl(&mut c, &list).await;
    assert!(
        ttl > 23 * 3600 * 1000,
        "the list lives on with the channel: PTTL {ttl} ms"
    );
}

/// The reviewer's sequence (API nodes upgraded first): an old API node's submit of A left the
/// stream of a shared channel about to expire; a new API node submits B (to the list); a reader
/// reads B's QUEUED; an old worker claims B (a young job: its STARTING goes to the stream with
/// no refresh); later B's next event goes to the list. Read on from B's QUEUED: B's STARTING,
/// or a resync, never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_workers_event_after_a_new_submit_is_never_a_silent_gap() {
    let r = TestRedis::start();
    let p = &r.prefix;
    let (stream, list, global) = (
        format!("{p}:evc:c"),
        format!("{p}:evl:c"),
        format!("{p}:ev"),
    );
    let mut c = conn(&r).await;
    let old = open(&r, 1000, DAY).await;
    old.submit(job_in("c")).await.expect("submit A");
    assert_eq!(to_old_stream(&r, "c").await, 1);
    pexpire(&mut c, &stream, 1500).await;
    // A new API node (nothing cached) submits B.
    let s = open(&r, 1000, DAY).await;
    let b = s.submit(job_in("c")).await.expect("submit B").job;
    let evs = s.events(Some("c"), None, 10).await.unwrap();
    assert_eq!(evs.len(), 2, "A's QUEUED (stream), B's (list): {evs:?}");
    let last = evs[1].id.clone();
    // The old worker's STARTING of B: the global stream and the channel's stream, no refresh.
    let entry: String = ::redis::cmd("LINDEX")
        .arg(&list)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("lindex");
    let body = entry.split_once(' ').expect("`<id> <event>`").1.to_string();
    let started: String = ::redis::cmd("XADD")
        .arg(&global)
        .arg("*")
        .arg("e")
        .arg(&body)
        .query_async(&mut c)
        .await
        .expect("xadd");
    let _: String = ::redis::cmd("XADD")
        .arg(&stream)
        .arg(&started)
        .arg("e")
        .arg(&body)
        .query_async(&mut c)
        .await
        .expect("xadd");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // B's next event, to the list (a young job: no refresh asked).
    s.apply(b.id, Command::Cancel).await.expect("cancel");
    let evs = s.events(Some("c"), Some(&last), 10).await.unwrap();
    assert!(
        evs.first().is_some_and(|e| e.kind == "resync") || evs.iter().any(|e| e.id == started),
        "B's STARTING ({started}) or a resync, not a silent gap: {evs:?}"
    );
}

/// A channel's keys as a test writes them for `events.lua`: the stream `P:evc:ch` (entries
/// `id`, trimmed to `trim_stream_to`), the list `P:evl:ch` (entries `id` or the marker `~`),
/// `P:evcgone` (`since`, `until`: the sweep saw no stream since then, vouched for until then),
/// and `P:evlsince` (since when lists exist: `lists_since`, 0 when `None`, as if lists had
/// been written forever; absent with `never_a_list`, a deployment that only wrote streams).
#[derive(Default)]
struct Chan {
    stream: Vec<String>,
    trim_stream_to: Option<usize>,
    list: Vec<String>,
    gone: Option<(u64, u64)>,
    lists_since: Option<u64>,
    never_a_list: bool,
}

fn strs(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `events.lua` run as the store runs it, on the keys of `ch`: a read after `last` at `now`
/// (ms) with the channel TTL `ttl` (ms), at most `limit`. Returns (resync id, the ids returned).
async fn read(
    r: &TestRedis,
    ch: &Chan,
    last: &str,
    now: u64,
    ttl: u64,
    limit: usize,
) -> (String, Vec<String>) {
    let p = &r.prefix;
    let (skey, lkey, gone, lsince) = (
        format!("{p}:evc:ch"),
        format!("{p}:evl:ch"),
        format!("{p}:evcgone"),
        format!("{p}:evlsince"),
    );
    let mut c = conn(r).await;
    let _: () = ::redis::cmd("DEL")
        .arg(&skey)
        .arg(&lkey)
        .arg(&gone)
        .arg(&lsince)
        .query_async(&mut c)
        .await
        .expect("del");
    if !ch.never_a_list {
        let _: () = ::redis::cmd("SET")
            .arg(&lsince)
            .arg(ch.lists_since.unwrap_or(0))
            .query_async(&mut c)
            .await
            .expect("set");
    }
    for id in &ch.stream {
        let _: String = ::redis::cmd("XADD")
            .arg(&skey)
            .arg(id)
            .arg("e")
            .arg(format!("ev{id}"))
            .query_async(&mut c)
            .await
            .expect("xadd");
    }
    if let Some(n) = ch.trim_stream_to {
        let _: i64 = ::redis::cmd("XTRIM")
            .arg(&skey)
            .arg("MAXLEN")
            .arg(n)
            .query_async(&mut c)
            .await
            .expect("xtrim");
    }
    for e in &ch.list {
        let v = if e == "~" {
            "~".to_string()
        } else {
            format!("{e} ev{e}")
        };
        let _: i64 = ::redis::cmd("RPUSH")
            .arg(&lkey)
            .arg(v)
            .query_async(&mut c)
            .await
            .expect("rpush");
    }
    // Every event of a channel is in the global stream too (same id): its last id is at least
    // the channel's newest (events.lua resyncs a cursor past it, one from another database).
    let newest = ch.stream.iter().chain(&ch.list).filter(|e| *e != "~");
    if let Some(top) = newest.max_by_key(|e| pos(e)) {
        let _: Result<String, _> = ::redis::cmd("XADD")
            .arg(format!("{p}:ev"))
            .arg(top)
            .arg("e")
            .arg("x")
            .query_async(&mut c)
            .await;
    }
    if let Some((since, until)) = ch.gone {
        let _: i64 = ::redis::cmd("HSET")
            .arg(&gone)
            .arg("since")
            .arg(since)
            .arg("until")
            .arg(until)
            .query_async(&mut c)
            .await
            .expect("hset");
    }
    run_events(r, last, now, ttl, limit).await
}

/// `events.lua` on the keys of channel `ch` as they are (see [`read`]).
async fn run_events(
    r: &TestRedis,
    last: &str,
    now: u64,
    ttl: u64,
    limit: usize,
) -> (String, Vec<String>) {
    let p = &r.prefix;
    let mut c = conn(r).await;
    let out: Vec<String> = ::redis::Script::new(include_str!("../src/store/redis/lua/events.lua"))
        .key(format!("{p}:evc:ch"))
        .key(format!("{p}:ev"))
        .key(format!("{p}:evl:ch"))
        .key(format!("{p}:evcgone"))
        .key(format!("{p}:evlsince"))
        .arg("chan")
        .arg(1)
        .arg("last")
        .arg(last)
        .arg("limit")
        .arg(limit)
        .arg("now")
        .arg(now)
        .arg("ttl")
        .arg(ttl)
        .invoke_async(&mut c)
        .await
        .expect("events.lua");
    let ids = out[1..].chunks(2).map(|e| e[0].clone()).collect();
    for e in out[1..].chunks(2) {
        assert_eq!(e[1], format!("ev{}", e[0]), "each event with its id");
    }
    (out[0].clone(), ids)
}

/// [`read`] of a stream and a list, no `P:evcgone`, at most 100.
async fn read_at(
    r: &TestRedis,
    stream: &[&str],
    trim_stream_to: Option<usize>,
    list: &[&str],
    last: &str,
    now: u64,
    ttl: u64,
) -> (String, Vec<String>) {
    let ch = Chan {
        stream: strs(stream),
        trim_stream_to,
        list: strs(list),
        ..Default::default()
    };
    read(r, &ch, last, now, ttl, 100).await
}

/// Upgrade: the older build's stream (4000, 4500) expired, the list (4600, 6000, 8000) lives. A
/// reader at 4000 missed 4500, which no key holds any more: a resync, never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stream_beside_a_live_list_says_resync() {
    let r = TestRedis::start();
    let list = ["4600-0", "6000-0", "8000-0"];
    let (resync, got) = read_at(&r, &[], None, &list, "4000-0", 8500, 3000).await;
    assert_ne!(resync, "", "4500 is gone: {got:?}");
    assert!(pos(&resync) >= pos("4500-0"), "resync {resync}");
    let rest: Vec<&str> = list.into_iter().filter(|i| pos(i) > pos(&resync)).collect();
    assert_eq!(got, rest, "the list after the resync id");
    // Read on from the resync id a little later: no second resync (else a long poll from it
    // would loop), until it is older than twice the TTL (a later list could have come and gone).
    let (again, got) = read_at(&r, &[], None, &list, &resync, 8600, 3000).await;
    assert_eq!(again, "", "read on from the resync id");
    assert_eq!(got, rest);
    let (again, _) = read_at(&r, &[], None, &list, &resync, 11_600, 3000).await;
    assert_ne!(again, "", "older than twice the TTL: a resync");
    // A reader at 4600 (within the TTL: nothing of the stream was after it): no resync.
    let (resync, got) = read_at(&r, &[], None, &list, "6000-0", 8500, 3000).await;
    assert_eq!((resync.as_str(), got), ("", vec!["8000-0".to_string()]));
}

/// The list expired while the older build's stream lived (1000, 7000), then was created again
/// (9000): a reader at 2000 (an entry of the expired list) gets a resync, though the stream's
/// oldest entry is older than the TTL before the list's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_created_again_beside_a_live_stream_says_resync() {
    let r = TestRedis::start();
    let (resync, got) = read_at(
        &r,
        &["1000-0", "7000-0"],
        None,
        &["9000-0"],
        "2000-0",
        9500,
        3000,
    )
    .await;
    assert_ne!(
        resync, "",
        "the expired list's events after 2000 are gone: {got:?}"
    );
    assert!(pos(&resync) < pos("7000-0"), "resync {resync}");
    assert_eq!(got, ["7000-0", "9000-0"]);
    // A reader at 7000 (the stream kept everything after it, the list is newer): no resync.
    let (resync, got) = read_at(
        &r,
        &["1000-0", "7000-0"],
        None,
        &["9000-0"],
        "7000-0",
        9500,
        3000,
    )
    .await;
    assert_eq!((resync.as_str(), got), ("", vec!["9000-0".to_string()]));
}

/// Both keys trimmed: the stream kept 1002 (1001 dropped), the list dropped 1004 and kept 1005.
/// A read from the oldest kept starts after the last dropped event: 1005 alone, no gap in the
/// middle (1002 then 1005 would hide the loss of 1004).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_the_oldest_kept_has_no_gap_when_both_keys_were_trimmed() {
    let r = TestRedis::start();
    let (resync, got) = read_at(
        &r,
        &["1001-0", "1002-0"],
        Some(1),
        &["~", "1005-0"],
        "",
        1010,
        100_000,
    )
    .await;
    assert_eq!((resync.as_str(), got), ("", vec!["1005-0".to_string()]));
    // The same from 1002: a resync (1004 is gone), then 1005.
    let (resync, got) = read_at(
        &r,
        &["1001-0", "1002-0"],
        Some(1),
        &["~", "1005-0"],
        "1002-0",
        1010,
        100_000,
    )
    .await;
    assert!(
        pos(&resync) >= pos("1004-0") && pos(&resync) < pos("1005-0"),
        "resync {resync}"
    );
    assert_eq!(got, ["1005-0"]);
}

/// The sequence of the absent-key rule's resync ids (`ABSENT` in events.lua).
const ABSENT: &str = "9007199254740991";

/// Review item 2: a channel that only ever had a list (every channel since the upgrade). Once
/// the sweep saw no stream for a full cycle (`P:evcgone`, since 500), a reader behind by more
/// than the TTL gets no needless resync, page by page; without it (during an upgrade, before
/// the first full cycle), or once its claim lapsed, the rule counts from now as before; and a
/// reader older than `since` minus the TTL still gets one (a stream may have expired then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_only_channel_gets_no_needless_resync_once_the_sweep_saw_no_stream() {
    let r = TestRedis::start();
    let (now, ttl) = (500_000, 100_000);
    let mut ch = Chan {
        list: strs(&["1000-0", "2000-0", "3000-0", "450000-0"]),
        gone: Some((500, 600_000)),
        ..Default::default()
    };
    let mut last = "2000-0".to_string();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (resync, page) = read(&r, &ch, &last, now, ttl, 1).await;
        assert_eq!(resync, "", "no stream since 500: after {last}, {got:?}");
        let Some(id) = page.last() else { break };
        last = id.clone();
        got.extend(page);
    }
    assert_eq!(got, ["3000-0", "450000-0"], "the kept 3000 too");
    // No `P:evcgone`: a stream could have expired up to now, holding events up to now - TTL.
    ch.gone = None;
    let (resync, page) = read(&r, &ch, "2000-0", now, ttl, 10).await;
    assert_eq!(resync, format!("400000-{ABSENT}"));
    assert_eq!(page, ["450000-0"]);
    // Its claim lapsed (`until` passed: the sweep stopped vouching): as without.
    ch.gone = Some((500, now));
    let (resync, _) = read(&r, &ch, "2000-0", now, ttl, 10).await;
    assert_eq!(resync, format!("400000-{ABSENT}"));
    // No stream since 300000: one may have expired before, holding events up to 200000.
    ch.gone = Some((300_000, 600_000));
    let (resync, page) = read(&r, &ch, "2000-0", now, ttl, 10).await;
    assert_eq!(resync, format!("200000-{ABSENT}"));
    assert_eq!(page, ["450000-0"]);
    let (resync, page) = read(&r, &ch, &resync, now, ttl, 10).await;
    assert_eq!((resync.as_str(), page), ("", strs(&["450000-0"])));
    let (resync, page) = read(&r, &ch, "250000-0", now, ttl, 10).await;
    assert_eq!((resync.as_str(), page), ("", strs(&["450000-0"])));
    // The list's own rules do not change: the list absent (expired), a resync from now.
    ch.list = Vec::new();
    ch.stream = strs(&["449000-0"]);
    ch.gone = Some((500, 600_000));
    let (resync, page) = read(&r, &ch, "2000-0", now, ttl, 10).await;
    assert_eq!(resync, format!("400000-{ABSENT}"));
    assert_eq!(page, ["449000-0"]);
}

/// Review item 1: a read from the oldest kept (no `last_id`) applies the expiry rules as a read
/// from the very beginning, starting after their ids, without a resync. Case A: the stream
/// (which held 2000) expired beside the list (1000, 3000, 9000), now - TTL between 3000 and
/// 9000: 9000 alone (1000, 3000, 9000 would hide the loss of 2000). Case B: the list expired
/// and was created again (9000) while the stream (1000, 7000) lives: the stream's entries older
/// than 9000 minus the TTL are not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_the_oldest_kept_starts_after_what_an_expired_key_may_have_lost() {
    let r = TestRedis::start();
    let list = ["1000-0", "3000-0", "9000-0"];
    let (resync, got) = read_at(&r, &[], None, &list, "", 10_000, 5_000).await;
    assert_eq!((resync.as_str(), got), ("", strs(&["9000-0"])), "case A");
    // The same with `P:evcgone` since 500: no stream expired after, all three.
    let ch = Chan {
        list: strs(&list),
        gone: Some((500, 20_000)),
        ..Default::default()
    };
    let (resync, got) = read(&r, &ch, "", 10_000, 5_000, 100).await;
    assert_eq!((resync.as_str(), got), ("", strs(&list)), "no stream since");
    // `P:evcgone` since 7000: a stream may have expired holding events up to 2000.
    let ch = Chan {
        gone: Some((7000, 20_000)),
        ..ch
    };
    let (resync, got) = read(&r, &ch, "", 10_000, 5_000, 100).await;
    assert_eq!((resync.as_str(), got), ("", strs(&["3000-0", "9000-0"])));
    let stream = ["1000-0", "7000-0"];
    let (resync, got) = read_at(&r, &stream, None, &["9000-0"], "", 9500, 3000).await;
    assert_eq!(
        (resync.as_str(), got),
        ("", strs(&["7000-0", "9000-0"])),
        "case B"
    );
    // The list gone (expired) beside the live stream: its entries older than now - TTL.
    let (resync, got) = read_at(&r, &stream, None, &[], "", 9500, 3000).await;
    assert_eq!((resync.as_str(), got), ("", strs(&["7000-0"])));
}

/// How many times Redis ran `cmd` (`INFO commandstats`; a script's commands count too).
fn calls(r: &TestRedis, cmd: &str) -> u64 {
    let info = r.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().expect("calls"))
}

/// Review of 2026-12-02, 3: a long poll re-reads its channel each time it wakes; on a list
/// longer than a few entries that read costs a few commands, not the whole list (nor a search
/// by index): up to date, the list's ends only; one event behind, its newest few in one LRANGE.
/// The answers are those of the whole list's read (other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_reads_only_the_newest_entries_of_a_long_list() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    for n in [64u64, 1000] {
        let ids: Vec<String> = (1..=n).map(|i| format!("{}-0", 1000 + i)).collect();
        let ch = Chan {
            list: ids.clone(),
            ..Default::default()
        };
        let (now, ttl) = (2000 + n, 1_000_000);
        read(&r, &ch, "", now, ttl, 100).await;
        let (newest, behind) = (&ids[ids.len() - 1], &ids[ids.len() - 2]);
        r.cli(&["CONFIG", "RESETSTAT"]);
        let got = run_events(&r, newest, now, ttl, 100).await;
        assert_eq!(got, (String::new(), vec![]), "up to date");
        let (lrange, lindex) = (calls(&r, "lrange"), calls(&r, "lindex"));
        assert_eq!(lrange, 0, "{n}: up to date, no LRANGE");
        assert!(lindex <= 2, "{n}: up to date, {lindex} LINDEX");
        r.cli(&["CONFIG", "RESETSTAT"]);
        let got = run_events(&r, behind, now, ttl, 100).await;
        assert_eq!(got, (String::new(), vec![newest.clone()]), "one behind");
        let (lrange, lindex) = (calls(&r, "lrange"), calls(&r, "lindex"));
        assert_eq!(lrange, 1, "{n}: one behind, one LRANGE");
        assert!(lindex <= 2, "{n}: one behind, {lindex} LINDEX (no search)");
    }
}

/// A list over 64 entries (searched by index, not read whole) under the per-key rules: the
/// absent stream's rule with and without `P:evcgone`, a list created again beside a live stream
/// whose entries fall between the list's, a trimmed list; from an id and from the oldest kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_list_is_read_by_index_under_the_per_key_rules() {
    let r = TestRedis::start();
    let ms = |v: std::ops::RangeInclusive<u64>| -> Vec<String> {
        v.map(|i| format!("{}-0", i * 1000)).collect()
    };
    // 1000 .. 80000, the stream absent, now - TTL = 50000.
    let mut ch = Chan {
        list: ms(1..=80),
        ..Default::default()
    };
    let (resync, got) = read(&r, &ch, "10000-0", 100_000, 50_000, 5).await;
    assert_eq!(resync, format!("50000-{ABSENT}"));
    assert_eq!(got, ms(51..=55));
    let (resync, got) = read(&r, &ch, "", 100_000, 50_000, 5).await;
    assert_eq!((resync.as_str(), got), ("", ms(51..=55)));
    let (resync, got) = read(&r, &ch, "60000-0", 100_000, 50_000, 5).await;
    assert_eq!((resync.as_str(), got), ("", ms(61..=65)));
    // No stream since 500: from any id, the next five.
    ch.gone = Some((500, 200_000));
    let (resync, got) = read(&r, &ch, "10000-0", 100_000, 50_000, 5).await;
    assert_eq!((resync.as_str(), got), ("", ms(11..=15)));
    let (resync, got) = read(&r, &ch, "", 100_000, 50_000, 5).await;
    assert_eq!((resync.as_str(), got), ("", ms(1..=5)));
    // The list (101000 .. 180000) created again beside a live stream (50500, 120500); TTL 30000:
    // the list's earlier incarnation held events up to 71000.
    let ch = Chan {
        stream: strs(&["50500-0", "120500-0"]),
        list: ms(101..=180),
        ..Default::default()
    };
    let (resync, got) = read(&r, &ch, "60000-0", 181_000, 30_000, 5).await;
    assert_eq!(resync, "71000-0");
    assert_eq!(got, ms(101..=105));
    let (resync, got) = read(&r, &ch, "120000-0", 181_000, 30_000, 3).await;
    assert_eq!(resync, "");
    assert_eq!(got, strs(&["120500-0", "121000-0", "122000-0"]), "merged");
    let (resync, got) = read(&r, &ch, "", 181_000, 30_000, 3).await;
    assert_eq!((resync.as_str(), got), ("", ms(101..=103)), "not 50500");
    // The same list trimmed (its head `~`): the cut is just before 101000.
    let ch = Chan {
        list: std::iter::once("~".to_string())
            .chain(ms(101..=180))
            .collect(),
        ..ch
    };
    let (resync, got) = read(&r, &ch, "60000-0", 181_000, 30_000, 5).await;
    assert_eq!(resync, "100999-18446744073709551615");
    assert_eq!(got, ms(101..=105));
    let (resync, got) = read(&r, &ch, "", 181_000, 30_000, 2).await;
    assert_eq!((resync.as_str(), got), ("", ms(101..=102)));
}

/// A store on `url` (another user's credentials, say) with the prefix of `r`.
async fn open_url(r: &TestRedis, url: &str, ttl: Duration) -> Arc<dyn Store> {
    RedisStore::connect(RedisSettings {
        channel_lists: true,
        prefix: r.prefix.clone(),
        channel_ttl: ttl,
        retry: Duration::from_secs(2),
        ..RedisSettings::new(url.to_string())
    })
    .await
    .expect("connect")
}

/// One sweep: a retention pass of a new store (a process sweeps at most every 10 s), channel
/// TTL 60 s (under an hour: TTL reads use it as it is).
async fn sweep(r: &TestRedis) {
    sweep_ttl(r, Duration::from_secs(60)).await;
}

/// One sweep with this channel TTL: the sweep's calls are sized to go through the keyspace in
/// about a quarter of it (an hour: 10 calls of 1,000 keys up to 720,000 keys).
async fn sweep_ttl(r: &TestRedis, ttl: Duration) {
    lists_written(r).await;
    let s = open(r, 1000, ttl).await;
    s.retention(0).await.expect("retention");
}

/// Records that lists were written (`P:evlsince`, as a list writer's first push does): the
/// sweep runs only then.
async fn lists_written(r: &TestRedis) {
    let mut c = conn(r).await;
    let _: () = ::redis::cmd("SET")
        .arg(format!("{}:evlsince", r.prefix))
        .arg(1)
        .arg("NX")
        .query_async(&mut c)
        .await
        .expect("set");
}

/// Review (session 18): on a deployment that never wrote a list, retention does not sweep
/// (a stream without a TTL only appears beside list writers); once a list was written, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_waits_for_a_list_to_have_been_written() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let mut c = conn(&r).await;
    let idle = format!("{}:evc:idle", r.prefix);
    xadd(&mut c, &idle, "1000-0").await;
    let s = open(&r, 1000, Duration::from_secs(60)).await;
    s.retention(0).await.expect("retention");
    assert_eq!(
        pttl(&mut c, &idle).await,
        -1,
        "no sweep without a list ever written"
    );
    let calls = r.cli(&["INFO", "commandstats"]);
    assert!(!calls.contains("cmdstat_scan"), "no SCAN: {calls}");
    sweep(&r).await;
    assert_eq!(
        pttl(&mut c, &idle).await,
        -2,
        "swept once a list was written"
    );
}

/// Review (session 18): with neither key of a channel, a read answers as builds before the list
/// did (the global stream's last id rule alone), whether or not lists were ever written: a
/// reader at the global stream's last id a day later gets no resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_with_neither_key_reads_as_before_the_list() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let mut c = conn(&r).await;
    let t = 1_764_000_000_000u64;
    xadd(&mut c, &format!("{}:ev", r.prefix), &format!("{t}-0")).await;
    let day = 86_400_000u64;
    for ch in [
        Chan {
            never_a_list: true,
            ..Chan::default()
        },
        Chan::default(),
    ] {
        let (resync, ids) = read(&r, &ch, &format!("{t}-0"), t + day, 60_000, 10).await;
        assert_eq!(
            (resync.as_str(), ids.len()),
            ("", 0),
            "never_a_list: {}",
            ch.never_a_list
        );
        // An older reader: the global stream's last id, as before.
        let (resync, _) = read(&r, &ch, &format!("{}-0", t - 1), t + day, 60_000, 10).await;
        assert_eq!(resync, format!("{t}-0"));
    }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn xadd(c: &mut ::redis::aio::MultiplexedConnection, key: &str, id: &str) {
    let _: String = ::redis::cmd("XADD")
        .arg(key)
        .arg(id)
        .arg("e")
        .arg("{}")
        .query_async(c)
        .await
        .expect("xadd");
}

async fn pttl(c: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(c)
        .await
        .expect("pttl")
}

/// A hash's numeric fields (the sweep's state also holds the server's run id, `run`).
async fn hash(
    c: &mut ::redis::aio::MultiplexedConnection,
    key: &str,
) -> std::collections::HashMap<String, u64> {
    let all: std::collections::HashMap<String, String> = ::redis::cmd("HGETALL")
        .arg(key)
        .query_async(c)
        .await
        .expect("hgetall");
    all.into_iter()
        .filter(|(k, _)| k != "run")
        .map(|(k, v)| {
            let n = v.parse().unwrap_or_else(|_| panic!("{key} {k}: {v}"));
            (k, n)
        })
        .collect()
}

/// Review of 2026-12-02, 2: SCAN's cursor means nothing on another server, so a sweep cycle
/// that spans a restart of Redis (its data kept: the AOF here) may have missed keys: it does
/// not count as clean (`P:evcgone` not set); the next whole cycle does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_cycle_across_a_redis_restart_is_not_clean() {
    let mut r = TestRedis::private(&["--save", "", "--appendonly", "yes"]);
    let p = r.prefix.clone();
    let (state, gone) = (format!("{p}:evcsweep"), format!("{p}:evcgone"));
    {
        let mut c = conn(&r).await;
        let _: () = ::redis::cmd("EVAL")
            .arg("for i = 1, 25000 do redis.call('SET', ARGV[1] .. i, 1) end")
            .arg(0)
            .arg(format!("{p}:filler:"))
            .query_async(&mut c)
            .await
            .expect("filler");
        sweep_ttl(&r, HOUR).await;
        let st = hash(&mut c, &state).await;
        assert_ne!(st["cursor"], 0, "one pass is not a cycle: {st:?}");
    }
    r.restart();
    let mut c = conn(&r).await;
    assert_eq!(hash(&mut c, &state).await["gen"], 1, "the state was kept");
    let mut passes = 0;
    while hash(&mut c, &state).await["gen"] == 1 && passes < 20 {
        sweep_ttl(&r, HOUR).await;
        passes += 1;
    }
    assert_eq!(hash(&mut c, &state).await["gen"], 2);
    assert!(
        hash(&mut c, &gone).await.is_empty(),
        "a cycle across a restart vouches for nothing"
    );
    while hash(&mut c, &state).await["gen"] == 2 && passes < 40 {
        sweep_ttl(&r, HOUR).await;
        passes += 1;
    }
    assert!(
        hash(&mut c, &gone).await.contains_key("since"),
        "the next whole cycle does"
    );
}

fn now_ms() -> u64 {
    (now_us() / 1000) as u64
}

/// Review item 3 and the "gone since" bound: the sweep deletes a channel stream without a TTL
/// idle for longer than the TTL (an older build's worker left it), leaves a younger one (an old
/// worker may still write to it without refreshing its TTL: never a shorter life), one with a
/// TTL, and keys outside `P:evc:`. Seeing a stream deletes `P:evcgone`; a full cycle that sees
/// none sets it (since about then); a stream that appears again deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_idle_streams_without_a_ttl_and_says_when_none_is_left() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let p = &r.prefix;
    let mut c = conn(&r).await;
    let (idle, young, timed, other) = (
        format!("{p}:evc:idle"),
        format!("{p}:evc:young"),
        format!("{p}:evc:timed"),
        format!("{p}:other:evc:x"),
    );
    let gone = format!("{p}:evcgone");
    xadd(&mut c, &idle, "1000-0").await;
    xadd(&mut c, &young, "*").await;
    xadd(&mut c, &timed, "1000-0").await;
    xadd(&mut c, &other, "1000-0").await;
    let _: i64 = ::redis::cmd("PEXPIRE")
        .arg(&timed)
        .arg(600_000)
        .query_async(&mut c)
        .await
        .expect("pexpire");
    sweep(&r).await;
    assert_eq!(
        pttl(&mut c, &idle).await,
        -2,
        "the idle stream without a TTL is deleted"
    );
    assert_eq!(
        pttl(&mut c, &young).await,
        -1,
        "the young one left as it is"
    );
    let t = pttl(&mut c, &timed).await;
    assert!(t > 0 && t <= 600_000, "its own TTL kept: {t}");
    assert_eq!(pttl(&mut c, &other).await, -1, "not a channel stream");
    assert!(hash(&mut c, &gone).await.is_empty(), "streams seen");
    // A claim left from before is deleted as soon as a stream is seen, in the same script call
    // as the SCAN batch that saw it (not only at the cycle's end).
    let _: i64 = ::redis::cmd("HSET")
        .arg(&gone)
        .arg("since")
        .arg(1)
        .arg("until")
        .arg(u64::MAX / 2)
        .query_async(&mut c)
        .await
        .expect("hset");
    let deleted: u64 = ::redis::Script::new(include_str!("../src/store/redis/lua/evc_sweep.lua"))
        .key(format!("{p}:evcsweep"))
        .key(&gone)
        .key(&young)
        .arg("batch")
        .arg(0)
        .invoke_async(&mut c)
        .await
        .expect("evc_sweep.lua");
    assert_eq!(deleted, 0);
    assert!(hash(&mut c, &gone).await.is_empty(), "a stream is there");
    sweep(&r).await;
    assert!(hash(&mut c, &gone).await.is_empty(), "a stream is there");
    // None left: the next full cycle says since when.
    let _: i64 = ::redis::cmd("DEL")
        .arg(&young)
        .arg(&timed)
        .query_async(&mut c)
        .await
        .expect("del");
    let before = now_ms();
    sweep(&r).await;
    let after = now_ms();
    let g = hash(&mut c, &gone).await;
    let (since, until) = (g["since"], g["until"]);
    assert!(
        before <= since && since <= after + 2000,
        "since {since} in [{before}, {after}]"
    );
    assert!(until > after + 50_000, "vouched for about the TTL: {g:?}");
    // It keeps the earliest time while cycles see none.
    sweep(&r).await;
    assert_eq!(hash(&mut c, &gone).await["since"], since);
    // An older build writes a stream again: deleted at the next sweep that sees it.
    xadd(&mut c, &young, "*").await;
    sweep(&r).await;
    assert!(hash(&mut c, &gone).await.is_empty(), "a stream came back");
    assert_eq!(pttl(&mut c, &young).await, -1);
}

/// Review item 4: one process sweeps at most every 10 s, not in every pass of a round: a
/// second pass right after the first does not sweep (an idle stream made in between is still
/// there), a new process's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_sweeps_at_most_once_a_round() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = open(&r, 1000, Duration::from_secs(60)).await;
    s.retention(0).await.expect("retention");
    let mut c = conn(&r).await;
    let idle = format!("{}:evc:idle", r.prefix);
    xadd(&mut c, &idle, "1000-0").await;
    s.retention(0).await.expect("retention");
    assert_eq!(pttl(&mut c, &idle).await, -1, "not swept in the same round");
    sweep(&r).await;
    assert_eq!(pttl(&mut c, &idle).await, -2, "swept by the next");
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

/// Review item 4: a sweep Redis refuses (an ACL user without `SCAN`) does not fail retention:
/// finished jobs are still deleted, the error is logged once (without the password), and
/// `P:evcgone` stays unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_refused_by_an_acl_does_not_fail_retention() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let out = r.cli(&[
        "ACL",
        "SETUSER",
        "noscan",
        "on",
        ">pw-s3cret",
        "~*",
        "&*",
        "+@all",
        "-scan",
    ]);
    assert!(out.contains("OK"), "{out}");
    let url = format!("redis://noscan:pw-s3cret@127.0.0.1:{}", r.port);
    let s = open_url(&r, &url, Duration::from_secs(60)).await;
    let j = s.submit(job_in("acl")).await.expect("submit").job;
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Capture(logs.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let report = {
        let _logging = tracing::subscriber::set_default(subscriber);
        s.retention(now_us() + 1).await
    };
    let report = report.expect("retention goes on without its sweep");
    assert_eq!(report.jobs, 1, "the finished job deleted");
    let logs = String::from_utf8_lossy(&logs.lock().expect("log buffer")).to_string();
    assert_eq!(
        logs.matches("sweep of old channel streams failed").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("WARN") && !logs.contains("s3cret"), "{logs}");
    let mut c = conn(&r).await;
    assert!(hash(&mut c, &format!("{}:evcgone", r.prefix))
        .await
        .is_empty());
    // The channel still reads (its list: a read needs no SCAN).
    assert_eq!(s.events(Some("acl"), None, 10).await.unwrap().len(), 2);
}

/// The sweep's cycle goes on across passes and processes (10 `SCAN`s of about 1,000 keys per
/// pass): on 25,000 keys, a pass ends mid-cycle, and `P:evcgone` is set only once a whole cycle
/// saw no stream. A segment another process already went through is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_cycle_goes_on_across_passes() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let p = &r.prefix;
    let mut c = conn(&r).await;
    let _: () = ::redis::cmd("EVAL")
        .arg("for i = 1, 25000 do redis.call('SET', ARGV[1] .. i, 1) end")
        .arg(0)
        .arg(format!("{p}:filler:"))
        .query_async(&mut c)
        .await
        .expect("filler");
    let young = format!("{p}:evc:young");
    let (state, gone) = (format!("{p}:evcsweep"), format!("{p}:evcgone"));
    xadd(&mut c, &young, "*").await;
    sweep_ttl(&r, HOUR).await;
    let st = hash(&mut c, &state).await;
    assert_ne!(st["cursor"], 0, "one pass is not a cycle: {st:?}");
    assert_eq!(st["gen"], 1);
    // Another process goes on from there; its passes end the cycle, which saw the stream.
    let mut passes = 1;
    while hash(&mut c, &state).await["gen"] == 1 && passes < 20 {
        sweep_ttl(&r, HOUR).await;
        passes += 1;
    }
    assert!(passes >= 3, "25,000 keys take 3 passes or more: {passes}");
    assert_eq!(hash(&mut c, &state).await["gen"], 2);
    assert!(
        hash(&mut c, &gone).await.is_empty(),
        "the cycle saw a stream"
    );
    // The stream gone: once a whole cycle went by, since when.
    let _: i64 = ::redis::cmd("DEL")
        .arg(&young)
        .query_async(&mut c)
        .await
        .expect("del");
    sweep_ttl(&r, HOUR).await;
    assert!(hash(&mut c, &gone).await.is_empty(), "mid-cycle: not yet");
    let st = hash(&mut c, &state).await;
    // A segment from where this cycle started, ended by a slow process: dropped.
    let stale: u64 = ::redis::Script::new(include_str!("../src/store/redis/lua/evc_sweep.lua"))
        .key(&state)
        .key(&gone)
        .arg("end")
        .arg(0)
        .arg(st["gen"])
        .arg(0)
        .arg(now_ms())
        .arg(60_000)
        .arg(1000)
        .invoke_async(&mut c)
        .await
        .expect("evc_sweep.lua");
    assert_eq!(stale, 0, "dropped");
    assert_eq!(hash(&mut c, &state).await, st, "nothing changed");
    for _ in 0..20 {
        if !hash(&mut c, &gone).await.is_empty() {
            break;
        }
        sweep_ttl(&r, HOUR).await;
    }
    assert!(hash(&mut c, &gone).await.contains_key("since"));
    let st = hash(&mut c, &state).await;
    assert_eq!(st["gen"], 3);
    // A cycle that took longer than half the TTL (60 s) says nothing (a stream could have come
    // and gone unseen meanwhile): `P:evcgone` is deleted.
    let _: i64 = ::redis::cmd("HSET")
        .arg(&state)
        .arg("start")
        .arg(now_ms() - 40_000)
        .query_async(&mut c)
        .await
        .expect("hset");
    let ended: u64 = ::redis::Script::new(include_str!("../src/store/redis/lua/evc_sweep.lua"))
        .key(&state)
        .key(&gone)
        .arg("end")
        .arg(st["cursor"])
        .arg(3)
        .arg(0)
        .arg(now_ms())
        .arg(60_000)
        .arg(1000)
        .invoke_async(&mut c)
        .await
        .expect("evc_sweep.lua");
    assert_eq!(ended, 3, "a cycle too long");
    assert!(hash(&mut c, &gone).await.is_empty());
}

/// Review of 2026-12-02, 4: a sweep's `SCAN` calls grow with the keyspace (`DBSIZE`) so that a
/// cycle takes about a quarter of the TTL: with a TTL of 60 s, one sweep goes through 25,000
/// keys, and a keyspace without a stream is vouched for after one retention pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_goes_through_a_keyspace_in_a_quarter_of_the_ttl() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let p = &r.prefix;
    let mut c = conn(&r).await;
    let _: () = ::redis::cmd("EVAL")
        .arg("for i = 1, 25000 do redis.call('SET', ARGV[1] .. i, 1) end")
        .arg(0)
        .arg(format!("{p}:filler:"))
        .query_async(&mut c)
        .await
        .expect("filler");
    sweep(&r).await;
    assert_eq!(hash(&mut c, &format!("{p}:evcsweep")).await["gen"], 2);
    assert!(
        hash(&mut c, &format!("{p}:evcgone"))
            .await
            .contains_key("since"),
        "one pass was a whole clean cycle"
    );
}

/// `store.channel_events` "stream" (the default): a node writes a channel's events to its
/// stream `P:evc:{channel}` as builds before the list did (the global stream's ids, field `e`,
/// the channel TTL), and no list, nor `P:evlsince`; they read back with those ids, from the
/// start and from each id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_writes_the_channel_stream_and_no_list() {
    let r = TestRedis::start();
    let s = open_mode(&r, 1000, DAY, false).await;
    submit_into(&s, "sc", 3).await;
    let j = s.submit(job_in("sc")).await.expect("submit").job;
    s.apply(j.id, Command::Cancel).await.expect("cancel");
    let want = in_global(&s, "sc").await;
    assert_eq!(want.len(), 5, "4 QUEUED, 1 CANCELLED");
    let p = &r.prefix;
    let mut c = conn(&r).await;
    let stream = format!("{p}:evc:sc");
    let kind: String = ::redis::cmd("TYPE")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .expect("type");
    assert_eq!(kind, "stream");
    let entries: Vec<(String, Vec<String>)> = ::redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("xrange");
    let stored: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(stored, ids(&want), "the global stream's ids");
    assert!(entries.iter().all(|(_, f)| f.len() == 2 && f[0] == "e"));
    let ttl = pttl(&mut c, &stream).await;
    assert!(ttl > 23 * 3600 * 1000, "the stream's TTL: {ttl} ms");
    let lists: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{p}:evl*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    assert!(lists.is_empty(), "no list, no P:evlsince: {lists:?}");
    assert_eq!(s.events(Some("sc"), None, 100).await.unwrap(), want);
    for (i, e) in want.iter().enumerate() {
        let rest = s.events(Some("sc"), Some(&e.id), 100).await.unwrap();
        assert_eq!(rest, want[i + 1..], "after {}", e.id);
    }
}

/// The fourth review's rolling update, now with both nodes on this build: node S writes
/// streams, node L lists, on one Redis, taking turns on one channel (S submits J1 and L cancels
/// it, L submits J2 and S cancels it, ...). A reader whose polls go to each node in turn sees
/// every event exactly once, in order, with no resync; so does a read from any id on either
/// node. (With a reader of streams only, as builds before the list had, L's events were lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_stream_and_list_writers_loses_no_event() {
    let r = TestRedis::start();
    let sn = open_mode(&r, 1000, DAY, false).await;
    let ln = open_mode(&r, 1000, DAY, true).await;
    let nodes = [&sn, &ln];
    let (mut seen, mut polls): (Vec<Event>, usize) = (Vec::new(), 0);
    for i in 0..6 {
        let (w, o) = (nodes[i % 2], nodes[(i + 1) % 2]);
        let j = w.submit(job_in("u")).await.expect("submit").job;
        for step in 0..2 {
            if step == 1 {
                o.apply(j.id, Command::Cancel).await.expect("cancel");
            }
            let last = seen.last().map(|e| e.id.clone());
            let page = nodes[polls % 2]
                .events(Some("u"), last.as_deref(), 100)
                .await
                .expect("poll");
            polls += 1;
            assert!(page.iter().all(|e| e.kind != "resync"), "{page:?}");
            assert_eq!(
                page.len(),
                1,
                "job {i}, step {step}: one new event: {page:?}"
            );
            seen.extend(page);
        }
    }
    let want = in_global(&sn, "u").await;
    assert_eq!(want.len(), 12);
    assert_eq!(ids(&seen), ids(&want), "every event once, in order");
    let p = &r.prefix;
    let mut c = conn(&r).await;
    for (key, n) in [(format!("{p}:evc:u"), 6u64), (format!("{p}:evl:u"), 6)] {
        let len: u64 = ::redis::cmd(if key.contains(":evc:") {
            "XLEN"
        } else {
            "LLEN"
        })
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("len");
        assert_eq!(len, n, "{key}: half the events each");
    }
    for node in nodes {
        assert_eq!(
            ids(&node.events(Some("u"), None, 100).await.unwrap()),
            ids(&want)
        );
        for (i, e) in want.iter().enumerate() {
            let rest = node.events(Some("u"), Some(&e.id), 100).await.unwrap();
            assert_eq!(ids(&rest), ids(&want[i + 1..]), "after {}", e.id);
        }
    }
}

/// The absent list's rule applies only once a list may have expired (`P:evlsince`, events.lua's
/// header). A stream holds 1000 and 450000; now 500000, TTL 100000; no list. A reader at 500
/// (before 1000): both, no resync, when no list was ever written, or the first one less than
/// the TTL ago; a resync (past now - TTL) once a list could have expired. The same for a read
/// from the oldest kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absent_list_rule_waits_for_a_list_that_could_have_expired() {
    let r = TestRedis::start();
    let (now, ttl) = (500_000, 100_000);
    let both = strs(&["1000-0", "450000-0"]);
    let mut ch = Chan {
        stream: both.clone(),
        never_a_list: true,
        ..Default::default()
    };
    for last in ["500-0", ""] {
        let got = read(&r, &ch, last, now, ttl, 100).await;
        assert_eq!(
            got,
            (String::new(), both.clone()),
            "never a list, from {last:?}"
        );
    }
    ch.never_a_list = false;
    ch.lists_since = Some(now - ttl + 1);
    for last in ["500-0", ""] {
        let got = read(&r, &ch, last, now, ttl, 100).await;
        assert_eq!(
            got,
            (String::new(), both.clone()),
            "lists too young, from {last:?}"
        );
    }
    ch.lists_since = Some(now - ttl);
    let (resync, got) = read(&r, &ch, "500-0", now, ttl, 100).await;
    assert_eq!(
        resync,
        format!("400000-{ABSENT}"),
        "a list could have expired"
    );
    assert_eq!(got, ["450000-0"]);
    let got = read(&r, &ch, "", now, ttl, 100).await;
    assert_eq!(got, (String::new(), strs(&["450000-0"])));
}

/// Stream mode, end to end: a channel whose stream holds an event older than the TTL (3 s here;
/// events keep coming, so the stream lives) reads whole from before it, with no resync, as it
/// did before the list (the absent list's rule fired here, a needless resync). Then a list
/// node writes one event to a channel whose stream lives on; its list expires: a reader from
/// before that event gets a resync (the event is gone), then the stream's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_gives_no_needless_resync_and_an_expired_list_still_says_resync() {
    let r = TestRedis::start();
    let ttl = Duration::from_secs(3);
    let (sn, ln) = (
        open_mode(&r, 1000, ttl, false).await,
        open_mode(&r, 1000, ttl, true).await,
    );
    submit_into(&sn, "before", 1).await;
    let before = in_global(&sn, "before").await[0].id.clone();
    for _ in 0..4 {
        submit_into(&sn, "old", 1).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let want = in_global(&sn, "old").await;
    assert_eq!(want.len(), 4);
    for node in [&sn, &ln] {
        let got = node.events(Some("old"), Some(&before), 100).await.unwrap();
        assert_eq!(ids(&got), ids(&want), "every event, no resync");
        let got = node.events(Some("old"), None, 100).await.unwrap();
        assert_eq!(ids(&got), ids(&want), "from the oldest kept");
    }
    // The list node's event (a list, and `P:evlsince`), then stream events past its TTL.
    let before = want[3].id.clone();
    submit_into(&ln, "mix", 1).await;
    let listed = in_global(&ln, "mix").await;
    for _ in 0..4 {
        submit_into(&sn, "mix", 1).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let mut c = conn(&r).await;
    let n: u64 = ::redis::cmd("EXISTS")
        .arg(format!("{}:evl:mix", r.prefix))
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(n, 0, "the list expired");
    let all = in_global(&sn, "mix").await;
    assert_eq!(ids(&all[..1]), ids(&listed));
    for node in [&sn, &ln] {
        let got = node.events(Some("mix"), Some(&before), 100).await.unwrap();
        assert_eq!(got[0].kind, "resync", "{} is gone: {got:?}", listed[0].id);
        assert!(pos(&got[0].id) >= pos(&listed[0].id));
        let rest: Vec<&str> = ids(&all)
            .into_iter()
            .filter(|i| pos(i) > pos(&got[0].id))
            .collect();
        assert_eq!(ids(&got[1..]), rest, "the stream's events after it");
    }
}
