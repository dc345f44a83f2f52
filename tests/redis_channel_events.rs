//! Redis: a channel's events live in a list (`P:evl:{channel}`, see `chan_push` in
//! `src/store/redis/lua/commit.lua`), read by `lua/events.lua` together with the stream
//! `P:evc:{channel}` that builds before the list wrote. What a reader sees is what the stream
//! gave: every event of the channel with its global id, in order, at most
//! `events.channel_limit` of them, and a `resync` event first when events after its `last_id` are
//! gone (trimmed, or the channel expired), never a silent gap.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Command, Event, FinishOutcome, Job};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{Store, StoreSettings};

use redis_support::TestRedis;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A store on `r` with this channel limit and channel TTL (`retention.events`).
async fn open(r: &TestRedis, channel_limit: usize, ttl: Duration) -> Arc<dyn Store> {
    RedisStore::connect(RedisSettings {
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

/// `events.lua` run as the store runs it, on keys the test writes: the stream `P:evc:ch`
/// (entries `id`), the list `P:evl:ch` (entries `id` or the marker `~`), a read after `last`
/// at `now` (ms) with the channel TTL `ttl` (ms). Returns (resync id, the ids returned).
async fn read_at(
    r: &TestRedis,
    stream: &[&str],
    trim_stream_to: Option<usize>,
    list: &[&str],
    last: &str,
    now: u64,
    ttl: u64,
) -> (String, Vec<String>) {
    let p = &r.prefix;
    let (skey, lkey, gkey) = (
        format!("{p}:evc:ch"),
        format!("{p}:evl:ch"),
        format!("{p}:ev"),
    );
    let mut c = conn(r).await;
    let _: () = ::redis::cmd("DEL")
        .arg(&skey)
        .arg(&lkey)
        .query_async(&mut c)
        .await
        .expect("del");
    for id in stream {
        let _: String = ::redis::cmd("XADD")
            .arg(&skey)
            .arg(*id)
            .arg("e")
            .arg(format!("ev{id}"))
            .query_async(&mut c)
            .await
            .expect("xadd");
    }
    if let Some(n) = trim_stream_to {
        let _: i64 = ::redis::cmd("XTRIM")
            .arg(&skey)
            .arg("MAXLEN")
            .arg(n)
            .query_async(&mut c)
            .await
            .expect("xtrim");
    }
    for e in list {
        let v = if *e == "~" {
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
    let out: Vec<String> = ::redis::Script::new(include_str!("../src/store/redis/lua/events.lua"))
        .key(&skey)
        .key(&gkey)
        .key(&lkey)
        .arg("chan")
        .arg(1)
        .arg("last")
        .arg(last)
        .arg("limit")
        .arg(100)
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

/// Upgrade, the other way round: an older build's worker appended to the channel of a job a new
/// node submitted and left its stream without a TTL (it skipped the refresh for a young job).
/// Retention gives such streams one (`retention.events`) and leaves a stream's TTL, and every
/// other key, as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gives_an_old_channel_stream_without_a_ttl_one() {
    let r = TestRedis::start();
    let s = open(&r, 1000, DAY).await;
    let p = &r.prefix;
    let mut c = conn(&r).await;
    let keys = [
        format!("{p}:evc:old"),
        format!("{p}:evc:timed"),
        format!("{p}:other:evc:x"),
    ];
    for k in &keys {
        let _: String = ::redis::cmd("XADD")
            .arg(k)
            .arg("*")
            .arg("e")
            .arg("{}")
            .query_async(&mut c)
            .await
            .expect("xadd");
    }
    let _: i64 = ::redis::cmd("PEXPIRE")
        .arg(&keys[1])
        .arg(60_000)
        .query_async(&mut c)
        .await
        .expect("pexpire");
    s.retention(0).await.expect("retention");
    let mut ttl = Vec::new();
    for k in &keys {
        let t: i64 = ::redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut c)
            .await
            .expect("pttl");
        ttl.push(t);
    }
    assert!(ttl[0] > 23 * 3600 * 1000, "given a TTL: {ttl:?}");
    assert!(ttl[1] > 0 && ttl[1] <= 60_000, "its own TTL kept: {ttl:?}");
    assert_eq!(ttl[2], -1, "not a channel stream: {ttl:?}");
}
