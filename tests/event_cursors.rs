//! A `last_id` this store never handed out (a browser's localStorage from another database:
//! a fresh data dir, a flushed Redis, the other store's id form) gets a `resync` event to the
//! newest id, on both stores and every transport, never a silent wait or a 400 forever.

mod redis_support;
#[macro_use]
mod store_support;
mod support;
mod ws_support;

use std::sync::Arc;

use futures::StreamExt;
use runyard::job::{now_us, Job};
use runyard::store::{Store, StoreError, StoreSettings};
use serde_json::{json, Value};
use support::{TestServer, WAIT};

fn settings() -> StoreSettings {
    StoreSettings::default()
}

both!(a_cursor_past_the_newest_event_resyncs_to_the_newest);

/// A cursor past every id of the store: far ahead in its own form (the embedded store's ids are
/// below 2^53).
fn far_ahead(newest: &str) -> String {
    match newest.split_once('-') {
        Some(_) => "99999999999999-0".into(),
        None => "9000000000000000000".into(),
    }
}

async fn a_cursor_past_the_newest_event_resyncs_to_the_newest(s: Arc<dyn Store>) {
    let mut job = Job::new("t", "r", now_us());
    job.channel_id = "c1".into();
    s.submit(job).await.expect("submit");
    let newest = s.last_event_id().await.unwrap().expect("an event");
    let ahead = far_ahead(&newest);
    for channel in [None, Some("c1"), Some("never-used")] {
        let page = s.events(channel, Some(&ahead), 10).await.expect("read");
        assert_eq!(page.len(), 1, "{channel:?}: {page:?}");
        assert_eq!(page[0].kind, "resync", "{channel:?}: {page:?}");
        assert_eq!(page[0].id, newest, "{channel:?}: go on from the newest");
        // Reading on from there: no resync again, nothing (up to date).
        let next = s.events(channel, Some(&newest), 10).await.expect("read");
        assert!(next.is_empty(), "{channel:?}: {next:?}");
    }
    // Garbage is still refused.
    for bad in ["nope", "1-2-3", "-1"] {
        let r = s.events(None, Some(bad), 10).await;
        assert!(matches!(r, Err(StoreError::BadInput(_))), "{bad}: {r:?}");
    }
}

/// On Redis a channel cursor is told foreign by the channel's own newest id too: with the global
/// stream deleted behind runyard's back (an operator's `DEL`), a client up to date on its
/// channel is not sent back to `0-0` (and the whole channel again) on every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_current_channel_cursor_is_not_foreign_without_the_global_stream() {
    let (guard, s) = store_support::redis(settings()).await;
    let store_support::Guard::Redis(r) = &guard else {
        unreachable!("a Redis guard")
    };
    let mut job = Job::new("t", "r", now_us());
    job.channel_id = "c1".into();
    s.submit(job).await.expect("submit");
    let newest = s.last_event_id().await.unwrap().expect("an event");
    let mut c = ::redis::Client::open(r.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: i64 = ::redis::cmd("DEL")
        .arg(format!("{}:ev", r.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1, "the global stream was there");
    let page = s.events(Some("c1"), Some(&newest), 10).await.unwrap();
    assert!(page.is_empty(), "{page:?}");
}

/// The embedded store with a Redis stream id (and an integer past its ids' range): a cursor of
/// another database, a resync; on an empty store to `0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_resyncs_a_redis_form_id() {
    let (_g, s) = store_support::embedded(settings()).await;
    let page = s.events(None, Some("1607477697866-0"), 10).await.unwrap();
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(
        (page[0].kind.as_str(), page[0].id.as_str()),
        ("resync", "0")
    );
    s.submit(Job::new("t", "r", now_us())).await.unwrap();
    let newest = s.last_event_id().await.unwrap().unwrap();
    for foreign in ["1607477697866-0", "18446744073709551615"] {
        let page = s.events(Some("x"), Some(foreign), 10).await.unwrap();
        assert_eq!(page.len(), 1, "{foreign}: {page:?}");
        assert_eq!(page[0].kind, "resync", "{foreign}");
        assert_eq!(page[0].id, newest, "{foreign}");
    }
}

const BUILTINS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

