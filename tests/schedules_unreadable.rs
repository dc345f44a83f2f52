//! A cron schedule whose record does not read (written by hand, by a bug), on each store: the
//! list leaves it out (the others are listed), reading it answers an error naming it, `DELETE`
//! removes it (its record and its places in the indexes), and the fire loop sets it aside for a
//! minute (its wake time moved ahead) instead of failing on it every second, while the other
//! schedules keep firing. Before, one such record made `GET /async/schedules` answer 500, could
//! not be deleted through the API, and every process logged it every second.

mod redis_support;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use redis_support::TestRedis;
use runyard::auth::tokens::token_sha256;
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::schedules::Unreadable;
use runyard::store::sqlite::SqliteStore;
use runyard::store::{Store, StoreSettings};
use support::{error_of, TestServer, WAIT};

const MASTER_KEY: &str = "unreadable-schedules-master-key-0123456789";

const RUNNERS: &str = r#"
[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]
concurrency = 16
"#;

/// What the record of a schedule is overwritten with (the probe's).
const BROKEN: &str = r#"{"name":broken"#;

/// What [`Backend::spoil`] writes in place of a record.
#[derive(Clone, Copy, PartialEq)]
enum Spoil {
    /// [`BROKEN`]: text that is not a record.
    Json,
    /// Bytes that are not UTF-8 (`{"` then 0xFF).
    NotUtf8,
}

/// Redis: overwrites a schedule's `b` and bumps its `v` in one step (ARGV[1] the record, ''
/// for bytes that are not UTF-8); `HSET`'s reply (0: the field was there).
const SPOIL_LUA: &str = "local b = ARGV[1] if b == '' then b = '{\"' .. string.char(255) end \
                         redis.call('HINCRBY', KEYS[1], 'v', 1) \
                         return redis.call('HSET', KEYS[1], 'b', b)";

enum Backend {
    Embedded,
    Redis(TestRedis),
}

impl Backend {
    async fn server(&self) -> TestServer {
        let config = match self {
            Backend::Embedded => String::new(),
            Backend::Redis(r) => r.server_config(MASTER_KEY),
        };
        TestServer::builder(RUNNERS).config(&config).start().await
    }