/// Polling, WebSocket and SSE with a cursor from another database: a resync to the newest id
/// (polling's `last_id` too), then the events that follow, not a wait until ids pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_resyncs_a_cursor_from_another_database() {
    let ts = TestServer::start(BUILTINS).await;
    let first = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_terminal(&first, WAIT).await;
    let newest = ts.last_event_id().await;
    for cursor in ["9999999", "1607477697866-0"] {
        let (st, v) = ts
            .get(&format!("/api/v1/async_event/?last_id={cursor}"))
            .await;
        assert_eq!(st, 200, "{cursor}: {v}");
        assert_eq!(v["result"][0]["type"], "resync", "{cursor}: {v}");
        assert_eq!(v["result"][0]["id"], newest.as_str(), "{cursor}: {v}");
        assert_eq!(v["last_id"], newest.as_str(), "{cursor}: {v}");
    }
    let addr = ts.url.trim_start_matches("http://").to_string();
    let mut ws = ws_support::connect(&addr, "last_id=9999999").await;
    let sse = reqwest::Client::new()
        .get(ts.at("/async/events/sse"))
        .header("Last-Event-ID", "1607477697866-0")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // Each transport's first answer to a foreign cursor is its resync to the newest id, read
    // before anything else is written (a resync made after a new event names that one).
    let got = ws_support::read_until(&mut ws, WAIT, |evs| !evs.is_empty())
        .await
        .events;
    assert_eq!(got[0]["type"], "resync", "{got:#?}");
    assert_eq!(got[0]["id"], newest.as_str(), "{got:#?}");
    let mut body = sse.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let data = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    };
    while data(&text).is_empty() {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("SSE timed out: {text}"))
            .expect("SSE open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(data(&text)[0]["type"], "resync", "{text}");
    assert!(
        text.contains(&format!("id:{newest}")) || text.contains(&format!("id: {newest}")),
        "{text}"
    );
    // Then the events that follow, and only those.
    let second = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_terminal(&second, WAIT).await;
    let done = |evs: &[Value]| {
        evs.iter()
            .any(|e| e["job_id"] == second.as_str() && e["runyard_status"] == "SUCCESS")
    };
    let got = ws_support::read_until(&mut ws, WAIT, done).await.events;
    assert!(
        got.iter().all(|e| e["job_id"] == second.as_str()),
        "{got:#?}"
    );
    let mut evs = data(&text);
    while !done(&evs) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("SSE timed out: {text}"))
            .expect("SSE open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        evs = data(&text);
    }
    assert!(
        evs[1..].iter().all(|e| e["job_id"] == second.as_str()),
        "{text}"
    );
}

/// The embedded store tells a cursor of another database whatever its value: each database
/// numbers its events from a first id of its own (docs/api.md), so a cursor below it is foreign
/// as well as one past the newest; `0` (before every id) and every id from the first on are its
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_resyncs_a_cursor_below_its_first_id() {
    let (_g, s) = store_support::embedded(settings()).await;
    for _ in 0..3 {
        s.submit(Job::new("t", "r", now_us())).await.unwrap();
    }
    let all = s.events(None, None, 100).await.unwrap();
    let first: i64 = all[0].id.parse().unwrap();
    let newest = s.last_event_id().await.unwrap().unwrap();
    assert!(all.len() >= 3, "{all:?}");
    for below in [1, 2, first / 2, first - 1] {
        let page = s
            .events(Some("x"), Some(&below.to_string()), 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1, "{below}: {page:?}");
        assert_eq!(
            (page[0].kind.as_str(), page[0].id.as_str()),
            ("resync", newest.as_str()),
            "{below}"
        );
    }
    // Its own: from the beginning, and after its first event.
    let from_0 = s.events(None, Some("0"), 100).await.unwrap();
    assert_eq!(from_0.len(), all.len(), "{from_0:?}");
    assert!(from_0.iter().all(|e| e.kind != "resync"), "{from_0:?}");
    let after_first = s.events(None, Some(&all[0].id), 100).await.unwrap();
    assert_eq!(after_first.len(), all.len() - 1, "{after_first:?}");
    assert!(
        after_first.iter().all(|e| e.kind != "resync"),
        "{after_first:?}"
    );
}

/// A browser keeps its cursor across a new data dir, and the new database grows past that
/// number: its cursor still gets a resync to the newest id over HTTP, not the new database's
/// events after the old number read as one of its own (ids counted from 1 in every database
/// did that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_kept_across_a_new_data_dir_resyncs_after_the_new_database_grew_past_it() {
    let mut a = TestServer::start(BUILTINS).await;
    let job = a.submit_ok(json!({"type": "runyard.noop"})).await;
    a.wait_terminal(&job, WAIT).await;
    let kept = a.last_event_id().await;
    a.stop().await;
    let b = TestServer::start(BUILTINS).await;
    for _ in 0..3 {
        let job = b.submit_ok(json!({"type": "runyard.noop"})).await;
        b.wait_terminal(&job, WAIT).await;
    }
    let newest = b.last_event_id().await;
    assert_ne!(newest, kept);
    let (st, v) = b.get(&format!("/api/v1/async_event/?last_id={kept}")).await;
    assert_eq!(st, 200, "{v}");
    let result = v["result"].as_array().unwrap();
    assert_eq!(
        result.len(),
        1,
        "a resync alone, no event of B after {kept}: {v}"
    );
    assert_eq!(result[0]["type"], "resync", "{v}");
    assert_eq!(result[0]["id"], newest.as_str(), "{v}");
    assert_eq!(v["last_id"], newest.as_str(), "{v}");
}

/// On Redis, ids are times: a cursor kept across a flushed (here: a new) Redis, whose stream
/// has grown past it, reads every event of the new one (all written after the cursor's time):
/// no gap, and no event the client's cursor is after (docs/api.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_kept_across_a_new_redis_reads_every_event_of_the_new_one() {
    let key = "event-cursors-test-master-key-0123456789";
    let ra = redis_support::TestRedis::start();
    let mut a = TestServer::builder(BUILTINS)
        .config(&ra.server_config(key))
        .start()
        .await;
    let job = a.submit_ok(json!({"type": "runyard.noop"})).await;
    a.wait_terminal(&job, WAIT).await;
    let kept = a.last_event_id().await;
    a.stop().await;
    let rb = redis_support::TestRedis::start();
    let b = TestServer::builder(BUILTINS)
        .config(&rb.server_config(key))
        .start()
        .await;
    for _ in 0..3 {
        let job = b.submit_ok(json!({"type": "runyard.noop"})).await;
        b.wait_terminal(&job, WAIT).await;
    }
    let every = b.all_events("0").await;
    assert!(every.len() >= 12, "{every:#?}");
    let (st, v) = b.get(&format!("/api/v1/async_event/?last_id={kept}")).await;
    assert_eq!(st, 200, "{v}");
    let ids = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(v["result"].as_array().unwrap()), ids(&every), "{v}");
}

/// A database this build made (first id chosen, no event yet), then written by an older build
/// (a downgrade: ids from 1, as SQLite numbers them), then opened by this build again: the
/// older build's cursors are the database's own. Reading them as below the first id would
/// answer every poll with a resync, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_an_older_build_numbered_from_1_stay_its_own_after_an_upgrade() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(runyard::store::sqlite::SqliteStore::open(dir.path(), settings(), false).expect("open"));
    {
        let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("open");
        for id in 1..=3 {
            c.execute(
                "INSERT INTO events(id, channel, body) VALUES (?1, 'c', ?2)",
                rusqlite::params![
                    id,
                    r#"{"s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.688280Z"}"#
                ],
            )
            .expect("an older build's event");
        }
    }
    let s: Arc<dyn Store> = Arc::new(
        runyard::store::sqlite::SqliteStore::open(dir.path(), settings(), false).expect("open"),
    );
    let page = s.events(None, Some("1"), 10).await.expect("events");
    assert_eq!(
        page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["2", "3"],
        "{page:?}"
    );
    s.submit(Job::new("t", "r", now_us()))
        .await
        .expect("submit");
    let page = s.events(None, Some("3"), 10).await.expect("events");
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(
        (page[0].kind.as_str(), page[0].id.as_str()),
        ("status", "4")
    );
}