    fn db(ts: &TestServer) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(ts.data_dir().join("runyard.db")).expect("open db");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        c
    }

    /// Overwrites the stored record of schedule `name` with what no build reads, and bumps its
    /// version in the same step (a running fire loop's compare-and-set of the record it read
    /// before cannot write it back over the spoiled one).
    fn spoil(&self, ts: &TestServer, name: &str, how: Spoil) {
        match self {
            Backend::Embedded => {
                let body = match how {
                    Spoil::Json => "?2",
                    Spoil::NotUtf8 => "CAST(X'7B22FF' AS TEXT)",
                };
                let sql = format!(
                    "UPDATE schedules SET body = {body}, version = version + 1 WHERE name = ?1"
                );
                let n = match how {
                    Spoil::Json => Self::db(ts).execute(&sql, [name, BROKEN]),
                    Spoil::NotUtf8 => Self::db(ts).execute(&sql, [name]),
                }
                .expect("update");
                assert_eq!(n, 1);
            }
            Backend::Redis(r) => {
                let key = format!("{}:schedule:{name}", r.prefix);
                let b = if how == Spoil::Json { BROKEN } else { "" };
                let out = r.cli(&["EVAL", SPOIL_LUA, "1", &key, b]);
                assert_eq!(out.trim(), "0", "overwrote the record: {out}");
            }
        }
    }

    /// Overwrites `cafe` in the record of schedule `name` with `caf` and the byte 0xE9 (JSON
    /// but for one byte that is not UTF-8 inside a string), its version bumped in the same step
    /// in the store and in the record (a fire loop's compare-and-set of the record it read before
    /// cannot write it back, and one of the record read now can).
    fn spoil_in_string(&self, ts: &TestServer, name: &str) {
        match self {
            Backend::Embedded => {
                let sql = "UPDATE schedules SET body = CAST(replace(json_set(body, \
                           '$.version', version + 1), 'cafe', CAST(X'636166E9' AS TEXT)) AS TEXT), \
                           version = version + 1 WHERE name = ?1 AND instr(body, 'cafe') > 0";
                let n = Self::db(ts).execute(sql, [name]).expect("update");
                assert_eq!(n, 1);
            }
            Backend::Redis(r) => {
                let lua = "local b = redis.call('HGET', KEYS[1], 'b') \
                           local v = redis.call('HINCRBY', KEYS[1], 'v', 1) \
                           b = string.gsub(b, '\"version\":%d+', '\"version\":' .. string.format('%d', v)) \
                           local n, k = string.gsub(b, 'cafe', 'caf' .. string.char(233)) \
                           redis.call('HSET', KEYS[1], 'b', n) return k";
                let key = format!("{}:schedule:{name}", r.prefix);
                let out = r.cli(&["EVAL", lua, "1", &key]);
                assert_ne!(out.trim(), "0", "rewrote the record: {out}");
            }
        }
    }

    /// The stored bytes of schedule `name`'s record, as a digest (hex).
    fn digest(&self, ts: &TestServer, name: &str) -> String {
        match self {
            Backend::Embedded => Self::db(ts)
                .query_row(
                    "SELECT hex(CAST(body AS BLOB)) FROM schedules WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .expect("body"),
            Backend::Redis(r) => {
                let lua = "return redis.sha1hex(redis.call('HGET', KEYS[1], 'b') or '')";
                let key = format!("{}:schedule:{name}", r.prefix);
                r.cli(&["EVAL", lua, "1", &key]).trim().to_string()
            }
        }
    }

    /// Sets the wake time (µs) of schedule `name` in the store's index, by hand.
    fn set_wake(&self, ts: &TestServer, name: &str, at: i64) {
        match self {
            Backend::Embedded => {
                let n = Self::db(ts)
                    .execute(
                        "UPDATE schedules SET wake_at = ?2 WHERE name = ?1",
                        rusqlite::params![name, at],
                    )
                    .expect("update");
                assert_eq!(n, 1);
            }
            Backend::Redis(r) => {
                let key = format!("{}:sched:wake", r.prefix);
                let out = r.cli(&["ZADD", &key, "XX", "CH", &at.to_string(), name]);
                assert_eq!(out.trim(), "1", "moved the wake time: {out}");
            }
        }
    }

    /// The store the stopped server `ts` used, opened by the test.
    async fn store(&self, ts: &TestServer) -> Arc<dyn Store> {
        match self {
            Backend::Embedded => Arc::new(
                SqliteStore::open(&ts.data_dir(), StoreSettings::default(), false).expect("open"),
            ),
            Backend::Redis(r) => redis_support::open_store(r).await,
        }
    }

    /// What is left of schedule `name` in the store: its record, and its entries in the
    /// indexes (Redis: wake and names; embedded: one row holds all).
    fn traces(&self, ts: &TestServer, name: &str) -> Vec<String> {
        match self {
            Backend::Embedded => {
                let n: i64 = Self::db(ts)
                    .query_row(
                        "SELECT COUNT(*) FROM schedules WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )
                    .expect("count");
                (0..n).map(|_| "row".to_string()).collect()
            }
            Backend::Redis(r) => {
                let p = &r.prefix;
                let mut left = Vec::new();
                if r.cli(&["EXISTS", &format!("{p}:schedule:{name}")]).trim() != "0" {
                    left.push("record".into());
                }
                for idx in ["sched:wake", "sched:names"] {
                    let score = r.cli(&["ZSCORE", &format!("{p}:{idx}"), name]);
                    if !score.trim().is_empty() {
                        left.push(idx.to_string());
                    }
                }
                left
            }
        }
    }

    /// The wake time (µs) of schedule `name` in the store's index.
    fn wake(&self, ts: &TestServer, name: &str) -> Option<i64> {
        match self {
            Backend::Embedded => Self::db(ts)
                .query_row(
                    "SELECT wake_at FROM schedules WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .expect("wake_at"),
            Backend::Redis(r) => {
                let key = format!("{}:sched:wake", r.prefix);
                r.cli(&["ZSCORE", &key, name])
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .map(|s| s as i64)
            }
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn create(ts: &TestServer, name: &str, cron: &str) {
    let body = json!({
        "name": name,
        "cron": cron,
        "timezone": "UTC",
        "job": {"type": "runyard.noop"},
        "misfire": "skip",
    });
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

async fn send(ts: &TestServer, method: Method, path: &str) -> (StatusCode, Value) {
    let res = ts
        .client
        .request(method, ts.at(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = res.status();
    let text = res.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn listed(ts: &TestServer) -> Vec<String> {
    let (st, v) = ts.get("/async/schedules").await;
    assert_eq!(st, StatusCode::OK, "the list answers: {v}");
    let mut names: Vec<String> = v["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    names
}

async fn jobs_of(ts: &TestServer, name: &str) -> usize {
    let (st, v) = ts.get("/async/jobs?limit=500").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    jobs.iter().filter(|j| j["schedule"] == name).count()
}

async fn unreadable_schedule_suite(b: Backend) {
    let ts = b.server().await;
    create(&ts, "s-good", "0 0 1 1 *").await;
    create(&ts, "s-bad", "0 0 1 1 *").await;
    create(&ts, "s-bytes", "0 0 1 1 *").await;
    b.spoil(&ts, "s-bad", Spoil::Json);
    b.spoil(&ts, "s-bytes", Spoil::NotUtf8);

    // Listed: the readable one; the unreadable ones are left out (on Redis a record not UTF-8
    // once failed the whole list, 500).
    assert_eq!(listed(&ts).await, vec!["s-good"]);
    // Read alone: an error that names it.
    for name in ["s-bad", "s-bytes"] {
        let (st, v) = ts.get(&format!("/async/schedules/{name}")).await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        let (_, message) = error_of(&v);
        assert!(
            message.contains("corrupt record") && message.contains(name),
            "{message}"
        );
    }
    let (st, v) = send(&ts, Method::DELETE, "/async/schedules/s-bytes").await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(b.traces(&ts, "s-bytes"), Vec::<String>::new());
    // Deleted through the API: every trace of it gone, the other one untouched.
    let (st, v) = send(&ts, Method::DELETE, "/async/schedules/s-bad").await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(b.traces(&ts, "s-bad"), Vec::<String>::new());
    let (st, v) = ts.get("/async/schedules/s-bad").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = send(&ts, Method::DELETE, "/async/schedules/s-bad").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(listed(&ts).await, vec!["s-good"]);
    assert_eq!(
        b.traces(&ts, "s-good").len(),
        if matches!(b, Backend::Embedded) { 1 } else { 3 }
    );

    // Due every second: set aside for a minute when met, while another one keeps firing.
    create(&ts, "tick-bad", "* * * * * *").await;
    create(&ts, "tick-good", "* * * * * *").await;
    b.spoil(&ts, "tick-bad", Spoil::Json);
    let spoiled = now_us();
    let start = Instant::now();
    let aside = loop {
        match b.wake(&ts, "tick-bad") {
            Some(w) if w > spoiled + 30_000_000 => break w,
            _ => {}
        }
        assert!(
            start.elapsed() < WAIT,
            "the unreadable schedule not set aside"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(aside <= now_us() + 61_000_000, "set aside for a minute");
    let before = jobs_of(&ts, "tick-good").await;
    let start = Instant::now();
    while jobs_of(&ts, "tick-good").await < before + 2 {
        assert!(
            start.elapsed() < WAIT,
            "the readable schedule stopped firing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        b.wake(&ts, "tick-bad"),
        Some(aside),
        "met again only after its minute"
    );
    let (st, v) = send(&ts, Method::DELETE, "/async/schedules/tick-bad").await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(listed(&ts).await, vec!["s-good", "tick-good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_schedule_is_left_out_named_deleted_and_set_aside_embedded() {
    unreadable_schedule_suite(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_schedule_is_left_out_named_deleted_and_set_aside_redis() {
    unreadable_schedule_suite(Backend::Redis(TestRedis::start())).await;
}

/// A due schedule whose record is JSON but for one byte that is not UTF-8 inside a string (its
/// job's args `"caf\xE9"`, written by hand or by another program) is an unreadable record: the
/// fire loop sets it aside and never rewrites it; it is left out of the list and named in the
/// error of a read. Before, it read lossily (U+FFFD) on both stores: the tick fired it and its
/// compare-and-set saved the changed text for good.
async fn not_utf8_in_a_string_is_not_rewritten(b: Backend) {
    let ts = b.server().await;
    let body = json!({
        "name": "tick-bytes",
        "cron": "* * * * * *",
        "timezone": "UTC",
        "job": {"type": "runyard.noop", "args": {"note": "cafe"}},
        "misfire": "skip",
    });
    let (st, v) = ts.post("/async/schedules", Some(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    b.spoil_in_string(&ts, "tick-bytes");
    let spoiled = now_us();
    let stored = b.digest(&ts, "tick-bytes");
    let start = Instant::now();
    loop {
        assert_eq!(
            b.digest(&ts, "tick-bytes"),
            stored,
            "the record was rewritten"
        );
        match b.wake(&ts, "tick-bytes") {
            Some(w) if w > spoiled + 30_000_000 => break,
            _ => {}
        }
        assert!(start.elapsed() < WAIT, "the schedule not set aside");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed(&ts).await.is_empty());
    let (st, v) = ts.get("/async/schedules/tick-bytes").await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let (_, message) = error_of(&v);
    assert!(message.contains("not UTF-8"), "{message}");
    assert_eq!(
        b.digest(&ts, "tick-bytes"),
        stored,
        "the record was rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_not_utf8_inside_a_string_is_not_rewritten_embedded() {
    not_utf8_in_a_string_is_not_rewritten(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_not_utf8_inside_a_string_is_not_rewritten_redis() {
    not_utf8_in_a_string_is_not_rewritten(Backend::Redis(TestRedis::start())).await;
}

/// A credential confined to job types or channels cannot tell whether an unreadable schedule is
/// within them: its `DELETE` is refused (403) and leaves it; an unconfined one deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_unconfined_credential_deletes_an_unreadable_schedule() {
    let (admin, confined) = ("ry_unreadable_admin", "ry_unreadable_confined");
    let auth = format!(
        "[auth]\n\
         [[auth.tokens]]\nname = \"admin\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         [[auth.tokens]]\nname = \"confined\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         types = [\"runyard.*\"]\n",
        token_sha256(admin),
        token_sha256(confined)
    );
    let ts = TestServer::builder(RUNNERS).config(&auth).start().await;
    let b = Backend::Embedded;
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = ts.client.request(method, ts.at(path)).bearer_auth(token);
        if let Some(body) = body {
            r = r.json(&body);
        }
        async move {
            let res = r.send().await.expect("send");
            let st = res.status();
            (st, res.text().await.unwrap_or_default())
        }
    };
    let body = json!({"name": "s-bad", "cron": "0 0 1 1 *", "job": {"type": "runyard.noop"}});
    let (st, text) = call(Method::POST, "/async/schedules", admin, Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    b.spoil(&ts, "s-bad", Spoil::Json);

    let (st, text) = call(Method::DELETE, "/async/schedules/s-bad", confined, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("does not read"), "{text}");
    assert_eq!(
        b.traces(&ts, "s-bad"),
        vec!["row"],
        "the refusal changed nothing"
    );
    let (st, text) = call(Method::DELETE, "/async/schedules/s-bad", admin, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(b.traces(&ts, "s-bad"), Vec::<String>::new());
}

/// The fire loop sets an unreadable schedule aside only while it is still due: during a rolling
/// upgrade a newer build that reads the record may have planned it meanwhile (its wake time in
/// the future), and that plan stands. Before, the set-aside moved any wake time to a minute on.
async fn set_aside_only_when_due(b: Backend) {
    let mut ts = b.server().await;
    create(&ts, "planned", "0 0 1 1 *").await;
    b.spoil(&ts, "planned", Spoil::Json);
    ts.stop().await;
    let store = b.store(&ts).await;
    // Planned an hour on (by a newer build), set by hand: the cron's next January 1 is less
    // than a few minutes away at the end of December 31.
    let now = now_us();
    let planned = now + 3_600_000_000;
    b.set_wake(&ts, "planned", planned);
    let aside = Unreadable::WakeAt {
        at: now + 60_000_000,
        due_by: now,
    };
    let done = store.schedule_unreadable("planned", aside).await;
    assert!(!done.expect("store answers"), "not due: left alone");
    assert_eq!(b.wake(&ts, "planned"), Some(planned), "the plan stands");
    // Still due: set aside.
    b.set_wake(&ts, "planned", now - 1_000_000);
    let done = store.schedule_unreadable("planned", aside).await;
    assert!(done.expect("store answers"), "due: set aside");
    assert_eq!(b.wake(&ts, "planned"), Some(now + 60_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_schedule_is_set_aside_only_while_due_embedded() {
    set_aside_only_when_due(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_schedule_is_set_aside_only_while_due_redis() {
    set_aside_only_when_due(Backend::Redis(TestRedis::start())).await;
}

/// On Redis a schedule's hash deleted by hand (`DEL P:schedule:x`) left its name in the wake
/// index: due for ever, the fire loop met it every 2 ms and `DELETE` answered 404. The fire loop
/// now takes it out of the indexes; the other schedules go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_whose_hash_was_deleted_leaves_the_indexes_redis() {
    orphan_leaves_the_indexes(&["DEL"]).await;
}

/// A schedule's hash left without its record (`HDEL P:schedule:x b`, its `v` kept) made the fire
/// loop spin as well: the record reads as none, and the orphan script saw the key and left it.
/// Such a hash (never written by the store) is deleted and the name taken out of the indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_hash_without_its_record_leaves_the_indexes_redis() {
    orphan_leaves_the_indexes(&["HDEL", "b"]).await;
}

/// Runs `how` (a command, then its arguments after the key) on the hash of a schedule due every
/// second, then waits for every trace of it to go while another schedule keeps firing.
async fn orphan_leaves_the_indexes(how: &[&str]) {
    let r = TestRedis::start();
    let key = format!("{}:schedule:orphan", r.prefix);
    let b = Backend::Redis(r);
    let ts = b.server().await;
    create(&ts, "orphan", "* * * * * *").await;
    create(&ts, "tick-good", "* * * * * *").await;
    let Backend::Redis(r) = &b else {
        unreachable!()
    };
    let mut args = vec![how[0], key.as_str()];
    args.extend(&how[1..]);
    assert_eq!(r.cli(&args).trim(), "1", "the record removed: {how:?}");
    let start = Instant::now();
    loop {
        let left = b.traces(&ts, "orphan");
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < WAIT, "still in the indexes: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = ts.get("/async/schedules/orphan").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let before = jobs_of(&ts, "tick-good").await;
    let start = Instant::now();
    while jobs_of(&ts, "tick-good").await < before + 1 {
        assert!(start.elapsed() < WAIT, "the other schedule stopped firing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed(&ts).await, vec!["tick-good"]);
}

/// On Redis an unreadable schedule whose `v` is not UTF-8 either (written by hand) is deleted
/// like the others. Before, its `v` was read as a string: the read failed as a backend error and
/// `DELETE` answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_schedule_whose_version_is_not_utf8_is_deleted_redis() {
    let r = TestRedis::start();
    let key = format!("{}:schedule:bad-v", r.prefix);
    let b = Backend::Redis(r);
    let ts = b.server().await;
    create(&ts, "bad-v", "0 0 1 1 *").await;
    let Backend::Redis(r) = &b else {
        unreachable!()
    };
    let lua = "return redis.call('HSET', KEYS[1], 'v', string.char(255), 'b', ARGV[1])";
    assert_eq!(r.cli(&["EVAL", lua, "1", &key, BROKEN]).trim(), "0");
    let (st, v) = send(&ts, Method::DELETE, "/async/schedules/bad-v").await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(b.traces(&ts, "bad-v"), Vec::<String>::new());
}

/// A TCP proxy to a Redis that, once `armed`, holds the next chunk a client sends with a call of
/// one script (`EVALSHA` and the script's SHA1) until `release`: the test changes a record between
/// a store's read of it and its script. Only that script's call: another one (a background
/// loop's) held instead would let the test pass without testing anything.
struct HoldingProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    held: Arc<Notify>,
    release: Arc<Notify>,
}

impl HoldingProxy {
    async fn start(upstream: u16, sha1: String) -> HoldingProxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let p = HoldingProxy {
            port,
            armed: Arc::new(AtomicBool::new(false)),
            held: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        };
        let (armed, held, release) = (p.armed.clone(), p.held.clone(), p.release.clone());
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let Ok(u) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (mut cr, mut cw) = c.into_split();
                let (mut ur, mut uw) = u.into_split();
                let (armed, held, release) = (armed.clone(), held.clone(), release.clone());
                let sha1 = sha1.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = cr.read(&mut buf).await.unwrap_or_default();
                        if n == 0 {
                            return;
                        }
                        let chunk = &buf[..n];
                        let script = chunk.windows(7).any(|w| w == b"EVALSHA")
                            && chunk.windows(sha1.len()).any(|w| w == sha1.as_bytes());
                        if script && armed.swap(false, Ordering::SeqCst) {
                            held.notify_one();
                            release.notified().await;
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                });
            }
        });
        p
    }
}

/// On Redis the delete of an unreadable record acts only if the record is still the one read,
/// `v` and `b` both: one fixed by hand in between, its `v` kept, is left alone. Before, `b` and
/// `v` were read in two round trips and the script compared `v` only: the fixed record was
/// deleted. A proxy holds the store's script call while the record is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_fixed_between_the_read_and_the_delete_is_left_alone_redis() {
    let r = TestRedis::start();
    let key = format!("{}:schedule:fixed", r.prefix);
    let b = Backend::Redis(r);
    let mut ts = b.server().await;
    create(&ts, "fixed", "0 0 1 1 *").await;
    ts.stop().await;
    let Backend::Redis(r) = &b else {
        unreachable!()
    };
    let good = r.cli(&["HGET", &key, "b"]).trim_end().to_string();
    assert!(good.starts_with('{'), "the record: {good}");
    b.spoil(&ts, "fixed", Spoil::Json);
    let unreadable = include_str!("../src/store/redis/lua/schedule_unreadable.lua");
    let sha1 = ::redis::Script::new(unreadable).get_hash().to_string();
    let proxy = HoldingProxy::start(r.port, sha1).await;
    let url = r
        .url
        .replace(&format!(":{}", r.port), &format!(":{}", proxy.port));
    let store: Arc<dyn Store> = RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        retry: Duration::from_secs(5),
        // No channel index maintenance (a script call every second) beside the call tested.
        channel_index: false,
        ..RedisSettings::new(url)
    })
    .await
    .expect("connect");
    proxy.armed.store(true, Ordering::SeqCst);
    let s = store.clone();
    let call =
        tokio::spawn(async move { s.schedule_unreadable("fixed", Unreadable::Delete).await });
    tokio::time::timeout(WAIT, proxy.held.notified())
        .await
        .expect("the script call held");
    // Fixed by hand, its version kept.
    assert_eq!(r.cli(&["HSET", &key, "b", &good]).trim(), "0");
    proxy.release.notify_one();
    let done = tokio::time::timeout(WAIT, call)
        .await
        .expect("answers")
        .expect("joins")
        .expect("the store answers");
    assert!(!done, "the fixed record is not deleted");
    assert_eq!(
        b.traces(&ts, "fixed"),
        vec!["record", "sched:wake", "sched:names"]
    );
}
